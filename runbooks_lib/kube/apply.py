"""Apply: create objects or merge-patch them to match manifests (``kubectl apply -f``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes
import yaml

from runbooks_lib.errors import BadParameters
from runbooks_lib.kube import api as api_
from runbooks_lib.kube.api import REQUEST_TIMEOUT

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
        live = api_.get(api, path, timeout=timeout)
        if live is None:
            body = {**doc, "metadata": {**meta, **({"namespace": ns} if ns else {})}}
            api_.expect(*api_.call(api, "POST", collection, body=body, timeout=timeout), "POST", collection, ok=(200, 201, 202))
            action = "created"
        elif _contains(live, {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "status")}):
            action = "unchanged"
        else:
            api_.merge_patch(api, path, {k: v for k, v in doc.items() if k != "status"}, timeout=timeout)
            action = "configured"
        results.append(Applied(kind, ns, name, action))
    return results


def delete(
    api: kubernetes.client.ApiClient,
    manifests: str | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    namespace: str = "default",
    timeout: float = REQUEST_TIMEOUT,
) -> list[Applied]:
    """Action: delete the objects the manifests name (``kubectl delete -f FILE``).

    Returns one Applied per object, action "deleted" or "absent" (already
    gone). Dependents (a Deployment's ReplicaSets and pods) go by garbage
    collection. Raises CommandFailed for any other answer. Rollback:
    :func:`apply` with the same manifests.
    """
    done = []
    for doc in _documents(manifests):
        kind, meta = doc["kind"], doc.get("metadata") or {}
        namespaced = KINDS.get((doc.get("apiVersion", ""), kind), ("", True))[1]
        ns = (meta.get("namespace") or namespace) if namespaced else None
        path = f"{_collection_path(doc.get('apiVersion', ''), kind, ns)}/{quote(meta['name'])}"
        status, body = api_.call(api, "DELETE", path, timeout=timeout)
        if status != 404:
            api_.expect(status, body, "DELETE", path, ok=(200, 202))
        done.append(Applied(kind, ns, meta["name"], "absent" if status == 404 else "deleted"))
    return done
