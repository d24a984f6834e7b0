"""The etcd-snapshot runbook against the lab's installed cluster, and the restore runbook's refusals.

One real snapshot run proves the whole path (member choice, verify, 0600 download with matching sha256
and manifest, member copy deleted, the restore drill with etcd 3.4's etcdctl). The same file, with bytes
flipped, is then refused by the drill and by the restore runbook; a missing snapshot and a restore asked
for while quorum is healthy are refused too, and nothing changed on the members. A second run with
keep_last=1 deletes the first snapshot and keeps the newest. The etcdutl (3.5) drill and the retention
rules' corner cases are in tests/local/test_etcd_drill_local.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from runbooks_lib import runner
from runbooks_lib.lab import cluster
from tests.lab.cluster_fixtures import APP_HOST, LabCluster

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ETCD = ("node1", "node2", "node3")


def target_params(c: LabCluster, path: Path, backup_dir: Path, **extra: object) -> Path:
    """A parameter file reaching the session's cluster, for the snapshot and restore runbooks."""
    values = {"cluster_name": "lab", "inventory": str(c.hosts), "kubeconfig": str(c.kubeconfig),
              "ssh_key": c.description["ssh_key"], "known_hosts": c.description["known_hosts"],
              "backup_dir": str(backup_dir), "kubespray_dir": str(cluster.KUBESPRAY_DIR), "app_host": APP_HOST,
              **extra}
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def restore_params(c: LabCluster, path: Path, backup_dir: Path) -> Path:
    return target_params(c, path, backup_dir, ansible_env=cluster.playbook_env())


def run(name: str, params: Path, runs: Path, **overrides: object) -> runner.RunResult:
    return runner.run(runner.find(name), files=[params], overrides=overrides, runs=runs, progress_bar=False,
                      cell_timeout=1800)


def summary(result: runner.RunResult) -> dict:
    return json.loads(Path(result.summary_path).read_text())


def members_untouched(c: LabCluster) -> None:
    """No restore left a trace: etcd runs on every member with its own data dir, 3 healthy members."""
    for node in ETCD:
        found = c.lab.ssh(node, ["sh", "-c", "ls -d /var/lib/etcd-restore /var/lib/etcd.before-restore-* 2>/dev/null;"
                                 " systemctl is-active etcd"], check=False).stdout.split()
        assert found == ["active"], (node, found)
    health = c.etcdctl("node1", "endpoint", "health", "--cluster")
    assert (health.stdout + health.stderr).count("is healthy") == 3


def test_snapshot_drill_and_refusals(kubespray_cluster: LabCluster, tmp_path: Path) -> None:
    c = kubespray_cluster
    backups, runs = tmp_path / "backups", tmp_path / "runs"
    params = target_params(c, tmp_path / "snapshot.yaml", backups)
    result = run("etcd-snapshot", params, runs)
    assert result.exit_code == 0, result.line()
    s = summary(result)
    snap = Path(s["snapshot"]["path"])
    assert s["verified"] is True and s["drill"]["ok"] is True and s["drill"]["tool"] == "etcdctl"
    assert s["drill"]["keys"] == s["snapshot"]["keys"] > 20 and s["drill"]["revision"] == s["snapshot"]["revision"]
    assert sorted(s["drill"]["nodes"]) == ["node1", "node2", "node3", "node4"]
    leader_free = s["member_choice"]
    assert leader_free["member"] in ETCD and leader_free["member"] != leader_free["leader"]
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600 and stat.S_IMODE(backups.stat().st_mode) == 0o700
    manifest = json.loads(snap.with_suffix(".json").read_text())
    from runbooks_lib.etcd_snapshot import local_sha256

    assert manifest["sha256"] == local_sha256(snap) and manifest["drill"]["ok"] is True
    assert {k for k in ("cluster", "member", "revision", "keys", "size", "time", "etcd_version")} <= manifest.keys()
    for node in ETCD:  # the member's copy is gone
        assert c.lab.ssh(node, ["sh", "-c", "ls /var/tmp/etcd-snapshot-* 2>/dev/null | wc -l"]).stdout.strip() == "0"

    # Bytes flipped in the downloaded file: the drill refuses it, and so does the restore runbook.
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    drilled = run("etcd-snapshot", params, runs, drill_snapshot=snap.name)
    assert drilled.exit_code == 2 and "corrupted" in drilled.message, drilled.line()
    rparams = restore_params(c, tmp_path / "restore.yaml", backups)
    corrupted = run("restore-cluster", rparams, runs, snapshot=snap.name, dry_run=False, confirm="lab")
    assert corrupted.exit_code == 2 and "corrupted" in corrupted.message and "sha256" in corrupted.message
    missing = run("restore-cluster", rparams, runs, snapshot="lab-19700101T000000Z-rev1.db", dry_run=False,
                  confirm="lab")
    assert missing.exit_code == 2 and "no manifest" in missing.message, missing.line()
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    healthy = run("restore-cluster", rparams, runs, dry_run=False, confirm="lab")
    assert healthy.exit_code == 2 and "still has quorum" in healthy.message, healthy.line()
    assert "replace-control-plane runbook" in Path(healthy.output).read_text()
    members_untouched(c)

    # Retention: a second snapshot with keep_last=1 deletes the first (file and manifest), keeps the newest.
    second = run("etcd-snapshot", params, runs, keep_last=1, drill=False)
    assert second.exit_code == 0, second.line()
    s2 = summary(second)
    newest = Path(s2["snapshot"]["path"])
    assert s2["retention"] == {"kept": [newest.name], "deleted": [snap.name]}, s2["retention"]
    assert sorted(f.name for f in backups.iterdir()) == sorted([newest.name, newest.with_suffix(".json").name])
