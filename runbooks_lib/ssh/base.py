"""The interface every connection offers (SSH, local, the test double)."""

from __future__ import annotations

import os

from runbooks_lib.ssh.host import Host


class BaseConnection:
    """What every connection offers; use :func:`run`, :func:`put`, :func:`get`."""

    host: Host

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def needs_sudo(self) -> bool:
        """True when privileged commands need a ``sudo`` prefix (not logged in as root)."""
        return self.host.user != "root"

    def execute(
        self, argv: list[str], command: str, *, timeout: float, input: bytes | None
    ) -> tuple[int, str, str]:
        raise NotImplementedError

    def put(self, local_path: str | os.PathLike, remote_path: str, *, timeout: float) -> None:
        raise NotImplementedError

    def get(self, remote_path: str, local_path: str | os.PathLike, *, timeout: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection; safe to call more than once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
