"""Pod garbage collector: force-deletes pods bound to nodes that no longer exist.

As kube-controller-manager's PodGC does for orphaned pods (after a node is
deleted, e.g. by remove-node.yml for a dead node): once a pod's node has been
missing for ``quarantine`` seconds on this controller's clock, the pod is
deleted with grace period 0. Owner-reference garbage collection is done by the
API stand-in itself when the owner is deleted.
"""

from __future__ import annotations

import logging
import time

from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers import util
from runbooks_lib.lab.kubeapi.controllers.snapshot import Snapshot

log = logging.getLogger(__name__)
QUARANTINE = 40.0


class PodGC:
    def __init__(self, quarantine: float = QUARANTINE, clock=time.monotonic) -> None:
        self.quarantine = quarantine
        self.clock = clock
        self.missing_since: dict[str, float] = {}

    async def sync(self, api: kc.KubeClient, snap: Snapshot) -> None:
        nodes = {util.name_of(n) for n in snap.nodes}
        now = self.clock()
        orphans = [p for p in snap.pods if (p.get("spec") or {}).get("nodeName") not in (None, "", *nodes)]
        missing = {p["spec"]["nodeName"] for p in orphans}
        self.missing_since = {n: self.missing_since.get(n, now) for n in missing}
        for pod in orphans:
            if now - self.missing_since[pod["spec"]["nodeName"]] < self.quarantine:
                continue
            try:
                await api.delete(kc.PODS, util.name_of(pod), util.ns_of(pod), grace_period_seconds=0,
                                 uid=util.uid_of(pod))
                log.info("deleted orphaned pod %s/%s (node %s is gone)", util.ns_of(pod), util.name_of(pod),
                         pod["spec"]["nodeName"])
            except kc.ApiError as exc:
                if not (exc.not_found or exc.conflict):
                    log.warning("pod gc %s/%s: %s", util.ns_of(pod), util.name_of(pod), exc.what)
