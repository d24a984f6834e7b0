"""ssh.Connection against a real SSH server (paramiko's server side) on loopback.

The server runs each exec request with ``sh -c`` like sshd does, so quoting,
stdin, exit codes and stderr travel the real protocol. Host key checks,
connect/banner timeouts and the command timeout are tested here; powered-off
machines (dropped SYNs) are tested against the lab.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

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
        threading.Thread(target=self.server.execute, args=(channel, command.decode()), daemon=True).start()
        return True


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
        channel.sendall(out)
        channel.sendall_stderr(err)
        channel.send_exit_status(proc.returncode)
        channel.shutdown_write()
        channel.close()

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
