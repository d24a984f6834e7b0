"""Time the replace-control-plane runbook end to end on the lab, for both paths, with each step's share.

Usage (root, lab up, in the repository): PYTHONPATH=. .venv/bin/python benchmarks/replace_control_plane.py
                      [--inventory-dir DIR] [--paths new,same]
                      [--kubespray v2.19|v2.31]

With ``--inventory-dir`` (an installed cluster's inventory directory whose machines
have the lab-wide snapshot "kubespray-installed", e.g. left by a lab test session)
the install is skipped; otherwise the install runbook installs the cluster on
fresh disks and the snapshot is taken. For each path the machines are restored
to the snapshot, node1 is hard powered off (same IP: reimaged and booted, its new
key pinned), and ``runbooks run replace-control-plane`` runs with confirmation
on a copy of the inventory. ``--kubespray`` picks the stand-in's era for the
install and the replace runs (default v2.19, the source article's). The machines
are restored at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from runbooks_lib import runner
from runbooks_lib.lab import cluster
from runbooks_lib.lab.machines import Lab
from tests.lab.cluster_fixtures import SNAPSHOT, LabCluster, install_afresh, replace_params, serve_app_name


def _one(lab: Lab, installed: Path, path: str, workdir: Path, checkout: Path) -> dict:
    lab.restore_all(SNAPSHOT)
    cluster.close_ssh_masters()
    inventory_dir = workdir / f"inventory-{path}"
    shutil.copytree(installed, inventory_dir, ignore=shutil.ignore_patterns("*.retry"))
    c = LabCluster(lab, inventory_dir, lab.description())
    lab.poweroff("node1", mode="hard")
    extra: dict[str, object] = {"kubespray_dir": str(checkout)}
    if path == "same":
        lab.reimage("node1")
        lab.poweron("node1")
        cluster.close_ssh_masters()
        extra["replacement"] = "node1"
    params = replace_params(c, workdir / f"replace-{path}.yaml", **extra)
    result = runner.run(runner.find("replace-control-plane"), files=[params], runs=workdir / "runs",
                        overrides={"dry_run": False, "confirm": "lab"}, progress_bar=False, cell_timeout=1200)
    summary = json.loads(Path(result.summary_path).read_text())
    print(f"\n{'new machine (node5)' if path == 'new' else 'same IP (node1 reimaged)'}, Kubespray "
          f"{summary['kubespray']['version']}: {result.line()}")
    total = float(summary.get("total_s") or 0.0)
    for step in summary["steps"]:
        share = 100 * step["duration"] / total if total else 0.0
        print(f"  {step['name']:<32} {step['duration']:7.1f} s {share:5.1f} %  {step['status']}")
    print(f"  {'end to end (gate to healthy)':<32} {total:7.1f} s   run {result.duration_s:.0f} s "
          f"(with kernel start and preflight)")
    return {"path": path, "kubespray": summary["kubespray"]["version"], "exit": result.exit_code, "total_s": total,
            "run_s": round(result.duration_s, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inventory-dir", default=None, help="an installed cluster's inventory (snapshot present)")
    p.add_argument("--paths", default="new,same", help="new, same or both (comma-separated)")
    p.add_argument("--kubespray", default=cluster.DEFAULT_ERA, choices=sorted(cluster.ERAS),
                   help="the stand-in's era for the install and the replace runs")
    args = p.parse_args(argv)
    paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    if not paths or set(paths) - {"new", "same"}:
        p.error(f"--paths: give new, same or new,same (got {args.paths!r})")
    lab = Lab()
    lab.up(nodes=5)
    checkout = cluster.kubespray_dir(args.kubespray)
    workdir = Path(tempfile.mkdtemp(prefix="replace-bench-"))
    server = serve_app_name(lab.description())
    results = []
    try:
        installed = Path(args.inventory_dir) if args.inventory_dir else install_afresh(lab, workdir, checkout)
        for path in paths:
            results.append(_one(lab, installed, path, workdir, checkout))
    finally:
        server.stop()
        lab.heal()
        lab.restore_all(SNAPSHOT)
        cluster.close_ssh_masters()
    print("\n" + json.dumps(results))
    return 0 if all(r["exit"] == 0 and r["total_s"] < 300 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
