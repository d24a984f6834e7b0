"""Pure parts of the API stand-in: selectors, patches, printing, discovery, flags, certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat

import pytest
import yaml
from cryptography import x509

from runbooks_lib.errors import BadParameters
from runbooks_lib.lab.kubeapi import config, discovery, patch, pki, selectors, tables


# -- selectors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("tier in (a, b),app", {"tier": "b", "app": "x"}, True),
        ("tier notin (a,b)", {"tier": "a"}, False),
        ("!legacy", {"legacy": "1"}, False),
        ("!legacy,app=web", {"app": "web"}, True),
    ],
)
def test_label_selectors(selector, labels, expected):
    assert selectors.matches(selectors.parse_label_selector(selector), labels) is expected


def test_label_selector_syntax_error():
    with pytest.raises(selectors.SelectorError):
        selectors.parse_label_selector("app in")


def test_field_selector_allow_list_and_matching():
    reqs = selectors.parse_field_selector("spec.nodeName=n1,status.phase!=Failed", ("spec.nodeName", "status.phase"))
    match = selectors.field_matcher(reqs)
    assert match({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    assert not match({"spec": {"nodeName": "n1"}, "status": {"phase": "Failed"}})
    with pytest.raises(selectors.SelectorError, match="field label not supported: spec.foo"):
        selectors.parse_field_selector("spec.foo=1", ("metadata.name",))
    unsched = selectors.field_matcher(selectors.parse_field_selector("spec.unschedulable=false", ("spec.unschedulable",)))
    assert unsched({"spec": {}})


def test_label_selector_object():
    sel = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}
    reqs = selectors.selector_from_label_selector(sel)
    assert selectors.matches(reqs, {"app": "web", "tier": "a"})
    assert not selectors.matches(reqs, {"app": "web"})
    assert selectors.matches(selectors.selector_from_label_selector(None), {"a": "b"}) is False
    assert selectors.label_selector_string(sel) == "app=web,tier in (a)"


# -- patches ---------------------------------------------------------------------------------------------


def _deploy() -> dict:
    return {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}], "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "b:1"},
    ]}}}, "metadata": {"finalizers": ["f1"], "labels": {"k": "v"}}}


def test_strategic_merge_merges_containers_by_name():
    p = {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}
    out = patch.strategic_merge(_deploy(), p)
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["a", "b"] and containers[1]["image"] == "b:2"
    assert containers[0]["env"] == [{"name": "X", "value": "1"}]


def test_strategic_merge_directives():
    p = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
        "containers": [{"name": "a", "$patch": "delete"}, {"name": "c", "image": "c:1"}]}}},
        "metadata": {"finalizers": ["f2"], "$deleteFromPrimitiveList/finalizers": ["f1"], "labels": {"k": None}}}
    out = patch.strategic_merge(_deploy(), p)
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["b", "c"]
    assert out["metadata"]["finalizers"] == ["f2"] and out["metadata"]["labels"] == {}


def test_strategic_merge_replaces_lists_without_merge_key():
    node = {"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]}}
    out = patch.strategic_merge(node, {"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}})
    assert out["spec"]["taints"] == [{"key": "b", "effect": "NoSchedule"}]  # `kubectl taint node n a-` works


def test_merge_and_json_patch():
    assert patch.apply_patch("merge", {"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    out = patch.apply_patch("json", {"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}])
    assert out == {"a": [1, 2]}
    with pytest.raises(patch.PatchError):
        patch.apply_patch("json", {"a": 1}, [{"op": "test", "path": "/a", "value": 2}])


# -- printing --------------------------------------------------------------------------------------------


def _pod(statuses: list[dict], deleting: bool = False) -> dict:
    meta = {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2020-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"name": "c"}] * len(statuses)},
            "status": {"phase": "Running", "containerStatuses": statuses}}


def test_pod_status_column():
    crash = {"name": "c", "ready": False, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    running = {"name": "c", "ready": True, "restartCount": 0, "state": {"running": {}}}
    assert tables.pod_status_reason(_pod([crash])) == "CrashLoopBackOff"
    assert tables.pod_status_reason(_pod([running])) == "Running"
    assert tables.pod_status_reason(_pod([running], deleting=True)) == "Terminating"
    done = {"name": "c", "ready": False, "restartCount": 0, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
    assert tables.pod_status_reason(_pod([done])) == "Completed"
    row = tables.table("Pod", [_pod([crash, running])])["rows"][0]
    assert row["cells"][1:4] == ["1/2", "CrashLoopBackOff", "3"]
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "p"


def test_node_status_and_roles():
    node = {"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": True}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert tables.node_status(node) == "NotReady,SchedulingDisabled"
    assert tables.node_roles(node) == "control-plane"
    assert tables.node_status({"metadata": {}}) == "Unknown"


@pytest.mark.parametrize("seconds, text", [(5, "5s"), (150, "2m30s"), (600, "10m"), (3 * 3600 + 60, "3h1m"),
                                           (30 * 3600, "30h"), (3 * 86400, "3d"), (400 * 86400, "400d")])
def test_human_duration(seconds, text):
    assert tables.human_duration(seconds) == text


def test_generic_table_has_name_and_age():
    t = tables.table("ConfigMap", [{"metadata": {"name": "x", "creationTimestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}}])
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Age"]
    assert t["rows"][0]["cells"][0] == "x"


# -- discovery -------------------------------------------------------------------------------------------


def test_discovery_documents():
    assert discovery.version()["gitVersion"].startswith("v1.30.")
    core = discovery.resource_list("", "v1")
    evict = next(r for r in core["resources"] if r["name"] == "pods/eviction")
    assert (evict["group"], evict["version"]) == ("policy", "v1")
    assert discovery.resource_list("apps", "v2") is None
    root = discovery.openapi_v3_root()["paths"]
    assert "api/v1" in root and "apis/apps/v1" in root
    doc = discovery.openapi_v3_gv("apps/v1")
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert any(p["name"] == "fieldValidation" for p in op["parameters"])
    assert discovery.openapi_v2_protobuf().startswith(b"\x0a\x032.0")


# -- flags and manifest ----------------------------------------------------------------------------------


def _write_manifest(path, command) -> None:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"command": command}]}}))


def test_manifest_flags_and_command_line_override(tmp_path):
    manifest = tmp_path / "kube-apiserver.yaml"
    _write_manifest(manifest, ["kube-apiserver", "--etcd-servers=https://10.0.0.1:2379,https://10.0.0.2:2379",
                               "--secure-port=6443", "--authorization-mode=Node,RBAC", "--advertise-address=10.0.0.1",
                               "--etcd-cafile=/etc/ssl/etcd/ssl/ca.pem"])
    cfg = config.parse_serve_args([f"--manifest={manifest}", "--secure-port=7443", "--no-controllers"])
    assert cfg.etcd_servers == ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
    assert cfg.secure_port == 7443 and cfg.advertise_address == "10.0.0.1" and cfg.controllers is False
    assert cfg.etcd_cafile == "/etc/ssl/etcd/ssl/ca.pem" and cfg.node_monitor_grace_period == 40.0


def test_flag_errors(tmp_path):
    with pytest.raises(BadParameters, match="--etcd-servers is required"):
        config.parse_serve_args([])
    with pytest.raises(BadParameters, match="cannot read kube-apiserver flags"):
        config.parse_serve_args([f"--manifest={tmp_path / 'missing.yaml'}"])
    cfg = config.parse_serve_args(["--storage=memory", "--node-monitor-grace-period=1m30s"])
    assert cfg.node_monitor_grace_period == 90.0


def test_etcd_endpoints_from_urls():
    from runbooks_lib.lab.kubeapi.etcdstore import endpoints_from_urls

    assert endpoints_from_urls(["https://10.0.0.1:2379", "127.0.0.1:22379"]) == ["10.0.0.1:2379", "127.0.0.1:22379"]
    with pytest.raises(BadParameters):
        endpoints_from_urls(["https://10.0.0.1"])


# -- certificates ----------------------------------------------------------------------------------------


def test_pki_init_writes_private_files_and_sans(tmp_path):
    paths = pki.init_dir(tmp_path / "pki", ips=["10.213.7.11", "127.0.0.1"])
    for key in (paths.ca_key, paths.server_key, paths.admin_key, paths.admin_kubeconfig):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"kubernetes", "kubernetes.default", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    admin = x509.load_pem_x509_certificate(paths.admin_cert.read_bytes())
    assert "O=system:masters" in admin.subject.rfc4514_string()
    server, ca_pem, pair = pki.read_kubeconfig_credentials(paths.admin_kubeconfig)
    assert server == "https://10.213.7.11:6443" and ca_pem == paths.ca_cert.read_bytes()
    assert "PRIVATE" not in repr(pair)
    # Re-running keeps the CA (so existing kubeconfigs stay valid).
    again = pki.init_dir(tmp_path / "pki", ips=["127.0.0.1"])
    assert again.ca_cert.read_bytes() == paths.ca_cert.read_bytes()


def test_client_cert_for_a_node():
    ca = pki.create_ca()
    pair = pki.issue_client_cert(ca, "system:node:node1", ["system:nodes"])
    assert pki.subject_of(pair.cert_pem) == "CN=system:node:node1,O=system:nodes"
