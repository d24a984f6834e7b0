"""Endpoints controller: each Service with a selector gets an Endpoints object of its pods.

Ready pods go to ``addresses``, the others to ``notReadyAddresses``;
terminating and finished pods are left out. Target ports are resolved per pod
(numbers, or container port names). Pod IP = node IP in the lab, so two pods
on one node differ only by port: the kubelet stand-in records each app pod's
actual ports in the annotation ``lab.runbooks/ports`` ({"declared": actual}),
and the published port is the actual one. Pods whose ports differ land in
different subsets, as upstream. Endpoints of deleted Services that this
controller made are deleted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers import util
from runbooks_lib.lab.kubeapi.controllers.snapshot import Snapshot

log = logging.getLogger(__name__)
PORTS_ANNOTATION = "lab.runbooks/ports"
MANAGED_LABEL = "endpoints.lab.runbooks/managed-by"
MANAGER = "endpoints-controller"


def _actual_ports(pod: Mapping) -> dict[int, int]:
    raw = (util.meta(pod).get("annotations") or {}).get(PORTS_ANNOTATION)
    if not raw:
        return {}
    try:
        return {int(k): int(v) for k, v in json.loads(raw).items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def resolve_port(pod: Mapping, svc_port: Mapping) -> int | None:
    """The port on the pod a Service port targets (None if a named port is missing)."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, str) and not target.isdigit():
        number = None
        for c in (pod.get("spec") or {}).get("containers") or ():
            for p in c.get("ports") or ():
                if p.get("name") == target and p.get("protocol", "TCP") == svc_port.get("protocol", "TCP"):
                    number = int(p["containerPort"])
        if number is None:
            return None
    else:
        number = int(target)
    return _actual_ports(pod).get(number, number)


def desired_subsets(service: Mapping, pods: list[Mapping]) -> list[dict]:
    """The Endpoints subsets for ``service`` from the pods of its namespace (sorted, comparable)."""
    spec = service.get("spec") or {}
    selector = spec.get("selector")
    ports = spec.get("ports") or []
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[tuple, dict[str, list]] = {}
    for pod in pods:
        if not util.pod_active(pod) or not util.map_selector_matches(selector, util.meta(pod).get("labels")):
            continue
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        resolved = []
        for sp in ports:
            number = resolve_port(pod, sp)
            if number is None:
                break
            entry = {"port": number, "protocol": sp.get("protocol", "TCP")}
            if sp.get("name"):
                entry["name"] = sp["name"]
            if sp.get("appProtocol"):
                entry["appProtocol"] = sp["appProtocol"]
            resolved.append(entry)
        else:
            key = json.dumps(resolved, sort_keys=True)
            group = groups.setdefault(key, {"ports": resolved, "addresses": [], "notReadyAddresses": []})
            address = {"ip": ip, "targetRef": {"kind": "Pod", "namespace": util.ns_of(pod), "name": util.name_of(pod),
                                               "uid": util.uid_of(pod)}}
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                address["nodeName"] = node
            ready = util.pod_ready(pod) or publish_not_ready
            group["addresses" if ready else "notReadyAddresses"].append(address)
    subsets = []
    for key in sorted(groups):
        group = groups[key]
        subset: dict = {"ports": group["ports"]}
        for field in ("addresses", "notReadyAddresses"):
            if group[field]:
                subset[field] = sorted(group[field], key=lambda a: (a["ip"], a["targetRef"]["name"]))
        subsets.append(subset)
    return subsets


def _normalize(subsets: list | None) -> str:
    return json.dumps(subsets or [], sort_keys=True)


class EndpointsController:
    async def sync(self, api: kc.KubeClient, snap: Snapshot) -> None:
        existing = {(util.ns_of(e), util.name_of(e)): e for e in snap.endpoints}
        pods_by_ns: dict[str, list[dict]] = {}
        for pod in snap.pods:
            pods_by_ns.setdefault(util.ns_of(pod), []).append(pod)
        services = set()
        for svc in snap.services:
            key = (util.ns_of(svc), util.name_of(svc))
            services.add(key)
            if not (svc.get("spec") or {}).get("selector") or util.is_terminating(svc):
                continue  # selectorless Services have hand-managed Endpoints
            try:
                await self._sync_one(api, svc, existing.get(key), pods_by_ns.get(key[0], []))
            except RunbookError as exc:
                log.warning("endpoints %s/%s: %s", key[0], key[1], exc.what)
        for key, ep in existing.items():
            if key not in services and (util.meta(ep).get("labels") or {}).get(MANAGED_LABEL) == MANAGER:
                try:
                    await api.delete(kc.ENDPOINTS, key[1], key[0])
                except kc.ApiError as exc:
                    if not exc.not_found:
                        log.warning("endpoints %s/%s: %s", key[0], key[1], exc.what)
                except RunbookError as exc:
                    log.warning("endpoints %s/%s: %s", key[0], key[1], exc.what)

    async def _sync_one(self, api: kc.KubeClient, svc: dict, current: dict | None, pods: list[dict]) -> None:
        subsets = desired_subsets(svc, pods)
        labels = dict(util.meta(svc).get("labels") or {})
        labels[MANAGED_LABEL] = MANAGER
        if current is not None and _normalize(current.get("subsets")) == _normalize(subsets) \
                and (util.meta(current).get("labels") or {}) == labels:
            return
        body = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": util.name_of(svc), "namespace": util.ns_of(svc), "labels": labels,
                         "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": util.now_iso()}},
            "subsets": subsets,
        }
        if current is None:
            try:
                await api.create(kc.ENDPOINTS, body)
            except kc.ApiError as exc:
                if not exc.conflict:
                    raise
            return
        body["metadata"]["resourceVersion"] = util.meta(current).get("resourceVersion")
        try:
            await api.update(kc.ENDPOINTS, body)
        except kc.ApiError as exc:
            if not (exc.conflict or exc.not_found):
                raise
