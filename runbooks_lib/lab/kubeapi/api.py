"""The generic REST semantics of the API stand-in: create, get, list, update, patch, delete.

Objects are stored without ``metadata.resourceVersion``; it is set on every
read from the store's mod revision. Writes are compare-and-swap on that
revision, so concurrent writers get 409 Conflict exactly as with
kube-apiserver. Deletion honours finalizers and graceful pod deletion
(``deletionTimestamp`` first; the kubelet removes the pod with grace 0), and
garbage collection of dependents runs in this server after an owner is gone
(see :mod:`.gc`).
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import random
import re
from collections.abc import Callable
from typing import Any

from . import objects, status
from .patch import PatchError, apply_patch
from .resources import Resource, by_kind
from .resources import get as resource
from .selectors import Requirement, matches
from .status import ApiError
from .storage import Item, Store

log = logging.getLogger(__name__)

NAMESPACES = resource("namespaces")
PODS = resource("pods")
SERVICES = resource("services")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
CONFLICT_RETRIES = 8


def with_rv(item: Item) -> dict:
    """The stored object with metadata.resourceVersion set from the store revision."""
    obj = copy.deepcopy(item.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(item.mod_revision)
    return obj


def stored_form(obj: dict) -> dict:
    """Drop fields the store derives (resourceVersion, selfLink)."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    meta.pop("resourceVersion", None)
    meta.pop("selfLink", None)
    return obj


def _meta(obj: dict) -> dict:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


class Api:
    """REST operations over a :class:`~.storage.Store`.

    ``service_cidr`` is the range ClusterIPs are allocated from (Kubespray's
    kube_service_addresses, 10.233.0.0/18). Background work (garbage
    collection, namespace cleanup) runs as tasks owned by this object; call
    :meth:`close` to cancel it.
    """

    def __init__(self, store: Store, service_cidr: str = "10.233.0.0/18",
                 node_port_range: tuple[int, int] = (30000, 32767)) -> None:
        self.store = store
        self.service_net = ipaddress.ip_network(service_cidr)
        self.node_port_range = node_port_range
        self._tasks: set[asyncio.Task] = set()

    # -- background work ---------------------------------------------------------------------------------

    def spawn(self, coro: Any, what: str) -> None:
        """Run ``coro`` in the background; failures are logged with ``what``."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("%s failed: %s", what, t.exception())

        task.add_done_callback(done)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until background work has finished (for tests)."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- reads --------------------------------------------------------------------------------------------

    async def get_item(self, res: Resource, namespace: str | None, name: str) -> Item:
        item = await self.store.get(res.key(namespace, name))
        if item is None:
            raise status.not_found(res, name)
        return item

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict:
        return with_rv(await self.get_item(res, namespace, name))

    async def list(self, res: Resource, namespace: str | None, labels: list[Requirement] | None = None,
                   fields: Callable[[dict], bool] | None = None) -> tuple[list[dict], int]:
        """Objects matching the selectors (sorted by namespace and name) and the store revision."""
        items, rev = await self.store.list(res.prefix(namespace))
        out = []
        for item in items:
            obj = item.value
            if labels and not matches(labels, _meta(obj).get("labels")):
                continue
            if fields and not fields(obj):
                continue
            out.append(with_rv(item))
        return out, rev

    def list_object(self, res: Resource, items: list[dict], rev: int) -> dict:
        return {"kind": res.list_kind, "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(rev)}, "items": items}

    # -- create -------------------------------------------------------------------------------------------

    def _check_kind(self, res: Resource, body: dict) -> None:
        if not isinstance(body, dict):
            raise status.bad_request("the request body must be a JSON object")
        if body.get("apiVersion") and body["apiVersion"] != res.api_version:
            raise status.bad_request(
                f"the API version in the data ({body['apiVersion']}) does not match the expected API version "
                f"({res.api_version})")
        if body.get("kind") and body["kind"] != res.kind:
            raise status.bad_request(f"the kind in the data ({body['kind']}) does not match the expected kind ({res.kind})")
        body["apiVersion"], body["kind"] = res.api_version, res.kind

    async def _check_namespace(self, res: Resource, namespace: str | None, name: str) -> None:
        if not res.namespaced:
            return
        ns = await self.store.get(NAMESPACES.key(None, namespace or ""))
        if ns is None:
            raise status.not_found(NAMESPACES, namespace or "")
        if _meta(ns.value).get("deletionTimestamp"):
            raise status.forbidden(res, name, f"unable to create new content in namespace {namespace} because it is being terminated")

    async def create(self, res: Resource, namespace: str | None, body: dict, dry_run: bool = False) -> dict:
        """POST: 409 AlreadyExists, 404 if the namespace is missing, 422 for a bad name."""
        self._check_kind(res, body)
        obj = copy.deepcopy(body)
        meta = _meta(obj)
        if res.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise status.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            namespace = namespace or meta.get("namespace") or "default"
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        generate = not meta.get("name") and meta.get("generateName")
        if not meta.get("name") and not generate:
            raise status.invalid(res, "", "metadata.name: Required value: name or generateName is required")
        await self._check_namespace(res, namespace, meta.get("name") or meta.get("generateName", ""))
        for key in ("resourceVersion", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        meta["uid"] = objects.new_uid()
        meta["creationTimestamp"] = objects.now_rfc3339()
        if objects.has_generation(obj):
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        objects.apply_defaults(res.kind, obj)
        if res.kind == "Service":
            await self._allocate_service(obj)
        for attempt in range(5 if generate else 1):
            if generate:
                meta["name"] = meta["generateName"] + "".join(random.choice(_GENERATE_CHARS) for _ in range(5))
            self._validate_name(res, meta["name"])
            if res.kind == "Namespace":
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            if dry_run:
                return obj
            rev = await self.store.create(res.key(namespace, meta["name"]), stored_form(obj))
            if rev is not None:
                meta["resourceVersion"] = str(rev)
                return obj
        raise status.already_exists(res, meta["name"])

    def _validate_name(self, res: Resource, name: str) -> None:
        if len(name) > 253 or not _NAME_RE.match(name):
            raise status.invalid(
                res, name,
                f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")

    async def _allocate_service(self, svc: dict) -> None:
        spec = svc["spec"]
        if spec.get("type") == "ExternalName":
            return
        items, _ = await self.store.list(SERVICES.prefix())
        used_ips = {(i.value.get("spec") or {}).get("clusterIP") for i in items}
        used_ports = {p.get("nodePort") for i in items for p in (i.value.get("spec") or {}).get("ports") or []}
        ip = spec.get("clusterIP")
        if ip and ip != "None":
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                raise status.invalid(SERVICES, _meta(svc).get("name", ""), f'spec.clusterIP: Invalid value: "{ip}": must be a valid IP address') from None
            if addr not in self.service_net:
                raise status.invalid(SERVICES, _meta(svc).get("name", ""),
                                     f'spec.clusterIPs: Invalid value: []string{{"{ip}"}}: failed to allocate IP {ip}: '
                                     f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is {self.service_net}")
            if ip in used_ips:
                raise status.invalid(SERVICES, _meta(svc).get("name", ""),
                                     f'spec.clusterIPs: Invalid value: []string{{"{ip}"}}: failed to allocate IP {ip}: provided IP is already allocated')
        elif not ip:
            hosts = self.service_net.num_addresses - 2
            for _ in range(200):
                candidate = str(self.service_net.network_address + random.randint(2, hosts))
                if candidate not in used_ips:
                    ip = candidate
                    break
            else:
                raise status.internal("failed to allocate a serviceIP: range is full")
            spec["clusterIP"] = ip
        if ip and ip != "None":
            spec.setdefault("clusterIPs", [ip])
        elif ip == "None":
            spec.setdefault("clusterIPs", ["None"])
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            low, high = self.node_port_range
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    free = [p for p in range(low, high + 1) if p not in used_ports]
                    port["nodePort"] = random.choice(free)
                    used_ports.add(port["nodePort"])

    # -- update / patch -----------------------------------------------------------------------------------

    def _prepare_update(self, res: Resource, current: dict, body: dict, subresource: str | None) -> dict:
        self._check_kind(res, body)
        cur_meta = _meta(current)
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(body.get("status") or {})
            # The status endpoints of nodes accept label/annotation changes too (kubelets use them).
            for key in ("labels", "annotations"):
                if key in _meta(body):
                    _meta(new)[key] = copy.deepcopy(_meta(body)[key])
        else:
            new = copy.deepcopy(body)
            if res.has_status:
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
        meta = _meta(new)
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"):
            if key in cur_meta:
                meta[key] = cur_meta[key]
            else:
                meta.pop(key, None)
        if not res.namespaced:
            meta.pop("namespace", None)
        meta.pop("resourceVersion", None)
        if objects.has_generation(new):
            gen = int(cur_meta.get("generation") or 1)
            meta["generation"] = gen + 1 if new.get("spec") != current.get("spec") else gen
        if res.kind == "Service":
            spec, cur_spec = new.setdefault("spec", {}), current.get("spec") or {}
            for key in ("clusterIP", "clusterIPs"):
                if not spec.get(key) and cur_spec.get(key):
                    spec[key] = cur_spec[key]
            cur_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in cur_spec.get("ports") or []}
            for port in spec.get("ports") or []:
                old = cur_ports.get((port.get("port"), port.get("protocol", "TCP")))
                if old and not port.get("nodePort") and spec.get("type") in ("NodePort", "LoadBalancer"):
                    port["nodePort"] = old
        objects.apply_defaults(res.kind, new)
        return new

    async def write_update(self, res: Resource, item: Item, new: dict, dry_run: bool = False) -> dict | None:
        """Store ``new`` over ``item`` (CAS); returns None on a revision conflict.

        An object whose deletion is pending and has no finalizers left (and no
        grace period running) is removed instead, then its dependents are collected.
        """
        meta = _meta(new)
        if dry_run:
            meta["resourceVersion"] = str(item.mod_revision)
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not meta.get("deletionGracePeriodSeconds"):
            rev = await self.store.delete(item.key, item.mod_revision)
            if rev is None:
                return None
            meta["resourceVersion"] = str(rev)
            self.after_removal(res, new)
            return new
        rev = await self.store.update(item.key, stored_form(new), item.mod_revision)
        if rev is None:
            return None
        meta["resourceVersion"] = str(rev)
        return new

    async def update(self, res: Resource, namespace: str | None, name: str, body: dict,
                     subresource: str | None = None, dry_run: bool = False) -> dict:
        """PUT: a stale metadata.resourceVersion gives 409 Conflict; none means unconditional."""
        if not isinstance(body, dict):
            raise status.bad_request("the request body must be a JSON object")
        body_meta = _meta(body)
        if body_meta.get("name") and body_meta["name"] != name:
            raise status.bad_request(f"the name of the object ({body_meta['name']}) does not match the name on the URL ({name})")
        if res.namespaced and body_meta.get("namespace") and body_meta["namespace"] != namespace:
            raise status.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        wanted_rv = body_meta.get("resourceVersion")
        for _ in range(CONFLICT_RETRIES):
            item = await self.get_item(res, namespace, name)
            if wanted_rv and wanted_rv != str(item.mod_revision):
                raise status.conflict(res, name)
            new = self._prepare_update(res, item.value, copy.deepcopy(body), subresource)
            result = await self.write_update(res, item, new, dry_run)
            if result is not None:
                return result
            if wanted_rv:
                raise status.conflict(res, name)
        raise status.conflict(res, name)

    async def patch(self, res: Resource, namespace: str | None, name: str, patch_kind: str, body: Any,
                    subresource: str | None = None, dry_run: bool = False) -> dict:
        """PATCH (json, merge, strategic, apply); retried on conflicts unless the patch pins resourceVersion."""
        for _ in range(CONFLICT_RETRIES):
            item = await self.store.get(res.key(namespace, name))
            if item is None:
                if patch_kind == "apply" and subresource is None:
                    created = copy.deepcopy(body)
                    _meta(created).setdefault("name", name)
                    return await self.create(res, namespace, created, dry_run)
                raise status.not_found(res, name)
            current = with_rv(item)
            try:
                patched = apply_patch(patch_kind, current, body)
            except PatchError as exc:
                raise ApiError(422 if patch_kind == "json" else 400, "Invalid" if patch_kind == "json" else "BadRequest",
                               exc.what) from None
            if not isinstance(patched, dict):
                raise status.bad_request("the patch produced a non-object")
            pmeta = _meta(patched)
            if pmeta.get("name", name) != name:
                raise status.invalid(res, name, "metadata.name: Invalid value: field is immutable")
            pinned = pmeta.get("resourceVersion")
            if pinned and pinned != str(item.mod_revision):
                raise status.conflict(res, name)
            new = self._prepare_update(res, item.value, patched, subresource)
            result = await self.write_update(res, item, new, dry_run)
            if result is not None:
                return result
            if patch_kind == "json" and any(op.get("path") == "/metadata/resourceVersion" for op in body if isinstance(op, dict)):
                raise status.conflict(res, name)
        raise status.conflict(res, name)

    # -- delete -------------------------------------------------------------------------------------------

    @staticmethod
    def _pod_grace(pod: dict, options: dict) -> int:
        spec, st = pod.get("spec") or {}, pod.get("status") or {}
        if not spec.get("nodeName") or st.get("phase") in ("Succeeded", "Failed"):
            return 0
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        return 1 if int(grace) < 0 else int(grace)  # kube-apiserver treats a negative grace period as 1 s

    async def delete(self, res: Resource, namespace: str | None, name: str, options: dict | None = None,
                     dry_run: bool = False) -> dict:
        """DELETE: finalizers and pod grace periods set deletionTimestamp; otherwise the object is removed.

        ``options`` is a DeleteOptions (gracePeriodSeconds, propagationPolicy,
        preconditions). Dependents are collected afterwards unless the policy is Orphan.
        """
        options = options or {}
        policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "Background")
        if policy not in ("Background", "Foreground", "Orphan"):
            raise status.bad_request(f'propagationPolicy: Unsupported value: "{policy}"')
        pre = options.get("preconditions") or {}
        for _ in range(CONFLICT_RETRIES):
            item = await self.get_item(res, namespace, name)
            obj = with_rv(item)
            meta = _meta(obj)
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise status.conflict(res, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
                raise status.conflict(res, name, f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in object meta: {meta.get('resourceVersion')}")
            if res.kind == "Namespace":
                return await self._delete_namespace(item, dry_run)
            if dry_run:
                return obj
            if policy == "Orphan":
                from .gc import orphan_dependents

                await orphan_dependents(self, res, obj)
            grace = self._pod_grace(obj, options) if res.kind == "Pod" else 0
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in finalizers and not meta.get("deletionTimestamp"):
                finalizers.append("foregroundDeletion")
            if finalizers or grace > 0:
                new = copy.deepcopy(item.value)
                nmeta = _meta(new)
                if not nmeta.get("deletionTimestamp"):
                    nmeta["deletionTimestamp"] = objects.now_rfc3339(grace)
                    nmeta["deletionGracePeriodSeconds"] = grace
                elif grace < int(nmeta.get("deletionGracePeriodSeconds") or 0):
                    nmeta["deletionTimestamp"] = objects.now_rfc3339(grace)
                    nmeta["deletionGracePeriodSeconds"] = grace
                nmeta["finalizers"] = finalizers
                if not finalizers:
                    nmeta.pop("finalizers")
                result = await self.write_update(res, item, new)
                if result is None:
                    continue
                if "foregroundDeletion" in finalizers:
                    from .gc import foreground_delete

                    self.spawn(foreground_delete(self, res, result), f"foreground deletion of {res.plural}/{name}")
                return result
            rev = await self.store.delete(item.key, item.mod_revision)
            if rev is None:
                continue
            meta["resourceVersion"] = str(rev)
            if policy != "Orphan":
                self.after_removal(res, obj)
            return obj
        raise status.conflict(res, name)

    def after_removal(self, res: Resource, obj: dict) -> None:
        """Start background garbage collection of the dependents of a removed object."""
        from .gc import collect_dependents

        uid = _meta(obj).get("uid")
        if uid:
            self.spawn(collect_dependents(self, res, obj), f"garbage collection after {res.plural}/{_meta(obj).get('name')}")
        if res.kind == "Pod":
            self.spawn(self._drop_pod_logs(obj), "removing pod logs")

    async def _drop_pod_logs(self, pod: dict) -> None:
        meta = _meta(pod)
        prefix = f"/registry/podlogs/{meta.get('namespace')}/{meta.get('name')}/"
        items, _ = await self.store.list(prefix)
        for item in items:
            await self.store.delete(item.key, item.mod_revision)

    async def _delete_namespace(self, item: Item, dry_run: bool) -> dict:
        obj = with_rv(item)
        name = _meta(obj)["name"]
        if name in PROTECTED_NAMESPACES:
            raise status.forbidden(NAMESPACES, name, "this namespace may not be deleted")
        if dry_run or _meta(obj).get("deletionTimestamp"):
            return obj
        new = copy.deepcopy(item.value)
        _meta(new)["deletionTimestamp"] = objects.now_rfc3339()
        _meta(new)["deletionGracePeriodSeconds"] = 0
        new.setdefault("status", {})["phase"] = "Terminating"
        rev = await self.store.update(item.key, new, item.mod_revision)
        if rev is None:
            raise status.conflict(NAMESPACES, name)
        _meta(new)["resourceVersion"] = str(rev)
        from .gc import finalize_namespace

        self.spawn(finalize_namespace(self, name), f"deleting the content of namespace {name}")
        return new

    async def delete_collection(self, res: Resource, namespace: str | None, labels: list[Requirement] | None,
                                fields: Callable[[dict], bool] | None, options: dict | None,
                                dry_run: bool = False) -> dict:
        items, rev = await self.list(res, namespace, labels, fields)
        deleted = []
        for obj in items:
            try:
                deleted.append(await self.delete(res, _meta(obj).get("namespace"), _meta(obj)["name"], options, dry_run))
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return self.list_object(res, deleted, rev)

    # -- helpers used by subresources -------------------------------------------------------------------

    @staticmethod
    def resource_for(api_version: str, kind: str) -> Resource | None:
        return by_kind(api_version, kind)
