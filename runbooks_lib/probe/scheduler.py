"""Open-loop HTTP latency probe for failover drills.

Request ``k`` of every lane is scheduled at ``t0 + k / rate`` and runs in its
own asyncio task, so a hung request never delays the next one; latency is
measured from the *intended* send time (no coordinated omission), and the send
lag (actual start minus intended) shows when the probe itself falls behind.

The probe resolves names itself, against a chosen DNS server, caching each
answer for its TTL, and connects to explicit IPs with a ``Host`` header. How
a client reacts to a dead address decides what a user sees, so each lane
emulates one client model (see :class:`Lane`):

``naive``           one IP per request, round-robin over the resolved set, a
                    browser-like long connect timeout.
``fallback``        tries the resolved IPs in turn with a short connect timeout.
``happy_eyeballs``  RFC 8305: next address after a 250 ms stagger (or at once
                    when an attempt fails); first connection wins, the others
                    are closed.
``direct``          one fixed IP, no DNS (one lane per node IP).
``keepalive``       one persistent connection reused for every request; a
                    connection to a powered-off node fails only by read timeout.

The resolved set is rotated per request (request ``k`` starts at index
``k mod n``), as a population of clients that each got the server's rotated
answer would see it.

Side effects: opens TCP connections to the lanes' targets and UDP/TCP
queries to the DNS server; raises the process' soft open-files limit to its
hard limit when the planned number of concurrent connections needs it.
Nothing is printed except the optional progress bar.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import re
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from runbooks_lib.errors import BadParameters, WaitTimedOut

Model = Literal["naive", "fallback", "happy_eyeballs", "direct", "keepalive"]
MODELS: tuple[str, ...] = ("naive", "fallback", "happy_eyeballs", "direct", "keepalive")

#: Error classes a request can end with. ``dns``: the name could not be
#: resolved; ``dropped``: not sent because the lane's in-flight bound was
#: reached; ``unfinished``: still running when the drain period ended.
ERROR_CLASSES: tuple[str, ...] = (
    "connect_timeout",
    "refused",
    "unreachable",
    "reset",
    "read_timeout",
    "http_5xx",
    "dns",
    "dropped",
    "unfinished",
    "other",
)

COLUMNS: tuple[str, ...] = (
    "lane",
    "seq",
    "intended",
    "sent",
    "done",
    "latency",
    "send_lag",
    "ip_first",
    "ip_connected",
    "attempts",
    "dns",
    "connect",
    "first_byte",
    "total",
    "status",
    "error",
    "error_detail",
    "node",
    "pod",
    "uuid",
)

_MAX_RESPONSE = 1 << 20


# --------------------------------------------------------------------------- lanes


@dataclass(frozen=True)
class Target:
    """Where a lane sends its requests.

    ``address`` is a DNS name (resolved by the probe) or an IP literal;
    ``host_header`` defaults to ``address`` (set it when the address is an
    IP but the server routes by name, as an ingress does).
    """

    address: str
    port: int = 80
    path: str = "/"
    host_header: str | None = None

    @property
    def host(self) -> str:
        return self.host_header or self.address

    @property
    def is_ip(self) -> bool:
        return _is_ip(self.address)


@dataclass(frozen=True)
class Lane:
    """One client model probing one target at the probe's rate.

    Timeouts are seconds. ``connect_timeout`` bounds each connection attempt,
    ``read_timeout`` the wait for the complete response once the request is
    written. ``stagger`` is the happy-eyeballs delay between attempts.
    """

    name: str
    model: Model
    target: Target
    connect_timeout: float
    read_timeout: float = 10.0
    stagger: float = 0.25

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise BadParameters(f"unknown client model {self.model!r}", fix=f"use one of {', '.join(MODELS)}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0 or self.stagger <= 0:
            raise BadParameters(f"lane {self.name!r}: timeouts and stagger must be positive")
        if self.model == "direct" and not self.target.is_ip:
            raise BadParameters(f"lane {self.name!r}: a direct lane needs an IP address, got {self.target.address!r}")

    @property
    def longest_request(self) -> float:
        """Upper bound of one request's duration under this model (seconds)."""
        if self.model in ("fallback", "happy_eyeballs"):
            # The number of addresses is unknown until resolution; 8 is generous
            # for a handful of nodes and only sizes limits, never behaviour.
            return 8 * self.connect_timeout + self.read_timeout
        return self.connect_timeout + self.read_timeout


def naive(target: Target, *, connect_timeout: float = 30.0, read_timeout: float = 10.0, name: str = "naive") -> Lane:
    """A browser-like client: one IP per request, round-robin, long connect timeout."""
    return Lane(name, "naive", target, connect_timeout, read_timeout)


def fallback(target: Target, *, connect_timeout: float = 0.3, read_timeout: float = 10.0, name: str = "fallback") -> Lane:
    """A client that tries each resolved IP in turn with a short connect timeout."""
    return Lane(name, "fallback", target, connect_timeout, read_timeout)


def happy_eyeballs(
    target: Target,
    *,
    stagger: float = 0.25,
    connect_timeout: float = 10.0,
    read_timeout: float = 10.0,
    name: str = "happy_eyeballs",
) -> Lane:
    """An RFC 8305 client: a new attempt every ``stagger`` seconds, first connection wins."""
    return Lane(name, "happy_eyeballs", target, connect_timeout, read_timeout, stagger)


def direct(
    ip: str,
    *,
    port: int = 80,
    path: str = "/",
    host_header: str | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 10.0,
    name: str | None = None,
) -> Lane:
    """A lane pinned to one node IP (no DNS)."""
    return Lane(name or f"direct {ip}", "direct", Target(ip, port, path, host_header), connect_timeout, read_timeout)


def keepalive(target: Target, *, connect_timeout: float = 10.0, read_timeout: float = 10.0, name: str = "keepalive") -> Lane:
    """One persistent connection reused for every request (requests queue on it)."""
    return Lane(name, "keepalive", target, connect_timeout, read_timeout)


# --------------------------------------------------------------------------- events


class EventLog:
    """Timestamped events on the probe's timeline (fault injected, VIP moved...).

    Thread-safe: front-door watchers and notebook cells append from any
    thread. Times are stored as ``time.monotonic()`` values and shown relative
    to the origin, which the probe sets to its ``t0`` when it starts (unless
    the origin was set before).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[float, float, str, str, str]] = []
        self._origin: tuple[float, float] | None = None

    def set_origin(self, monotonic: float, wall: float, *, force: bool = False) -> None:
        """Set the timeline origin (monotonic and wall-clock of the same instant)."""
        with self._lock:
            if self._origin is None or force:
                self._origin = (monotonic, wall)

    @property
    def origin(self) -> tuple[float, float] | None:
        with self._lock:
            return self._origin

    def add(self, kind: str, detail: str = "", *, source: str = "", at: float | None = None) -> float:
        """Record an event now (or at monotonic time ``at``); return its monotonic time."""
        t = time.monotonic() if at is None else at
        wall = time.time() - (time.monotonic() - t)
        with self._lock:
            self._events.append((t, wall, kind, detail, source))
        return t

    def add_wall(self, kind: str, wall: float, detail: str = "", *, source: str = "") -> float:
        """Record an event that happened at wall-clock time ``wall`` (e.g. from a remote log)."""
        t = time.monotonic() - (time.time() - wall)
        with self._lock:
            self._events.append((t, wall, kind, detail, source))
        return t

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def frame(self) -> pd.DataFrame:
        """Events as a DataFrame: t (seconds from origin), wall, kind, detail, source."""
        with self._lock:
            rows = sorted(self._events)
            origin = self._origin
        base = origin[0] if origin else (rows[0][0] if rows else 0.0)
        return pd.DataFrame(
            [(t - base, wall, kind, detail, source) for t, wall, kind, detail, source in rows],
            columns=["t", "wall", "kind", "detail", "source"],
        )


# --------------------------------------------------------------------------- DNS


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


# --------------------------------------------------------------------------- HTTP


class _Failure(Exception):
    def __init__(self, cls: str, detail: str) -> None:
        super().__init__(detail)
        self.cls = cls
        self.detail = detail


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _classify_os_error(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "connect_timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        return "unreachable"
    return "other"


async def _connect(ip: str, port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.wait_for(asyncio.open_connection(ip, port, limit=_MAX_RESPONSE), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise _Failure(_classify_os_error(exc), f"{ip}:{port}: {exc!r}") from None


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        try:
            writer.transport.abort()
        except Exception:  # the transport may already be gone; closing is best effort
            pass


@dataclass
class _Response:
    status: int
    body: bytes
    first_byte: float
    keep_open: bool


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: Target,
    keep_alive: bool,
) -> _Response:
    """Send one GET and read the whole response (no timeout here)."""
    conn = "keep-alive" if keep_alive else "close"
    writer.write(
        f"GET {target.path} HTTP/1.1\r\nHost: {target.host}\r\nUser-Agent: runbooks-probe\r\n"
        f"Accept: */*\r\nConnection: {conn}\r\n\r\n".encode("latin-1")
    )
    status_line = await reader.readline()
    first_byte = time.monotonic()
    if not status_line:
        raise ConnectionResetError("connection closed before the status line")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise _Failure("other", f"bad status line {status_line[:80]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    close = not keep_alive or parts[0] == b"HTTP/1.0"
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionResetError("connection closed inside the headers")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif key == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size + 2)
            del body[-2:]
        data = bytes(body)
    elif length is not None:
        data = await reader.readexactly(length)
    else:
        data = await reader.read(_MAX_RESPONSE)
        close = True
    return _Response(status, data, first_byte, keep_open=not close)


_TEXT_KEYS = {k: re.compile(rf"\b{k}\b[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9_.:-]+)") for k in ("node", "pod", "uuid")}


def parse_identity(body: bytes) -> dict[str, str | None]:
    """Extract ``node``, ``pod`` and ``uuid`` from the test app's answer (JSON or text)."""
    out: dict[str, str | None] = {"node": None, "pod": None, "uuid": None}
    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in out:
            if doc.get(key) is not None:
                out[key] = str(doc[key])
        return out
    for key, pattern in _TEXT_KEYS.items():
        m = pattern.search(text)
        if m:
            out[key] = m.group(1)
    return out


# --------------------------------------------------------------------------- one request


@dataclass
class _Record:
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


class _LaneRunner:
    def __init__(self, lane: Lane, resolver: CachingResolver | None, max_in_flight: int) -> None:
        self.lane = lane
        self.resolver = resolver
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.peak_in_flight = 0
        self.dropped = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.records: list[_Record] = []
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter, str] | None = None
        self._conn_lock = asyncio.Lock()
        self._rr = 0

    def launch(self, seq: int, intended: float) -> None:
        rec = _Record(self.lane.name, seq, intended)
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

    async def _run(self, rec: _Record) -> None:
        rec.sent = time.monotonic()
        try:
            await self._request(rec)
        except _Failure as f:
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

    async def _addresses(self, rec: _Record) -> list[str]:
        target = self.lane.target
        if target.is_ip:
            return [target.address]
        if self.resolver is None:
            raise _Failure("dns", f"{target.address} is a name but the probe has no DNS server")
        start = time.monotonic()
        try:
            ips = await self.resolver.resolve(target.address)
        except Exception as exc:
            raise _Failure("dns", f"{target.address}: {exc!r}") from None
        finally:
            rec.dns = time.monotonic() - start
        if not ips:
            raise _Failure("dns", f"{target.address}: no A records")
        k = self._rr % len(ips)
        self._rr += 1
        return list(ips[k:] + ips[:k])

    async def _request(self, rec: _Record) -> None:
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
            last: _Failure | None = None
            for ip in ips:
                rec.attempts += 1
                try:
                    reader, writer = await _connect(ip, self.lane.target.port, self.lane.connect_timeout)
                    break
                except _Failure as f:
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
            _close(writer)

    async def _respond(
        self, rec: _Record, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, keep_alive: bool
    ) -> _Response:
        written = time.monotonic()
        try:
            resp = await asyncio.wait_for(_exchange(reader, writer, self.lane.target, keep_alive), self.lane.read_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise _Failure("read_timeout", f"no complete response within {self.lane.read_timeout}s") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise _Failure("reset", repr(exc)) from None
        except OSError as exc:
            raise _Failure(_classify_os_error(exc), repr(exc)) from None
        except ValueError as exc:
            raise _Failure("other", f"malformed response: {exc!r}") from None
        rec.first_byte = resp.first_byte - written
        rec.status = resp.status
        rec.node, rec.pod, rec.uuid = parse_identity(resp.body).values()
        if resp.status >= 500:
            raise _Failure("http_5xx", f"HTTP {resp.status}")
        return resp

    async def _happy_eyeballs(
        self, rec: _Record, ips: list[str]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        port, timeout = self.lane.target.port, self.lane.connect_timeout
        pending: dict[asyncio.Task[Any], str] = {}
        failures: list[_Failure] = []
        queue = list(ips)
        try:
            while queue or pending:
                if queue:
                    ip = queue.pop(0)
                    rec.attempts += 1
                    pending[asyncio.ensure_future(_connect(ip, port, timeout))] = ip
                wait = self.lane.stagger if queue else None
                done, _ = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    ip = pending.pop(task)
                    exc = task.exception()
                    if exc is None:
                        reader, writer = task.result()
                        return reader, writer, ip
                    failures.append(exc if isinstance(exc, _Failure) else _Failure("other", repr(exc)))
            raise failures[-1]
        finally:
            for task, _ip in pending.items():
                task.cancel()
            for task in pending:
                # A loser that connected in the same instant must be closed, not leaked.
                task.add_done_callback(_close_if_connected)

    async def _request_keepalive(self, rec: _Record) -> None:
        async with self._conn_lock:
            if self._conn is None:
                ips = await self._addresses(rec)
                ip = ips[0]
                rec.ip_first = ip
                rec.attempts = 1
                start = time.monotonic()
                try:
                    reader, writer = await _connect(ip, self.lane.target.port, self.lane.connect_timeout)
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
            _close(self._conn[1])
            self._conn = None

    def close(self) -> None:
        self._drop_conn()


def _close_if_connected(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is None:
        _close(task.result()[1])


# --------------------------------------------------------------------------- the probe


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe, how fast and for how long.

    ``rate`` is requests per second *per lane*. ``dns_server``/``dns_port``
    is the server that lanes with a name target resolve against.
    ``max_in_flight`` bounds each lane's concurrent requests (default: enough
    for ``rate`` x the lane's longest request, so it only bites when the
    probe host would otherwise run out of sockets). ``drain`` bounds the wait
    for in-flight requests after the last send (default: the longest lane
    timeout plus one second).
    """

    lanes: tuple[Lane, ...]
    rate: float
    duration: float
    dns_server: str | None = None
    dns_port: int = 53
    max_in_flight: int | None = None
    drain: float | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if not self.lanes:
            raise BadParameters("a probe needs at least one lane")
        names = [lane.name for lane in self.lanes]
        if len(set(names)) != len(names):
            raise BadParameters(f"lane names must be unique: {names}")
        if self.rate <= 0 or self.duration <= 0:
            raise BadParameters(f"rate and duration must be positive (rate={self.rate}, duration={self.duration})")

    def in_flight_bound(self, lane: Lane) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        return int(self.rate * lane.longest_request * 1.2) + 16

    @property
    def drain_period(self) -> float:
        if self.drain is not None:
            return self.drain
        return max(lane.longest_request for lane in self.lanes) + 1.0


@dataclass(frozen=True)
class LaneStats:
    lane: str
    max_in_flight: int
    peak_in_flight: int
    dropped: int


@dataclass(frozen=True)
class ProbeResult:
    """Everything one probe run measured.

    ``requests`` has one row per scheduled request (see :data:`COLUMNS`;
    times in seconds relative to ``t0``); ``events`` is the event log's
    frame on the same timeline; ``t0_wall`` is the wall-clock time of ``t0``.
    """

    requests: pd.DataFrame
    events: pd.DataFrame
    t0_wall: float
    rate: float
    duration: float
    lanes: tuple[Lane, ...]
    lane_stats: tuple[LaneStats, ...] = field(default=())
    dns_queries: int = 0

    def save(self, directory: str | Path) -> Path:
        """Write requests.csv, events.csv and meta.json into ``directory`` (created)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.requests.to_csv(out / "requests.csv", index=False)
        self.events.to_csv(out / "events.csv", index=False)
        meta = {
            "t0_wall": self.t0_wall,
            "rate": self.rate,
            "duration": self.duration,
            "lanes": [asdict(lane) for lane in self.lanes],
            "lane_stats": [asdict(s) for s in self.lane_stats],
            "dns_queries": self.dns_queries,
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> ProbeResult:
        """Read a result written by :meth:`save`."""
        src = Path(directory)
        meta = json.loads((src / "meta.json").read_text())
        requests = pd.read_csv(src / "requests.csv", dtype={"ip_first": "string", "ip_connected": "string"})
        events = pd.read_csv(src / "events.csv").fillna({"detail": "", "source": ""})
        lanes = tuple(Lane(**{**d, "target": Target(**d["target"])}) for d in meta["lanes"])
        return cls(
            requests=requests,
            events=events,
            t0_wall=meta["t0_wall"],
            rate=meta["rate"],
            duration=meta["duration"],
            lanes=lanes,
            lane_stats=tuple(LaneStats(**s) for s in meta["lane_stats"]),
            dns_queries=meta.get("dns_queries", 0),
        )


def _ensure_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed + 64:
        new = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed + 64, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


async def probe(
    config: ProbeConfig,
    events: EventLog | None = None,
    *,
    stop: threading.Event | None = None,
    resolver: CachingResolver | None = None,
) -> ProbeResult:
    """Run the open-loop probe described by ``config`` and return what it measured.

    Sends for ``config.duration`` seconds (or until ``stop`` is set), then
    waits at most ``config.drain_period`` for in-flight requests; requests
    still running after that are cancelled and recorded as ``unfinished``.
    Name targets are resolved by ``resolver`` (default: a
    :class:`CachingResolver` for ``config.dns_server``). Raises
    :class:`BadParameters` for a name target without a DNS server.
    """
    needs_dns = [lane.name for lane in config.lanes if not lane.target.is_ip]
    if needs_dns and not config.dns_server and resolver is None:
        raise BadParameters(f"lanes {needs_dns} probe a name but no dns_server is given", fix="pass dns_server=IP")
    if resolver is None and config.dns_server:
        resolver = CachingResolver(config.dns_server, config.dns_port)
    runners = [_LaneRunner(lane, resolver, config.in_flight_bound(lane)) for lane in config.lanes]
    _ensure_fd_limit(sum(r.max_in_flight for r in runners) * 2)
    events = events if events is not None else EventLog()
    total = int(config.rate * config.duration)
    bar = _progress_bar(total, config.progress)
    t0 = time.monotonic()
    t0_wall = time.time()
    events.set_origin(t0, t0_wall)
    try:
        for k in range(total):
            intended = t0 + k / config.rate
            delay = intended - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop is not None and stop.is_set():
                break
            for runner in runners:
                runner.launch(k, intended)
            if bar is not None and k % max(1, int(config.rate / 10)) == 0:
                bar.n = k + 1
                bar.refresh()
        pending = {t for r in runners for t in r.tasks}
        if pending:
            _, still = await asyncio.wait(pending, timeout=config.drain_period)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5.0)
    finally:
        for runner in runners:
            for task in list(runner.tasks):
                task.cancel()
            runner.close()
        if bar is not None:
            bar.n = total
            bar.close()
    rows = [rec.row(t0) for r in runners for rec in r.records]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["status"] = frame["status"].astype("Int64")
    return ProbeResult(
        requests=frame,
        events=events.frame(),
        t0_wall=t0_wall,
        rate=config.rate,
        duration=config.duration,
        lanes=config.lanes,
        lane_stats=tuple(LaneStats(r.lane.name, r.max_in_flight, r.peak_in_flight, r.dropped) for r in runners),
        dns_queries=resolver.queries if resolver else 0,
    )


def _progress_bar(total: int, enabled: bool | None):  # type: ignore[no-untyped-def]
    if enabled is False:
        return None
    if enabled is None:
        # Auto: show in notebooks and terminals, stay silent in logs and CI.
        enabled = "ipykernel" in sys.modules or sys.stderr.isatty()
        if not enabled:
            return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="req", desc="probe", leave=True)


# --------------------------------------------------------------------------- synchronous use


class ProbeRun:
    """A probe running in its own thread and event loop (usable from a notebook cell).

    Side effect: starts one daemon thread. :meth:`stop` ends sending early;
    :meth:`wait` returns the :class:`ProbeResult` or re-raises the probe's error.
    """

    def __init__(self, config: ProbeConfig, events: EventLog | None = None) -> None:
        self.config = config
        self.events = events if events is not None else EventLog()
        self._stop = threading.Event()
        self._result: ProbeResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="runbooks-probe", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self._result = asyncio.run(probe(self.config, self.events, stop=self._stop))
        except BaseException as exc:  # handed to the caller of wait()
            self._error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Stop sending; in-flight requests still drain (bounded)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> ProbeResult:
        """Block until the probe ends; raise :class:`WaitTimedOut` after ``timeout`` seconds.

        The default timeout is the probe's duration + drain period + 30 s.
        """
        limit = timeout if timeout is not None else self.config.duration + self.config.drain_period + 30.0
        self._thread.join(limit)
        if self._thread.is_alive():
            raise WaitTimedOut(
                f"probe still running after {limit:.0f}s",
                fix="call .stop() and wait again; check the lanes' timeouts",
            )
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def start(config: ProbeConfig, events: EventLog | None = None) -> ProbeRun:
    """Start the probe in the background and return its handle (see :class:`ProbeRun`)."""
    return ProbeRun(config, events)


def run(config: ProbeConfig, events: EventLog | None = None) -> ProbeResult:
    """Run the probe to completion and return its result; works inside a running event loop."""
    return start(config, events).wait()
