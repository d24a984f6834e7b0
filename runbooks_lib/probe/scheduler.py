"""The open-loop scheduler: sends every lane's requests on a fixed timetable and collects the result.

Request ``k`` of every lane is scheduled at ``t0 + k / rate`` and runs in its
own asyncio task, so a hung request never delays the next one; latency is
measured from the *intended* send time (no coordinated omission), and the send
lag (actual start minus intended) shows when the probe itself falls behind.

Side effects: opens TCP connections to the lanes' targets and UDP/TCP
queries to the DNS server; raises the process' soft open-files limit to its
hard limit when the planned number of concurrent connections needs it.
Nothing is printed except the optional progress bar.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from runbooks_lib.errors import BadParameters, WaitTimedOut
from runbooks_lib.probe.events import EventLog
from runbooks_lib.probe.lane_runner import LaneRunner
from runbooks_lib.probe.lanes import Lane
from runbooks_lib.probe.resolver import CachingResolver
from runbooks_lib.probe.results import COLUMNS, LaneStats, ProbeResult


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
    runners = [LaneRunner(lane, resolver, config.in_flight_bound(lane)) for lane in config.lanes]
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


def _child_main(config: ProbeConfig, stop: Any, conn: Any) -> None:
    """The probe in its own process: report t0, run, send the result (or the error) back.

    ``stop`` is the reading end of a pipe: a message (or the parent closing
    it) stops the sending.
    """

    class _Reporting(EventLog):
        def set_origin(self, monotonic: float, wall: float, *, force: bool = False) -> None:
            conn.send(("started", monotonic, wall))
            super().set_origin(monotonic, wall, force=force)

    events = _Reporting()
    flag = threading.Event()

    def watch_stop() -> None:
        try:
            stop.recv()
        except (EOFError, OSError):
            pass
        flag.set()

    threading.Thread(target=watch_stop, daemon=True).start()
    try:
        result = asyncio.run(probe(config, events, stop=flag))
        conn.send(("result", result))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent's wait()
        conn.send(("error", exc))
    finally:
        conn.close()


class IsolatedProbeRun:
    """A probe in its own process, so nothing in the caller (SSH, watches, plotting) can stall its timetable.

    Same interface as :class:`ProbeRun`. The child reports its ``t0`` before
    returning from the constructor (the caller's timeline starts then, e.g.
    "fault at t0 + 20 s"); events recorded in this process meanwhile use the
    same monotonic clock and are joined to the result in :meth:`wait`. Side
    effect: one child process (spawned, so no thread state is forked) until
    the result arrives or :meth:`stop` and :meth:`wait` end it.
    """

    def __init__(self, config: ProbeConfig, events: EventLog | None = None, *, start_timeout: float = 60.0) -> None:
        import multiprocessing

        self.config = config
        self.events = events if events is not None else EventLog()
        ctx = multiprocessing.get_context("spawn")
        # A pipe, not a multiprocessing.Event: setting an Event whose waiter has exited blocks forever.
        stop_reader, self._stop = ctx.Pipe(duplex=False)
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child_main, args=(config, stop_reader, child), name="runbooks-probe",
                                 daemon=True)
        self._proc.start()
        child.close()
        stop_reader.close()
        if not self._conn.poll(start_timeout):
            self._proc.kill()
            raise WaitTimedOut(f"the probe process did not start within {start_timeout:.0f}s",
                               fix="is the machine overloaded? check that runbooks_lib imports in a fresh python")
        kind, *rest = self._conn.recv()
        if kind != "started":
            self._proc.join(5)
            raise rest[0] if kind == "error" else WaitTimedOut("the probe process ended before starting")
        self.t0, self.t0_wall = rest
        self.events.set_origin(self.t0, self.t0_wall, force=True)

    @property
    def done(self) -> bool:
        return not self._proc.is_alive()

    def stop(self) -> None:
        """Stop sending; in-flight requests still drain (bounded). Idempotent."""
        try:
            self._stop.send("stop")
        except (BrokenPipeError, OSError):
            pass  # the probe has ended already

    def wait(self, timeout: float | None = None) -> ProbeResult:
        """Block until the probe's result arrives; raise :class:`WaitTimedOut` after ``timeout`` seconds."""
        limit = timeout if timeout is not None else self.config.duration + self.config.drain_period + 30.0
        if not self._conn.poll(limit):
            raise WaitTimedOut(f"probe still running after {limit:.0f}s",
                               fix="call .stop() and wait again; check the lanes' timeouts")
        kind, payload = self._conn.recv()
        self._proc.join(10)
        if kind == "error":
            raise payload
        # The child's own event log holds nothing; the caller's events share its clock and origin.
        return replace(payload, events=self.events.frame())


def start(config: ProbeConfig, events: EventLog | None = None, *, isolated: bool = False) -> ProbeRun | IsolatedProbeRun:
    """Start the probe in the background and return its handle (see :class:`ProbeRun`).

    ``isolated=True`` runs it in its own process (:class:`IsolatedProbeRun`):
    use it when the caller does other work meanwhile (watches over SSH, a
    fault injection), which would otherwise share the interpreter's lock with
    the probe and delay its sends.
    """
    if isolated:
        return IsolatedProbeRun(config, events)
    return ProbeRun(config, events)


def run(config: ProbeConfig, events: EventLog | None = None) -> ProbeResult:
    """Run the probe to completion and return its result; works inside a running event loop."""
    return start(config, events).wait()
