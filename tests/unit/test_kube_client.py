"""kube: the official client's transport with a fake REST layer, and manifest edits via MockConnection.

FakeApiServer replaces the ApiClient's REST client, so requests go through
the real kubernetes client (paths, headers, serialization) without a network.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import kubernetes
import pytest
import yaml

from runbooks_lib import errors, kube, ssh

DATA = Path(__file__).resolve().parent.parent / "data" / "kube"


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class _Response:
    def __init__(self, status: int, doc: dict) -> None:
        self.status = status
        self.reason = "OK" if status < 400 else "Error"
        self.data = json.dumps(doc).encode()
        self.headers = {"Content-Type": "application/json"}

    def read(self) -> bytes:
        return self.data


class FakeApiServer:
    """Objects by API path; eviction answers scripted per pod; records every request."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict, object]] = []
        self.evictions: dict[str, list[tuple[int, str]]] = {}  # "ns/name" -> scripted answers
        self.eviction_delay = 0.0
        self.inflight = 0
        self.max_inflight = 0
        self.on_get_nodes = None
        self._lock = threading.Lock()

    def add(self, path: str, obj: dict) -> None:
        self.objects[path] = obj

    def _list(self, prefix: str, kind: str, field: str | None) -> dict:
        items = []
        for path, obj in sorted(self.objects.items()):
            head, _, name = path.rpartition("/")
            if head == prefix or (prefix == "/api/v1/pods" and head.startswith("/api/v1/namespaces/") and head.endswith("/pods")):
                if field and obj.get("spec", {}).get("nodeName") != field.split("=", 1)[1]:
                    continue
                items.append(obj)
        return {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}

    def request(self, method, url, headers=None, body=None, post_params=None, _request_timeout=None):
        parts = urlsplit(url)
        path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append((method, path, dict(headers or {}), copy.deepcopy(body)))
        assert _request_timeout, "every request must carry a timeout"
        if path.endswith("/eviction"):
            return self._evict(path)
        if method == "GET":
            if path == "/api/v1/nodes" and self.on_get_nodes:
                self.on_get_nodes(self)
            if path in self.objects:
                return _Response(200, self.objects[path])
            if path in ("/api/v1/nodes", "/api/v1/pods") or path.endswith("/pods"):
                return _Response(200, self._list(path, "List", query.get("fieldSelector")))
            return _Response(404, {"kind": "Status", "reason": "NotFound", "message": f"{path} not found"})
        if method == "PATCH":
            assert headers["Content-Type"] == "application/merge-patch+json"
            if path not in self.objects:
                return _Response(404, {"reason": "NotFound", "message": "not found"})
            self.objects[path] = merge_patch(self.objects[path], body)
            return _Response(200, self.objects[path])
        if method == "DELETE":
            if self.objects.pop(path, None) is None:
                return _Response(404, {"reason": "NotFound", "message": "not found"})
            return _Response(200, {"kind": "Status", "status": "Success"})
        if method == "POST":
            obj_path = f"{path}/{body['metadata']['name']}"
            if obj_path in self.objects:
                return _Response(409, {"reason": "AlreadyExists", "message": "exists"})
            self.objects[obj_path] = copy.deepcopy(body)
            return _Response(201, body)
        raise AssertionError(f"unexpected {method} {path}")

    def _evict(self, path: str) -> _Response:
        ns, name = path.split("/")[4], path.split("/")[6]
        key = f"{ns}/{name}"
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            time.sleep(self.eviction_delay)
            script = self.evictions.get(key) or [(201, "")]
            status, message = script.pop(0) if len(script) > 1 else script[0]
            if status == 201:
                self.objects.pop(f"/api/v1/namespaces/{ns}/pods/{name}", None)
                return _Response(201, {"kind": "Status", "status": "Success"})
            return _Response(status, {"kind": "Status", "reason": "TooManyRequests", "message": message})
        finally:
            with self._lock:
                self.inflight -= 1


@pytest.fixture
def fake() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def api(fake: FakeApiServer) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    cfg.host = "https://127.0.0.1:6443"
    client = kubernetes.client.ApiClient(cfg)
    client.rest_client = fake
    return client


def make_node(name: str, ready: str = "True", *, roles=("control-plane",), taints=(), unschedulable=False) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {f"node-role.kubernetes.io/{r}": "" for r in roles}},
        "spec": {"taints": [dict(t) for t in taints], **({"unschedulable": True} if unschedulable else {})},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}],
            "addresses": [{"type": "InternalIP", "address": f"10.0.0.{name[-1]}"}],
            "nodeInfo": {"kubeletVersion": "v1.30.4"},
        },
    }


def make_pod(name: str, node: str, *, ns="default", owner: str | None = "ReplicaSet", mirror=False,
             waiting: str | None = None, restarts=0, ready=True) -> dict:
    meta = {"name": name, "namespace": ns}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": node},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "c", "restartCount": restarts, "state": state}],
        },
    }


def add_pod(fake: FakeApiServer, pod: dict) -> None:
    m = pod["metadata"]
    fake.add(f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}", pod)


# -- client -----------------------------------------------------------------------------


def test_client_from_kubeconfig_keeps_tls_verification_when_switching_server(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "admin@cluster.local",
        "clusters": [{"name": "cluster.local", "cluster": {"server": "https://10.0.0.1:6443", "certificate-authority": str(ca)}}],
        "contexts": [{"name": "admin@cluster.local", "context": {"cluster": "cluster.local", "user": "admin"}}],
        "users": [{"name": "admin", "user": {"token": "abc"}}],
    }))
    default = kube.client_from_kubeconfig(str(kubeconfig))
    assert default.configuration.host == "https://10.0.0.1:6443"
    switched = kube.client_from_kubeconfig(str(kubeconfig), server="https://10.0.0.2:6443/")
    assert switched.configuration.host == "https://10.0.0.2:6443"
    assert switched.configuration.verify_ssl is True and switched.configuration.ssl_ca_cert == str(ca)
    assert switched.configuration.retries == 0


def test_unanswered_api_is_host_unreachable() -> None:
    cfg = kubernetes.client.Configuration()
    cfg.host = "https://127.0.0.1:9"  # discard port: nothing listens
    cfg.retries = 0
    with pytest.raises(errors.HostUnreachable, match="did not answer"):
        kube.nodes(kubernetes.client.ApiClient(cfg), timeout=2)


# -- nodes ---------------------------------------------------------------------------------


def test_nodes_roles_taints_readiness(fake: FakeApiServer, api) -> None:
    fake.add("/api/v1/nodes/node1", make_node("node1", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]))
    fake.add("/api/v1/nodes/node3", make_node("node3", "Unknown", roles=(), unschedulable=True, taints=[
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]))
    n1, n3 = kube.nodes(api)
    assert n1.roles == ("control-plane",) and n1.is_ready and n1.status == "Ready"
    assert str(n1.taints[0]) == "node-role.kubernetes.io/control-plane:NoSchedule"
    assert n3.ready == "Unknown" and n3.status == "NotReady,SchedulingDisabled" and n3.roles == ()
    assert n3.internal_ip == "10.0.0.3" and n3.kubelet_version == "v1.30.4"
    assert kube.node(api, "nodeX") is None


def test_wait_for_nodes_until_notready_and_absent(fake: FakeApiServer, api) -> None:
    fake.add("/api/v1/nodes/node1", make_node("node1"))
    fake.add("/api/v1/nodes/node2", make_node("node2"))
    calls = {"n": 0}

    def progress(server: FakeApiServer) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            server.objects["/api/v1/nodes/node2"]["status"]["conditions"][1]["status"] = "Unknown"

    fake.on_get_nodes = progress
    found = kube.wait_for_nodes(api, ["node2"], "NotReady", timeout=5, interval=0.05)
    assert found["node2"].ready == "Unknown" and calls["n"] == 3
    assert kube.wait_for_nodes(api, ["node9"], "absent", timeout=1)["node9"] is None


def test_wait_for_nodes_timeout_names_pending_nodes(fake: FakeApiServer, api) -> None:
    fake.add("/api/v1/nodes/node1", make_node("node1"))
    fake.add("/api/v1/nodes/node2", make_node("node2", "False"))
    start = time.monotonic()
    with pytest.raises(errors.WaitTimedOut) as info:
        kube.wait_for_nodes(api, ["node1", "node2", "node4"], "Ready", timeout=0.5, interval=0.1)
    assert time.monotonic() - start < 2
    assert "node2 is NotReady" in str(info.value) and "node4 is absent" in str(info.value)
    assert "node1 is" not in str(info.value)
    with pytest.raises(errors.BadParameters):
        kube.wait_for_nodes(api, ["node1"], "Gone", timeout=1)


def test_cordon_uncordon_delete(fake: FakeApiServer, api) -> None:
    fake.add("/api/v1/nodes/node1", make_node("node1"))
    assert kube.cordon(api, "node1") is True
    assert fake.objects["/api/v1/nodes/node1"]["spec"]["unschedulable"] is True
    assert kube.cordon(api, "node1") is False
    assert kube.uncordon(api, "node1") is True
    assert "unschedulable" not in fake.objects["/api/v1/nodes/node1"]["spec"]
    with pytest.raises(errors.PreconditionFailed):
        kube.cordon(api, "node7")
    assert kube.delete_node(api, "node1") is True and kube.delete_node(api, "node1") is False


# -- drain -----------------------------------------------------------------------------------


PDB_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."


def test_drain_skips_daemonsets_and_mirrors_honours_pdb(fake: FakeApiServer, api) -> None:
    fake.add("/api/v1/nodes/node2", make_node("node2", roles=()))
    add_pod(fake, make_pod("calico-node-x", "node2", ns="kube-system", owner="DaemonSet"))
    add_pod(fake, make_pod("nginx-proxy-node2", "node2", ns="kube-system", owner="Node", mirror=True))
    add_pod(fake, make_pod("web-1", "node2"))
    add_pod(fake, make_pod("web-2", "node2"))
    add_pod(fake, make_pod("db-0", "node2", owner="StatefulSet"))
    add_pod(fake, make_pod("elsewhere", "node1"))
    fake.evictions["default/web-2"] = [(429, PDB_MESSAGE), (429, PDB_MESSAGE), (201, "")]
    fake.evictions["default/db-0"] = [(429, PDB_MESSAGE)]
    result = kube.drain(api, "node2", timeout=1.5, retry_interval=0.1, check=False)
    assert result.evicted == ("default/web-1", "default/web-2")
    assert result.skipped_daemonset == ("kube-system/calico-node-x",)
    assert result.skipped_mirror == ("kube-system/nginx-proxy-node2",)
    assert result.failed == (("default/db-0", f"HTTP 429: {PDB_MESSAGE}"),) and not result.ok
    assert fake.objects["/api/v1/nodes/node2"]["spec"]["unschedulable"] is True  # cordoned first
    assert "/api/v1/namespaces/default/pods/elsewhere" in fake.objects
    evictions = [r for r in fake.requests if r[1].endswith("/eviction")]
    assert all(r[3]["apiVersion"] == "policy/v1" and r[3]["kind"] == "Eviction" for r in evictions)
    assert not any(r[0] == "DELETE" for r in fake.requests)  # never bypasses PDBs with DELETE


def test_drain_raises_with_result_and_refuses_unmanaged_pods(fake: FakeApiServer, api) -> None:
    fake.add("/api/v1/nodes/node2", make_node("node2", roles=()))
    add_pod(fake, make_pod("bare", "node2", owner=None))
    with pytest.raises(errors.WaitTimedOut) as info:
        kube.drain(api, "node2", timeout=1)
    assert "default/bare: not managed by a controller" in str(info.value)
    assert info.value.result.failed[0][0] == "default/bare"  # type: ignore[attr-defined]
    assert "/api/v1/namespaces/default/pods/bare" in fake.objects
    forced = kube.drain(api, "node2", timeout=1, force=True)
    assert forced.evicted == ("default/bare",) and forced.ok


def test_drain_evicts_in_parallel(fake: FakeApiServer, api) -> None:
    fake.add("/api/v1/nodes/node2", make_node("node2", roles=()))
    for i in range(6):
        add_pod(fake, make_pod(f"web-{i}", "node2"))
    fake.eviction_delay = 0.3
    start = time.monotonic()
    result = kube.drain(api, "node2", timeout=10, max_parallel=6)
    assert len(result.evicted) == 6 and fake.max_inflight >= 3
    assert time.monotonic() - start < 1.5


# -- cluster-info ----------------------------------------------------------------------------------

CLUSTER_INFO_KUBECONFIG = """apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTi0tLS0t
    server: https://10.0.0.1:6443
  name: ""
contexts: null
current-context: ""
kind: Config
preferences: {}
users: null
"""


def test_cluster_info_server_read_and_patch(fake: FakeApiServer, api) -> None:
    fake.add("/api/v1/namespaces/kube-public/configmaps/cluster-info", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cluster-info", "namespace": "kube-public", "resourceVersion": "42"},
        "data": {"kubeconfig": CLUSTER_INFO_KUBECONFIG, "jws-kubeconfig-abcdef": "sig"},
    })
    assert kube.cluster_info_server(api) == "https://10.0.0.1:6443"
    change = kube.set_cluster_info_server(api, "https://10.0.0.2:6443")
    assert (change.old, change.new, change.changed) == ("https://10.0.0.1:6443", "https://10.0.0.2:6443", True)
    stored = fake.objects["/api/v1/namespaces/kube-public/configmaps/cluster-info"]
    assert stored["data"]["kubeconfig"] == CLUSTER_INFO_KUBECONFIG.replace("10.0.0.1", "10.0.0.2")
    assert stored["data"]["jws-kubeconfig-abcdef"] == "sig"
    patch = [r for r in fake.requests if r[0] == "PATCH"][0][3]
    assert patch["metadata"]["resourceVersion"] == "42"  # concurrent edits fail instead of being lost
    before = len(fake.requests)
    assert not kube.set_cluster_info_server(api, "https://10.0.0.2:6443").changed
    assert [r[0] for r in fake.requests[before:]] == ["GET"]
    with pytest.raises(errors.BadParameters):
        kube.set_cluster_info_server(api, "10.0.0.2:6443")


# -- kube-system health ----------------------------------------------------------------------------


def test_pod_health_detects_crashloop(fake: FakeApiServer, api) -> None:
    add_pod(fake, make_pod("coredns-1", "node1", ns="kube-system", waiting="CrashLoopBackOff", restarts=7, ready=False))
    add_pod(fake, make_pod("kube-proxy-a", "node1", ns="kube-system", owner="DaemonSet"))
    add_pod(fake, make_pod("kube-proxy-b", "node2", ns="kube-system", owner="DaemonSet"))
    pods = kube.pod_health(api)
    grouped = kube.by_node(pods)
    assert sorted(grouped) == ["node1", "node2"] and len(grouped["node1"]) == 2
    bad = kube.crash_looping(pods)
    assert [p.name for p in bad] == ["coredns-1"]
    assert bad[0].restarts == 7 and not bad[0].ready and not bad[0].healthy
    assert all(p.healthy for p in pods if p.name.startswith("kube-proxy"))


def test_pod_health_of_real_shaped_pod() -> None:
    pod = json.loads((DATA / "pod_crashloop.json").read_text())
    health = kube.pod_health_of(pod)
    assert health.crash_looping and health.restarts == 5 and health.owner_kind == "ReplicaSet"
    assert health.node == "node1" and health.phase == "Running" and not health.ready


# -- apply -------------------------------------------------------------------------------------------

MANIFEST = """
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: testapp:1
"""


def test_apply_is_idempotent(fake: FakeApiServer, api) -> None:
    first = kube.apply(api, MANIFEST)
    assert [(a.kind, a.namespace, a.name, a.action) for a in first] == [
        ("Namespace", None, "demo", "created"), ("Deployment", "demo", "web", "created")]
    # the server adds fields; the manifest's own fields are what is compared
    dep = fake.objects["/apis/apps/v1/namespaces/demo/deployments/web"]
    dep["metadata"]["uid"] = "u1"
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    assert [a.action for a in kube.apply(api, MANIFEST)] == ["unchanged", "unchanged"]
    changed = kube.apply(api, MANIFEST.replace("replicas: 2", "replicas: 3"))
    assert [a.action for a in changed] == ["unchanged", "configured"]
    assert fake.objects["/apis/apps/v1/namespaces/demo/deployments/web"]["spec"]["replicas"] == 3
    with pytest.raises(errors.BadParameters):
        kube.apply(api, {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
