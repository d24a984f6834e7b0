"""The operator's own machine behind the connection interface (commands through local.run)."""

from __future__ import annotations

import getpass
import os
import shutil
from collections.abc import Mapping

from runbooks_lib import local
from runbooks_lib.errors import CommandFailed
from runbooks_lib.ssh.base import BaseConnection
from runbooks_lib.ssh.host import Host
from runbooks_lib.ssh.result import error


class LocalConnection(BaseConnection):
    """Runs commands on this machine through :func:`runbooks_lib.local.run`, behind the same interface as SSH.

    Used for the operator's machine and for tests against local processes.
    ``env`` entries are added to the inherited environment. Input is text
    (bytes are decoded as UTF-8).
    """

    def __init__(self, name: str = "localhost", *, env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        self.host = Host(name=name, address="127.0.0.1", user=getpass.getuser())
        self.env = dict(env or {})
        self.cwd = cwd

    @property
    def needs_sudo(self) -> bool:
        return os.geteuid() != 0

    def execute(
        self, argv: list[str], command: str, *, timeout: float, input: bytes | None
    ) -> tuple[int, str, str]:
        try:
            result = local.run(
                argv,
                timeout=timeout,
                check=False,
                cwd=self.cwd,
                env=self.env or None,
                input=input.decode("utf-8", "replace") if input is not None else None,
            )
        except CommandFailed as exc:
            # Not started: answer as a shell would (127 missing program, 126 not executable).
            if isinstance(exc.__cause__, FileNotFoundError):
                return 127, "", f"{argv[0]}: command not found\n"
            if isinstance(exc.__cause__, PermissionError):
                return 126, "", f"{argv[0]}: permission denied\n"
            raise
        if result.timed_out:
            raise error(
                CommandFailed,
                f"command did not finish within {timeout:g}s on {self.host.name}",
                host=self.host.name, command=command, stderr=result.stderr,
                fix="raise the timeout if the command is just slow",
            )
        return result.exited, result.stdout, result.stderr

    def put(self, local_path: str | os.PathLike, remote_path: str, *, timeout: float) -> None:
        shutil.copyfile(local_path, remote_path)

    def get(self, remote_path: str, local_path: str | os.PathLike, *, timeout: float) -> None:
        shutil.copyfile(remote_path, local_path)
