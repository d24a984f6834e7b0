"""The kubelet stand-in's main loops: register the Node, heartbeat, lease, run bound pods.

Side effects: creates/patches the Node, its Lease in kube-node-lease and the
status of pods bound to the node; starts pod processes (see runtime.py); serves
the kubelet API (logs) on the configured port. Stopping it (``stop`` event)
stops the pod processes and leaves the Node to the node controller, which marks
it NotReady after node-monitor-grace-period, as with a real kubelet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubelet import node as nodeobj
from runbooks_lib.lab.kubelet.config import KubeletConfig, resolv_conf_loops
from runbooks_lib.lab.kubelet.pods import PodWorker, PortAllocator
from runbooks_lib.lab.kubelet.staticpods import StaticPods

log = logging.getLogger(__name__)
RETRY = 1.0
WATCH_SECONDS = 60


class Kubelet:
    """One node's kubelet: call :meth:`run` with a stop event."""

    def __init__(self, api: kc.KubeClient, config: KubeletConfig, facts: nodeobj.NodeFacts,
                 labels: Mapping[str, str], taints: Sequence[Mapping], root_dir: Path,
                 sandbox_dir: Path | None = None) -> None:
        self.api = api
        self.config = config
        self.facts = facts
        self.labels = dict(labels)
        self.taints = list(taints)
        self.root_dir = root_dir
        self.sandbox_dir = sandbox_dir or root_dir / "sandboxes"
        self.node_uid: str | None = None
        self.workers: dict[str, PodWorker] = {}
        self.ports = PortAllocator(facts.ip)
        # staticPodPath: manifests whose "containers" are units of this machine (see staticpods.py)
        self.static = (StaticPods(api, facts.name, facts.ip, Path(config.static_pod_path),
                                  config.file_check_frequency, lambda: self.node_uid)
                       if config.static_pod_path else None)
        # resolvConf is read once at start, like kubelet: fixing it needs a kubelet restart, and then only new
        # pod sandboxes get the new file (PodWorker keeps each sandbox's own).
        self.dns_loops = resolv_conf_loops(config.resolv_conf)
        if self.dns_loops:
            log.warning("resolvConf %s has only loopback nameservers: DNS pods will loop", config.resolv_conf)

    @property
    def name(self) -> str:
        return self.facts.name

    async def run(self, stop: asyncio.Event) -> None:
        """Register, then heartbeat and run pods until ``stop`` is set; then stop every pod process."""
        tasks: list[asyncio.Task] = []
        try:
            # Static pods run from the manifests before the node is registered, as kubelet's
            # (a worker reaches the API through its nginx-proxy static pod).
            if self.static is not None:
                tasks.append(asyncio.create_task(self.static.run(stop)))
            await self._until(stop, self.register)
            if stop.is_set():
                return
            tasks += [
                asyncio.create_task(self._every(stop, self.config.node_status_update_frequency, self.post_status)),
                asyncio.create_task(self._every(stop, self.lease_renew_interval, self.renew_lease)),
                asyncio.create_task(self.watch_pods(stop)),
            ]
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop_pods()

    @property
    def lease_renew_interval(self) -> float:
        # kubelet renews every quarter of the lease duration (10 s of 40 s)
        return max(self.config.node_lease_duration_seconds * 0.25, 0.2)

    async def _until(self, stop: asyncio.Event, action) -> None:
        while not stop.is_set():
            try:
                await action()
                return
            except RunbookError as exc:
                log.warning("%s: %s", action.__name__, exc.what)
            await _sleep(stop, RETRY)

    async def _every(self, stop: asyncio.Event, interval: float, action) -> None:
        while not stop.is_set():
            try:
                await action()
            except RunbookError as exc:
                log.warning("%s: %s", action.__name__, exc.what)
            await _sleep(stop, interval)

    # ---- node --------------------------------------------------------------------

    async def register(self) -> None:
        """Create the Node, or bring an existing one's labels and addresses up to date."""
        body = nodeobj.node_object(self.facts, self.labels, self.taints, nodeobj.now_iso())
        try:
            created = await self.api.create(kc.NODES, body)
            self.node_uid = created["metadata"]["uid"]
            log.info("registered node %s", self.name)
        except kc.ApiError as exc:
            if not exc.conflict:
                raise
            existing = await self.api.get(kc.NODES, self.name)
            self.node_uid = existing["metadata"]["uid"]
            patch = {"metadata": {"labels": nodeobj.node_labels(self.facts, self.labels)}}
            await self.api.patch(kc.NODES, self.name, patch)
        await self.post_status()

    async def post_status(self) -> None:
        """Heartbeat: PATCH nodes/NAME/status with fresh conditions and facts."""
        current = await self.api.get(kc.NODES, self.name)
        self.node_uid = current["metadata"]["uid"]
        previous = (current.get("status") or {}).get("conditions")
        status = nodeobj.node_status(self.facts, previous, nodeobj.now_iso())
        await self.api.patch(kc.NODES, self.name, {"status": status}, subresource="status")

    async def renew_lease(self) -> None:
        """Renew (or create) kube-node-lease/NAME with a resourceVersion precondition."""
        now = nodeobj.now_micro()
        try:
            lease = await self.api.get(kc.LEASES, self.name, "kube-node-lease")
        except kc.ApiError as exc:
            if not exc.not_found:
                raise
            body = nodeobj.lease_object(self.name, self.node_uid, self.config.node_lease_duration_seconds, now)
            await self.api.create(kc.LEASES, body)
            return
        spec = lease.setdefault("spec", {})
        spec.update({"holderIdentity": self.name, "renewTime": now,
                     "leaseDurationSeconds": self.config.node_lease_duration_seconds})
        await self.api.update(kc.LEASES, lease)

    # ---- pods --------------------------------------------------------------------

    def _selector(self) -> str:
        return f"spec.nodeName={self.name}"

    async def watch_pods(self, stop: asyncio.Event) -> None:
        """List then watch the pods bound to this node, starting and stopping workers."""
        rv: str | None = None
        while not stop.is_set():
            try:
                if rv is None:
                    listing = await self.api.list(kc.PODS, field_selector=self._selector())
                    self._sync_list(listing.get("items") or [])
                    rv = listing.get("metadata", {}).get("resourceVersion")
                async for event in self.api.watch(kc.PODS, resource_version=rv, field_selector=self._selector(),
                                                  timeout_seconds=WATCH_SECONDS):
                    obj = event.get("object") or {}
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if event.get("type") == "DELETED":
                        self._pod_gone(obj)
                    elif event.get("type") in ("ADDED", "MODIFIED"):
                        self._pod_seen(obj)
            except kc.ApiError as exc:
                if exc.status == 410:
                    rv = None  # compacted: list again
                    continue
                log.warning("pod watch: %s", exc.what)
                rv = None
                await _sleep(stop, RETRY)
            except RunbookError as exc:
                log.warning("pod watch: %s", exc.what)
                rv = None
                await _sleep(stop, RETRY)

    def _sync_list(self, pods: list[dict]) -> None:
        uids = set()
        for pod in pods:
            uids.add(pod["metadata"]["uid"])
            self._pod_seen(pod)
        for uid, worker in list(self.workers.items()):
            if uid not in uids:
                worker.gone()

    def _pod_seen(self, pod: dict) -> None:
        if (pod.get("spec") or {}).get("nodeName") != self.name:
            return
        if self.static is not None and self.static.owns(pod):
            return  # a mirror pod: its static pod runs from the manifest, not from this object
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        worker = PodWorker(self.api, pod, self.name, self.facts.ip, self.root_dir, self.dns_loops,
                           self.config.max_container_restart_period, self.ports, self._worker_done,
                           sandbox_dir=self.sandbox_dir)
        self.workers[uid] = worker
        worker.start()

    def _pod_gone(self, pod: Mapping) -> None:
        worker = self.workers.get(pod.get("metadata", {}).get("uid", ""))
        if worker is not None:
            worker.gone()

    def _worker_done(self, uid: str) -> None:
        self.workers.pop(uid, None)

    def find_container(self, namespace: str, pod: str, container: str | None):
        """The container named (or the pod's only one), for the log endpoint; None if unknown."""
        for worker in self.workers.values():
            if worker.ref.namespace == namespace and worker.ref.name == pod:
                names = [c.name for c in worker.containers or ()]
                if container is None and len(names) == 1:
                    container = names[0]
                return worker.container(container) if container else None
        return None

    async def stop_pods(self) -> None:
        workers = list(self.workers.values())
        for worker in workers:
            worker.gone()
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=15)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
