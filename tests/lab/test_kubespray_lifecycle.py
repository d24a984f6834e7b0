"""Day-2 runs of the Kubespray stand-in: rerunning cluster.yml, DNS settings from the inventory, legacy
group names, and reset.yml over the whole cluster. upgrade-cluster.yml rewriting the API server manifests
is proven by the replace-control-plane runbook (test_runbook_replace.py), which runs it with drains off."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from runbooks_lib import inventory, runbook
from tests.lab.cluster_fixtures import LabCluster

pytestmark = pytest.mark.lab

NODES = ("node1", "node2", "node3", "node4")


def _dns_pod_states(c: LabCluster) -> dict[str, str]:
    pods = json.loads(c.kubectl("-n", "kube-system", "get", "pods", "-o", "json").stdout)["items"]
    states = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        if name.startswith(("coredns-", "nodelocaldns-")):
            for status in pod.get("status", {}).get("containerStatuses") or ():
                waiting = status.get("state", {}).get("waiting") or {}
                states[name] = waiting.get("reason") or next(iter(status.get("state", {})), "unknown")
    return states


@pytest.mark.timeout(900)  # cluster.yml over the installed cluster
def test_rerun_keeps_the_manifest_and_applies_dns_settings(
        restored_cluster: LabCluster, tmp_path: Path) -> None:
    c = restored_cluster
    dns_server = c.description["host_ip"]  # the lab's DNS server (only written into files here)
    manifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"
    # An operator's hand edit on node2 (e.g. a dead etcd member taken out of --etcd-servers).
    c.lab.ssh("node2", ["sed", "-i", f"s#--etcd-servers=.*#--etcd-servers=https://{c.ip('node2')}:2379#", manifest])

    # DNS from the inventory: upstream_dns_servers for the cluster, kube_resolv_conf on node4.
    # (The install runbook recorded kube_resolv_conf for every host when it fixed CoreDNS: dropped here.)
    all_yml = c.inventory_dir / "group_vars" / "all" / "all.yml"
    kept = "".join(line for line in all_yml.read_text().splitlines(True) if not line.startswith("kube_resolv_conf:"))
    all_yml.write_text(kept + f"\nupstream_dns_servers:\n  - {dns_server}\n")
    doc = c.inventory()
    doc["all"]["hosts"]["node4"]["kube_resolv_conf"] = "/run/systemd/resolve/resolv.conf"
    c.write_inventory(doc)

    def serial(node: str, pem: str) -> str:
        return c.lab.ssh(node, ["openssl", "x509", "-noout", "-serial", "-in", f"/etc/ssl/etcd/ssl/{pem}"]).stdout

    certs = (("node3", "ca.pem"), ("node3", "member-node3.pem"), ("node1", "node-node1.pem"))
    before = {cert: serial(*cert) for cert in certs}
    log = tmp_path / "cluster.log"
    # force_etcd_cert_refresh is true upstream and tested without |bool: "false" given with -e
    # is a non-empty string, so every certificate is re-issued anyway (by the same CA).
    run = c.playbook("cluster.yml", extra_vars={"helm_enabled": True, "force_etcd_cert_refresh": "false"},
                     log_path=log)
    assert run.ok, run.output_tail
    changed = [cert for cert in certs if serial(*cert) != before[cert]]
    assert changed == [("node3", "member-node3.pem"), ("node1", "node-node1.pem")], changed  # same CA
    health = json.loads(c.etcdctl("node3", "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert len(health) == 3 and all(h["health"] for h in health), health
    assert "helm_enabled: the lab's Kubespray stand-in has no helm binary" in log.read_text()
    assert f"--etcd-servers=https://{c.ip('node2')}:2379\n" in c.lab.ssh("node2", ["cat", manifest]).stdout
    for node in ("node1", "node2", "node3"):
        config = c.lab.ssh(node, ["cat", "/etc/kubernetes/kubelet-config.yaml"]).stdout
        assert 'resolvConf: "/etc/kubernetes/resolv.conf"' in config, (node, config)
        assert f"nameserver {dns_server}" in c.lab.ssh(node, ["cat", "/etc/kubernetes/resolv.conf"]).stdout
    config = c.lab.ssh("node4", ["cat", "/etc/kubernetes/kubelet-config.yaml"]).stdout
    assert 'resolvConf: "/run/systemd/resolve/resolv.conf"' in config
    corefile = json.loads(c.kubectl("-n", "kube-system", "get", "cm", "coredns", "-o", "json").stdout)
    assert f"forward . {dns_server}" in corefile["data"]["Corefile"]
    def dns_running() -> tuple[bool, list[str]]:
        states = _dns_pod_states(c)
        pending = [f"{name}: {state}" for name, state in states.items() if state != "running"]
        return bool(states) and not pending, pending or ["no CoreDNS/nodelocaldns pods yet"]

    runbook.wait_for(dns_running, timeout=120, interval=2,
                     what="CoreDNS and nodelocaldns running with DNS settings from the inventory")


def test_legacy_dashed_group_names_and_the_limit_trap(restored_cluster: LabCluster) -> None:
    c = restored_cluster
    c.add_host("node5")
    doc = c.inventory()
    doc["all"]["children"] = {
        "kube-master": {"hosts": {"node1": None, "node2": None}},
        "etcd": {"hosts": {"node1": None, "node2": None, "node3": None}},
        "kube-node": {"hosts": {"node3": None, "node4": None, "node5": None}},
        "k8s-cluster": {"children": {"kube-master": None, "kube-node": None}},
    }
    c.write_inventory(doc)
    # The library flags the old names before any playbook runs.
    problems = inventory.Inventory.load(c.hosts).problems()
    assert any("'kube-master' is a legacy dashed/old name" in p for p in problems), problems
    # Without --limit Kubespray maps them (dynamic_groups): facts for every host of the renamed groups.
    run = c.playbook("facts.yml")
    assert run.ok, run.output_tail
    assert {"node1", "node2", "node3", "node4", "node5"} <= set(run.recap)
    # With --limit the mapping only sees the limited host, so kube_control_plane stays empty
    # (Kubespray PR #11506): write underscore names.
    run = c.playbook("scale.yml", limit="node5")
    assert not run.ok
    assert "Stop if kube_control_plane group is empty" in run.output_tail
    doc["all"]["children"] = {
        "kube_control_plane": doc["all"]["children"]["kube-master"],
        "etcd": doc["all"]["children"]["etcd"],
        "kube_node": doc["all"]["children"]["kube-node"],
        "k8s_cluster": {"children": {"kube_control_plane": None, "kube_node": None}},
    }
    c.write_inventory(doc)
    run = c.playbook("scale.yml", limit="node5")
    assert run.ok, run.output_tail
    assert set(run.recap) <= {"localhost", "node5"}
    conf = c.lab.ssh("node5", ["cat", "/etc/nginx/nginx.conf"]).stdout
    assert f"server {c.ip('node1')}:6443;" in conf and f"server {c.ip('node2')}:6443;" in conf

    def ready() -> bool:
        proc = c.kubectl("get", "node", "node5", "-o", "json", check=False)
        return proc.returncode == 0 and any(k["type"] == "Ready" and k["status"] == "True"
                                            for k in json.loads(proc.stdout)["status"]["conditions"])

    runbook.wait_for(ready, timeout=90, interval=2, what="node5 Ready")


def test_reset_removes_the_cluster_from_every_machine(restored_cluster: LabCluster) -> None:
    c = restored_cluster
    run = c.playbook("reset.yml", extra_vars={"reset_confirmation": "yes"})
    assert run.ok, run.output_tail
    assert set(run.recap) == {"localhost", *NODES}
    for node in NODES:
        for unit in ("etcd", "kubelet", "kube-apiserver", "nginx-proxy", "ingress-nginx"):
            state = c.lab.ssh(node, ["systemctl", "is-active", unit], check=False).stdout.strip()
            assert state != "active", (node, unit)
        for path in ("/etc/kubernetes", "/var/lib/etcd", "/etc/ssl/etcd", "/etc/etcd.env"):
            assert c.lab.ssh(node, ["test", "-e", path], check=False).exited != 0, (node, path)
    # Nothing listens on the API or etcd ports any more: connections are refused, not answered.
    for port in (6443, 2379):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((c.ip("node1"), port), timeout=5).close()
