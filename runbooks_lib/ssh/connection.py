"""SSH connections to cluster machines (fabric), with verified host keys and bounded calls.

Connecting is bounded by ``connect_timeout`` (a powered-off machine whose
SYNs are dropped answers :class:`~runbooks_lib.errors.HostUnreachable`
instead of hanging), and a command by ``timeout`` even when its host dies or
freezes while the command runs. Host keys are checked against one
known_hosts file only (see :mod:`runbooks_lib.ssh.host_keys`). No ssh_config
or fabric configuration file changes how a machine is reached.
"""

from __future__ import annotations

import codecs
import io
import math
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fabric
import fabric.runners
import fabric.transfer
import paramiko
from invoke.exceptions import CommandTimedOut, ThreadException, UnexpectedExit

from runbooks_lib.errors import BadParameters, CommandFailed, HostKeyError, HostUnreachable, RunbookError
from runbooks_lib.ssh.base import BaseConnection
from runbooks_lib.ssh.host import Host
from runbooks_lib.ssh.host_keys import RejectUnknownKey, fingerprint, known_hosts_name
from runbooks_lib.ssh.result import error

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for TCP connect, SSH banner, key exchange and authentication."""


class _Remote(fabric.runners.Remote):
    """fabric's remote runner, adapted to commands with a known, finite input.

    invoke copies stdin one byte per poll for interactive use and never sends
    EOF when there is none; here the whole payload is sent at once and stdin
    is closed, so a command that reads it (``cat``, ``sh -c 'cat > f'``) ends.
    Output is decoded incrementally, so a UTF-8 character split across two
    reads is not mangled.
    """

    read_chunk_size = 65536

    def start(self, command: str, shell: str, env: dict[str, Any], timeout: float | None = None) -> None:
        super().start(command, shell, env, timeout=timeout)
        if not self.streams["in"]:
            try:
                self.channel.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass  # the command already ended (or the connection did): its outcome says which

    def handle_stdin(self, input_: Any, output: Any, echo: bool = False) -> None:
        try:
            self.channel.sendall(input_.read())
            self.channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            # The command exited without reading it all, or the timeout closed the channel:
            # the exit status or the timeout tells what happened.
            pass

    def read_proc_output(self, reader: Callable[[int], bytes | None]) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self.encoding)("replace")
        while True:
            data = reader(self.read_chunk_size)
            text = decoder.decode(data or b"", final=not data)
            if text:
                yield text
            if not data:
                return

    def kill(self) -> None:
        # Runs in invoke's timer thread: a channel that cannot be closed cleanly (host gone)
        # is torn down with the connection by the caller; nothing to report from here.
        try:
            super().kill()
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        # Without a pty there is no remote ^C: stop waiting at once (the remote command may go on,
        # as after a timeout) instead of until the command ends by itself.
        self.kill()
        raise interrupt


def _fabric_config() -> fabric.Config:
    """A fabric configuration that reads no file: no ~/.ssh/config, /etc/ssh/ssh_config or fabric.yaml.

    What reaches a cluster machine is decided by the inventory host alone.
    """
    return fabric.Config(
        lazy=True,
        ssh_config=paramiko.SSHConfig(),
        overrides={
            "load_ssh_configs": False,
            "forward_agent": False,
            "gateway": None,
            "runners": {"remote": _Remote},
        },
    )


class _Watchdog:
    """Tears a connection down if a call is still blocked ``seconds`` after it started.

    fabric's command timeout starts once the command is running and SFTP has
    no overall timeout; the steps before (opening a session, the exec or
    subsystem request) wait for replies without a bound. A frozen machine
    keeps the TCP connection open and answers nothing, so only closing the
    connection from another thread ends such a wait.
    """

    def __init__(self, client: paramiko.SSHClient, seconds: float) -> None:
        self.client = client
        self.fired = False
        self._done = threading.Event()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        if self._done.is_set():
            return
        self.fired = True
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - the connection is being abandoned either way
            pass

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._timer.cancel()


# Beyond the command timeout, how long the watchdog leaves fabric's own timeout to act.
_WATCHDOG_GRACE = 1.0

# Beyond the command timeout, how long a command may go on on its machine before coreutils
# `timeout` ends it there; the local timeout fires well before and reports the failure.
_REMOTE_GRACE = 30
_REMOTE_KILL_AFTER = 10
_SUDO = ["sudo", "-n", "--"]  # the prefix ssh.run gives privileged commands


def remote_bounded(argv: list[str], timeout: float) -> str:
    """The remote command line for ``argv``: ``timeout --kill-after=10 <ceil(timeout) + 30> <argv...>``.

    A command whose caller is gone (the local run died, the connection was
    dropped after a timeout) would otherwise go on on its machine forever.
    coreutils ``timeout`` puts itself and the command in their own process
    group and, once the bound has passed, sends SIGTERM to that whole group
    (what the command started too), then SIGKILL 10 s later
    (``--kill-after``). The bound leaves the local timeout 30 s to fire
    first. With a ``sudo -n --`` prefix, ``timeout`` runs inside sudo (as
    root): sudo makes itself root so that its unprivileged user cannot
    signal it, and a ``timeout`` outside it could not end the command.
    Raises BadParameters for a timeout that is not a finite positive number.
    """
    if not (math.isfinite(timeout) and timeout > 0):
        raise BadParameters(
            f"command timeout must be a finite number of seconds above 0, got {timeout!r}",
            fix="pass timeout=SECONDS, e.g. timeout=60",
        )
    bound = ["timeout", f"--kill-after={_REMOTE_KILL_AFTER}", str(math.ceil(timeout) + _REMOTE_GRACE)]
    sudo = _SUDO if list(argv[:len(_SUDO)]) == _SUDO else []
    return shlex.join([*sudo, *bound, *argv[len(sudo):]])


class Connection(BaseConnection):
    """An SSH connection to one :class:`Host`, built on :class:`fabric.Connection`, opened lazily.

    Host keys are verified against ``host.known_hosts`` only: the paramiko
    client under the fabric connection loads that file and refuses anything
    else (nothing is ever added to it); no ssh_config or fabric config file
    is read. With ``host.key_path`` only that key is offered (no agent, no
    ~/.ssh keys); without one, the agent and the default keys are tried.
    Privileged commands get ``sudo -n --`` in their argv (see :func:`run`)
    rather than fabric's ``sudo``, which would wait for a password prompt.
    Every command runs under coreutils ``timeout`` (see :func:`remote_bounded`),
    so one left behind by its caller ends by itself on its machine.
    Raises BadParameters when no known_hosts file is given.
    """

    def __init__(
        self,
        host: Host,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        keepalive: float = 5.0,
    ) -> None:
        if not host.known_hosts:
            raise BadParameters(
                f"no known_hosts file given for {host.name}",
                fix="pass known_hosts=PATH: host keys are always verified",
            )
        self.host = host
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._fabric: fabric.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        h = self.host
        return f"<ssh.Connection {h.name} {h.user}@{h.address}:{h.port}>"

    # -- connecting ---------------------------------------------------------

    def open(self) -> paramiko.SSHClient:
        """Connect (if not connected); return the verified paramiko client under the fabric connection.

        Raises HostUnreachable, HostKeyError, CommandFailed (authentication).
        """
        return self._open().client

    @property
    def fabric(self) -> fabric.Connection:
        """The connected :class:`fabric.Connection` (connects first if needed; same errors as :meth:`open`)."""
        return self._open()

    def _open(self) -> fabric.Connection:
        with self._lock:
            if self._fabric is not None and self._fabric.is_connected:
                return self._fabric
            self._drop()
            self._fabric = self._connect()
            return self._fabric

    def _connect(self) -> fabric.Connection:
        h = self.host
        assert h.known_hosts
        if not os.path.isfile(h.known_hosts):
            raise BadParameters(
                f"known_hosts file {h.known_hosts} does not exist",
                host=h.name,
                fix="pass the path of the file that pins this cluster's host keys",
            )
        t = self.connect_timeout
        conn = fabric.Connection(
            h.address,
            user=h.user,
            port=h.port,
            config=_fabric_config(),
            connect_timeout=t,
            connect_kwargs={
                "key_filename": [h.key_path] if h.key_path else [],
                "look_for_keys": h.key_path is None,
                "allow_agent": h.key_path is None,
                "banner_timeout": t,
                "auth_timeout": t,
                "channel_timeout": t,
            },
        )
        # fabric's client would add unknown keys; only the given file may vouch for a machine
        # (not ~/.ssh/known_hosts, which load_system_host_keys would read).
        conn.client.load_host_keys(h.known_hosts)
        conn.client.set_missing_host_key_policy(RejectUnknownKey(h))
        try:
            conn.open()
        except HostKeyError:
            conn.client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            conn.client.close()
            name = known_hosts_name(h)
            raise error(
                HostKeyError,
                f"REMOTE HOST IDENTIFICATION HAS CHANGED for {h.name} ({h.address}): "
                f"{h.known_hosts} pins {exc.expected_key.get_name()} {fingerprint(exc.expected_key)} "
                f"but the machine offered {exc.key.get_name()} {fingerprint(exc.key)}",
                host=h.name,
                fix=(
                    "if the machine was reinstalled, confirm the new fingerprint on its console, then "
                    f"`ssh-keygen -R '{name}' -f {h.known_hosts}` and pin the new key; "
                    "otherwise do not connect: someone may be intercepting the connection"
                ),
            ) from None
        except paramiko.AuthenticationException as exc:
            conn.client.close()
            raise error(
                CommandFailed,
                f"SSH authentication as {h.user} failed on {h.name} ({h.address}): {exc}",
                host=h.name,
                fix=f"check that the key {h.key_path or '(agent/default keys)'} is authorized for {h.user}",
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            # socket.timeout (SYNs dropped), refused, no route, banner/kex timeouts. paramiko folds refused and
            # no-route into "Unable to connect": name the socket errors, which tell a dead host from a live one.
            conn.client.close()
            why = "; ".join(str(e) for e in getattr(exc, "errors", {}).values()) or str(exc) or type(exc).__name__
            raise error(
                HostUnreachable,
                f"cannot reach {h.name} at {h.address}:{h.port} within {t:g}s: {why}",
                host=h.name,
                fix="check that the machine is powered on and that port 22 is open from here",
            ) from None
        if self.keepalive:
            conn.transport.set_keepalive(int(max(1, self.keepalive)))
        return conn

    def _drop(self) -> None:
        if self._fabric is not None:
            conn, self._fabric = self._fabric, None
            # Transport first: closing a transport whose peer vanished returns at once (socket
            # close only), and the SFTP session fabric may hold is closed with it.
            conn.client.close()
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _reachable(self) -> bool:
        """A fresh, short TCP connect: tells a dead host from a slow command."""
        try:
            with socket.create_connection((self.host.address, self.host.port), timeout=min(3.0, self.connect_timeout)):
                return True
        except OSError:
            return False

    def _lost(self, what: str) -> HostUnreachable:
        self.close()
        return error(
            HostUnreachable,
            what,
            host=self.host.name,
            fix="check whether the machine is still powered on; the command's effect on it is unknown",
        )

    def _timed_out(self, command: str, timeout: float, stderr: str) -> RunbookError:
        """The error for a command that did not end in time: the host died, or the command is slow."""
        self.close()  # the channel was abandoned mid-command; the next call reconnects
        if not self._reachable():
            return self._lost(
                f"{self.host.name} stopped answering while running the command "
                f"(no answer within the {timeout:g}s timeout)"
            )
        return error(
            CommandFailed,
            f"command did not finish within {timeout:g}s on {self.host.name}",
            host=self.host.name,
            command=command,
            stderr=stderr,
            fix="raise the timeout if the command is just slow; it may still be running there",
        )

    # -- commands -----------------------------------------------------------

    def execute(
        self, argv: list[str], command: str, *, timeout: float, input: bytes | None
    ) -> tuple[int, str, str]:
        remote = remote_bounded(argv, timeout)  # `command` (without the wrapper) is what errors show
        conn = self._open()
        # Opening a session runs the login machinery (PAM, logind) and can take seconds on a
        # busy machine: it is bounded by the command's timeout, not the connect timeout.
        conn.transport.channel_timeout = timeout
        result: fabric.runners.Result | None = None
        timed_out = False
        broken: BaseException | None = None
        started = time.monotonic()
        with _Watchdog(conn.client, timeout + _WATCHDOG_GRACE) as watchdog:
            try:
                result = conn.run(
                    remote,
                    hide=True,
                    warn=True,
                    pty=False,
                    in_stream=io.BytesIO(input) if input is not None else False,
                    encoding="utf-8",
                    timeout=timeout,
                )
            except CommandTimedOut as exc:
                timed_out, result = True, exc.result
            except UnexpectedExit as exc:  # not raised with warn=True; its Result is what counts
                result = exc.result
            except (OSError, EOFError, paramiko.SSHException, ThreadException) as exc:
                broken = exc
        # exited -1: the channel closed without an exit status (a signal, the connection died, or
        # invoke's timer closed it). invoke reports its own timeout only once the timer thread has
        # ended, which on a busy machine can be after run() returned: the elapsed time decides then.
        if result is not None and result.exited == -1 and time.monotonic() - started >= timeout:
            timed_out = True
        if timed_out or (watchdog.fired and (result is None or result.exited == -1)):
            raise self._timed_out(command, timeout, result.stderr if result is not None else "")
        if broken is not None:
            raise self._lost(f"SSH session to {self.host.name} failed: {broken or type(broken).__name__}")
        assert result is not None
        if result.exited == -1 and not conn.is_connected:
            raise self._lost(f"the SSH connection to {self.host.name} dropped during the command")
        if result.exited == -1 and not self._reachable():
            # The session ended without an exit status and the host no longer answers.
            raise self._lost(f"{self.host.name} stopped answering: the SSH session closed without an exit status")
        return result.exited, result.stdout, result.stderr

    # -- files --------------------------------------------------------------

    def put(self, local_path: str | os.PathLike, remote_path: str, *, timeout: float) -> None:
        """Upload a file (SFTP, fabric's Transfer); the remote file keeps its mode if it exists.

        ``remote_path`` may name a directory (the file keeps its name there).
        ``timeout`` bounds opening SFTP and every read/write of the transfer.
        Raises HostUnreachable, CommandFailed (permission, path).
        """
        self._transfer("put", os.fspath(local_path), remote_path, timeout)

    def get(self, remote_path: str, local_path: str | os.PathLike, *, timeout: float) -> None:
        """Download a file (SFTP, fabric's Transfer); the local copy gets the remote file's mode.

        ``timeout`` bounds opening SFTP and every read/write of the transfer.
        Raises HostUnreachable, CommandFailed (permission, path).
        """
        # fabric fills {host}, {basename}... into a local path: keep braces in a name literal.
        target = os.fspath(local_path).replace("{", "{{").replace("}", "}}")
        self._transfer("get", remote_path, target, timeout)

    def _transfer(self, how: str, src: str, dst: str, timeout: float) -> None:
        conn = self._open()
        conn.transport.channel_timeout = timeout
        with _Watchdog(conn.client, timeout) as watchdog:
            try:
                sftp = conn.sftp()  # fabric keeps this session for later transfers
                sftp.get_channel().settimeout(timeout)
            except (OSError, EOFError, paramiko.SSHException, paramiko.SFTPError) as exc:
                why = f"no answer within {timeout:g}s" if watchdog.fired else str(exc) or type(exc).__name__
                raise self._lost(f"SFTP to {self.host.name} failed: {why}") from None
        transfer = fabric.transfer.Transfer(conn)
        try:
            if how == "put":
                transfer.put(src, dst, preserve_mode=False)
            else:
                transfer.get(src, dst, preserve_mode=True)
        except (socket.timeout, TimeoutError, EOFError, paramiko.SSHException, paramiko.SFTPError) as exc:
            raise self._lost(f"SFTP {how} {src} -> {dst} on {self.host.name} stalled: {exc}") from None
        except OSError as exc:
            if not conn.is_connected:
                raise self._lost(f"SFTP {how} {src} -> {dst} on {self.host.name} broke off: {exc}") from None
            raise error(
                CommandFailed,
                f"SFTP {how} {src} -> {dst} failed on {self.host.name}: {exc}",
                host=self.host.name,
                fix="check the path and its permissions",
            ) from None
