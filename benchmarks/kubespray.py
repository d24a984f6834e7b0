"""Time the lab's Kubespray stand-in: cluster.yml on the 5-machine lab, scale.yml --limit for one worker.

Usage (root, lab up): .venv/bin/python benchmarks/kubespray.py [--inventory-dir DIR] [--keep]

Side effects: every machine's disk is saved, then reimaged (fresh disks, new host
keys), the cluster installed on node1..node4 (2 control planes, 3 etcd, 2
workers), and node5 added as a worker with facts.yml + scale.yml --limit=node5.
The saved disks are put back at the end unless --keep.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

from runbooks_lib.lab import cluster
from runbooks_lib.lab.machines import Lab

SNAPSHOT = "before-kubespray-benchmark"


def _timed(label: str, playbook: str, inventory: Path, **kwargs) -> float:
    started = time.monotonic()
    cluster.run_playbook(playbook, inventory, **kwargs)
    elapsed = time.monotonic() - started
    print(f"{label:<40} {elapsed:7.1f} s", flush=True)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inventory-dir", default=None, help="default: a temporary directory")
    p.add_argument("--keep", action="store_true", help="leave the installed cluster on the lab")
    args = p.parse_args(argv)
    lab = Lab()
    lab.up(nodes=5)
    lab.snapshot_all(SNAPSHOT)
    inventory_dir = Path(args.inventory_dir or tempfile.mkdtemp(prefix="kubespray-bench-"))
    try:
        cluster.fresh_machines(lab)
        description = lab.description()
        hosts = cluster.write_inventory(inventory_dir, description)
        print(f"lab: {len(description['machines'])} machines; inventory {hosts}", flush=True)
        known = description["known_hosts"]
        _timed("cluster.yml (2 cp, 3 etcd, 2 workers)", "cluster.yml", hosts, known_hosts=known)
        _timed("cluster.yml again (idempotent)", "cluster.yml", hosts, known_hosts=known)
        doc = yaml.safe_load(hosts.read_text())
        ip = next(m["ip"] for m in description["machines"] if m["name"] == "node5")
        doc["all"]["hosts"]["node5"] = {"ansible_host": ip, "ip": ip, "access_ip": ip}
        doc["all"]["children"]["kube_node"]["hosts"]["node5"] = None
        hosts.write_text(yaml.safe_dump(doc, sort_keys=False))
        _timed("facts.yml", "facts.yml", hosts, known_hosts=known)
        _timed("scale.yml --limit=node5", "scale.yml", hosts, known_hosts=known, limit="node5")
    finally:
        if not args.keep:
            lab.restore_all(SNAPSHOT)
            cluster.close_ssh_masters()
    return 0


if __name__ == "__main__":
    sys.exit(main())
