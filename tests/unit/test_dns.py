"""The lab DNS server (dnsmasq) on loopback: rotation, TTL, changes at run time, and the probe resolving against it."""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import socket
import threading

import pytest

from runbooks_lib import probe as p
from runbooks_lib.errors import BadParameters
from runbooks_lib.lab import dns
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

NAME = "uuid.awesome.lab"


def _free_udp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq wants both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue  # the TCP side of this port is taken: try another
            return port
    raise AssertionError("no port free for both UDP and TCP on 127.0.0.1 after 50 tries")


@pytest.fixture
def server(tmp_path):
    srv = dns.DnsServer(tmp_path / "dns", listen="127.0.0.1", port=_free_udp_port(), ttl=5)
    srv.start()
    yield srv
    srv.stop()
    assert srv.state() is None


def _resolve(srv: dns.DnsServer, name: str = NAME):
    import dns.message
    import dns.query

    resp = dns.query.udp(dns.message.make_query(name, "A"), srv.listen, port=srv.port, timeout=1)
    rrset = resp.answer[0]
    return [r.address for r in rrset], rrset.ttl


def test_rotation_and_ttl(server):
    server.set_records(NAME, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    answers = [_resolve(server) for _ in range(6)]
    assert all(sorted(ips) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] for ips, _ in answers)
    assert all(ttl == 5 for _, ttl in answers)
    # Round-robin: the first address changes between answers.
    assert len({ips[0] for ips, _ in answers}) >= 2


def test_change_at_run_time_and_remove(server):
    server.set_records(NAME, ["10.0.0.1", "10.0.0.2"])
    server.set_records(NAME, ["10.0.0.7"])
    assert _resolve(server)[0] == ["10.0.0.7"]
    assert server.records() == {NAME: ("10.0.0.7",)}
    server.set_records(NAME, [])
    assert server.query(NAME) == ()


def test_new_ttl_restarts_and_keeps_records(server):
    server.set_records(NAME, ["10.0.0.1"])
    old_pid = server.state().pid
    server.set_records("other.awesome.lab", ["10.0.0.9"], ttl=2)
    assert server.state().pid != old_pid and server.state().ttl == 2
    assert _resolve(server) == (["10.0.0.1"], 2)


def test_hand_edited_records_file_is_picked_up(server):
    tmp = server.state_dir / "edit.tmp"
    tmp.write_text(f"10.0.0.5 {NAME}\n")
    tmp.replace(server.records_file)
    wait_until(lambda: (server.query(NAME) == ("10.0.0.5",), f"{NAME} answers {server.query(NAME)}"), 5,
               "dnsmasq to pick up the hand-edited records file", 0.05)


def test_start_is_idempotent_and_stop_twice_is_fine(server):
    first = server.state()
    assert server.start() == first
    other = dns.server(server.state_dir)
    assert (other.listen, other.port, other.ttl) == (server.listen, server.port, server.ttl)
    other.stop()
    other.stop()
    assert server.state() is None


def test_bad_names_and_addresses(server):
    with pytest.raises(BadParameters):
        server.set_records("bad name", ["10.0.0.1"])
    with pytest.raises(BadParameters):
        server.set_records(NAME, ["10.0.0.300"])


def test_cli_set_and_show(server, capsys):
    parser = argparse.ArgumentParser()
    dns.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["dns", "--state-dir", str(server.state_dir), "set", NAME, "10.0.0.4", "10.0.0.5"])
    assert args.func(args) == 0
    assert sorted(server.query(NAME)) == ["10.0.0.4", "10.0.0.5"]
    args = parser.parse_args(["dns", "--state-dir", str(server.state_dir), "show"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "running on 127.0.0.1" in out and "10.0.0.4 10.0.0.5" in out


def test_probe_resolver_honours_ttl(server):
    server.set_records(NAME, ["10.0.0.1"], ttl=1)

    async def main():
        res = p.CachingResolver(server.listen, server.port)
        first = await res.resolve(NAME)
        server.set_records(NAME, ["10.0.0.2"])
        cached = await res.resolve(NAME)
        await asyncio.sleep(1.1)
        fresh = await res.resolve(NAME)
        return first, cached, fresh, res.queries

    first, cached, fresh, queries = asyncio.run(main())
    assert (first, cached, fresh) == (("10.0.0.1",), ("10.0.0.1",), ("10.0.0.2",))
    assert queries == 2


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"node": self.server.node, "pod": "p", "uuid": "u"}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_probe_round_robins_over_the_served_names(server):
    servers = []
    port = None
    for i, addr in enumerate(["127.0.0.1", "127.0.0.2"], start=1):
        httpd = http.server.ThreadingHTTPServer((addr, port or 0), _Handler)
        httpd.node = f"node{i}"  # type: ignore[attr-defined]
        port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
    try:
        server.set_records(NAME, ["127.0.0.1", "127.0.0.2"])
        cfg = p.ProbeConfig((p.naive(p.Target(NAME, port)),), rate=20, duration=0.5, dns_server=server.listen,
                            dns_port=server.port, progress=False)
        res = p.run(cfg)
    finally:
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()
    df = res.requests
    assert df["error"].isna().all()
    assert df["node"].value_counts().to_dict() == {"node1": 5, "node2": 5}
    assert res.dns_queries == 1  # one answer, cached for its TTL
    assert df["dns"].notna().all()
