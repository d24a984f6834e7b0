"""The ingress proof fits any app: a 2xx through a node, the serving pod shown when the app reports it."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from runbooks_lib import errors, ingress, schemas


class _App(http.server.BaseHTTPRequestHandler):
    """Answers by path: /json (the lab app's JSON), /plain (any app), /created (201), /down (503)."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body, status, kind = {
            "/json": (b'{"pod": "web-7d9", "node": "node3"}', 200, "application/json"),
            "/plain": (b"<html>hello</html>", 200, "text/html"),
            "/created": (b"", 201, "text/plain"),
            "/down": (b"maintenance", 503, "text/plain"),
        }.get(self.path, (b"", 404, "text/plain"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_any_2xx_proves_the_node_and_the_pod_is_shown_when_reported(port: int) -> None:
    ask = lambda path: ingress.ask_node("node1", "127.0.0.1", "app.example.org", port=port, path=path, timeout=5)  # noqa: E731
    lab_app = ask("/json")
    assert lab_app.ok and (lab_app.pod, lab_app.served_by) == ("web-7d9", "node3")
    other = ask("/plain")
    assert other.ok and other.pod == "" and other.error == ""
    assert ask("/created").ok
    down = ask("/down")
    assert not down.ok and down.error == "HTTP 503 Service Unavailable"
    assert not ask("/missing").ok
    every = ingress.ask_every_node({"node1": "127.0.0.1", "node2": "127.0.0.1"}, "app.example.org", port=port,
                                   path="/plain", timeout=5)
    assert [a.ok for a in every] == [True, True]


def test_no_answer_is_not_ok() -> None:
    answer = ingress.IngressAnswer("node1", "192.0.2.1", None, error="ConnectionRefusedError: refused")
    assert not answer.ok


def test_the_app_manifests_take_any_image_port_and_readiness_path() -> None:
    deployment, service, _ = ingress.app_manifests("shop", "shop.example.org", replicas=3,
                                                   image="registry.example.org/team/shop:1.4.2", port=3000,
                                                   ready_path="/ready")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.org/team/shop:1.4.2"
    assert container["ports"][0]["containerPort"] == 3000 and {"name": "PORT", "value": "3000"} in container["env"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 3000}
    assert service["spec"]["ports"][0]["targetPort"] == 3000


@pytest.mark.parametrize(("key", "value", "message"), [
    ("app_image", "my app:1", "is not an image reference"),
    ("app_image", "", "is not an image reference"),
    ("app_ready_path", "healthz", "must be an absolute URL path"),
    ("app_port", 0, "app_port must be 1..65535"),
    ("app_port", 70000, "app_port must be 1..65535"),
])
def test_bad_app_values_are_refused(key: str, value: object, message: str) -> None:
    p = schemas.FailoverParams(cluster_name="c", app_host="app.example.org", dns_server="192.0.2.53",
                               fault_injector="manual", **{key: value})
    with pytest.raises(errors.BadParameters, match=message):
        schemas.check_failover(p)
