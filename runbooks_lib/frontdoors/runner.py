"""How front doors run commands: a small protocol and adapters to the project's runners.

A runner is anything with ``run(argv, timeout, check=True, input=None)``
returning a result with ``exited``, ``stdout`` and ``stderr``
(:class:`runbooks_lib.local.Result`, or :class:`runbooks_lib.ssh.Result`
with the same fields). Adapters: :class:`LabRunner` (``lab.ssh``),
:class:`SshRunner` (``runbooks_lib.ssh.run`` on a connection) and
:class:`LocalRunner` (this machine, through ``runbooks_lib.local.run``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from runbooks_lib import local


class Runner(Protocol):
    """Runs an argument list on one machine; raises on failure unless ``check=False``."""

    name: str

    def run(self, argv: Sequence[str], timeout: float, check: bool = True, input: str | None = None) -> Any: ...


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
    """Runs commands on this machine with :func:`runbooks_lib.local.run`.

    Raises CommandFailed on a non-zero exit and WaitTimedOut on a timeout
    (the process group is killed) unless ``check=False``.
    """

    name = "localhost"

    def run(self, argv: Sequence[str], timeout: float, check: bool = True,
            input: str | None = None) -> local.Result:
        return local.run(list(argv), timeout=timeout, check=check, input=input)


def write_file(runner: Runner, path: str, content: str, *, mode: str = "0644", timeout: float = 15.0) -> None:
    """Write ``content`` to ``path`` on the runner's machine atomically (temp file + rename)."""
    tmp = f"{path}.runbooks-tmp"
    # The content travels as an argument, not through a shell string built here.
    runner.run(["sh", "-c", 'printf "%s" "$1" > "$2" && chmod "$3" "$2" && mv -f "$2" "$4"',
                "write_file", content, tmp, mode, path], timeout=timeout)
