"""Replacing a dead first control-plane/etcd node with a NEW machine (another IP).

First the trap (#10560): node5 is added to etcd while the dead node1's member
is still in the cluster. Kubespray's health check fails, so node5's
/etc/etcd.env gets ETCD_INITIAL_CLUSTER_STATE=new, node5 bootstraps a cluster
of its own (another cluster ID, refused by the survivors) and never becomes a
member. Then the way out Kubespray documents: wipe node5 (reset.yml --limit),
move node1 into broken_etcd/broken_kube_control_plane and run
recover-control-plane.yml --limit etcd,kube_control_plane -e etcd_retries=10.
Workers outside the play keep node1 in their nginx-proxy upstreams until a
playbook runs over them.
"""

from __future__ import annotations

import json

import pytest

from tests.lab.cluster_fixtures import LabCluster
from tests.waiting import wait_until

pytestmark = pytest.mark.lab


def _members(c: LabCluster, on: str) -> list[dict]:
    return json.loads(c.etcdctl(on, "member", "list", "-w", "json").stdout)["members"]


def _upstreams(c: LabCluster, worker: str) -> set[str]:
    conf = c.lab.ssh(worker, ["cat", "/etc/nginx/nginx.conf"]).stdout
    return {line.split()[1].rstrip(";") for line in conf.splitlines() if line.strip().startswith("server ")
            and ":6443" in line}


def _wait_ready(c: LabCluster, node: str, *, server_node: str, timeout: float = 120) -> None:
    def ready() -> tuple[bool, str]:
        proc = c.kubectl("get", "node", node, "-o", "json", server_node=server_node, check=False)
        return proc.returncode == 0 and any(k["type"] == "Ready" and k["status"] == "True"
                                            for k in json.loads(proc.stdout)["status"]["conditions"]), proc.stderr[-300:]

    wait_until(ready, timeout, f"{node} to be Ready", 2)


@pytest.mark.timeout(1500)  # several playbook runs, one of them waiting out etcd's start timeout
def test_new_etcd_node_beside_a_dead_member_then_recover_control_plane(restored_cluster: LabCluster) -> None:
    c = restored_cluster
    ip1, ip2, ip3, ip5 = (c.ip(n) for n in ("node1", "node2", "node3", "node5"))
    # node1 stays dead in later plays (recover-control-plane delegates to it): c.playbook declares it
    # unreachable in ~5 s (cluster.quick_unreachable_env), not after upstream's ConnectionAttempts=100.
    c.lab.poweroff("node1", mode="hard")

    # The trap: node1 out of the groups (kept in all.hosts), node5 appended, etcd1 still a member.
    c.add_host("node5", etcd_member_name="etcd5")
    c.set_group("etcd", ["node2", "node3", "node5"])
    c.set_group("kube_control_plane", ["node2", "node5"])
    run = c.playbook("cluster.yml", limit="etcd,kube_control_plane", extra_vars={"etcd_retries": "2"})
    assert not run.ok
    assert "Configure | Wait for etcd cluster to be healthy" in {t.task.split(" : ")[-1] for t in run.failed_tasks}, \
        run.failed_tasks
    env5 = c.lab.ssh("node5", ["cat", "/etc/etcd.env"]).stdout
    assert "ETCD_INITIAL_CLUSTER_STATE=new" in env5
    journal5 = c.lab.ssh("node5", ["journalctl", "-u", "etcd", "--no-pager"]).stdout
    assert "cluster ID mismatch" in journal5  # a cluster of its own, refused by the survivors
    members = _members(c, "node2")
    assert sorted(m["name"] for m in members) == ["etcd1", "etcd2", "etcd3"]
    assert not any(f"https://{ip5}:2380" in m.get("peerURLs", []) for m in members)

    # The way out: wipe node5, declare node1 broken, recover-control-plane.yml.
    run = c.playbook("reset.yml", limit="node5", extra_vars={"reset_confirmation": "yes"})
    assert run.ok, run.output_tail
    assert set(run.recap) <= {"localhost", "node5"}
    assert c.lab.ssh("node5", ["systemctl", "is-active", "etcd"], check=False).stdout.strip() != "active"
    for path in ("/var/lib/etcd", "/etc/ssl/etcd", "/etc/etcd.env", "/etc/kubernetes"):
        assert c.lab.ssh("node5", ["test", "-e", path], check=False).exited != 0, path
    doc = c.inventory()
    doc["all"]["children"]["broken_etcd"] = {"hosts": {"node1": None}}
    doc["all"]["children"]["broken_kube_control_plane"] = {"hosts": {"node1": None}}
    c.write_inventory(doc)
    assert _upstreams(c, "node4") == {f"{ip1}:6443", f"{ip2}:6443"}

    # Joins discover the API server through kube-public/cluster-info, which still names dead node1:
    # point it at a survivor first, as the article does (no playbook updates it).
    info = json.loads(c.kubectl("-n", "kube-public", "get", "cm", "cluster-info", "-o", "json",
                                server_node="node2").stdout)
    assert f"server: https://{ip1}:6443" in info["data"]["kubeconfig"]
    live = info["data"]["kubeconfig"].replace(f"https://{ip1}:6443", f"https://{ip2}:6443")
    c.kubectl("-n", "kube-public", "patch", "cm", "cluster-info", "--type=merge",
              "-p", json.dumps({"data": {"kubeconfig": live}}), server_node="node2")
    run = c.playbook("recover-control-plane.yml", limit="etcd,kube_control_plane",
                     extra_vars={"etcd_retries": "10"}, timeout=1200)
    assert run.ok, run.output_tail
    assert "node1" not in run.recap  # dead, and outside --limit
    members = _members(c, "node5")
    assert sorted(m["name"] for m in members) == ["etcd2", "etcd3", "etcd5"]
    health = json.loads(c.etcdctl("node5", "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert sorted(h["endpoint"] for h in health if h["health"]) == sorted(
        f"https://{ip}:2379" for ip in (ip2, ip3, ip5))
    servers = f"--etcd-servers=https://{ip2}:2379,https://{ip3}:2379,https://{ip5}:2379\n"
    for node in ("node2", "node5"):
        assert servers in c.lab.ssh(node, ["cat", "/etc/kubernetes/manifests/kube-apiserver.yaml"]).stdout, node
    _wait_ready(c, "node5", server_node="node5")
    names = c.kubectl("get", "nodes", "-o", "name", server_node="node5").stdout.split()
    assert "node/node1" not in names and "node/node5" in names
    # Never updated by any playbook: still what was written by hand above.
    info = json.loads(c.kubectl("-n", "kube-public", "get", "cm", "cluster-info", "-o", "json",
                                server_node="node2").stdout)
    assert f"server: https://{ip2}:6443" in info["data"]["kubeconfig"]

    # nginx-proxy is refreshed only on hosts in the play: node3 (etcd) was, node4 was not.
    assert _upstreams(c, "node3") == {f"{ip2}:6443", f"{ip5}:6443"}
    assert _upstreams(c, "node4") == {f"{ip1}:6443", f"{ip2}:6443"}
    run = c.playbook("scale.yml", limit="node4")
    assert run.ok, run.output_tail
    assert _upstreams(c, "node4") == {f"{ip2}:6443", f"{ip5}:6443"}
    _wait_ready(c, "node4", server_node="node5")
