"""kubectl 1.37 (the one `make venv` installs) against the API stand-in backed by a real local etcd over TLS.

kubectl 1.20 and the watch and rollout paths of both ends are in test_kubeapi_clients.py.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from tests.waiting import wait_until, wait_value

pytestmark = pytest.mark.local


def _ns(api_server, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    code, body = api_server.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert code == 201, body
    return name


def _create(api_server, path: str, obj: dict) -> dict:
    code, body = api_server.request("POST", path, obj)
    assert code == 201, body
    return body


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines() if line.strip()]


def test_version_and_discovery(api_server, kubectl):
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.30.")
    assert version["serverVersion"]["major"] == "1" and version["serverVersion"]["minor"] == "30"
    assert version["clientVersion"]["minor"] == "37"  # the registry's kubectl, not whatever is on PATH
    core = json.loads(kubectl("get", "--raw", "/api/v1").stdout)
    assert core["groupVersion"] == "v1"
    eviction = next(r for r in core["resources"] if r["name"] == "pods/eviction")
    assert (eviction["group"], eviction["version"], eviction["kind"]) == ("policy", "v1", "Eviction")
    pods = next(r for r in core["resources"] if r["name"] == "pods")
    assert "po" in pods["shortNames"] and pods["namespaced"] is True and "watch" in pods["verbs"]
    assert any(r["name"] == "pods/log" for r in core["resources"])
    apps = json.loads(kubectl("get", "--raw", "/apis/apps/v1").stdout)
    assert {"deployments/scale", "deployments/status", "daemonsets"} <= {r["name"] for r in apps["resources"]}
    resources = kubectl("api-resources", "-o", "name").stdout.split()
    for name in ("nodes", "pods", "deployments.apps", "ingresses.networking.k8s.io",
                 "poddisruptionbudgets.policy", "leases.coordination.k8s.io"):
        assert name in resources
    for path in ("/healthz", "/readyz", "/livez"):
        assert kubectl("get", "--raw", path).stdout.strip() == "ok"
    # Initial objects of a fresh cluster.
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(
        kubectl("get", "ns", "-o", "name").stdout.replace("namespace/", "").split())
    svc = json.loads(kubectl("-n", "default", "get", "svc", "kubernetes", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "10.233.0.1"


def test_health_is_public_but_api_needs_a_client_certificate(api_server):
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(api_server.pki.ca_cert))
    with urllib.request.urlopen(api_server.url + "/healthz", context=ctx, timeout=5) as resp:
        assert resp.read() == b"ok"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(api_server.url + "/api/v1/nodes", context=ctx, timeout=5)
    assert err.value.code == 401


def test_get_nodes_columns_cordon_uncordon_delete(api_server, kubectl, objects):
    tag = uuid.uuid4().hex[:5]
    names = {f"cp-{tag}": dict(roles=("control-plane",)), f"dead-{tag}": dict(ready=None),
             f"wk-{tag}": dict(), f"off-{tag}": dict(unschedulable=True)}
    for name, kw in names.items():
        _create(api_server, "/api/v1/nodes", objects.node(name, **kw))
    out = kubectl("get", "nodes", *names).stdout
    rows = _rows(out)
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    table = {r[0]: r for r in rows[1:]}
    assert table[f"cp-{tag}"][1:3] == ["Ready", "control-plane"]
    assert table[f"dead-{tag}"][1:3] == ["NotReady", "<none>"]
    assert table[f"off-{tag}"][1] == "Ready,SchedulingDisabled"
    assert all(r[4] == "v1.30.6" for r in table.values())
    wide = _rows(kubectl("get", "nodes", f"wk-{tag}", "-o", "wide").stdout)
    assert wide[0][:7] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP"]
    assert wide[1][5] == "10.213.7.11"

    assert "cordoned" in kubectl("cordon", f"wk-{tag}").stdout
    assert _rows(kubectl("get", "node", f"wk-{tag}").stdout)[1][1] == "Ready,SchedulingDisabled"
    assert "uncordoned" in kubectl("uncordon", f"wk-{tag}").stdout
    assert _rows(kubectl("get", "node", f"wk-{tag}").stdout)[1][1] == "Ready"
    kubectl("delete", "node", f"dead-{tag}")
    gone = kubectl("get", "node", f"dead-{tag}", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_get_pods_all_namespaces_columns(api_server, kubectl, objects):
    ns1, ns2 = _ns(api_server), _ns(api_server)
    _create(api_server, f"/api/v1/namespaces/{ns1}/pods", objects.pod("web", ns1, node="node-a"))
    _create(api_server, f"/api/v1/namespaces/{ns2}/pods",
            objects.pod("coredns", ns2, node="node-b", waiting_reason="CrashLoopBackOff", restarts=4))
    rows = _rows(kubectl("get", "pods", "-A").stdout)
    assert rows[0] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    table = {(r[0], r[1]): r for r in rows[1:]}
    assert table[(ns1, "web")][2:5] == ["1/1", "Running", "0"]
    assert table[(ns2, "coredns")][2:5] == ["0/1", "CrashLoopBackOff", "4"]
    wide = _rows(kubectl("get", "pods", "-n", ns2, "-o", "wide").stdout)
    assert wide[0][:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert wide[1][5:7] == ["10.233.64.5", "node-b"]
    # Field selectors from the pods allow-list, as kubectl drain uses them.
    on_b = kubectl("get", "pods", "-A", "--field-selector", "spec.nodeName=node-b", "-o", "name").stdout.split()
    assert on_b == ["pod/coredns"]


def test_unsupported_field_selector_is_400(api_server, kubectl):
    proc = kubectl("get", "pods", "--field-selector", "spec.foo=bar", check=False)
    assert proc.returncode != 0
    assert "BadRequest" in proc.stderr and "field label not supported: spec.foo" in proc.stderr
    code, body = api_server.get("/api/v1/configmaps?fieldSelector=spec.nodeName%3Dx")
    assert code == 400 and body["reason"] == "BadRequest"


def test_cluster_info_read_edit_patch(api_server, kubectl, tmp_path: Path):
    kubeconfig = "apiVersion: v1\nclusters:\n- cluster:\n    server: https://10.213.7.11:6443\n  name: \"\"\n"
    kubectl("-n", "kube-public", "delete", "configmap", "cluster-info", "--ignore-not-found")
    # From a manifest: kubectl >= 1.32 sends `create configmap` as protobuf, which the stand-in does not read.
    manifest = tmp_path / "cluster-info.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "data": {"kubeconfig": kubeconfig},
                                    "metadata": {"name": "cluster-info", "namespace": "kube-public"}}))
    kubectl("create", "-f", str(manifest))
    read = kubectl("-n", "kube-public", "get", "cm", "cluster-info", "-o", "jsonpath={.data.kubeconfig}").stdout
    assert "server: https://10.213.7.11:6443" in read
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's#https://10.213.7.11:6443#https://10.213.7.12:6443#' \"$1\"\n")
    editor.chmod(0o755)
    out = kubectl("-n", "kube-public", "edit", "cm", "cluster-info", env={"KUBE_EDITOR": str(editor)}).stdout
    assert "edited" in out
    read = kubectl("-n", "kube-public", "get", "cm", "cluster-info", "-o", "jsonpath={.data.kubeconfig}").stdout
    assert "server: https://10.213.7.12:6443" in read
    patch = {"data": {"kubeconfig": kubeconfig.replace("10.213.7.11", "10.213.7.13")}}
    kubectl("-n", "kube-public", "patch", "cm", "cluster-info", "--type", "merge", "-p", json.dumps(patch))
    read = kubectl("-n", "kube-public", "get", "cm", "cluster-info", "-o", "jsonpath={.data.kubeconfig}").stdout
    assert "server: https://10.213.7.13:6443" in read
    kubectl("-n", "kube-public", "patch", "cm", "cluster-info", "--type", "json",
            "-p", '[{"op": "add", "path": "/metadata/labels", "value": {"edited": "yes"}}]')
    assert kubectl("-n", "kube-public", "get", "cm", "-l", "edited=yes", "-o", "name").stdout.strip() == "configmap/cluster-info"


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: testapp
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: testapp}}
  template:
    metadata:
      labels: {{app: testapp}}
    spec:
      containers:
      - name: testapp
        image: lab/testapp:1
        ports:
        - containerPort: 8080
        env:
        - name: GREETING
          value: hello
---
apiVersion: v1
kind: Service
metadata:
  name: testapp
  namespace: {ns}
spec:
  selector: {{app: testapp}}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: testapp
  namespace: {ns}
spec:
  rules:
  - host: testapp.lab.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: testapp
            port:
              number: 80
"""


def test_apply_then_reapply_is_unchanged(api_server, kubectl, tmp_path: Path):
    ns = _ns(api_server)
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFEST.format(ns=ns, replicas=3))
    first = kubectl("apply", "-f", str(manifest)).stdout
    assert first.split("\n")[:3] == [
        "deployment.apps/testapp created", "service/testapp created", "ingress.networking.k8s.io/testapp created"]
    again = kubectl("apply", "-f", str(manifest)).stdout
    assert again.count("unchanged") == 3, again
    manifest.write_text(MANIFEST.format(ns=ns, replicas=2))
    changed = kubectl("apply", "-f", str(manifest)).stdout
    assert "deployment.apps/testapp configured" in changed and "service/testapp unchanged" in changed
    deploy = json.loads(kubectl("-n", ns, "get", "deploy", "testapp", "-o", "json").stdout)
    assert deploy["spec"]["replicas"] == 2 and deploy["metadata"]["generation"] == 2
    svc = json.loads(kubectl("-n", ns, "get", "svc", "testapp", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"].startswith("10.233.") and svc["spec"]["ports"][0]["protocol"] == "TCP"
    # scale subresource
    kubectl("-n", ns, "scale", "deploy", "testapp", "--replicas=5")
    scale = json.loads(kubectl("get", "--raw", f"/apis/apps/v1/namespaces/{ns}/deployments/testapp/scale").stdout)
    assert scale["spec"]["replicas"] == 5 and scale["status"]["selector"] == "app=testapp"
    rows = _rows(kubectl("-n", ns, "get", "deploy,svc,ing").stdout)
    assert ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] in rows
    assert any(r[0] == "ingress.networking.k8s.io/testapp" and "testapp.lab.example" in r for r in rows)


def test_watch_sees_modified_event(api_server):
    from kubernetes import client, config, watch

    ns = _ns(api_server)
    api_client = config.new_client_from_config(str(api_server.kubeconfig))
    v1 = client.CoreV1Api(api_client)
    cm = v1.create_namespaced_config_map(ns, {"metadata": {"name": "watched"}, "data": {"a": "1"}})
    rv = cm.metadata.resource_version
    events: list[tuple[str, str]] = []

    def run() -> None:
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10):
            events.append((ev["type"], ev["object"].data.get("a")))
            if ev["type"] == "MODIFIED":
                w.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    v1.patch_namespaced_config_map("watched", ns, {"data": {"a": "2"}})
    thread.join(timeout=15)
    assert ("MODIFIED", "2") in events
    # A watch from a resourceVersion the store no longer has answers 410 in an ERROR event (etcd compaction
    # is tested with the memory store in the unit tests); an unparsable resourceVersion is a 500, as
    # kube-apiserver 1.30 answers it.
    code, body = api_server.get(f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion=abc&timeoutSeconds=1")
    assert code == 500 and "strconv.ParseUint" in body["message"]


def test_conflict_on_stale_resource_version(api_server):
    ns = _ns(api_server)
    cm = _create(api_server, f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c"}, "data": {"v": "1"}})
    stale = json.loads(json.dumps(cm))
    cm["data"]["v"] = "2"
    code, body = api_server.request("PUT", f"/api/v1/namespaces/{ns}/configmaps/c", cm)
    assert code == 200 and int(body["metadata"]["resourceVersion"]) > int(stale["metadata"]["resourceVersion"])
    stale["data"]["v"] = "3"
    code, body = api_server.request("PUT", f"/api/v1/namespaces/{ns}/configmaps/c", stale)
    assert code == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    code, body = api_server.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c"}})
    assert code == 409 and body["reason"] == "AlreadyExists"
    code, body = api_server.request("POST", "/api/v1/namespaces/missing-ns/configmaps", {"metadata": {"name": "c"}})
    assert code == 404 and body["details"]["kind"] == "namespaces"
    code, body = api_server.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"generateName": "gen-"}})
    assert code == 201 and body["metadata"]["name"].startswith("gen-") and len(body["metadata"]["name"]) == 9


def test_finalizers_hold_deletion(api_server, kubectl):
    ns = _ns(api_server)
    _create(api_server, f"/api/v1/namespaces/{ns}/configmaps",
            {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    kubectl("-n", ns, "delete", "cm", "held", "--wait=false")
    held = json.loads(kubectl("-n", ns, "get", "cm", "held", "-o", "json").stdout)
    assert held["metadata"]["deletionTimestamp"]
    kubectl("-n", ns, "patch", "cm", "held", "--type", "merge", "-p", '{"metadata":{"finalizers":null}}')
    assert kubectl("-n", ns, "get", "cm", "held", check=False).returncode != 0


def test_owner_garbage_collection(api_server, objects):
    ns = _ns(api_server)
    owner = _create(api_server, f"/apis/apps/v1/namespaces/{ns}/replicasets", {
        "metadata": {"name": "rs"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": owner["metadata"]["uid"],
           "controller": True, "blockOwnerDeletion": True}
    for i in range(2):
        _create(api_server, f"/api/v1/namespaces/{ns}/pods", objects.pod(f"p{i}", ns, labels={"a": "b"}, owner=ref))
    orphan_owner = _create(api_server, f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "owner2"}})
    ref2 = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": orphan_owner["metadata"]["uid"]}
    _create(api_server, f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "kept", "ownerReferences": [ref2]}})

    code, _ = api_server.request("DELETE", f"/apis/apps/v1/namespaces/{ns}/replicasets/rs")
    assert code == 200
    def pods_left() -> tuple[bool, str]:
        code, body = api_server.get(f"/api/v1/namespaces/{ns}/pods")
        names = [p["metadata"]["name"] for p in body.get("items", [])] if code == 200 else []
        return code == 200 and not names, f"HTTP {code}, pods {names}"

    wait_until(pods_left, 15, "the dependent pods to be garbage collected", 0.2)

    code, _ = api_server.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps/owner2?propagationPolicy=Orphan")
    assert code == 200
    code, kept = api_server.get(f"/api/v1/namespaces/{ns}/configmaps/kept")
    assert code == 200 and not kept["metadata"].get("ownerReferences")


def test_pod_log_stored_by_kubelet_is_served(api_server, kubectl, objects):
    ns = _ns(api_server)
    _create(api_server, f"/api/v1/namespaces/{ns}/pods", objects.pod("logger", ns))
    text = "".join(f"line {i}\n" for i in range(10))
    code, _ = api_server.request("PUT", f"/api/v1/namespaces/{ns}/pods/logger/log?container=app", text.encode(),
                                 content_type="text/plain")
    assert code == 200
    assert kubectl("-n", ns, "logs", "logger").stdout == text
    assert kubectl("-n", ns, "logs", "logger", "--tail=2").stdout == "line 8\nline 9\n"


def test_controllers_start_in_process_with_their_own_certificate(api_server_factory, kube_pki):
    """--controllers-ca-key: the server issues the controllers' client cert; they elect a leader and act."""
    server = api_server_factory(extra_args=["--controllers", f"--controllers-ca-key={kube_pki.ca_key}",
                                            "--node-monitor-grace-period=5s"])

    def found(path: str, non_empty: bool = False) -> dict | None:
        code, body = server.get(path)
        return body if code == 200 and (body.get("items") or not non_empty) else None

    lease = wait_value(lambda: found("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"),
                       30, "the controllers' lease", 0.3)
    assert lease and lease["spec"]["holderIdentity"], server.log_tail()
    template = {"metadata": {"labels": {"app": "c"}}, "spec": {"containers": [{"name": "c", "image": "lab/testapp:1"}]}}
    code, _ = server.request("POST", "/apis/apps/v1/namespaces/default/deployments", {
        "metadata": {"name": "c"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "c"}}, "template": template}})
    assert code == 201
    rs = wait_value(lambda: found("/apis/apps/v1/namespaces/default/replicasets", non_empty=True), 30,
                    "the Deployment's ReplicaSet", 0.3)
    assert rs["items"] and rs["items"][0]["spec"]["replicas"] == 2, server.log_tail()
    assert "controllers started as" in server.log_path.read_text()


def test_create_from_a_list_manifest_uses_the_openapi_v2_stub(api_server, kubectl, tmp_path: Path):
    """kubectl validates `kind: List` against /openapi/v2 (protobuf); the empty document lets it through."""
    ns = _ns(api_server)
    doc = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"l{i}", "namespace": ns}} for i in range(2)]}
    path = tmp_path / "list.json"
    path.write_text(json.dumps(doc))
    out = kubectl("create", "-f", str(path)).stdout
    assert out.split() == ["configmap/l0", "created", "configmap/l1", "created"]
