"""Static pods for the kubelet stand-in: watch the manifests, restart what they describe, keep mirror pods.

kubelet reads every manifest in staticPodPath each fileCheckFrequency (20 s by
default) and, when one changed, replaces the pod it runs; it publishes each
static pod as a mirror pod NAME-NODE whose ``kubernetes.io/config.hash``
annotation identifies the manifest it runs. The lab has no container runtime,
so the stand-in's "container" for a manifest is a systemd unit on the machine
(kube-apiserver.yaml -> kube-apiserver.service, the API stand-in, which reads
that manifest when it starts): a changed manifest restarts the unit, and the
mirror pod is recreated with the new hash, command and start time.

A unit that started after the manifest's last change already runs it (e.g.
Ansible started it), so it is not restarted again; an unchanged hash is never a
restart, as with kubelet. A manifest moved out of the directory stops its pod:
the unit is stopped at the next check and its mirror pod deleted (as kubelet
kills a static pod whose file is gone; this is how an operator stops the API
servers before an etcd restore), and the unit is started again when the
manifest comes back. Manifests without a unit here are left alone. The
units in ``KUBELET_STARTED`` (nginx-proxy) are run by the kubelet alone: it
starts them whenever their manifest is there and they are not running (at its
own start too, before the node is registered: workers reach the API through
nginx-proxy); kube-apiserver.service is started by the installer.
Side effects: ``systemctl restart|stop UNIT``; creates, deletes and patches the
mirror pods (and their status) of this node.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import yaml

from runbooks_lib import local
from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc

log = logging.getLogger(__name__)

# manifest file name -> the systemd unit that runs it on a lab machine
UNITS: dict[str, str] = {"kube-apiserver.yaml": "kube-apiserver.service", "nginx-proxy.yml": "nginx-proxy.service"}
# units nothing but the kubelet starts (Kubespray's nginx-proxy is a static pod, not a service)
KUBELET_STARTED: frozenset[str] = frozenset({"nginx-proxy.service"})
PUBLISH_RETRIES = 30  # after a restart the API may be down for a few seconds: retry each second


class Runtime(Protocol):
    async def started_at(self, unit: str) -> float | None: ...

    async def restart(self, unit: str) -> None: ...

    async def stop(self, unit: str) -> None: ...


class SystemdRuntime:
    """The units of this machine, through systemctl."""

    async def started_at(self, unit: str) -> float | None:
        """When the unit's main process started (epoch seconds), or None if it is not active."""
        res = await asyncio.to_thread(
            local.run, ["systemctl", "show", "--timestamp=us+utc", "-p", "ActiveState", "-p", "ExecMainStartTimestamp",
                        unit], timeout=30, check=False)
        props = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        if props.get("ActiveState") not in ("active", "reloading"):
            return None
        return parse_systemd_time(props.get("ExecMainStartTimestamp", ""))

    async def restart(self, unit: str) -> None:
        await asyncio.to_thread(local.run, ["systemctl", "restart", unit], timeout=120)

    async def stop(self, unit: str) -> None:
        await asyncio.to_thread(local.run, ["systemctl", "stop", unit], timeout=120)


def parse_systemd_time(text: str) -> float | None:
    """``Sun 2026-11-29 02:04:50.123456 UTC`` (systemctl --timestamp=us+utc) as epoch seconds; None if empty."""
    text = text.strip()
    for fmt in ("%a %Y-%m-%d %H:%M:%S.%f UTC", "%a %Y-%m-%d %H:%M:%S UTC"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return None


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest_hash(text: str) -> str:
    """The config hash of a manifest (opaque, as kubelet's: equal content, equal hash)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def mirror_name(manifest: Mapping, node: str) -> str:
    return f"{(manifest.get('metadata') or {}).get('name', '')}-{node}"


def mirror_pod(manifest: Mapping, node: str, node_uid: str | None, digest: str, seen: str) -> dict:
    """The mirror pod object kubelet publishes for a static pod manifest (pure)."""
    meta = manifest.get("metadata") or {}
    annotations = {**(meta.get("annotations") or {}), "kubernetes.io/config.hash": digest,
                   "kubernetes.io/config.mirror": digest, "kubernetes.io/config.seen": seen,
                   "kubernetes.io/config.source": "file"}
    body_meta: dict = {"name": mirror_name(manifest, node), "namespace": meta.get("namespace") or "default",
                       "labels": dict(meta.get("labels") or {}), "annotations": annotations}
    if node_uid:
        body_meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid,
                                         "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": body_meta,
            "spec": {**(manifest.get("spec") or {}), "nodeName": node}}


def mirror_status(manifest: Mapping, node_ip: str, started: float) -> dict:
    """Running and Ready since ``started`` (the unit's start), as kubelet reports a healthy static pod."""
    when = iso(started)
    containers = (manifest.get("spec") or {}).get("containers") or []
    conditions = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": when}
                  for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
    return {
        "phase": "Running", "conditions": conditions, "hostIP": node_ip, "hostIPs": [{"ip": node_ip}],
        "podIP": node_ip, "podIPs": [{"ip": node_ip}], "startTime": when,
        "containerStatuses": [{"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "",
                               "containerID": f"systemd://{c.get('name', '')}-{int(started)}", "ready": True,
                               "started": True, "restartCount": 0, "state": {"running": {"startedAt": when}}}
                              for c in containers],
    }


class StaticPods:
    """The static pods of one node: call :meth:`run` with a stop event."""

    def __init__(self, api: kc.KubeClient, node: str, node_ip: str, manifest_dir: Path, period: float,
                 node_uid: Callable[[], str | None], runtime: Runtime | None = None,
                 units: Mapping[str, str] = UNITS, starts: Collection[str] = KUBELET_STARTED) -> None:
        self.api = api
        self.node = node
        self.node_ip = node_ip
        self.manifest_dir = Path(manifest_dir)
        self.period = period
        self.node_uid = node_uid
        self.runtime = runtime or SystemdRuntime()
        self.units = dict(units)
        self.starts = frozenset(starts)
        self.published: dict[str, tuple[str, float]] = {}  # mirror name -> (hash, start) last published
        self.restarts = 0
        self.stopped: set[str] = set()  # units stopped because their manifest was gone (started when it is back)
        # manifests read here while their unit ran (a mirror pod may not be published yet: the API can be down)
        self.seen: set[str] = set()

    def owns(self, pod: Mapping) -> bool:
        """True for the mirror pods this manager publishes (the kubelet must not run them as pods)."""
        name = (pod.get("metadata") or {}).get("name", "")
        return any(name == f"{Path(f).stem}-{self.node}" for f in self.units) or name in self.published

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sync()
            except RunbookError as exc:
                log.warning("static pods: %s", exc.what)
            try:
                await asyncio.wait_for(stop.wait(), self.period)
            except asyncio.TimeoutError:
                pass

    async def sync(self) -> None:
        """One file check: restart the units whose manifest changed, then bring mirror pods up to date."""
        for filename, unit in self.units.items():
            path = self.manifest_dir / filename
            try:
                text = path.read_text()
                mtime = path.stat().st_mtime
            except OSError:
                await self._gone(filename, unit)  # no manifest (any more): nothing runs
                continue
            try:
                manifest = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                log.warning("static pod manifest %s is not valid YAML, left as it is: %s", path, exc)
                continue
            if not isinstance(manifest, dict):
                continue
            started = await self.runtime.started_at(unit)
            if started is None and (unit in self.starts or unit in self.stopped):
                log.info("static pod %s: starting %s", path, unit)
                await self.runtime.restart(unit)
                self.restarts += 1
                self.stopped.discard(unit)
                started = await self.runtime.started_at(unit)
            if started is None:
                continue  # not running: whoever installs the unit starts it
            self.seen.add(filename)
            digest = manifest_hash(text)
            name = mirror_name(manifest, self.node)
            running_hash = await self._running_hash(name, manifest)
            if digest != running_hash and mtime > started:
                log.info("static pod %s: %s changed, restarting %s", name, path, unit)
                await self.runtime.restart(unit)
                self.restarts += 1
                started = await self.runtime.started_at(unit) or started
            # Every check, like kubelet's status sync: the node controller may have marked the pod not ready.
            await self._publish(manifest, digest, started)

    async def _gone(self, filename: str, unit: str) -> None:
        """The manifest it ran is gone: stop its unit if it runs, forget and (best effort) delete its mirror pod."""
        if filename not in self.seen:
            return  # never run from this file here (another node's role, or not yet written)
        self.seen.discard(filename)
        name = f"{Path(filename).stem}-{self.node}"
        self.published.pop(name, None)
        if await self.runtime.started_at(unit) is None:
            return
        log.info("static pod %s: manifest gone, stopping %s", filename, unit)
        await self.runtime.stop(unit)
        self.stopped.add(unit)
        try:  # the API may be the pod just stopped: then the mirror pod goes when it is replaced
            await self.api.delete(kc.PODS, name, "kube-system", grace_period_seconds=0)
        except RunbookError as exc:
            log.info("mirror pod %s not deleted: %s", name, exc.what)

    async def _running_hash(self, name: str, manifest: Mapping) -> str | None:
        if name in self.published:
            return self.published[name][0]
        try:  # after a kubelet restart the mirror pod remembers which manifest runs
            pod = await self.api.get(kc.PODS, name, (manifest.get("metadata") or {}).get("namespace") or "default")
        except kc.ApiError as exc:
            if exc.not_found:
                return None
            raise
        return ((pod.get("metadata") or {}).get("annotations") or {}).get("kubernetes.io/config.hash")

    async def _publish(self, manifest: Mapping, digest: str, started: float) -> None:
        """Create (or replace, when the hash changed) the mirror pod and post its status."""
        name = mirror_name(manifest, self.node)
        namespace = (manifest.get("metadata") or {}).get("namespace") or "default"
        for attempt in range(PUBLISH_RETRIES):
            try:
                await self._publish_once(manifest, name, namespace, digest, started)
                self.published[name] = (digest, started)
                return
            except RunbookError as exc:
                if attempt == PUBLISH_RETRIES - 1:
                    raise
                log.info("mirror pod %s: %s (retrying)", name, exc.what)
                await asyncio.sleep(1.0)

    async def _publish_once(self, manifest: Mapping, name: str, namespace: str, digest: str, started: float) -> None:
        try:
            pod = await self.api.get(kc.PODS, name, namespace)
        except kc.ApiError as exc:
            if not exc.not_found:
                raise
            pod = None
        annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
        if pod is not None and annotations.get("kubernetes.io/config.hash") != digest:
            # A new manifest is a new pod (kubelet: the UID derives from the hash): replace the mirror.
            await self.api.delete(kc.PODS, name, namespace, grace_period_seconds=0, uid=pod["metadata"]["uid"])
            pod = None
        status = mirror_status(manifest, self.node_ip, started)
        if pod is not None and _same_status(pod.get("status") or {}, status):
            return
        if pod is None:
            body = mirror_pod(manifest, self.node, self.node_uid(), digest, iso(started))
            try:
                await self.api.create(kc.PODS, body, namespace)
            except kc.ApiError as exc:
                if not exc.conflict:
                    raise
        await self.api.patch(kc.PODS, name, {"status": status}, namespace, subresource="status")


def _same_status(live: Mapping, desired: Mapping) -> bool:
    """True when the live status already says Running, Ready, since the same start."""
    def key(status: Mapping) -> tuple:
        ready = next((c.get("status") for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
        starts = tuple(((c.get("state") or {}).get("running") or {}).get("startedAt")
                       for c in status.get("containerStatuses") or ())
        return status.get("phase"), ready, starts
    return key(live) == key(desired)
