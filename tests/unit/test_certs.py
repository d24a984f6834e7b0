"""Certificate expiry read from a remote PEM file (MockConnection) and parsed with cryptography."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runbooks_lib import certs, testing
from runbooks_lib.errors import BadParameters, CommandFailed

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _pem(days: int, cn: str = "kube-apiserver") -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - timedelta(days=300))
            .not_valid_after(NOW + timedelta(days=days)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def test_days_left_of_a_remote_certificate() -> None:
    pem, _ = _pem(42)
    conn = testing.MockConnection("node1", {("cat", "--", certs.APISERVER_CERT): pem + pem})
    info = certs.remote_expiry(conn, certs.APISERVER_CERT, now=NOW)
    assert (info.host, info.days_left, info.expired, info.subject) == ("node1", 42, False, "CN=kube-apiserver")


def test_expired_certificate_has_negative_days() -> None:
    pem, _ = _pem(-3)
    info = certs.parse_pem(pem, now=NOW)
    assert info.expired and info.days_left == -3


@pytest.mark.parametrize("path", ["/etc/ssl/etcd/ssl/admin-node1-key.pem", "/etc/kubernetes/ssl/apiserver.key",
                                  "/root/.ssh/id_ed25519"])
def test_key_paths_are_never_read(path: str) -> None:
    conn = testing.MockConnection("node1", {})  # any command would fail the test
    with pytest.raises(BadParameters, match="looks like a private key"):
        certs.remote_expiry(conn, path)
    assert conn.calls == []


def test_a_key_where_a_certificate_should_be_is_not_shown() -> None:
    _, key_pem = _pem(1)
    conn = testing.MockConnection("node1", {("cat", "--", "/etc/x.pem"): key_pem})
    with pytest.raises(BadParameters) as exc:
        certs.remote_expiry(conn, "/etc/x.pem")
    assert "holds no PEM certificate" in str(exc.value) and "PRIVATE" not in str(exc.value)


def test_missing_file_raises_command_failed() -> None:
    conn = testing.MockConnection("node1", {("cat", "--", certs.etcd_member_cert("node1")):
                                        testing.Reply(exited=1, stderr="cat: No such file or directory")})
    with pytest.raises(CommandFailed):
        certs.remote_expiry(conn, certs.etcd_member_cert("node1"))
