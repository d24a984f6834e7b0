"""The stand-in's own behaviour on the replace path that the replace runbook never walks.

The replacement of a dead first control-plane/etcd node (new machine and same
IP, member remove, cluster-info, inventory, upgrade-cluster with
ignore_assert_errors, cluster.yml --limit=etcd,kube_control_plane, the same-IP
``member add`` first) is proven by the replace-control-plane runbook in
test_runbook_replace.py. What stays here is what the runbook is built to avoid:
a fresh node left FIRST in the etcd group mints a new etcd CA.
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
