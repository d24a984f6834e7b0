"""Pod health: phase, readiness, restarts and waiting reasons (``kubectl get pods``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes

from runbooks_lib.kube import api as api_
from runbooks_lib.kube.api import REQUEST_TIMEOUT
from runbooks_lib.kube.drain import _controller_kind

@dataclass(frozen=True)
class PodHealth:
    namespace: str
    name: str
    node: str
    phase: str
    ready: bool
    restarts: int
    waiting_reasons: tuple[str, ...]
    owner_kind: str | None = None

    @property
    def crash_looping(self) -> bool:
        return "CrashLoopBackOff" in self.waiting_reasons

    @property
    def healthy(self) -> bool:
        return self.phase == "Succeeded" or (self.phase == "Running" and self.ready)


def pod_health_of(obj: Mapping[str, Any]) -> PodHealth:
    """PodHealth from a Pod object (JSON)."""
    status = obj.get("status") or {}
    statuses = list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])
    waiting = tuple(
        ((s.get("state") or {}).get("waiting") or {}).get("reason", "")
        for s in statuses if (s.get("state") or {}).get("waiting")
    )
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodHealth(
        namespace=obj["metadata"].get("namespace", ""), name=obj["metadata"]["name"],
        node=(obj.get("spec") or {}).get("nodeName") or "", phase=status.get("phase", "Unknown"),
        ready=ready, restarts=sum(int(s.get("restartCount") or 0) for s in status.get("containerStatuses") or []),
        waiting_reasons=tuple(r for r in waiting if r), owner_kind=_controller_kind(obj),
    )


def pod_health(
    api: kubernetes.client.ApiClient, namespace: str = "kube-system", *, node: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> list[PodHealth]:
    """Probe: phase, readiness, restarts and waiting reasons of the pods in ``namespace``."""
    path = f"/api/v1/namespaces/{quote(namespace)}/pods"
    query = {"fieldSelector": f"spec.nodeName={node}"} if node else None
    doc = api_.expect(*api_.call(api, "GET", path, query=query, timeout=timeout), "GET", path)
    return sorted((pod_health_of(p) for p in doc.get("items") or []), key=lambda p: (p.node, p.name))


def by_node(pods: Iterable[PodHealth]) -> dict[str, list[PodHealth]]:
    """Group pods by node name ("" for unscheduled pods)."""
    out: dict[str, list[PodHealth]] = {}
    for p in pods:
        out.setdefault(p.node, []).append(p)
    return out


def crash_looping(pods: Iterable[PodHealth]) -> list[PodHealth]:
    return [p for p in pods if p.crash_looping]
