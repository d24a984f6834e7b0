"""A watch cache in front of etcd, as kube-apiserver keeps one.

:class:`CachedStore` lists every key under ``/registry/`` once, at revision
R, then follows one etcd watch over the whole keyspace from R+1: each change
under the prefix updates an in-memory copy and a ring of recent events of its
resource; changes elsewhere only advance the cache's revision. Gets and lists
are served from the copy once it has reached etcd's current revision (one
linearizable revision request per read, so reads fail without quorum; if the
cache does not catch up within ``wait`` seconds the read goes to etcd, as
kube-apiserver's consistent reads from cache do). Watches are served from the
rings and then live; a start revision older than a ring keeps is
:class:`~.storage.Compacted` (410 Gone). Writes go to etcd (compare-and-swap
on the mod revision) and return once the cache has seen them (bounded by
``wait``); a key whose compare failed is read from etcd once, as
kube-apiserver retries an update with etcd's current object.

The cache follows etcd's revisions, not its content: after etcd is restored
from a snapshot, etcd's revision is lower than the cache's, the watch resumed
at the cache's revision + 1 waits for a revision etcd has not reached, and
this server keeps serving the state from before the restore (its own writes,
at revisions the cache has passed, are not seen either) until it restarts, as
kube-apiserver does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from .storage import Compacted, Event, Item, StorageUnavailable, Store, decode, encode

log = logging.getLogger(__name__)

RING_MIN = 100  # events kept per resource at least (kube-apiserver's watch cache starts at 100)
RING_MAX = 1024  # events kept per resource at most
RING_FRESH = 75.0  # seconds: younger events are kept up to RING_MAX (kube-apiserver keeps 75 s of history)
WAIT = 3.0  # seconds a read or a write waits for the cache (kube-apiserver's watch cache waits 3 s)
STALL = 0.5  # seconds behind etcd after which the watch stream is re-established (it may sit on a frozen member)


@dataclass
class _Ring:
    """Recent events of one resource: (sequence number, time, event).

    Every event of the resource after revision ``floor_rev`` (sequence
    ``floor_seq``) is in ``events``.
    """

    floor_rev: int
    floor_seq: int
    events: deque[tuple[int, float, Event]] = field(default_factory=deque)


def _resource(key: str) -> str | None:
    """The resource prefix of a key or watch prefix: ``/registry/pods/ns/name`` -> ``/registry/pods/``."""
    parts = key.split("/")
    return "/".join(parts[:3]) + "/" if len(parts) >= 4 and parts[2] else None


class CachedStore:
    """A :class:`~.storage.Store` serving reads and watches from a cache of ``inner`` (an EtcdStore).

    Side effects: :meth:`connect` connects ``inner`` and starts a background task
    holding one etcd watch (re-established after etcd restarts, never ending
    until :meth:`close`).
    """

    def __init__(self, inner: Store, prefix: str = "/registry/", wait: float = WAIT, ring_min: int = RING_MIN,
                 ring_max: int = RING_MAX, ring_fresh: float = RING_FRESH) -> None:
        self.inner = inner
        self.prefix = prefix
        self._wait = wait
        self._ring_min, self._ring_max, self._ring_fresh = ring_min, ring_max, ring_fresh
        self._data: dict[str, tuple[bytes, int, int]] = {}  # key -> (value, create revision, mod revision)
        self._rev = 0  # revision of the last change applied
        self._seq = 0  # number of events applied
        self._generation = 0  # number of full lists; a new one ends every watch
        self._base = (0, 0)  # (revision, sequence) of the last full list
        self._rings: dict[str, _Ring] = {}
        self._changed = asyncio.Event()
        self._refresh: set[str] = set()
        self._task: asyncio.Task | None = None
        self._stream: asyncio.Task | None = None
        self._kicked = 0.0

    def describe(self) -> str:
        return f"{self.inner.describe()} (watch cache)"

    @property
    def cache_revision(self) -> int:
        """The etcd revision the cache has reached."""
        return self._rev

    # -- following etcd ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect ``inner``, start following etcd and wait (bounded by ``wait``) for the first list."""
        connect = getattr(self.inner, "connect", None)
        if connect is not None:
            await connect()
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._caught_up(1)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay, relist = 0.25, True
        while True:
            started = loop.time()
            try:
                if relist:
                    await self._relist()
                    relist = False
                self._stream = loop.create_task(self._follow())
                try:
                    await self._stream
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
                    log.info("re-establishing the etcd watch at revision %d", self._rev + 1)
                    continue
            except Compacted as exc:
                log.warning("etcd compacted revision %d that the watch cache needs: listing again", exc.compacted)
                relist = True
            except StorageUnavailable as exc:
                log.warning("watch cache: %s; resuming at revision %d", exc.what, self._rev + 1)
                delay = 0.25 if loop.time() - started > 10 else delay
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:  # noqa: BLE001 - the cache must keep following etcd
                log.exception("watch cache failed; resuming at revision %d", self._rev + 1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _relist(self) -> None:
        items, rev = await self.inner.list(self.prefix)
        self._data = {i.key: (encode(i.value), i.create_revision, i.mod_revision) for i in items}
        self._rev = rev
        self._generation += 1
        self._base = (rev, self._seq)
        self._rings.clear()
        log.info("watch cache listed %d objects at revision %d", len(items), rev)
        self._notify()

    async def _follow(self) -> None:
        async for event in self.inner.watch("", self._rev + 1):
            self._apply(event)
        raise StorageUnavailable("etcd ended the watch")

    def _apply(self, ev: Event) -> None:
        if ev.key.startswith(self.prefix):
            old = self._data.get(ev.key)
            prev = decode(old[0]) if old else None  # the cache's own previous value, as kube-apiserver's
            if ev.type == "PUT" and ev.value is not None:
                self._data[ev.key] = (encode(ev.value), old[1] if old else ev.revision, ev.revision)
                self._remember(Event("PUT", ev.key, ev.value, prev, ev.revision))
            elif old is not None:
                del self._data[ev.key]
                self._remember(Event("DELETE", ev.key, None, prev, ev.revision))
        self._rev = ev.revision
        self._notify()

    def _remember(self, ev: Event) -> None:
        self._seq += 1
        now = asyncio.get_running_loop().time()
        ring = self._rings.setdefault(_resource(ev.key) or ev.key, _Ring(*self._base))
        ring.events.append((self._seq, now, ev))
        while len(ring.events) > self._ring_min and (
                len(ring.events) > self._ring_max or now - ring.events[0][1] > self._ring_fresh):
            seq, _, old = ring.events.popleft()
            ring.floor_rev, ring.floor_seq = old.revision, seq

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _kick(self) -> None:
        """Re-establish the etcd watch stream (at most every STALL seconds)."""
        now = asyncio.get_running_loop().time()
        if self._stream is not None and not self._stream.done() and now - self._kicked >= STALL:
            self._kicked = now
            self._stream.cancel()

    async def _caught_up(self, revision: int) -> bool:
        """Wait (at most ``wait`` seconds) until the cache holds ``revision``; False if it did not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while self._generation == 0 or self._rev < revision:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, STALL))
            except TimeoutError:
                self._kick()
        return True

    async def _fresh(self) -> bool:
        """Whether the cache has reached etcd's current revision (waits; raises StorageUnavailable)."""
        return await self._caught_up(await self.inner.revision())

    # -- reads ------------------------------------------------------------------------------------------

    async def get(self, key: str) -> Item | None:
        if key in self._refresh or not await self._fresh():
            self._refresh.discard(key)
            return await self.inner.get(key)
        entry = self._data.get(key)
        return None if entry is None else Item(key, decode(entry[0]), entry[2], entry[1])

    async def list(self, prefix: str) -> tuple[list[Item], int]:
        if not await self._fresh():
            return await self.inner.list(prefix)
        keys = sorted(k for k in self._data if k.startswith(prefix))
        return [Item(k, decode(self._data[k][0]), self._data[k][2], self._data[k][1]) for k in keys], self._rev

    async def revision(self) -> int:
        return self._rev

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """Events under ``prefix`` (one resource, or one namespace of it) from ``start_revision``.

        Raises Compacted when the resource's ring no longer holds that revision
        (or falls behind while the consumer is slow); ends when the cache lists
        etcd again, as kube-apiserver ends its watches when its cache is replaced.
        """
        name = _resource(prefix)
        if name is None:
            raise ValueError(f"{prefix!r} does not name a resource")
        if not await self._caught_up(1):
            raise StorageUnavailable("the watch cache has not listed etcd yet")
        generation = self._generation
        start = start_revision if start_revision > 0 else self._rev + 1
        next_seq = 0
        while generation == self._generation:
            ring = self._rings.get(name)
            floor_rev, floor_seq = (ring.floor_rev, ring.floor_seq) if ring else self._base
            if floor_rev >= start and floor_seq >= next_seq:
                raise Compacted(start - 1, floor_rev)
            batch = []
            for seq, _, ev in reversed(ring.events if ring else ()):
                if seq < next_seq:
                    break
                if ev.revision >= start and ev.key.startswith(prefix):
                    batch.append(ev)
            next_seq = self._seq + 1
            for ev in reversed(batch):
                yield ev
            changed = self._changed
            if self._seq < next_seq and generation == self._generation:
                await changed.wait()

    # -- writes -----------------------------------------------------------------------------------------

    async def _written(self, rev: int | None, keys: Sequence[str]) -> int | None:
        if rev is None:
            self._refresh.update(keys)
        elif not await self._caught_up(rev):
            log.warning("the watch cache did not see revision %d within %gs", rev, self._wait)
        return rev

    async def create(self, key: str, value: dict) -> int | None:
        return await self._written(await self.inner.create(key, value), [key])

    async def update(self, key: str, value: dict, mod_revision: int) -> int | None:
        return await self._written(await self.inner.update(key, value, mod_revision), [key])

    async def delete(self, key: str, mod_revision: int | None = None) -> int | None:
        return await self._written(await self.inner.delete(key, mod_revision), [key])

    async def txn(
        self, compares: Sequence[tuple[str, int]], puts: Sequence[tuple[str, dict]], deletes: Sequence[str]
    ) -> int | None:
        return await self._written(await self.inner.txn(compares, puts, deletes), [k for k, _ in compares])

    # -- lifecycle --------------------------------------------------------------------------------------

    async def health(self) -> None:
        await self.inner.health()

    async def close(self) -> None:
        """Stop following etcd and close ``inner``."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.inner.close()
