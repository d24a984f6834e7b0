"""The API stand-in's watch cache on a real etcd: it follows etcd again after the member restarts, and
restoring etcd under a running server leaves that server on the old state until it restarts (as kube-apiserver).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.waiting import wait_until

pytestmark = [pytest.mark.local, pytest.mark.slow]

CMS = "/api/v1/namespaces/default/configmaps"


class Watch:
    """An HTTP watch read by a thread; ``events`` fills as lines arrive, ``ended`` once the stream closes."""

    def __init__(self, server, path: str) -> None:
        self.events: list[dict] = []
        self.ended = threading.Event()
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.ssl_context(), timeout=90)
        conn.request("GET", path)
        self._sock = conn.sock
        self._resp = conn.getresponse()
        assert self._resp.status == 200, self._resp.read()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._resp:
                if line.strip():
                    self.events.append(json.loads(line))
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            self.ended.set()

    def names(self) -> list[tuple[str, str]]:
        return [(e["type"], e["object"].get("metadata", {}).get("name", "")) for e in self.events]

    def close(self) -> None:
        """Shut the connection down (unblocks the reading thread) and wait for the thread (bounded)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ended.wait(10)


def _names(server) -> set[str]:
    code, body = server.get(CMS, timeout=20)
    assert code == 200, body
    return {i["metadata"]["name"] for i in body["items"]}


def _create(server, name: str) -> int:
    code, body = server.request("POST", CMS, {"metadata": {"name": name}, "data": {"v": "0"}})
    assert code == 201, body
    return int(body["metadata"]["resourceVersion"])


def _etcd_keys(cluster) -> set[str]:
    proc = cluster.etcdctl("get", "--prefix", "--keys-only", "/registry/configmaps/default/")
    assert proc.returncode == 0, proc.stderr
    return {line.rsplit("/", 1)[1] for line in proc.stdout.split()}


def test_the_cache_follows_etcd_again_after_the_member_restarts(etcd1_own, api_server_factory):
    server = api_server_factory(etcd_servers=etcd1_own.etcd_servers, extra_args=["--no-controllers", "--watch-cache"])
    rv = _create(server, "first")
    watch = Watch(server, f"{CMS}?watch=true&resourceVersion={rv}&timeoutSeconds=60")
    try:
        member = etcd1_own.members[0]
        member.kill()
        wait_until(lambda: server.get("/readyz", timeout=10)[0] == 500, 20, "readyz to report etcd down", 0.3)
        member.start()
        etcd1_own.wait_healthy(30)
        wait_until(lambda: server.get("/readyz")[0] == 200, 30, "readyz to report etcd again", 0.3)
        started = time.monotonic()
        _create(server, "second")
        wait_until(lambda: ("ADDED", "second") in watch.names(), 10, "the watch to report the new object", 0.1)
        print(f"watch event {time.monotonic() - started:.2f}s after the create")
        assert watch.names() == [("ADDED", "second")] and not watch.ended.is_set()
        assert _names(server) == {"first", "second"}
    finally:
        watch.close()
    assert server.proc.poll() is None
    assert "Traceback" not in server.log_path.read_text(errors="replace")


def test_a_restore_under_a_running_server_is_not_seen_until_it_restarts(etcd1_own, api_server_factory, tmp_path: Path):
    server = api_server_factory(etcd_servers=etcd1_own.etcd_servers, extra_args=["--no-controllers", "--watch-cache"])
    _create(server, "before")
    snapshot = tmp_path / "snapshot.db"
    proc = etcd1_own.etcdctl("snapshot", "save", str(snapshot))
    assert proc.returncode == 0, proc.stderr
    # A few revisions after the snapshot, so that writes after the restore stay below the server's revision.
    rv = _create(server, "after")
    for i in range(1, 5):
        code, body = server.request("PATCH", f"{CMS}/after", {"data": {"v": str(i)}},
                                    content_type="application/merge-patch+json")
        assert code == 200, body
        rv = int(body["metadata"]["resourceVersion"])
    watch = Watch(server, f"{CMS}?watch=true&resourceVersion={rv}&timeoutSeconds=60")
    try:
        # Restore as an operator does: stop the member, restore into a new data directory, start it.
        member = etcd1_own.members[0]
        member.kill()
        member.restore(snapshot)
        member.start()
        etcd1_own.wait_healthy(30)
        assert _etcd_keys(etcd1_own) == {"before"}
        wait_until(lambda: server.get("/readyz")[0] == 200, 30, "readyz after the restore", 0.3)

        # (a) The running server still serves the state from before the restore; its watch says nothing.
        assert _names(server) == {"before", "after"}
        code, body = server.get(f"{CMS}/after")
        assert code == 200 and body["data"] == {"v": "4"}, body
        code, body = server.request("POST", CMS, {"metadata": {"name": "during"}})
        assert code == 201, body  # written to etcd, at a revision the cache has already passed
        assert "during" in _etcd_keys(etcd1_own) and _names(server) == {"before", "after"}
        time.sleep(5)
        assert watch.events == [] and not watch.ended.is_set(), watch.names()
        assert f"resuming at revision {rv + 1}" in server.log_path.read_text(errors="replace")
    finally:
        watch.close()

    # (b) A restarted server lists etcd again: the restored state.
    server.stop()
    server.start()
    assert _names(server) == {"before", "during"}
