"""The diagnostics runbook against the lab's installed cluster: headless, under nbval, and a failure.

The session's cluster (``kubespray_cluster``) is installed by the install runbook, which fixed the
CoreDNS crash loop; the ``dns_pitfall`` fixture puts kubelet's resolvConf back to the systemd-resolved
stub so that CoreDNS and nodelocaldns crash-loop (the classic pitfall): the first test proves the
runbook names them. The ``healthy`` fixture then fixes kubelet's resolvConf on every node (as the
install runbook does) for the tests after it; the first test must run first (file order). Every machine is put back to the session snapshot afterwards.

How nbval finds this cluster: nbval runs the notebook with its defaults, which follow
``RUNBOOKS_LAB_DIR`` (SSH key, known_hosts) and ``RUNBOOKS_LAB_INVENTORY_DIR`` (inventory and
kubeconfig, here the fixture's inventory directory); the test sets both for the nbval subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runbooks_lib import etcd, kube, nodes, runbook, ssh
from runbooks_lib.errors import CommandFailed, HostUnreachable
from runbooks_lib.lab import cluster
from runbooks_lib.lab.config import LabConfig
from tests.lab.cluster_fixtures import SNAPSHOT, LabCluster

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "30-diagnostics.ipynb"
K8S_NODES = ("node1", "node2", "node3", "node4")


@dataclass(frozen=True)
class Diagnosed:
    cluster: LabCluster
    params: Path
    runs: Path


def _env(c: LabCluster, runs: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RUNBOOKS_RUNS_DIR": str(runs),
            "RUNBOOKS_PARAMS": "params/lab.yaml", "RUNBOOKS_LAB_DIR": str(LabConfig().state_dir),
            "RUNBOOKS_LAB_INVENTORY_DIR": str(c.inventory_dir)}


def _run(d: Diagnosed, timeout: float = 600) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = subprocess.run([sys.executable, "-m", "runbooks_lib.cli", "run", "diagnostics", "-f", str(d.params),
                           "--no-progress", "--cell-timeout", "180"],
                          cwd=REPO, env=_env(d.cluster, d.runs), capture_output=True, text=True, timeout=timeout)
    records = sorted((d.runs / "lab").glob("*-diagnostics.summary.json"))
    assert records, f"no summary written: {proc.stdout}\n{proc.stderr[-3000:]}"
    return proc, json.loads(records[-1].read_text())


def _conn(c: LabCluster, name: str) -> ssh.Connection:
    return ssh.Connection(ssh.Host(name, c.ip(name), key_path=c.description["ssh_key"],
                                   known_hosts=c.description["known_hosts"]))


@pytest.fixture(scope="module")
def diagnosed(kubespray_cluster: LabCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Diagnosed]:
    """The installed cluster with a parameter file (as `runbooks lab cluster` writes it); restored afterwards."""
    params = cluster.write_params(kubespray_cluster.inventory_dir, kubespray_cluster.description)
    try:
        yield Diagnosed(kubespray_cluster, params, tmp_path_factory.mktemp("runs"))
    finally:
        kubespray_cluster.lab.heal()
        kubespray_cluster.lab.restore_all(SNAPSHOT)
        cluster.close_ssh_masters()


@pytest.fixture
def dns_pitfall(diagnosed: Diagnosed) -> Diagnosed:
    """kubelet's resolvConf back to /etc/resolv.conf (the 127.0.0.53 stub) on every node: DNS pods crash-loop."""
    c = diagnosed.cluster
    for name in K8S_NODES:
        with _conn(c, name) as conn:
            if nodes.set_kubelet_resolv_conf(conn, value="/etc/resolv.conf").changed:
                nodes.restart(conn, "kubelet")
    api = kube.client_from_kubeconfig(str(c.kubeconfig))
    runbook.wait_for(lambda: bool(kube.crash_looping(kube.pod_health(api))), timeout=180, interval=3,
                     what="CoreDNS/nodelocaldns CrashLoopBackOff", retry_on=(HostUnreachable,))
    return diagnosed


def test_dns_crash_loop_after_install_is_named(dns_pitfall: Diagnosed) -> None:
    diagnosed = dns_pitfall
    proc, summary = _run(diagnosed)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    assert summary["healthy"] is False and summary["run"]["result"] == "failed"
    assert any("coredns" in pod for pod in summary["crash_looping"]) or any(
        "coredns" in problem for problem in summary["problems"]), summary["problems"]
    assert proc.stdout.startswith("FAILED: diagnostics on lab") and "UNHEALTHY" in proc.stdout
    # Everything but DNS is healthy: etcd and the nodes are not blamed.
    assert summary["etcd"]["members"] == 3 and summary["etcd"]["healthy_endpoints"] == 3
    assert not [p for p in summary["problems"] if p.startswith(("etcd", "certificates", "services"))]


@pytest.fixture
def healthy(diagnosed: Diagnosed) -> Diagnosed:
    """kubelet's resolvConf pointed at the upstream servers on every node (idempotent), kube-system healthy."""
    c = diagnosed.cluster
    for name in K8S_NODES:
        with _conn(c, name) as conn:
            if nodes.set_kubelet_resolv_conf(conn).changed:
                nodes.restart(conn, "kubelet")
    api = kube.client_from_kubeconfig(str(c.kubeconfig))

    def kube_system_healthy() -> tuple[bool, list[str]]:
        bad = [f"{p.name} ({p.phase}, ready={p.ready})" for p in kube.pod_health(api) if not p.healthy]
        return not bad, bad

    runbook.wait_for(kube_system_healthy, timeout=240, interval=3, what="kube-system pods healthy",
                     retry_on=(HostUnreachable,))
    return diagnosed


def test_healthy_cluster_exits_0(healthy: Diagnosed) -> None:
    proc, summary = _run(healthy)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.startswith("OK: diagnostics on lab") and "lab: HEALTHY" in proc.stdout
    assert summary["healthy"] is True and summary["problems"] == []
    assert summary["etcd"]["members"] == 3 and summary["etcd"]["healthy_endpoints"] == 3
    assert len(summary["etcd"]["leaders"]) == 1
    assert summary["nodes_ready"] == list(K8S_NODES)
    assert all(s["days_left"] > 300 for s in summary["certificates"]) and len(summary["certificates"]) == 8
    record = Path(summary["run"]["output"])
    text = record.read_text() + record.with_name(record.stem + ".summary.json").read_text()
    for secret in ("PRIVATE KEY-----\\n", "client-key-data", "BEGIN RSA", "BEGIN EC PRIVATE"):
        assert secret not in text


def test_nbval_against_the_lab(healthy: Diagnosed) -> None:
    """nbval reruns the committed notebook with its defaults and compares the summary cell."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p", "no:python",
         "-p", "no:cacheprovider", "--nbval-sanitize-with", "tests/nbval-sanitize.cfg",
         "--nbval-cell-timeout", "180", "-o", "addopts=", str(NOTEBOOK.relative_to(REPO))],
        cwd=REPO, env=_env(healthy.cluster, healthy.runs), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout.splitlines()[-1]


def test_powered_off_etcd_member_fails_the_run_and_is_named(healthy: Diagnosed) -> None:
    diagnosed = healthy
    lab = diagnosed.cluster.lab
    lab.poweroff("node3")
    try:
        # When node3 led, node1 and node2 fail health checks until they elect a leader: wait that out (bounded).
        with _conn(diagnosed.cluster, "node1") as conn:
            etcd.endpoint_health_settled(etcd.Etcdctl(conn, member="node1"), needed=2, within=90)
        proc, summary = _run(diagnosed)
    finally:
        lab.poweron("node3")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    verdict = summary["verdict"]
    assert verdict.startswith("lab: UNHEALTHY") and "node3" in verdict, verdict
    assert "node3" in proc.stdout
    assert summary["etcd"]["healthy_endpoints"] == 2 and summary["etcd"]["members"] == 3

    def etcd_healthy() -> tuple[bool, list[str]]:
        with _conn(diagnosed.cluster, "node1") as conn:
            bad = [h.endpoint for h in etcd.endpoint_health(etcd.Etcdctl(conn, member="node1"), cluster=True)
                   if not h.healthy]
        return not bad, bad

    runbook.wait_for(etcd_healthy, timeout=180, interval=3, what="node3's etcd member back",
                     retry_on=(HostUnreachable, CommandFailed))
