"""The failover drill's own logic: strategies as probe lanes, guarded steps, the bar and the verdict.

Pure apart from :class:`Guard` (runs the callables it is given). The front
doors (runbooks_lib.frontdoors), the probe (runbooks_lib.probe), the impact
table (runbooks_lib.analysis) and fault injection (runbooks_lib.faults) do
the work; this module names the strategies the runbook compares, turns the
impact table into the bar's verdict and writes the paragraph that answers
"which front door, at what cost".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd

from runbooks_lib import analysis, errors
from runbooks_lib import probe as p
from runbooks_lib.records import Steps

T = TypeVar("T")

#: Strategy -> what it is, in the operator's words.
STRATEGIES: dict[str, str] = {
    "dns-naive": "DNS round-robin, naive client (one address per request, long connect timeout): the article",
    "dns-fallback": "DNS round-robin, client falls back to the next address after a short connect timeout",
    "happy-eyeballs": "DNS round-robin, happy-eyeballs client (next address after a 250 ms stagger)",
    "keepalived-vip": "keepalived VRRP floating IP on the ingress nodes",
    "haproxy": "HAProxy with active health checks, retries and redispatch",
}

#: What each strategy costs beyond its numbers.
COSTS: dict[str, str] = {
    "dns-naive": "nothing to run, but every user of the dead node's address waits for their client's connect timeout",
    "dns-fallback": "needs clients you control (an SDK, a mobile app); browsers fall back only after a long timeout",
    "happy-eyeballs": "needs clients you control; adds the stagger to every request that picks the dead address",
    "keepalived-vip": ("nodes on one L2 segment (VPS providers block ARP takeover: move a provider floating IP "
                       "from keepalived's notify script instead); requests in the gap wait one SYN retransmit"),
    "haproxy": ("one more machine (itself a single point of failure unless paired with a VIP); checks cost "
                "nodes / check interval requests per second; a short check timeout marks a frozen or "
                "overloaded node DOWN (false positives)"),
}


@dataclass(frozen=True)
class Bar:
    """What the recommended front door must achieve inside the impact window."""

    failed: int = 0
    p99_ms: float = 300.0
    recovery_s: float = 1.0


@dataclass(frozen=True)
class Verdict:
    """One strategy against the bar: ``misses`` lists each criterion missed and by how much."""

    strategy: str
    failed: int
    p99_ms: float
    recovery_s: float
    misses: tuple[str, ...]

    @property
    def meets(self) -> bool:
        return not self.misses


def lanes(strategies: Sequence[str], *, app_host: str, port: int = 80, vip: str = "", haproxy: tuple[str, int] | None = None,
          naive_connect_timeout: float = 10.0, fallback_connect_timeout: float = 0.3, stagger: float = 0.25,
          read_timeout: float = 5.0) -> tuple[p.Lane, ...]:
    """One probe lane per strategy, named after it. The VIP and HAProxy lanes are browser-like clients too.

    Raises BadParameters for an unknown strategy, or a VIP/HAProxy lane without its address.
    """
    target = p.Target(app_host, port, "/", app_host)
    out = []
    for name in strategies:
        if name == "dns-naive":
            out.append(p.naive(target, connect_timeout=naive_connect_timeout, read_timeout=read_timeout, name=name))
        elif name == "dns-fallback":
            out.append(p.fallback(target, connect_timeout=fallback_connect_timeout, read_timeout=read_timeout,
                                  name=name))
        elif name == "happy-eyeballs":
            out.append(p.happy_eyeballs(target, stagger=stagger, connect_timeout=naive_connect_timeout,
                                        read_timeout=read_timeout, name=name))
        elif name == "keepalived-vip":
            if not vip:
                raise errors.BadParameters("strategy keepalived-vip needs vip", fix="set vip to a free address")
            out.append(p.direct(vip, port=port, host_header=app_host, connect_timeout=naive_connect_timeout,
                                read_timeout=read_timeout, name=name))
        elif name == "haproxy":
            if haproxy is None:
                raise errors.BadParameters("strategy haproxy needs its bind address and port")
            out.append(p.direct(haproxy[0], port=haproxy[1], host_header=app_host,
                                connect_timeout=naive_connect_timeout, read_timeout=read_timeout, name=name))
        else:
            raise errors.BadParameters(f"unknown strategy {name!r}", fix=f"use some of {', '.join(STRATEGIES)}")
    return tuple(out)


def controller_manager_leader(api: Any, *, timeout: float = 15.0) -> str | None:
    """Probe: the node whose kube-controller-manager holds the leader Lease (None when unknown).

    Faulting that node delays NotReady by the lease duration: the node
    lifecycle controller of the next leader starts its grace period afresh.
    """
    from runbooks_lib.kube.api import get

    lease = get(api, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager",
                timeout=timeout)
    holder = str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")
    return holder.split("_", 1)[0] or None


def pick_fault_node(nodes: Sequence[str], *, app_nodes: Sequence[str], leader: str | None) -> str:
    """The last of ``nodes`` that runs no app pod and is not the controller-manager leader (else the last one).

    Such a node shows what the front door does alone: no pod of the app dies
    with it, and Kubernetes marks it NotReady after the grace period. Pure.
    """
    if not nodes:
        raise errors.BadParameters("no ingress nodes to fault")
    quiet = [n for n in nodes if n not in app_nodes and n != leader]
    return (quiet or list(nodes))[-1]


def recovery(row: Mapping[str, Any]) -> float:
    """Seconds from the fault to the last bad request (0 when none was bad)."""
    detect, recover = row.get("detect_s"), row.get("recover_s")
    if detect is None or (isinstance(detect, float) and math.isnan(detect)):
        return 0.0
    return round(float(detect) + float(recover or 0.0), 3)


def judge(table: pd.DataFrame, strategy: str, bar: Bar = Bar(), *, requests: pd.DataFrame | None = None,
          fault_at: float = 0.0) -> Verdict:
    """The ``strategy`` row of the impact table against ``bar``. Raises BadParameters if it has no row.

    With the raw ``requests``, a miss also says how the lane did before the
    fault: a p99 already over the bar then is the probe host's or the
    network's, not the failover's.
    """
    if strategy not in table.index:
        raise errors.BadParameters(f"strategy {strategy!r} was not measured", fix="add it to strategies")
    row = table.loc[strategy].to_dict()
    failed, p99, rec = int(row["failed"]), float(row["p99_ms"]), recovery(row)
    misses = []
    if failed > bar.failed:
        misses.append(f"{failed - bar.failed} failed requests over {bar.failed}")
    if p99 > bar.p99_ms:
        misses.append(f"p99 {p99:.0f} ms is {p99 - bar.p99_ms:.0f} ms over {bar.p99_ms:.0f} ms")
    if rec > bar.recovery_s:
        misses.append(f"recovery {rec:.2f} s is {rec - bar.recovery_s:.2f} s over {bar.recovery_s:g} s")
    if misses and requests is not None:
        lane = requests[(requests["lane"] == strategy) & (requests["intended"] >= fault_at)]
        bad = lane[analysis.outcome(lane, bar.p99_ms / 1000) != "ok"]
        late = bad[bad["send_lag"] >= 0.1] if "send_lag" in bad else bad.iloc[0:0]
        if len(late):
            own = bad[~bad.index.isin(late.index)]
            rest = float(own["intended"].max() - fault_at) if len(own) else 0.0
            misses.append(f"{len(late)} of its {len(bad)} bad requests were sent late by the probe itself (send lag "
                          f">= 100 ms: the probe host stalled); without them the last bad request is {rest:.2f} s "
                          "after the fault")
        if len(bad):
            misses.extend(_shared_stall(requests, strategy, bad, fault_at=fault_at, target=bar.p99_ms / 1000))
        before = requests[(requests["lane"] == strategy) & (requests["intended"] < fault_at)]
        if len(before):
            slow = float((analysis.outcome(before, bar.p99_ms / 1000) != "ok").mean())
            misses.append(f"before the fault already: p99 {1000 * before['latency'].quantile(0.99):.0f} ms, "
                          f"{100 * slow:.1f}% slow or failed")
    return Verdict(strategy, failed, p99, rec, tuple(misses))


def _shared_stall(requests: pd.DataFrame, strategy: str, bad: pd.DataFrame, *, fault_at: float,
                  target: float, within: float = 0.5) -> list[str]:
    """Which other lanes were also bad around the lane's last bad request (the one recovery is measured to).

    Lanes take different paths (DNS to a node, a VIP, HAProxy): when most of
    them are bad at the same moment, long after the fault, the probe host or
    the lab machine stalled; the front door did not. Pure.
    """
    last = bad.loc[bad["intended"].idxmax()]
    t = float(last["intended"])
    near = requests[(requests["lane"] != strategy) & ((requests["intended"] - t).abs() <= within)]
    lanes = sorted(set(near.loc[analysis.outcome(near, target) != "ok", "lane"]))
    others = sorted(set(requests["lane"]) - {strategy})
    if not others:
        return []
    at = f"its last bad request ({t - fault_at:.2f} s after the fault, {1000 * float(last['latency']):.0f} ms)"
    if len(lanes) * 2 > len(others):
        return [f"at {at}, {len(lanes)} of the {len(others)} other lanes were bad too ({', '.join(lanes)}): a stall "
                "shared by lanes on different paths points at the probe host or the lab machine, not the front door"]
    return [f"at {at}, {len(lanes)} of the {len(others)} other lanes were bad"
            + (f" ({', '.join(lanes)})" if lanes else "") + ": the front door's own"]


def post_fault_bad_share(requests: pd.DataFrame, lane: str, *, fault_at: float, target: float) -> float:
    """Share of ``lane``'s requests sent after the fault that failed or were slower than ``target``."""
    part = requests[(requests["lane"] == lane) & (requests["intended"] >= fault_at)]
    if part.empty:
        return math.nan
    bad = analysis.outcome(part, target) != "ok"
    return round(float(bad.mean()), 4)


def first_event_after(events: pd.DataFrame, kind: str, fault_at: float, detail: str = "") -> float | None:
    """Seconds from the fault to the first ``kind`` event (whose detail contains ``detail``), or None."""
    if events is None or events.empty:
        return None
    hit = events[(events["kind"] == kind) & (events["t"] >= fault_at - 0.05)
                 & events["detail"].astype(str).str.contains(detail, regex=False)]
    return round(float(hit["t"].min() - fault_at), 3) if not hit.empty else None


def conclusion(table: pd.DataFrame, *, nodes: int, dead_share: float, naive_share: float | None,
               naive_timeout: float, recommended: str, verdict: Verdict | None, bar: Bar = Bar(),
               moments: Mapping[str, float | None] | None = None) -> str:
    """The paragraph answering "which front door, and at what cost", from the measured numbers. Pure."""
    parts = []
    if naive_share is not None and not math.isnan(naive_share) and "dns-naive" in table.index:
        parts.append(
            f"Baseline (the article): with {nodes} ingress nodes behind DNS round-robin, "
            f"{100 * naive_share:.0f}% of a naive client's requests after the fault failed or hung "
            f"(the dead node's share of the answers is {100 * dead_share:.0f}%), each waiting up to the "
            f"client's {naive_timeout:g} s connect timeout (a browser waits about a minute).")
    for name in table.index:
        if name == "dns-naive":
            continue
        row = table.loc[name]
        parts.append(f"{name}: {int(row['failed'])} failed, p99 {row['p99_ms']:.0f} ms, max {row['max_ms']:.0f} ms "
                     f"in the impact window, recovered {recovery(row.to_dict()):.2f} s after the fault.")
    for label, value in (moments or {}).items():
        if value is not None:
            parts.append(f"{label} {value:.2f} s after the fault.")
    if verdict is not None:
        target = f"0 failed, p99 <= {bar.p99_ms:.0f} ms, recovery <= {bar.recovery_s:g} s"
        if verdict.meets:
            parts.append(f"Recommended: {recommended}, which met the bar ({target}) here. "
                         f"Its cost: {COSTS.get(recommended, 'see the notes')}.")
        else:
            parts.append(f"Recommended: {recommended}, but it missed the bar ({target}) here: "
                         f"{'; '.join(verdict.misses)}. Its cost: {COSTS.get(recommended, 'see the notes')}.")
    return " ".join(parts)


@dataclass
class Guard:
    """Runs the drill's steps so that the teardown still runs after one failed.

    ``run(name, fn)`` records ``fn()`` as a step; the first exception is kept
    (not raised) and every later ``run`` is recorded as skipped. The teardown
    cell calls ``always(name, fn)``, which runs even after a failure and keeps
    its own error too; the last cell calls :meth:`raise_if_failed`. An
    interrupt during a step (JupyterLab's stop button) is kept the same way,
    so the cells below, the teardown among them, still run; an interrupt of
    the teardown itself is not caught. A papermill cell timeout or a dead
    kernel stops the run before the teardown cell: rerun the notebook (a run
    restores the node and removes keepalived and HAProxy even when it is then
    refused) or use the rollback cell.
    """

    steps: Steps = field(default_factory=Steps)
    error: BaseException | None = None
    failed_step: str = ""
    teardown_errors: list[str] = field(default_factory=list)
    say: Callable[[str], None] = print

    def run(self, name: str, fn: Callable[[], T]) -> T | None:
        if self.error is not None:
            self.steps.skip(name, f"not run: {self.failed_step!r} failed")
            self.say(f"SKIPPED {name}: {self.failed_step!r} failed (teardown still runs)")
            return None
        try:
            with self.steps.step(name):
                return fn()
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - kept, raised by raise_if_failed after teardown
            self.error, self.failed_step = exc, name
            self.say(f"FAILED {name}: {type(exc).__name__}: {exc}\n"
                     "(the teardown cells below still run; the last cell raises this error)")
            return None

    def always(self, name: str, fn: Callable[[], T]) -> T | None:
        try:
            with self.steps.step(name):
                return fn()
        except Exception as exc:  # noqa: BLE001 - every teardown part is tried
            self.teardown_errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            self.say(f"TEARDOWN FAILED {name}: {exc}")
            return None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.teardown_errors

    def raise_if_failed(self) -> None:
        """Re-raise the first step's error (after the teardown), or a teardown failure."""
        if self.error is not None:
            raise self.error
        if self.teardown_errors:
            raise errors.RunbookError("teardown failed: " + "; ".join(self.teardown_errors),
                                      fix="clean up what is named by hand (keepalived, HAProxy), then rerun")
