"""Kubelet stand-ins and controllers against a real API stand-in on a real etcd, all on loopback.

Two kubelets (n1 = 127.0.0.2, a control plane; n2 = 127.0.0.3) with a 1 s
status period and a 4 s node lease, an API server with the controllers and
node-monitor-grace-period=4s. The tests run in order on one cluster: register,
deploy, daemonset, stop a kubelet (SIGSTOP) and bring it back, kill one and
restart it, then a third kubelet whose resolvConf is the systemd-resolved stub.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import config as k8s_config
from kubernetes.client import CoreV1Api

from runbooks_lib.errors import WaitTimedOut
from runbooks_lib.lab.kubeapi import pki
from tests.waiting import wait_until

pytestmark = [pytest.mark.local, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
GRACE = 4.0
STUB = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
UPSTREAM = "nameserver 192.0.2.53\n"  # parsed only: nothing is sent to it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Kubelet:
    """One kubelet stand-in process with its own config, resolv.conf and root dir."""

    def __init__(self, workdir: Path, name: str, ip: str, api, ca, labels: str = "") -> None:
        self.name, self.ip, self.workdir = name, ip, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        pair = pki.issue_client_cert(ca, f"system:node:{name}", ["system:nodes"])
        self.kubeconfig = workdir / "kubelet.conf"
        pki.write_kubeconfig(self.kubeconfig, pki.kubeconfig(api.url, ca.cert_pem, pair, user=f"system:node:{name}"))
        self.resolv_conf = workdir / "resolv.conf"
        self.resolv_conf.write_text(UPSTREAM)
        self.config = workdir / "kubelet-config.yaml"
        self.config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "nodeStatusUpdateFrequency": "1s", "nodeLeaseDurationSeconds": 4,
            "resolvConf": str(self.resolv_conf), "clusterDNS": ["169.254.25.10"],
            "port": free_port(), "crashLoopBackOff": {"maxContainerRestartPeriod": "2s"},
        }))
        self.labels = labels
        self.log_path = workdir / "kubelet.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "runbooks_lib.lab.kubelet", "--kubeconfig", str(self.kubeconfig),
               "--config", str(self.config), "--hostname-override", self.name, "--node-ip", self.ip,
               "--root-dir", str(self.workdir / "root")]
        if self.labels:
            cmd += ["--node-labels", self.labels]
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                     start_new_session=True)
        log.close()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    def __init__(self, api, ca, base: Path) -> None:
        self.api, self.ca, self.base = api, ca, base
        self.kubelets: dict[str, Kubelet] = {}

    def kubelet(self, name: str, ip: str, labels: str = "") -> Kubelet:
        k = Kubelet(self.base / name, name, ip, self.api, self.ca, labels)
        self.kubelets[name] = k
        k.start()
        return k

    def get(self, path: str) -> dict:
        code, body = self.api.get(path, timeout=10)
        assert code == 200, (path, code, body)
        return body

    def node_ready(self, name: str) -> str:
        code, node = self.api.get(f"/api/v1/nodes/{name}")
        if code != 200:
            return "Missing"
        return next((c["status"] for c in node["status"].get("conditions", []) if c["type"] == "Ready"), "Unknown")

    def apply(self, manifest: str) -> None:
        path = self.base / f"m{time.monotonic_ns()}.yaml"
        path.write_text(manifest)
        self.api.kubectl("apply", "-f", str(path))

    def pods(self, selector: str, namespace: str = "default") -> list[dict]:
        return self.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"]

    def endpoints(self, name: str, namespace: str = "default") -> tuple[list[tuple], list[tuple]]:
        """(ready, not ready) as sorted (pod, node, ip, port)."""
        code, ep = self.api.get(f"/api/v1/namespaces/{namespace}/endpoints/{name}")
        if code != 200:
            return [], []
        ready, not_ready = [], []
        for subset in ep.get("subsets") or []:
            port = subset["ports"][0]["port"]
            for field, out in (("addresses", ready), ("notReadyAddresses", not_ready)):
                for a in subset.get(field) or []:
                    out.append((a["targetRef"]["name"], a.get("nodeName"), a["ip"], port))
        return sorted(ready), sorted(not_ready)


@pytest.fixture(scope="module")
def cluster(etcd_factory, api_server_factory, kube_pki, tmp_path_factory):
    etcd = etcd_factory(1)
    api = api_server_factory(etcd_servers=etcd.etcd_servers, extra_args=[
        f"--controllers-ca-key={kube_pki.ca_key}", f"--node-monitor-grace-period={GRACE:g}s"])
    ca = pki.load_pair(kube_pki.ca_cert, kube_pki.ca_key)
    c = Cluster(api, ca, tmp_path_factory.mktemp("kubelets"))
    try:
        yield c
    finally:
        for k in c.kubelets.values():
            k.stop()
        api.stop()
        etcd.stop()


def _wait(cluster: Cluster, predicate, timeout: float, what: str) -> None:
    try:
        wait_until(predicate, timeout, what, 0.2)
    except WaitTimedOut as exc:
        logs = "\n".join(f"--- {n}\n{k.log_tail(15)}" for n, k in cluster.kubelets.items())
        raise AssertionError(f"{exc}\nAPI server log:\n{cluster.api.log_tail(20)}\n{logs}") from None


def _http_json(ip: str, port: int) -> dict:
    with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=5) as resp:
        return json.loads(resp.read())


def _answers(ip: str, port: int) -> bool:
    try:
        _http_json(ip, port)
        return True
    except (OSError, urllib.error.URLError, ValueError):
        return False


WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: mopckou/sticky-session:latest
        ports: [{name: http, containerPort: 18080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""

PROXY = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-proxy, namespace: kube-system}
spec:
  selector: {matchLabels: {k8s-app: kube-proxy}}
  template:
    metadata: {labels: {k8s-app: kube-proxy}}
    spec:
      tolerations: [{operator: Exists}]
      containers: [{name: kube-proxy, image: registry.k8s.io/kube-proxy:v1.30.6}]
"""

COREDNS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      nodeSelector: {kubernetes.io/hostname: n3}
      containers: [{name: coredns, image: registry.k8s.io/coredns/coredns:v1.11.1}]
"""


def test_kubelets_register_nodes_the_official_client_accepts(cluster):
    cluster.kubelet("n1", "127.0.0.2", labels="node-role.kubernetes.io/control-plane=")
    cluster.kubelet("n2", "127.0.0.3")
    _wait(cluster, lambda: cluster.node_ready("n1") == "True" and cluster.node_ready("n2") == "True", 30,
          "both nodes Ready")
    api_client = k8s_config.new_client_from_config(config_file=str(cluster.api.kubeconfig))
    try:
        nodes = {n.metadata.name: n for n in CoreV1Api(api_client).list_node(_request_timeout=10).items}
    finally:
        api_client.close()
    assert set(nodes) == {"n1", "n2"}
    n1 = nodes["n1"]
    assert n1.status.node_info.kubelet_version.startswith("v1.30.")
    assert {a.address for a in n1.status.addresses} == {"127.0.0.2", "n1"}
    assert "node-role.kubernetes.io/control-plane" in n1.metadata.labels
    roles = cluster.api.kubectl("get", "nodes", "--no-headers").stdout
    assert any(line.split()[0] == "n1" and "control-plane" in line for line in roles.splitlines()), roles
    # heartbeats: both the Ready condition and the node lease move on
    before = cluster.get("/api/v1/nodes/n2")
    lease_before = cluster.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2")
    hb = next(c for c in before["status"]["conditions"] if c["type"] == "Ready")["lastHeartbeatTime"]
    _wait(cluster, lambda: next(c for c in cluster.get("/api/v1/nodes/n2")["status"]["conditions"]
                                if c["type"] == "Ready")["lastHeartbeatTime"] != hb, 10, "a newer heartbeat")
    lease_after = cluster.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2")
    assert lease_after["spec"]["holderIdentity"] == "n2"
    assert lease_after["spec"]["renewTime"] != lease_before["spec"]["renewTime"]


def test_deployment_pods_are_real_processes_behind_the_service(cluster):
    cluster.apply(WEB)
    cluster.api.kubectl("rollout", "status", "deployment/web", "--timeout=60s", timeout=90)
    _wait(cluster, lambda: len(cluster.endpoints("web")[0]) == 3, 20, "3 ready endpoints")
    ready, not_ready = cluster.endpoints("web")
    assert not_ready == []
    assert {node for _, node, _, _ in ready} == {"n1", "n2"}, "the scheduler spreads over both nodes"
    for pod, node, ip, port in ready:
        answer = _http_json(ip, port)
        assert (answer["pod"], answer["node"]) == (pod, node)
    assert _http_json(*ready[0][2:])["uuid"] != _http_json(*ready[0][2:])["uuid"]
    pods = cluster.pods("app=web")
    assert {p["status"]["podIP"] for p in pods} == {"127.0.0.2", "127.0.0.3"}
    assert all(p["status"]["hostIP"] == p["status"]["podIP"] for p in pods)
    logs = cluster.api.kubectl("logs", ready[0][0]).stdout
    assert "listening on" in logs


def test_daemonset_runs_one_pod_per_node(cluster):
    cluster.apply(PROXY)
    cluster.api.kubectl("-n", "kube-system", "rollout", "status", "daemonset/kube-proxy", "--timeout=60s", timeout=90)
    pods = cluster.pods("k8s-app=kube-proxy", "kube-system")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["n1", "n2"]
    ds = cluster.get("/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy")
    assert ds["status"]["desiredNumberScheduled"] == 2 and ds["status"]["numberReady"] == 2


def _watch_node(cluster: Cluster, name: str, seconds: int, seen: list) -> threading.Thread:
    rv = cluster.get("/api/v1/nodes")["metadata"]["resourceVersion"]
    url = (f"{cluster.api.url}/api/v1/nodes?watch=true&resourceVersion={rv}"
           f"&fieldSelector=metadata.name={name}&timeoutSeconds={seconds}")

    def run() -> None:
        try:
            with urllib.request.urlopen(url, context=cluster.api.ssl_context(), timeout=seconds + 10) as resp:
                for line in resp:
                    event = json.loads(line)
                    ready = next((c["status"] for c in event["object"]["status"].get("conditions", [])
                                  if c["type"] == "Ready"), None)
                    seen.append((time.monotonic(), event["type"], ready))
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_stopped_kubelet_makes_its_node_not_ready_and_its_pods_leave_the_endpoints(cluster):
    n2 = cluster.kubelets["n2"]
    on_n2 = sorted(p for p, node, _, _ in cluster.endpoints("web")[0] if node == "n2")
    assert on_n2
    seen: list = []
    watcher = _watch_node(cluster, "n2", 40, seen)
    stopped = time.monotonic()
    n2.signal(signal.SIGSTOP)
    try:
        _wait(cluster, lambda: cluster.node_ready("n2") == "Unknown", 20, "n2 NotReady")
        took = time.monotonic() - stopped
        assert took >= GRACE - 1.5, f"NotReady after {took:.1f}s, before the {GRACE}s grace period"
        node = cluster.get("/api/v1/nodes/n2")
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "NodeStatusUnknown"
        # The controller writes the condition and the taints in two updates, as upstream's does.
        unreachable = {("node.kubernetes.io/unreachable", "NoSchedule"), ("node.kubernetes.io/unreachable", "NoExecute")}
        _wait(cluster, lambda: {(t["key"], t["effect"])
                                for t in cluster.get("/api/v1/nodes/n2")["spec"].get("taints", [])} >= unreachable,
              10, "the unreachable taints on n2")
        assert "NotReady" in cluster.api.kubectl("get", "node", "n2", "--no-headers").stdout
        _wait(cluster, lambda: sorted(p for p, _, _, _ in cluster.endpoints("web")[1]) == on_n2, 10,
              "n2's pods in notReadyAddresses")
        assert all(node != "n2" for _, node, _, _ in cluster.endpoints("web")[0])
        for pod in cluster.pods("app=web"):
            ready_cond = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
            assert ready_cond["status"] == ("False" if pod["spec"]["nodeName"] == "n2" else "True")
        _wait(cluster, lambda: any(t == "MODIFIED" and r == "Unknown" for _, t, r in seen), 5,
              "the node watch to report Ready=Unknown")
    finally:
        n2.signal(signal.SIGCONT)
    _wait(cluster, lambda: cluster.node_ready("n2") == "True", 15, "n2 Ready again")
    _wait(cluster, lambda: len(cluster.endpoints("web")[0]) == 3, 15, "3 ready endpoints again")
    _wait(cluster, lambda: not cluster.get("/api/v1/nodes/n2")["spec"].get("taints"), 10, "taints removed")
    watcher.join(timeout=0)
    assert any(r == "True" and t == "MODIFIED" for _, t, r in seen[-5:]), seen[-5:]


def test_killed_kubelet_takes_its_pods_down_and_a_restart_brings_them_back(cluster):
    n2 = cluster.kubelets["n2"]
    targets = [(ip, port) for _, node, ip, port in cluster.endpoints("web")[0] if node == "n2"]
    assert targets and all(_answers(*t) for t in targets)
    n2.kill()
    _wait(cluster, lambda: not any(_answers(*t) for t in targets), 10, "n2's app processes to end with the kubelet")
    _wait(cluster, lambda: cluster.node_ready("n2") == "Unknown", 20, "n2 NotReady")
    _wait(cluster, lambda: all(node != "n2" for _, node, _, _ in cluster.endpoints("web")[0]), 10,
          "n2's pods out of the ready endpoints")
    n2.start()
    _wait(cluster, lambda: cluster.node_ready("n2") == "True", 20, "n2 Ready after restart")
    _wait(cluster, lambda: len(cluster.endpoints("web")[0]) == 3, 30, "3 ready endpoints after restart")
    for pod, node, ip, port in cluster.endpoints("web")[0]:
        assert _http_json(ip, port)["pod"] == pod
    restarted = [p for p in cluster.pods("app=web") if p["spec"]["nodeName"] == "n2"]
    for pod in restarted:
        status = pod["status"]["containerStatuses"][0]
        assert status["restartCount"] >= 1
        assert status["lastState"]["terminated"]["reason"] == "Unknown"


def test_dns_pods_crash_loop_on_the_resolved_stub_and_recover_after_the_fix(cluster):
    n3 = Kubelet(cluster.base / "n3", "n3", "127.0.0.4", cluster.api, cluster.ca)
    n3.resolv_conf.write_text(STUB)
    cluster.kubelets["n3"] = n3
    n3.start()
    _wait(cluster, lambda: cluster.node_ready("n3") == "True", 20, "n3 Ready")
    cluster.apply(COREDNS)

    def restarts() -> int:
        pods = cluster.pods("k8s-app=kube-dns", "kube-system")
        statuses = [s for p in pods for s in (p.get("status") or {}).get("containerStatuses") or []]
        return max((s["restartCount"] for s in statuses), default=-1)

    _wait(cluster, lambda: restarts() >= 2, 40, "coredns to restart twice")
    pod = cluster.pods("k8s-app=kube-dns", "kube-system")[0]
    assert pod["spec"]["nodeName"] == "n3"
    _wait(cluster, lambda: "CrashLoopBackOff" in cluster.api.kubectl(
        "-n", "kube-system", "get", "pods", "--no-headers").stdout, 15, "kubectl to show CrashLoopBackOff")
    status = cluster.pods("k8s-app=kube-dns", "kube-system")[0]["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 1
    logs = cluster.api.kubectl("-n", "kube-system", "logs", pod["metadata"]["name"]).stdout
    assert "plugin/loop: Loop" in logs
    # the fix: a resolv.conf with the real upstream, then restart the kubelet
    n3.resolv_conf.write_text(UPSTREAM)
    n3.stop()
    n3.start()
    cluster.api.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=60s", timeout=90)
    status = cluster.pods("k8s-app=kube-dns", "kube-system")[0]["status"]["containerStatuses"][0]
    assert status["ready"] and "running" in status["state"]
    assert status["restartCount"] >= 2
