"""X.509 certificates on cluster machines: when they expire.

A certificate is read over SSH as text (``cat``) and parsed here with the
``cryptography`` package; the first certificate of a PEM file counts (a
chain's leaf). Key files are never read: a path that names a key, or a file
that holds a private key instead of a certificate, raises BadParameters
before anything is returned or shown. Probes only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509

from runbooks_lib import ssh
from runbooks_lib.errors import BadParameters

_KEY_PATH = re.compile(r"(?i)(-key\.pem|\.key|_key|/key\.pem|id_(rsa|ed25519|ecdsa|dsa))$")
_CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

# Kubespray's locations (etcd: etcd_cert_dir; Kubernetes: kube_cert_dir).
ETCD_CERT_DIR = "/etc/ssl/etcd/ssl"
KUBE_CERT_DIR = "/etc/kubernetes/ssl"


def etcd_member_cert(host: str) -> str:
    return f"{ETCD_CERT_DIR}/member-{host}.pem"


def etcd_admin_cert(host: str) -> str:
    return f"{ETCD_CERT_DIR}/admin-{host}.pem"


APISERVER_CERT = f"{KUBE_CERT_DIR}/apiserver.crt"


@dataclass(frozen=True)
class CertExpiry:
    """One certificate's subject, issuer and end of validity, and the days left at ``checked``."""

    host: str
    path: str
    subject: str
    issuer: str
    not_after: datetime
    checked: datetime

    @property
    def days_left(self) -> int:
        """Whole days until notAfter (negative once expired)."""
        return int((self.not_after - self.checked).total_seconds() // 86400)

    @property
    def expired(self) -> bool:
        return self.not_after <= self.checked


def refuse_key_path(path: str) -> None:
    """Raise BadParameters when ``path`` names a private key file (those are never read)."""
    if _KEY_PATH.search(path):
        raise BadParameters(f"{path} looks like a private key; only certificates are read",
                            fix="pass the certificate's path (e.g. admin-HOST.pem, apiserver.crt)")


def parse_pem(text: str, *, host: str = "", path: str = "", now: datetime | None = None) -> CertExpiry:
    """The first certificate in PEM ``text``. Raises BadParameters when there is none. Pure."""
    block = _CERT_BLOCK.search(text)
    if not block:
        raise BadParameters(f"{host + ':' if host else ''}{path} holds no PEM certificate",
                            fix="check the path: it must be a certificate (BEGIN CERTIFICATE), not a key")
    cert = x509.load_pem_x509_certificate(block.group(0).encode())
    return CertExpiry(host=host, path=path, subject=cert.subject.rfc4514_string(),
                      issuer=cert.issuer.rfc4514_string(), not_after=cert.not_valid_after_utc,
                      checked=now or datetime.now(timezone.utc))


def remote_expiry(conn: ssh.BaseConnection, path: str, *, sudo: bool = False, timeout: float = 30.0,
                  now: datetime | None = None) -> CertExpiry:
    """Probe: notAfter of the certificate at ``path`` on ``conn``'s host (``cat PATH``).

    Raises BadParameters for a key path (nothing is read) or a file without a
    certificate (its content is not shown), CommandFailed when the file cannot
    be read.
    """
    refuse_key_path(path)
    text = ssh.read_text(conn, path, sudo=sudo, timeout=timeout) or ""
    return parse_pem(text, host=conn.name, path=path, now=now)
