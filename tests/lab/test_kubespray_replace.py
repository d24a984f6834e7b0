"""Replacing a dead first control-plane/etcd node the way the facts describe, same IP.

Steps: hard power-off node1; etcd member remove; cordon, drain (bounded) and
delete the node; point kube-public/cluster-info at node2; inventory without
node1 in its groups; upgrade-cluster.yml -e ignore_assert_errors=yes; reimage
node1 (fresh disk, same IP) and append it to kube_control_plane and etcd;
cluster.yml --limit=etcd,kube_control_plane -e etcd_retries=10.

Kubespray writes the full member list into the new member's /etc/etcd.env and
starts etcd before ``etcdctl member add``: etcd refuses with "member count is
unequal" until the member is added (for good when the add is skipped). Adding
the member by hand on a survivor first (``etcdctl member add NAME
--peer-urls=https://IP:2380``) avoids the error entirely. Both paths are run;
each ends with 3 healthy members and 2 control planes.
"""

from __future__ import annotations

import json

import pytest

from runbooks_lib.lab import cluster
from tests.lab.cluster_fixtures import LabCluster
from tests.waiting import wait_until

pytestmark = pytest.mark.lab


def _members(c: LabCluster, on: str) -> list[dict]:
    return json.loads(c.etcdctl(on, "member", "list", "-w", "json").stdout)["members"]


def _member_id(member: dict) -> str:
    return "%x" % member["ID"]


def _remove_dead_member(c: LabCluster, name: str) -> None:
    """etcdctl member remove on node2, retried while etcd elects a new leader (bounded)."""
    def removed() -> tuple[bool, str]:
        dead = [m for m in _members(c, "node2") if m["name"] == name]
        if not dead:
            return True, ""
        proc = c.etcdctl("node2", "--command-timeout=10s", "member", "remove", _member_id(dead[0]),
                         check=False, timeout=40)
        return proc.exited == 0, f"member remove {name}: {proc.stderr[-500:]}"

    wait_until(removed, 90, f"etcd member {name} to be removed", 3)


def _unequal_count_errors(c: LabCluster) -> int:
    journal = c.lab.ssh("node1", ["journalctl", "-u", "etcd", "--no-pager"]).stdout
    return journal.count("member count is unequal")


def _assert_healthy(c: LabCluster) -> None:
    health = json.loads(c.etcdctl("node2", "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert sorted(h["endpoint"] for h in health if h["health"]) == [
        f"https://{c.ip('node1')}:2379", f"https://{c.ip('node2')}:2379", f"https://{c.ip('node3')}:2379"]
    assert sorted(m["name"] for m in _members(c, "node3")) == ["etcd1", "etcd2", "etcd3"]
    for node in ("node1", "node2"):
        c.kubectl("get", "nodes", server_node=node)
    def node1_ready() -> tuple[bool, str]:
        nodes = json.loads(c.kubectl("get", "nodes", "-o", "json", server_node="node2").stdout)["items"]
        ready = {n["metadata"]["name"] for n in nodes
                 if any(k["type"] == "Ready" and k["status"] == "True" for k in n["status"]["conditions"])}
        return "node1" in ready, f"Ready: {sorted(ready)}"

    wait_until(node1_ready, 90, "node1 to be Ready again", 2)
    manifest = c.lab.ssh("node1", ["cat", "/etc/kubernetes/manifests/kube-apiserver.yaml"]).stdout
    assert f"--etcd-servers=https://{c.ip('node2')}:2379,https://{c.ip('node3')}:2379,https://{c.ip('node1')}:2379" in manifest


@pytest.mark.timeout(1200)  # two replacements, each with several playbook runs
def test_replace_dead_first_control_plane_with_same_ip(restored_cluster: LabCluster, tmp_path) -> None:
    c = restored_cluster
    node1_ip = c.ip("node1")
    c.lab.poweroff("node1", mode="hard")

    # 1. The dead member leaves etcd first (else the health check fails: #10560).
    _remove_dead_member(c, "etcd1")
    assert len(_members(c, "node2")) == 2

    # 2. Cordon, drain (bounded: the node is dead) and delete it, through node2.
    c.kubectl("cordon", "node1", server_node="node2")
    c.kubectl("drain", "node1", "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=15s",
              server_node="node2", check=False, timeout=60)
    c.kubectl("delete", "node", "node1", "--wait=false", server_node="node2")

    # 3. cluster-info at a live control plane.
    info = json.loads(c.kubectl("-n", "kube-public", "get", "cm", "cluster-info", "-o", "json",
                                server_node="node2").stdout)
    kubeconfig = info["data"]["kubeconfig"].replace(f"https://{node1_ip}:6443", f"https://{c.ip('node2')}:6443")
    patch = tmp_path / "cluster-info.json"
    patch.write_text(json.dumps({"data": {"kubeconfig": kubeconfig}}))
    c.kubectl("-n", "kube-public", "patch", "cm", "cluster-info", "--type=merge", f"--patch-file={patch}",
              server_node="node2")

    # 4. Inventory: node1 out of its groups (kept in all.hosts), survivors first.
    c.set_group("kube_control_plane", ["node2"])
    c.set_group("etcd", ["node2", "node3"])

    # 5. upgrade-cluster.yml rewrites --etcd-servers in the manifests (2 etcd members: even).
    run = c.playbook("upgrade-cluster.yml", extra_vars={"ignore_assert_errors": "yes", "drain_nodes": "false"})
    assert run.ok, run.output_tail
    manifest = c.lab.ssh("node2", ["cat", "/etc/kubernetes/manifests/kube-apiserver.yaml"]).stdout
    assert f"--etcd-servers=https://{c.ip('node2')}:2379,https://{c.ip('node3')}:2379\n" in manifest

    # 6. The replacement: same machine name and IP, fresh disk, appended at the END.
    c.lab.reimage("node1")
    c.lab.poweron("node1")
    cluster.close_ssh_masters()
    c.set_group("kube_control_plane", ["node2", "node1"])
    c.set_group("etcd", ["node2", "node3", "node1"])
    run = c.playbook("cluster.yml", limit="etcd,kube_control_plane", extra_vars={"etcd_retries": "10"})
    assert run.ok, run.output_tail
    # etcd refused the full member list until Kubespray added the member.
    assert _unequal_count_errors(c) >= 1
    _assert_healthy(c)

    # 7. Again with the workaround: member add on a survivor first, then the same command.
    c.lab.poweroff("node1", mode="hard")
    _remove_dead_member(c, "etcd1")
    c.kubectl("delete", "node", "node1", "--wait=false", server_node="node2")
    c.lab.reimage("node1")
    c.lab.poweron("node1")
    cluster.close_ssh_masters()
    c.etcdctl("node2", "--command-timeout=10s", "member", "add", "etcd1", f"--peer-urls=https://{node1_ip}:2380")
    run = c.playbook("cluster.yml", limit="etcd,kube_control_plane", extra_vars={"etcd_retries": "10"})
    assert run.ok, run.output_tail
    assert _unequal_count_errors(c) == 0
    _assert_healthy(c)


@pytest.mark.timeout(1200)  # several playbook runs, one of them waiting out etcd's start timeout
def test_a_fresh_node_left_first_in_etcd_mints_a_new_ca(restored_cluster: LabCluster) -> None:
    """The replacement must go at the END of the etcd group: etcd[0] generates the certificates."""
    c = restored_cluster
    ca = ["sha256sum", "/etc/ssl/etcd/ssl/ca.pem"]
    ca_before = c.lab.ssh("node2", ca).stdout.split()[0]
    c.lab.poweroff("node1", mode="hard")
    _remove_dead_member(c, "etcd1")
    c.lab.reimage("node1")
    c.lab.poweron("node1")
    cluster.close_ssh_masters()
    # The inventory still lists node1 first in etcd and kube_control_plane.
    run = c.playbook("cluster.yml", limit="etcd,kube_control_plane", extra_vars={"etcd_retries": "1"})
    assert not run.ok
    ca_node1 = c.lab.ssh("node1", ca).stdout.split()[0]
    assert ca_node1 != ca_before  # node1 had no ca-key.pem: a NEW etcd CA
    assert c.lab.ssh("node2", ca).stdout.split()[0] == ca_node1  # ...pushed to the survivors
    journals = "".join(c.lab.ssh(n, ["journalctl", "-u", "etcd", "--no-pager"]).stdout for n in ("node2", "node3"))
    assert "certificate signed by unknown authority" in journals  # the members no longer trust each other
