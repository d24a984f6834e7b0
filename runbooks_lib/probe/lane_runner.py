"""One lane's requests: each one a task, run under the lane's client model and recorded."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from runbooks_lib.probe.http import Failure, Response, abort, classify_os_error, connect, exchange, parse_identity
from runbooks_lib.probe.lanes import Lane
from runbooks_lib.probe.resolver import CachingResolver


@dataclass
class Record:
    lane: str
    seq: int
    intended: float
    sent: float = float("nan")
    done: float = float("nan")
    ip_first: str | None = None
    ip_connected: str | None = None
    attempts: int = 0
    dns: float = float("nan")
    connect: float = float("nan")
    first_byte: float = float("nan")
    total: float = float("nan")
    status: int | None = None
    error: str | None = None
    error_detail: str | None = None
    node: str | None = None
    pod: str | None = None
    uuid: str | None = None

    def row(self, t0: float) -> tuple[Any, ...]:
        rel = lambda v: v - t0  # noqa: E731 - times are stored on the monotonic clock
        return (
            self.lane,
            self.seq,
            rel(self.intended),
            rel(self.sent),
            rel(self.done),
            self.done - self.intended,
            self.sent - self.intended,
            self.ip_first,
            self.ip_connected,
            self.attempts,
            self.dns,
            self.connect,
            self.first_byte,
            self.total,
            self.status,
            self.error,
            self.error_detail,
            self.node,
            self.pod,
            self.uuid,
        )


class LaneRunner:
    def __init__(self, lane: Lane, resolver: CachingResolver | None, max_in_flight: int) -> None:
        self.lane = lane
        self.resolver = resolver
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.peak_in_flight = 0
        self.dropped = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.records: list[Record] = []
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter, str] | None = None
        self._conn_lock = asyncio.Lock()
        self._rr = 0

    def launch(self, seq: int, intended: float) -> None:
        rec = Record(self.lane.name, seq, intended)
        self.records.append(rec)
        if self.in_flight >= self.max_in_flight:
            # Counted, never silently skipped: the bound protects the probe host.
            self.dropped += 1
            rec.sent = rec.done = time.monotonic()
            rec.error, rec.error_detail = "dropped", f"in-flight bound {self.max_in_flight} reached"
            return
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        task = asyncio.get_running_loop().create_task(self._run(rec))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, rec: Record) -> None:
        rec.sent = time.monotonic()
        try:
            await self._request(rec)
        except Failure as f:
            rec.error, rec.error_detail = f.cls, f.detail
        except asyncio.CancelledError:
            rec.error, rec.error_detail = "unfinished", "still running when the drain period ended"
            raise
        except Exception as exc:  # classify anything else instead of losing the sample
            rec.error, rec.error_detail = "other", repr(exc)
        finally:
            rec.done = time.monotonic()
            rec.total = rec.done - rec.sent
            self.in_flight -= 1

    async def _addresses(self, rec: Record) -> list[str]:
        target = self.lane.target
        if target.is_ip:
            return [target.address]
        if self.resolver is None:
            raise Failure("dns", f"{target.address} is a name but the probe has no DNS server")
        start = time.monotonic()
        try:
            ips = await self.resolver.resolve(target.address)
        except Exception as exc:
            raise Failure("dns", f"{target.address}: {exc!r}") from None
        finally:
            rec.dns = time.monotonic() - start
        if not ips:
            raise Failure("dns", f"{target.address}: no A records")
        k = self._rr % len(ips)
        self._rr += 1
        return list(ips[k:] + ips[:k])

    async def _request(self, rec: Record) -> None:
        model = self.lane.model
        if model == "keepalive":
            await self._request_keepalive(rec)
            return
        ips = await self._addresses(rec)
        if model in ("naive", "direct"):
            ips = ips[:1]
        rec.ip_first = ips[0]
        start = time.monotonic()
        if model == "happy_eyeballs":
            reader, writer, ip = await self._happy_eyeballs(rec, ips)
        else:
            reader = writer = None
            last: Failure | None = None
            for ip in ips:
                rec.attempts += 1
                try:
                    reader, writer = await connect(ip, self.lane.target.port, self.lane.connect_timeout)
                    break
                except Failure as f:
                    last = f
            if writer is None:
                rec.connect = time.monotonic() - start
                assert last is not None
                raise last
        rec.connect = time.monotonic() - start
        rec.ip_connected = ip
        try:
            await self._respond(rec, reader, writer, keep_alive=False)
        finally:
            abort(writer)

    async def _respond(
        self, rec: Record, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, keep_alive: bool
    ) -> Response:
        written = time.monotonic()
        try:
            resp = await asyncio.wait_for(exchange(reader, writer, self.lane.target, keep_alive), self.lane.read_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise Failure("read_timeout", f"no complete response within {self.lane.read_timeout}s") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise Failure("reset", repr(exc)) from None
        except OSError as exc:
            raise Failure(classify_os_error(exc), repr(exc)) from None
        except ValueError as exc:
            raise Failure("other", f"malformed response: {exc!r}") from None
        rec.first_byte = resp.first_byte - written
        rec.status = resp.status
        rec.node, rec.pod, rec.uuid = parse_identity(resp.body).values()
        if resp.status >= 500:
            raise Failure("http_5xx", f"HTTP {resp.status}")
        return resp

    async def _happy_eyeballs(
        self, rec: Record, ips: list[str]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        port, timeout = self.lane.target.port, self.lane.connect_timeout
        pending: dict[asyncio.Task[Any], str] = {}
        failures: list[Failure] = []
        queue = list(ips)
        try:
            while queue or pending:
                if queue:
                    ip = queue.pop(0)
                    rec.attempts += 1
                    pending[asyncio.ensure_future(connect(ip, port, timeout))] = ip
                wait = self.lane.stagger if queue else None
                done, _ = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    ip = pending.pop(task)
                    exc = task.exception()
                    if exc is None:
                        reader, writer = task.result()
                        return reader, writer, ip
                    failures.append(exc if isinstance(exc, Failure) else Failure("other", repr(exc)))
            raise failures[-1]
        finally:
            for task, _ip in pending.items():
                task.cancel()
            for task in pending:
                # A loser that connected in the same instant must be closed, not leaked.
                task.add_done_callback(_close_if_connected)

    async def _request_keepalive(self, rec: Record) -> None:
        async with self._conn_lock:
            if self._conn is None:
                ips = await self._addresses(rec)
                ip = ips[0]
                rec.ip_first = ip
                rec.attempts = 1
                start = time.monotonic()
                try:
                    reader, writer = await connect(ip, self.lane.target.port, self.lane.connect_timeout)
                finally:
                    rec.connect = time.monotonic() - start
                self._conn = (reader, writer, ip)
            else:
                rec.connect = 0.0
            reader, writer, ip = self._conn
            rec.ip_first = rec.ip_first or ip
            rec.ip_connected = ip
            try:
                resp = await self._respond(rec, reader, writer, keep_alive=True)
            except BaseException:
                self._drop_conn()
                raise
            if not resp.keep_open:
                self._drop_conn()

    def _drop_conn(self) -> None:
        if self._conn is not None:
            abort(self._conn[1])
            self._conn = None

    def close(self) -> None:
        self._drop_conn()


def _close_if_connected(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is None:
        abort(task.result()[1])
