"""Failover through each front door on the lab's machines: hard power-off of one node mid-run.

The test app runs on node1..node3 (port 8081); the probe sends open-loop from
the host; one node is powered off hard (its IP goes silent) and powered on
again in teardown.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import matplotlib

matplotlib.use("Agg")

from runbooks_lib import analysis, plots  # noqa: E402
from runbooks_lib import probe as p  # noqa: E402
from runbooks_lib.frontdoors.dnsrr import DnsRoundRobin
from runbooks_lib.frontdoors.haproxy import HaproxyFrontDoor
from runbooks_lib.frontdoors.keepalived import KeepalivedVip, VrrpNode
from runbooks_lib.frontdoors.runner import LabRunner
from runbooks_lib.lab import dns
from runbooks_lib.lab.machines import Lab
from tests.waiting import wait_until

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

NODES = ("node1", "node2", "node3")
APP_PORT = 8081
UNIT = "runbooks-failover-app"
APP_SOURCE = Path(__file__).resolve().parents[2] / "runbooks_lib" / "lab" / "testapp.py"
NAME = "uuid.awesome.lab"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind((host, 0))
        port = u.getsockname()[1]
        t.bind((host, port))
        return port


def _answers(ip: str) -> bool:
    try:
        socket.create_connection((ip, APP_PORT), timeout=1).close()
        return True
    except OSError:
        return False


def _ensure_app(lab: Lab, name: str) -> None:
    """Run the test app on ``name`` as a transient systemd unit unless it already answers."""
    ip = lab.config.ip_of(name)
    if _answers(ip):
        return
    lab.ssh(name, ["systemctl", "stop", f"{UNIT}-*"], timeout=20, check=False)
    lab.ssh(name, ["sh", "-c", "cat > /root/runbooks-testapp.py"], timeout=20, input=APP_SOURCE.read_text())
    # A fresh unit name each time: a stopped unit can stay loaded for a while
    # (its cgroup lingers in the machine), and systemd-run refuses a loaded name.
    lab.ssh(name, ["systemd-run", f"--unit={UNIT}-{time.time_ns()}", "--collect", "python3",
                   "/root/runbooks-testapp.py", "--port", str(APP_PORT), "--node", name, "--pod", f"app-{name}"],
            timeout=20)
    wait_until(lambda: _answers(ip), 20, f"the test app on {name} to answer on port {APP_PORT}")


@pytest.fixture
def app(running_lab: Lab):
    for name in NODES:
        _ensure_app(running_lab, name)
    yield running_lab
    for name in NODES:
        try:
            running_lab.ssh(name, ["systemctl", "stop", f"{UNIT}-*"], timeout=20, check=False)
        except Exception:
            pass  # a node left off by a failed test: running_lab powers it on next time


def _report(res: p.ProbeResult, out: Path) -> None:
    """Print the impact table and write the figure (kept with pytest's tmp files for a human to look at)."""
    fault = analysis.fault_time(res.events)
    print(analysis.impact_table(res.requests, fault_at=fault, target=0.5).to_string())
    print(res.events.to_string())
    plots.figure_for(res).savefig(out, dpi=60)
    assert out.stat().st_size > 10_000


def _power_off_during(lab: Lab, run: p.ProbeRun, events: p.EventLog, name: str, at: float) -> p.ProbeResult:
    """Power ``name`` off ``at`` seconds into the run; always power it back on."""
    try:
        time.sleep(at)
        events.add("poweroff", name, source="lab")
        lab.poweroff(name, mode="hard")
        events.add("poweroff returned", name, source="lab")
        return run.wait()
    finally:
        run.stop()
        lab.poweron(name)


def test_dns_round_robin_naive_clients_hang_fallback_clients_do_not(app: Lab, tmp_path: Path) -> None:
    lab = app
    host_ip = lab.config.host_ip
    ips = tuple(lab.config.ip_of(n) for n in NODES)
    srv = dns.DnsServer(Path("/tmp") / f"runbooks-failover-dns-{time.time_ns()}", listen=host_ip,
                        port=_free_port(host_ip), ttl=5)
    srv.start()
    try:
        door = DnsRoundRobin(NAME, ips, srv, port=APP_PORT)
        door.setup()
        target = door.target()
        lanes = (p.naive(target, connect_timeout=5.0), p.fallback(target, connect_timeout=0.3),
                 p.happy_eyeballs(target))
        events = p.EventLog()
        run = p.start(p.ProbeConfig(lanes, rate=20, duration=8.0, dns_server=host_ip, dns_port=srv.port,
                                    progress=False), events)
        res = _power_off_during(lab, run, events, "node3", at=2.0)
        door.teardown()
    finally:
        srv.stop()
    _report(res, tmp_path / "dns-rr.png")
    df = res.requests
    fault = analysis.fault_time(res.events)
    after = df[df["intended"] > fault + 0.2]
    dead = lab.config.ip_of("node3")

    naive = after[after["lane"] == "naive"]
    failed = naive[naive["error"].notna()]
    assert 0.25 <= len(failed) / len(naive) <= 0.42, (len(failed), len(naive))
    assert set(failed["error"]) == {"connect_timeout"} and set(failed["ip_first"]) == {dead}
    assert failed["latency"].between(4.9, 5.6).all()

    fb = after[after["lane"] == "fallback"]
    assert fb["error"].isna().all(), fb["error"].value_counts()
    hit = fb[fb["ip_first"] == dead]
    assert len(hit) > 0 and hit["connect"].between(0.29, 0.6).all()

    he = after[after["lane"] == "happy_eyeballs"]
    assert he["error"].isna().all()
    hit = he[he["ip_first"] == dead]
    assert len(hit) > 0 and hit["connect"].between(0.24, 0.5).all()
    # Before the fault every node served.
    assert set(df[df["intended"] < fault]["node"].dropna()) == set(NODES)


def test_keepalived_moves_the_vip_within_a_few_advert_intervals(app: Lab, tmp_path: Path) -> None:
    lab = app
    vip = str(lab.config.network.network_address + 100)
    nodes = tuple(VrrpNode(n, lab.config.ip_of(n), LabRunner(lab, n)) for n in NODES)
    door = KeepalivedVip(vip, nodes, prefix=lab.config.network.prefixlen, advert_int=0.5, virtual_router_id=73,
                         port=APP_PORT)
    try:
        door.setup()
        assert door.wait_single_holder(10) == "node1"
        events = p.EventLog()
        watcher = door.watcher(events, interval=0.3).start()
        lane = p.direct(vip, port=APP_PORT, connect_timeout=1.0, read_timeout=2.0, name="vip")
        run = p.start(p.ProbeConfig((lane,), rate=20, duration=8.0, progress=False), events)
        try:
            res = _power_off_during(lab, run, events, "node1", at=2.0)
        finally:
            watcher.stop()
    finally:
        door.teardown()
    _report(res, tmp_path / "vip.png")
    ev = res.events
    fault = analysis.fault_time(ev)
    moved = ev[(ev["kind"] == "vip moved") & (ev["t"] > fault)]
    assert len(moved) >= 1, ev
    assert moved["detail"].iloc[0] == "node2 MASTER"
    gap = moved["t"].iloc[0] - fault
    assert 0.5 < gap < 4 * 0.5 + 1.5, gap
    df = res.requests
    late = df[df["intended"] > moved["t"].iloc[0] + 1.0]
    assert len(late) > 20 and late["error"].isna().all() and set(late["node"]) == {"node2"}
    bad = df[df["error"].notna()]
    assert len(bad) > 0 and bad["intended"].min() >= fault - 0.1


def test_haproxy_marks_the_dead_server_down_without_failed_requests(app: Lab, tmp_path: Path) -> None:
    lab = app
    host_ip = lab.config.host_ip
    door = HaproxyFrontDoor(host_ip, _free_port(host_ip), {n: lab.config.ip_of(n) for n in NODES},
                            server_port=APP_PORT, check_inter=0.5, fall=2, rise=2, timeout_connect=0.5, retries=2)
    events = p.EventLog()
    try:
        door.setup()
        wait_until(lambda: (set(door.server_status().values()) == {"UP"}, str(door.server_status())), 10,
                   "haproxy to mark every server UP")
        with door.watcher(events, interval=0.05):
            lane = p.direct(host_ip, port=door.port, connect_timeout=2.0, read_timeout=5.0, name="haproxy")
            run = p.start(p.ProbeConfig((lane,), rate=20, duration=8.0, progress=False), events)
            res = _power_off_during(lab, run, events, "node2", at=2.0)
    finally:
        door.teardown()
    _report(res, tmp_path / "haproxy.png")
    df = res.requests
    assert df["error"].isna().all(), df["error"].value_counts()
    ev = res.events
    fault = analysis.fault_time(ev)
    down = ev[(ev["kind"] == "server DOWN") & (ev["t"] > fault)]
    assert list(down["detail"]) == ["node2 UP -> DOWN"]
    assert down["t"].iloc[0] - fault < 3.0
    after_down = df[df["intended"] > down["t"].iloc[0] + 0.2]
    assert "node2" not in set(after_down["node"])
    assert (df["latency"] < 2.0).all()
