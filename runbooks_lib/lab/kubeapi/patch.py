"""PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.

The strategic merge patch is an approximation of Kubernetes' own: lists that
Kubernetes merges by key (containers by name, container ports by
containerPort, service ports by port, env, volumes, volumeMounts, conditions,
addresses, ownerReferences...) are merged by that key, ``metadata.finalizers``
is merged as a set, every other list is replaced. The directives kubectl sends
(``$patch``, ``$retainKeys``, ``$setElementOrder/...``,
``$deleteFromPrimitiveList/...``) are honoured. Lists Kubernetes replaces
atomically (node taints, tolerations, ingress rules) are replaced here too, so
``kubectl taint ... key-`` works.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from runbooks_lib.errors import BadParameters


class PatchError(BadParameters):
    """The patch body is malformed or cannot be applied (HTTP 422/400)."""


# field name -> merge key. "ports" is decided by its elements (containerPort vs port).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "containerStatuses": "name",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
    "ports": "port",
}
# Lists of scalars merged as sets.
SET_LISTS = {"finalizers"}


def json_merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


def json_patch(target: dict, ops: Any) -> dict:
    """Apply an RFC 6902 operation list; raises PatchError when an operation fails."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, ops, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        raise PatchError(f"the server rejected our request due to an error in our request: {exc}") from None


def _merge_key(field: str, items: list) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def _merge_list(field: str, original: list | None, patch: list, order: list | None) -> list:
    original = copy.deepcopy(original) if isinstance(original, list) else []
    if field in SET_LISTS:
        out = list(original)
        for v in patch:
            if v not in out:
                out.append(v)
        return out
    key = _merge_key(field, patch + original)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [strategic_merge(None, i) if isinstance(i, dict) else copy.deepcopy(i) for i in patch]
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [strategic_merge(None, i) for i in patch if i.get("$patch") != "replace"]
    out = list(original)
    for item in patch:
        directive = item.get("$patch")
        idx = next((n for n, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item.get(key)), None)
        if directive == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(strategic_merge(None, item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    if order:
        # $setElementOrder: listed keys first in the given order, others keep their relative order after.
        rank = {o.get(key): n for n, o in enumerate(order) if isinstance(o, dict)}
        out.sort(key=lambda o: rank.get(o.get(key), len(rank)))
    return out


def strategic_merge(original: Any, patch: Any) -> Any:
    """Apply a strategic merge patch (see the module docstring for the approximation)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value, patch.get(f"$setElementOrder/{key}"))
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    for key, order in patch.items():
        if key.startswith("$setElementOrder/") and key.split("/", 1)[1] not in patch:
            field = key.split("/", 1)[1]
            current = result.get(field)
            if (
                isinstance(current, list)
                and field not in SET_LISTS
                and _merge_key(field, current)
                and all(isinstance(i, dict) for i in current + list(order or []))
            ):
                result[field] = _merge_list(field, current, [], order)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+json": "apply",
}


def apply_patch(kind: str, original: dict, body: Any) -> dict:
    """Apply a patch of type ``kind`` ("json", "merge", "strategic", "apply") to ``original``."""
    if kind == "json":
        return json_patch(original, body)
    if not isinstance(body, dict):
        raise PatchError("patch body must be a JSON object")
    if kind == "merge":
        return json_merge(original, body)
    # Server-side apply is approximated by a strategic merge of the applied configuration.
    result = strategic_merge(original, body)
    if not isinstance(result, dict):
        raise PatchError("patch deleted the whole object")
    return result
