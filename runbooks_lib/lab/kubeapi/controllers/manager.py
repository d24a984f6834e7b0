"""The controller manager: leader election, then the controllers' reconcile rounds.

:func:`run` is what the API stand-in starts in-process for each control
plane. It talks to the API over HTTPS with its client certificate, like
kube-controller-manager. Only the holder of the Lease
kube-system/kube-controller-manager runs controllers; the others wait, and
take over once the holder has not renewed it for leaseDurationSeconds (15 s).
Each round lists nodes, pods, Services, Endpoints, Deployments, ReplicaSets,
DaemonSets and node Leases once, then runs every controller over that
snapshot; a failing controller is logged and retried next round.
"""

from __future__ import annotations

import asyncio
import logging
import time

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi.client import KubeClient
from runbooks_lib.lab.kubeapi.controllers import snapshot
from runbooks_lib.lab.kubeapi.controllers.daemonset import DaemonSets
from runbooks_lib.lab.kubeapi.controllers.deployment import Deployments
from runbooks_lib.lab.kubeapi.controllers.endpoints import EndpointsController
from runbooks_lib.lab.kubeapi.controllers.leader import ElectionConfig, LeaderElector
from runbooks_lib.lab.kubeapi.controllers.nodelifecycle import NodeLifecycle
from runbooks_lib.lab.kubeapi.controllers.podgc import PodGC
from runbooks_lib.lab.kubeapi.controllers.replicaset import ReplicaSets
from runbooks_lib.lab.kubeapi.controllers.scheduler import Scheduler

log = logging.getLogger(__name__)
ROUND_INTERVAL = 1.0


def make_controllers(node_monitor_grace_period: float) -> list:
    """A fresh set of controllers (their memory starts empty on every new leadership)."""
    return [
        NodeLifecycle(node_monitor_grace_period),
        Scheduler(),
        Deployments(),
        ReplicaSets(),
        DaemonSets(),
        EndpointsController(),
        PodGC(),
    ]


async def reconcile_forever(api: KubeClient, controllers: list, interval: float = ROUND_INTERVAL) -> None:
    """Run rounds until cancelled. One round: a snapshot, then every controller over it."""
    while True:
        started = time.monotonic()
        try:
            snap = await snapshot.take(api)
        except RunbookError as exc:
            log.warning("controllers: cannot read the cluster state: %s", exc.what)
        else:
            for controller in controllers:
                try:
                    await controller.sync(api, snap)
                except RunbookError as exc:
                    log.warning("%s: %s", type(controller).__name__, exc.what)
                except Exception:  # a bug in one controller must not stop the others
                    log.exception("%s failed", type(controller).__name__)
        await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))


async def run(api_url: str, ca_file: str, cert_file: str, key_file: str, identity: str,
              node_monitor_grace_period: float, stop: asyncio.Event,
              election: ElectionConfig = ElectionConfig(), interval: float = ROUND_INTERVAL) -> None:
    """Elect, then run the controllers while leading, until ``stop`` is set.

    Side effects: writes the Lease and every object the controllers manage.
    On a clean stop the Lease is released so another API server's controllers
    take over at once. Never raises for API failures (they are retried).
    """
    api = KubeClient.from_files(api_url, ca_file, cert_file, key_file, timeout=min(5.0, election.renew_deadline / 2),
                                user_agent="kube-controller-manager/v1.30.6 (stand-in)")
    elector = LeaderElector(api, identity, election)
    worker: asyncio.Task | None = None
    try:
        while not stop.is_set():
            await elector.try_acquire_or_renew()
            if elector.is_leader and worker is None:
                log.info("controllers: %s became the leader", identity)
                worker = asyncio.create_task(reconcile_forever(api, make_controllers(node_monitor_grace_period),
                                                               interval))
            elif not elector.is_leader and worker is not None:
                log.warning("controllers: %s lost the lease; stopping controllers", identity)
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
                worker = None
            try:
                await asyncio.wait_for(stop.wait(), election.retry_period)
            except asyncio.TimeoutError:
                pass
    finally:
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        try:
            await asyncio.wait_for(elector.release(), 3)
        except asyncio.TimeoutError:
            pass
        await api.close()
