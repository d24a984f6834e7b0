"""The committed notebooks' outputs are an honest record of a run on the default lab.

A reader takes a committed notebook for what a run looks like: it must not show paths of a private
development lab or worktree, versions it could not read, or a dry run where the README presents a
real one. Re-execute a notebook on the default lab (``make demo``'s lab, /var/lib/runbooks-lab) to fix it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# The README presents these as real runs (the others' committed outputs are dry runs or refusals).
REAL_RUNS = ("20-install-cluster", "30-diagnostics", "40-add-worker", "60-etcd-snapshot", "70-failover-test")
# What only a private run shows: temporary directories, numbered or moved labs, other worktrees.
PRIVATE = re.compile(r"(?<![\w.-])/tmp/[\w.-]+|/var/lib/runbooks-lab-[\w.-]+|runbooks-lab-\d+|/work/wt-[\w.-]+"
                     r"|/root/[\w.-]+")
UNKNOWN = re.compile(r"\bunknown \(unknown\)|Kubespray unknown\b")


def _outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_outputs_show_no_private_path_and_no_unknown_version(notebook: Path) -> None:
    text = _outputs(notebook)
    assert not PRIVATE.findall(text), f"{notebook.name} shows {sorted(set(PRIVATE.findall(text)))[:5]}"
    assert not UNKNOWN.search(text), f"{notebook.name}: {UNKNOWN.search(text)}"


@pytest.mark.parametrize("stem", REAL_RUNS)
def test_real_runs_are_not_dry_runs_or_refusals(stem: str) -> None:
    text = _outputs(NOTEBOOKS / f"{stem}.ipynb")
    assert "DRY RUN" not in text and "REFUSED" not in text, stem


def test_the_checks_catch_what_they_are_for() -> None:
    assert PRIVATE.findall('"/tmp/lab-install/hosts.yaml" /var/lib/runbooks-lab-8/ssh /work/wt-snapshot/x')
    assert not PRIVATE.findall('"/var/lib/runbooks-lab/ssh/known_hosts" /var/lib/etcd /etc/kubernetes/admin.conf')
    assert UNKNOWN.search("Kubespray unknown (unknown) at /x") and not UNKNOWN.search("Kubespray v2.19.0 (galaxy.yml)")
