"""Adding and removing workers, and the failures an operator meets doing it (Kubespray's behaviour)."""

from __future__ import annotations

import json
import time

import pytest

from tests.lab.cluster_fixtures import LabCluster
from tests.waiting import wait_until

pytestmark = pytest.mark.lab

PIN_TO_NODE4 = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: pinned, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: pinned}}
  template:
    metadata: {labels: {app: pinned}}
    spec:
      nodeSelector: {kubernetes.io/hostname: node4}
      containers: [{name: echo, image: "lab/echo-node:1"}]
"""


def _node_names(c: LabCluster) -> list[str]:
    return c.kubectl("get", "nodes", "-o", "name").stdout.split()


def _wait_ready(c: LabCluster, node: str, timeout: float = 90) -> None:
    def ready() -> tuple[bool, str]:
        proc = c.kubectl("get", "node", node, "-o", "json", check=False)
        return proc.returncode == 0 and any(k["type"] == "Ready" and k["status"] == "True"
                                            for k in json.loads(proc.stdout)["status"]["conditions"]), proc.stderr[-300:]

    wait_until(ready, timeout, f"{node} to be Ready", 2)


def test_scale_adds_a_worker_then_remove_node_removes_it(restored_cluster: LabCluster) -> None:
    c = restored_cluster
    c.add_host("node5")
    doc = c.inventory()
    doc["all"]["children"]["kube_node"]["hosts"]["node5"] = None
    c.write_inventory(doc)
    run = c.playbook("facts.yml")
    assert run.ok, run.output_tail
    run = c.playbook("scale.yml", limit="node5")
    assert run.ok, run.output_tail
    assert set(run.recap) <= {"localhost", "node5"}
    _wait_ready(c, "node5")
    assert "node/node5" in _node_names(c)
    assert "server: https://localhost:6443" in c.lab.ssh("node5", ["cat", "/etc/kubernetes/kubelet.conf"]).stdout
    c.kubectl("-n", "kube-system", "get", "pod", "nginx-proxy-node5")

    run = c.playbook("remove-node.yml", extra_vars={"node": "node5", "skip_confirmation": "yes"})
    assert run.ok, run.output_tail
    assert "node/node5" not in _node_names(c)
    state = c.lab.ssh("node5", ["systemctl", "is-active", "kubelet"], check=False).stdout.strip()
    assert state != "active"
    assert c.lab.ssh("node5", ["test", "-e", "/etc/kubernetes/kubelet.conf"], check=False).exited != 0


def test_first_control_plane_and_etcd_node_cannot_be_removed(kubespray_cluster: LabCluster) -> None:
    c = kubespray_cluster
    run = c.playbook("remove-node.yml", extra_vars={"node": "node1", "skip_confirmation": "yes"})
    assert not run.ok
    assert "Currently cannot remove first control plane node or first etcd node" in run.output_tail
    assert "node/node1" in _node_names(c)
    assert len(json.loads(c.etcdctl("node2", "member", "list", "-w", "json").stdout)["members"]) == 3


def test_a_dead_worker_aborts_playbooks_and_needs_the_ungraceful_flags(restored_cluster: LabCluster,
                                                                       tmp_path) -> None:
    c = restored_cluster
    manifest = tmp_path / "pinned.yaml"
    manifest.write_text(PIN_TO_NODE4)
    c.kubectl("apply", "-f", str(manifest))
    wait_until(lambda: "Running" in c.kubectl("get", "pods", "-l", "app=pinned").stdout, 60,
               "the pinned pod to run on node4", 2)
    c.lab.poweroff("node4", mode="hard")

    for playbook in ("cluster.yml", "scale.yml", "upgrade-cluster.yml"):
        run = c.playbook(playbook)
        assert not run.ok, f"{playbook} went on with a dead host:\n{run.output_tail}"
        node4 = run.recap["node4"]
        assert node4.unreachable == 1
        # any_errors_fatal: the other hosts stopped too (nothing after the facts plays ran).
        assert "PLAY [Install etcd]" not in run.output_tail or "TASK [etcd" not in run.output_tail

    run = c.playbook("remove-node.yml", extra_vars={"node": "node4", "skip_confirmation": "yes"})
    assert not run.ok and "UNREACHABLE" in run.output_tail, run.output_tail
    assert "node/node4" in _node_names(c)

    started = time.monotonic()
    run = c.playbook("remove-node.yml", extra_vars={
        "node": "node4", "skip_confirmation": "yes", "reset_nodes": "false",
        "allow_ungraceful_removal": "true", "drain_timeout": "10s"})
    elapsed = time.monotonic() - started
    assert run.ok, run.output_tail
    # kubectl drain waited drain_timeout for the pod that cannot terminate on the dead node.
    assert "Remove-node | Drain node except daemonsets resource" in run.output_tail
    assert elapsed >= 10
    assert "node/node4" not in _node_names(c)
