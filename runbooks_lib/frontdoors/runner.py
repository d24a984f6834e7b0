"""How front doors run commands: a small protocol and adapters to the project's runners.

A runner is anything with ``run(argv, timeout, check=True, input=None)``
returning an object with ``stdout`` (a ``CompletedProcess``, an
``ssh.Result``). Adapters: :class:`LabRunner` (``lab.ssh``), :class:`SshRunner`
(``runbooks_lib.ssh.run`` on a connection) and :class:`LocalRunner` (this
machine).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any, Protocol

from runbooks_lib.errors import CommandFailed


class Runner(Protocol):
    """Runs an argument list on one machine; raises on failure unless ``check=False``."""

    name: str

    def run(self, argv: Sequence[str], timeout: float, check: bool = True, input: str | None = None) -> Any: ...


def exit_code(result: Any) -> int:
    """The exit status of a runner's result (``returncode`` or ``exited``)."""
    code = getattr(result, "returncode", None)
    return int(code if code is not None else getattr(result, "exited", 0))


def stdout(result: Any) -> str:
    out = getattr(result, "stdout", "")
    return out.decode("utf-8", "replace") if isinstance(out, bytes) else (out or "")


class LabRunner:
    """Runs commands on a lab machine through ``lab.ssh(name, argv, timeout=..., check=...)``."""

    def __init__(self, lab: Any, name: str) -> None:
        self.lab = lab
        self.name = name

    def run(self, argv: Sequence[str], timeout: float, check: bool = True, input: str | None = None) -> Any:
        return self.lab.ssh(self.name, list(argv), timeout=timeout, check=check, input=input)


class SshRunner:
    """Runs commands through ``runbooks_lib.ssh.run(conn, argv, timeout=..., check=...)``."""

    def __init__(self, conn: Any, name: str | None = None) -> None:
        self.conn = conn
        self.name = name or getattr(conn, "name", "remote")

    def run(self, argv: Sequence[str], timeout: float, check: bool = True, input: str | None = None) -> Any:
        from runbooks_lib import ssh

        return ssh.run(self.conn, list(argv), timeout=timeout, check=check, input=input)


class LocalRunner:
    """Runs commands on this machine. Raises CommandFailed on a non-zero exit or timeout."""

    name = "localhost"

    def run(self, argv: Sequence[str], timeout: float, check: bool = True, input: str | None = None) -> Any:
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"command did not finish within {timeout}s", command=list(argv), host=self.name) from None
        if check and proc.returncode != 0:
            raise CommandFailed("command failed", command=list(argv), host=self.name, exit_code=proc.returncode,
                                stderr=proc.stderr)
        return proc


def write_file(runner: Runner, path: str, content: str, *, mode: str = "0644", timeout: float = 15.0) -> None:
    """Write ``content`` to ``path`` on the runner's machine atomically (temp file + rename)."""
    tmp = f"{path}.runbooks-tmp"
    # The content travels as an argument, not through a shell string built here.
    runner.run(["sh", "-c", 'printf "%s" "$1" > "$2" && chmod "$3" "$2" && mv -f "$2" "$4"',
                "write_file", content, tmp, mode, path], timeout=timeout)
