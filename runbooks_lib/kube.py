"""Kubernetes API: nodes, drain, cluster-info, kube-system health, apply, apiserver manifest.

The official ``kubernetes`` client supplies configuration, authentication,
TLS and transport (an ``ApiClient`` passed into every function); bodies are
read as plain JSON so that results do not depend on the client's model
classes. Every request has a timeout, every wait is bounded.

Probes: nodes, node, wait_for_nodes, cluster_info_server, pod_health,
read_etcd_servers. Actions: cordon, uncordon, drain, delete_node,
set_cluster_info_server, apply, set_etcd_servers, restart_apiserver. Each
action's docstring names its kubectl equivalent and its rollback.
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes
import urllib3
import yaml

from runbooks_lib import ssh
from runbooks_lib.errors import (
    BadParameters,
    CommandFailed,
    HostUnreachable,
    PreconditionFailed,
    WaitTimedOut,
)

REQUEST_TIMEOUT = 15.0
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"

# --------------------------------------------------------------------------
# Client and requests
# --------------------------------------------------------------------------


def client_from_kubeconfig(
    path: str, server: str | None = None, *, context: str | None = None
) -> kubernetes.client.ApiClient:
    """An ApiClient for a kubeconfig file, optionally pointed at another API server.

    ``server`` (e.g. ``https://10.0.0.12:6443``) switches away from a dead
    control plane while keeping TLS verification: the server's certificate
    must list that address in its SANs (Kubespray adds every control-plane
    IP). Connection errors are not retried; each call has its own timeout.
    """
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(path), context=context, client_configuration=cfg, persist_config=False
    )
    if server:
        cfg.host = server.rstrip("/")
    cfg.retries = 0
    return kubernetes.client.ApiClient(cfg)


def _server(api: kubernetes.client.ApiClient) -> str:
    return str(api.configuration.host)


def _call(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, Any] | None = None,
    body: Any = None,
    content_type: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> tuple[int, dict]:
    """One API request; returns (HTTP status, JSON body). Raises HostUnreachable."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type or "application/json"
    params = api.param_serialize(
        method=method, resource_path=path, query_params=list((query or {}).items()) or None,
        header_params=headers, body=body, auth_settings=["BearerToken"],
    )
    m, url, hdrs, data, post = params
    try:
        resp = api.call_api(m, url, header_params=hdrs, body=data, post_params=post, _request_timeout=timeout)
        raw = resp.read()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (urllib3.exceptions.SSLError, ssl.SSLError)):
            raise PreconditionFailed(
                f"TLS verification of the Kubernetes API at {_server(api)} failed: {reason}",
                fix="use an address listed in the API server certificate's SANs, "
                "or add it there (Kubespray: supplementary_addresses_in_ssl_keys); never disable verification",
            ) from None
        raise HostUnreachable(
            f"the Kubernetes API at {_server(api)} did not answer {method} {path} within {timeout:g}s: {exc}",
            fix="check that this control plane is up, or pass server= another control plane's URL",
        ) from None
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {"message": raw.decode("utf-8", "replace")[:500]}
    return resp.status, doc if isinstance(doc, dict) else {"items": doc}


def _expect(status: int, doc: dict, method: str, path: str, ok: Iterable[int] = (200, 201)) -> dict:
    if status in ok:
        return doc
    raise CommandFailed(
        f"Kubernetes API refused {method} {path}: HTTP {status} {doc.get('reason', '')}: {doc.get('message', '')}",
        fix="read the message; check RBAC, the object's name and namespace",
    )


def _get(api, path: str, *, query=None, timeout: float = REQUEST_TIMEOUT) -> dict | None:
    """GET returning None on 404."""
    status, doc = _call(api, "GET", path, query=query, timeout=timeout)
    if status == 404:
        return None
    return _expect(status, doc, "GET", path)


def _merge_patch(api, path: str, patch: dict, *, timeout: float = REQUEST_TIMEOUT) -> dict:
    status, doc = _call(api, "PATCH", path, body=patch, content_type="application/merge-patch+json", timeout=timeout)
    return _expect(status, doc, "PATCH", path)


# --------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------


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
    doc = _expect(*_call(api, "GET", "/api/v1/nodes", timeout=timeout), "GET", "/api/v1/nodes")
    return sorted((node_info(o) for o in doc.get("items") or []), key=lambda n: n.name)


def node(api: kubernetes.client.ApiClient, name: str, *, timeout: float = REQUEST_TIMEOUT) -> NodeInfo | None:
    """Probe: one node, or None if it does not exist."""
    obj = _get(api, f"/api/v1/nodes/{quote(name)}", timeout=timeout)
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
    WaitTimedOut naming the nodes still pending and their current state;
    HostUnreachable if the API stops answering.
    """
    if state not in NODE_STATES:
        raise BadParameters(f"state must be one of {NODE_STATES}, got {state!r}")
    deadline = time.monotonic() + timeout
    while True:
        current = {n.name: n for n in nodes(api, timeout=min(REQUEST_TIMEOUT, max(1.0, deadline - time.monotonic())))}
        found = {name: current.get(name) for name in names}
        pending = {name: _state(info) for name, info in found.items() if _state(info) != state}
        if not pending:
            return found
        if time.monotonic() + interval > deadline:
            raise WaitTimedOut(
                f"nodes not {state} after {timeout:g}s: "
                + ", ".join(f"{n} is {s}" for n, s in sorted(pending.items())),
                fix="check the kubelet on those nodes (journalctl -u kubelet) or wait longer",
            )
        time.sleep(interval)


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
    _merge_patch(api, f"/api/v1/nodes/{quote(name)}", {"spec": {"unschedulable": value or None}}, timeout=timeout)
    return True


def delete_node(api: kubernetes.client.ApiClient, name: str, *, timeout: float = REQUEST_TIMEOUT) -> bool:
    """Action: delete a Node object (``kubectl delete node NAME``); True if it existed.

    Rollback: restart kubelet on that machine: it registers the node again
    (labels and taints set by hand are lost).
    """
    path = f"/api/v1/nodes/{quote(name)}"
    status, doc = _call(api, "DELETE", path, timeout=timeout)
    if status == 404:
        return False
    _expect(status, doc, "DELETE", path, ok=(200, 202))
    return True


# --------------------------------------------------------------------------
# Drain
# --------------------------------------------------------------------------


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
    doc = _expect(*_call(api, "GET", path, query={"fieldSelector": f"spec.nodeName={name}"}, timeout=timeout), "GET", path)
    return list(doc.get("items") or [])


def _evict(api, pod: dict, deadline: float, retry_interval: float, grace_period: int | None) -> tuple[str, str | None]:
    """Evict one pod, retrying 429 (PodDisruptionBudget) until the deadline; (key, error or None)."""
    ns, name = pod["metadata"].get("namespace", "default"), pod["metadata"]["name"]
    path = f"/api/v1/namespaces/{quote(ns)}/pods/{quote(name)}/eviction"
    body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
    if grace_period is not None:
        body["deleteOptions"] = {"gracePeriodSeconds": grace_period}
    last = ""
    while True:
        remaining = deadline - time.monotonic()
        try:
            status, doc = _call(api, "POST", path, body=body, timeout=max(1.0, min(REQUEST_TIMEOUT, remaining)))
        except HostUnreachable as exc:
            status, doc = 0, {"message": str(exc).splitlines()[0]}
        if status in (200, 201) or status == 404:  # 404: already gone
            return _pod_key(pod), None
        last = f"HTTP {status}: {doc.get('message', '')}" if status else doc["message"]
        # 429: a PodDisruptionBudget forbids it now; 500/503/0: transient. Both retried.
        if status not in (429, 500, 503, 0) or time.monotonic() + retry_interval > deadline:
            return _pod_key(pod), last
        time.sleep(retry_interval)


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
        while pending and time.monotonic() < deadline:
            present = {_pod_key(p) for p in pods_on_node(api, name)}
            pending &= present
            if pending:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
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


# --------------------------------------------------------------------------
# cluster-info
# --------------------------------------------------------------------------

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
    obj = _get(api, _CLUSTER_INFO, timeout=timeout)
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
    _merge_patch(
        api, _CLUSTER_INFO,
        {"metadata": {"resourceVersion": obj["metadata"].get("resourceVersion")}, "data": {"kubeconfig": new_text}},
        timeout=timeout,
    )
    return ServerChange(old, server)


# --------------------------------------------------------------------------
# Pod health
# --------------------------------------------------------------------------


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
    doc = _expect(*_call(api, "GET", path, query=query, timeout=timeout), "GET", path)
    return sorted((pod_health_of(p) for p in doc.get("items") or []), key=lambda p: (p.node, p.name))


def by_node(pods: Iterable[PodHealth]) -> dict[str, list[PodHealth]]:
    """Group pods by node name ("" for unscheduled pods)."""
    out: dict[str, list[PodHealth]] = {}
    for p in pods:
        out.setdefault(p.node, []).append(p)
    return out


def crash_looping(pods: Iterable[PodHealth]) -> list[PodHealth]:
    return [p for p in pods if p.crash_looping]


# --------------------------------------------------------------------------
# Apply
# --------------------------------------------------------------------------

# (apiVersion, kind) -> (plural, namespaced): the kinds the runbooks manage.
KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Pod"): ("pods", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("apps/v1", "DaemonSet"): ("daemonsets", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("networking.k8s.io/v1", "Ingress"): ("ingresses", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("batch/v1", "Job"): ("jobs", True),
}


@dataclass(frozen=True)
class Applied:
    kind: str
    namespace: str | None
    name: str
    action: str  # "created", "configured" or "unchanged", as kubectl apply prints


def _collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    if (api_version, kind) not in KINDS:
        raise BadParameters(
            f"apply does not know {api_version} {kind}",
            fix=f"use one of {sorted(k for _, k in KINDS)} or kubectl apply -f",
        )
    plural, namespaced = KINDS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{quote(namespace or 'default')}/{plural}" if namespaced else f"{prefix}/{plural}"


def _contains(live: Any, desired: Any) -> bool:
    """True if every field of ``desired`` has the same value in ``live``."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(_contains(live.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(_contains, live, desired))
    return live == desired or (live is None and desired in ({}, [], None))


def _documents(manifests: str | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict]:
    if isinstance(manifests, str):
        docs = [d for d in yaml.safe_load_all(manifests) if d]
    elif isinstance(manifests, Mapping):
        docs = [dict(manifests)]
    else:
        docs = [dict(d) for d in manifests]
    out = []
    for d in docs:
        if d.get("kind") == "List":
            out.extend(d.get("items") or [])
        else:
            out.append(d)
    return out


def apply(
    api: kubernetes.client.ApiClient,
    manifests: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    namespace: str = "default",
    timeout: float = REQUEST_TIMEOUT,
) -> list[Applied]:
    """Action: create each object or merge-patch it to match the manifest.

    kubectl equivalent: ``kubectl apply -f FILE``. ``manifests`` is YAML
    text (several documents allowed), one object or a list. An object whose
    live state already contains every field of the manifest is left alone
    ("unchanged"). Raises BadParameters (unknown kind, no name),
    CommandFailed (refused by the API). Rollback: ``kubectl delete -f FILE``
    for created objects; re-apply the previous manifest for configured ones.
    """
    results = []
    for doc in _documents(manifests):
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise BadParameters(f"{kind} manifest without metadata.name")
        namespaced = KINDS.get((api_version, kind), ("", True))[1]
        ns = (meta.get("namespace") or namespace) if namespaced else None
        collection = _collection_path(api_version, kind, ns)
        path = f"{collection}/{quote(name)}"
        live = _get(api, path, timeout=timeout)
        if live is None:
            body = {**doc, "metadata": {**meta, **({"namespace": ns} if ns else {})}}
            _expect(*_call(api, "POST", collection, body=body, timeout=timeout), "POST", collection, ok=(200, 201, 202))
            action = "created"
        elif _contains(live, {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "status")}):
            action = "unchanged"
        else:
            _merge_patch(api, path, {k: v for k, v in doc.items() if k != "status"}, timeout=timeout)
            action = "configured"
        results.append(Applied(kind, ns, name, action))
    return results


# --------------------------------------------------------------------------
# kube-apiserver static pod manifest (over SSH on a control plane)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestChange:
    host: str
    path: str
    old: tuple[str, ...]
    new: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.old != self.new


_ETCD_FLAG = re.compile(r"^(?P<lead>\s*-\s*['\"]?--etcd-servers=)(?P<value>[^'\"\s]*)(?P<trail>['\"]?\s*)$", re.M)


def etcd_servers_in(manifest: str) -> tuple[str, ...]:
    """The --etcd-servers of the kube-apiserver container in a static pod manifest."""
    doc = yaml.safe_load(manifest) or {}
    for container in (doc.get("spec") or {}).get("containers") or []:
        for arg in list(container.get("command") or []) + list(container.get("args") or []):
            if isinstance(arg, str) and arg.startswith("--etcd-servers="):
                return tuple(u for u in arg.split("=", 1)[1].split(",") if u)
    raise PreconditionFailed(
        "no --etcd-servers=... flag in the kube-apiserver manifest", fix="check the manifest by hand"
    )


def read_etcd_servers(
    conn: ssh.BaseConnection, *, path: str = APISERVER_MANIFEST, sudo: bool = False, timeout: float = 30.0
) -> tuple[str, ...]:
    """Probe: --etcd-servers in /etc/kubernetes/manifests/kube-apiserver.yaml on a control plane."""
    return etcd_servers_in(ssh.read_text(conn, path, sudo=sudo, timeout=timeout) or "")


def set_etcd_servers(
    conn: ssh.BaseConnection, servers: Sequence[str], *, path: str = APISERVER_MANIFEST, sudo: bool = False,
    timeout: float = 30.0,
) -> ManifestChange:
    """Action: rewrite only --etcd-servers in kube-apiserver.yaml (atomically: temp file + mv).

    kubectl has no equivalent (static pod manifests live on the node); by
    hand: edit the file on the control plane. On a kubeadm control plane
    kubelet restarts the API server when the file changes; a stand-in run
    as a service needs :func:`restart_apiserver`. Raises BadParameters for
    non-https URLs, PreconditionFailed if the flag is not found exactly
    once. Rollback: ``set_etcd_servers(conn, change.old)``.
    """
    if not servers or not all(re.match(r"^https://[^,\s]+$", s) for s in servers):
        raise BadParameters(f"etcd servers must be https:// URLs, got {list(servers)}")
    text = ssh.read_text(conn, path, sudo=sudo, timeout=timeout) or ""
    old = etcd_servers_in(text)
    new = tuple(servers)
    if old == new:
        return ManifestChange(conn.name, path, old, new)
    matches = list(_ETCD_FLAG.finditer(text))
    if len(matches) != 1:
        raise PreconditionFailed(f"--etcd-servers appears {len(matches)} times as a list item in {path}; edit by hand")
    new_text = _ETCD_FLAG.sub(lambda m: f"{m.group('lead')}{','.join(new)}{m.group('trail')}", text, count=1)
    if etcd_servers_in(new_text) != new:
        raise PreconditionFailed(f"editing {path} did not give the expected flag; edit by hand")
    ssh.write_text(conn, path, new_text, sudo=sudo, timeout=timeout)
    return ManifestChange(conn.name, path, old, new)


def restart_apiserver(
    conn: ssh.BaseConnection, unit: str = "kube-apiserver", *, sudo: bool = False, timeout: float = 60.0
) -> ssh.Result:
    """Action: ``systemctl restart UNIT`` for an API server run as a service (``kube-apiserver``).

    On a kubeadm control plane (a static pod), kubelet already restarted it
    when the manifest changed; there, restart ``kubelet`` only if the pod did
    not come back. Rollback: none (a restart has no undo; revert the config
    and restart again).
    """
    return ssh.run(conn, ["systemctl", "restart", unit], timeout=timeout, sudo=sudo)
