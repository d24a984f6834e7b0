"""How long removing a dead worker takes: the remove-worker runbook (dead-node flags) against plain remove-node.yml.

Usage (root, lab up, in the repository): PYTHONPATH=. .venv/bin/python benchmarks/remove_worker.py
                      [--inventory-dir DIR] [--without-bound S] [--kubespray v2.19|v2.31]

With ``--inventory-dir`` (an installed cluster's inventory directory whose machines
have the lab-wide snapshot "kubespray-installed", e.g. left by a lab test session)
the install is skipped; otherwise the install runbook installs the cluster on
fresh disks and the snapshot is taken. Then, from that snapshot each time:

1. node4 (a worker) is hard powered off and ``runbooks run remove-worker`` removes
   it (the runbook passes reset_nodes=false, allow_ungraceful_removal=true and a
   bounded drain). Prints the end-to-end time and the remove-node step's.
2. node4 is hard powered off again and remove-node.yml runs exactly as the
   runbook builds it (the checkout's ssh_args, ConnectionAttempts=100 included;
   host keys pinned; ``-e node=node4 -e skip_confirmation=yes``) but WITHOUT the
   dead-node flags, bounded by ``--without-bound`` seconds. Prints how long it
   ran and how it ended (failed on the unreachable host, or still hanging).

The machines are restored to the snapshot at the end. Traffic stays on the lab's bridge.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from runbooks_lib import kubespray, runner
from runbooks_lib.lab import cluster
from runbooks_lib.lab.machines import Lab
from tests.lab.cluster_fixtures import SNAPSHOT, LabCluster, install_afresh, serve_app_name


def _fresh(lab: Lab, installed: Path, workdir: Path, name: str) -> LabCluster:
    """The installed snapshot back, a copy of its inventory, node4 hard powered off."""
    lab.restore_all(SNAPSHOT)
    cluster.close_ssh_masters()
    inventory_dir = workdir / name
    shutil.copytree(installed, inventory_dir, ignore=shutil.ignore_patterns("*.retry"))
    lab.poweroff("node4", mode="hard")
    cluster.close_ssh_masters()
    return LabCluster(lab, inventory_dir, lab.description())


def _with_flags(c: LabCluster, workdir: Path, checkout: Path) -> dict:
    d = c.description
    params = workdir / "remove.yaml"
    params.write_text(json.dumps({
        "cluster_name": "lab", "inventory": str(c.hosts), "kubespray_dir": str(checkout),
        "kubeconfig": str(c.kubeconfig),
        "ssh_key": d["ssh_key"], "known_hosts": d["known_hosts"], "remove": ["node4"], "app_host": "uuid.awesome.lab",
        "ansible_env": cluster.playbook_env()}))
    started = time.monotonic()
    result = runner.run(runner.find("remove-worker"), files=[params], runs=workdir / "runs",
                        overrides={"dry_run": False, "confirm": "lab"}, progress_bar=False, cell_timeout=1800)
    total = time.monotonic() - started
    summary = json.loads(Path(result.summary_path).read_text())
    playbook = sum(s["duration"] for s in summary.get("steps", []) if s["name"].startswith("remove-node"))
    return {"line": result.line(), "total_s": total, "remove_node_s": playbook}


def _without_flags(c: LabCluster, checkout: Path, bound: float, workdir: Path) -> dict:
    cmd = kubespray.command(kubespray.detect(checkout), "remove-node", inventory=c.hosts,
                            known_hosts=c.description["known_hosts"],
                            ansible_playbook=cluster.ansible_playbook_path(checkout), extra_vars={"node": "node4"})
    print(f"$ {' '.join(cmd.argv)}  (bounded at {bound:.0f} s)", flush=True)
    # The lab's playbook environment (no quick-unreachable wrapper): upstream's ConnectionAttempts=100
    # applies, as on a real checkout.
    run = kubespray.run(cmd, timeout=bound, check=False, env=cluster.playbook_env(),
                        log_path=workdir / "remove-node-without-flags.log")
    how = ("still running at the bound (killed)" if run.timed_out else
           f"exit {run.rc}" + (", node4 unreachable" if run.recap.get("node4") and run.recap["node4"].unreachable
                               else ""))
    return {"duration_s": run.duration, "ended": how}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inventory-dir", default=None, help="an installed cluster's inventory dir (skips the install)")
    ap.add_argument("--without-bound", type=float, default=1800.0, help="bound of the run without the flags, s")
    ap.add_argument("--kubespray", default="v2.19", choices=["v2.19", "v2.31"])
    args = ap.parse_args(argv)
    lab = Lab()
    lab.up(nodes=5)
    checkout = cluster.kubespray_dir(args.kubespray)
    server = serve_app_name(lab.description())  # the app's DNS name, as the install runbook checks it
    with tempfile.TemporaryDirectory(prefix="remove-worker-bench-") as tmp:
        workdir = Path(tmp)
        try:
            installed = Path(args.inventory_dir) if args.inventory_dir else install_afresh(lab, workdir, checkout)
            flags = _with_flags(_fresh(lab, installed, workdir, "with-flags"), workdir, checkout)
            print(f"with the dead-node flags (remove-worker runbook): {flags['line']}\n"
                  f"  end to end {flags['total_s']:.0f} s, remove-node.yml {flags['remove_node_s']:.0f} s", flush=True)
            bare = _without_flags(_fresh(lab, installed, workdir, "without-flags"), checkout, args.without_bound,
                                  workdir)
            print(f"without the flags (plain remove-node.yml -e node=node4): {bare['duration_s']:.0f} s, "
                  f"{bare['ended']}")
            print(f"ratio without / with (remove-node.yml alone): {bare['duration_s'] / max(flags['remove_node_s'], 1):.1f}x"
                  + (" (a lower bound: the run was killed)" if "killed" in bare["ended"] else ""))
        finally:
            server.stop()
            lab.restore_all(SNAPSHOT)
            cluster.close_ssh_masters()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
