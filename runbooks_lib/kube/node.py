"""Nodes: read, wait for a state, cordon, uncordon, delete (``kubectl get/cordon/uncordon/delete node``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes

from runbooks_lib import runbook
from runbooks_lib.errors import BadParameters, PreconditionFailed
from runbooks_lib.kube import api as api_
from runbooks_lib.kube.api import REQUEST_TIMEOUT

@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class NodeInfo:
    """A node's readiness, roles, taints and schedulability."""

    name: str
    ready: str  # the Ready condition's status: "True", "False" or "Unknown"
    roles: tuple[str, ...]
    taints: tuple[Taint, ...]
    unschedulable: bool
    internal_ip: str | None = None
    kubelet_version: str = ""

    @property
    def is_ready(self) -> bool:
        return self.ready == "True"

    @property
    def status(self) -> str:
        """As ``kubectl get nodes`` shows it, e.g. ``Ready,SchedulingDisabled``."""
        s = "Ready" if self.is_ready else "NotReady"
        return s + (",SchedulingDisabled" if self.unschedulable else "")


def node_info(obj: Mapping[str, Any]) -> NodeInfo:
    """NodeInfo from a Node object (JSON)."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}) or {}, obj.get("status", {}) or {}
    labels = meta.get("labels") or {}
    roles = sorted(
        {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1]}
        | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set())
    )
    ready = next((c.get("status", "Unknown") for c in status.get("conditions") or [] if c.get("type") == "Ready"), "Unknown")
    ip = next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
    return NodeInfo(
        name=meta.get("name", ""),
        ready=ready,
        roles=tuple(roles),
        taints=tuple(Taint(t.get("key", ""), t.get("value") or "", t.get("effect", "")) for t in spec.get("taints") or []),
        unschedulable=bool(spec.get("unschedulable")),
        internal_ip=ip,
        kubelet_version=(status.get("nodeInfo") or {}).get("kubeletVersion", ""),
    )


def nodes(api: kubernetes.client.ApiClient, *, timeout: float = REQUEST_TIMEOUT) -> list[NodeInfo]:
    """Probe: every node (``kubectl get nodes``)."""
    doc = api_.expect(*api_.call(api, "GET", "/api/v1/nodes", timeout=timeout), "GET", "/api/v1/nodes")
    return sorted((node_info(o) for o in doc.get("items") or []), key=lambda n: n.name)


def node(api: kubernetes.client.ApiClient, name: str, *, timeout: float = REQUEST_TIMEOUT) -> NodeInfo | None:
    """Probe: one node, or None if it does not exist."""
    obj = api_.get(api, f"/api/v1/nodes/{quote(name)}", timeout=timeout)
    return node_info(obj) if obj else None


NODE_STATES = ("Ready", "NotReady", "absent")


def _state(info: NodeInfo | None) -> str:
    if info is None:
        return "absent"
    return "Ready" if info.is_ready else "NotReady"


def wait_for_nodes(
    api: kubernetes.client.ApiClient,
    names: Sequence[str],
    state: str = "Ready",
    *,
    timeout: float = 300.0,
    interval: float = 2.0,
) -> dict[str, NodeInfo | None]:
    """Probe: wait until every named node is Ready, NotReady or absent.

    Returns the final NodeInfo per node (None when absent). Raises
    WaitTimedOut (runbook.wait_for) naming the nodes still pending and their
    current state; HostUnreachable if the API stops answering.
    """
    if state not in NODE_STATES:
        raise BadParameters(f"state must be one of {NODE_STATES}, got {state!r}")
    found: dict[str, NodeInfo | None] = {}

    def reached() -> tuple[bool, str]:
        current = {n.name: n for n in nodes(api, timeout=min(REQUEST_TIMEOUT, max(1.0, timeout)))}
        found.clear()
        found.update({name: current.get(name) for name in names})
        pending = {name: _state(info) for name, info in found.items() if _state(info) != state}
        return not pending, ", ".join(f"{n} is {s}" for n, s in sorted(pending.items()))

    runbook.wait_for(reached, timeout=timeout, interval=interval, what=f"nodes {', '.join(names)} to be {state}",
                     fix="check the kubelet on those nodes (journalctl -u kubelet) or wait longer")
    return dict(found)


def cordon(api: kubernetes.client.ApiClient, name: str, *, timeout: float = REQUEST_TIMEOUT) -> bool:
    """Action: mark a node unschedulable (``kubectl cordon NAME``); True if it changed.

    Raises PreconditionFailed if the node does not exist. Rollback: :func:`uncordon`.
    """
    return _set_unschedulable(api, name, True, timeout)


def uncordon(api: kubernetes.client.ApiClient, name: str, *, timeout: float = REQUEST_TIMEOUT) -> bool:
    """Action: mark a node schedulable (``kubectl uncordon NAME``); True if it changed.

    Raises PreconditionFailed if the node does not exist. Rollback: :func:`cordon`.
    """
    return _set_unschedulable(api, name, False, timeout)


def _set_unschedulable(api, name: str, value: bool, timeout: float) -> bool:
    info = node(api, name, timeout=timeout)
    if info is None:
        raise PreconditionFailed(f"node {name} does not exist", fix="check the name with kube.nodes(api)")
    if info.unschedulable == value:
        return False
    api_.merge_patch(api, f"/api/v1/nodes/{quote(name)}", {"spec": {"unschedulable": value or None}}, timeout=timeout)
    return True


def delete_node(api: kubernetes.client.ApiClient, name: str, *, timeout: float = REQUEST_TIMEOUT) -> bool:
    """Action: delete a Node object (``kubectl delete node NAME``); True if it existed.

    Rollback: restart kubelet on that machine: it registers the node again
    (labels and taints set by hand are lost).
    """
    path = f"/api/v1/nodes/{quote(name)}"
    status, doc = api_.call(api, "DELETE", path, timeout=timeout)
    if status == 404:
        return False
    api_.expect(status, doc, "DELETE", path, ok=(200, 202))
    return True
