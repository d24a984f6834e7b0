"""A real ansible-playbook run through runbooks_lib.kubespray, against localhost.

The checkout is tests/data/kubespray_stub copied to a temp dir: laid out like
Kubespray (cluster.yml, playbooks/facts.yml, ansible.cfg with a jsonfile fact
cache, roles with Kubespray-like task names). Hosts use
``ansible_connection=local``; the one unreachable host points at a closed
loopback port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runbooks_lib import errors, kubespray
from runbooks_lib.lab import cluster
from runbooks_lib.lab.config import LabConfig
from tests.waiting import wait_until

pytestmark = pytest.mark.local

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "tests" / "data" / "kubespray_stub"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
LOCAL_HOST = f"ansible_connection=local ansible_python_interpreter={sys.executable}"


@pytest.fixture
def checkout(tmp_path: Path) -> kubespray.Checkout:
    if not ANSIBLE_PLAYBOOK.is_file():
        pytest.fail(f"{ANSIBLE_PLAYBOOK} missing: install ansible-core into the venv")
    root = tmp_path / "kubespray"
    shutil.copytree(STUB, root)
    return kubespray.detect(root)


def _inventory(tmp_path: Path, extra_etcd: str = "") -> Path:
    path = tmp_path / "inventory" / "inventory.ini"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        "[kube_control_plane]\n"
        f"node1 {LOCAL_HOST}\n"
        f"node2 {LOCAL_HOST}\n\n"
        f"[etcd]\nnode1\nnode2\n{extra_etcd}\n"
        "[kube_node]\nnode1\nnode2\n\n"
        "[k8s_cluster:children]\nkube_control_plane\nkube_node\n"
    )
    return path


def _command(checkout: kubespray.Checkout, inventory: Path, tmp_path: Path, playbook: str = "cluster",
             **extra: object) -> kubespray.PlaybookCommand:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    known_hosts = tmp_path / "known_hosts"  # ansible_connection=local: nothing is pinned, nothing connects
    known_hosts.touch()
    return kubespray.command(checkout, playbook, inventory=inventory, known_hosts=known_hosts,
                             ansible_playbook=ANSIBLE_PLAYBOOK,
                             become=False, extra_vars={"marker_dir": str(markers), **extra})


def test_facts_then_cluster_streams_live_and_parses_recap(checkout: kubespray.Checkout, tmp_path: Path) -> None:
    inventory = _inventory(tmp_path)
    assert checkout.playbook("facts") == Path("playbooks/facts.yml")
    facts = kubespray.run(_command(checkout, inventory, tmp_path, "facts"), timeout=120)
    assert facts.ok and set(facts.recap) == {"node1", "node2"}
    # cwd was the checkout: its ansible.cfg's jsonfile fact cache now holds both hosts
    cached = sorted(p.name for p in (checkout.path / ".fact_cache").iterdir())  # "node1" or "s1_node1" (2.19)
    assert len(cached) == 2 and cached[0].endswith("node1") and cached[1].endswith("node2")

    arrivals: list[tuple[float, str]] = []
    log = tmp_path / "logs" / "cluster.log"
    cmd = _command(checkout, inventory, tmp_path, step_sleep=2)
    run = kubespray.run(cmd, timeout=120, on_line=lambda line: arrivals.append((time.monotonic(), line)),
                        log_path=log)
    assert run.ok and run.rc == 0 and run.failed_tasks == ()
    assert run.recap["node1"].changed == 1 and run.recap["node1"].failed == 0
    assert run.recap["node1"].ignored == 1  # the probe that is allowed to fail
    assert (tmp_path / "markers" / "node1").read_text() == "node1\n"
    # Streaming: the task before the 2 s sleep was shown well before the run ended. (Task banners
    # appear with their first host result because the stub, like Kubespray, sets
    # display_skipped_hosts = no.)
    lines = [line for _t, line in arrivals]
    marker_task = next(t for t, line in arrivals if line.startswith("TASK [bootstrap : Bootstrap | Write marker file]"))
    recap_at = next(t for t, line in arrivals if line.startswith("PLAY RECAP"))
    assert recap_at - marker_task > 1.5
    assert not any("\x1b[" in line for line in lines)
    log_text = log.read_text()
    assert "PLAY RECAP" in log_text and "exit 0 after" in log_text
    assert run.duration > 2


def test_failing_task_is_reported_with_task_host_and_message(checkout: kubespray.Checkout, tmp_path: Path) -> None:
    inventory = _inventory(tmp_path)
    cmd = _command(checkout, inventory, tmp_path, fail_hosts=["node2"])
    with pytest.raises(errors.PlaybookFailed) as info:
        kubespray.run(cmd, timeout=120, log_path=tmp_path / "fail.log")
    message = str(info.value)
    assert "ansible-playbook cluster.yml failed (exit 2)" in message
    assert "task [etcd : Configure | Check if etcd cluster is healthy] failed on node2" in message
    assert "cluster is unhealthy: context deadline exceeded" in message
    assert "Probe that is allowed to fail" not in message  # ignored errors are not failures
    assert info.value.host == "node2" and info.value.exit_code == 2
    run = kubespray.run(cmd, timeout=120, check=False)
    assert run.recap["node2"].failed == 1 and run.recap["node1"].failed == 0
    assert run.failed_hosts == ["node2"]


def test_unreachable_host_is_reported(checkout: kubespray.Checkout, tmp_path: Path) -> None:
    if shutil.which("ssh") is None:
        pytest.fail("ssh client missing (openssh-client)")
    dead = "node3 ansible_host=127.0.0.1 ansible_port=1 ansible_user=root\n"
    inventory = _inventory(tmp_path, extra_etcd=dead)
    run = kubespray.run(_command(checkout, inventory, tmp_path), timeout=120, check=False)
    assert not run.ok and run.rc == 4
    assert run.unreachable_hosts == ["node3"]
    assert run.recap["node3"].unreachable == 1
    unreachable = [t for t in run.failed_tasks if t.status == "unreachable"]
    assert unreachable[0].host == "node3" and "Connection refused" in unreachable[0].message


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_timeout_kills_the_playbook_and_names_the_task(checkout: kubespray.Checkout, tmp_path: Path) -> None:
    inventory = _inventory(tmp_path)
    pid_file = tmp_path / "hang.pid"
    cmd = _command(checkout, inventory, tmp_path, hang_pid_file=str(pid_file))
    start = time.monotonic()
    with pytest.raises(errors.WaitTimedOut) as info:
        kubespray.run(cmd, timeout=20, log_path=tmp_path / "hang.log")
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "ansible-playbook cluster.yml did not finish" in message
    # The hanging task's banner is deferred until a host finishes it (display_skipped_hosts = no,
    # as in Kubespray's ansible.cfg), so the last task shown is the one before.
    assert "last task shown: [etcd : Configure | Check if etcd cluster is healthy]" in message
    assert elapsed < 20 + 12  # timeout plus the kill grace periods, not the 120 s sleep
    pid = int(pid_file.read_text().split()[0])
    wait_until(lambda: not _alive(pid), 5, f"the task's sleep (pid {pid}) to die with the playbook's group")
    assert "timed out, process group killed" in (tmp_path / "hang.log").read_text()


def test_dry_run_runs_nothing(checkout: kubespray.Checkout, tmp_path: Path) -> None:
    cmd = _command(checkout, _inventory(tmp_path), tmp_path, "remove-node", node="node2")
    run = kubespray.run(cmd, timeout=120, dry_run=True)
    assert run.dry_run and run.rc is None
    assert cmd.argv[3:6] == ("remove-node.yml", "-e", "skip_confirmation=yes")
    assert "-e node=node2" in str(run.command)
    assert not (checkout.path / ".fact_cache").exists()


def test_remove_node_does_not_wait_for_a_prompt(checkout: kubespray.Checkout, tmp_path: Path) -> None:
    inventory = _inventory(tmp_path)
    (tmp_path / "markers").mkdir(exist_ok=True)
    (tmp_path / "markers" / "node2").write_text("node2\n")
    run = kubespray.run(_command(checkout, inventory, tmp_path, "remove-node", node="node2"), timeout=120)
    assert run.ok and list(run.recap) == ["node2"]
    assert not (tmp_path / "markers" / "node2").exists()
    # Without the no-prompt var the confirmation cannot be answered headless and the run fails.
    cmd = _command(checkout, inventory, tmp_path, "remove-node", node="node2", skip_confirmation="no")
    with pytest.raises(errors.PlaybookFailed, match="Delete nodes confirmation failed"):
        kubespray.run(cmd, timeout=120)


def _plays(checkout: Path, playbook: str, *extra: str) -> dict[str, list[str]]:
    """``ansible-playbook --list-hosts``: each play's name -> its hosts (nothing connects, nothing runs)."""
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "inventory/sample/hosts.yaml", "--list-hosts", playbook, *extra],
                          cwd=checkout, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plays: dict[str, list[str]] = {}
    current = None
    for line in proc.stdout.splitlines():
        if line.strip().startswith("play #"):
            current = line.split("): ", 1)[1].split("\t")[0].strip()
            plays[current] = []
        elif current and line.startswith("      ") and line.strip():
            plays[current].append(line.strip())
    return {name: sorted(hosts) for name, hosts in plays.items()}


def test_remove_node_without_node_removes_every_worker_in_v2_19_and_nothing_in_v2_31(tmp_path: Path) -> None:
    """Kubespray v2.19's remove-node.yml falls back to kube_node without `-e node`; v2.28+ refuse."""
    v219 = _plays(cluster.KUBESPRAY_DIR, "remove-node.yml", "-e", "skip_confirmation=yes")
    assert v219["Reset node"] == ["node3", "node4"]  # the sample's every kube_node host
    assert v219["Post node removal"] == ["node2", "node3"]  # kube_control_plane[1:]:etcd[1:]
    v231 = _plays(cluster.kubespray_dir("v2.31", LabConfig(state_dir=tmp_path)), "remove-node.yml",
                  "-e", "skip_confirmation=yes")
    assert v231["Validate nodes for removal"] == ["localhost"]
    assert v231["Reset node"] == [] and v231["Post node removal"] == []
    # With -e node both eras target that node only.
    assert _plays(cluster.KUBESPRAY_DIR, "remove-node.yml", "-e", "node=node4")["Reset node"] == ["node4"]


def test_the_quick_unreachable_ssh_keeps_every_option_but_the_attempts(tmp_path: Path) -> None:
    """ssh-quick-unreachable (for tests that put a dead host in a play) changes ConnectionAttempts only."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (fake / "ssh").chmod(0o755)
    wrapper = cluster.quick_unreachable_env()["ANSIBLE_SSH_EXECUTABLE"]
    argv = ["-o", "ConnectionAttempts=100", "-o", "UserKnownHostsFile=/k h", "-o", "StrictHostKeyChecking=yes",
            "root@10.0.0.1", "echo a b"]
    proc = subprocess.run([wrapper, *argv], capture_output=True, text=True, timeout=10,
                          env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert proc.stdout.splitlines() == ["-o", "ConnectionAttempts=1", *argv[2:]]
