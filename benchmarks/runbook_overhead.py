"""Runbook overhead: the install runbook through papermill against cluster.yml called directly, and `make demo`.

Usage (root): .venv/bin/python benchmarks/runbook_overhead.py [--skip-demo] [--keep]

Prints measured figures (not a test):

1. ``make demo`` wall time on this machine with the lab's base image cached: the lab is
   taken down and its disks deleted first (``runbooks lab down --purge``; the image in
   the cache stays), so the demo boots fresh machines. ``--skip-demo`` leaves this out
   (and the lab as it is).
2. The install runbook's overhead: from one saved state of the lab (fresh disks, nodes
   prepared by the prepare-nodes runbook when it exists), the install-cluster runbook
   is run through :func:`runbooks_lib.runner.run` (papermill, the ``runbooks run`` code
   path), the machines are put back, and ``ansible-playbook cluster.yml`` is run directly
   with the inventory the runbook wrote. The ratio runbook / cluster.yml is the figure
   (target <= 1.1); the runbook's time is split into cells (its own work: verify, test
   app, DNS) and what papermill and the kernel add between cells.

Fails at once, changing nothing, when notebooks/*-install-cluster.ipynb does not exist.
Side effects: the lab's machines are reimaged and reinstalled; their disks as they were
before step 2 are put back at the end unless --keep. Records and logs go to a temporary
directory (printed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runbooks_lib import errors, runner
from runbooks_lib.lab import cluster, demo
from runbooks_lib.lab.machines import Lab

SAVED = "before-runbook-overhead-benchmark"
BASE = "runbook-overhead-base"
TARGET_RATIO = 1.1
DEMO_TIMEOUT_S = 3600.0


def _runbook(name: str) -> runner.Runbook:
    try:
        return runner.find(name)
    except errors.BadParameters:
        raise SystemExit(f"benchmarks/runbook_overhead.py: no {name} runbook in {runner.notebooks_dir()} "
                         f"(notebooks/NN-{name}.ipynb); this benchmark measures it, so it cannot run yet. "
                         "Nothing was changed.") from None


def _print(label: str, value: str) -> None:
    print(f"{label:<52} {value}", flush=True)


def time_demo() -> float:
    """`runbooks lab down --purge`, then `make demo` timed (the image cache is kept)."""
    Lab().down(purge=True)
    started = time.monotonic()
    proc = subprocess.run(["make", "demo", f"VENV={sys.prefix}"], cwd=runner.repo_root(), timeout=DEMO_TIMEOUT_S,
                          check=False)
    elapsed = time.monotonic() - started
    _print("make demo (image cached, fresh machines)", f"{elapsed:7.1f} s (exit {proc.returncode})")
    return elapsed


def cell_seconds(output: Path) -> list[tuple[float, str]]:
    """(duration, first line) of every executed cell of a papermill output notebook, longest first."""
    nb = json.loads(output.read_text())
    cells = []
    for cell in nb["cells"]:
        duration = (cell.get("metadata", {}).get("papermill") or {}).get("duration")
        if cell["cell_type"] == "code" and duration is not None:
            source = "".join(cell["source"]).strip().splitlines()
            cells.append((float(duration), source[0][:60] if source else ""))
    return sorted(cells, reverse=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-demo", action="store_true", help="do not measure `make demo` (keeps the lab as it is)")
    p.add_argument("--keep", action="store_true", help="leave the last installed cluster on the lab")
    args = p.parse_args(argv)
    install = _runbook("install-cluster")  # before anything changes
    work = Path(tempfile.mkdtemp(prefix="runbook-overhead-"))
    print(f"records and logs: {work}", flush=True)
    if not args.skip_demo:
        time_demo()

    lab = Lab()
    lab.up(nodes=5)
    lab.snapshot_all(SAVED)
    try:
        cluster.fresh_machines(lab)
        description = lab.description()
        inventory_dir = work / "inventory"
        hosts = cluster.write_inventory(inventory_dir, description)  # what `runbooks lab cluster --no-install` does
        demo.prepare_lab(lab, description)  # the app's DNS record on the lab's DNS
        target = {"inventory": str(hosts), "kubeconfig": str(inventory_dir / "artifacts" / "admin.conf"),
                  "ansible_env": cluster.playbook_env()}
        files = [demo.PARAMS_FILE]
        try:
            prepare = runner.find("prepare-nodes")
        except errors.BadParameters:
            print("prepare-nodes runbook missing: installing on unprepared machines", flush=True)
        else:
            overrides = {**next(i for i in demo.RUNBOOKS if i.name == "prepare-nodes").parameters(description),
                         "inventory": target["inventory"]}
            result = runner.run(prepare, files=files, overrides=overrides, progress_bar=False, runs=work / "runs")
            print(result.line(), flush=True)
            if result.status != "ok":
                return 1
        lab.snapshot_all(BASE)

        overrides = {**next(i for i in demo.RUNBOOKS if i.name == "install-cluster").parameters(description), **target}
        result = runner.run(install, files=files, overrides=overrides, progress_bar=False, runs=work / "runs")
        print(result.line(), flush=True)
        if result.status != "ok" or result.output is None:
            return 1
        runbook_s = result.duration_s
        kept = work / "inventory-written-by-the-runbook"
        shutil.copytree(inventory_dir, kept, ignore=shutil.ignore_patterns("artifacts", "*.log"))

        lab.restore_all(BASE)
        cluster.close_ssh_masters()
        started = time.monotonic()
        cluster.run_playbook("cluster.yml", kept / hosts.name, known_hosts=description["known_hosts"],
                             log_path=work / "direct-cluster.yml.log")
        direct_s = time.monotonic() - started

        cells = cell_seconds(result.output)
        in_cells = sum(d for d, _ in cells)
        ratio = runbook_s / direct_s
        print()
        _print("install-cluster runbook via papermill (wall)", f"{runbook_s:7.1f} s")
        _print("  in its cells", f"{in_cells:7.1f} s")
        _print("  papermill, kernel start, saves between cells", f"{runbook_s - in_cells:7.1f} s")
        for duration, first in cells[:3]:
            _print(f"  cell: {first}", f"{duration:7.1f} s")
        _print("cluster.yml called directly (same inventory, same disks)", f"{direct_s:7.1f} s")
        _print("ratio runbook / direct", f"{ratio:7.2f} (target <= {TARGET_RATIO}: "
                                         f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})")
        _print("ratio without the runbook's own verify cells", f"{(direct_s + runbook_s - in_cells) / direct_s:7.2f}"
               " (cluster.yml + papermill overhead only)")
    finally:
        if not args.keep:
            lab.restore_all(SAVED)
            cluster.close_ssh_masters()
    return 0


if __name__ == "__main__":
    sys.exit(main())
