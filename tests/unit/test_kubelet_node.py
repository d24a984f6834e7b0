"""The kubelet stand-in's configuration and Node object (schema-checked by the official client)."""

from __future__ import annotations

import json

import pytest
from kubernetes import client as k8s

from runbooks_lib.errors import BadParameters
from runbooks_lib.lab.kubelet import config, node


def _facts(name: str = "node1") -> node.NodeFacts:
    return node.read_facts(name, "10.213.7.11", "/", max_pods=110, kubelet_port=10250)


def test_parse_duration():
    assert config.parse_duration("10s") == 10
    assert config.parse_duration("1m30s") == 90
    assert config.parse_duration("500ms") == 0.5
    assert config.parse_duration(4) == 4.0
    assert config.parse_duration("2") == 2.0
    with pytest.raises(BadParameters):
        config.parse_duration("ten seconds")


def test_load_config_reads_the_fields_used(tmp_path):
    path = tmp_path / "kubelet-config.yaml"
    path.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "resolvConf: /run/systemd/resolve/resolv.conf\nclusterDNS: [169.254.25.10]\n"
        "nodeStatusUpdateFrequency: 2s\nnodeLeaseDurationSeconds: 8\nmaxPods: 50\n"
        "crashLoopBackOff: {maxContainerRestartPeriod: 3s}\nevictionHard: {memory.available: 100Mi}\n")
    cfg = config.load_config(path)
    assert cfg.resolv_conf == "/run/systemd/resolve/resolv.conf"
    assert cfg.cluster_dns == ("169.254.25.10",)
    assert cfg.node_status_update_frequency == 2.0
    assert cfg.node_lease_duration_seconds == 8
    assert cfg.max_pods == 50
    assert cfg.max_container_restart_period == 3.0
    defaults = config.load_config(None)
    assert defaults.node_status_update_frequency == 10.0 and defaults.resolv_conf == "/etc/resolv.conf"


def test_load_config_rejects_other_kinds_and_missing_files(tmp_path):
    other = tmp_path / "x.yaml"
    other.write_text("kind: KubeProxyConfiguration\n")
    with pytest.raises(BadParameters):
        config.load_config(other)
    with pytest.raises(BadParameters):
        config.load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "loops"),
    [
        ("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n", True),
        ("# stub\nnameserver 127.0.0.53\nnameserver ::1\n", True),
        ("nameserver 10.213.7.1\n", False),
        ("nameserver 127.0.0.53\nnameserver 1.1.1.1\n", False),
        ("search example.org\n", False),
    ],
)
def test_resolv_conf_loops(tmp_path, text, loops):
    path = tmp_path / "resolv.conf"
    path.write_text(text)
    assert config.resolv_conf_loops(path) is loops


def test_missing_resolv_conf_is_not_a_loop(tmp_path):
    assert config.resolv_conf_loops(tmp_path / "nope") is False


def test_labels_and_taints_flags():
    assert node.parse_labels("node-role.kubernetes.io/control-plane=,zone=a") == {
        "node-role.kubernetes.io/control-plane": "", "zone": "a"}
    assert node.parse_taints("node-role.kubernetes.io/control-plane:NoSchedule,dedicated=db:NoExecute") == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "db", "effect": "NoExecute"}]


def test_node_object_passes_the_official_clients_validation():
    facts = _facts()
    obj = node.node_object(facts, {"node-role.kubernetes.io/control-plane": ""}, [], node.now_iso())
    obj["metadata"].update({"uid": "u1", "resourceVersion": "5", "creationTimestamp": node.now_iso()})
    listing = {"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "5"}, "items": [obj]}
    parsed = k8s.ApiClient().deserialize(json.dumps(listing), "V1NodeList", "application/json")
    item = parsed.items[0]
    info = item.status.node_info
    assert info.kubelet_version.startswith("v1.30.")
    assert info.architecture and info.boot_id and info.machine_id and info.system_uuid and info.kube_proxy_version
    assert {a.type for a in item.status.addresses} == {"InternalIP", "Hostname"}
    assert {c.type for c in item.status.conditions} == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    assert set(item.status.capacity) >= {"cpu", "memory", "pods", "ephemeral-storage"}
    assert set(item.status.allocatable) >= {"cpu", "memory", "pods", "ephemeral-storage"}
    assert item.metadata.labels["kubernetes.io/hostname"] == "node1"
    assert "node-role.kubernetes.io/control-plane" in item.metadata.labels


def test_system_uuid_differs_per_node_on_one_host():
    assert _facts("a").system_uuid != _facts("b").system_uuid


def test_conditions_keep_transition_time_until_the_status_changes():
    first = node.conditions(None, "2024-01-01T00:00:00Z")
    again = node.conditions(first, "2024-01-01T00:00:10Z")
    ready = next(c for c in again if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert ready["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    assert ready["lastHeartbeatTime"] == "2024-01-01T00:00:10Z"
    unknown = [dict(c, status="Unknown") for c in again]
    back = next(c for c in node.conditions(unknown, "2024-01-01T00:01:00Z") if c["type"] == "Ready")
    assert back["lastTransitionTime"] == "2024-01-01T00:01:00Z"


def test_lease_is_owned_by_the_node():
    lease = node.lease_object("node1", "uid-1", 40, node.now_micro())
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"][0] == {"apiVersion": "v1", "kind": "Node", "name": "node1", "uid": "uid-1"}
    assert lease["spec"]["holderIdentity"] == "node1" and lease["spec"]["leaseDurationSeconds"] == 40


def test_static_pod_settings_default_as_upstream_and_read_from_the_config(tmp_path) -> None:
    from runbooks_lib.lab.kubelet import staticpods
    from runbooks_lib.lab.kubelet.config import KubeletConfig, load_config

    assert (KubeletConfig().static_pod_path, KubeletConfig().file_check_frequency) == (None, 20.0)
    path = tmp_path / "kubelet-config.yaml"
    path.write_text("kind: KubeletConfiguration\nstaticPodPath: /etc/kubernetes/manifests\nfileCheckFrequency: 5s\n")
    config = load_config(path)
    assert (config.static_pod_path, config.file_check_frequency) == ("/etc/kubernetes/manifests", 5.0)
    assert staticpods.parse_systemd_time("Sun 2026-11-29 02:04:50.250000 UTC") == 1795917890.25
    assert staticpods.parse_systemd_time("") is None
    manifest = {"metadata": {"name": "kube-apiserver", "namespace": "kube-system", "labels": {"tier": "control-plane"}},
                "spec": {"containers": [{"name": "kube-apiserver", "image": "x"}]}}
    pod = staticpods.mirror_pod(manifest, "node1", "uid-1", "abc", "2026-11-29T02:04:50Z")
    assert pod["metadata"]["name"] == "kube-apiserver-node1" and pod["spec"]["nodeName"] == "node1"
    assert pod["metadata"]["annotations"]["kubernetes.io/config.mirror"] == "abc"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Node"
