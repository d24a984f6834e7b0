"""Discovery documents (/version, /api, /apis, resource lists) and the /openapi/v3 stub.

kubectl 1.30 builds its REST mapping from these. Two details matter: the
core group's version must be exactly "v1", and pods/eviction is advertised
with group "policy", version "v1" (otherwise ``kubectl drain`` silently deletes
pods instead of evicting them and bypasses PodDisruptionBudgets). The OpenAPI
v3 stub has one PATCH operation per kind with ``x-kubernetes-group-version-kind``
and a ``fieldValidation`` parameter: enough for ``kubectl apply -f`` and ``edit``.
"""

from __future__ import annotations

import hashlib
import json
import platform

from .resources import GROUPS, RESOURCES, VERBS, Resource, by_group_version

GIT_VERSION = "v1.30.6"


def version() -> dict:
    """The /version document: v1.30.x.

    The server answers as kube-apiserver 1.30 with default feature gates where a
    client can tell: watch lists are refused (WatchList is off in 1.30, see
    :data:`.params.WATCH_LIST_ENABLED`). A kubectl dispatcher that runs the
    bundled minor matching the server runs kubectl 1.30.
    """
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {
        "major": "1",
        "minor": "30",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-10-22T00:00:00Z",
        "goVersion": "go1.22.8",
        "compiler": "gc",
        "platform": f"linux/{arch}",
    }


def _server_addresses(address: str) -> list[dict]:
    return [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]


def core_versions(address: str) -> dict:
    """GET /api."""
    return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": _server_addresses(address)}


def group_list() -> dict:
    """GET /apis."""
    groups = []
    for g in GROUPS:
        versions = sorted({r.version for r in RESOURCES if r.group == g})
        gvs = [{"groupVersion": f"{g}/{v}", "version": v} for v in versions]
        groups.append({"name": g, "versions": gvs, "preferredVersion": gvs[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(name: str) -> dict | None:
    """GET /apis/GROUP."""
    for g in group_list()["groups"]:
        if g["name"] == name:
            return {"kind": "APIGroup", "apiVersion": "v1", **g}
    return None


def _entry(res: Resource) -> dict:
    entry = {
        "name": res.plural,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": list(VERBS),
        "storageVersionHash": hashlib.sha256(f"{res.api_version}/{res.kind}".encode()).hexdigest()[:11],
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    return entry


_SUBRESOURCES: dict[str, dict] = {
    "status": {"verbs": ["get", "patch", "update"]},
    "scale": {"group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
    "log": {"kind": "Pod", "verbs": ["get"]},
    "eviction": {"group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]},
    "binding": {"kind": "Binding", "verbs": ["create"]},
}


def resource_list(group_name: str, version_name: str) -> dict | None:
    """GET /api/v1 or /apis/GROUP/VERSION: resources with verbs, shortNames, subresources."""
    served = by_group_version(group_name, version_name)
    if not served:
        return None
    out = []
    for res in served:
        out.append(_entry(res))
        for sub in res.subresources:
            extra = dict(_SUBRESOURCES[sub])
            entry = {"name": f"{res.plural}/{sub}", "singularName": "", "namespaced": res.namespaced,
                     "kind": extra.pop("kind", res.kind), **extra}
            out.append(entry)
    gv = f"{group_name}/{version_name}" if group_name else version_name
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}


def _gv_path(gv: str) -> str:
    return "api/v1" if gv == "v1" else f"apis/{gv}"


def openapi_v3_root() -> dict:
    """GET /openapi/v3: one entry per group-version with a content hash."""
    paths = {}
    for gv in sorted({r.api_version for r in RESOURCES}):
        digest = hashlib.sha256(json.dumps(openapi_v3_gv(gv), sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[_gv_path(gv)] = {"serverRelativeURL": f"/openapi/v3/{_gv_path(gv)}?hash={digest}"}
    return {"paths": paths}


def openapi_v3_gv(gv: str) -> dict | None:
    """GET /openapi/v3/api/v1 (etc.): a stub with a PATCH operation per kind, no schemas."""
    served = [r for r in RESOURCES if r.api_version == gv]
    if not served:
        return None
    paths = {}
    for res in served:
        base = f"/{_gv_path(gv)}"
        if res.namespaced:
            base += "/namespaces/{namespace}"
        path = f"{base}/{res.plural}/{{name}}"
        group_name = res.group
        paths[path] = {
            "patch": {
                "operationId": f"patch{res.kind}",
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                ],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": group_name, "version": res.version, "kind": res.kind},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (lab API stand-in)", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _pb_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    out = bytearray([(number << 3) | 2])
    n = len(payload)
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + payload


def openapi_v2_protobuf() -> bytes:
    """GET /openapi/v2: an empty OpenAPI v2 document in gnostic's protobuf encoding.

    kubectl validates kinds that /openapi/v3 does not list (e.g. ``kind: List``)
    against v2, and skips kinds v2 does not define: an empty document makes it
    accept them, leaving validation to the server as for every other kind.
    Fields: swagger=1, info=2 (title=1, version=2), paths=8.
    """
    info = _pb_field(1, b"Kubernetes (lab API stand-in)") + _pb_field(2, GIT_VERSION.encode())
    return _pb_field(1, b"2.0") + _pb_field(2, info) + _pb_field(8, b"")
