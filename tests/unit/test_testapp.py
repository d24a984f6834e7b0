"""The test app: JSON answers with a fresh UUID, text fallback, keep-alive, clean SIGTERM."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import uuid

import pytest

from runbooks_lib.lab import testapp


@pytest.fixture
def app():
    server = testapp.make_server("127.0.0.1", 0, "node7", "web-abc12")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def _get(port: int, path: str = "/", headers: dict | None = None) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read().decode()
    finally:
        conn.close()


def test_json_answer_names_node_and_pod_with_a_fresh_uuid(app):
    status, ctype, body = _get(app)
    first = json.loads(body)
    second = json.loads(_get(app)[2])
    assert status == 200 and ctype == "application/json"
    assert first["node"] == "node7" and first["pod"] == "web-abc12"
    assert uuid.UUID(first["uuid"]) != uuid.UUID(second["uuid"])
    assert first["time"].endswith("Z")


def test_plain_text_fallback(app):
    status, ctype, body = _get(app, headers={"Accept": "text/plain"})
    assert status == 200 and ctype.startswith("text/plain")
    fields = body.split()
    assert len(fields) == 3 and fields[1:] == ["node7", "web-abc12"]
    uuid.UUID(fields[0])
    assert _get(app, "/?format=text")[2].split()[1:] == ["node7", "web-abc12"]
    # a browser's Accept list that includes JSON keeps JSON
    assert json.loads(_get(app, headers={"Accept": "text/plain, application/json"})[2])["node"] == "node7"


def test_healthz(app):
    assert _get(app, "/healthz")[0:3:2] == (200, "ok\n")


def test_keep_alive_serves_several_requests_on_one_connection(app):
    conn = http.client.HTTPConnection("127.0.0.1", app, timeout=5)
    try:
        uuids = set()
        for _ in range(3):
            conn.request("GET", "/")
            resp = conn.getresponse()
            uuids.add(json.loads(resp.read())["uuid"])
            assert not resp.will_close
        assert len(uuids) == 3
    finally:
        conn.close()


def test_wants_text():
    assert testapp.wants_text("text/plain", "")
    assert not testapp.wants_text("*/*", "")
    assert not testapp.wants_text(None, "")
    assert testapp.wants_text("application/json", "format=text")


def test_process_logs_requests_and_exits_zero_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbooks_lib.lab.testapp", "--host", "127.0.0.1", "--port", "0",
         "--node", "n1", "--pod", "p1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.split()[2].rsplit(":", 1)[1])
        assert json.loads(_get(port)[2])["pod"] == "p1"
        access = proc.stdout.readline()
        assert '"GET / HTTP/1.1" 200' in access
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_port_in_use_exits_nonzero(app):
    proc = subprocess.run(
        [sys.executable, "-m", "runbooks_lib.lab.testapp", "--host", "127.0.0.1", "--port", str(app)],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr
