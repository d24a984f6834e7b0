"""JupyterLab on loopback with the runbooks: what ``make lab-notebooks`` starts.

``python -m runbooks_lib.notebook_server [--port N] [--notebooks-dir DIR]``
prints the address with its token, then replaces itself with JupyterLab
(same process, so stopping it stops JupyterLab): bound to 127.0.0.1 only,
notebooks/ as its root directory, this virtualenv's kernel (the kernelspec's
``python`` is this interpreter), this checkout first on the kernel's
PYTHONPATH, no news feed and no extension installs. The token comes from
$JUPYTER_TOKEN or is made up here; it is passed in the environment, never on
the command line (other local users can read command lines).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

from runbooks_lib import runner

HOST = "127.0.0.1"
DEFAULT_PORT = 8888


def command(port: int, *, notebooks_dir: Path | None = None, python: str | None = None) -> list[str]:
    """The ``jupyter lab`` argument list: loopback, ``port`` (no retry on another), ``notebooks_dir`` as root."""
    root = Path(notebooks_dir or runner.notebooks_dir()).resolve()
    argv = [
        python or sys.executable, "-m", "jupyterlab",
        f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
        # Nothing fetched from outside: no announcements feed, no extension manager querying an index.
        "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    return argv


def environment(token: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the token, and this checkout first on the kernel's PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["JUPYTER_TOKEN"] = token
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(runner.repo_root()), env.get("PYTHONPATH", "")) if p)
    return env


def url(port: int, token: str, notebook: str = "") -> str:
    """The browser address of the server (``notebook``: a path under the root, e.g. ``30-diagnostics.ipynb``)."""
    page = f"lab/tree/{notebook}" if notebook else "lab"
    return f"http://{HOST}:{port}/{page}?token={token}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runbooks_lib.notebook_server", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=int(os.environ.get("RUNBOOKS_NOTEBOOKS_PORT") or DEFAULT_PORT))
    p.add_argument("--notebooks-dir", type=Path, default=None, help="default: notebooks/ of this checkout")
    args = p.parse_args(argv)
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_urlsafe(24)
    root = Path(args.notebooks_dir or runner.notebooks_dir()).resolve()
    argv_lab = command(args.port, notebooks_dir=root)
    print(f"JupyterLab with the runbooks in {root}: {url(args.port, token)}", flush=True)
    params_files = os.environ.get("RUNBOOKS_PARAMS", "")
    print(f"parameters a notebook's cell leaves at their defaults come from {params_files}" if params_files else
          "RUNBOOKS_PARAMS is not set: give every site value in a notebook's parameters cell", flush=True)
    print("(loopback only; Ctrl-C stops it)", flush=True)
    os.execve(argv_lab[0], argv_lab, environment(token))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
