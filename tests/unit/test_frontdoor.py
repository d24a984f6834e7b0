"""Front doors: DNS round-robin on a real dnsmasq, keepalived against a fake runner, a real HAProxy."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from runbooks_lib import analysis, local
from runbooks_lib import probe as p
from runbooks_lib.errors import CommandFailed, HostUnreachable, LabError, PreconditionFailed
from runbooks_lib.frontdoors import keepalived
from runbooks_lib.frontdoors.dnsrr import DnsRoundRobin
from runbooks_lib.frontdoors.haproxy import HaproxyFrontDoor
from runbooks_lib.frontdoors.runner import LabRunner, LocalRunner, write_file
from runbooks_lib.lab import dns
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t.bind(("127.0.0.1", port))
        return port


# ---------------------------------------------------------------- DNS round-robin


def test_dns_round_robin_setup_and_teardown(tmp_path):
    with dns.DnsServer(tmp_path / "dns", listen="127.0.0.1", port=_free_port(), ttl=5) as srv:
        door = DnsRoundRobin("uuid.awesome.lab", ("10.0.0.1", "10.0.0.2"), srv)
        door.setup()
        door.setup()
        assert sorted(srv.query("uuid.awesome.lab")) == ["10.0.0.1", "10.0.0.2"]
        door.set_ips(["10.0.0.2"])
        assert srv.query("uuid.awesome.lab") == ("10.0.0.2",)
        assert door.target() == p.Target("uuid.awesome.lab", 80, "/", "uuid.awesome.lab")
        door.teardown()
        door.teardown()
        assert srv.query("uuid.awesome.lab") == ()


# ---------------------------------------------------------------- keepalived (fake runner)


class FakeNode:
    """Answers the commands keepalived's front door sends; fails loudly on anything else."""

    def __init__(self, name: str, ip: str, *, holds_vip: bool = False, log: str = "", foreign: bool = False) -> None:
        self.name, self.ip, self.holds_vip, self.log, self.foreign = name, ip, holds_vip, log, foreign
        self.calls: list[list[str]] = []
        self.files: dict[str, str] = {}
        self.down = False

    def run(self, argv, timeout, check=True, input=None):
        argv = list(argv)
        self.calls.append(argv)
        assert timeout > 0
        ok = local.Result(tuple(argv), 0, "", "", 0.0)
        if self.down:
            raise HostUnreachable(f"{self.name} did not answer", host=self.name)
        if argv[:5] == ["ip", "-o", "-4", "addr", "show"]:
            out = f"1: lo    inet 127.0.0.1/8 scope host lo\n2: host0    inet {self.ip}/24 brd x scope global host0\n"
            if self.holds_vip:
                out += "2: host0    inet 10.213.7.100/24 scope global secondary host0\n"
            return local.Result(tuple(argv), 0, out, "", 0.0)
        if argv[:2] == ["sh", "-c"] and argv[3] == "write_file":
            content, tmp, _mode, path = argv[4:8]
            self.files[path] = content
            return ok
        if argv[:2] == ["sh", "-c"] and argv[3] == "check":
            return local.Result(tuple(argv), 1 if self.foreign else 0, "", "", 0.0)
        if argv[:2] == ["sh", "-c"] and argv[3] == "teardown":
            self.files.pop(keepalived.CONF, None)
            return ok
        if argv[0] == "systemctl" or argv[:3] == ["ip", "addr", "del"]:
            return ok
        if argv == ["cat", keepalived.LOG]:
            return local.Result(tuple(argv), 0, self.log, "", 0.0)
        raise AssertionError(f"unexpected command {argv}")


def _vip(nodes, **kw):
    return keepalived.KeepalivedVip("10.213.7.100", tuple(keepalived.VrrpNode(n.name, n.ip, n) for n in nodes), **kw)


def test_keepalived_config_and_setup():
    n1, n2, n3 = FakeNode("node1", "10.213.7.11", holds_vip=True), FakeNode("node2", "10.213.7.12"), FakeNode("node3", "10.213.7.13")
    door = _vip([n1, n2, n3], advert_int=0.5, virtual_router_id=77)
    door.setup()
    conf = n1.files[keepalived.CONF]
    assert "state MASTER" in conf and "priority 150" in conf and "interface host0" in conf
    assert "virtual_router_id 77" in conf and "advert_int 0.5" in conf and "vrrp_version 3" in conf
    assert "unicast_src_ip 10.213.7.11" in conf and "10.213.7.12" in conf and "10.213.7.13" in conf
    assert "10.213.7.100/24 dev host0" in conf and f"notify {keepalived.NOTIFY}" in conf
    conf2 = n2.files[keepalived.CONF]
    assert "state BACKUP" in conf2 and "priority 140" in conf2 and "unicast_src_ip 10.213.7.12" in conf2
    assert "vrrp_version 2" in _vip([n1, n2], advert_int=1).config_for(door.nodes[0], "eth0")
    assert keepalived.LOG in n1.files[keepalived.NOTIFY]
    assert ["systemctl", "restart", "keepalived"] in n3.calls
    assert door.holders() == ["node1"]
    door.teardown()
    assert keepalived.CONF not in n1.files
    assert ["ip", "addr", "del", "10.213.7.100/24", "dev", "host0"] in n2.calls


def test_keepalived_teardown_tries_every_node_and_raises_one_error_naming_each_failure():
    n1, n2, n3 = FakeNode("node1", "10.213.7.11"), FakeNode("node2", "10.213.7.12"), FakeNode("node3", "10.213.7.13")
    door = _vip([n1, n2, n3], interface="host0")
    for node in (n1, n2, n3):
        node.files[keepalived.CONF] = "x"
    n1.down = n3.down = True
    with pytest.raises(HostUnreachable) as info:
        door.teardown()
    message = str(info.value)
    assert "failed on 2 of 3 nodes" in message and "node1: HostUnreachable" in message
    assert "node3: HostUnreachable" in message and "node2" not in message.split("next step")[0].split("nodes:")[1]
    assert set(info.value.failed) == {"node1", "node3"}
    assert keepalived.CONF not in n2.files  # the reachable node was cleaned although node1 failed first
    n1.down = False
    n2.files[keepalived.CONF] = "x"

    def broken(argv, timeout, check=True, input=None):
        raise CommandFailed("rm failed", host="node2")

    n2.run = broken  # type: ignore[method-assign]
    with pytest.raises(CommandFailed) as info:
        door.teardown()
    assert "node2: CommandFailed" in str(info.value) and "node3: HostUnreachable" in str(info.value)


def test_keepalived_refuses_a_foreign_configuration():
    n1, n2 = FakeNode("node1", "10.213.7.11", foreign=True), FakeNode("node2", "10.213.7.12")
    with pytest.raises(PreconditionFailed):
        _vip([n1, n2]).setup()
    assert not any(c[0] == "systemctl" for c in n1.calls)


def test_vrrp_watcher_turns_notify_lines_into_events():
    n1 = FakeNode("node1", "10.213.7.11", log="1700000000.5 node1 INSTANCE runbooks_vip MASTER\n")
    n2 = FakeNode("node2", "10.213.7.12", log="1700000000.4 node2 INSTANCE runbooks_vip BACKUP\n")
    door = _vip([n1, n2])
    log = p.EventLog()
    now = time.time()
    watcher = door.watcher(log, interval=0.05).start()
    n2.log += f"{now - 1.0:.6f} node2 INSTANCE runbooks_vip MASTER\n"
    n1.log += f"{now - 0.9:.6f} node1 INSTANCE runbooks_vip FAULT\n"
    time.sleep(0.3)
    watcher.stop()
    ev = log.frame()
    assert list(ev["kind"]) == ["vip moved", "vrrp FAULT"]
    assert ev["detail"].iloc[0] == "node2 MASTER"
    assert ev["wall"].iloc[0] == pytest.approx(now - 1.0, abs=0.01)


def test_parse_log_skips_garbage():
    text = "1.5 node1 INSTANCE vi MASTER\nnot a line\nx node2 INSTANCE vi BACKUP\n"
    assert keepalived.parse_log(text) == [keepalived.Transition(1.5, "node1", "vi", "MASTER")]


# ---------------------------------------------------------------- runners


def test_local_runner_and_write_file(tmp_path):
    runner = LocalRunner()
    target = tmp_path / "conf"
    write_file(runner, str(target), "a 'quoted' $line\n-n\n", mode="0600")
    assert target.read_text() == "a 'quoted' $line\n-n\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_lab_runner_passes_argv_and_timeout():
    seen = {}

    class Lab:
        def ssh(self, name, command, *, timeout, check=True, input=None):
            seen.update(name=name, command=command, timeout=timeout, check=check)
            return local.Result(tuple(command), 0, "ok", "", 0.0)

    assert LabRunner(Lab(), "node2").run(["true"], timeout=3, check=False).stdout == "ok"
    assert seen == {"name": "node2", "command": ["true"], "timeout": 3, "check": False}


# ---------------------------------------------------------------- HAProxy (real processes)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"node": "node1", "pod": "p1", "uuid": "u"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


NS_APP = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"node": "node2", "pod": "p2", "uuid": "u"}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[1], 8080), H).serve_forever()
"""


@pytest.fixture
def ns_node(allow_addresses):
    """A node in a namespace of this test, serving on :8080; ``silence()`` drops all its inbound packets."""
    tag = os.getpid() % 200 + 20
    ns, veth = f"rbfd{os.getpid()}", f"rbfv{os.getpid()}"[:15]
    host_ip, node_ip = f"10.253.{tag}.1", f"10.253.{tag}.2"
    proc = None

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)

    def silence() -> None:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, timeout=10, text=True,
                       input="table inet silent {\n chain input {\n  type filter hook input priority 0; policy drop;\n }\n}\n")

    try:
        ip("netns", "add", ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("addr", "add", f"{host_ip}/24", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", ns, "addr", "add", f"{node_ip}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", NS_APP, node_ip],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        allow_addresses(node_ip)
        wait_until(lambda: socket.create_connection((node_ip, 8080), timeout=0.5).close() is None, timeout=10,
                   interval=0.05, retry_on=(OSError,), what=f"the namespaced app on {node_ip}:8080")
        yield SimpleNamespace(ip=node_ip, silence=silence)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(10)
        subprocess.run(["ip", "netns", "del", ns], timeout=10, capture_output=True)
        subprocess.run(["ip", "link", "del", veth], timeout=10, capture_output=True)


@pytest.fixture
def local_app():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_haproxy_marks_a_silent_server_down_without_failed_requests(ns_node, local_app):
    door = HaproxyFrontDoor("127.0.0.1", _free_port(), {"node1": f"127.0.0.1:{local_app}", "node2": f"{ns_node.ip}:8080"},
                            check_inter=0.3, fall=2, rise=2, timeout_connect=0.3, retries=2)
    log = p.EventLog()
    try:
        door.setup()
        door.setup()  # idempotent
        wait_until(lambda: (door.server_status() == {"node1": "UP", "node2": "UP"}, str(door.server_status())),
                   timeout=5, interval=0.05, what="haproxy to mark both servers UP")
        with door.watcher(log, interval=0.05):
            run = p.start(p.ProbeConfig((p.direct("127.0.0.1", port=door.port, name="haproxy"),), rate=50,
                                        duration=3.0, progress=False), log)
            time.sleep(1.0)
            log.add("poweroff", "node2")
            ns_node.silence()
            res = run.wait(timeout=30)
        assert door.server_status()["node2"] == "DOWN"
    finally:
        door.teardown()
        door.teardown()
    df = res.requests
    assert df["error"].isna().all(), df["error"].value_counts()
    assert set(df["node"]) == {"node1", "node2"}
    ev = res.events
    down = ev[ev["kind"] == "server DOWN"]
    assert list(down["detail"]) == ["node2 UP -> DOWN"]
    fault = analysis.fault_time(ev)
    assert 0.3 < down["t"].iloc[0] - fault < 1.6
    # Until the server is marked down, some requests pay one connect timeout before the retry.
    hit = df[(df["intended"] >= fault) & (df["latency"] > 0.25)]
    assert 1 <= len(hit) and (hit["latency"] < 1.0).all()
    assert not any(p.is_dir() for p in [door.workdir] if p is not None)


def test_haproxy_errors_are_product_errors_not_lab_errors(tmp_path):
    door = HaproxyFrontDoor("127.0.0.1", _free_port(), {"node1": "127.0.0.1:99999"}, workdir=tmp_path)
    with pytest.raises(CommandFailed, match="haproxy rejected its configuration") as info:
        door.setup()
    assert not isinstance(info.value, LabError)
    assert "99999" in str(info.value)  # haproxy's own complaint is in the message


class FlakyRestartNode(FakeNode):
    """``systemctl restart keepalived`` fails ``failures`` times, then works; the journal says why."""

    def __init__(self, *args, failures: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.failures = failures

    def run(self, argv, timeout, check=True, input=None):
        if list(argv) == ["systemctl", "restart", "keepalived"] and self.failures > 0:
            self.failures -= 1
            self.calls.append(list(argv))
            return local.Result(tuple(argv), 1, "", "Job for keepalived.service failed", 0.0)
        if list(argv)[:2] == ["journalctl", "-u"]:
            self.calls.append(list(argv))
            return local.Result(tuple(argv), 0, "Keepalived_vrrp: bind: address in use\n", "", 0.0)
        return super().run(argv, timeout, check, input)


def test_a_keepalived_restart_that_fails_once_is_retried_and_twice_names_the_journal():
    n1 = FlakyRestartNode("node1", "10.213.7.11", holds_vip=True, failures=1)
    _vip([n1, FakeNode("node2", "10.213.7.12")]).setup()
    assert n1.calls.count(["systemctl", "restart", "keepalived"]) == 2
    n1 = FlakyRestartNode("node1", "10.213.7.11", holds_vip=True, failures=2)
    with pytest.raises(CommandFailed) as info:
        _vip([n1, FakeNode("node2", "10.213.7.12")]).setup()
    assert "keepalived did not start on node1" in str(info.value) and "address in use" in str(info.value)
