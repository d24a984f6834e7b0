"""The watch cache (CachedStore) over the in-memory store: reads, watches from its rings, 410, restores."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable

import pytest

from runbooks_lib.lab.kubeapi.storage import Compacted, Event, MemoryStore
from runbooks_lib.lab.kubeapi.watchcache import CachedStore

CM = "/registry/configmaps/default/"


class RestorableStore(MemoryStore):
    """A memory store that can be put back to an earlier state, as `etcdutl snapshot restore` does to etcd."""

    def snapshot(self) -> tuple[dict, int]:
        return copy.deepcopy(self._data), self._rev

    def restore(self, snap: tuple[dict, int], bump: int = 0) -> None:
        """Go back to ``snap``; ``bump`` > 0 raises the revision and marks it compacted (as etcdutl's
        --bump-revision with --mark-compacted)."""
        self._data, self._rev = copy.deepcopy(snap[0]), snap[1] + bump
        self._events = [e for e in self._events if e.revision <= snap[1]]
        if bump:
            self.compact(self._rev)


def run(test: Callable[[CachedStore, MemoryStore], Awaitable[None]], inner: MemoryStore | None = None,
        **kwargs: object) -> None:
    async def main() -> None:
        store = inner or MemoryStore()
        cache = CachedStore(store, wait=1.0, **kwargs)  # type: ignore[arg-type]
        await cache.connect()
        try:
            await asyncio.wait_for(test(cache, store), 20)
        finally:
            await cache.close()

    asyncio.run(main())


async def collect(watch, count: int, timeout: float = 2.0) -> list[Event]:
    """The first ``count`` events of ``watch`` (fewer if it goes quiet for ``timeout`` seconds)."""
    out: list[Event] = []
    while len(out) < count:
        try:
            out.append(await asyncio.wait_for(anext(watch), timeout))
        except (TimeoutError, StopAsyncIteration):
            break
    return out


def test_reads_see_own_writes_and_watches_replay_the_ring():
    async def t(cache: CachedStore, inner: MemoryStore) -> None:
        rev_a = await cache.create(CM + "a", {"v": 1})
        assert rev_a and cache.cache_revision >= rev_a
        item = await cache.get(CM + "a")
        assert item is not None and item.value == {"v": 1} and item.mod_revision == rev_a == item.create_revision
        rev_u = await cache.update(CM + "a", {"v": 2}, rev_a)
        assert rev_u and await cache.update(CM + "a", {"v": 3}, rev_a) is None
        await cache.create("/registry/pods/default/p", {"p": 1})
        await cache.delete(CM + "a")
        items, rev = await cache.list(CM)
        assert items == [] and rev == cache.cache_revision
        # A watch from before the create replays the configmap events only, with the cache's previous values.
        events = await collect(cache.watch(CM, rev_a), 3)
        assert [(e.type, e.value, e.prev) for e in events] == [
            ("PUT", {"v": 1}, None), ("PUT", {"v": 2}, {"v": 1}), ("DELETE", None, {"v": 2})]
        # Live events follow, also for writes made behind the cache's back.
        watch = cache.watch(CM, 0)
        pending = asyncio.ensure_future(collect(watch, 1))
        await asyncio.sleep(0.05)
        await inner.create(CM + "b", {"v": 9})
        assert [(e.type, e.key) for e in await pending] == [("PUT", CM + "b")]

    run(t)


def test_watch_from_before_the_ring_is_compacted_per_resource():
    async def t(cache: CachedStore, inner: MemoryStore) -> None:
        first = await cache.create(CM + "a", {"v": 0})
        rev = first
        for i in range(5):
            rev = await cache.update(CM + "a", {"v": i + 1}, rev)
        await cache.create("/registry/pods/default/p", {"p": 1})
        with pytest.raises(Compacted):
            await anext(cache.watch(CM, first))
        assert [e.value for e in await collect(cache.watch(CM, rev - 2), 3)] == [{"v": 3}, {"v": 4}, {"v": 5}]
        assert len(await collect(cache.watch("/registry/pods/", first), 1)) == 1  # pods keep their own ring

    run(t, ring_min=3, ring_max=3)


def test_watch_older_than_the_first_list_is_compacted():
    async def main() -> None:
        inner = MemoryStore()
        first = await inner.create(CM + "a", {})
        await inner.create(CM + "b", {})
        cache = CachedStore(inner, wait=1.0)
        await cache.connect()
        try:
            with pytest.raises(Compacted):
                await anext(cache.watch(CM, first))
        finally:
            await cache.close()

    asyncio.run(main())


def test_a_restore_leaves_the_cache_stale_until_restart():
    async def t(cache: CachedStore, inner: MemoryStore) -> None:
        assert isinstance(inner, RestorableStore)
        await cache.create(CM + "before", {})
        snap = inner.snapshot()
        rev_after = await cache.create(CM + "after", {})
        watch = cache.watch(CM, rev_after + 1)
        pending = asyncio.ensure_future(collect(watch, 1, timeout=0.5))
        inner.restore(snap)
        cache._kick()  # the etcd members restart: the cache's watch is re-established
        await asyncio.sleep(0.2)
        items, rev = await cache.list(CM)
        assert [i.key for i in items] == [CM + "after", CM + "before"] and rev == rev_after
        assert await pending == []
        # A write goes to the restored store at a revision the cache has passed: it never shows up.
        assert await cache.create(CM + "new", {}) is not None
        assert await cache.get(CM + "new") is None
        # An update of an object the restore removed fails its compare, and the retry reads the store.
        item = await cache.get(CM + "after")
        assert item is not None and await cache.update(CM + "after", {"x": 1}, item.mod_revision) is None
        assert await cache.get(CM + "after") is None
        assert (await cache.get(CM + "after")) is not None  # once: the cache still has it
        # A new cache (a restarted server) sees the restored state.
        fresh = CachedStore(inner, wait=1.0)
        await fresh.connect()
        try:
            assert [i.key for i in (await fresh.list(CM))[0]] == [CM + "before", CM + "new"]
        finally:
            await fresh.close()

    run(t, RestorableStore())


def test_a_restore_with_a_bumped_compacted_revision_makes_the_cache_list_again():
    async def t(cache: CachedStore, inner: MemoryStore) -> None:
        assert isinstance(inner, RestorableStore)
        await cache.create(CM + "before", {})
        snap = inner.snapshot()
        rev_after = await cache.create(CM + "after", {})
        watch = cache.watch(CM, rev_after + 1)
        pending = asyncio.ensure_future(collect(watch, 1, timeout=1.0))
        inner.restore(snap, bump=1000)
        cache._kick()
        assert await pending == []  # the watch ended: clients watch again, get 410 and list
        assert not [i for i in (await cache.list(CM))[0] if i.key.endswith("after")]
        with pytest.raises(Compacted):
            await anext(cache.watch(CM, rev_after + 1))

    run(t, RestorableStore())
