"""Commands and files on cluster machines over SSH (fabric), with verified host keys.

Every command is an argument list, shell-quoted here with :func:`shlex.join`
(nothing builds shell strings from parameters), and every call has a timeout:
connecting is bounded by ``connect_timeout`` (a powered-off machine whose SYNs
are dropped answers :class:`~runbooks_lib.errors.HostUnreachable` instead of
hanging), and a command is bounded by ``timeout`` even when its host dies or
freezes while the command runs.

Host keys are checked against one known_hosts file only (never the user's or
the system's, never auto-added): an unknown or changed key raises
:class:`~runbooks_lib.errors.HostKeyError` saying how to pin the right key.
No ssh_config or fabric configuration file changes how a machine is reached.

Three connection kinds share one interface so that callers never care which
one they hold: :class:`Connection` (SSH through :class:`fabric.Connection`),
:class:`LocalConnection` (the operator's machine, through
:func:`runbooks_lib.local.run`) and :class:`MockConnection` (tests, in the
manner of invoke's MockContext: maps expected commands to replies and fails
loudly on anything else).
"""

from __future__ import annotations

import base64
import codecs
import getpass
import hashlib
import io
import os
import shlex
import shutil
import socket
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Union

import fabric
import fabric.runners
import fabric.transfer
import paramiko
from invoke.exceptions import CommandTimedOut, ThreadException, UnexpectedExit

from runbooks_lib import local
from runbooks_lib.errors import (
    BadParameters,
    CommandFailed,
    HostKeyError,
    HostUnreachable,
    RunbookError,
    tail as _tail,
)

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for TCP connect, SSH banner, key exchange and authentication."""


@dataclass(frozen=True)
class Host:
    """How to reach one machine: inventory name, address and SSH settings."""

    name: str
    address: str
    user: str = "root"
    port: int = 22
    key_path: str | None = None
    known_hosts: str | None = None


def from_inventory_host(
    name: str,
    address: str | None = None,
    vars: Mapping[str, Any] | None = None,
    *,
    user: str | None = None,
    key_path: str | None = None,
    known_hosts: str | None = None,
) -> Host:
    """Build a :class:`Host` from an inventory host's name, address and variables.

    The address falls back to ``ansible_host``, then ``access_ip``, then ``ip``
    (Ansible's own order for reaching a host); user, port and key come from
    ``ansible_user``, ``ansible_port`` and ``ansible_ssh_private_key_file``
    unless given explicitly. Raises BadParameters when no address is known.
    """
    hostvars = dict(vars or {})
    address = address or hostvars.get("ansible_host") or hostvars.get("access_ip") or hostvars.get("ip")
    if not address:
        raise BadParameters(
            f"inventory host {name} has no address",
            fix="set ansible_host (or ip/access_ip) for it in the inventory",
        )
    return Host(
        name=name,
        address=str(address),
        user=user or str(hostvars.get("ansible_user") or "root"),
        port=int(hostvars.get("ansible_port") or 22),
        key_path=key_path or hostvars.get("ansible_ssh_private_key_file"),
        known_hosts=known_hosts,
    )


@dataclass(frozen=True)
class Result:
    """How one command ended on one host (modelled on invoke's Result)."""

    host: str
    command: str
    exited: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def failed(self) -> bool:
        return not self.ok

    def tail(self, stream: str = "stderr", count: int = 10) -> str:
        """The last ``count`` lines of ``stream`` ("stdout" or "stderr")."""
        return _tail(getattr(self, stream), count)


@dataclass(frozen=True)
class Reply:
    """A scripted answer for :class:`MockConnection`."""

    stdout: str = ""
    stderr: str = ""
    exited: int = 0


class GroupResult(Mapping[str, Union[Result, BaseException]]):
    """Per-host outcome of :func:`run_group`: host name -> Result or the exception raised."""

    def __init__(self, outcomes: Mapping[str, Result | BaseException]) -> None:
        self._outcomes = types.MappingProxyType(dict(outcomes))

    def __getitem__(self, name: str) -> Result | BaseException:
        return self._outcomes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outcomes)

    def __len__(self) -> int:
        return len(self._outcomes)

    def __repr__(self) -> str:
        return f"GroupResult({dict(self._outcomes)!r})"

    @property
    def succeeded(self) -> dict[str, Result]:
        return {n: r for n, r in self._outcomes.items() if isinstance(r, Result) and r.ok}

    @property
    def failed(self) -> dict[str, Result | BaseException]:
        return {n: r for n, r in self._outcomes.items() if not (isinstance(r, Result) and r.ok)}


# --------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------


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


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key, e.g. ``SHA256:abc...``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_hosts_name(host: Host) -> str:
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


class _RejectUnknownKey(paramiko.MissingHostKeyPolicy):
    """Refuse keys absent from the known_hosts file, explaining how to pin one safely."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        h = self.host
        raise HostKeyError(
            f"the host key of {h.name} ({hostname}) is not in {h.known_hosts}; "
            f"the machine offered {key.get_name()} {fingerprint(key)}",
            host=h.name,
            fix=(
                "compare that fingerprint with the one shown on the machine's own console "
                "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there, or the provider's "
                "console log); only when they match, append the key to "
                f"{h.known_hosts}. `ssh-keyscan` alone is not a verification: it fetches the key "
                "over the same unverified network."
            ),
        )


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


class Connection(BaseConnection):
    """An SSH connection to one :class:`Host`, built on :class:`fabric.Connection`, opened lazily.

    Host keys are verified against ``host.known_hosts`` only: the paramiko
    client under the fabric connection loads that file and refuses anything
    else (nothing is ever added to it); no ssh_config or fabric config file
    is read. With ``host.key_path`` only that key is offered (no agent, no
    ~/.ssh keys); without one, the agent and the default keys are tried.
    Privileged commands get ``sudo -n --`` in their argv (see :func:`run`)
    rather than fabric's ``sudo``, which would wait for a password prompt.
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
        conn.client.set_missing_host_key_policy(_RejectUnknownKey(h))
        try:
            conn.open()
        except HostKeyError:
            conn.client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            conn.client.close()
            name = _known_hosts_name(h)
            raise HostKeyError(
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
            raise CommandFailed(
                f"SSH authentication as {h.user} failed on {h.name} ({h.address}): {exc}",
                host=h.name,
                fix=f"check that the key {h.key_path or '(agent/default keys)'} is authorized for {h.user}",
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            # socket.timeout (SYNs dropped), refused, no route, banner/kex timeouts.
            conn.client.close()
            raise HostUnreachable(
                f"cannot reach {h.name} at {h.address}:{h.port} within {t:g}s: {exc or type(exc).__name__}",
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
        return HostUnreachable(
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
        return CommandFailed(
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
        conn = self._open()
        # Opening a session runs the login machinery (PAM, logind) and can take seconds on a
        # busy machine: it is bounded by the command's timeout, not the connect timeout.
        conn.transport.channel_timeout = timeout
        result: fabric.runners.Result | None = None
        timed_out = False
        broken: BaseException | None = None
        with _Watchdog(conn.client, timeout + _WATCHDOG_GRACE) as watchdog:
            try:
                result = conn.run(
                    command,
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
        # exited -1: the channel closed without an exit status (a signal, or the connection died).
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
            raise CommandFailed(
                f"SFTP {how} {src} -> {dst} failed on {self.host.name}: {exc}",
                host=self.host.name,
                fix="check the path and its permissions",
            ) from None


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
            raise CommandFailed(
                f"command did not finish within {timeout:g}s on {self.host.name}",
                host=self.host.name, command=command, stderr=result.stderr,
                fix="raise the timeout if the command is just slow",
            )
        return result.exited, result.stdout, result.stderr

    def put(self, local_path: str | os.PathLike, remote_path: str, *, timeout: float) -> None:
        shutil.copyfile(local_path, remote_path)

    def get(self, remote_path: str, local_path: str | os.PathLike, *, timeout: float) -> None:
        shutil.copyfile(remote_path, local_path)


MockValue = Union[Result, Reply, str, BaseException, Callable[[list[str], "bytes | None"], Any]]


@dataclass(frozen=True)
class Call:
    """One command a :class:`MockConnection` received."""

    argv: tuple[str, ...]
    command: str
    input: bytes | None


class MockConnection(BaseConnection):
    """A scripted connection for tests, in the spirit of invoke's MockContext.

    ``commands`` maps an expected argv (tuple or list) or command string to a
    value: a :class:`Reply` (or Result), a str (stdout, exit 0), an exception
    to raise, or a callable ``(argv, input) -> value``. A list of values is
    answered in order and then exhausted; a single value answers every time.
    Any command not listed raises AssertionError naming it. ``files`` is an
    in-memory remote file system for put/get; ``calls`` records every command.
    """

    def __init__(
        self,
        name: str = "mock",
        commands: Mapping[Any, Any] | None = None,
        *,
        user: str = "root",
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        self.host = Host(name=name, address="192.0.2.1", user=user)
        self._expected: dict[Any, list[Any]] = {}
        self._repeat: dict[Any, Any] = {}
        self._used: set[Any] = set()
        self.calls: list[Call] = []
        self.files: dict[str, bytes] = dict(files or {})
        for key, value in (commands or {}).items():
            self.expect(key, value)

    @staticmethod
    def _key(argv_or_command: Sequence[str] | str) -> Any:
        return argv_or_command if isinstance(argv_or_command, str) else tuple(map(str, argv_or_command))

    def expect(self, argv_or_command: Sequence[str] | str, value: Any) -> MockConnection:
        """Add an expected command; a list value is answered in order."""
        key = self._key(argv_or_command)
        if isinstance(value, list):
            self._expected.setdefault(key, []).extend(value)
        else:
            self._repeat[key] = value
        return self

    def execute(
        self, argv: list[str], command: str, *, timeout: float, input: bytes | None
    ) -> tuple[int, str, str]:
        self.calls.append(Call(tuple(argv), command, input))
        for key in (tuple(argv), command):
            if self._expected.get(key):
                self._used.add(key)
                value = self._expected[key].pop(0)
                break
            if key in self._repeat:
                self._used.add(key)
                value = self._repeat[key]
                break
        else:
            known = sorted(map(str, [*self._repeat, *(k for k, v in self._expected.items() if v)]))
            raise AssertionError(
                f"unexpected command on {self.host.name}: {command}\n"
                + ("still expected:\n  " + "\n  ".join(known) if known else "no commands left")
            )
        if callable(value) and not isinstance(value, BaseException):
            value = value(list(argv), input)
        if isinstance(value, BaseException):
            raise value
        if isinstance(value, str):
            return 0, value, ""
        if isinstance(value, (Reply, Result)):
            return value.exited, value.stdout, value.stderr
        raise TypeError(f"MockConnection cannot answer with {value!r}")

    def assert_all_used(self) -> None:
        """Fail if an expected command was never run or a scripted sequence was not consumed."""
        unused = [k for k in self._repeat if k not in self._used]
        unused += [k for k, v in self._expected.items() if v]
        if unused:
            raise AssertionError(f"expected commands not run on {self.host.name}: {unused}")

    def put(self, local_path: str | os.PathLike, remote_path: str, *, timeout: float) -> None:
        with open(local_path, "rb") as f:
            self.files[remote_path] = f.read()

    def get(self, remote_path: str, local_path: str | os.PathLike, *, timeout: float) -> None:
        if remote_path not in self.files:
            raise AssertionError(f"unexpected download of {remote_path} from {self.host.name}")
        with open(local_path, "wb") as f:
            f.write(self.files[remote_path])


# --------------------------------------------------------------------------
# Running commands
# --------------------------------------------------------------------------


def _argv(argv: Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(argv, (str, bytes)):
        raise BadParameters(
            f"commands are argument lists, got the string {argv!r}",
            fix="pass e.g. ['systemctl', 'is-active', 'etcd']",
        )
    if not argv:
        raise BadParameters("empty command")
    return [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]


def run(
    conn: BaseConnection,
    argv: Sequence[str | os.PathLike],
    *,
    timeout: float,
    check: bool = True,
    sudo: bool = False,
    input: str | bytes | None = None,
) -> Result:
    """Run ``argv`` on ``conn``'s host and return its :class:`Result`.

    ``sudo=True`` prefixes ``sudo -n --`` unless already root. Raises
    CommandFailed on a non-zero exit (unless ``check=False``) and on timeout;
    HostUnreachable when the host cannot be reached or stops answering
    (whatever ``check`` says: there is no exit status to report then).
    """
    args = _argv(argv)
    if sudo and conn.needs_sudo:
        args = ["sudo", "-n", "--", *args]
    command = shlex.join(args)
    data = input.encode() if isinstance(input, str) else input
    start = time.monotonic()
    exited, stdout, stderr = conn.execute(args, command, timeout=timeout, input=data)
    result = Result(conn.name, command, exited, stdout, stderr, time.monotonic() - start)
    if check and result.failed:
        raise failure(result)
    return result


def failure(result: Result, fix: str | None = None) -> CommandFailed:
    """The CommandFailed for a failed Result (with ``.result`` attached)."""
    exc = CommandFailed(
        f"command failed on {result.host}",
        host=result.host,
        command=result.command,
        exit_code=result.exited,
        stderr=result.stderr or result.stdout,
        fix=fix or "read the error output above; fix the cause on that host and rerun this step",
    )
    exc.result = result  # type: ignore[attr-defined]
    return exc


def run_group(
    conns: Sequence[BaseConnection],
    argv: Sequence[str | os.PathLike],
    *,
    timeout: float,
    check: bool = True,
    sudo: bool = False,
    input: str | bytes | None = None,
) -> GroupResult:
    """Run ``argv`` on every connection in parallel threads; return a :class:`GroupResult`.

    Waits for every host (each bounded by its connect timeout and ``timeout``).
    With ``check=True`` raises ONE error after all answered: HostUnreachable
    when every failure is an unreachable host, otherwise CommandFailed; the
    error lists each failed host and carries the GroupResult as ``.result``.
    """
    names = [c.name for c in conns]
    if len(set(names)) != len(names):
        raise BadParameters(f"duplicate host names in run_group: {names}")
    args = _argv(argv)

    def one(conn: BaseConnection) -> Result | BaseException:
        try:
            return run(conn, args, timeout=timeout, check=False, sudo=sudo, input=input)
        except Exception as exc:  # reported per host, never lost
            return exc

    outcomes: dict[str, Result | BaseException] = {}
    if conns:
        with ThreadPoolExecutor(max_workers=min(32, len(conns))) as pool:
            for conn, outcome in zip(conns, pool.map(one, conns)):
                outcomes[conn.name] = outcome
    group = GroupResult(outcomes)
    if check and group.failed:
        raise group_failure(group, shlex.join(args))
    return group


def group_failure(group: GroupResult, command: str) -> RunbookError:
    """One combined error describing every failed host of ``group``."""
    lines = []
    for name, outcome in group.failed.items():
        if isinstance(outcome, Result):
            lines.append(f"{name}: exit {outcome.exited}: {outcome.tail('stderr', 3) or outcome.tail('stdout', 3)}")
        else:
            lines.append(f"{name}: {type(outcome).__name__}: {str(outcome).splitlines()[0] if str(outcome) else ''}")
    unreachable = all(isinstance(o, HostUnreachable) for o in group.failed.values())
    cls = HostUnreachable if unreachable else CommandFailed
    exc = cls(
        f"{len(group.failed)} of {len(group)} hosts failed:\n  " + "\n  ".join(lines),
        command=command,
        fix="fix or exclude the failed hosts, then rerun; the other hosts succeeded",
    )
    exc.result = group  # type: ignore[attr-defined]
    return exc


def put(conn: BaseConnection, local_path: str | os.PathLike, remote_path: str, *, timeout: float = 60.0) -> None:
    """Upload ``local_path`` to ``remote_path`` (overwrites). Rollback: remove the remote file."""
    conn.put(local_path, remote_path, timeout=timeout)


def get(conn: BaseConnection, remote_path: str, local_path: str | os.PathLike, *, timeout: float = 60.0) -> None:
    """Download ``remote_path`` to ``local_path`` (overwrites the local file)."""
    conn.get(remote_path, local_path, timeout=timeout)


# --------------------------------------------------------------------------
# Remote text files
# --------------------------------------------------------------------------


def read_text(
    conn: BaseConnection, path: str, *, timeout: float = 30.0, sudo: bool = False, missing_ok: bool = False
) -> str | None:
    """Content of a remote text file; None if absent and ``missing_ok``. Raises CommandFailed."""
    result = run(conn, ["cat", "--", path], timeout=timeout, sudo=sudo, check=False)
    if result.ok:
        return result.stdout
    if missing_ok and "No such file" in result.stderr:
        return None
    raise failure(result, fix=f"check that {path} exists and is readable")


# Writes a temp file beside the target (same file system, so mv is atomic), copies
# the target's mode and owner, then renames it over the target. The temp name
# starts with a dot so that kubelet ignores it in a static-pod directory.
_WRITE_SCRIPT = (
    'set -e; cat > "$2"; '
    'if [ -e "$1" ]; then chmod --reference="$1" "$2"; chown --reference="$1" "$2"; fi; '
    'if [ -n "$3" ]; then chmod "$3" "$2"; fi; '
    'mv -f "$2" "$1"'
)


def write_text_argv(path: str, mode: str = "") -> list[str]:
    """The argv :func:`write_text` runs (stdin carries the content)."""
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".{base}.runbooks-tmp")
    return ["sh", "-c", _WRITE_SCRIPT, "sh", path, tmp, mode]


def write_text(
    conn: BaseConnection, path: str, text: str, *, timeout: float = 30.0, sudo: bool = False, mode: str = ""
) -> Result:
    """Replace a remote file atomically (temp file beside it + mv), keeping its mode and owner.

    ``mode`` (e.g. "0644") is applied to the new content. Raises CommandFailed.
    Rollback: write the previous content back the same way.
    """
    return run(conn, write_text_argv(path, mode), timeout=timeout, sudo=sudo, input=text)
