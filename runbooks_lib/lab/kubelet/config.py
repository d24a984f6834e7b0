"""The kubelet stand-in's configuration: /etc/kubernetes/kubelet-config.yaml and resolv.conf.

Reads the KubeletConfiguration fields the stand-in honours (the rest are
accepted and ignored, as the file Kubespray writes has many more). Pure
functions over files; nothing here changes the system.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from runbooks_lib.errors import BadParameters

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | int | float) -> float:
    """Parse a Go duration ("10s", "1m0s", "500ms") or a number of seconds into seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if not text:
        raise BadParameters("empty duration", fix='write durations like "10s" or "1m0s"')
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        try:
            return float(text)
        except ValueError:
            raise BadParameters(f"not a duration: {value!r}", fix='write durations like "10s" or "1m0s"') from None
    return total


@dataclass(frozen=True)
class KubeletConfig:
    """The KubeletConfiguration fields the stand-in uses (defaults are upstream's)."""

    resolv_conf: str = "/etc/resolv.conf"
    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    node_status_update_frequency: float = 10.0
    node_lease_duration_seconds: int = 40
    max_pods: int = 110
    port: int = 10250
    address: str | None = None
    register_with_taints: tuple[dict, ...] = ()
    max_container_restart_period: float = 300.0
    client_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_private_key_file: str | None = None
    static_pod_path: str | None = None  # upstream default: none (kubeadm and Kubespray set /etc/kubernetes/manifests)
    file_check_frequency: float = 20.0  # how often the static pod manifests are read again
    raw: dict = field(default_factory=dict, compare=False, repr=False)


def load_config(path: str | Path | None) -> KubeletConfig:
    """Read a KubeletConfiguration YAML file; None gives the defaults.

    Raises BadParameters if the file is missing, not YAML, or of another kind.
    """
    if path is None:
        return KubeletConfig()
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BadParameters(f"cannot read kubelet config {path}: {exc}", fix="check --config") from None
    if not isinstance(doc, dict) or doc.get("kind", "KubeletConfiguration") != "KubeletConfiguration":
        raise BadParameters(f"{path} is not a KubeletConfiguration", fix="check --config")
    crash = doc.get("crashLoopBackOff") or {}
    auth = ((doc.get("authentication") or {}).get("x509") or {})
    try:
        return KubeletConfig(
            resolv_conf=str(doc.get("resolvConf", "/etc/resolv.conf")),
            cluster_dns=tuple(str(ip) for ip in doc.get("clusterDNS") or ()),
            cluster_domain=str(doc.get("clusterDomain", "cluster.local")),
            node_status_update_frequency=parse_duration(doc.get("nodeStatusUpdateFrequency", "10s")),
            node_lease_duration_seconds=int(doc.get("nodeLeaseDurationSeconds", 40)),
            max_pods=int(doc.get("maxPods", 110)),
            port=int(doc.get("port", 10250)),
            address=doc.get("address"),
            register_with_taints=tuple(doc.get("registerWithTaints") or ()),
            max_container_restart_period=parse_duration(crash.get("maxContainerRestartPeriod", "300s")),
            client_ca_file=auth.get("clientCAFile"),
            tls_cert_file=doc.get("tlsCertFile"),
            tls_private_key_file=doc.get("tlsPrivateKeyFile"),
            static_pod_path=doc.get("staticPodPath") or None,
            file_check_frequency=parse_duration(doc.get("fileCheckFrequency", "20s")),
            raw=doc,
        )
    except (TypeError, ValueError) as exc:
        raise BadParameters(f"bad value in kubelet config {path}: {exc}", fix="check the field types") from None


def nameservers(resolv_conf_text: str) -> list[str]:
    """Return the nameserver addresses of a resolv.conf text, in order."""
    out = []
    for line in resolv_conf_text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1])
    return out


def resolv_conf_loops(path: str | Path) -> bool:
    """True if pods given this resolv.conf would forward DNS to themselves.

    That is the case when every nameserver is a loopback address, e.g. only
    systemd-resolved's 127.0.0.53 stub: inside a pod, loopback is the pod
    itself, so CoreDNS and nodelocaldns detect a forwarding loop and exit.
    A missing or unreadable file is not a loop (the kubelet reports it apart).
    """
    try:
        servers = nameservers(Path(path).read_text())
    except OSError:
        return False
    if not servers:
        return False
    for server in servers:
        try:
            if not ipaddress.ip_address(server.split("%", 1)[0]).is_loopback:
                return False
        except ValueError:
            return False
    return True
