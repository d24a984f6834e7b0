"""Containers, pod status and pod workers of the kubelet stand-in (real app processes on loopback)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubelet import pods, runtime
from runbooks_lib.lab.kubelet.runtime import Container, PodRef

REF = PodRef("kube-system", "coredns-abc-x1", "uid-1", "node1", "127.0.0.1")


def _pod(name="web-1", image="mopckou/sticky-session:latest", labels=None, ports=None, status=None, **meta):
    container = {"name": "app", "image": image}
    if ports is not None:
        container["ports"] = ports
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1",
                        "labels": labels or {}, **meta},
           "spec": {"nodeName": "node1", "containers": [container]}}
    if status:
        pod["status"] = status
    return pod


@pytest.mark.parametrize(("image", "name"), [
    ("mopckou/sticky-session", "mopckou/sticky-session"),
    ("docker.io/mopckou/sticky-session:1.2", "mopckou/sticky-session"),
    ("lab/echo-node@sha256:abcd", "lab/echo-node"),
    ("registry.k8s.io/coredns/coredns:v1.11.1", "registry.k8s.io/coredns/coredns"),
    ("localhost:5000/app:1", "localhost:5000/app"),
])
def test_image_name(image, name):
    assert runtime.image_name(image) == name


def test_image_id_is_stable_and_qualified():
    assert runtime.image_id("nginx:1.25").startswith("docker.io/library/nginx@sha256:")
    assert runtime.image_id("registry.k8s.io/pause:3.9").startswith("registry.k8s.io/pause@sha256:")
    assert runtime.image_id("x:1") == runtime.image_id("x:1")


def test_container_kinds():
    app = _pod()
    dns = _pod("coredns-5d-abc", image="registry.k8s.io/coredns/coredns:v1.11.1")
    by_label = _pod("whatever", image="registry.k8s.io/dns/k8s-dns-node-cache:1.22", labels={"k8s-app": "nodelocaldns"})
    assert runtime.container_kind(app, app["spec"]["containers"][0], dns_loops=True) == "app"
    assert runtime.container_kind(dns, dns["spec"]["containers"][0], dns_loops=True) == "dnsloop"
    assert runtime.container_kind(by_label, by_label["spec"]["containers"][0], dns_loops=True) == "dnsloop"
    assert runtime.container_kind(dns, dns["spec"]["containers"][0], dns_loops=False) == "static"


def test_declared_port_prefers_host_port():
    assert runtime.declared_port({"ports": [{"containerPort": 80, "hostPort": 8081}]}) == 8081
    assert runtime.declared_port({"ports": [{"containerPort": 9000}]}) == 9000
    assert runtime.declared_port({}) == runtime.DEFAULT_APP_PORT


def test_backoff_doubles_from_ten_seconds_up_to_the_cap():
    assert [runtime.backoff_delay(n, 300) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert runtime.backoff_delay(0, 2) == 2


def test_port_allocator_skips_ports_in_use():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        taken = busy.getsockname()[1]
        alloc = pods.PortAllocator("127.0.0.1")
        first = alloc.allocate(taken)
        assert first != taken and first > taken
        second = alloc.allocate(taken)
        assert second not in (taken, first)
        alloc.release(first)
        assert alloc.allocate(taken, preferred=first) == first
    finally:
        busy.close()


def test_dns_container_crash_loops_with_growing_restart_count(tmp_path):
    asyncio.run(_test_dns_container_crash_loops_with_growing_restart_count(tmp_path))


async def _test_dns_container_crash_loops_with_growing_restart_count(tmp_path):
    c = Container(REF, {"name": "coredns", "image": "coredns:1.11"}, "dnsloop", tmp_path, max_backoff=2)
    await c.step(0.0)
    assert "running" in c.status()["state"] and c.restart_count == 0
    await c.step(runtime.CRASH_AFTER + 0.01)
    st = c.status()
    assert st["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert st["lastState"]["terminated"]["exitCode"] == 1
    assert not st["ready"]
    assert "plugin/loop: Loop" in c.log_file().read_text()
    t = runtime.CRASH_AFTER + 0.01 + 2.0
    await c.step(t)
    assert "running" in c.status()["state"] and c.restart_count == 1
    await c.step(t + runtime.CRASH_AFTER + 0.01)
    await c.step(t + runtime.CRASH_AFTER + 2.1)
    assert c.restart_count == 2
    assert c.log_file(previous=True) is not None


def test_resume_counts_a_container_that_died_with_the_previous_kubelet(tmp_path):
    prev = {"name": "app", "restartCount": 2, "containerID": "containerd://old",
            "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}
    c = Container(REF, {"name": "app", "image": "mopckou/sticky-session"}, "app", tmp_path, 300, previous=prev)
    assert c.last_state["terminated"]["reason"] == "Unknown"
    assert c.last_state["terminated"]["exitCode"] == 255
    c._mark_started()
    assert c.restart_count == 3
    static = Container(REF, {"name": "p", "image": "pause"}, "static", tmp_path, 300, previous=prev)
    assert static.container_id == "containerd://old" and static.ready and static.restart_count == 2


def test_pod_status_and_conditions(tmp_path):
    pod = _pod()
    c = Container(REF, {"name": "app", "image": "x"}, "static", tmp_path, 300)
    clock = pods.ConditionClock()
    pending = pods.pod_status(pod, [c], "10.0.0.1", "2024-01-01T00:00:00Z", clock)
    assert pending["phase"] == "Pending"
    assert {x["type"]: x["status"] for x in pending["conditions"]}["Ready"] == "False"
    asyncio.run(c.step(0))
    running = pods.pod_status(pod, [c], "10.0.0.1", "2024-01-01T00:00:00Z", clock)
    assert running["phase"] == "Running" and running["podIP"] == "10.0.0.1" and running["hostIP"] == "10.0.0.1"
    assert {x["type"]: x["status"] for x in running["conditions"]}["Ready"] == "True"
    assert running["qosClass"] == "BestEffort"
    assert pods.status_key(running) != pods.status_key(pending)
    assert pods.status_key(running) == pods.status_key(json.loads(json.dumps(running)))


def test_qos_class():
    pod = _pod()
    assert pods.qos_class(pod) == "BestEffort"
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    assert pods.qos_class(pod) == "Burstable"
    pod["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert pods.qos_class(pod) == "Guaranteed"


def test_app_container_is_a_real_process_that_is_restarted(tmp_path):
    asyncio.run(_test_app_container_is_a_real_process_that_is_restarted(tmp_path))


async def _test_app_container_is_a_real_process_that_is_restarted(tmp_path):
    ref = PodRef("default", "web-1", "uid-web", "node1", "127.0.0.1")
    c = Container(ref, {"name": "app", "image": "mopckou/sticky-session"}, "app", tmp_path, max_backoff=0.5)
    c.port = pods.PortAllocator("127.0.0.1").allocate(18200)
    loop = asyncio.get_running_loop()
    try:
        deadline = loop.time() + 20
        while not c.ready and loop.time() < deadline:
            await c.step(loop.time())
            await asyncio.sleep(0.1)
        assert c.ready, "the app never answered"
        assert await runtime.http_ok("127.0.0.1", c.port, "/", 2)
        c.proc.kill()
        await c.proc.wait()
        await c.step(loop.time())
        assert c.status()["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert c.status()["lastState"]["terminated"]["exitCode"] == -9
        deadline = loop.time() + 20
        while not c.ready and loop.time() < deadline:
            await c.step(loop.time())
            await asyncio.sleep(0.1)
        assert c.ready and c.restart_count == 1
        assert "listening on 127.0.0.1" in c.log_file().read_text()
    finally:
        await c.stop(2)


class _FakeApi:
    """Records the kubelet's writes; answers PATCH with the patched object."""

    def __init__(self, pod):
        self.pod = pod
        self.calls = []

    async def patch(self, res, name, patch, namespace=None, subresource=None, patch_type="merge"):
        self.calls.append(("patch", subresource, patch))
        out = json.loads(json.dumps(self.pod))
        for key, value in patch.items():
            if isinstance(value, dict) and key == "metadata":
                out["metadata"].setdefault("annotations", {}).update(value.get("annotations", {}))
            else:
                out[key] = value
        out["metadata"]["resourceVersion"] = str(int(out["metadata"]["resourceVersion"]) + 1)
        self.pod = out
        return out

    async def delete(self, res, name, namespace=None, grace_period_seconds=None, uid=None, propagation_policy=None):
        self.calls.append(("delete", grace_period_seconds, uid))
        raise kc.ApiError(404, "NotFound", "gone", "DELETE", name)


def test_worker_reports_status_then_finishes_a_graceful_deletion(tmp_path):
    asyncio.run(_test_worker_reports_status_then_finishes_a_graceful_deletion(tmp_path))


async def _test_worker_reports_status_then_finishes_a_graceful_deletion(tmp_path):
    pod = _pod("sys-1", image="registry.k8s.io/kube-proxy:v1.30.6")
    api = _FakeApi(pod)
    worker = pods.PodWorker(api, pod, "node1", "127.0.0.1", tmp_path, False, 300, pods.PortAllocator("127.0.0.1"))
    worker.start()
    for _ in range(50):
        if any(c[0] == "patch" and c[1] == "status" for c in api.calls):
            break
        await asyncio.sleep(0.05)
    status = next(c[2]["status"] for c in api.calls if c[1] == "status")
    assert status["phase"] == "Running" and status["containerStatuses"][0]["ready"] is True
    n_status = sum(1 for c in api.calls if c[1] == "status")
    await asyncio.sleep(1.2)
    assert sum(1 for c in api.calls if c[1] == "status") == n_status, "unchanged status must not be re-posted"
    terminating = json.loads(json.dumps(api.pod))
    terminating["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    terminating["metadata"]["resourceVersion"] = "100"
    worker.update(terminating)
    await asyncio.wait_for(worker.task, 10)
    assert ("delete", 0, "uid-sys-1") in api.calls


def test_worker_annotates_the_actual_port(tmp_path):
    asyncio.run(_test_worker_annotates_the_actual_port(tmp_path))


async def _test_worker_annotates_the_actual_port(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    pod = _pod("web-2", ports=[{"containerPort": taken}])
    api = _FakeApi(pod)
    worker = pods.PodWorker(api, pod, "node1", "127.0.0.1", tmp_path, False, 300, pods.PortAllocator("127.0.0.1"))
    try:
        await worker._create_containers()
        ports = json.loads(api.pod["metadata"]["annotations"][runtime.PORTS_ANNOTATION])
        assert ports[str(taken)] != taken
    finally:
        busy.close()
        await worker._stop_all(1)


def test_a_pod_keeps_the_resolv_conf_of_its_sandbox_across_a_kubelet_restart(tmp_path):
    asyncio.run(_test_a_pod_keeps_the_resolv_conf_of_its_sandbox(tmp_path))


async def _test_a_pod_keeps_the_resolv_conf_of_its_sandbox(tmp_path):
    """The article's loop: fixing kubelet's resolvConf and restarting kubelet leaves a running CoreDNS pod in its
    looping sandbox; only a new pod (new UID) gets the fixed file, and a deleted pod's sandbox goes with it."""
    sandboxes = tmp_path / "run-sandboxes"
    coredns = _pod("coredns-abc", image="registry.k8s.io/coredns/coredns:v1.11.1", labels={"k8s-app": "kube-dns"})
    coredns["metadata"]["namespace"] = "kube-system"

    async def kind_of(pod, dns_loops):
        worker = pods.PodWorker(_FakeApi(pod), pod, "node1", "127.0.0.1", tmp_path, dns_loops, 300,
                                pods.PortAllocator("127.0.0.1"), sandbox_dir=sandboxes)
        try:
            await worker._create_containers()
            return worker.containers[0].kind
        finally:
            await worker._stop_all(1)

    assert await kind_of(coredns, dns_loops=True) == "dnsloop"  # created while resolvConf was the stub
    assert (sandboxes / "uid-coredns-abc").read_text() == "loops\n"
    assert await kind_of(coredns, dns_loops=False) == "dnsloop"  # kubelet restarted with the fix: same sandbox
    recreated = json.loads(json.dumps(coredns))
    recreated["metadata"]["name"], recreated["metadata"]["uid"] = "coredns-def", "uid-coredns-def"
    assert await kind_of(recreated, dns_loops=False) == "static"  # a new pod: a new sandbox, the fixed file
    pod = _pod("sys-2", image="registry.k8s.io/kube-proxy:v1.30.6")
    api = _FakeApi(pod)
    worker = pods.PodWorker(api, pod, "node1", "127.0.0.1", tmp_path, False, 300, pods.PortAllocator("127.0.0.1"),
                            sandbox_dir=sandboxes)
    worker.start()
    for _ in range(50):
        if (sandboxes / "uid-sys-2").exists():
            break
        await asyncio.sleep(0.05)
    worker.gone()
    await asyncio.wait_for(worker.task, 10)
    assert not (sandboxes / "uid-sys-2").exists()
