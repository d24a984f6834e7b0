"""Garbage collection and namespace cleanup, done by the API stand-in itself.

In Kubernetes these are kube-controller-manager's garbage collector and
namespace controller. Here the server that removes an object collects its
dependents right after (background propagation: dependents whose every owner
is gone are deleted; references to the removed owner are dropped from
dependents that still have another owner). Foreground deletion deletes the
dependents first, waits (bounded) for them to disappear, then removes the
owner's ``foregroundDeletion`` finalizer. Orphan removes the ownerReferences.
"""

from __future__ import annotations

import asyncio
import copy
import logging

from .resources import RESOURCES, Resource
from .status import ApiError
from .storage import StorageUnavailable

log = logging.getLogger(__name__)

FOREGROUND_WAIT = 120.0
NAMESPACE_WAIT = 600.0


async def _dependents(api, owner_res: Resource, owner: dict) -> list[tuple[Resource, dict]]:
    meta = owner.get("metadata") or {}
    uid = meta.get("uid")
    out = []
    for res in RESOURCES:
        if owner_res.namespaced and not res.namespaced:
            continue  # namespaced owners cannot own cluster-scoped objects
        ns = meta.get("namespace") if owner_res.namespaced else None
        items, _ = await api.store.list(res.prefix(ns))
        for item in items:
            refs = (item.value.get("metadata") or {}).get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                out.append((res, item.value))
    return out


async def _owner_exists(api, dep_res: Resource, dep: dict, ref: dict) -> bool:
    res = api.resource_for(ref.get("apiVersion", ""), ref.get("kind", ""))
    if res is None:
        return True  # unknown kinds are never considered gone
    ns = (dep.get("metadata") or {}).get("namespace") if res.namespaced else None
    item = await api.store.get(res.key(ns, ref.get("name", "")))
    return item is not None and (item.value.get("metadata") or {}).get("uid") == ref.get("uid")


async def collect_dependents(api, owner_res: Resource, owner: dict) -> None:
    """Delete the dependents of a removed owner (background propagation)."""
    uid = (owner.get("metadata") or {}).get("uid")
    for res, dep in await _dependents(api, owner_res, owner):
        dmeta = dep.get("metadata") or {}
        others = [r for r in dmeta.get("ownerReferences") or [] if r.get("uid") != uid]
        alive = [r for r in others if await _owner_exists(api, res, dep, r)]
        try:
            if alive:
                patch = {"metadata": {"ownerReferences": others}}
                await api.patch(res, dmeta.get("namespace"), dmeta["name"], "merge", patch)
            else:
                await api.delete(res, dmeta.get("namespace"), dmeta["name"], {"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.code != 404:
                log.warning("garbage collection of %s/%s failed: %s", res.plural, dmeta.get("name"), exc)


async def orphan_dependents(api, owner_res: Resource, owner: dict) -> None:
    """Remove the owner's references from its dependents (propagationPolicy=Orphan)."""
    uid = (owner.get("metadata") or {}).get("uid")
    for res, dep in await _dependents(api, owner_res, owner):
        dmeta = dep.get("metadata") or {}
        refs = [r for r in dmeta.get("ownerReferences") or [] if r.get("uid") != uid]
        try:
            await api.patch(res, dmeta.get("namespace"), dmeta["name"], "merge",
                            {"metadata": {"ownerReferences": refs or None}})
        except ApiError as exc:
            if exc.code != 404:
                raise


async def foreground_delete(api, owner_res: Resource, owner: dict) -> None:
    """Delete dependents, wait up to FOREGROUND_WAIT s for them to go, then release the owner."""
    meta = owner.get("metadata") or {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FOREGROUND_WAIT
    while True:
        deps = await _dependents(api, owner_res, owner)
        for res, dep in deps:
            dmeta = dep.get("metadata") or {}
            if dmeta.get("deletionTimestamp"):
                continue
            try:
                await api.delete(res, dmeta.get("namespace"), dmeta["name"], {"propagationPolicy": "Foreground"})
            except ApiError as exc:
                if exc.code != 404:
                    log.warning("foreground deletion of %s/%s failed: %s", res.plural, dmeta.get("name"), exc)
        if not deps or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    for _ in range(8):
        try:
            item = await api.get_item(owner_res, meta.get("namespace"), meta["name"])
        except ApiError:
            return
        new = copy.deepcopy(item.value)
        fins = [f for f in new["metadata"].get("finalizers") or [] if f != "foregroundDeletion"]
        new["metadata"]["finalizers"] = fins
        if not fins:
            new["metadata"].pop("finalizers")
        if await api.write_update(owner_res, item, new) is not None:
            return


async def finalize_namespace(api, name: str) -> None:
    """Delete everything in a terminating namespace, then the namespace (bounded by NAMESPACE_WAIT)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NAMESPACE_WAIT
    ns_res = next(r for r in RESOURCES if r.kind == "Namespace")
    while loop.time() < deadline:
        remaining = 0
        try:
            for res in RESOURCES:
                if not res.namespaced:
                    continue
                items, _ = await api.store.list(res.prefix(name))
                remaining += len(items)
                for item in items:
                    if (item.value.get("metadata") or {}).get("deletionTimestamp"):
                        continue
                    try:
                        await api.delete(res, name, item.value["metadata"]["name"], {"propagationPolicy": "Background"})
                    except ApiError as exc:
                        if exc.code != 404:
                            log.warning("deleting %s/%s/%s failed: %s", res.plural, name, item.value["metadata"]["name"], exc)
            if remaining == 0:
                item = await api.store.get(ns_res.key(None, name))
                if item is not None:
                    await api.store.delete(item.key, item.mod_revision)
                return
        except StorageUnavailable as exc:
            log.warning("namespace %s cleanup waits for storage: %s", name, exc)
        await asyncio.sleep(1.0)
    log.warning("namespace %s still has content after %.0fs; it stays Terminating", name, NAMESPACE_WAIT)
