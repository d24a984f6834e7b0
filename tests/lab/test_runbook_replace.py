"""The replace-control-plane runbook against the lab, through ``runbooks run``.

With node1 (the first control plane and the first etcd member) hard powered off:
- a new machine (node5), on a cluster the install runbook installed with the
  v2.31 stand-in's checkout on fresh disks: the run is killed just after the
  etcd member remove, re-run, and converges;
- the same IP (node1 reinstalled, its new key pinned as the operator would), on
  a cluster installed by the install runbook on the source article's pair of
  addresses (node1 .5, node2 .53) with the v2.19 checkout, where Kubespray's
  membership grep takes .5 for .53: the run is killed during cluster.yml,
  re-run, and converges (without the `member add` first, the same re-add ends in
  "member count is unequal": tests/lab/test_kubespray_eras.py);
- a dry run changes nothing, and every refusal changes nothing.

This replaces the stand-in's playbook-level replace tests: the same path
(member remove, cluster-info, inventory, upgrade-cluster with
ignore_assert_errors, cluster.yml --limit=etcd,kube_control_plane, the same-IP
``member add`` first) is walked here by the runbook.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runbooks_lib import ingress, runner
from runbooks_lib.lab import cluster, dns
from tests.lab.cluster_fixtures import APP_HOST, LabCluster, install_params, replace_params, run_install
from tests.lab.processes import kill_run
from tests.lab.test_runbook_snapshot import run as run_book
from tests.lab.test_runbook_snapshot import summary as read_summary
from tests.lab.test_runbook_snapshot import target_params
from tests.waiting import wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CELL_TIMEOUT = 1200.0
MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"


def run_replace(params: Path, runs: Path, **overrides: object) -> runner.RunResult:
    return runner.run(runner.find("replace-control-plane"), files=[params], overrides=overrides, runs=runs,
                      progress_bar=False, cell_timeout=CELL_TIMEOUT)


def _summary(result: runner.RunResult) -> dict:
    return json.loads(Path(result.summary_path).read_text())


def _members(c: LabCluster, on: str = "node2") -> list[dict]:
    return json.loads(c.etcdctl(on, "member", "list", "-w", "json").stdout)["members"]


def _start_cli(params: Path, runs: Path) -> subprocess.Popen:
    """``runbooks run replace-control-plane`` as an operator starts it, in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "runbooks_lib.cli", "run", "replace-control-plane", "-f", str(params),
         "--runs-dir", str(runs), "--no-progress", "-p", "dry_run", "False", "-p", "confirm", "lab"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the run and everything it started (the kernel, ansible-playbook, ssh)."""
    kill_run(proc)
    cluster.close_ssh_masters()


def _assert_replaced(c: LabCluster, result: runner.RunResult, new: str) -> dict:
    assert result.exit_code == 0, result.line()
    summary = _summary(result)
    assert summary["replaced"] is True, summary["verdict"]
    names = [m["name"] for m in _members(c)]
    assert len(names) == 3 and all(names), names
    health = json.loads(c.etcdctl("node2", "endpoint", "health", "--cluster", "-w", "json").stdout)
    assert sorted(h["endpoint"] for h in health if h["health"]) == sorted(
        f"https://{c.ip(n)}:2379" for n in ("node2", "node3", new))
    inv = c.inventory()["all"]["children"]
    assert list(inv["kube_control_plane"]["hosts"]) == ["node2", new]
    assert list(inv["etcd"]["hosts"]) == ["node2", "node3", new]
    want = f"--etcd-servers=https://{c.ip('node2')}:2379,https://{c.ip('node3')}:2379,https://{c.ip(new)}:2379"
    for node in ("node2", new):
        assert want in c.lab.ssh(node, ["cat", MANIFEST]).stdout
    assert summary["checks"]["ingress"] == sorted(["node2", "node3", "node4", new])
    return summary


def _installed_afresh(c: LabCluster, workdir: Path, era: str, addresses: dict[str, str] | None = None) -> LabCluster:
    """node1..node4 reinstalled, then the install runbook with ``era``'s checkout (node5 stays spare).

    With ``addresses`` (cluster.article_addresses), the machines get them as extra addresses and
    the inventory uses them as ip/access_ip (SSH stays on the lab's), as ``runbooks lab cluster
    --article-addresses`` writes it; the install runbook takes that inventory as it is.
    """
    for name in ("node1", "node2", "node3", "node4"):
        c.lab.reimage(name)
    cluster.close_ssh_masters()
    inventory_dir = workdir / f"installed-{era}"
    checkout = str(cluster.kubespray_dir(era))
    if addresses:
        cluster.add_addresses(c.lab, addresses)
        cluster.write_inventory(inventory_dir, c.description, addresses=addresses)
        layout: dict[str, object] = {"hosts": {}, "control_planes": [], "etcd_members": [], "workers": []}
    else:
        inventory_dir.mkdir(parents=True)
        layout = {}
    params = install_params(inventory_dir / "install.yaml", inventory_dir, c.description, kubespray_dir=checkout,
                            **layout)
    result = run_install(params, workdir / "install-runs", dry_run=False, confirm="lab")
    assert result.exit_code == 0, result.line()
    machines = [{**m, "ip": (addresses or {}).get(m["name"], m["ip"])} for m in c.description["machines"]]
    return LabCluster(c.lab, inventory_dir, {**c.description, "machines": machines})


@pytest.mark.timeout(2100)
def test_new_machine_on_a_v2_31_cluster_killed_after_member_remove_then_rerun_converges(
        restored_cluster: LabCluster, tmp_path: Path) -> None:
    c = _installed_afresh(restored_cluster, tmp_path, "v2.31")
    # v2.31 points admin.conf on every control plane at the first control plane (v2.19: 127.0.0.1).
    for node in ("node1", "node2"):
        conf = c.lab.ssh(node, ["grep", "server:", "/etc/kubernetes/admin.conf"]).stdout
        assert f"server: https://{c.ip('node1')}:6443" in conf, (node, conf)
    c.lab.poweroff("node1", mode="hard")
    # DNS follows the change through the operator's hook: here the lab's DNS, which serves the app's name.
    params = replace_params(c, tmp_path / "replace.yaml", kubespray_dir=str(cluster.kubespray_dir("v2.31")),
                            dns_server=c.description["host_ip"],
                            dns_command=[sys.executable, "-m", "runbooks_lib.cli", "lab", "dns", "set", "{name}", "{ips}"])
    runs = tmp_path / "runs"
    proc = _start_cli(params, runs)
    try:
        wait_until(lambda: (len(_members(c)) == 2 or proc.poll() is not None, "etcd1 still a member"), 600,
                   "the runbook to remove the dead etcd member", 0.5)
    finally:
        _kill(proc)
    assert sorted(m["name"] for m in _members(c)) == ["etcd2", "etcd3"]
    try:
        result = run_replace(params, runs, dry_run=False, confirm="lab")
        summary = _assert_replaced(c, result, "node5")
        # No dead address left in DNS, the new node in it: what a visitor's resolver now gets.
        assert sorted(ingress.resolve(APP_HOST, c.description["host_ip"])) == sorted(
            c.ip(n) for n in ("node2", "node3", "node4", "node5"))
        assert summary["dns"]["set_by_hook"] and not summary["dns"]["manual_step"], summary["dns"]
    finally:
        dns.set_records(APP_HOST, [c.ip(n) for n in ("node1", "node2", "node3", "node4")])
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["etcd member remove"]["detail"] == "already removed"
    assert steps["etcd member add"]["status"] == "skipped"  # 10.x.y.15 is nobody's substring here
    assert "node1" not in c.inventory()["all"]["hosts"]
    assert "2.31" in summary["kubespray"]["version"], summary["kubespray"]
    # The safety snapshot is a snapshot: in backup_dir with its manifest, the survivor's copy deleted, and
    # restore-cluster's preflight takes it by the name the summary's restore command gives.
    snap = Path(summary["snapshot"])
    assert snap.parent == tmp_path / "etcd-backups" and snap.with_suffix(".json").is_file(), snap
    assert summary["restore_command"].endswith(f"-p snapshot {snap.name}"), summary["restore_command"]
    left = c.lab.ssh("node2", ["sh", "-c", "ls /var/tmp/etcd-snapshot-* 2>/dev/null || true"]).stdout.strip()
    assert left == "", left
    dry = run_book("restore-cluster", target_params(c, tmp_path / "restore.yaml", snap.parent,
                                                    kubespray_dir=str(cluster.kubespray_dir("v2.31")),
                                                    ansible_env=cluster.playbook_env()),
                   runs, snapshot=snap.name)
    assert dry.exit_code == 0, dry.line()
    assert read_summary(dry)["snapshot"]["file"] == snap.name


@pytest.mark.timeout(2100)
def test_same_ip_on_the_articles_addresses_killed_during_cluster_yml_then_rerun_converges(
        restored_cluster: LabCluster, tmp_path: Path) -> None:
    a = _installed_afresh(restored_cluster, tmp_path, "v2.19", cluster.article_addresses())
    assert a.ip("node2").startswith(a.ip("node1"))  # .5 is a prefix of .53
    a.lab.poweroff("node1", mode="hard")
    a.lab.reimage("node1")  # a fresh disk and a new host key, pinned in the lab's known_hosts (the operator's step)
    a.lab.poweron("node1")
    cluster.add_addresses(a.lab, {"node1": a.ip("node1")})  # the provider gives the reinstalled VPS its address
    cluster.close_ssh_masters()
    params = replace_params(a, tmp_path / "replace.yaml", replacement="node1", replacement_ip=a.ip("node1"))
    runs = tmp_path / "runs"
    proc = _start_cli(params, runs)
    try:
        def in_cluster_yml() -> tuple[bool, str]:
            logs = [log for log in runs.glob("lab/*.log") if log.name.endswith("Z-cluster.yml.log")]
            return bool(logs and "TASK [" in logs[0].read_text()) or proc.poll() is not None, "cluster.yml not started"

        wait_until(in_cluster_yml, 600, "the runbook to be inside cluster.yml", 0.5)
        time.sleep(5)
    finally:
        _kill(proc)
    result = run_replace(params, runs, dry_run=False, confirm="lab")
    summary = _assert_replaced(a, result, "node1")
    assert summary["same_ip"] is True and summary["resumed"] is True
    # The hazard named in plain words: v2.19's grep finds the old .5 inside .53.
    add_first = summary["member_add_first"]
    assert add_first["needed"] is True and a.ip("node2") in add_first["reason"], add_first
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["drain and delete node"]["status"] == "skipped"
    assert steps["etcd member add"]["detail"].startswith("already a member")
    journal = a.lab.ssh("node1", ["journalctl", "-u", "etcd", "--no-pager"]).stdout
    assert "member count is unequal" not in journal


def _error_text(result: runner.RunResult) -> str:
    """The error a failing cell of the run record shows (its whole message, the fix included)."""
    cells = json.loads(Path(result.output).read_text())["cells"]
    return "\n".join(o.get("evalue", "") for cell in cells for o in cell.get("outputs", [])
                     if o.get("output_type") == "error")


def _digest(c: LabCluster) -> dict:
    return {
        "members": sorted((m["name"], tuple(m["peerURLs"])) for m in _members(c, "node3")),
        "inventory": hashlib.sha256(c.hosts.read_bytes()).hexdigest(),
        "manifests": {n: c.lab.ssh(n, ["sha256sum", MANIFEST]).stdout for n in ("node2",)},
    }


@pytest.mark.timeout(900)
def test_dry_run_and_refusals_change_nothing(restored_cluster: LabCluster, tmp_path: Path) -> None:
    c = restored_cluster
    c.lab.poweroff("node1", mode="hard")
    params = replace_params(c, tmp_path / "replace.yaml")
    runs = tmp_path / "runs"
    before = _digest(c)

    dry = run_replace(params, runs)
    assert dry.exit_code == 0, dry.line()
    summary = _summary(dry)
    assert summary["dry_run"] is True and summary["playbooks"] == {}
    assert any("member remove etcd1" in line for line in summary["plan"])
    assert _digest(c) == before

    def refused(expect: str, **overrides: object) -> None:
        result = run_replace(params, runs, **overrides)
        assert result.exit_code == 2 and result.status == "refused", result.line()
        assert expect in result.message, result.message
        assert _digest(c) == before

    refused("node2 (", dead_node="node2", dry_run=False, confirm="lab")  # it answers (a dry run only warns)
    refused("not in the inventory", dead_node="node9")
    refused(f"{c.ip('node3')} belongs to node3", replacement_ip=c.ip("node3"))
    unpinned = tmp_path / "known_hosts"
    unpinned.write_text("".join(line + "\n" for line in Path(c.description["known_hosts"]).read_text().splitlines()
                                if c.ip("node5") not in line.split(" ")[0].split(",")
                                and f"[{c.ip('node5')}]" not in line))
    refused("no host key is pinned", known_hosts=str(unpinned))
    c.lab.poweroff("node2", mode="hard")
    cluster.close_ssh_masters()
    result = run_replace(params, runs)
    assert result.exit_code == 2, result.line()
    assert "lost quorum" in result.message, result.message
    assert "restore-cluster" in _error_text(result)
    assert hashlib.sha256(c.hosts.read_bytes()).hexdigest() == before["inventory"]
