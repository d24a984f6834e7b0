"""kube-public/cluster-info: the API server address joining nodes contact."""

from __future__ import annotations

import re
from dataclasses import dataclass

import kubernetes
import yaml

from runbooks_lib.errors import BadParameters, PreconditionFailed
from runbooks_lib.kube import api as api_
from runbooks_lib.kube.api import REQUEST_TIMEOUT

_CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
_SERVER_LINE = re.compile(r"^(?P<lead>\s*server:\s*)(?P<url>\S+?)(?P<trail>\s*)$", re.M)


@dataclass(frozen=True)
class ServerChange:
    old: str
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new


def _cluster_info(api, timeout: float) -> dict:
    obj = api_.get(api, _CLUSTER_INFO, timeout=timeout)
    if obj is None or "kubeconfig" not in (obj.get("data") or {}):
        raise PreconditionFailed(
            "kube-public/cluster-info has no kubeconfig", fix="this cluster was not set up by kubeadm/Kubespray"
        )
    return obj


def _server_in(kubeconfig: str) -> str:
    matches = list(_SERVER_LINE.finditer(kubeconfig))
    if len(matches) != 1:
        raise PreconditionFailed(f"cluster-info's kubeconfig has {len(matches)} server: lines, expected one")
    return matches[0].group("url").strip("\"'")


def cluster_info_server(api: kubernetes.client.ApiClient, *, timeout: float = REQUEST_TIMEOUT) -> str:
    """Probe: the ``server:`` URL in kube-public/cluster-info (what joining nodes contact)."""
    return _server_in(_cluster_info(api, timeout)["data"]["kubeconfig"])


def set_cluster_info_server(
    api: kubernetes.client.ApiClient, server: str, *, timeout: float = REQUEST_TIMEOUT
) -> ServerChange:
    """Action: point kube-public/cluster-info at ``server`` (only that line changes).

    kubectl equivalent: ``kubectl -n kube-public edit configmap cluster-info``.
    The patch carries the read resourceVersion, so a concurrent change fails
    instead of being overwritten (CommandFailed, HTTP 409). Rollback:
    ``set_cluster_info_server(api, change.old)``.
    """
    if not re.match(r"^https://\S+$", server):
        raise BadParameters(f"server must be an https:// URL, got {server!r}")
    obj = _cluster_info(api, timeout)
    text = obj["data"]["kubeconfig"]
    old = _server_in(text)
    if old == server:
        return ServerChange(old, server)
    new_text = _SERVER_LINE.sub(lambda m: f"{m.group('lead')}{server}{m.group('trail')}", text, count=1)
    before, after = yaml.safe_load(text), yaml.safe_load(new_text)
    for cluster in after.get("clusters") or []:
        cluster["cluster"]["server"] = old
    if before != after:  # the line edit must have changed nothing but the server
        raise PreconditionFailed("cluster-info's kubeconfig has an unexpected layout; edit it by hand")
    api_.merge_patch(
        api, _CLUSTER_INFO,
        {"metadata": {"resourceVersion": obj["metadata"].get("resourceVersion")}, "data": {"kubeconfig": new_text}},
        timeout=timeout,
    )
    return ServerChange(old, server)
