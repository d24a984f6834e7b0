"""The official Python client at both ends of the pinned range reads every kind the stand-in writes.

37.x (in the venv) validates responses strictly (pydantic): objects with
missing fields make it raise. 36.x is installed by `make venv` into
.venv/tools/kubernetes-36 and run in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.local

CLIENT36_DIR = Path(sys.prefix) / "tools" / "kubernetes-36"  # installed by `make venv`


def _populate(api_server, objects) -> str:
    """Create one object of every kind, with only the fields a user would write."""
    ns = f"cl-{uuid.uuid4().hex[:6]}"
    req = api_server.request
    assert req("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})[0] == 201
    assert req("POST", "/api/v1/nodes", objects.node(f"node-{ns}"))[0] == 201
    template = {"metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "lab/testapp:1", "ports": [{"containerPort": 8080}]}]}}
    created = [
        ("/api/v1", "pods", objects.pod("p", ns, node=f"node-{ns}", waiting_reason="CrashLoopBackOff", restarts=2)),
        ("/api/v1", "pods", {"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        ("/api/v1", "configmaps", {"metadata": {"name": "cm"}, "data": {"k": "v"}}),
        ("/api/v1", "secrets", {"metadata": {"name": "s"}, "stringData": {"k": "v"}}),
        ("/api/v1", "services", {"metadata": {"name": "svc"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}),
        ("/api/v1", "services", {"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
        ("/api/v1", "endpoints", {"metadata": {"name": "svc"},
                                  "subsets": [{"addresses": [{"ip": "10.233.64.5"}], "ports": [{"port": 8080}]}]}),
        ("/api/v1", "events", {"metadata": {"name": "ev"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": ns},
                               "reason": "Started", "message": "started", "type": "Normal"}),
        ("/apis/apps/v1", "deployments", {"metadata": {"name": "d"},
                                          "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ("/apis/apps/v1", "replicasets", {"metadata": {"name": "rs"},
                                          "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ("/apis/apps/v1", "daemonsets", {"metadata": {"name": "ds"},
                                         "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}}),
        ("/apis/networking.k8s.io/v1", "ingresses", {"metadata": {"name": "ing"}, "spec": {"rules": [{"host": "a.example", "http": {
            "paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"number": 80}}}}]}}]}}),
        ("/apis/policy/v1", "poddisruptionbudgets", {"metadata": {"name": "pdb"},
                                                     "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "x"}}}}),
        ("/apis/coordination.k8s.io/v1", "leases", {"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}}),
    ]
    for prefix, plural, body in created:
        code, answer = req("POST", f"{prefix}/namespaces/{ns}/{plural}", body)
        assert code == 201, (plural, answer)
    return ns


def test_client_37_reads_every_kind(api_server, objects):
    from kubernetes import client, config

    assert client.__version__.startswith("37.") if hasattr(client, "__version__") else True
    ns = _populate(api_server, objects)
    api = config.new_client_from_config(str(api_server.kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    nodes = core.list_node().items
    assert f"node-{ns}" in {n.metadata.name for n in nodes}
    node = core.read_node(f"node-{ns}")
    assert node.status.node_info.kubelet_version == "v1.30.6" and node.status.node_info.boot_id == "b"
    pods = core.list_pod_for_all_namespaces().items
    mine = {p.metadata.name: p for p in pods if p.metadata.namespace == ns}
    assert mine["p"].status.container_statuses[0].state.waiting.reason == "CrashLoopBackOff"
    assert mine["bare"].status.phase == "Pending" and mine["bare"].spec.containers[0].image_pull_policy == "Always"
    assert core.read_namespaced_config_map("cm", ns).data == {"k": "v"}
    assert core.list_namespace().items
    svc = core.read_namespaced_service("svc", ns)
    assert svc.spec.cluster_ip.startswith("10.233.") and svc.spec.ports[0].target_port == 80
    assert 30000 <= core.read_namespaced_service("np", ns).spec.ports[0].node_port <= 32767
    assert core.read_namespaced_endpoints("svc", ns).subsets[0].addresses[0].ip == "10.233.64.5"
    assert core.list_namespaced_event(ns).items[0].reason == "Started"
    assert core.read_namespaced_secret("s", ns) is not None
    deploy = apps.read_namespaced_deployment("d", ns)
    assert deploy.spec.replicas == 1 and deploy.spec.strategy.type == "RollingUpdate"
    assert apps.read_namespaced_daemon_set("ds", ns).status.desired_number_scheduled == 0
    assert apps.read_namespaced_replica_set("rs", ns).status.replicas == 0
    assert apps.read_namespaced_deployment_scale("d", ns).spec.replicas == 1
    assert client.NetworkingV1Api(api).read_namespaced_ingress("ing", ns).spec.rules[0].host == "a.example"
    pdb = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("pdb", ns)
    assert pdb.status.expected_pods == 0 and pdb.status.disruptions_allowed == 0
    assert client.CoordinationV1Api(api).read_namespaced_lease("l", ns).spec.holder_identity == "me"
    assert client.VersionApi(api).get_code().git_version.startswith("v1.30.")


def _client36() -> Path:
    if not (CLIENT36_DIR / "kubernetes" / "__init__.py").exists():
        pytest.fail(f"{CLIENT36_DIR} is missing: `make venv` installs the Python client 36.x there")
    return CLIENT36_DIR


def test_client_36_reads_nodes_pods_and_configmaps(api_server, objects):
    ns = _populate(api_server, objects)
    target = _client36()
    script = textwrap.dedent(f"""
        import kubernetes
        from kubernetes import client, config
        assert kubernetes.__version__.startswith("36."), kubernetes.__version__
        api = config.new_client_from_config({str(api_server.kubeconfig)!r})
        core = client.CoreV1Api(api)
        names = {{n.metadata.name for n in core.list_node().items}}
        assert "node-{ns}" in names, names
        pods = {{(p.metadata.namespace, p.metadata.name) for p in core.list_pod_for_all_namespaces().items}}
        assert ("{ns}", "p") in pods, pods
        assert core.read_namespaced_config_map("cm", "{ns}").data == {{"k": "v"}}
        assert client.AppsV1Api(api).read_namespaced_deployment("d", "{ns}").spec.replicas == 1
        print("client", kubernetes.__version__, "ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("client 36.")
