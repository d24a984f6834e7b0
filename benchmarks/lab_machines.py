"""Benchmark the lab's machines: base image build, `up` of 5 machines with a cached image, `down`.

Prints measured figures; it is not a test. Run as root: `.venv/bin/python benchmarks/lab_machines.py`.
The build is measured into a temporary cache so the real cache is not disturbed (pass --skip-build to
leave it out). Figures depend on this machine (2 cores) and the mirror's speed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from runbooks_lib.lab import image
from runbooks_lib.lab.config import LabConfig
from runbooks_lib.lab.machines import Lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.skip_build:
        scratch = Path(tempfile.mkdtemp(prefix="lab-bench-cache-", dir="/var/tmp"))
        try:
            started = time.monotonic()
            image.ensure_image(LabConfig(cache_dir=scratch), log=lambda m: None)
            print(f"base image build (debootstrap + configuration + Python packages): {time.monotonic() - started:.1f} s")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    lab = Lab()
    image.ensure_image(lab.config, log=lambda m: None)
    ups, downs = [], []
    lab.down()
    for _ in range(args.rounds):
        started = time.monotonic()
        lab.up(nodes=5)
        ups.append(time.monotonic() - started)
        started = time.monotonic()
        lab.down()
        downs.append(time.monotonic() - started)
    print(f"up, 5 machines, cached image, until SSH answers on all: "
          f"median {statistics.median(ups):.1f} s (runs: {', '.join(f'{u:.1f}' for u in ups)})")
    print(f"down: median {statistics.median(downs):.2f} s (runs: {', '.join(f'{d:.2f}' for d in downs)})")
    print(f"machine: {os.cpu_count()} cores; target: up < 20 s")


if __name__ == "__main__":
    main()
