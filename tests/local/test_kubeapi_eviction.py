"""Eviction honours PodDisruptionBudgets atomically, also under parallel evictions (what kubectl drain does)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.local

VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def _setup(api_server, objects, pods: int, pdb_spec: dict, node: str) -> str:
    ns = f"ev-{uuid.uuid4().hex[:6]}"
    assert api_server.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})[0] == 201
    for i in range(pods):
        code, body = api_server.request("POST", f"/api/v1/namespaces/{ns}/pods",
                                        objects.pod(f"app-{i}", ns, node=node, labels={"app": "guarded"}))
        assert code == 201, body
    code, body = api_server.request("POST", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", {
        "metadata": {"name": "guard"}, "spec": {**pdb_spec, "selector": {"matchLabels": {"app": "guarded"}}}})
    assert code == 201, body
    return ns


def _evict(api_server, ns: str, name: str) -> tuple[int, dict]:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
    return api_server.request("POST", f"/api/v1/namespaces/{ns}/pods/{name}/eviction", body)


@pytest.mark.parametrize("round_", range(4))
def test_parallel_evictions_evict_exactly_the_allowed_number(api_server, objects, round_):
    pods = 5
    ns = _setup(api_server, objects, pods, {"minAvailable": 3}, node=f"n-{round_}")
    code, pdb = api_server.get(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/guard")
    assert pdb["status"]["disruptionsAllowed"] == 2 and pdb["status"]["currentHealthy"] == 5
    with ThreadPoolExecutor(max_workers=pods) as pool:
        results = list(pool.map(lambda i: _evict(api_server, ns, f"app-{i}"), range(pods)))
    codes = sorted(code for code, _ in results)
    assert codes == [201, 201, 429, 429, 429], results
    for code, body in results:
        if code == 429:
            assert body["reason"] == "TooManyRequests" and body["message"] == VIOLATION
            assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    code, listing = api_server.get(f"/api/v1/namespaces/{ns}/pods")
    terminating = [p for p in listing["items"] if p["metadata"].get("deletionTimestamp")]
    assert len(terminating) == 2  # pods on a node wait for their kubelet (grace period), as in Kubernetes
    code, pdb = api_server.get(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/guard")
    st = pdb["status"]
    assert (st["disruptionsAllowed"], st["desiredHealthy"], st["expectedPods"]) == (0, 3, 5)
    assert st["currentHealthy"] == 3 and len(st["disruptedPods"]) == 2


def test_kubectl_drain_respects_the_budget(api_server, objects):
    node = f"drain-{uuid.uuid4().hex[:5]}"
    ns = f"dr-{uuid.uuid4().hex[:6]}"
    assert api_server.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})[0] == 201
    assert api_server.request("POST", "/api/v1/nodes", objects.node(node))[0] == 201
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    code, rs = api_server.request("POST", f"/apis/apps/v1/namespaces/{ns}/replicasets", {
        "metadata": {"name": "web-1"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                                               "template": template}})
    assert code == 201
    code, ds = api_server.request("POST", f"/apis/apps/v1/namespaces/{ns}/daemonsets", {
        "metadata": {"name": "agent"}, "spec": {"selector": {"matchLabels": {"app": "agent"}},
                                               "template": {**template, "metadata": {"labels": {"app": "agent"}}}}})
    assert code == 201
    rs_ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": rs["metadata"]["uid"], "controller": True}
    ds_ref = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": ds["metadata"]["uid"], "controller": True}
    for i in range(3):
        pod = objects.pod(f"web-{i}", ns, node=node, labels={"app": "web"}, owner=rs_ref)
        assert api_server.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)[0] == 201
    agent = objects.pod("agent-x", ns, node=node, labels={"app": "agent"}, owner=ds_ref)
    assert api_server.request("POST", f"/api/v1/namespaces/{ns}/pods", agent)[0] == 201
    assert api_server.request("POST", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", {
        "metadata": {"name": "web"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}})[0] == 201

    proc = api_server.kubectl("drain", node, "--ignore-daemonsets", "--timeout=6s", check=False, timeout=60)
    assert proc.returncode != 0  # the budget blocks the other two (no replacement pods without controllers)
    assert "cordoned" in proc.stdout
    code, listing = api_server.get(f"/api/v1/namespaces/{ns}/pods")
    state = {p["metadata"]["name"]: bool(p["metadata"].get("deletionTimestamp")) for p in listing["items"]}
    assert sum(state[f"web-{i}"] for i in range(3)) == 1, (state, proc.stderr)
    assert state["agent-x"] is False  # DaemonSet pods are left alone with --ignore-daemonsets
    assert "Cannot evict pod as it would violate the pod's disruption budget" in proc.stderr + proc.stdout
    node_obj = json.loads(api_server.kubectl("get", "node", node, "-o", "json").stdout)
    assert node_obj["spec"]["unschedulable"] is True
