"""What `make lab-notebooks` starts: JupyterLab bound to loopback, notebooks/ as root, the token kept off argv."""

from __future__ import annotations

import sys
from pathlib import Path

from runbooks_lib import notebook_server

ROOT = Path(__file__).resolve().parents[2]


def test_command_binds_loopback_on_the_given_port_with_the_notebooks_as_root() -> None:
    argv = notebook_server.command(18888)
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    assert "--ServerApp.ip=127.0.0.1" in argv and "--ServerApp.port=18888" in argv
    assert "--ServerApp.port_retries=0" in argv  # another port would not be the printed address
    assert f"--ServerApp.root_dir={ROOT / 'notebooks'}" in argv
    assert "--LabApp.news_url=None" in argv


def test_the_token_goes_in_the_environment_and_the_checkout_first_on_the_kernel_path() -> None:
    env = notebook_server.environment("s3cret", {"PYTHONPATH": "/elsewhere"})
    assert env["JUPYTER_TOKEN"] == "s3cret"
    assert env["PYTHONPATH"] == f"{ROOT}:/elsewhere"
    assert not any("s3cret" in part for part in notebook_server.command(8888))
    assert notebook_server.url(8888, "s3cret", "30-diagnostics.ipynb") == \
        "http://127.0.0.1:8888/lab/tree/30-diagnostics.ipynb?token=s3cret"
