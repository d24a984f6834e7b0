"""Watches: the event stream of a collection (or of one object) and its HTTP streaming.

A watch starts after a resourceVersion (the etcd revision): unset or "0" sends
the current objects first as ADDED. Objects entering or leaving the selection
are ADDED/DELETED, as kube-apiserver's watch cache does. A compacted start
revision gives an ERROR event with 410 Expired. ``sendInitialEvents`` (watch
lists) is refused in :mod:`.params`, as kube-apiserver 1.30 with the WatchList
gate off refuses it; clients then list and watch.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from . import status, tables
from .api import Api, _meta
from .params import ListOptions
from .resources import Resource
from .selectors import Requirement, matches
from .status import ApiError
from .storage import Compacted, StorageUnavailable

BOOKMARK_INTERVAL = 30.0


async def events(api: Api, res: Resource, namespace: str | None, resource_version: int | None,
                 labels: list[Requirement] | None = None,
                 fields: Callable[[dict], bool] | None = None) -> AsyncIterator[tuple[str, dict]]:
    """Yield (ADDED|MODIFIED|DELETED, object) after ``resource_version`` (None: current objects first).

    Raises ApiError 410 when the revision was compacted.
    """

    def selected(obj: dict | None) -> bool:
        if obj is None:
            return False
        if labels and not matches(labels, _meta(obj).get("labels")):
            return False
        return not (fields and not fields(obj))

    if resource_version is None:
        items, rev = await api.list(res, namespace, labels, fields)
        for obj in items:
            yield "ADDED", obj
        start = rev + 1
    else:
        start = resource_version + 1
    try:
        async for ev in api.store.watch(res.prefix(namespace), start):
            cur = copy.deepcopy(ev.value) if ev.value is not None else None
            prev = copy.deepcopy(ev.prev) if ev.prev is not None else None
            rv = str(ev.revision)
            if ev.type == "DELETE":
                if selected(prev):
                    _meta(prev)["resourceVersion"] = rv
                    yield "DELETED", prev
                continue
            assert cur is not None
            _meta(cur)["resourceVersion"] = rv
            now_in, was_in = selected(cur), selected(prev)
            if now_in and was_in:
                yield "MODIFIED", cur
            elif now_in:
                yield "ADDED", cur
            elif was_in:
                yield "DELETED", cur
    except Compacted as exc:
        raise status.gone(exc.what) from None


async def serve(request: web.Request, api: Api, res: Resource, ns: str | None, opts: ListOptions,
                start: int | None, labels: list | None, fields: Callable[[dict], bool] | None,
                as_table: bool) -> web.StreamResponse:
    """Stream watch events as newline-delimited JSON until the watch times out or the client leaves.

    The timeout is timeoutSeconds, or 1-2x kube-apiserver's --min-request-timeout
    (1800 s) when it is 0 or unset. BOOKMARK events come every 30 s with
    allowWatchBookmarks once an event carried a resourceVersion.
    """
    queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
    include = request.query.get("includeObject", "Metadata")

    async def pump() -> None:
        try:
            async for event in events(api, res, ns, start, labels, fields):
                await queue.put(event)
            await queue.put(None)
        except ApiError as err:
            await queue.put(err)
        except StorageUnavailable as exc:
            await queue.put(status.unavailable(exc.what))

    producer = asyncio.get_running_loop().create_task(pump())
    resp = web.StreamResponse(headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + opts.watch_timeout()
    last_rv = str(start) if start is not None else None
    last_bookmark = loop.time()
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), timeout=min(remaining, 5.0))
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break
                if opts.allow_watch_bookmarks and last_rv and loop.time() - last_bookmark >= BOOKMARK_INTERVAL:
                    await resp.write(json.dumps({"type": "BOOKMARK", "object": {
                        "kind": res.kind, "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": last_rv}}}).encode() + b"\n")
                    last_bookmark = loop.time()
                continue
            if item is None:
                break
            if isinstance(item, ApiError):
                await resp.write(json.dumps({"type": "ERROR", "object": item.status()}).encode() + b"\n")
                break
            etype, obj = item
            last_rv = obj.get("metadata", {}).get("resourceVersion", last_rv)
            if as_table:
                obj = tables.table(res.kind, [obj], include_object=include)
            await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
    try:
        await resp.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass
    return resp
