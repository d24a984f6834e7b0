"""kube module against the lab's API stand-in (a real HTTPS server process on loopback).

Each test gets its own stand-in (memory storage, no controllers) from the
``api_server_factory`` fixture, so objects never leak between tests.
"""

from __future__ import annotations

import time

import pytest

from runbooks_lib import errors, kube

pytestmark = pytest.mark.local


@pytest.fixture
def server(api_server_factory):
    return api_server_factory()


@pytest.fixture
def api(server):
    client = kube.client_from_kubeconfig(str(server.kubeconfig))
    yield client
    client.close()


def create(server, path: str, body: dict) -> None:
    status, doc = server.request("POST", path, body)
    assert status in (200, 201), (status, doc)


def test_nodes_cordon_wait_delete(server, api, objects) -> None:
    create(server, "/api/v1/nodes", objects.node("cp1", roles=("control-plane",), ip="10.213.7.11"))
    create(server, "/api/v1/nodes", objects.node("w1", ip="10.213.7.14"))
    create(server, "/api/v1/nodes", objects.node("w2", ready=None, ip="10.213.7.15"))
    infos = {n.name: n for n in kube.nodes(api)}
    assert infos["cp1"].roles == ("control-plane",) and infos["cp1"].is_ready
    assert infos["w2"].ready == "Unknown" and infos["w2"].status == "NotReady"
    assert infos["w1"].internal_ip == "10.213.7.14"

    assert kube.cordon(api, "w1") and not kube.cordon(api, "w1")
    assert kube.node(api, "w1").status == "Ready,SchedulingDisabled"
    assert kube.uncordon(api, "w1") and not kube.node(api, "w1").unschedulable

    assert kube.wait_for_nodes(api, ["cp1", "w1"], "Ready", timeout=10)["w1"].is_ready
    with pytest.raises(errors.WaitTimedOut, match="w2 is NotReady"):
        kube.wait_for_nodes(api, ["cp1", "w2"], "Ready", timeout=1, interval=0.2)
    assert kube.delete_node(api, "w2")
    assert kube.wait_for_nodes(api, ["w2"], "absent", timeout=10) == {"w2": None}


def test_server_override_keeps_tls_verification(server, api_server_factory) -> None:
    same = kube.client_from_kubeconfig(str(server.kubeconfig), server=server.url)
    assert kube.nodes(same) == []
    # 127.1 reaches the same socket but is not in the certificate's SANs
    other = kube.client_from_kubeconfig(str(server.kubeconfig), server=f"https://127.1:{server.port}")
    with pytest.raises(errors.PreconditionFailed, match="TLS verification"):
        kube.nodes(other)


def test_dead_api_server_is_unreachable_fast(server) -> None:
    client = kube.client_from_kubeconfig(str(server.kubeconfig))
    server.stop()
    start = time.monotonic()
    with pytest.raises(errors.HostUnreachable):
        kube.nodes(client, timeout=3)
    assert time.monotonic() - start < 5


def test_drain_evicts_honours_pdb_skips_daemonsets(server, api, objects) -> None:
    create(server, "/api/v1/nodes", objects.node("w1"))
    create(server, "/apis/apps/v1/namespaces/default/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "shipper"},
        "spec": {"selector": {"matchLabels": {"app": "shipper"}},
                 "template": {"metadata": {"labels": {"app": "shipper"}},
                              "spec": {"containers": [{"name": "a", "image": "lab/app:1"}]}}},
    })
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u1", "controller": True}
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "shipper", "uid": "u2", "controller": True}
    for i in range(3):
        create(server, "/api/v1/namespaces/default/pods",
               objects.pod(f"web-{i}", node="w1", labels={"app": "web"}, owner=rs))
    create(server, "/api/v1/namespaces/default/pods", objects.pod("shipper-w1", node="w1", labels={"app": "shipper"}, owner=ds))
    create(server, "/apis/policy/v1/namespaces/default/poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
    })
    start = time.monotonic()
    result = kube.drain(api, "w1", timeout=4, retry_interval=0.5, check=False)
    assert time.monotonic() - start < 8
    assert result.skipped_daemonset == ("default/shipper-w1",)
    assert len(result.evicted) == 1 and len(result.failed) == 2  # minAvailable 2 of 3 ready pods
    assert all("429" in reason for _, reason in result.failed)
    assert kube.node(api, "w1").unschedulable
    remaining = {p["metadata"]["name"] for p in kube.pods_on_node(api, "w1")}
    # without a kubelet an evicted pod stays terminating (grace period): drain reports it, not an error
    assert set(result.terminating) <= set(result.evicted)
    names = {k.split("/")[1] for k, _ in result.failed} | {k.split("/")[1] for k in result.terminating}
    assert remaining == {"shipper-w1"} | names


def test_cluster_info_server_switch(server, api) -> None:
    kubeconfig = (
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: LS0t\n"
        "    server: https://10.213.7.11:6443\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\n"
        "kind: Config\npreferences: {}\nusers: null\n"
    )
    create(server, "/api/v1/namespaces/kube-public/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-info", "namespace": "kube-public"},
        "data": {"kubeconfig": kubeconfig},
    })
    assert kube.cluster_info_server(api) == "https://10.213.7.11:6443"
    change = kube.set_cluster_info_server(api, "https://10.213.7.12:6443")
    assert change.changed and change.old == "https://10.213.7.11:6443"
    status, doc = server.get("/api/v1/namespaces/kube-public/configmaps/cluster-info")
    assert doc["data"]["kubeconfig"] == kubeconfig.replace("10.213.7.11", "10.213.7.12")
    assert not kube.set_cluster_info_server(api, "https://10.213.7.12:6443").changed


def test_pod_health_and_apply(server, api, objects) -> None:
    create(server, "/api/v1/namespaces/kube-system/pods",
           objects.pod("coredns-1", namespace="kube-system", node="w1", waiting_reason="CrashLoopBackOff", restarts=4))
    create(server, "/api/v1/namespaces/kube-system/pods", objects.pod("kube-proxy-w1", namespace="kube-system", node="w1"))
    pods = kube.pod_health(api)
    assert [p.name for p in kube.crash_looping(pods)] == ["coredns-1"]
    assert [p.name for p in pods if p.healthy] == ["kube-proxy-w1"]

    manifest = """
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: demo}
data: {mode: fast}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "lab/app:1"}
"""
    assert [a.action for a in kube.apply(api, manifest)] == ["created", "created", "created"]
    assert [a.action for a in kube.apply(api, manifest)] == ["unchanged", "unchanged", "unchanged"]
    changed = kube.apply(api, manifest.replace("mode: fast", "mode: safe"))
    assert [a.action for a in changed] == ["unchanged", "configured", "unchanged"]
    status, doc = server.get("/api/v1/namespaces/demo/configmaps/settings")
    assert doc["data"] == {"mode": "safe"}
