"""Snapshot member choice, retention rules, manifests and the restore command forms by etcd version."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runbooks_lib import etcd_restore, etcd_snapshot
from runbooks_lib.errors import BadParameters, PreconditionFailed

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)


def _manifest(days_ago: float, revision: int, verified: bool = True) -> etcd_snapshot.Manifest:
    when = NOW - timedelta(days=days_ago)
    return etcd_snapshot.Manifest(
        cluster="lab", member="node2", revision=revision, keys=10, size=100, time=when.isoformat(),
        etcd_version="3.4.23", sha256="ab" * 32, file=etcd_snapshot.backup_name("lab", when, revision),
        total_keys=20, total_size=100, hash=1, verified=verified)


def test_choose_member_avoids_the_leader() -> None:
    members = ["node1", "node2", "node3"]
    assert etcd_snapshot.choose_member(members, members, "node1")[0] == "node2"
    assert etcd_snapshot.choose_member(members, ["node1", "node3"], "node1")[0] == "node3"
    assert etcd_snapshot.choose_member(members, ["node1"], "node1") == ("node1", "the leader: the only healthy member")
    assert etcd_snapshot.choose_member(members, members, "node2", given="node2") == ("node2", "given")


def test_choose_member_refuses_unhealthy_or_unknown() -> None:
    with pytest.raises(PreconditionFailed, match="not healthy"):
        etcd_snapshot.choose_member(["node1", "node2"], ["node1"], "node1", given="node2")
    with pytest.raises(PreconditionFailed, match="not an etcd member"):
        etcd_snapshot.choose_member(["node1"], ["node1"], None, given="node7")
    with pytest.raises(PreconditionFailed, match="no etcd member is healthy"):
        etcd_snapshot.choose_member(["node1"], [], None)


def test_retention_keep_last_and_days() -> None:
    found = [_manifest(d, 100 - int(d)) for d in (9, 7, 5, 3, 1)]
    assert [m.revision for m in etcd_snapshot.plan_retention(found, keep_last=2, now=NOW).keep] == [97, 99]
    assert [m.revision for m in etcd_snapshot.plan_retention(found, keep_days=4, now=NOW).keep] == [97, 99]
    # either rule keeps: the last 1 and everything younger than 6 days
    plan = etcd_snapshot.plan_retention(found, keep_last=1, keep_days=6, now=NOW)
    assert [m.revision for m in plan.keep] == [95, 97, 99] and [m.revision for m in plan.delete] == [91, 93]
    assert etcd_snapshot.plan_retention(found, now=NOW).delete == ()


def test_retention_never_deletes_the_newest_verified() -> None:
    found = [_manifest(30, 1), _manifest(20, 2), _manifest(1, 3, verified=False)]
    plan = etcd_snapshot.plan_retention(found, keep_last=1, now=NOW)
    assert [m.revision for m in plan.keep] == [2, 3]
    plan = etcd_snapshot.plan_retention(found[:2], keep_days=1, now=NOW)
    assert [m.revision for m in plan.keep] == [2]
    with pytest.raises(BadParameters):
        etcd_snapshot.plan_retention(found, keep_last=-1)


def test_manifest_round_trip(tmp_path) -> None:
    m = _manifest(1, 42).with_drill({"ok": True})
    path = etcd_snapshot.write_manifest(tmp_path, m)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert etcd_snapshot.read_manifest(path) == m
    assert etcd_snapshot.backups(tmp_path, "lab") == [m] and etcd_snapshot.backups(tmp_path, "other") == []
    with pytest.raises(PreconditionFailed, match="missing"):
        etcd_snapshot.check_backup(tmp_path, m)


@pytest.mark.parametrize("version, tool", [("3.4.23", "etcdctl"), ("3.5.3", "etcdutl"), ("3.6.10", "etcdutl"),
                                           ("etcd Version: 3.4.23\nGit SHA: x", "etcdctl")])
def test_restore_tool_by_version(version: str, tool: str) -> None:
    assert etcd_restore.restore_tool(version) == tool


def test_restore_argv_forms() -> None:
    kw = dict(data_dir="/var/lib/etcd", name="etcd1", peer_url="https://10.0.0.1:2380",
              initial_cluster="etcd1=https://10.0.0.1:2380", token="etcd-restore-abc")
    flags = ["--data-dir=/var/lib/etcd", "--name=etcd1", "--initial-cluster=etcd1=https://10.0.0.1:2380",
             "--initial-cluster-token=etcd-restore-abc", "--initial-advertise-peer-urls=https://10.0.0.1:2380"]
    assert etcd_restore.restore_argv("3.4.23", "/s.db", **kw) == [
        "env", "ETCDCTL_API=3", "etcdctl", "snapshot", "restore", "/s.db", *flags]
    assert etcd_restore.restore_argv("3.6.10", "/s.db", etcdutl="/usr/local/bin/etcdutl", **kw) == [
        "/usr/local/bin/etcdutl", "snapshot", "restore", "/s.db", *flags]
    assert etcd_restore.status_argv("3.5.3", "/s.db") == ["etcdutl", "snapshot", "status", "/s.db", "-w", "json"]
    assert etcd_restore.status_argv("3.4.23", "/s.db")[:4] == ["env", "ETCDCTL_API=3", "etcdctl", "snapshot"]
    assert etcd_restore.new_token("0123456789abcdef") == "etcd-restore-0123456789ab"
    with pytest.raises(BadParameters):
        etcd_restore.restore_tool("unknown")


def _state(host: str, *, reachable: bool = True, installed: bool = True, healthy: bool = False,
           marker: dict | None = None) -> etcd_restore.MemberState:
    n = host[-1]
    return etcd_restore.MemberState(host, reachable, installed, healthy, "3.4.23" if installed else "",
                                    f"etcd{n}" if installed else "", f"https://10.0.0.{n}:2380" if installed else "",
                                    marker or {})


ETCD_HOSTS = ["node1", "node2", "node3"]


def test_decide_refuses_while_quorum_is_healthy_and_names_the_replace_runbook() -> None:
    states = {"node1": _state("node1", healthy=True), "node2": _state("node2", healthy=True),
              "node3": _state("node3", installed=False)}
    d = etcd_restore.decide(ETCD_HOSTS, ["node1", "node2"], states, "ab" * 32)
    assert "still has quorum: 2 of 3" in d.refuse and "replace-control-plane runbook" in d.fix


def test_decide_two_of_three_reinstalled() -> None:
    states = {"node1": _state("node1"), "node2": _state("node2", installed=False),
              "node3": _state("node3", installed=False)}
    d = etcd_restore.decide(ETCD_HOSTS, ["node1", "node2"], states, "ab" * 32)
    assert (d.refuse, d.survivors, d.rebuilt, d.resuming) == ("", ("node1",), ("node2", "node3"), False)
    assert etcd_restore.initial_cluster(states, d.survivors) == "etcd1=https://10.0.0.1:2380"


def test_decide_resumes_its_own_restore_even_when_healthy() -> None:
    sha = "cd" * 32
    states = {"node1": _state("node1", healthy=True, marker={"sha256": sha}),
              "node2": _state("node2", healthy=True), "node3": _state("node3", installed=False)}
    assert etcd_restore.decide(ETCD_HOSTS, ["node1"], states, sha).refuse == ""
    assert etcd_restore.decide(ETCD_HOSTS, ["node1"], states, "ef" * 32).refuse  # another snapshot: refused


def test_decide_resuming_never_restores_a_member_kubespray_joined_since() -> None:
    """Killed during Kubespray: node2 joined the restored cluster (etcd installed, no marker). A re-run must
    leave it alone, restore nothing again, and hand node2 and node3 to Kubespray."""
    sha = "cd" * 32
    mark = {"sha256": sha, "initial_cluster": "etcd1=https://10.0.0.1:2380"}
    states = {"node1": _state("node1", healthy=True, marker=mark), "node2": _state("node2", healthy=True),
              "node3": _state("node3", installed=False)}
    d = etcd_restore.decide(ETCD_HOSTS, ["node1", "node2"], states, sha)
    assert (d.refuse, d.survivors, d.rebuilt, d.resuming) == ("", ("node1",), ("node2", "node3"), True)
    assert d.restored_cluster == "etcd1=https://10.0.0.1:2380"
    # Finished and healthy: the same snapshot again restores nothing (every survivor is marked).
    states["node3"] = _state("node3", healthy=True)
    d = etcd_restore.decide(ETCD_HOSTS, ["node1", "node2"], states, sha)
    assert (d.refuse, d.survivors, d.rebuilt) == ("", ("node1",), ("node2", "node3"))
    # Two survivors, killed after the first one's restore: the second is still to restore.
    mark2 = {"sha256": sha, "initial_cluster": "etcd1=https://10.0.0.1:2380,etcd2=https://10.0.0.2:2380"}
    states = {"node1": _state("node1", marker=mark2), "node2": _state("node2"),
              "node3": _state("node3", installed=False)}
    d = etcd_restore.decide(ETCD_HOSTS, ["node1", "node2"], states, sha)
    assert (d.survivors, d.rebuilt) == (("node1", "node2"), ("node3",))


@pytest.mark.parametrize("states, words", [
    ({"node1": _state("node1"), "node2": _state("node2", reachable=False), "node3": _state("node3")},
     "do not answer SSH"),
    ({h: _state(h, installed=False) for h in ETCD_HOSTS}, "no etcd host still has etcd installed"),
    ({"node1": _state("node1", installed=False), "node2": _state("node2"), "node3": _state("node3", installed=False)},
     "node1, first in etcd"),
])
def test_decide_refusals(states: dict, words: str) -> None:
    assert words in etcd_restore.decide(ETCD_HOSTS, ["node2"], states, "ab" * 32).refuse


def test_snapshot_and_restore_parameter_checks() -> None:
    from runbooks_lib import schemas

    assert schemas.check_snapshot(schemas.SnapshotParams()).drill is True
    with pytest.raises(BadParameters, match="drill_snapshot.*keep_last|keep_last.*drill_snapshot"):
        schemas.check_snapshot(schemas.SnapshotParams(keep_last=-1, drill_snapshot="../x"))
    with pytest.raises(BadParameters, match="snapshot"):
        schemas.check_restore(schemas.RestoreParams(snapshot="/etc/passwd"))
