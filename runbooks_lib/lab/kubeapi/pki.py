"""Certificates and kubeconfigs for the lab's API stand-in (and the etcd it talks to).

Everything here is local computation plus file writes: a CA, server
certificates (SAN IPs and DNS names), client certificates (CN = user,
O = groups) and kubeconfig files. Private keys are written with mode 0600 and
never logged. Keys are ECDSA P-256: fast to generate and accepted by etcd,
gRPC, Go's TLS stack (kubectl) and Python's ssl module.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runbooks_lib.errors import BadParameters

DEFAULT_DAYS = 3650
# Names every API server certificate carries, as kubeadm puts them in apiserver.crt.
APISERVER_DNS_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key (the key is secret: never print it)."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # keeps the key out of tracebacks and notebook output
        return f"KeyPair(subject={subject_of(self.cert_pem)!r})"


@dataclass(frozen=True)
class PkiPaths:
    """Files written by :func:`init_dir`."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    admin_kubeconfig: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    # Back-date by an hour so that small clock differences between machines do not matter.
    now = dt.datetime.now(dt.timezone.utc)
    return builder.not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=days))


def subject_of(cert_pem: bytes) -> str:
    """Return the RFC 4514 subject of a PEM certificate (for messages)."""
    return x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()


def create_ca(common_name: str = "kubernetes", days: int = DEFAULT_DAYS) -> KeyPair:
    """Create a self-signed CA (pure computation, nothing written)."""
    key = _new_key()
    name = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = _validity(builder, days).sign(key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _issue(
    ca: KeyPair,
    common_name: str,
    organizations: Sequence[str],
    usages: Sequence[x509.ObjectIdentifier],
    ips: Iterable[str],
    dns_names: Iterable[str],
    days: int,
) -> KeyPair:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns_names)]
    try:
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
    except ValueError as exc:
        raise BadParameters(f"not an IP address for a certificate: {exc}", fix="pass IP addresses as ips") from None
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = _validity(builder, days).sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_server_cert(
    ca: KeyPair,
    common_name: str,
    ips: Iterable[str] = ("127.0.0.1",),
    dns_names: Iterable[str] = APISERVER_DNS_NAMES,
    days: int = DEFAULT_DAYS,
    client_auth: bool = False,
) -> KeyPair:
    """Issue a TLS server certificate; ``client_auth=True`` also allows it as a client (etcd peers)."""
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return _issue(ca, common_name, (), usages, ips, dns_names, days)


def issue_client_cert(
    ca: KeyPair, common_name: str, organizations: Sequence[str] = (), days: int = DEFAULT_DAYS
) -> KeyPair:
    """Issue a client certificate: CN is the user name, O the groups (e.g. system:masters)."""
    return _issue(ca, common_name, organizations, [ExtendedKeyUsageOID.CLIENT_AUTH], (), (), days)


def write_file(path: str | os.PathLike[str], data: bytes, private: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; mode 0600 when ``private`` else 0644. Creates parent dirs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600 if private else 0o644)
    os.replace(tmp, path)
    return path


def write_pair(pair: KeyPair, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
    """Write a certificate (0644) and its key (0600)."""
    write_file(cert_path, pair.cert_pem)
    write_file(key_path, pair.key_pem, private=True)


def load_pair(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> KeyPair:
    """Read a certificate and key from files (raises BadParameters if missing)."""
    try:
        return KeyPair(Path(cert_path).read_bytes(), Path(key_path).read_bytes())
    except OSError as exc:
        raise BadParameters(f"cannot read certificate or key: {exc}", fix="run `pki init` first") from None


def kubeconfig(
    server: str,
    ca_pem: bytes,
    client: KeyPair,
    cluster_name: str = "cluster.local",
    user: str = "kubernetes-admin",
) -> dict:
    """Return a kubeconfig document (a dict) with embedded CA and client credentials."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    context = f"{user}@{cluster_name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(client.cert_pem), "client-key-data": b64(client.key_pem)}}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: str | os.PathLike[str], config: dict) -> Path:
    """Write a kubeconfig with mode 0600 (it holds a private key)."""
    return write_file(path, yaml.safe_dump(config, sort_keys=False).encode(), private=True)


def read_kubeconfig_credentials(path: str | os.PathLike[str]) -> tuple[str, bytes, KeyPair]:
    """Return (server URL, CA PEM, client key pair) of the current context of a kubeconfig."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
        ctx_name = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        ca = base64.b64decode(cluster["certificate-authority-data"])
        pair = KeyPair(base64.b64decode(user["client-certificate-data"]), base64.b64decode(user["client-key-data"]))
    except (OSError, KeyError, StopIteration, TypeError, ValueError, yaml.YAMLError) as exc:
        raise BadParameters(
            f"kubeconfig {path} is unreadable or lacks embedded credentials ({type(exc).__name__}: {exc})",
            fix="use a kubeconfig with certificate-authority-data, client-certificate-data and client-key-data",
        ) from None
    return cluster["server"], ca, pair


def init_dir(
    directory: str | os.PathLike[str],
    ips: Sequence[str] = ("127.0.0.1",),
    dns_names: Sequence[str] = (),
    server_url: str | None = None,
    ca: KeyPair | None = None,
) -> PkiPaths:
    """Create (or reuse) a CA, an API server certificate, an admin certificate and admin.conf.

    Files (kubeadm's names): ca.crt/ca.key, apiserver.crt/apiserver.key,
    admin.crt/admin.key (CN kubernetes-admin, O system:masters) and admin.conf.
    An existing ca.crt/ca.key in ``directory`` is reused, so re-running only
    re-issues the leaf certificates. Keys are 0600. Rollback: delete the directory.
    """
    d = Path(directory)
    paths = PkiPaths(
        directory=d,
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        server_cert=d / "apiserver.crt",
        server_key=d / "apiserver.key",
        admin_cert=d / "admin.crt",
        admin_key=d / "admin.key",
        admin_kubeconfig=d / "admin.conf",
    )
    if ca is None:
        if paths.ca_cert.exists() and paths.ca_key.exists():
            ca = load_pair(paths.ca_cert, paths.ca_key)
        else:
            ca = create_ca()
    write_pair(ca, paths.ca_cert, paths.ca_key)
    server = issue_server_cert(ca, "kube-apiserver", ips=ips, dns_names=(*APISERVER_DNS_NAMES, *dns_names))
    write_pair(server, paths.server_cert, paths.server_key)
    admin = issue_client_cert(ca, "kubernetes-admin", ("system:masters",))
    write_pair(admin, paths.admin_cert, paths.admin_key)
    url = server_url or f"https://{_url_host(ips[0] if ips else '127.0.0.1')}:6443"
    write_kubeconfig(paths.admin_kubeconfig, kubeconfig(url, ca.cert_pem, admin))
    return paths


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
