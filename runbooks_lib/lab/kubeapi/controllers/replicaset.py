"""ReplicaSet controller: keeps spec.replicas active pods and reports their readiness.

Creates pods named RS-xxxxx from the template (with the API's pod defaults and
the default tolerations), deletes surplus pods (unscheduled first, then not
ready, then the newest) and writes status.replicas, fullyLabeledReplicas,
readyReplicas, availableReplicas and observedGeneration. Terminating pods do
not count, so a pod evicted from a dead node is replaced at once.
"""

from __future__ import annotations

import logging
import time

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers import util
from runbooks_lib.lab.kubeapi.controllers.snapshot import Snapshot

log = logging.getLogger(__name__)
COMPONENT = "replicaset-controller"
BURST = 20  # pods created or deleted per ReplicaSet per round


def _delete_rank(pod: dict) -> tuple:
    spec = pod.get("spec") or {}
    return (bool(spec.get("nodeName")), util.pod_ready(pod), util.meta(pod).get("creationTimestamp") or "")


class ReplicaSets:
    def __init__(self, wall=time.time) -> None:
        self.wall = wall

    async def sync(self, api: kc.KubeClient, snap: Snapshot) -> None:
        for rs in snap.replicasets:
            try:
                await self._sync_one(api, rs, snap)
            except RunbookError as exc:
                log.warning("replicaset %s/%s: %s", util.ns_of(rs), util.name_of(rs), exc.what)

    async def _sync_one(self, api: kc.KubeClient, rs: dict, snap: Snapshot) -> None:
        if util.is_terminating(rs):
            return
        ns = util.ns_of(rs)
        spec = rs.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        owned = [p for p in snap.pods if util.ns_of(p) == ns and util.is_controlled_by(p, rs)]
        active = [p for p in owned if util.pod_active(p)]
        diff = desired - len(active)
        if diff > 0:
            ref = util.owner_reference(rs, "apps/v1", "ReplicaSet")
            for _ in range(min(diff, BURST)):
                pod = util.pod_from_template(spec.get("template") or {}, f"{util.name_of(rs)}-{util.random_suffix()}",
                                             ns, ref, {})
                created = await api.create(kc.PODS, pod, ns)
                active.append(created)
                await util.record_event(api, rs, "SuccessfulCreate", f"Created pod: {util.name_of(created)}", COMPONENT)
        elif diff < 0:
            for pod in sorted(active, key=_delete_rank)[: min(-diff, BURST)]:
                try:
                    await api.delete(kc.PODS, util.name_of(pod), ns, uid=util.uid_of(pod))
                except kc.ApiError as exc:
                    if not (exc.not_found or exc.conflict):
                        raise
                active.remove(pod)
                await util.record_event(api, rs, "SuccessfulDelete", f"Deleted pod: {util.name_of(pod)}", COMPONENT)
        await self._status(api, rs, active)

    async def _status(self, api: kc.KubeClient, rs: dict, active: list[dict]) -> None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = self.wall()
        selector = spec.get("selector")
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(1 for p in active if util.selector_matches(selector, util.meta(p).get("labels"))),
            "readyReplicas": sum(1 for p in active if util.pod_ready(p)),
            "availableReplicas": sum(1 for p in active if util.pod_available(p, min_ready, now)),
            "observedGeneration": util.meta(rs).get("generation", 1),
        }
        current = rs.get("status") or {}
        if all(current.get(k, 0) == v for k, v in status.items()):
            return
        try:
            await api.patch(kc.REPLICASETS, util.name_of(rs), {"status": status}, util.ns_of(rs), subresource="status")
        except kc.ApiError as exc:
            if not exc.not_found:
                raise
