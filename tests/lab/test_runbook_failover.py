"""The failover-test runbook through ``runbooks run`` on the session's installed cluster, short profile.

One real drill proves the front doors side by side (this replaces the older stand-alone lab test of the
front doors, which ran the app as a bare systemd unit): a hard power-off of the node the runbook picks
(no app pod, not the controller-manager leader) under the probe; the
summary must show the naive DNS lane's failed-or-stuck share near the dead node's share of the answers,
no failed request on the fallback and HAProxy lanes, the VIP moving within a few advert intervals,
NotReady about the node monitor grace period after the fault, and a teardown that left nothing behind
(checked again here on the machines). A second, short run whose injection command fails must stop with
a clear error and still tear down. A third is killed (SIGTERM to ``runbooks run``) while its node is
faulted: its ledger lists the fault, keepalived and HAProxy, and ``--cleanup`` undoes them. The lab-wide snapshot is restored afterwards (``restored_cluster``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from runbooks_lib import failover_cleanup, runner
from runbooks_lib.frontdoors.keepalived import CONF, MARKER
from tests.lab.cluster_fixtures import APP_HOST, LabCluster
from tests.waiting import wait_until

# The first lab test of a session also waits for the session's install (several minutes on a busy machine).
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1800)]

ADVERT = 0.2
GRACE = 40.0  # node_monitor_grace_period in the lab's Kubespray defaults
K8S_NODES = ("node1", "node2", "node3", "node4")
CELL_TIMEOUT = 400.0
ROOT = Path(__file__).resolve().parents[2]


def _params(c: LabCluster, path: Path, **extra: object) -> Path:
    values = {
        "cluster_name": "lab",
        "inventory": str(c.hosts),
        "kubeconfig": str(c.kubeconfig),
        "ssh_key": c.description["ssh_key"],
        "known_hosts": c.description["known_hosts"],
        "app_host": APP_HOST,
        "dns_server": c.description["host_ip"],
        "fault_injector": "lab",
        "vip": str(c.lab.config.network.network_address + 100),
        "vip_prefix": c.lab.config.network.prefixlen,
        "vrrp_advert_s": ADVERT,
        "dry_run": False,
        "confirm": "lab",
        **extra,
    }
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def _run(params: Path, runs: Path, **overrides: object) -> tuple[runner.RunResult, dict]:
    result = runner.run(runner.find("failover-test"), files=[params], overrides=overrides, runs=runs,
                        progress_bar=False, cell_timeout=CELL_TIMEOUT)
    return result, json.loads(Path(result.summary_path).read_text())


def _assert_nothing_left(c: LabCluster, vip: str) -> None:
    """On every node: keepalived stopped, no configuration of ours, no VIP; no HAProxy child left here."""
    for name in K8S_NODES:
        active = c.lab.ssh(name, ["systemctl", "is-active", "keepalived"], check=False).stdout.strip()
        assert active in ("inactive", "failed", "unknown"), (name, active)
        ours = c.lab.ssh(name, ["sh", "-c", f"grep -c '{MARKER}' {CONF} 2>/dev/null || true"]).stdout.strip()
        assert ours in ("", "0"), (name, ours)
        addrs = c.lab.ssh(name, ["ip", "-o", "-4", "addr", "show"]).stdout
        assert f" {vip}/" not in addrs, (name, addrs)
    haproxy = [p for p in Path("/proc").glob("[0-9]*") if (p / "cmdline").exists()
               and b"runbooks-haproxy-" in (p / "cmdline").read_bytes()]
    assert not haproxy, haproxy


def test_the_drill_measures_every_front_door_and_cleans_up(restored_cluster: LabCluster, tmp_path: Path) -> None:
    c = restored_cluster
    params = _params(c, tmp_path / "failover.yaml")
    vip = str(c.lab.config.network.network_address + 100)
    result, s = _run(params, tmp_path / "runs")
    assert result.exit_code == 0, (result.line(), s.get("error"), s.get("teardown_errors"))

    impact = s["impact"]
    assert set(impact) == {"dns-naive", "dns-fallback", "happy-eyeballs", "keepalived-vip", "haproxy"}
    # The article's baseline: about 1/N of the naive client's requests go to the dead node and hang.
    assert s["nodes"] == 4 and s["dead_share"] == 0.25
    assert 0.15 <= s["naive_bad_share"] <= 0.35, s["naive_bad_share"]
    assert impact["dns-naive"]["failed"] > 0
    # HAProxy retries even a request the dying node leaves unanswered. The fallback client only falls
    # back on a connect timeout: a request already in flight on the node when it dies can fail (at most
    # one at this rate, sent before the fault), never one sent after it (checked on the raw samples below).
    assert impact["haproxy"]["failed"] == 0, impact["haproxy"]
    assert impact["dns-fallback"]["failed"] <= 1, impact["dns-fallback"]
    # The VIP moved off the dead node within a few advert intervals.
    moved = s["moments_s"]["VIP moved"]
    assert moved is not None and 0 < moved <= 6 * ADVERT + 1.0, moved
    dead_node, dead = s["fault"]["node"], s["fault"]["address"]
    assert any(e["kind"] == "vip moved" and e["t"] > 0 and not e["detail"].startswith(dead_node)
               for e in s["events"])
    # Kubernetes noticed after about the node monitor grace period (watched on the API). The grace
    # runs from the last heartbeat the controller saw: up to a renew interval (10 s) before the
    # fault, or later when a busy machine delays the controller's rounds, as kube-controller-manager's.
    not_ready = s["moments_s"]["Kubernetes marked it NotReady"]
    assert not_ready is not None and GRACE - 12 <= not_ready <= GRACE + 25, not_ready
    assert s["moments_s"]["HAProxy marked it DOWN"] is not None and s["moments_s"]["HAProxy marked it DOWN"] < 2.0
    # The return is recorded too (the watchers run until the node is Ready again): power, Ready, HAProxy UP.
    back = s["moments_s"]
    assert None not in (back["power came back"], back["Kubernetes marked it Ready again"],
                        back["HAProxy marked it UP again"]), back
    assert back["power came back"] < back["Kubernetes marked it Ready again"]
    assert back["power came back"] < back["HAProxy marked it UP again"]
    # Results: the figure beside the run record, the paragraph with the baseline, the bar judged.
    assert Path(s["figure"]).is_file() and Path(s["figure"]).parent == Path(result.output).parent
    assert "Baseline (the article)" in s["conclusion"] and "Recommended: haproxy" in s["conclusion"]
    assert s["bar"]["strategy"] == "haproxy" and s["bar"]["measured"]["failed"] == 0
    # The raw samples beside the run record: how each client met the dead address (from the older
    # stand-alone front-door test, folded in here).
    stem = Path(result.output).stem
    df = pd.read_csv(Path(result.output).with_name(stem + ".probe") / "requests.csv", dtype={"ip_first": "string"})
    events = pd.read_csv(Path(result.output).with_name(stem + ".probe") / "events.csv")
    after = df[df["intended"] > float(events[events["kind"] == "fault"]["t"].iloc[0]) + 0.2]
    naive = after[(after["lane"] == "dns-naive") & after["error"].notna()]
    assert set(naive["error"]) == {"connect_timeout"} and set(naive["ip_first"]) == {dead}
    assert naive["latency"].between(9.9, 11.5).all()
    fault_t = float(events[events["kind"] == "fault"]["t"].iloc[0])
    fallback = df[df["lane"] == "dns-fallback"]
    assert fallback[fallback["intended"] >= fault_t]["error"].isna().all()
    fb = after[(after["lane"] == "dns-fallback") & (after["ip_first"] == dead)]
    assert len(fb) > 0 and fb["connect"].between(0.29, 1.0).all()
    he = after[(after["lane"] == "happy-eyeballs") & (after["ip_first"] == dead)]
    assert len(he) > 0 and he["connect"].between(0.24, 1.0).all()
    assert dead_node not in set(after[after["lane"] == "haproxy"]["node"].dropna().iloc[40:])
    # Teardown: the node is back, and nothing of the drill is left on the machines or here.
    assert s["fault"]["injected"] and s["fault"]["restored"]
    assert s["left_behind"] == {} and s["teardown_errors"] == []
    assert [st["name"] for st in s["steps"] if st["status"] == "failed"] == []
    _assert_nothing_left(c, vip)


def test_a_fault_that_never_happens_stops_the_drill_and_still_tears_down(kubespray_cluster: LabCluster,
                                                                         tmp_path: Path) -> None:
    """Nothing is faulted, so the cluster is not restored afterwards; the teardown is what is tested."""
    c = kubespray_cluster
    params = _params(c, tmp_path / "failover.yaml", fault_injector="command", fault_command=["false", "{node}"],
                     strategies=["dns-fallback", "keepalived-vip", "haproxy"], recommended="haproxy",
                     before_s=2.0, after_s=2.0, warmup_s=0.0)
    result, s = _run(params, tmp_path / "runs")
    assert result.status == "failed" and result.exit_code == 1, result.line()
    assert "FaultNotInjected" in result.message and "fault command failed" in result.message, result.message
    assert s["fault"]["injected"] is False
    steps = {st["name"]: st["status"] for st in s["steps"]}
    assert steps["probe, fault, record"] == "failed"
    assert steps["remove keepalived"] == "ok" and steps["stop HAProxy"] == "ok"
    assert steps["check nothing is left"] == "ok" and s["left_behind"] == {}
    _assert_nothing_left(c, str(c.lab.config.network.network_address + 100))


def test_a_drill_killed_while_its_node_is_faulted_is_undone_by_cleanup(kubespray_cluster: LabCluster,
                                                                      tmp_path: Path) -> None:
    """The "fault" is a flag file the fault command writes (then it sleeps); power-on removes it."""
    c = kubespray_cluster
    flag = tmp_path / "faulted"
    params = _params(c, tmp_path / "failover.yaml", fault_injector="command",
                     fault_command=["sh", "-c", f"echo {{node}} > {flag}; exec sleep 28.7"],
                     power_on_command=["rm", "-f", str(flag)],
                     strategies=["dns-fallback", "keepalived-vip", "haproxy"], recommended="haproxy",
                     before_s=1.0, after_s=1.0, warmup_s=0.0)
    vip = str(c.lab.config.network.network_address + 100)
    cli = [sys.executable, "-m", "runbooks_lib.cli", "run", "failover-test", "-f", str(params), "--no-progress"]
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*cli, "--runs-dir", str(tmp_path / "runs"), "--cell-timeout", str(CELL_TIMEOUT)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def faulted() -> tuple[bool, str]:
            if proc.poll() is not None:
                journals = "\n".join(c.lab.ssh(n, ["journalctl", "-u", "keepalived", "-n", "15", "--no-pager"],
                                                check=False).stdout for n in K8S_NODES)
                raise AssertionError(f"the drill ended ({proc.returncode}) before its fault:\n{log.read_text()}\n"
                                     f"{journals}")
            return flag.exists(), "no fault yet"

        wait_until(faulted, 300, "the drill to fault its node", 0.2)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    # The run is gone with its children (the fault command's sleep too); what it set up on the nodes is not.
    assert not [p for p in Path("/proc").glob("[0-9]*") if (p / "cmdline").exists()
                and (p / "cmdline").read_bytes() == b"sleep\x0028.7\x00"]
    ledger = failover_cleanup.ledger(c.hosts)
    listed = {e.kind: e for e in ledger.entries()}
    assert set(listed) == {"fault", "keepalived", "haproxy"}, listed
    fault_node = flag.read_text().strip()
    assert listed["fault"].target == fault_node and listed["fault"].detail["injector"] == "command"
    assert any(c.lab.ssh(n, ["systemctl", "is-active", "keepalived"], check=False).stdout.strip() == "active"
               for n in K8S_NODES)

    done = subprocess.run([*cli, "--cleanup"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[:3] == [
        f"undid fault on {fault_node}: hard fault restored (command), node Ready",
        f"undid keepalived on {vip}: keepalived stopped, its configuration and VIP {vip} removed on "
        + ", ".join(n for n, _ in listed["keepalived"].detail["nodes"]),
        f"undid haproxy on {listed['haproxy'].target}: already gone"], done.stdout
    assert not flag.exists() and not ledger.path.exists()
    _assert_nothing_left(c, vip)
    again = subprocess.run([*cli, "--cleanup"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to undo" in again.stdout, again.stdout + again.stderr
