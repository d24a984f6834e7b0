"""etcd-backed storage for the API stand-in (etcd v3 over TLS through etcd3aio).

Creates are transactions guarded by ``mod_revision == 0`` (key absent), updates
and deletes compare the key's mod revision, so resourceVersion preconditions
are enforced by etcd itself. Every call is bounded by ``timeout``: without
quorum etcd blocks linearizable requests, and the API must answer with an
error instead of hanging. Failover between endpoints is gRPC round-robin over
all ``--etcd-servers``: a dead member's subchannel is skipped; a member that
went silent with its connection still open (frozen, powered off) costs one
half of the budget, then the request is retried on the next member (writes
first check whether the silent attempt was applied).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from etcd3aio import Etcd3Client, EtcdError, prefix_range_end
from etcd3aio._protobuf import Compare
from etcd3aio.kv import KVService

from runbooks_lib.errors import BadParameters

from .storage import Compacted, Event, Item, StorageUnavailable, decode, encode

T = TypeVar("T")


def _value(data: bytes) -> dict | None:
    try:
        return decode(data)
    except ValueError:
        return None


def endpoints_from_urls(urls: Sequence[str]) -> list[str]:
    """Turn ``https://10.0.0.1:2379`` URLs (kube-apiserver's --etcd-servers) into host:port endpoints."""
    out = []
    for url in urls:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if not parts.hostname or not parts.port:
            raise BadParameters(f"bad etcd server URL {url!r}", fix="use https://IP:2379")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        out.append(f"{host}:{parts.port}")
    return out


class EtcdStore:
    """Stores API objects in etcd. Side effects: opens a gRPC channel on :meth:`connect`.

    Raises :class:`StorageUnavailable` when etcd does not answer within
    ``timeout`` seconds (no quorum, every member down, TLS refused).
    """

    def __init__(
        self,
        urls: Sequence[str],
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        timeout: float = 4.0,
        tls_server_name: str = "localhost",
    ) -> None:
        self.urls = list(urls)
        self._endpoints = endpoints_from_urls(self.urls)
        self._tls = {}
        if ca_file:
            self._tls = {
                "ca_cert": Path(ca_file).read_bytes(),
                "cert_chain": Path(cert_file).read_bytes() if cert_file else None,
                "cert_key": Path(key_file).read_bytes() if key_file else None,
            }
        self._tls_server_name = tls_server_name if ca_file else None
        self.timeout = timeout
        self._client: Etcd3Client | None = None

    def describe(self) -> str:
        return "etcd " + ",".join(self.urls)

    async def connect(self) -> None:
        """Open the channel (does not contact etcd yet; the first request does)."""
        self._client = Etcd3Client(
            self._endpoints, rpc_max_attempts=3, tls_server_name=self._tls_server_name,
            watch_max_reconnect_backoff_seconds=2.0, **self._tls
        )
        # gRPC's default reconnect backoff grows to 120 s: a member that comes back (restart,
        # power-on) would be ignored for minutes. Cap it so the channel uses it again within seconds.
        options = getattr(getattr(self._client, "_manager", None), "grpc_options", None)
        if isinstance(options, list):
            options += [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000),
                        ("grpc.min_reconnect_backoff_ms", 250)]
        await self._client.connect()

    @property
    def _kv(self) -> KVService:
        if self._client is None or self._client.kv is None:
            raise StorageUnavailable("etcd client is not connected", fix="call connect() first")
        return self._client.kv

    async def _call(self, what: str, call: Callable[[], Awaitable[T]], budget: float | None = None) -> T:
        try:
            async with asyncio.timeout(budget or self.timeout):
                return await call()
        except TimeoutError:
            raise StorageUnavailable(
                f"etcd did not answer {what} within {self.timeout:g}s (etcd servers {','.join(self.urls)}): "
                "etcd has no quorum or no member is reachable",
                fix="check `etcdctl endpoint health --cluster` on a control-plane node",
            ) from None
        except EtcdError as exc:
            raise StorageUnavailable(
                f"etcd request {what} failed (etcd servers {','.join(self.urls)}): {exc}",
                fix="check `etcdctl endpoint health --cluster` on a control-plane node",
            ) from None
        except Exception as exc:  # grpc.aio.AioRpcError for non-transient codes (e.g. TLS errors)
            if type(exc).__module__.startswith("grpc"):
                raise StorageUnavailable(
                    f"etcd request {what} failed (etcd servers {','.join(self.urls)}): {exc}",
                    fix="check the etcd certificates and `etcdctl endpoint health --cluster`",
                ) from None
            raise

    async def _read(self, what: str, call: Callable[[float], Awaitable[T]]) -> T:
        """A read in two halves of the budget: a member that went silent costs one half, then
        round-robin picks another member. Writes get one attempt (a retried transaction could
        report a conflict with its own first attempt)."""
        half = self.timeout / 2
        try:
            return await self._call(what, lambda: call(half), half)
        except StorageUnavailable:
            return await self._call(what, lambda: call(half), half)

    async def get(self, key: str) -> Item | None:
        resp = await self._read(f"GET {key}", lambda t: self._kv.get(key, timeout=t))
        if not resp.kvs:
            return None
        kv = resp.kvs[0]
        return Item(key, decode(kv.value), kv.mod_revision, kv.create_revision)

    async def list(self, prefix: str) -> tuple[list[Item], int]:
        resp = await self._read(
            f"LIST {prefix}", lambda t: self._kv.get(prefix, range_end=prefix_range_end(prefix), timeout=t)
        )
        items = [Item(kv.key.decode(), decode(kv.value), kv.mod_revision, kv.create_revision) for kv in resp.kvs]
        return items, resp.header.revision

    async def txn(
        self, compares: Sequence[tuple[str, int]], puts: Sequence[tuple[str, dict]], deletes: Sequence[str]
    ) -> int | None:
        cmp = [Compare(result=Compare.EQUAL, target=Compare.MOD, key=k.encode(), mod_revision=r) for k, r in compares]
        ops = [KVService.txn_op_put(k, encode(v)) for k, v in puts]
        ops += [KVService.txn_op_delete(k) for k in deletes]
        what = "TXN " + ",".join([k for k, _ in puts] + list(deletes))
        half = self.timeout / 2
        try:
            resp = await self._call(what, lambda: self._kv.txn(cmp, ops, timeout=half, max_attempts=1), half)
        except StorageUnavailable:
            # The member we asked went silent (frozen, powered off) or lost quorum. Whether the first
            # attempt was applied is unknown, so look before retrying on another member: a blind
            # retry would report a conflict with our own write.
            applied = await self._applied(puts, deletes)
            if applied is not None:
                return applied
            resp = await self._call(what, lambda: self._kv.txn(cmp, ops, timeout=half, max_attempts=1), half)
        return resp.header.revision if resp.succeeded else None

    async def _applied(self, puts: Sequence[tuple[str, dict]], deletes: Sequence[str]) -> int | None:
        """The revision of an earlier attempt if its puts and deletes are all in place, else None."""
        revision = 0
        for key, value in puts:
            item = await self.get(key)
            if item is None or item.value != value:
                return None
            revision = max(revision, item.mod_revision)
        for key in deletes:
            if await self.get(key) is not None:
                return None
        return revision or await self.revision()

    async def create(self, key: str, value: dict) -> int | None:
        return await self.txn([(key, 0)], [(key, value)], [])

    async def update(self, key: str, value: dict, mod_revision: int) -> int | None:
        return await self.txn([(key, mod_revision)], [(key, value)], [])

    async def delete(self, key: str, mod_revision: int | None = None) -> int | None:
        if mod_revision is None:
            current = await self.get(key)
            if current is None:
                return None
            mod_revision = current.mod_revision
        return await self.txn([(key, mod_revision)], [], [key])

    async def revision(self) -> int:
        resp = await self._read("GET revision", lambda t: self._kv.get("/registry/", count_only=True, timeout=t))
        return resp.header.revision

    async def health(self) -> None:
        # A linearizable read needs the leader: it fails without quorum, like etcd's own health check.
        await self._read("health check", lambda t: self._kv.get("health", timeout=t))

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """Changes under ``prefix`` (``""``: every key) from ``start_revision``, on one etcd watch stream.

        When the stream breaks (member down, etcd restarted) the watch ends with
        :class:`StorageUnavailable` as soon as a new stream is established, so the
        caller resumes from the last revision it saw: etcd3aio would resume from a
        response header's revision, which skips events while a watch catches up.
        A value that is not JSON (a key the API does not own) is given as None.
        """
        if self._client is None or self._client.watch is None:
            raise StorageUnavailable("etcd client is not connected")
        key, range_end = (prefix, prefix_range_end(prefix)) if prefix else ("\0", b"\0")
        stream = self._client.watch.watch(key, range_end=range_end, start_revision=max(start_revision, 0), prev_kv=True)
        created = 0
        try:
            async for resp in stream:
                if resp.compact_revision > 0:
                    raise Compacted(max(start_revision - 1, 0), resp.compact_revision)
                if resp.canceled:
                    raise StorageUnavailable(f"etcd cancelled the watch on {prefix}: {resp.cancel_reason}")
                if resp.created:
                    created += 1
                    if created > 1:
                        raise StorageUnavailable(f"the etcd watch on {prefix or 'all keys'} was interrupted")
                for ev in resp.events:
                    name = ev.kv.key.decode(errors="replace")
                    prev = _value(ev.prev_kv.value) if ev.HasField("prev_kv") and ev.prev_kv.value else None
                    if ev.type == 0:  # PUT
                        yield Event("PUT", name, _value(ev.kv.value), prev, ev.kv.mod_revision)
                    else:
                        yield Event("DELETE", name, None, prev, ev.kv.mod_revision)
        except Exception as exc:  # grpc.aio.AioRpcError for non-transient codes
            if type(exc).__module__.startswith("grpc"):
                raise StorageUnavailable(f"the etcd watch on {prefix or 'all keys'} failed: {exc}") from None
            raise
        finally:
            await stream.aclose()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
