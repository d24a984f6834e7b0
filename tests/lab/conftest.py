"""One lab for the whole test run: five machines booted once, torn down at the end.

The lab tests need root, debootstrap and systemd-nspawn (installed by `make setup`).
They fail, not skip, when those are missing: a lab test that does not run proves nothing.
Destructive tests put machines back (power on, restore a snapshot) in their own teardown.
"""

from __future__ import annotations

import os

import pytest

from runbooks_lib.lab.machines import Lab

# The installed-cluster fixtures live in their own module; importing them here registers them.
from tests.lab.cluster_fixtures import kubespray_cluster, restored_cluster  # noqa: E402,F401

LAB_NODES = 5


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The lab, fresh unless one is already running (then it is reused, completed and left running)."""
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root: run `make test` as root")
    lab = Lab()
    states = [row.state for row in lab.status()]
    reuse = any(state in ("running", "frozen") for state in states)
    if not reuse:
        # Stopped leftovers from an earlier run could hide install steps: start from blank disks.
        lab.down(purge=True)
    lab.up(nodes=LAB_NODES)
    yield lab
    if not reuse:
        lab.down(purge=True)


@pytest.fixture
def running_lab(lab: Lab) -> Lab:
    """The session lab with every machine running (a previous test may have left one off)."""
    for row in lab.status():
        if row.state != "running":
            lab.poweron(row.name)
    lab.heal()
    return lab
