"""Host keys on playbook runs: the stand-in's ansible.cfg trusts any key (as Kubespray's does), the
library's runs verify every key against the lab's known_hosts anyway.

A reimaged machine (fresh disk, same IP, new host key) whose new key is not pinned must stop the
run before any task runs on it, with both fingerprints and the fix; after the new key is pinned
deliberately the same run passes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runbooks_lib import errors, knownhosts, local
from runbooks_lib.lab import cluster
from tests.lab.cluster_fixtures import LabCluster

pytestmark = pytest.mark.lab

VICTIM = "node5"  # the spare machine: restored_cluster puts every disk (and its pinned key) back


def test_reimaged_node_with_unpinned_key_fails_before_any_task(restored_cluster: LabCluster) -> None:
    c = restored_cluster
    known = Path(c.description["known_hosts"])
    ip = c.ip(VICTIM)
    c.add_host(VICTIM)
    doc = c.inventory()
    doc["all"]["children"]["kube_node"]["hosts"][VICTIM] = None
    c.write_inventory(doc)

    def facts(check: bool = True):
        return cluster.run_playbook("facts", c.hosts, known_hosts=known, limit=VICTIM, timeout=300, check=check)

    assert facts().ok  # its key is pinned: the run goes through
    pins_before = known.read_text()
    change = c.lab.reimage(VICTIM)
    cluster.close_ssh_masters()
    assert change.old_fingerprint != change.new_fingerprint
    known.write_text(pins_before)  # the operator's known_hosts still pins the old key

    with pytest.raises(errors.HostKeyError) as info:
        facts()
    text = str(info.value)
    assert info.value.host == VICTIM and f"{VICTIM} ({ip})" in text
    assert change.old_fingerprint in text and change.new_fingerprint in text
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in text
    assert f"ssh-keygen -R {ip}" in text and "console" in text

    # A hostile inventory that would accept the changed key is refused before anything runs.
    hostile = c.inventory_dir / "host_vars" / f"{VICTIM}.yml"
    hostile.parent.mkdir(exist_ok=True)
    hostile.write_text('ansible_ssh_args: "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"\n')
    log = c.inventory_dir / "hostile.log"
    with pytest.raises(errors.PreconditionFailed, match=f"host {VICTIM} sets ansible_ssh_args") as refused:
        cluster.run_playbook("facts", c.hosts, known_hosts=known, limit=VICTIM, timeout=300, log_path=log)
    assert "nothing was run" in str(refused.value) and not log.exists()
    hostile.unlink()
    # The presented key is the one the machine offers (ssh-keyscan: for the test's comparison only).
    assert change.new_fingerprint in [k.fingerprint for k in knownhosts.scan(ip)]
    run = info.value.run  # type: ignore[attr-defined]
    # Only the controller-side checks ran (dynamic groups, inventory asserts: "ok" without a connection);
    # the first task that needed the host stopped the run, so nothing ran or changed on it.
    stats = run.recap[VICTIM]
    assert (stats.changed, stats.failed, stats.unreachable) == (0, 0, 1), stats
    assert [(t.host, t.status) for t in run.failed_tasks] == [(VICTIM, "unreachable")]

    # An unpinned key (the old line removed, nothing added) is refused too, naming what the host offers.
    local.run(["ssh-keygen", "-R", ip, "-f", str(known)], timeout=30)
    with pytest.raises(errors.HostKeyError) as unpinned:
        facts()
    assert change.new_fingerprint in str(unpinned.value) and "pins no key" in str(unpinned.value)

    # Pin the new key deliberately: fetch it, compare with the machine's own console, then append.
    scanned = local.run(["ssh-keyscan", "-t", "ed25519", ip], timeout=30).stdout.strip()
    line = next(ln for ln in scanned.splitlines() if not ln.startswith("#"))
    assert knownhosts.fingerprint(line.split()[2]) == c.lab.fingerprint(VICTIM)  # the "console" check
    with known.open("a") as f:
        f.write(line + "\n")
    assert facts().ok


def test_plain_ansible_with_the_stand_ins_cfg_trusts_any_key(restored_cluster: LabCluster, tmp_path: Path) -> None:
    """Why the override is needed: the inventory's known_hosts loses to ansible.cfg's /dev/null."""
    c = restored_cluster
    empty = tmp_path / "known_hosts"
    empty.touch()
    # The inventory asks for checking against a file, as an operator would write it...
    (c.inventory_dir / "group_vars" / "all" / "ssh-check.yml").write_text(
        f'ansible_ssh_common_args: "-o UserKnownHostsFile={empty} -o StrictHostKeyChecking=yes"\n')
    ansible = cluster.ansible_playbook_path().parent / "ansible"
    env = {**cluster.playbook_env(), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")}
    proc = subprocess.run([str(ansible), "-i", str(c.hosts), "node4", "-m", "ping", "-vvvv"], cwd=cluster.KUBESPRAY_DIR,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    # ...but ansible.cfg's options come first on the ssh command line, and OpenSSH takes the first value.
    assert "-o UserKnownHostsFile=/dev/null" in proc.stdout
    assert proc.stdout.index("UserKnownHostsFile=/dev/null") < proc.stdout.index(f"UserKnownHostsFile={empty}")
    assert "Permanently added" in proc.stdout + proc.stderr
    # Through the library the same inventory is refused: the key is not in the (empty) file given.
    with pytest.raises(errors.HostKeyError, match="node4"):
        cluster.run_playbook("facts", c.hosts, known_hosts=empty, limit="node4", timeout=300)
