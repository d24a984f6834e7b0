"""The operator's own machine behind the connection interface (commands through local.run)."""

from __future__ import annotations

import getpass
import os
import select
import stat
import time
from collections.abc import Mapping

from runbooks_lib import local
from runbooks_lib.errors import CommandFailed
from runbooks_lib.ssh.base import BaseConnection
from runbooks_lib.ssh.host import Host
from runbooks_lib.ssh.result import error

_CHUNK = 1 << 16


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
        """Copy ``local_path`` to ``remote_path`` within ``timeout`` seconds (see :func:`copy_file`)."""
        copy_file(local_path, remote_path, timeout=timeout, host=self.host.name)

    def get(self, remote_path: str, local_path: str | os.PathLike, *, timeout: float) -> None:
        """Copy ``remote_path`` to ``local_path`` within ``timeout`` seconds (see :func:`copy_file`)."""
        copy_file(remote_path, local_path, timeout=timeout, host=self.host.name)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike, *, timeout: float, host: str = "localhost") -> None:
    """Copy the file ``src`` to ``dst``, giving up after ``timeout`` seconds.

    The content goes to a temporary file beside ``dst`` that replaces it only
    when complete, so a copy that fails or times out leaves ``dst`` as it was.
    The temporary file is created 0600 (a stale one is removed first), so the
    content is never readable by others while it arrives; once complete it is
    fsynced and gets its final mode (an existing ``dst``'s, else the mode the
    umask gives a new file), replaces ``dst``, and the directory is fsynced.
    A source that stops delivering (a FIFO or device with no writer, a stalled
    pipe) cannot block past the timeout: every read waits in ``poll`` for at
    most the time left. Raises CommandFailed on timeout and on any OS error
    (missing path, permission).
    """
    deadline = time.monotonic() + timeout
    src, dst = os.fspath(src), os.fspath(dst)
    directory, base = os.path.split(dst)
    tmp = os.path.join(directory, f".{base}.runbooks-tmp")
    what = f"copy {src} -> {dst}"
    try:
        fd_in = os.open(src, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise error(CommandFailed, f"{what} failed on {host}: {exc}", host=host,
                    fix="check the path and its permissions") from None
    try:
        _discard(tmp)  # a stale temp file may have another mode: create it anew
        fd_out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            _pump(fd_in, fd_out, deadline)
            os.fsync(fd_out)
            try:
                final = stat.S_IMODE(os.stat(dst).st_mode)
            except FileNotFoundError:
                final = 0o666 & ~local.current_umask()  # what a plain open() would have given a new file
            os.fchmod(fd_out, final)
        finally:
            os.close(fd_out)
        os.replace(tmp, dst)
        local.fsync_directory(directory or ".")
    except TimeoutError:
        _discard(tmp)
        raise error(CommandFailed, f"{what} did not finish within {timeout:g}s on {host}", host=host,
                    fix="check that the source is a complete file (not a pipe nobody writes to); "
                        "raise the timeout if it is just large") from None
    except OSError as exc:
        _discard(tmp)
        raise error(CommandFailed, f"{what} failed on {host}: {exc}", host=host,
                    fix="check the path and its permissions") from None
    finally:
        os.close(fd_in)


def _pump(fd_in: int, fd_out: int, deadline: float) -> None:
    """Copy ``fd_in`` (non-blocking) to ``fd_out`` until end of file; TimeoutError at ``deadline``."""
    poller = select.poll()
    poller.register(fd_in, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(max(1, int(left * 1000))):
            if time.monotonic() >= deadline:
                raise TimeoutError
            continue
        try:
            chunk = os.read(fd_in, _CHUNK)
        except BlockingIOError:
            continue
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            if time.monotonic() >= deadline:
                raise TimeoutError
            view = view[os.write(fd_out, view):]


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
