"""etcd module against a real local etcd 3.4.23 cluster with TLS in Kubespray's file layout.

Three members listen on their own loopback addresses (127.0.0.11-13) with
certificates named like Kubespray's (/etc/ssl/etcd/ssl/{ca,admin-HOST,member-HOST}.pem
live in a temp dir here); etcdctl runs through ssh.LocalConnection exactly as it
would over SSH on a member.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runbooks_lib import errors, etcd, ssh
from tests.waiting import wait_until

pytestmark = pytest.mark.local

MEMBERS = {"node1": "127.0.0.11", "node2": "127.0.0.12", "node3": "127.0.0.13"}


# -- PKI in Kubespray's naming ------------------------------------------------


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def make_pki(cert_dir: Path, members: dict[str, str]) -> None:
    """CA plus admin-/member-/node-HOST certificates, as Kubespray names them."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (cert_dir / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(cert_dir / "ca-key.pem", ca_key)
    for host, ip in members.items():
        for kind in ("admin", "member", "node"):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"etcd-{kind}-{host}")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(
                    x509.SubjectAlternativeName(
                        [x509.DNSName("localhost"), x509.DNSName(host),
                         x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address(ip))]
                    ),
                    critical=False,
                )
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False,
                )
                .sign(ca_key, hashes.SHA256())
            )
            (cert_dir / f"{kind}-{host}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            _write_key(cert_dir / f"{kind}-{host}-key.pem", key)


# -- cluster ---------------------------------------------------------------------


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class LocalEtcd:
    """A TLS etcd cluster of real processes on loopback; every process is stopped by stop()."""

    def __init__(self, base: Path, members: dict[str, str]) -> None:
        self.base = base
        self.members = members
        self.cert_dir = base / "ssl"
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = {h: (_free_port(ip), _free_port(ip)) for h, ip in members.items()}
        make_pki(self.cert_dir, members)

    def client_url(self, host: str) -> str:
        return f"https://{self.members[host]}:{self.ports[host][0]}"

    def peer_url(self, host: str) -> str:
        return f"https://{self.members[host]}:{self.ports[host][1]}"

    def start(self, host: str, initial: dict[str, str], state: str = "new") -> None:
        c = self.cert_dir
        log = open(self.base / f"{host}.log", "ab")
        args = [
            "etcd", "--name", host, "--data-dir", str(self.base / f"{host}.etcd"),
            "--listen-client-urls", self.client_url(host), "--advertise-client-urls", self.client_url(host),
            "--listen-peer-urls", self.peer_url(host), "--initial-advertise-peer-urls", self.peer_url(host),
            "--initial-cluster", ",".join(f"{h}={u}" for h, u in initial.items()),
            "--initial-cluster-state", state, "--initial-cluster-token", "k8s_etcd",
            "--client-cert-auth", "--trusted-ca-file", str(c / "ca.pem"),
            "--cert-file", str(c / f"member-{host}.pem"), "--key-file", str(c / f"member-{host}-key.pem"),
            "--peer-client-cert-auth", "--peer-trusted-ca-file", str(c / "ca.pem"),
            "--peer-cert-file", str(c / f"member-{host}.pem"), "--peer-key-file", str(c / f"member-{host}-key.pem"),
            "--heartbeat-interval", "100", "--election-timeout", "1000",
        ]
        self.procs[host] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def stop(self, host: str) -> None:
        proc = self.procs.pop(host, None)
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for host in list(self.procs):
            self.stop(host)

    def ctl(self, host: str, conn: ssh.BaseConnection, *endpoints: str) -> etcd.Etcdctl:
        return etcd.Etcdctl(
            conn, host, endpoints=endpoints or (self.client_url(host),), cert_dir=str(self.cert_dir)
        )

    def wait_healthy(self, conn: ssh.BaseConnection, timeout: float = 30.0) -> None:
        hosts = list(self.procs)
        ctl = self.ctl(hosts[0], conn, *(self.client_url(h) for h in hosts))

        def healthy() -> tuple[bool, str]:
            health = etcd.endpoint_health(ctl)
            unhealthy = [f"{h.endpoint}: {h.error or 'unhealthy'}" for h in health if not h.healthy]
            return bool(health) and not unhealthy, "; ".join(unhealthy) or "no endpoint answered"

        try:
            wait_until(healthy, timeout=timeout, interval=0.3, what="the local etcd members to be healthy")
        except errors.WaitTimedOut as exc:
            logs = {h: (self.base / f"{h}.log").read_text()[-2000:] for h in hosts}
            raise AssertionError(f"{exc}\n{logs}") from None


@pytest.fixture(scope="module", autouse=True)
def etcd_installed() -> None:
    # Like the shared fixture in tests/local/conftest.py: a missing etcd fails, it never skips.
    if not shutil.which("etcd") or not shutil.which("etcdctl"):
        pytest.fail("etcd is not installed (apt-get install etcd-server etcd-client)")


@pytest.fixture
def conn() -> ssh.LocalConnection:
    return ssh.LocalConnection("operator")


@pytest.fixture
def cluster(tmp_path: Path, conn: ssh.LocalConnection):
    c = LocalEtcd(tmp_path, MEMBERS)
    try:
        initial = {h: c.peer_url(h) for h in MEMBERS}
        for host in MEMBERS:
            c.start(host, initial)
        c.wait_healthy(conn)
        yield c
    finally:
        c.stop_all()


# -- tests ------------------------------------------------------------------------


def test_member_list_status_and_health(cluster: LocalEtcd, conn: ssh.LocalConnection) -> None:
    ctl = cluster.ctl("node1", conn)
    members = etcd.member_list(ctl)
    assert sorted(m.name for m in members) == ["node1", "node2", "node3"]
    assert {m.peer_urls[0] for m in members} == {cluster.peer_url(h) for h in MEMBERS}
    assert all(m.started and len(m.id_hex) <= 16 for m in members)

    health = etcd.endpoint_health(ctl, cluster=True)
    assert {h.endpoint for h in health} == {cluster.client_url(h) for h in MEMBERS}
    assert all(h.healthy for h in health)

    status = etcd.endpoint_status(ctl, cluster=True)
    assert len(status) == 3
    leaders = {s.leader_hex for s in status}
    assert len(leaders) == 1 and sum(s.is_leader for s in status) == 1
    assert all(s.version == "3.4.23" and s.db_size > 0 and s.raft_term >= 1 for s in status)
    ids = {m.id_hex for m in members}
    assert leaders <= ids


def test_dead_member_reported_unhealthy_and_quorum_guard(cluster: LocalEtcd, conn: ssh.LocalConnection) -> None:
    cluster.stop("node3")
    ctl = cluster.ctl("node1", conn, *(cluster.client_url(h) for h in MEMBERS))
    health = {h.endpoint: h for h in etcd.endpoint_health(ctl, timeout=20)}
    assert health[cluster.client_url("node3")].healthy is False
    assert health[cluster.client_url("node3")].error
    assert health[cluster.client_url("node1")].healthy
    healthy = {"node1", "node2"}
    names = list(MEMBERS)
    assert etcd.check_removal(names, healthy, "node3").ok
    verdict = etcd.check_removal(names, healthy, "node2")
    assert not verdict.ok and "quorum" in verdict.message
    assert not etcd.check_loss(names, healthy, "node1").ok

    # member_remove holds the same guard against the live health: nothing is removed.
    with pytest.raises(errors.PreconditionFailed) as info:
        etcd.member_remove(ctl, name="node2")
    assert "refusing to remove etcd member node2" in str(info.value) and "quorum" in str(info.value)
    assert sorted(m.name for m in etcd.member_list(ctl)) == ["node1", "node2", "node3"]


def test_remove_and_add_member_with_env_file(cluster: LocalEtcd, conn: ssh.LocalConnection, tmp_path: Path) -> None:
    cluster.stop("node3")
    cluster.wait_healthy(conn)  # a new leader, if node3 led
    ctl = cluster.ctl("node1", conn)
    removed = etcd.member_remove(ctl, peer_url=cluster.peer_url("node3"))
    assert removed.name == "node3"
    assert sorted(m.name for m in etcd.member_list(ctl)) == ["node1", "node2"]
    with pytest.raises(errors.PreconditionFailed):
        etcd.member_remove(ctl, name="node3")

    added = etcd.member_add(ctl, "node3", cluster.peer_url("node3"))
    assert added.name == "node3"
    assert f"node3={cluster.peer_url('node3')}" in added.initial_cluster
    assert added.initial_cluster_state == "existing"
    unstarted = [m for m in etcd.member_list(ctl) if m.id == added.id]
    assert unstarted and not unstarted[0].started

    # Rejoin with a fresh data dir using the ETCD_INITIAL_CLUSTER etcd printed, via an env file edit.
    env_path = tmp_path / "etcd.env"
    env_path.write_text("# Kubespray-like env file\nETCD_NAME=node3\nETCD_INITIAL_CLUSTER_STATE=new\n")
    change = etcd.set_env(conn, "ETCD_INITIAL_CLUSTER_STATE", "existing", path=str(env_path))
    assert (change.old, change.new, change.changed) == ("new", "existing", True)
    assert env_path.read_text().startswith("# Kubespray-like env file\nETCD_NAME=node3\n")
    shutil.rmtree(tmp_path / "node3.etcd", ignore_errors=True)
    initial = dict(item.split("=", 1) for item in added.initial_cluster.split(","))
    cluster.start("node3", initial, state=etcd.read_env(conn, str(env_path))["ETCD_INITIAL_CLUSTER_STATE"])
    cluster.wait_healthy(conn)
    assert all(m.started for m in etcd.member_list(ctl))


def test_snapshot_save_verify_download(cluster: LocalEtcd, conn: ssh.LocalConnection, tmp_path: Path) -> None:
    ctl = cluster.ctl("node2", conn)
    remote = tmp_path / "remote" / "snap.db"
    remote.parent.mkdir()
    local = tmp_path / "downloaded.db"
    for i in range(5):
        ctl.run("put", f"/registry/test/{i}", "value")
    snap = etcd.snapshot(ctl, str(remote), local, endpoint=cluster.client_url("node2"), timeout=60)
    assert local.exists() and local.stat().st_size == snap.size > 0
    assert snap.local_sha256 == snap.remote_sha256
    assert snap.status.revision >= 1 and snap.status.total_keys >= 1 and snap.status.total_size > 0
    assert snap.status.hash != 0


def test_snapshot_needs_single_endpoint(cluster: LocalEtcd, conn: ssh.LocalConnection, tmp_path: Path) -> None:
    ctl = cluster.ctl("node1", conn)
    with pytest.raises(errors.BadParameters):
        etcd.snapshot_save(ctl, str(tmp_path / "x.db"), endpoint="https://a:2379,https://b:2379")
