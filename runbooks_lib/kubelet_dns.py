"""Which resolv.conf kubelet hands to pods, and whether it loops back (the CoreDNS CrashLoopBackOff cause).

kubelet passes the file named by ``resolvConf`` in /etc/kubernetes/kubelet-config.yaml
(default /etc/resolv.conf) to pods with ``dnsPolicy: Default``: CoreDNS and
nodelocaldns forward to its nameservers. When that file is systemd-resolved's
stub (only 127.0.0.53), they forward to themselves and crash-loop. Probe only.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from runbooks_lib import ssh
from runbooks_lib.nodes import KUBELET_CONFIG, nameservers

DEFAULT_RESOLV_CONF = "/etc/resolv.conf"


@dataclass(frozen=True)
class KubeletDns:
    """One node's kubelet resolvConf and the nameservers in it."""

    host: str
    resolv_conf: str
    nameservers: tuple[str, ...]

    @property
    def loops(self) -> bool:
        """True when there are nameservers and every one is a loopback address (127.0.0.53: the stub).

        A file without nameservers is no loop (DNS pods fail to forward, but do not crash-loop).
        """
        return bool(self.nameservers) and all(ns.startswith("127.") or ns == "::1" for ns in self.nameservers)


def kubelet_dns(conn: ssh.BaseConnection, *, sudo: bool = False, timeout: float = 30.0) -> KubeletDns:
    """Probe: kubelet's resolvConf on ``conn``'s node and its nameservers. Raises CommandFailed."""
    config = ssh.read_text(conn, KUBELET_CONFIG, timeout=timeout, sudo=sudo) or ""
    doc = yaml.safe_load(config) or {}
    path = str(doc.get("resolvConf") or DEFAULT_RESOLV_CONF) if isinstance(doc, dict) else DEFAULT_RESOLV_CONF
    text = ssh.read_text(conn, path, timeout=timeout, sudo=sudo) or ""
    return KubeletDns(conn.name, path, nameservers(text))
