"""Which resolv.conf kubelet hands to pods, and whether it loops back (the CoreDNS CrashLoopBackOff cause).

kubelet passes the file named by ``resolvConf`` in /etc/kubernetes/kubelet-config.yaml
(default /etc/resolv.conf) to pods with ``dnsPolicy: Default``: CoreDNS and
nodelocaldns forward to its nameservers. When that file is systemd-resolved's
stub (only 127.0.0.53), they forward to themselves and crash-loop.

A pod's resolv.conf is written once, when its sandbox is created: restarting a
crash-looping container reuses it, and a kubelet restart does not rewrite the
pods that run. Fixing kubelet's resolvConf therefore helps only new pods, so
:func:`recreate_dns_pods` deletes the DNS pods of the fixed nodes for their
controllers to create new ones. Probe: kubelet_dns, dns_pods. Action:
recreate_dns_pods.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import quote

import kubernetes
import yaml

from runbooks_lib import ssh
from runbooks_lib.kube import api as kube_api
from runbooks_lib.kube.health import PodHealth, pod_health
from runbooks_lib.nodes import KUBELET_CONFIG, nameservers

DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
DNS_POD_PREFIXES = ("coredns-", "nodelocaldns-")


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


def dns_pods(api: kubernetes.client.ApiClient, nodes: Collection[str] | None = None, *,
             timeout: float = 30.0) -> list[PodHealth]:
    """Probe: the CoreDNS and nodelocaldns pods in kube-system (on ``nodes`` when given)."""
    return [x for x in pod_health(api, "kube-system", timeout=timeout)
            if x.name.startswith(DNS_POD_PREFIXES) and (nodes is None or x.node in nodes)]


def recreate_dns_pods(api: kubernetes.client.ApiClient, nodes: Collection[str], *,
                      timeout: float = 30.0) -> list[str]:
    """Action: delete the DNS pods on ``nodes`` so that their Deployment/DaemonSet creates new ones.

    The new pods get new sandboxes, whose resolv.conf is kubelet's current
    resolvConf (``kubectl -n kube-system delete pod NAME``). Returns the pods
    deleted (one already gone is skipped). No rollback is needed: the
    controllers recreate them. Raises CommandFailed for another answer.
    """
    deleted = []
    for pod in dns_pods(api, nodes, timeout=timeout):
        path = f"/api/v1/namespaces/kube-system/pods/{quote(pod.name)}"
        status, body = kube_api.call(api, "DELETE", path, timeout=timeout)
        if status != 404:
            kube_api.expect(status, body, "DELETE", path, ok=(200, 202))
            deleted.append(pod.name)
    return deleted
