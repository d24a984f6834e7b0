"""Node lifecycle controller: NotReady after the grace period, taints, pod readiness, NoExecute eviction.

Like kube-controller-manager's: a node whose heartbeat (the Ready condition's
lastHeartbeatTime or its kube-node-lease renewTime) has not changed for
node-monitor-grace-period, measured on this controller's own clock from when
it last saw a change, gets every condition set to Unknown (reason
NodeStatusUnknown) and the node.kubernetes.io/unreachable NoSchedule and
NoExecute taints; its pods get Ready=False, which takes them out of Service
endpoints. Pods are deleted once their toleration of the NoExecute taint runs
out (300 s by default: a pod without such a toleration is treated as having the
default one, as DefaultTolerationSeconds admission would have given it), except
DaemonSet pods. When the kubelet posts Ready again the taints are removed.
Nodes the kubelet reports Ready=False get the not-ready taints instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers import util
from runbooks_lib.lab.kubeapi.controllers.snapshot import Snapshot

log = logging.getLogger(__name__)
COMPONENT = "node-controller"
_MANAGED = (util.UNREACHABLE_TAINT, util.NOT_READY_TAINT)


@dataclass
class _Health:
    probe: tuple
    observed_at: float


class NodeLifecycle:
    def __init__(self, grace_period: float, clock=time.monotonic, wall=time.time) -> None:
        self.grace_period = grace_period
        self.clock = clock
        self.wall = wall
        self.health: dict[str, _Health] = {}

    async def sync(self, api: kc.KubeClient, snap: Snapshot) -> None:
        leases = {util.name_of(lease): lease for lease in snap.node_leases}
        by_node = snap.pods_by_node()
        now = self.clock()
        seen = set()
        for node in snap.nodes:
            name = util.name_of(node)
            seen.add(name)
            ready = util.condition(node, "Ready") or {}
            lease = leases.get(name) or {}
            probe = (ready.get("lastHeartbeatTime"), (lease.get("spec") or {}).get("renewTime"))
            health = self.health.get(name)
            if health is None or health.probe != probe:
                health = self.health[name] = _Health(probe, now)
            try:
                if now - health.observed_at > self.grace_period and util.node_ready_status(node) != "Unknown":
                    node = await self._mark_unknown(api, node, by_node.get(name, []))
                await self._reconcile_taints(api, node)
                await self._evict(api, node, by_node.get(name, []))
            except RunbookError as exc:
                log.warning("node %s: %s", name, exc.what)
        for name in set(self.health) - seen:
            del self.health[name]

    async def _mark_unknown(self, api: kc.KubeClient, node: dict, pods: list[dict]) -> dict:
        now = util.now_iso()
        conditions = []
        for cond in (node.get("status") or {}).get("conditions") or ():
            cond = dict(cond)
            if cond.get("status") != "Unknown":
                cond["lastTransitionTime"] = now
            cond["status"] = "Unknown"
            cond["reason"] = "NodeStatusUnknown"
            cond["message"] = "Kubelet stopped posting node status."
            conditions.append(cond)
        if not any(c.get("type") == "Ready" for c in conditions):
            conditions.append({"type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                               "message": "Kubelet never posted node status.", "lastHeartbeatTime": now,
                               "lastTransitionTime": now})
        updated = await api.patch(kc.NODES, util.name_of(node), {"status": {"conditions": conditions}},
                                  subresource="status")
        log.info("node %s: Ready=Unknown (no heartbeat for %.0fs)", util.name_of(node), self.grace_period)
        await util.record_event(api, node, "NodeNotReady", f"Node {util.name_of(node)} status is now: NodeNotReady",
                                COMPONENT)
        for pod in pods:
            await self._mark_pod_not_ready(api, pod)
        return updated

    async def _mark_pod_not_ready(self, api: kc.KubeClient, pod: dict) -> None:
        conditions = [dict(c) for c in (pod.get("status") or {}).get("conditions") or ()]
        changed = False
        for cond in conditions:
            if cond.get("type") == "Ready" and cond.get("status") != "False":
                cond.update({"status": "False", "lastTransitionTime": util.now_iso()})
                changed = True
        if not changed:
            return
        try:
            await api.patch(kc.PODS, util.name_of(pod), {"status": {"conditions": conditions}}, util.ns_of(pod),
                            subresource="status")
            # the endpoints controller runs later in this round on the same snapshot
            pod.setdefault("status", {})["conditions"] = conditions
            await util.record_event(api, pod, "NodeNotReady", "Node is not ready", COMPONENT, "Warning")
        except kc.ApiError as exc:
            if not exc.not_found:
                raise

    async def _reconcile_taints(self, api: kc.KubeClient, node: dict) -> None:
        status = util.node_ready_status(node)
        wanted_key = {"Unknown": util.UNREACHABLE_TAINT, "False": util.NOT_READY_TAINT}.get(status)
        taints = list((node.get("spec") or {}).get("taints") or [])
        kept = [t for t in taints if t.get("key") not in _MANAGED or t.get("key") == wanted_key]
        if wanted_key:
            now = util.iso(self.wall())
            for effect in ("NoSchedule", "NoExecute"):
                if not any(t.get("key") == wanted_key and t.get("effect") == effect for t in kept):
                    kept.append({"key": wanted_key, "effect": effect, "timeAdded": now})
        if kept == taints:
            return
        body = dict(node)
        body["spec"] = dict(node.get("spec") or {})
        body["spec"]["taints"] = kept
        if not kept:
            body["spec"].pop("taints")
        try:
            await api.update(kc.NODES, body)  # resourceVersion precondition: a lost race retries next round
        except kc.ApiError as exc:
            if not (exc.conflict or exc.not_found):
                raise

    async def _evict(self, api: kc.KubeClient, node: dict, pods: list[dict]) -> None:
        taints = [t for t in (node.get("spec") or {}).get("taints") or ()
                  if t.get("effect") == "NoExecute" and t.get("key") in _MANAGED]
        if not taints:
            return
        now = self.wall()
        for pod in pods:
            if util.is_terminating(pod) or (util.controller_ref(pod) or {}).get("kind") == "DaemonSet":
                continue
            tolerations = util.default_tolerations((pod.get("spec") or {}).get("tolerations"))
            deadline = 0.0
            for taint in taints:
                tol = util.matching_toleration(tolerations, taint) or {}
                seconds = tol.get("tolerationSeconds")
                if tol and seconds is None:
                    deadline = float("inf")
                    break
                added = util.parse_time(taint.get("timeAdded")) or now
                deadline = max(deadline, added + max(float(seconds or 0), 0.0))
            if now < deadline:
                continue
            try:
                await api.delete(kc.PODS, util.name_of(pod), util.ns_of(pod), uid=util.uid_of(pod))
                log.info("evicted pod %s/%s from node %s", util.ns_of(pod), util.name_of(pod), util.name_of(node))
                await util.record_event(api, pod, "TaintManagerEviction",
                                        f"Marking for deletion Pod {util.ns_of(pod)}/{util.name_of(pod)}",
                                        "taint-eviction-controller")
            except kc.ApiError as exc:
                if not (exc.not_found or exc.conflict):
                    raise
