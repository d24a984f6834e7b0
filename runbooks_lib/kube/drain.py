"""Drain: cordon a node and evict its pods through the Eviction API (``kubectl drain``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes

from runbooks_lib import runbook
from runbooks_lib.errors import HostUnreachable, WaitTimedOut
from runbooks_lib.kube import api as api_
from runbooks_lib.kube.api import REQUEST_TIMEOUT
from runbooks_lib.kube.node import cordon

@dataclass(frozen=True)
class DrainResult:
    """What a drain did: evicted pods, pods it skipped by rule, and pods it could not evict."""

    node: str
    evicted: tuple[str, ...]
    skipped_daemonset: tuple[str, ...]
    skipped_mirror: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (namespace/name, reason)
    terminating: tuple[str, ...] = ()  # evicted but still present when the drain ended

    @property
    def ok(self) -> bool:
        return not self.failed


def _pod_key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"


def _controller_kind(pod: Mapping[str, Any]) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("kind")
    return None


def pods_on_node(api: kubernetes.client.ApiClient, name: str, *, timeout: float = REQUEST_TIMEOUT) -> list[dict]:
    """Probe: every pod bound to node ``name`` (JSON objects)."""
    path = "/api/v1/pods"
    doc = api_.expect(*api_.call(api, "GET", path, query={"fieldSelector": f"spec.nodeName={name}"}, timeout=timeout), "GET", path)
    return list(doc.get("items") or [])


def _evict(api, pod: dict, deadline: float, retry_interval: float, grace_period: int | None) -> tuple[str, str | None]:
    """Evict one pod, retrying 429 (PodDisruptionBudget) until the deadline; (key, error or None)."""
    ns, name = pod["metadata"].get("namespace", "default"), pod["metadata"]["name"]
    path = f"/api/v1/namespaces/{quote(ns)}/pods/{quote(name)}/eviction"
    body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
    if grace_period is not None:
        body["deleteOptions"] = {"gracePeriodSeconds": grace_period}
    last = ""

    class _Refused(Exception):
        """A status that retrying cannot change."""

    def evicted() -> tuple[bool, str]:
        nonlocal last
        remaining = deadline - time.monotonic()
        try:
            status, doc = api_.call(api, "POST", path, body=body, timeout=max(1.0, min(REQUEST_TIMEOUT, remaining)))
        except HostUnreachable as exc:
            status, doc = 0, {"message": str(exc).splitlines()[0]}
        if status in (200, 201) or status == 404:  # 404: already gone
            return True, ""
        last = f"HTTP {status}: {doc.get('message', '')}" if status else doc["message"]
        # 429: a PodDisruptionBudget forbids it now; 500/503/0: transient. Both retried.
        if status not in (429, 500, 503, 0):
            raise _Refused(last)
        return False, last

    try:
        runbook.wait_for(evicted, timeout=max(deadline - time.monotonic(), 0.001), interval=retry_interval,
                         what=f"eviction of {_pod_key(pod)}")
    except (_Refused, WaitTimedOut):
        return _pod_key(pod), last
    return _pod_key(pod), None


def drain(
    api: kubernetes.client.ApiClient,
    name: str,
    *,
    timeout: float = 300.0,
    force: bool = False,
    grace_period: int | None = None,
    max_parallel: int = 8,
    retry_interval: float = 2.0,
    wait_for_deletion: bool = True,
    check: bool = True,
) -> DrainResult:
    """Action: cordon a node and evict its pods through the Eviction API (policy/v1).

    kubectl equivalent: ``kubectl drain NAME --ignore-daemonsets --timeout=...``
    (``--force`` with ``force=True``). DaemonSet pods and mirror (static)
    pods are skipped; PodDisruptionBudgets are honoured (429 is retried until
    ``timeout``); evictions run in parallel. Pods without a controller are
    not evicted unless ``force``. Returns a DrainResult; with ``check=True``
    raises WaitTimedOut listing the pods that could not be evicted and why.
    Pods of a dead node stay "terminating" until the deadline (reported,
    not an error); pass ``wait_for_deletion=False`` there to return at once.
    Rollback: :func:`uncordon` (evicted pods are recreated by their
    controllers elsewhere, not moved back).
    """
    deadline = time.monotonic() + timeout
    cordon(api, name)
    daemonset, mirror, failed, to_evict = [], [], [], []
    for pod in pods_on_node(api, name):
        key = _pod_key(pod)
        kind = _controller_kind(pod)
        if "kubernetes.io/config.mirror" in (pod["metadata"].get("annotations") or {}):
            mirror.append(key)
        elif kind == "DaemonSet":
            daemonset.append(key)
        elif kind is None and not force:
            failed.append((key, "not managed by a controller; pass force=True to evict it (kubectl drain --force)"))
        else:
            to_evict.append(pod)
    evicted: list[str] = []
    if to_evict:
        with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(to_evict)))) as pool:
            for key, error in pool.map(lambda p: _evict(api, p, deadline, retry_interval, grace_period), to_evict):
                if error is None:
                    evicted.append(key)
                else:
                    failed.append((key, error))
    terminating: list[str] = []
    if wait_for_deletion and evicted:
        pending = set(evicted)

        def deleted() -> tuple[bool, list[str]]:
            pending.intersection_update(_pod_key(p) for p in pods_on_node(api, name))
            return not pending, sorted(pending)

        try:
            runbook.wait_for(deleted, timeout=max(deadline - time.monotonic(), 0.001), interval=1.0,
                             what=f"evicted pods to leave {name}")
        except WaitTimedOut:
            pass  # still terminating (a dead node's pods): reported in the result, not an error
        terminating = sorted(pending)
    result = DrainResult(
        node=name, evicted=tuple(sorted(evicted)), skipped_daemonset=tuple(sorted(daemonset)),
        skipped_mirror=tuple(sorted(mirror)), failed=tuple(sorted(failed)), terminating=tuple(terminating),
    )
    if check and failed:
        exc = WaitTimedOut(
            f"drain of {name} could not evict {len(failed)} pod(s) within {timeout:g}s:\n  "
            + "\n  ".join(f"{k}: {r}" for k, r in result.failed),
            fix="check the PodDisruptionBudgets of those pods (kubectl get pdb -A) or raise the timeout; "
            "the node stays cordoned",
        )
        exc.result = result  # type: ignore[attr-defined]
        raise exc
    return result


@dataclass(frozen=True)
class DisruptionBudget:
    """A PodDisruptionBudget: which pods it covers and how many may be evicted now."""

    namespace: str
    name: str
    match_labels: Mapping[str, str]
    allowed: int  # status.disruptionsAllowed

    def matches(self, pod: Mapping[str, Any]) -> bool:
        """True if the budget covers ``pod`` (same namespace, matchLabels all present)."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        return (meta.get("namespace", "default") == self.namespace and bool(self.match_labels)
                and all(labels.get(k) == v for k, v in self.match_labels.items()))


def disruption_budgets(api: kubernetes.client.ApiClient, *, timeout: float = REQUEST_TIMEOUT) -> list[DisruptionBudget]:
    """Probe: every PodDisruptionBudget (``kubectl get pdb -A``); matchExpressions are not evaluated."""
    path = "/apis/policy/v1/poddisruptionbudgets"
    doc = api_.expect(*api_.call(api, "GET", path, timeout=timeout), "GET", path)
    return [DisruptionBudget(o["metadata"].get("namespace", "default"), o["metadata"]["name"],
                             dict(((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}),
                             int((o.get("status") or {}).get("disruptionsAllowed") or 0))
            for o in doc.get("items") or []]
