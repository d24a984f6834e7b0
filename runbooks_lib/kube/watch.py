"""Watches on the Kubernetes API that turn object changes into timestamped events.

:class:`EventWatch` lists a collection, then follows it with ``?watch=true``
from the list's resourceVersion (re-listing after a broken stream), in its own
thread, and hands every object seen to ``describe``; each change of what
``describe`` returns becomes an event in an :class:`runbooks_lib.probe.EventLog`
at the time the watch saw it. Read-only. :func:`node_watch` records node
``Ready -> NotReady`` (and back), :func:`endpoints_watch` the ready addresses
of one Service's Endpoints. Every request has a timeout; the stream's read
timeout makes a dead API server show as a re-list, never as a hang.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes

from runbooks_lib.kube.api import call, expect

Describe = Callable[[Mapping[str, Any]], tuple[str, str] | None]  # object -> (key, state) or None


class EventWatch:
    """Follows ``path`` and records ``KIND`` events when an object's described state changes.

    ``describe(obj)`` returns ``(key, state)``; a change of ``state`` for a
    ``key`` already seen records ``kind_of(old, new)`` with detail
    ``"KEY OLD -> NEW"``. Side effect: one daemon thread until :meth:`stop`.
    """

    def __init__(self, api: kubernetes.client.ApiClient, path: str, describe: Describe, events: Any, *,
                 kind_of: Callable[[str, str], str], source: str, timeout: float = 10.0) -> None:
        self.api = api
        self.path = path
        self.describe = describe
        self.events = events
        self.kind_of = kind_of
        self.source = source
        self.timeout = timeout
        self.states: dict[str, str] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _see(self, obj: Mapping[str, Any]) -> None:
        found = self.describe(obj)
        if found is None:
            return
        key, state = found
        before = self.states.get(key)
        if before is not None and before != state:
            self.events.add(self.kind_of(before, state), f"{key} {before} -> {state}", source=self.source)
        self.states[key] = state

    def _list(self) -> str:
        doc = expect(*call(self.api, "GET", self.path, timeout=self.timeout), "GET", self.path)
        for obj in doc.get("items", []):
            self._see(obj)
        return str(doc.get("metadata", {}).get("resourceVersion", ""))

    def _follow(self, rv: str) -> None:
        query = [("watch", "true"), ("resourceVersion", rv), ("timeoutSeconds", "30")]
        method, url, headers, body, post = self.api.param_serialize(
            method="GET", resource_path=self.path, query_params=query,
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        resp = self.api.call_api(method, url, header_params=headers, body=body, post_params=post,
                                 _request_timeout=(self.timeout, self.timeout))
        raw = resp.response
        try:
            buffer = b""
            while not self._stop.is_set():
                chunk = raw.read1(65536) if hasattr(raw, "read1") else raw.read(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self._see(event.get("object") or {})
        finally:
            raw.release_conn()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow(self._list())
            except Exception as exc:  # noqa: BLE001 - a dead API server or broken stream: re-list
                self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                self._stop.wait(0.5)

    def start(self) -> EventWatch:
        """List once (raises if the API does not answer), then follow in the background."""
        self._list()
        self._thread = threading.Thread(target=self._loop, name=f"watch {self.path}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Stop following; waits at most ``timeout`` (a daemon thread blocked in a read ends at its read timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> EventWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ready(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    name = obj.get("metadata", {}).get("name")
    if not name:
        return None
    conds = {c.get("type"): c.get("status") for c in obj.get("status", {}).get("conditions", [])}
    return name, "Ready" if conds.get("Ready") == "True" else "NotReady"


def node_watch(api: kubernetes.client.ApiClient, events: Any, *, timeout: float = 10.0) -> EventWatch:
    """Records ``node NotReady`` / ``node Ready`` when a node's Ready condition changes."""
    return EventWatch(api, "/api/v1/nodes", _ready, events, kind_of=lambda old, new: f"node {new}",
                      source="kubernetes", timeout=timeout)


def endpoints_watch(api: kubernetes.client.ApiClient, events: Any, namespace: str, service: str, *,
                    timeout: float = 10.0) -> EventWatch:
    """Records ``endpoints changed`` when the ready addresses (by node) of Service ``service`` change."""

    def ready_nodes(obj: Mapping[str, Any]) -> tuple[str, str] | None:
        if obj.get("metadata", {}).get("name") != service:
            return None
        nodes = sorted(a.get("nodeName") or a.get("ip", "?") for s in obj.get("subsets") or []
                       for a in s.get("addresses") or [])
        return service, ",".join(nodes) or "none"

    return EventWatch(api, f"/api/v1/namespaces/{namespace}/endpoints", ready_nodes, events,
                      kind_of=lambda old, new: "endpoints changed", source="kubernetes", timeout=timeout)
