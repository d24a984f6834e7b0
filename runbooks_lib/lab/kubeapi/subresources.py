"""The scale, binding and log subresources.

Pod logs: the kubelet stand-in keeps each container's log; the API stand-in
serves ``GET pods/NAME/log`` from one of two places, in this order:

1. text the kubelet stored with ``PUT /api/v1/namespaces/NS/pods/NAME/log?container=C``
   (a stand-in extension, body ``text/plain``; the server keeps the last
   ``LOG_LIMIT`` bytes in etcd under /registry/podlogs/NS/NAME/C);
2. otherwise the kubelet's own endpoint, as kube-apiserver does: plain HTTP
   ``GET http://INTERNAL_IP:PORT/containerLogs/NS/NAME/C?tailLines=..&follow=..``
   where PORT is the node's ``status.daemonEndpoints.kubeletEndpoint.Port``.
"""

from __future__ import annotations

import copy
from typing import Any

from . import status
from .api import Api, _meta
from .patch import PatchError, apply_patch
from .resources import Resource
from .resources import get as resource
from .selectors import label_selector_string

PODS = resource("pods")
NODES = resource("nodes")
LOG_LIMIT = 256 * 1024


def scale_of(obj: dict) -> dict:
    """The autoscaling/v1 Scale view of a Deployment or ReplicaSet."""
    meta = _meta(obj)
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
        "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
        "status": {
            "replicas": int((obj.get("status") or {}).get("replicas", 0)),
            "selector": label_selector_string((obj.get("spec") or {}).get("selector")),
        },
    }


async def update_scale(api: Api, res: Resource, namespace: str, name: str, patch_kind: str | None, body: Any) -> dict:
    """PUT (patch_kind None) or PATCH the scale subresource: changes spec.replicas only."""
    current = await api.get(res, namespace, name)
    scale = scale_of(current)
    if patch_kind is None:
        new_scale = body
    else:
        try:
            new_scale = apply_patch(patch_kind, scale, body)
        except PatchError as exc:
            raise status.bad_request(exc.what) from None
    try:
        replicas = int((new_scale.get("spec") or {}).get("replicas"))
    except (TypeError, ValueError, AttributeError):
        raise status.invalid(res, name, "spec.replicas: Required value") from None
    if replicas < 0:
        raise status.invalid(res, name, f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0")
    pinned = _meta(new_scale).get("resourceVersion")
    updated = copy.deepcopy(current)
    updated["spec"]["replicas"] = replicas
    _meta(updated)["resourceVersion"] = pinned if pinned and patch_kind is None else None
    if not _meta(updated)["resourceVersion"]:
        _meta(updated).pop("resourceVersion")
    return scale_of(await api.update(res, namespace, name, updated))


async def bind(api: Api, namespace: str, name: str, body: dict) -> dict:
    """POST pods/NAME/binding: set spec.nodeName once (409 if already bound)."""
    target = (body or {}).get("target") or {}
    node = target.get("name")
    if not node:
        raise status.invalid(PODS, name, "target.name: Required value")
    for _ in range(8):
        item = await api.get_item(PODS, namespace, name)
        pod = copy.deepcopy(item.value)
        if (pod.get("spec") or {}).get("nodeName"):
            raise status.conflict(PODS, name, f"pod {name} is already assigned to node \"{pod['spec']['nodeName']}\"")
        pod.setdefault("spec", {})["nodeName"] = node
        if await api.write_update(PODS, item, pod) is not None:
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    raise status.conflict(PODS, name)


def log_key(namespace: str, name: str, container: str) -> str:
    return f"/registry/podlogs/{namespace}/{name}/{container}"


async def pick_container(api: Api, namespace: str, name: str, container: str | None) -> tuple[dict, str]:
    """Return the pod and the container whose log is wanted (400 if ambiguous, as kubectl expects)."""
    pod = await api.get(PODS, namespace, name)
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    if container:
        init = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
        if container not in names + init:
            raise status.bad_request(f"container {container} is not valid for pod {name}")
        return pod, container
    if len(names) == 1:
        return pod, names[0]
    raise status.bad_request(f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]")


async def store_log(api: Api, namespace: str, name: str, container: str, text: str) -> None:
    """Keep the last LOG_LIMIT bytes of a container's log (the kubelet's PUT)."""
    data = text.encode()[-LOG_LIMIT:].decode("utf-8", "ignore")
    key = log_key(namespace, name, container)
    for _ in range(4):
        item = await api.store.get(key)
        if item is None:
            if await api.store.create(key, {"text": data}) is not None:
                return
        elif await api.store.update(key, {"text": data}, item.mod_revision) is not None:
            return


async def stored_log(api: Api, namespace: str, name: str, container: str) -> str | None:
    item = await api.store.get(log_key(namespace, name, container))
    return None if item is None else str(item.value.get("text", ""))


async def kubelet_endpoint(api: Api, pod: dict) -> tuple[str, int] | None:
    """The (InternalIP, port) of the kubelet of the pod's node, if it advertises one."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        return None
    item = await api.store.get(NODES.key(None, node_name))
    if item is None:
        return None
    st = item.value.get("status") or {}
    port = int(((st.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 0)
    ip = next((a.get("address") for a in st.get("addresses") or [] if a.get("type") == "InternalIP"), None)
    if not ip or port <= 0:
        return None
    return ip, port


def tail(text: str, tail_lines: int | None, limit_bytes: int | None) -> str:
    """Apply tailLines and limitBytes to a log text."""
    if tail_lines is not None and tail_lines >= 0:
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-tail_lines:]) if tail_lines else ""
    if limit_bytes is not None and limit_bytes > 0:
        text = text.encode()[:limit_bytes].decode("utf-8", "ignore")
    return text
