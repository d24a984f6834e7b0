"""The open-loop probe against real servers on loopback and a silent address in a namespace."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from runbooks_lib import probe as p
from runbooks_lib.errors import BadParameters

pytestmark = pytest.mark.timeout(60)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        server = self.server
        # Requests that arrive while the server stalls wait until it resumes.
        server.resume.wait(10)  # type: ignore[attr-defined]
        body = json.dumps({"uuid": "u-1", "node": server.node, "pod": "pod-1"}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out close early; the broken pipe is expected


class AppServer:
    """A threaded HTTP server on loopback answering like the test app; ``stall()``/``resume()``."""

    def __init__(self, node: str = "node1", host: str = "127.0.0.1", port: int = 0) -> None:
        self.httpd = _QuietServer((host, port), _Handler)
        self.httpd.node = node  # type: ignore[attr-defined]
        self.httpd.resume = threading.Event()  # type: ignore[attr-defined]
        self.httpd.resume.set()  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stall(self) -> None:
        self.httpd.resume.clear()  # type: ignore[attr-defined]

    def resume(self) -> None:
        self.httpd.resume.set()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.resume()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def app():
    server = AppServer()
    yield server
    server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_ip(allow_addresses):
    """An address in a namespace of this test whose inbound packets are all dropped (a dead VPS)."""
    tag = os.getpid() % 200 + 20
    ns, veth = f"rbprobe{os.getpid()}", f"rbpv{os.getpid()}"[:15]
    host_ip, dead_ip = f"10.254.{tag}.1", f"10.254.{tag}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)

    try:
        ip("netns", "add", ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("addr", "add", f"{host_ip}/24", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", ns, "addr", "add", f"{dead_ip}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, timeout=10, text=True,
                       input="table inet silent {\n chain input {\n  type filter hook input priority 0; policy drop;\n }\n}\n")
        allow_addresses(dead_ip)
        yield dead_ip
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=10, capture_output=True)
        subprocess.run(["ip", "link", "del", veth], timeout=10, capture_output=True)


def _run(lanes, rate=50.0, duration=1.0, **kw) -> p.ProbeResult:
    return p.run(p.ProbeConfig(tuple(lanes), rate=rate, duration=duration, progress=False, **kw))


def test_healthy_endpoint_records_every_field(app):
    res = _run([p.direct("127.0.0.1", port=app.port)], rate=40, duration=0.5)
    df = res.requests
    assert len(df) == 20
    assert list(df.columns) == list(p.COLUMNS)
    assert df["error"].isna().all()
    assert (df["status"] == 200).all()
    assert set(df["node"]) == {"node1"} and set(df["pod"]) == {"pod-1"} and set(df["uuid"]) == {"u-1"}
    assert (df["ip_connected"] == "127.0.0.1").all()
    # The schedule is open-loop: request k is intended at k / rate.
    assert df["intended"].diff().dropna().round(6).eq(0.025).all()
    assert (df["latency"] >= df["total"]).all() and (df["latency"] < 0.5).all()
    assert (df["send_lag"] >= 0).all()
    assert res.t0_wall == pytest.approx(time.time(), abs=10)


def test_stall_of_two_seconds_delays_about_a_hundred_requests(app):
    run = p.start(p.ProbeConfig((p.direct("127.0.0.1", port=app.port),), rate=50, duration=4.0, progress=False))
    time.sleep(1.0)
    app.stall()
    time.sleep(2.0)
    app.resume()
    df = run.wait(timeout=30).requests
    delayed = df[df["latency"] > 0.05]
    # Closed-loop would record a single slow sample; open-loop sees every user who waited.
    assert 85 <= len(delayed) <= 110, len(delayed)
    assert delayed["latency"].max() == pytest.approx(2.0, abs=0.3)
    assert df["error"].isna().all()


def test_refused_port_is_classified():
    port = _free_port()
    df = _run([p.direct("127.0.0.1", port=port)], rate=20, duration=0.5).requests
    assert (df["error"] == "refused").all()
    assert (df["latency"] < 0.2).all()


def test_silent_address_times_out_at_the_connect_timeout(silent_ip):
    df = _run([p.direct(silent_ip, connect_timeout=0.4)], rate=10, duration=0.5).requests
    assert (df["error"] == "connect_timeout").all()
    assert df["latency"].between(0.39, 0.6).all(), df["latency"].tolist()


def test_read_timeout_on_a_stalled_server(app):
    app.stall()
    df = _run([p.direct("127.0.0.1", port=app.port, read_timeout=0.3)], rate=10, duration=0.3).requests
    app.resume()
    assert (df["error"] == "read_timeout").all()
    assert df["latency"].between(0.29, 0.5).all()


class _FakeResolver:
    """Stands in for the DNS server: every lookup answers [dead, live] in that order."""

    def __init__(self, ips: tuple[str, ...]) -> None:
        self.ips = ips
        self.queries = 0

    async def resolve(self, name: str) -> tuple[str, ...]:
        self.queries += 1
        return self.ips


def _run_with_resolver(lanes, resolver, rate=10.0, duration=1.0):
    cfg = p.ProbeConfig(tuple(lanes), rate=rate, duration=duration, progress=False)
    return asyncio.run(p.probe(cfg, resolver=resolver)).requests


def test_client_models_against_one_dead_address(app, silent_ip):
    target = p.Target("app.test", app.port)
    resolver = _FakeResolver((silent_ip, "127.0.0.1"))
    df = _run_with_resolver(
        [
            p.naive(target, connect_timeout=1.0),
            p.fallback(target, connect_timeout=0.3),
            p.happy_eyeballs(target),
        ],
        resolver,
        rate=10,
        duration=1.0,
    )
    naive = df[df["lane"] == "naive"]
    # Round-robin: every other request picks the dead address and hangs to the timeout.
    dead = naive[naive["ip_first"] == silent_ip]
    assert len(dead) == 5 and (dead["error"] == "connect_timeout").all()
    assert dead["latency"].between(0.99, 1.2).all()
    assert naive[naive["ip_first"] == "127.0.0.1"]["error"].isna().all()

    fb = df[df["lane"] == "fallback"]
    assert fb["error"].isna().all()
    hit = fb[fb["ip_first"] == silent_ip]
    assert len(hit) == 5 and (hit["attempts"] == 2).all() and (hit["ip_connected"] == "127.0.0.1").all()
    assert hit["connect"].between(0.29, 0.4).all(), hit["connect"].tolist()

    he = df[df["lane"] == "happy_eyeballs"]
    assert he["error"].isna().all()
    hit = he[he["ip_first"] == silent_ip]
    assert len(hit) == 5 and (hit["ip_connected"] == "127.0.0.1").all()
    assert hit["connect"].between(0.24, 0.33).all(), hit["connect"].tolist()


def test_keepalive_reuses_one_connection(app):
    res = _run([p.keepalive(p.Target("127.0.0.1", app.port))], rate=20, duration=0.5)
    df = res.requests
    assert df["error"].isna().all()
    # Only the first request paid for a connection.
    assert (df["attempts"] == 1).sum() == 1
    assert (df["connect"].iloc[1:] == 0).all()


def test_keepalive_to_a_silent_server_fails_by_read_timeout(app):
    lane = p.keepalive(p.Target("127.0.0.1", app.port), read_timeout=0.3)
    run = p.start(p.ProbeConfig((lane,), rate=10, duration=1.0, progress=False))
    time.sleep(0.3)
    app.stall()
    df = run.wait(timeout=20).requests
    app.resume()
    assert (df["error"] == "read_timeout").any()
    assert not df["error"].isin(["connect_timeout", "refused"]).any()


def test_stops_on_time_and_respects_the_in_flight_bound(app):
    app.stall()
    start = time.monotonic()
    res = _run([p.direct("127.0.0.1", port=app.port, read_timeout=0.5)], rate=100, duration=1.0,
               max_in_flight=10, drain=0.2)
    elapsed = time.monotonic() - start
    app.resume()
    df = res.requests
    stats = res.lane_stats[0]
    assert stats.max_in_flight == 10 and stats.peak_in_flight <= 10
    assert stats.dropped > 0 and (df["error"] == "dropped").sum() == stats.dropped
    assert len(df) == 100
    # duration + drain, plus a little for cancellation and setup.
    assert elapsed < 1.0 + 0.2 + 0.8, elapsed


def test_events_share_the_probe_timeline(app):
    log = p.EventLog()
    run = p.start(p.ProbeConfig((p.direct("127.0.0.1", port=app.port),), rate=20, duration=1.0, progress=False), log)
    time.sleep(0.5)
    threading.Thread(target=log.add, args=("fault injected", "node1")).start()
    res = run.wait(timeout=20)
    ev = res.events
    assert list(ev["kind"]) == ["fault injected"]
    assert ev["t"].iloc[0] == pytest.approx(0.5, abs=0.15)


def test_run_works_inside_a_running_event_loop(app):
    async def cell():
        return p.run(p.ProbeConfig((p.direct("127.0.0.1", port=app.port),), rate=20, duration=0.2, progress=False))

    res = asyncio.run(cell())
    assert len(res.requests) == 4


def test_save_and_load_round_trip(app, tmp_path):
    res = _run([p.direct("127.0.0.1", port=app.port)], rate=20, duration=0.2)
    back = p.ProbeResult.load(res.save(tmp_path / "run"))
    assert back.lanes == res.lanes
    assert len(back.requests) == 4 and list(back.requests["node"]) == ["node1"] * 4


def test_parse_identity_accepts_json_and_text():
    assert p.parse_identity(b'{"uuid": "a", "node": "n2", "pod": "p"}') == {"uuid": "a", "node": "n2", "pod": "p"}
    assert p.parse_identity(b"uuid=abc node: node3 pod=web-1") == {"node": "node3", "pod": "web-1", "uuid": "abc"}
    assert p.parse_identity(b"hello") == {"node": None, "pod": None, "uuid": None}


def test_bad_parameters():
    with pytest.raises(BadParameters):
        p.direct("app.example")
    with pytest.raises(BadParameters):
        p.ProbeConfig((p.direct("127.0.0.1"),), rate=0, duration=1)
    with pytest.raises(BadParameters):
        p.run(p.ProbeConfig((p.naive(p.Target("app.test")),), rate=1, duration=1, progress=False))


def test_an_isolated_probe_runs_in_its_own_process_on_the_caller_s_timeline() -> None:
    """Events added here while the probe runs elsewhere land on the probe's timeline (one monotonic clock)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        events = p.EventLog()
        run = p.start(p.ProbeConfig((p.direct("127.0.0.1", port=server.server_address[1], connect_timeout=1),),
                                    rate=40, duration=1.0, progress=False), events, isolated=True)
        assert isinstance(run, p.IsolatedProbeRun) and run.t0 <= time.monotonic()
        time.sleep(0.5)
        events.add("fault", "here")
        result = run.wait(30)
    finally:
        server.shutdown()
    assert len(result.requests) == 40 and result.requests["error"].isna().all()
    fault = result.events[result.events["kind"] == "fault"]["t"].iloc[0]
    assert 0.45 <= fault <= 0.9, fault


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b'{"node": "n1", "pod": "p1"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_stopping_an_isolated_probe_that_has_ended_returns_at_once() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = p.start(p.ProbeConfig((p.direct("127.0.0.1", port=server.server_address[1], connect_timeout=1),),
                                    rate=20, duration=0.3, progress=False), isolated=True)
        result = run.wait(30)
        time.sleep(0.2)
        started = time.monotonic()
        run.stop()
        run.stop()
        assert time.monotonic() - started < 1.0 and len(result.requests) == 6
    finally:
        server.shutdown()
