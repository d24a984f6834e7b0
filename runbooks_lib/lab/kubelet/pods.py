"""Pod workers of the kubelet stand-in: run one pod's containers and report its status.

A :class:`PodWorker` owns one pod bound to this node: it assigns the app's
ports (annotation ``lab.runbooks/ports``), advances its containers, and
PATCHes pods/NAME/status whenever what it observes differs from what the API
holds (so a status the node controller changed while this kubelet was stopped
is corrected when it runs again). A pod with a deletionTimestamp has its
processes stopped and is then deleted with grace period 0, as kubelet does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubelet import runtime
from runbooks_lib.lab.kubelet.runtime import Container, PodRef

log = logging.getLogger(__name__)
TICK = 0.5


class PortAllocator:
    """Ports held by this node's app pods (all on the node IP, as there is no pod network)."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.in_use: set[int] = set()

    def allocate(self, wanted: int, preferred: int | None = None) -> int:
        """Return ``preferred`` (last incarnation's port) or ``wanted`` if free, else the next free port."""
        candidates = ([preferred] if preferred else []) + [wanted + i for i in range(0, 1000)]
        for port in candidates:
            if 0 < port < 65536 and port not in self.in_use and runtime.port_is_free(self.ip, port):
                self.in_use.add(port)
                return port
        raise RunbookError(f"no free port near {wanted} on {self.ip}", fix="delete pods on this node")

    def release(self, port: int | None) -> None:
        self.in_use.discard(port)  # type: ignore[arg-type]


def qos_class(pod: Mapping) -> str:
    """BestEffort, Burstable or Guaranteed, from the containers' requests and limits."""
    containers = pod.get("spec", {}).get("containers") or []
    any_set = False
    guaranteed = bool(containers)
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        any_set = any_set or bool(req or lim)
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim.get(r)) != lim.get(r):
                guaranteed = False
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if any_set else "BestEffort"


class ConditionClock:
    """Keeps each pod condition's lastTransitionTime stable until its status changes."""

    def __init__(self, previous: list[Mapping] | None = None) -> None:
        self._seen: dict[str, tuple[str, str]] = {}
        for cond in previous or ():
            if cond.get("type") and cond.get("lastTransitionTime"):
                self._seen[cond["type"]] = (cond.get("status", ""), cond["lastTransitionTime"])

    def condition(self, ctype: str, status: bool) -> dict:
        value = "True" if status else "False"
        old = self._seen.get(ctype)
        when = old[1] if old and old[0] == value else runtime.now_iso()
        self._seen[ctype] = (value, when)
        return {"type": ctype, "status": value, "lastProbeTime": None, "lastTransitionTime": when}


def pod_status(pod: Mapping, containers: list[Container], node_ip: str, start_time: str,
               clock: ConditionClock) -> dict:
    """The status the kubelet reports for ``pod`` given its containers' states."""
    statuses = [c.status() for c in containers]
    all_ready = bool(statuses) and all(s["ready"] for s in statuses)
    started_any = any(c.has_run for c in containers)
    phase = "Running" if started_any else "Pending"
    conditions = [
        clock.condition("PodReadyToStartContainers", True),
        clock.condition("Initialized", True),
        clock.condition("Ready", all_ready),
        clock.condition("ContainersReady", all_ready),
        clock.condition("PodScheduled", True),
    ]
    for cond in conditions:
        if cond["type"] in ("Ready", "ContainersReady") and not all_ready:
            waiting = [s["name"] for s in statuses if not s["ready"]]
            cond["reason"] = "ContainersNotReady"
            cond["message"] = f"containers with unready status: [{' '.join(waiting)}]"
    return {
        "phase": phase,
        "conditions": conditions,
        "hostIP": node_ip,
        "hostIPs": [{"ip": node_ip}],
        "podIP": node_ip,
        "podIPs": [{"ip": node_ip}],
        "startTime": start_time,
        "containerStatuses": statuses,
        "qosClass": qos_class(pod),
    }


def status_key(status: Mapping | None) -> tuple:
    """What must match between the API's pod status and the kubelet's view."""
    status = status or {}
    conds = tuple(sorted((c.get("type"), c.get("status")) for c in status.get("conditions") or ()))
    containers = tuple(
        (c.get("name"), c.get("ready"), c.get("restartCount"), tuple(sorted((c.get("state") or {}).keys())),
         c.get("containerID"), json.dumps(c.get("state"), sort_keys=True))
        for c in status.get("containerStatuses") or ()
    )
    return (status.get("phase"), conds, containers, status.get("podIP"))


def _rv(obj: Mapping) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class PodWorker:
    """Runs one pod. Call :meth:`update` with each newer object, :meth:`gone` when it is deleted."""

    def __init__(self, api: kc.KubeClient, pod: dict, node_name: str, node_ip: str, root_dir: Path,
                 dns_loops: bool, max_backoff: float, ports: PortAllocator,
                 on_exit: Callable[[str], None] | None = None, *, sandbox_dir: Path | None = None) -> None:
        self.api = api
        self.pod = pod
        meta = pod["metadata"]
        self.ref = PodRef(meta.get("namespace", "default"), meta["name"], meta["uid"], node_name, node_ip)
        self.root_dir = root_dir
        self.dns_loops = dns_loops  # the kubelet's resolvConf now; the sandbox keeps the one it was created with
        self.sandbox_dir = sandbox_dir or root_dir / "sandboxes"
        self.max_backoff = max_backoff
        self.ports = ports
        self.on_exit = on_exit
        self.containers: list[Container] | None = None
        self.wake = asyncio.Event()
        self.deleted = False
        self.start_time = (pod.get("status") or {}).get("startTime") or runtime.now_iso()
        self.clock = ConditionClock((pod.get("status") or {}).get("conditions"))
        self.last_posted: dict | None = None
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"pod {self.ref.namespace}/{self.ref.name}")

    def update(self, pod: dict) -> None:
        """Take a newer version of the pod (older ones, e.g. a late watch event, are ignored)."""
        if _rv(pod) >= _rv(self.pod):
            self.pod = pod
            self.wake.set()

    def gone(self) -> None:
        """The pod object is deleted: stop its containers and end the worker."""
        self.deleted = True
        self.wake.set()

    def container(self, name: str) -> Container | None:
        for c in self.containers or ():
            if c.name == name:
                return c
        return None

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            await self._stop_all(2.0)
            if self.deleted or self.pod["metadata"].get("deletionTimestamp"):
                (self.sandbox_dir / self.ref.uid).unlink(missing_ok=True)  # the sandbox goes with the pod
            if self.on_exit is not None:
                self.on_exit(self.ref.uid)

    async def _loop(self) -> None:
        while not self.deleted:
            if self.pod["metadata"].get("deletionTimestamp"):
                await self._terminate()
                return
            if (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return
            try:
                if self.containers is None:
                    await self._create_containers()
                now = runtime.monotonic()
                for c in self.containers or ():
                    await c.step(now)
                await self._sync_status()
            except RunbookError as exc:
                log.warning("pod %s/%s: %s", self.ref.namespace, self.ref.name, exc.what)
            try:
                await asyncio.wait_for(self.wake.wait(), TICK)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def _create_containers(self) -> None:
        spec = self.pod.get("spec") or {}
        previous = {s.get("name"): s for s in (self.pod.get("status") or {}).get("containerStatuses") or ()}
        annotations = self.pod["metadata"].get("annotations") or {}
        try:
            old_ports = {int(k): int(v) for k, v in json.loads(annotations.get(runtime.PORTS_ANNOTATION, "{}")).items()}
        except (ValueError, TypeError, AttributeError):
            old_ports = {}
        containers, ports = [], {}
        sandbox_loops = self._sandbox_dns_loops()
        for cspec in spec.get("containers") or ():
            kind = runtime.container_kind(self.pod, cspec, sandbox_loops)
            c = Container(self.ref, cspec, kind, self.root_dir, self.max_backoff, previous.get(cspec.get("name")))
            if kind == "app":
                wanted = runtime.declared_port(cspec)
                c.port = self.ports.allocate(wanted, old_ports.get(wanted))
                ports[str(wanted)] = c.port
            containers.append(c)
        self.containers = containers
        if ports and annotations.get(runtime.PORTS_ANNOTATION) != json.dumps(ports, sort_keys=True):
            patch = {"metadata": {"annotations": {runtime.PORTS_ANNOTATION: json.dumps(ports, sort_keys=True)}}}
            self.update(await self.api.patch(kc.PODS, self.ref.name, patch, self.ref.namespace))

    def _sandbox_dns_loops(self) -> bool:
        """Whether this pod's sandbox resolv.conf loops back, fixed when the sandbox was first created.

        kubelet writes a pod's resolv.conf once, when its sandbox is created:
        container restarts (CrashLoopBackOff) reuse it, and a kubelet restart
        does not rewrite a running pod's. Only a new pod (a new UID) or a
        reboot (the runtime's state in /run is gone) gets the current file.
        Side effect: writes SANDBOX_DIR/UID the first time.
        """
        path = self.sandbox_dir / self.ref.uid
        try:
            return path.read_text().strip() == "loops"
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("loops\n" if self.dns_loops else "upstream\n")
            return self.dns_loops

    async def _sync_status(self) -> None:
        desired = pod_status(self.pod, self.containers or [], self.ref.node_ip, self.start_time, self.clock)
        if desired == self.last_posted and status_key(desired) == status_key(self.pod.get("status")):
            return
        try:
            updated = await self.api.patch(kc.PODS, self.ref.name, {"status": desired}, self.ref.namespace,
                                           subresource="status")
        except kc.ApiError as exc:
            if exc.not_found:
                self.deleted = True
                return
            raise
        self.last_posted = desired
        self.update(updated)

    async def _terminate(self) -> None:
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        await self._stop_all(min(float(grace if grace is not None else 30), 10.0))
        try:
            await self.api.delete(kc.PODS, self.ref.name, self.ref.namespace, grace_period_seconds=0,
                                  uid=self.ref.uid)
        except kc.ApiError as exc:
            if not (exc.not_found or exc.conflict):
                log.warning("pod %s/%s: final delete failed: %s", self.ref.namespace, self.ref.name, exc.what)
        except RunbookError as exc:
            log.warning("pod %s/%s: final delete failed: %s", self.ref.namespace, self.ref.name, exc.what)

    async def _stop_all(self, grace: float) -> None:
        for c in self.containers or ():
            await c.stop(grace)
            if c.port is not None:
                self.ports.release(c.port)
                c.port = None
