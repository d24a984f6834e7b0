"""DaemonSet controller: one pod per eligible node, rolling updates, and the status rollout status reads.

A node is eligible when it matches the template's nodeSelector / required
node affinity and every NoSchedule/NoExecute taint is tolerated, counting the
tolerations the DaemonSet controller adds to its pods (not-ready and
unreachable NoExecute without a time limit; disk-, memory-, pid-pressure and
unschedulable NoSchedule). Node readiness does not matter, as upstream. Pods
are created already bound (spec.nodeName) and labelled controller-revision-hash.
RollingUpdate replaces outdated pods while no more than maxUnavailable (1) are
unavailable; OnDelete leaves them. Status: desiredNumberScheduled,
currentNumberScheduled, numberMisscheduled, numberReady, numberAvailable,
numberUnavailable, updatedNumberScheduled, observedGeneration.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers import util
from runbooks_lib.lab.kubeapi.controllers.snapshot import Snapshot

log = logging.getLogger(__name__)
COMPONENT = "daemonset-controller"
HASH_LABEL = "controller-revision-hash"

DAEMON_TOLERATIONS = (
    {"key": util.NOT_READY_TAINT, "operator": "Exists", "effect": "NoExecute"},
    {"key": util.UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": util.UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
)


def daemon_tolerations(template_tolerations: list | None) -> list[dict]:
    out = [dict(t) for t in template_tolerations or ()]
    for tol in DAEMON_TOLERATIONS:
        if util.matching_toleration(out, {"key": tol["key"], "effect": tol["effect"]}) is None:
            out.append(dict(tol))
    return out


def node_eligible(template_spec: dict, node: dict) -> bool:
    tolerations = daemon_tolerations(template_spec.get("tolerations"))
    if util.untolerated_taints(tolerations, (node.get("spec") or {}).get("taints")):
        return False
    return util.node_selector_matches(template_spec, node)


class DaemonSets:
    def __init__(self, wall=time.time) -> None:
        self.wall = wall

    async def sync(self, api: kc.KubeClient, snap: Snapshot) -> None:
        for ds in snap.daemonsets:
            try:
                await self._sync_one(api, ds, snap)
            except RunbookError as exc:
                log.warning("daemonset %s/%s: %s", util.ns_of(ds), util.name_of(ds), exc.what)

    async def _sync_one(self, api: kc.KubeClient, ds: dict, snap: Snapshot) -> None:
        if util.is_terminating(ds):
            return
        ns = util.ns_of(ds)
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        tspec = template.get("spec") or {}
        tpl_hash = util.template_hash(template)
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = self.wall()
        eligible = {util.name_of(n) for n in snap.nodes if node_eligible(tspec, n)}
        pods_on: dict[str, list[dict]] = defaultdict(list)
        for pod in snap.pods:
            if util.ns_of(pod) == ns and util.is_controlled_by(pod, ds) and util.pod_active(pod):
                pods_on[(pod.get("spec") or {}).get("nodeName", "")].append(pod)

        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        max_unavailable = util.int_or_percent((strategy.get("rollingUpdate") or {}).get("maxUnavailable"),
                                              len(eligible), "1", round_up=True) or 1
        unavailable = sum(1 for n in eligible
                          if not any(util.pod_available(p, min_ready, now) for p in pods_on.get(n, [])))
        for node_name, pods in list(pods_on.items()):
            surplus = pods if node_name not in eligible else sorted(pods, key=lambda p: util.meta(p).get("creationTimestamp") or "")[1:]
            for pod in surplus:
                await self._delete(api, pod)
                pods.remove(pod)
        for node_name in sorted(eligible):
            pods = pods_on.get(node_name, [])
            if not pods:
                await self._create(api, ds, template, tpl_hash, node_name)
                continue
            pod = pods[0]
            outdated = (util.meta(pod).get("labels") or {}).get(HASH_LABEL) != tpl_hash
            if rolling and outdated:
                was_available = util.pod_available(pod, min_ready, now)
                if not was_available or unavailable < max_unavailable:
                    await self._delete(api, pod)
                    pods.remove(pod)
                    if was_available:
                        unavailable += 1
        await self._status(api, ds, eligible, pods_on, tpl_hash, min_ready, now)

    async def _create(self, api: kc.KubeClient, ds: dict, template: dict, tpl_hash: str, node_name: str) -> None:
        ref = util.owner_reference(ds, "apps/v1", "DaemonSet")
        pod = util.pod_from_template(template, f"{util.name_of(ds)}-{util.random_suffix()}", util.ns_of(ds), ref,
                                     {HASH_LABEL: tpl_hash, "pod-template-generation": str(util.meta(ds).get("generation", 1))})
        pod["spec"]["nodeName"] = node_name
        pod["spec"]["tolerations"] = daemon_tolerations((template.get("spec") or {}).get("tolerations"))
        pod["spec"]["affinity"] = dict(pod["spec"].get("affinity") or {}, nodeAffinity={
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}})
        created = await api.create(kc.PODS, pod, util.ns_of(ds))
        await util.record_event(api, ds, "SuccessfulCreate", f"Created pod: {util.name_of(created)}", COMPONENT)

    async def _delete(self, api: kc.KubeClient, pod: dict) -> None:
        try:
            await api.delete(kc.PODS, util.name_of(pod), util.ns_of(pod), uid=util.uid_of(pod))
        except kc.ApiError as exc:
            if not (exc.not_found or exc.conflict):
                raise

    async def _status(self, api: kc.KubeClient, ds: dict, eligible: set[str], pods_on: dict[str, list[dict]],
                      tpl_hash: str, min_ready: int, now: float) -> None:
        scheduled = [n for n in eligible if pods_on.get(n)]
        on_eligible = [p for n in eligible for p in pods_on.get(n, [])]
        available = sum(1 for n in eligible if any(util.pod_available(p, min_ready, now) for p in pods_on.get(n, [])))
        status = {
            "desiredNumberScheduled": len(eligible),
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": sum(len(v) for k, v in pods_on.items() if k not in eligible),
            "numberReady": sum(1 for p in on_eligible if util.pod_ready(p)),
            "numberAvailable": available,
            "numberUnavailable": len(eligible) - available,
            "updatedNumberScheduled": sum(1 for p in on_eligible
                                          if (util.meta(p).get("labels") or {}).get(HASH_LABEL) == tpl_hash),
            "observedGeneration": util.meta(ds).get("generation", 1),
        }
        current = ds.get("status") or {}
        if all(current.get(k, 0) == v for k, v in status.items()):
            return
        try:
            await api.patch(kc.DAEMONSETS, util.name_of(ds), {"status": status}, util.ns_of(ds), subresource="status")
        except kc.ApiError as exc:
            if not exc.not_found:
                raise
