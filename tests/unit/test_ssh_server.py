"""ssh.Connection (fabric) against a real SSH server (paramiko's server side) on loopback.

The server runs each exec request with ``sh -c`` like sshd does, so quoting,
stdin, exit codes and stderr travel the real protocol, and serves SFTP on the
local file system. Host key checks, isolation from ~/.ssh/config, connect and
banner timeouts, the command timeout and the watchdog behind it, and file
transfers are tested here; powered-off and frozen machines are tested against
the lab.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import fabric
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from runbooks_lib import errors, ssh


def _ed25519(path: Path) -> paramiko.Ed25519Key:
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return paramiko.Ed25519Key(filename=str(path))


class _Handler(paramiko.ServerInterface):
    def __init__(self, server: "SSHServer") -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "root" and key == self.server.client_key
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if self.server.hang_next_exec.is_set():
            # An sshd that stops answering between opening a session and running the command.
            self.server.hang_next_exec.clear()
            self.server.released.wait(30)
            return False
        threading.Thread(target=self.server.execute, args=(channel, command.decode()), daemon=True).start()
        return True


class _Handle(paramiko.SFTPHandle):
    def stat(self) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)


class _LocalSFTP(paramiko.SFTPServerInterface):
    """SFTP on this machine's file system, with "/" as the working directory."""

    def canonicalize(self, path: str) -> str:
        return os.path.normpath(os.path.join("/", path))

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    lstat = stat

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        try:
            if attr._flags & attr.FLAG_PERMISSIONS:
                os.chmod(path, stat.S_IMODE(attr.st_mode))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return paramiko.SFTP_OK

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> paramiko.SFTPHandle | int:
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        mode = "r+b" if flags & os.O_RDWR else "wb" if flags & os.O_WRONLY else "rb"
        handle = _Handle(flags)
        handle.readfile = handle.writefile = os.fdopen(fd, mode)
        return handle


class SSHServer:
    """A minimal sshd: public-key auth for root, exec requests run by sh -c."""

    def __init__(self, tmp: Path, *, silent: bool = False) -> None:
        self.host_key = _ed25519(tmp / "host_key")
        self.client_key = _ed25519(tmp / "client_key")
        self.client_key_path = str(tmp / "client_key")
        self.silent = silent  # accept TCP but never speak SSH (a hung machine)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        self.accepted: list[socket.socket] = []
        self.procs: list[subprocess.Popen] = []
        self.hang_next_exec = threading.Event()
        self.released = threading.Event()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(client)
            if not self.silent:
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        t = paramiko.Transport(client)
        t.add_server_key(self.host_key)
        t.set_subsystem_handler("sftp", paramiko.SFTPServer, _LocalSFTP)
        t.banner_timeout = 2  # probes that connect and hang up must not linger
        self.transports.append(t)
        try:
            t.start_server(server=_Handler(self))
        except (paramiko.SSHException, EOFError, OSError):
            t.close()

    def execute(self, channel: paramiko.Channel, command: str) -> None:
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(proc)
        data = b""
        while True:
            chunk = channel.recv(65536)
            if not chunk:
                break
            data += chunk
        out, err = proc.communicate(data)
        # A shell reports death by signal N as 128+N.
        status = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        try:
            channel.sendall(out)
            channel.sendall_stderr(err)
            channel.send_exit_status(status)
            channel.shutdown_write()
            channel.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client went away (timeout, closed connection)

    def known_hosts(self, path: Path, key: paramiko.PKey | None = None) -> str:
        key = key or self.host_key
        path.write_text(f"[127.0.0.1]:{self.port} {key.get_name()} {key.get_base64()}\n")
        return str(path)

    def stop_listening(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() and stops listening
        except OSError:
            pass
        self.sock.close()

    def close(self) -> None:
        self.released.set()
        self.stop_listening()
        for t in self.transports:
            t.close()
        for s in self.accepted:
            s.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


@pytest.fixture
def server(tmp_path: Path):
    s = SSHServer(tmp_path)
    yield s
    s.close()


def _host(server: SSHServer, known_hosts: str) -> ssh.Host:
    return ssh.Host("node1", "127.0.0.1", port=server.port, key_path=server.client_key_path, known_hosts=known_hosts)


def test_run_over_ssh_with_verified_host_key(server: SSHServer, tmp_path: Path) -> None:
    host = _host(server, server.known_hosts(tmp_path / "known_hosts"))
    with ssh.Connection(host, connect_timeout=5) as conn:
        r = ssh.run(conn, ["printf", "%s|", "a b", "$HOME", "it's", ";ls"], timeout=10)
        assert r.stdout == "a b|$HOME|it's|;ls|" and r.ok and r.host == "node1"
        r = ssh.run(conn, ["sh", "-c", "cat; echo err >&2; exit 4"], timeout=10, input="stdin data\n", check=False)
        assert (r.stdout, r.stderr, r.exited) == ("stdin data\n", "err\n", 4)
        with pytest.raises(errors.CommandFailed) as info:
            ssh.run(conn, ["false"], timeout=10)
        assert info.value.exit_code == 1 and info.value.host == "node1"


def test_unknown_host_key_is_refused_with_fingerprint(server: SSHServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(errors.HostKeyError) as info:
        ssh.run(ssh.Connection(_host(server, str(empty)), connect_timeout=5), ["true"], timeout=5)
    text = str(info.value)
    assert ssh.fingerprint(server.host_key) in text
    assert "not in" in text and "ssh-keyscan" in text and "compare" in text
    assert empty.read_text() == ""  # nothing was added


def test_changed_host_key_names_both_fingerprints(server: SSHServer, tmp_path: Path) -> None:
    other = _ed25519(tmp_path / "other_key")
    kh = server.known_hosts(tmp_path / "known_hosts", key=other)
    with pytest.raises(errors.HostKeyError) as info:
        ssh.run(ssh.Connection(_host(server, kh), connect_timeout=5), ["true"], timeout=5)
    text = str(info.value)
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in text
    assert ssh.fingerprint(other) in text and ssh.fingerprint(server.host_key) in text
    assert "ssh-keygen -R" in text


def test_user_known_hosts_are_not_consulted(server: SSHServer, tmp_path: Path, monkeypatch) -> None:
    # A key trusted in ~/.ssh/known_hosts must not vouch for a cluster machine.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    server.known_hosts(home / ".ssh" / "known_hosts")
    monkeypatch.setenv("HOME", str(home))
    empty = tmp_path / "kh"
    empty.write_text("")
    with pytest.raises(errors.HostKeyError):
        ssh.run(ssh.Connection(_host(server, str(empty)), connect_timeout=5), ["true"], timeout=5)


def test_wrong_client_key_is_an_auth_error(server: SSHServer, tmp_path: Path) -> None:
    _ed25519(tmp_path / "stranger")
    host = ssh.Host("node1", "127.0.0.1", port=server.port, key_path=str(tmp_path / "stranger"),
                    known_hosts=server.known_hosts(tmp_path / "kh"))
    with pytest.raises(errors.CommandFailed, match="authentication"):
        ssh.run(ssh.Connection(host, connect_timeout=5), ["true"], timeout=5)


def test_connection_refused_is_unreachable_fast(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    kh = tmp_path / "kh"
    kh.write_text("")
    host = ssh.Host("gone", "127.0.0.1", port=port, known_hosts=str(kh))
    start = time.monotonic()
    with pytest.raises(errors.HostUnreachable, match="cannot reach gone"):
        ssh.run(ssh.Connection(host, connect_timeout=2), ["true"], timeout=5)
    assert time.monotonic() - start < 2


def test_silent_host_times_out_within_connect_timeout(tmp_path: Path) -> None:
    silent = SSHServer(tmp_path, silent=True)
    try:
        host = ssh.Host("hung", "127.0.0.1", port=silent.port, known_hosts=silent.known_hosts(tmp_path / "kh"))
        start = time.monotonic()
        with pytest.raises(errors.HostUnreachable):
            ssh.run(ssh.Connection(host, connect_timeout=1.0), ["true"], timeout=5)
        assert time.monotonic() - start < 4
    finally:
        silent.close()


def test_command_timeout_is_enforced(server: SSHServer, tmp_path: Path) -> None:
    host = _host(server, server.known_hosts(tmp_path / "kh"))
    with ssh.Connection(host, connect_timeout=5) as conn:
        ssh.run(conn, ["true"], timeout=5)
        start = time.monotonic()
        with pytest.raises(errors.CommandFailed, match="did not finish within 1s"):
            ssh.run(conn, ["sleep", "30"], timeout=1)
        assert time.monotonic() - start < 5
        # the connection reopens for the next command
        assert ssh.run(conn, ["echo", "again"], timeout=5).stdout == "again\n"


def test_host_gone_mid_command_is_unreachable(server: SSHServer, tmp_path: Path) -> None:
    host = _host(server, server.known_hosts(tmp_path / "kh"))
    with ssh.Connection(host, connect_timeout=2) as conn:
        ssh.run(conn, ["true"], timeout=5)
        # The machine stops answering: the running command never ends and new connections fail.
        threading.Timer(0.3, server.stop_listening).start()
        start = time.monotonic()
        with pytest.raises(errors.HostUnreachable, match="stopped answering"):
            ssh.run(conn, ["sleep", "30"], timeout=1.5)
        assert time.monotonic() - start < 6


def test_run_group_over_ssh_with_one_dead_host(server: SSHServer, tmp_path: Path) -> None:
    kh = server.known_hosts(tmp_path / "kh")
    alive = ssh.Connection(_host(server, kh), connect_timeout=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = ssh.Connection(ssh.Host("node9", "127.0.0.1", port=dead_port, known_hosts=kh), connect_timeout=2)
    try:
        with pytest.raises(errors.HostUnreachable) as info:
            ssh.run_group([alive, dead], ["hostname"], timeout=5)
        # the only failure is an unreachable host, so the combined error says so
        group = info.value.result  # type: ignore[attr-defined]
        assert group["node1"].ok and isinstance(group["node9"], errors.HostUnreachable)
    finally:
        alive.close()


def test_fabric_connection_ignores_user_ssh_and_fabric_config(server: SSHServer, tmp_path: Path, monkeypatch) -> None:
    # Whatever ~/.ssh/config or ~/.fabric.yaml say, the inventory host decides where and how to connect.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host *\n  HostName 127.0.0.2\n  Port 1\n  User nobody\n  ProxyCommand false\n  ConnectTimeout 1\n"
    )
    (home / ".fabric.yaml").write_text("run:\n  pty: true\n  echo: true\nuser: nobody\n")
    monkeypatch.setenv("HOME", str(home))
    host = _host(server, server.known_hosts(tmp_path / "kh"))
    with ssh.Connection(host, connect_timeout=5) as conn:
        assert isinstance(conn.fabric, fabric.Connection)
        assert (conn.fabric.host, conn.fabric.port, conn.fabric.user) == ("127.0.0.1", server.port, "root")
        assert conn.fabric.gateway is None
        r = ssh.run(conn, ["sh", "-c", "echo out; echo err >&2; test -t 0 || echo no-tty"], timeout=10)
        # no pty: stderr stays separate and stdin is not a terminal
        assert (r.stdout, r.stderr) == ("out\nno-tty\n", "err\n")


def test_stdin_is_sent_whole_and_closed_and_utf8_survives_chunking(server: SSHServer, tmp_path: Path) -> None:
    host = _host(server, server.known_hosts(tmp_path / "kh"))
    with ssh.Connection(host, connect_timeout=5) as conn:
        # No input: stdin is closed at once, so a command reading it ends instead of waiting.
        start = time.monotonic()
        assert ssh.run(conn, ["cat"], timeout=10).stdout == ""
        payload = os.urandom(1 << 20)
        r = ssh.run(conn, ["sha256sum"], timeout=20, input=payload)
        assert r.stdout.split()[0] == hashlib.sha256(payload).hexdigest()
        # two-byte characters at every offset, so some straddle the boundary between two reads
        text = "é" * 100_000 + "\n"
        assert ssh.run(conn, ["cat"], timeout=20, input=text).stdout == text
        assert time.monotonic() - start < 10


def test_watchdog_ends_a_call_stuck_before_the_command_started(server: SSHServer, tmp_path: Path) -> None:
    # fabric's own timeout starts once the command runs; a request that is never answered
    # (the exec request here) is ended by closing the connection.
    host = _host(server, server.known_hosts(tmp_path / "kh"))
    with ssh.Connection(host, connect_timeout=5) as conn:
        ssh.run(conn, ["true"], timeout=5)
        server.hang_next_exec.set()
        start = time.monotonic()
        with pytest.raises(errors.CommandFailed, match="did not finish within 1s"):
            ssh.run(conn, ["true"], timeout=1)
        assert time.monotonic() - start < 4
        assert ssh.run(conn, ["echo", "again"], timeout=5).stdout == "again\n"


def test_put_and_get_over_sftp(server: SSHServer, tmp_path: Path) -> None:
    host = _host(server, server.known_hosts(tmp_path / "kh"))
    remote = tmp_path / "remote"
    remote.mkdir()
    data = os.urandom(300_000)
    src = tmp_path / "snapshot-{date}.db"  # braces stay literal: nothing is filled into the name
    src.write_bytes(data)
    src.chmod(0o644)
    existing = remote / "etcd.env"
    existing.write_text("OLD=1\n")
    existing.chmod(0o640)
    with ssh.Connection(host, connect_timeout=5) as conn:
        ssh.put(conn, src, str(remote / "copy.db"), timeout=10)
        assert (remote / "copy.db").read_bytes() == data
        ssh.put(conn, src, str(existing), timeout=10)
        assert existing.read_bytes() == data
        assert stat.S_IMODE(existing.stat().st_mode) == 0o640  # an existing remote file keeps its mode
        ssh.put(conn, src, str(remote), timeout=10)  # into a directory: same name there
        assert (remote / "snapshot-{date}.db").read_bytes() == data

        secret = remote / "admin-key.pem"
        secret.write_bytes(b"not a real key\n")
        secret.chmod(0o600)
        down = tmp_path / "down" / "key-{host}.pem"
        down.parent.mkdir()
        ssh.get(conn, str(secret), down, timeout=10)
        assert down.read_bytes() == b"not a real key\n"
        assert stat.S_IMODE(down.stat().st_mode) == 0o600  # the copy is no more readable than the original
        with pytest.raises(errors.CommandFailed, match="SFTP get"):
            ssh.get(conn, str(remote / "absent"), tmp_path / "absent", timeout=10)
        # the SFTP session survives a failed transfer
        ssh.get(conn, str(remote / "copy.db"), tmp_path / "again.db", timeout=10)
        assert (tmp_path / "again.db").read_bytes() == data
