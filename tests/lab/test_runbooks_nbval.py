"""nbval over the runbooks in the operator's order, against the session's installed lab cluster.

nbval runs each committed notebook with its own defaults and compares the cells marked
``# NBVAL_CHECK_OUTPUT`` (plans and summaries) with the committed outputs. The defaults of the
destructive runbooks are dry runs, so prepare-nodes and install-cluster stop after their plans
here; their real runs are covered by ``runbooks run`` in test_runbook_prepare.py and by the
session's one install (cluster_fixtures.py). How nbval finds the lab: the defaults follow
``RUNBOOKS_LAB_DIR`` (SSH key, known_hosts), ``RUNBOOKS_LAB_INVENTORY_DIR`` (inventory and
kubeconfig: the install's inventory directory), ``RUNBOOKS_LAB_DNS`` (the lab's DNS server) and
``RUNBOOKS_LAB_VIP`` (the failover drill's floating IP, checked free in its preflight). The failover
drill's default is a dry run too (validate, preflight, plan); its real run is test_runbook_failover.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runbooks_lib.lab import cluster
from runbooks_lib.lab.config import LabConfig
from tests.lab.cluster_fixtures import SNAPSHOT, LabCluster

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
IN_ORDER = ("10-prepare-nodes.ipynb", "20-install-cluster.ipynb", "30-diagnostics.ipynb", "40-add-worker.ipynb",
            "41-remove-worker.ipynb", "50-replace-control-plane.ipynb",
            # etcd-snapshot runs for real (non-destructive); restore-cluster's dry run on the healthy cluster
            # shows its plan and that a real run would be refused (quorum healthy), without an error cell.
            "60-etcd-snapshot.ipynb", "61-restore-cluster.ipynb", "70-failover-test.ipynb")


def test_nbval_over_the_runbooks_in_order(kubespray_cluster: LabCluster, tmp_path: Path) -> None:
    c = kubespray_cluster
    env = {**os.environ, "PYTHONPATH": str(REPO), "RUNBOOKS_RUNS_DIR": str(tmp_path / "runs"),
           "RUNBOOKS_PARAMS": "params/lab.yaml", "RUNBOOKS_LAB_DIR": str(LabConfig().state_dir),
           "RUNBOOKS_LAB_INVENTORY_DIR": str(c.inventory_dir),
           "RUNBOOKS_LAB_DNS": c.description["host_ip"], "RUNBOOKS_LAB_SPARE_IP": c.ip("node5"),
           "RUNBOOKS_LAB_VIP": str(c.lab.config.network.network_address + 100)}
    notebooks = [f"notebooks/{name}" for name in IN_ORDER]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-v", "--nbval-lax", "--nbval-current-env", "-p", "no:python",
             "-p", "no:cacheprovider", "-p", "no:randomly", "--nbval-sanitize-with", "tests/nbval-sanitize.cfg",
             "--nbval-cell-timeout", "300", "-o", "addopts=", *notebooks],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    finally:
        c.lab.heal()
        c.lab.restore_all(SNAPSHOT)
        cluster.close_ssh_masters()
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:] + proc.stderr[-2000:]
    # Every notebook ran (-v names each cell), in the order given.
    # nbval names its items after the notebook's stem ("notebooks/10-prepare-nodes::ipynb::Cell 0").
    positions = [out.find(f"notebooks/{name.removesuffix('.ipynb')}") for name in IN_ORDER]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out[-3000:]
    assert " passed" in out.splitlines()[-1] and "failed" not in out.splitlines()[-1]
