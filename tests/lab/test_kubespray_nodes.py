"""What Kubespray does around workers that the worker runbooks rely on but do not exercise themselves.

Adding and removing workers (alive and dead, with the dead-node flags) is tested through the runbooks
in test_runbook_workers.py; what stays here is Kubespray's own refusal to remove the first control
plane (the runbook refuses control planes before any playbook) and its behaviour with a dead host left
in the inventory (every play aborts; remove-node without the dead-node flags fails).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.lab.cluster_fixtures import LabCluster

pytestmark = pytest.mark.lab

def _node_names(c: LabCluster) -> list[str]:
    return c.kubectl("get", "nodes", "-o", "name").stdout.split()


def test_first_control_plane_and_etcd_node_cannot_be_removed(kubespray_cluster: LabCluster) -> None:
    c = kubespray_cluster
    run = c.playbook("remove-node.yml", extra_vars={"node": "node1", "skip_confirmation": "yes"})
    assert not run.ok
    assert "Currently cannot remove first control plane node or first etcd node" in run.output_tail
    assert "node/node1" in _node_names(c)
    assert len(json.loads(c.etcdctl("node2", "member", "list", "-w", "json").stdout)["members"]) == 3


def test_a_dead_worker_aborts_playbooks_and_remove_node_without_the_flags(restored_cluster: LabCluster) -> None:
    c = restored_cluster
    c.lab.poweroff("node4", mode="hard")

    for playbook in ("cluster.yml", "scale.yml", "upgrade-cluster.yml"):
        run = c.playbook(playbook)
        assert not run.ok, f"{playbook} went on with a dead host:\n{run.output_tail}"
        node4 = run.recap["node4"]
        assert node4.unreachable == 1
        # any_errors_fatal: the other hosts stopped too (nothing after the facts plays ran).
        assert "PLAY [Install etcd]" not in run.output_tail or "TASK [etcd" not in run.output_tail

    # Without the dead-node flags remove-node tries to reach the dead host and fails (the remove-worker
    # runbook's test, test_runbook_workers.py, removes it with the flags).
    started = time.monotonic()
    run = c.playbook("remove-node.yml", extra_vars={"node": "node4", "skip_confirmation": "yes"})
    print(f"\nremove-node.yml without the dead-node flags: failed after {time.monotonic() - started:.0f}s")
    assert not run.ok and "UNREACHABLE" in run.output_tail, run.output_tail
    assert "node/node4" in _node_names(c)
