"""The restore-cluster runbook on the lab: two of three etcd machines reinstalled, quorum lost.

A ConfigMap is created, a snapshot taken (etcd-snapshot runbook), a second ConfigMap created, then node2
and node3 (etcd members; node2 a control plane, node3 a worker) get fresh disks. The replace runbook
refuses (quorum is lost). A first restore run is killed (its whole process tree) inside Kubespray, once
node2 has joined the restored cluster; the second run resumes and must
return 3 healthy etcd members, every node Ready and the app answering, with the first ConfigMap and
without the second: every change after the snapshot is lost, as the runbook says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runbooks_lib.etcd_restore import MARKER
from runbooks_lib.lab import cluster
from tests.lab.cluster_fixtures import LabCluster, replace_params
from tests.lab.processes import kill_run
from tests.lab.test_runbook_snapshot import members_untouched, restore_params, run, summary, target_params

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1800)  # a snapshot run, a refused replace, a killed restore run and a full one
def test_restore_after_two_of_three_members_reinstalled(restored_cluster: LabCluster, tmp_path: Path) -> None:
    c = restored_cluster
    backups, runs = tmp_path / "backups", tmp_path / "runs"
    c.kubectl("create", "configmap", "before-snapshot", "--from-literal=when=before")
    taken = run("etcd-snapshot", target_params(c, tmp_path / "snapshot.yaml", backups), runs)
    assert taken.exit_code == 0, taken.line()
    c.kubectl("create", "configmap", "after-snapshot", "--from-literal=when=after")
    for node in ("node2", "node3"):
        c.lab.reimage(node)
    params = restore_params(c, tmp_path / "restore.yaml", backups)

    # Quorum is lost: the replace runbook refuses (and names this one), changing nothing.
    cluster.close_ssh_masters()
    refused = run("replace-control-plane", replace_params(c, tmp_path / "replace.yaml", dead_node="node2",
                                                           replacement="node2"), runs, dry_run=False, confirm="lab")
    assert refused.exit_code == 2 and "members healthy, quorum 2" in refused.message, refused.line()
    assert "restore-cluster" in Path(refused.output).read_text()
    assert c.lab.ssh("node2", ["test", "-e", "/etc/etcd.env"], check=False).exited != 0

    # First run: killed inside Kubespray, once node2 has joined the restored cluster: a re-run must not
    # take node2 (etcd installed now, no marker) for a survivor and restore it again.
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbooks_lib.cli", "run", "restore-cluster", "-f", str(params), "-p", "dry_run",
         "False", "-p", "confirm", "lab", "--runs-dir", str(runs), "--no-progress"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while (c.lab.ssh("node1", ["test", "-f", MARKER], check=False).exited != 0
               or c.lab.ssh("node2", ["systemctl", "is-active", "--quiet", "etcd"], check=False).exited != 0):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the restore never got node2's etcd started"
            time.sleep(1)
    finally:
        kill_run(proc)
    assert proc.returncode != 0

    # Second run: resumes and converges.
    result = run("restore-cluster", params, runs, dry_run=False, confirm="lab")
    elapsed = time.monotonic() - t0
    s = summary(result)
    assert result.exit_code == 0, (result.line(), s)
    assert s["restored"] is True and s["resumed"] is True and s["survivors"] == ["node1"]
    assert s["rebuilt"] == ["node2", "node3"] and s["etcd"] == {"members": ["etcd1", "etcd2", "etcd3"], "healthy": 3}
    assert s["nodes_ready"] == ["node1", "node2", "node3", "node4"]
    assert s["app_answering_on"] == ["node1", "node2", "node3", "node4"]
    health = c.etcdctl("node1", "endpoint", "health", "--cluster")
    assert (health.stdout + health.stderr).count("is healthy") == 3
    assert c.kubectl("get", "configmap", "before-snapshot", "-o", "json").returncode == 0
    gone = c.kubectl("get", "configmap", "after-snapshot", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    # The survivor's old data directory is kept aside, never deleted.
    marker = json.loads(c.lab.ssh("node1", ["cat", MARKER]).stdout)
    assert c.lab.ssh("node1", ["test", "-d", f"{marker['kept_aside']}/member"], check=False).exited == 0
    # node2, joined by the killed run's Kubespray, was not restored a second time.
    kept = c.lab.ssh("node2", ["sh", "-c", "ls -d /var/lib/etcd.before-restore-* 2>/dev/null"], check=False)
    assert kept.stdout.strip() == "", kept.stdout
    print(f"restore end to end (interrupted run + re-run): {elapsed:.0f} s")


@pytest.mark.timeout(600)
def test_a_restore_whose_api_server_cannot_be_stopped_is_refused_before_etcd_is_touched(
        kubespray_cluster: LabCluster, tmp_path: Path) -> None:
    """node2's kube-apiserver manifest is gone from kubelet's directory (and not aside): nothing can stop that
    API server the way the restore does, so even the dry run is refused in its preflight, naming it."""
    c = kubespray_cluster
    manifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"
    backups, runs = tmp_path / "backups", tmp_path / "runs"
    taken = run("etcd-snapshot", target_params(c, tmp_path / "snapshot.yaml", backups, drill=False), runs)
    assert taken.exit_code == 0, taken.line()
    name = Path(summary(taken)["snapshot"]["path"]).name
    before = c.etcdctl("node1", "endpoint", "status", "--cluster", "-w", "json").stdout
    c.lab.ssh("node2", ["mv", manifest, "/root/kube-apiserver.yaml.elsewhere"])
    try:
        result = run("restore-cluster", restore_params(c, tmp_path / "restore.yaml", backups), runs, snapshot=name)
    finally:
        c.lab.ssh("node2", ["mv", "/root/kube-apiserver.yaml.elsewhere", manifest])
    assert result.exit_code == 2, result.line()
    text = Path(result.output).read_text()
    assert "API server that cannot be stopped" in text and "node2 has no kube-apiserver.yaml" in text, result.line()
    assert c.lab.ssh("node2", ["test", "-d", "/etc/kubernetes/manifests.restore-aside"], check=False).exited != 0
    # etcd untouched: every member still runs with its own data.
    members_untouched(c)
    after = c.etcdctl("node1", "endpoint", "status", "--cluster", "-w", "json").stdout
    assert len(json.loads(after)) == len(json.loads(before)) == 3
    # kubelet runs the API server again from the manifest put back (within its file check period).
    deadline = time.monotonic() + 120
    while c.lab.ssh("node2", ["systemctl", "is-active", "--quiet", "kube-apiserver"], check=False).exited != 0:
        assert time.monotonic() < deadline, "node2's API server did not come back"
        time.sleep(2)
