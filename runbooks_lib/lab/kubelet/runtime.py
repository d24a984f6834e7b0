"""Containers of the kubelet stand-in: real processes for known images, simulated otherwise.

Three kinds of container:

- ``app``: images of the test app (``mopckou/sticky-session`` with any tag,
  ``lab/echo-node``) run ``python -m runbooks_lib.lab.testapp`` as a real
  process bound to the node IP. There is no pod network: pod IP = node IP, and
  the process listens on the container's hostPort, else its containerPort
  (8080 if none is declared). When another pod on the node already holds that
  port, the kubelet picks the next free one; the pod's annotation
  ``lab.runbooks/ports`` maps declared to actual ports (JSON
  ``{"8080": 8081}``) and the endpoints controller publishes the actual one.
  Ready when the port answers HTTP (or the readinessProbe path); a process that
  exits is restarted with the kubelet's back-off (10 s doubling, capped at
  crashLoopBackOff.maxContainerRestartPeriod, default 300 s).
- ``dnsloop``: CoreDNS / nodelocaldns containers on a node whose resolvConf
  has only loopback nameservers (the 127.0.0.53 stub) start, log CoreDNS's
  loop-detection FATAL line, exit 1 and go CrashLoopBackOff.
- ``static``: every other image is reported Running and ready, no process.

Processes die with the kubelet (PR_SET_PDEATHSIG), so a stopped kubelet never
leaves orphans holding ports; the next kubelet counts them as restarted.
Logs go to ROOT/pods/NS_POD_UID/CONTAINER/RESTART.log.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import hashlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TESTAPP_IMAGES = ("mopckou/sticky-session", "lab/echo-node")
DNS_POD_PREFIXES = ("coredns-", "nodelocaldns-")
DNS_APP_LABELS = ("kube-dns", "nodelocaldns", "coredns")
PORTS_ANNOTATION = "lab.runbooks/ports"
DEFAULT_APP_PORT = 8080
INITIAL_BACKOFF = 10.0
CRASH_AFTER = 1.0
_PR_SET_PDEATHSIG = 1
_SRC_ROOT = str(Path(__file__).resolve().parents[3])


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_name(image: str) -> str:
    """Repository path of an image reference without registry, tag or digest."""
    ref = image.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref = ref[:colon]
    for registry in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if ref.startswith(registry):
            ref = ref[len(registry):]
    return ref


def image_id(image: str) -> str:
    """A stable imageID (registry/repo@sha256:...) derived from the image reference."""
    repo = image_name(image)
    first = repo.split("/", 1)[0]
    if "/" not in repo:
        repo = f"docker.io/library/{repo}"
    elif not ("." in first or ":" in first or first == "localhost"):
        repo = f"docker.io/{repo}"
    return f"{repo}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def is_dns_pod(pod: Mapping) -> bool:
    """CoreDNS and nodelocaldns pods, by name or by their k8s-app label."""
    meta = pod.get("metadata", {})
    if str(meta.get("name", "")).startswith(DNS_POD_PREFIXES):
        return True
    return (meta.get("labels") or {}).get("k8s-app") in DNS_APP_LABELS


def container_kind(pod: Mapping, container: Mapping, dns_loops: bool) -> str:
    """``app``, ``dnsloop`` or ``static`` (see the module docstring)."""
    if image_name(str(container.get("image", ""))) in TESTAPP_IMAGES:
        return "app"
    if dns_loops and is_dns_pod(pod):
        return "dnsloop"
    return "static"


def declared_port(container: Mapping) -> int:
    """The port the app should listen on: first TCP hostPort, else containerPort, else 8080."""
    for port in container.get("ports") or ():
        if port.get("protocol", "TCP") == "TCP":
            return int(port.get("hostPort") or port["containerPort"])
    return DEFAULT_APP_PORT


def port_is_free(ip: str, port: int) -> bool:
    """True if ``ip:port`` can be bound now (checked by binding and closing)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def backoff_delay(restarts: int, maximum: float) -> float:
    """Kubelet's crash back-off before restart number ``restarts + 1``: 10 s doubling, capped."""
    return min(INITIAL_BACKOFF * (2 ** min(restarts, 16)), maximum)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class PodRef:
    """The identity of a pod on this node."""

    namespace: str
    name: str
    uid: str
    node_name: str
    node_ip: str

    @property
    def log_dir(self) -> str:
        return f"{self.namespace}_{self.name}_{self.uid}"


def coredns_loop_log(pod: PodRef) -> str:
    """What CoreDNS prints before exiting when its upstream is itself."""
    port = 30000 + int(hashlib.sha256(pod.uid.encode()).hexdigest()[:4], 16) % 30000
    query = f"{uuid.uuid4().int % 10**19}.{uuid.uuid4().int % 10**19}"
    return (
        "[INFO] plugin/reload: Running configuration SHA512 = "
        f"{hashlib.sha512(pod.name.encode()).hexdigest()}\n"
        "CoreDNS-1.11.1\n"
        "linux/amd64, go1.20.7, ae2bbc2\n"
        f"[FATAL] plugin/loop: Loop (127.0.0.1:{port} -> :53) detected for zone \".\", "
        "see https://coredns.io/plugins/loop#troubleshooting. "
        f"Query: \"HINFO {query}.\"\n"
    )


class Container:
    """One container of a pod and its state machine (advanced by :meth:`step`)."""

    def __init__(self, pod: PodRef, spec: Mapping, kind: str, root_dir: Path, max_backoff: float,
                 previous: Mapping | None = None, probe_spec: Mapping | None = None) -> None:
        self.pod = pod
        self.spec = spec
        self.name = str(spec["name"])
        self.image = str(spec.get("image", ""))
        self.kind = kind
        self.root_dir = root_dir
        self.max_backoff = max_backoff
        self.probe_spec = probe_spec or spec.get("readinessProbe") or {}
        self.port: int | None = None
        self.container_id = ""
        self.restart_count = 0
        self.has_run = False
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.ready = False
        self.proc: asyncio.subprocess.Process | None = None
        self.next_start = 0.0
        self.crash_at = 0.0
        self.started_mono = 0.0
        self.next_probe = 0.0
        self.probe_failures = 0
        self.backoff_steps = 0
        self.log_path: Path | None = None
        if previous:
            self._resume(previous)

    def _resume(self, prev: Mapping) -> None:
        """Continue from the status a previous kubelet posted (restart count, last state)."""
        self.restart_count = int(prev.get("restartCount") or 0)
        self.has_run = bool(prev.get("containerID"))
        self.last_state = dict(prev.get("lastState") or {})
        running = (prev.get("state") or {}).get("running")
        if self.kind == "static" and running and prev.get("containerID"):
            # nothing ran, so nothing died: the container carries on
            self.container_id = prev["containerID"]
            self.state = {"running": dict(running)}
            self.ready = True
        elif running and prev.get("containerID"):
            # its process ended with the previous kubelet: what kubelet shows after a reboot
            self.last_state = {"terminated": {
                "exitCode": 255, "reason": "Unknown", "startedAt": running.get("startedAt"),
                "finishedAt": now_iso(), "containerID": prev["containerID"]}}

    # ---- lifecycle ---------------------------------------------------------------

    def _new_log(self) -> Path:
        directory = self.root_dir / "pods" / self.pod.log_dir / self.name
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.restart_count}.log"
        self.log_path = path
        return path

    def log_file(self, previous: bool = False) -> Path | None:
        """The current (or previous instance's) log file, if it exists."""
        directory = self.root_dir / "pods" / self.pod.log_dir / self.name
        number = self.restart_count - (1 if previous else 0)
        path = directory / f"{number}.log"
        return path if number >= 0 and path.exists() else None

    async def step(self, now: float) -> None:
        """Advance the state machine: start, probe, detect exits, crash."""
        if self.kind == "static":
            if "running" not in self.state:
                self._mark_started()
                self.ready = True
                self._new_log().write_text("")
            return
        running = "running" in self.state
        if self.kind == "dnsloop":
            if running and now >= self.crash_at:
                self._mark_exited(1, now)
            elif not running and now >= self.next_start:
                self._mark_started()
                self._new_log().write_text(coredns_loop_log(self.pod))
                self.started_mono = now
                self.crash_at = now + CRASH_AFTER
            return
        # app
        if self.proc is not None and self.proc.returncode is not None:
            code = self.proc.returncode
            self.proc = None
            self._mark_exited(code, now)
        elif self.proc is None and not running and now >= self.next_start:
            await self._spawn(now)
        elif self.proc is not None and now >= self.next_probe:
            await self._probe(now)

    def _mark_started(self) -> None:
        if self.has_run:
            self.restart_count += 1
        self.has_run = True
        self.container_id = "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex
        self.state = {"running": {"startedAt": now_iso()}}
        self.ready = False

    def _mark_exited(self, code: int, now: float) -> None:
        started = (self.state.get("running") or {}).get("startedAt")
        self.last_state = {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": started, "finishedAt": now_iso(), "containerID": self.container_id}}
        # A container that ran for 10 minutes starts its back-off afresh, as kubelet's does.
        if now - self.started_mono > 600:
            self.backoff_steps = 0
        delay = backoff_delay(self.backoff_steps, self.max_backoff)
        self.backoff_steps += 1
        self.next_start = now + delay
        self.ready = False
        self.state = {"waiting": {
            "reason": "CrashLoopBackOff",
            "message": (f"back-off {int(delay)}s restarting failed container={self.name} "
                        f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})")}}

    async def _spawn(self, now: float) -> None:
        assert self.port is not None, "the pod worker assigns a port before starting an app"
        self._mark_started()
        log = self._new_log().open("ab")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_ROOT, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["NODE_NAME"] = self.pod.node_name
        env["POD_NAME"] = self.pod.name
        args = [sys.executable, "-m", "runbooks_lib.lab.testapp", "--host", self.pod.node_ip,
                "--port", str(self.port), "--node", self.pod.node_name, "--pod", self.pod.name]
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                preexec_fn=_die_with_parent, start_new_session=True)
        except OSError as exc:
            log.write(f"cannot start: {exc}\n".encode())
            self._mark_exited(128, now)
        finally:
            log.close()
        self.started_mono = now
        delay = float(self.probe_spec.get("initialDelaySeconds", 0) or 0)
        self.next_probe = now + max(delay, 0.2)
        self.probe_failures = 0

    async def _probe(self, now: float) -> None:
        http = self.probe_spec.get("httpGet") or {}
        path = str(http.get("path", "/healthz")) if http else "/healthz"
        period = float(self.probe_spec.get("periodSeconds", 10)) if self.probe_spec else 1.0
        timeout = float(self.probe_spec.get("timeoutSeconds", 1)) if self.probe_spec else 1.0
        threshold = int(self.probe_spec.get("failureThreshold", 3)) if self.probe_spec else 1
        ok = await http_ok(self.pod.node_ip, self.port or 0, path, timeout)
        if ok:
            self.probe_failures = 0
            self.ready = True
        else:
            self.probe_failures += 1
            if self.probe_failures >= threshold or not self.ready:
                self.ready = False
        # Until first ready, probe quickly so a new pod joins the endpoints promptly.
        self.next_probe = now + (period if self.ready else 0.25)

    async def stop(self, grace: float) -> None:
        """Stop the process: SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent."""
        proc, self.proc = self.proc, None
        self.ready = False
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=max(grace, 0.1))
        except asyncio.TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), timeout=5)
        except ProcessLookupError:
            pass

    def status(self) -> dict:
        """The container's status in the Pod's status.containerStatuses form."""
        started = "running" in self.state
        status = {
            "name": self.name,
            "image": self.image,
            "imageID": image_id(self.image) if self.has_run else "",
            "ready": self.ready,
            "started": started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


async def http_ok(ip: str, port: int, path: str, timeout: float) -> bool:
    """True if GET http://ip:port/path answers a status below 400 within ``timeout``."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.30\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    except (OSError, asyncio.TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()


def monotonic() -> float:
    return time.monotonic()
