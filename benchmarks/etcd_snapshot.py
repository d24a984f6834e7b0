"""etcd snapshots on the lab: what verifying costs, how long the drill takes, how long a restore takes.

Usage (root, with the lab's RUNBOOKS_LAB_* variables): .venv/bin/python benchmarks/etcd_snapshot.py
    --inventory-dir DIR [--rounds 5] [--restore]

DIR is an installed cluster's inventory directory (hosts.yaml, artifacts/admin.conf), e.g. the one
`runbooks lab cluster` or the lab tests' session fixture wrote. Prints measured figures (not a test):

1. Save + verify + download as the etcd-snapshot runbook does it (``etcd.snapshot``: save, snapshot
   status, sha256 on the member, download into a 0600 file, sha256 here; then the live key count and
   the manifest) against plain ``etcdctl snapshot save`` plus a copy of the same file, on the same
   member, median of ``--rounds``. The ratio is the figure (target <= 1.2). Verifying costs two more
   etcd tool runs (status, count), a fixed ~0.25 s: on the lab's 2 MB database that dominates;
   ``--fill-mb 200`` measures a database of a real cluster's size.
2. The restore drill (scratch etcd on loopback) on the downloaded file, median of ``--rounds``.
3. With ``--restore``: the restore-cluster runbook end to end (``runbooks run``) after node2 and node3
   are reimaged; the machines are put back to a lab-wide snapshot taken first. Without it, the lab is
   only read (snapshots go to a temporary directory; the members' copies are deleted).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from runbooks_lib import etcd, etcd_restore, etcd_snapshot, inventory, runner, ssh
from runbooks_lib.lab import cluster
from runbooks_lib.lab.machines import Lab

TARGET_RATIO = 1.2
SAVED = "before-etcd-snapshot-benchmark"


def _print(label: str, value: str) -> None:
    print(f"{label:<58} {value}", flush=True)


def _follower(ctl: etcd.Etcdctl, address: dict[str, str]) -> str:
    by_ip = {ip: name for name, ip in address.items()}
    for s in etcd.endpoint_status(ctl, cluster=True):
        if not s.is_leader:
            return by_ip[s.endpoint.split("//")[1].rsplit(":", 1)[0]]
    raise SystemExit("no follower found")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory-dir", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--restore", action="store_true", help="also time the restore-cluster runbook (reimages)")
    parser.add_argument("--fill-mb", type=int, default=0,
                        help="first grow etcd by about this many MB (keys under /benchmark-fill/, deleted at the "
                             "end; the database file keeps its size until a defrag) to measure a realistic size")
    args = parser.parse_args()
    lab = Lab()
    desc = lab.description()
    inv = inventory.Inventory.load(args.inventory_dir / "hosts.yaml")
    address = {n: inv.host(n).address for n in inv.hosts}
    conns = {n: ssh.Connection(ssh.Host(n, address[n], user="root", key_path=desc["ssh_key"],
                                        known_hosts=desc["known_hosts"])) for n in inv.members("etcd")}
    first = inv.members("etcd")[0]
    member = _follower(etcd.Etcdctl(conns[first], member=first), address)
    ctl = etcd.Etcdctl(conns[member], member=member)
    work = Path(tempfile.mkdtemp(prefix="etcd-snapshot-bench-"))
    fill = ("sh", "-c", 'head -c 700000 /dev/urandom | base64 -w0 | "$@"', "fill")
    for i in range(args.fill_mb):
        ssh.run(conns[member], [*fill, *ctl.argv("put", f"/benchmark-fill/{i:04d}")], timeout=60)
    print(f"member {member}; files in {work}", flush=True)
    full, plain, drills = [], [], []
    manifest = None
    for i in range(args.rounds):
        t0 = time.monotonic()
        remote = f"/var/tmp/bench-plain-{i}.db"
        ctl.run("snapshot", "save", remote, timeout=300)
        ssh.get(conns[member], remote, work / f"plain-{i}.db", timeout=300)
        plain.append(time.monotonic() - t0)
        etcd_snapshot.remove_remote(conns[member], remote)

        t0 = time.monotonic()
        now = datetime.now(timezone.utc)
        remote = f"/var/tmp/bench-full-{i}.db"
        snap = etcd.snapshot(ctl, remote, work / f"full-{i}.db", timeout=300)
        manifest = etcd_snapshot.manifest_for(snap, cluster="lab", member=member, etcd_version="", when=now)
        etcd_snapshot.write_manifest(work, manifest)
        full.append(time.monotonic() - t0)
        etcd_snapshot.remove_remote(conns[member], remote)

        drill = etcd_restore.drill(work, manifest, nodes=inv.members("k8s_cluster"))
        assert drill.ok, drill.message
        drills.append(drill.total_s)
    size = (work / manifest.file).stat().st_size
    ratio = statistics.median(full) / statistics.median(plain)
    _print("snapshot size", f"{size} bytes, {manifest.keys} keys")
    _print("plain etcdctl snapshot save + copy (median)", f"{statistics.median(plain):.2f} s {sorted(round(x, 2) for x in plain)}")
    _print("save + verify + download + manifest (median)", f"{statistics.median(full):.2f} s {sorted(round(x, 2) for x in full)}")
    _print("ratio (target <= %.1f)" % TARGET_RATIO, f"{ratio:.2f} {'OK' if ratio <= TARGET_RATIO else 'ABOVE TARGET'}")
    _print("restore drill (median)", f"{statistics.median(drills):.2f} s {sorted(round(x, 2) for x in drills)}")
    if args.fill_mb:
        ctl.run("del", "--prefix", "/benchmark-fill/", timeout=120)
    for c in conns.values():
        c.close()
    if not args.restore:
        return 0

    base = {"cluster_name": "lab", "inventory": str(args.inventory_dir / "hosts.yaml"),
            "kubeconfig": str(args.inventory_dir / "artifacts" / "admin.conf"), "ssh_key": desc["ssh_key"],
            "known_hosts": desc["known_hosts"], "backup_dir": str(work / "backups"),
            "kubespray_dir": str(cluster.KUBESPRAY_DIR), "app_host": "uuid.awesome.lab"}
    (work / "snap.yaml").write_text(yaml.safe_dump(base))
    (work / "restore.yaml").write_text(yaml.safe_dump({**base, "ansible_env": cluster.playbook_env()}))
    lab.snapshot_all(SAVED)
    try:
        taken = runner.run(runner.find("etcd-snapshot"), files=[work / "snap.yaml"], runs=work / "runs",
                           progress_bar=False)
        assert taken.exit_code == 0, taken.line()
        for node in ("node2", "node3"):
            lab.reimage(node)
        t0 = time.monotonic()
        result = runner.run(runner.find("restore-cluster"), files=[work / "restore.yaml"], runs=work / "runs",
                            overrides={"dry_run": False, "confirm": "lab"}, progress_bar=False)
        total = time.monotonic() - t0
        summary = json.loads(Path(result.summary_path).read_text())
        _print("restore-cluster runbook end to end", f"{total:.0f} s ({result.status})")
        for step in summary.get("steps", []):
            _print(f"  {step['name']}", f"{step.get('duration', 0):.1f} s")
    finally:
        lab.heal()
        lab.restore_all(SAVED)
        cluster.close_ssh_masters()
    return 0


if __name__ == "__main__":
    sys.exit(main())
