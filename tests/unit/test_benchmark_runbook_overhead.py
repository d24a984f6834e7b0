"""benchmarks/runbook_overhead.py is a script, not a test: only its arguments and its refusal are checked here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "runbook_overhead.py"


def _run(*args: str, notebooks: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RUNBOOKS_NOTEBOOKS_DIR": str(notebooks)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env)


def test_help_names_the_options(tmp_path: Path) -> None:
    proc = _run("--help", notebooks=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--skip-demo" in proc.stdout and "--keep" in proc.stdout


def test_without_the_install_notebook_it_fails_at_once_saying_so(tmp_path: Path) -> None:
    proc = _run("--skip-demo", notebooks=tmp_path)
    assert proc.returncode == 1
    assert f"no install-cluster runbook in {tmp_path}" in proc.stderr
    assert "Nothing was changed" in proc.stderr and proc.stdout == ""
