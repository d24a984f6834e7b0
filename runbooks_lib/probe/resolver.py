"""The probe's own DNS resolver: one chosen server, answers cached for their TTL."""

from __future__ import annotations

import asyncio
import time


class CachingResolver:
    """Resolves A records against one DNS server and caches each answer for its TTL.

    Concurrent lookups of the same name share one query. Raises
    ``dns.exception.DNSException`` subclasses when the server cannot answer.
    """

    def __init__(self, server: str, port: int = 53, *, timeout: float = 2.0) -> None:
        import dns.asyncresolver

        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [server]
        self._resolver.port = port
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._resolver.cache = None
        self._cache: dict[str, tuple[tuple[str, ...], float]] = {}
        self._pending: dict[str, asyncio.Future[tuple[str, ...]]] = {}
        self.queries = 0

    async def resolve(self, name: str) -> tuple[str, ...]:
        """Return the A records of ``name`` in the server's order (cached until TTL expiry)."""
        hit = self._cache.get(name)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        pending = self._pending.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[tuple[str, ...]] = asyncio.get_running_loop().create_future()
        self._pending[name] = fut
        try:
            self.queries += 1
            answer = await self._resolver.resolve(name, "A", search=False)
            ips = tuple(r.address for r in answer)
            self._cache[name] = (ips, time.monotonic() + answer.rrset.ttl)
            fut.set_result(ips)
            return ips
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._pending[name]
