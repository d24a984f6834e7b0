"""Storage interface of the API stand-in, and the in-memory implementation used by unit tests.

Values are JSON objects; a key's ``mod_revision`` is the object's
resourceVersion, exactly as kube-apiserver uses etcd's mod revision. Every
write returns the new store revision or ``None`` when its precondition failed
(the caller turns that into AlreadyExists / Conflict / NotFound).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from runbooks_lib.errors import LabError


class StorageUnavailable(LabError):
    """The backing store did not answer in time (etcd without quorum or unreachable)."""


class Compacted(LabError):
    """A watch asked for a revision older than the store keeps (HTTP 410 Gone)."""

    def __init__(self, requested: int, compacted: int) -> None:
        self.requested = requested
        self.compacted = compacted
        super().__init__(f"too old resource version: {requested} ({compacted})")


@dataclass(frozen=True)
class Item:
    """One stored object with its revisions."""

    key: str
    value: dict
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class Event:
    """A change seen by a watch: ``type`` is "PUT" or "DELETE".

    ``value`` is the new value (None for DELETE, or when it is not JSON), ``prev``
    the value before the change (None when the PUT created the key).
    """

    type: str
    key: str
    value: dict | None
    prev: dict | None
    revision: int


class Store(Protocol):
    """What the API layer needs from storage (etcd or memory)."""

    async def get(self, key: str) -> Item | None: ...

    async def list(self, prefix: str) -> tuple[list[Item], int]: ...

    async def create(self, key: str, value: dict) -> int | None: ...

    async def update(self, key: str, value: dict, mod_revision: int) -> int | None: ...

    async def delete(self, key: str, mod_revision: int | None = None) -> int | None: ...

    async def txn(
        self, compares: Sequence[tuple[str, int]], puts: Sequence[tuple[str, dict]], deletes: Sequence[str]
    ) -> int | None: ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]: ...

    async def revision(self) -> int: ...

    async def health(self) -> None: ...

    async def close(self) -> None: ...

    def describe(self) -> str: ...


def encode(value: dict) -> bytes:
    """Serialize a stored value (compact JSON)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode()


def decode(data: bytes) -> dict:
    """Deserialize a stored value."""
    return json.loads(data)


class MemoryStore:
    """An in-process store with etcd's revision semantics, for unit tests and quick local runs.

    Keeps the last ``history`` events for watches; older start revisions get
    :class:`Compacted`. Not shared between processes.
    """

    def __init__(self, history: int = 10000) -> None:
        self._data: dict[str, tuple[bytes, int, int]] = {}
        self._rev = 1
        self._events: list[Event] = []
        self._history = history
        self._compacted = 0
        self._changed = asyncio.Condition()

    def describe(self) -> str:
        return "memory"

    async def get(self, key: str) -> Item | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        return Item(key, decode(entry[0]), entry[2], entry[1])

    async def list(self, prefix: str) -> tuple[list[Item], int]:
        items = [Item(k, decode(v[0]), v[2], v[1]) for k, v in sorted(self._data.items()) if k.startswith(prefix)]
        return items, self._rev

    async def _commit(self, puts: Sequence[tuple[str, dict]], deletes: Sequence[str]) -> int:
        self._rev += 1
        for key, value in puts:
            old = self._data.get(key)
            created = old[1] if old else self._rev
            self._data[key] = (encode(value), created, self._rev)
            self._events.append(Event("PUT", key, copy.deepcopy(value), decode(old[0]) if old else None, self._rev))
        for key in deletes:
            old = self._data.pop(key, None)
            if old is not None:
                self._events.append(Event("DELETE", key, None, decode(old[0]), self._rev))
        if len(self._events) > self._history:
            drop = len(self._events) - self._history
            self._compacted = self._events[drop - 1].revision
            del self._events[:drop]
        async with self._changed:
            self._changed.notify_all()
        return self._rev

    def _mod(self, key: str) -> int:
        entry = self._data.get(key)
        return entry[2] if entry else 0

    async def create(self, key: str, value: dict) -> int | None:
        if key in self._data:
            return None
        return await self._commit([(key, value)], [])

    async def update(self, key: str, value: dict, mod_revision: int) -> int | None:
        if key not in self._data or self._mod(key) != mod_revision:
            return None
        return await self._commit([(key, value)], [])

    async def delete(self, key: str, mod_revision: int | None = None) -> int | None:
        if key not in self._data or (mod_revision is not None and self._mod(key) != mod_revision):
            return None
        return await self._commit([], [key])

    async def txn(
        self, compares: Sequence[tuple[str, int]], puts: Sequence[tuple[str, dict]], deletes: Sequence[str]
    ) -> int | None:
        if any(self._mod(key) != rev for key, rev in compares):
            return None
        return await self._commit(puts, deletes)

    def compact(self, revision: int) -> None:
        """Forget events up to ``revision`` (lets tests provoke 410 Gone)."""
        self._events = [e for e in self._events if e.revision > revision]
        self._compacted = max(self._compacted, revision)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        if start_revision <= 0:
            start_revision = self._rev + 1
        if start_revision <= self._compacted:
            raise Compacted(start_revision - 1, self._compacted)
        next_rev = start_revision
        while True:
            # Snapshot synchronously: events committed while the consumer runs are picked up next round.
            upto = self._rev
            pending = [e for e in self._events if next_rev <= e.revision <= upto and e.key.startswith(prefix)]
            for event in pending:
                yield event
            next_rev = max(next_rev, upto + 1)
            async with self._changed:
                if self._rev < next_rev:
                    await self._changed.wait()

    async def revision(self) -> int:
        return self._rev

    async def health(self) -> None:
        return None

    async def close(self) -> None:
        return None
