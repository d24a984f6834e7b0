"""The test HTTP app the failover runbook deploys (the lab's ``mopckou/sticky-session``).

``python -m runbooks_lib.lab.testapp --port P --node NAME --pod NAME [--host IP]``

GET / answers JSON with a fresh UUID, the node and pod that served it and the
server time, so a probe can tell which node answered every request. Clients
asking for text (``Accept: text/plain`` without JSON, or ``?format=text``) get
one plain line ``uuid node pod``. GET /healthz answers ``ok``. HTTP/1.1
keep-alive is supported (a probe lane keeps connections open). One access-log
line per request goes to stdout (the pod log). SIGTERM stops it with exit 0.

Stdlib only: it runs inside the lab machines' minimal venv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def answer(node: str, pod: str, path: str = "/") -> dict:
    """Return the JSON body of one answer (a new UUID every call)."""
    return {
        "uuid": str(uuid.uuid4()),
        "node": node,
        "pod": pod,
        "hostname": socket.gethostname(),
        "path": path,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def wants_text(accept: str | None, query: str) -> bool:
    """True if the client asked for plain text rather than JSON."""
    if "text" in parse_qs(query).get("format", []):
        return True
    accept = (accept or "").lower()
    return "text/plain" in accept and "json" not in accept


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "sticky-session-lab/1"
    node = ""
    pod = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path in ("/healthz", "/readyz", "/livez"):
            self._send(200, b"ok\n", "text/plain; charset=utf-8", log=False)
            return
        body = answer(self.node, self.pod, url.path)
        if wants_text(self.headers.get("Accept"), url.query):
            data = f"{body['uuid']} {body['node']} {body['pod']}\n".encode()
            self._send(200, data, "text/plain; charset=utf-8", uuid_=body["uuid"])
        else:
            self._send(200, (json.dumps(body) + "\n").encode(), "application/json", uuid_=body["uuid"])

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(200, b"", "application/json", log=False)

    def _send(self, code: int, data: bytes, ctype: str, log: bool = True, uuid_: str = "") -> None:
        self.send_response_only(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Node", self.node)
        self.send_header("X-Pod", self.pod)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        if log:
            stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            sys.stdout.write(f"{stamp} {self.client_address[0]} \"{self.requestline}\" {code} {uuid_}\n")
            sys.stdout.flush()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # access lines are written by _send; errors are not worth a pod log line each


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def make_server(host: str, port: int, node: str, pod: str) -> ThreadingHTTPServer:
    """Bind the app to host:port (port 0 picks a free one); call serve_forever() to run it."""
    handler = type("Handler", (_Handler,), {"node": node, "pod": pod})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_cls = type("Server", (_Server,), {"address_family": family})
    return server_cls((host, port), handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runbooks_lib.lab.testapp", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default all)")
    parser.add_argument("--node", default=os.environ.get("NODE_NAME", socket.gethostname()))
    parser.add_argument("--pod", default=os.environ.get("POD_NAME", socket.gethostname()))
    args = parser.parse_args(argv)
    try:
        server = make_server(args.host, args.port, args.node, args.pod)
    except OSError as exc:
        sys.stderr.write(f"cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1

    def stop(signum: int, frame: object) -> None:
        # shutdown() blocks until serve_forever returns, so it must run in another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(f"listening on {args.host}:{server.server_address[1]} node={args.node} pod={args.pod}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
