"""The impact of a failover on users, computed from the probe's raw samples.

Works on the probe's request frame (:data:`runbooks_lib.probe.COLUMNS`; only
``lane``, ``intended``, ``done``, ``latency`` and ``error`` are needed) with
times in seconds on the probe's timeline. A request is *bad* when it failed
(any error class, including requests the probe dropped at its in-flight bound)
or took longer than the latency target. Latency is always measured from the
intended send time, and a failed request's latency is the time until it
failed: that is how long its user waited.

Pure functions, no side effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

FAULT_KINDS = ("poweroff", "power off", "power-off", "fault")


@dataclass(frozen=True)
class Window:
    """The impact window, in seconds relative to the fault."""

    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def fault_time(events: pd.DataFrame | None, default: float = 0.0) -> float:
    """Probe-timeline time of the first event whose kind names a fault (power-off), else ``default``."""
    if events is None or events.empty:
        return default
    kinds = events["kind"].astype(str).str.lower()
    hits = events[kinds.apply(lambda k: any(f in k for f in FAULT_KINDS))]
    return float(hits["t"].min()) if not hits.empty else default


def outcome(requests: pd.DataFrame, target: float) -> pd.Series:
    """Per request: ``ok``, ``slow`` (latency over ``target``) or its error class."""
    err = requests["error"].where(requests["error"].notna() & (requests["error"].astype(str) != ""), None)
    slow = requests["latency"] > target
    out = pd.Series("ok", index=requests.index, dtype=object)
    out[slow] = "slow"
    has_err = err.notna()
    out[has_err] = err[has_err].astype(str)
    return out


def relative(requests: pd.DataFrame, fault_at: float) -> pd.Series:
    """Intended send time relative to the fault."""
    return requests["intended"] - fault_at


def impact_window(requests: pd.DataFrame, *, fault_at: float = 0.0, target: float = 0.5,
                  min_length: float = 1.0) -> Window:
    """From the fault to the last bad request sent at or after it (intended time), any lane.

    At least ``min_length`` seconds long, so a clean run still has a window
    to compute percentiles in.
    """
    t = relative(requests, fault_at)
    bad = (outcome(requests, target) != "ok") & (t >= 0)
    end = float(t[bad].max()) if bad.any() else 0.0
    return Window(0.0, max(end, min_length))


def _ms(value: float) -> float:
    return round(value * 1000.0, 1) if not math.isnan(value) else math.nan


def impact_table(
    requests: pd.DataFrame,
    *,
    fault_at: float = 0.0,
    target: float = 0.5,
    window: Window | None = None,
) -> pd.DataFrame:
    """One row per lane: what users of that client model saw.

    Columns: ``requests`` (whole run), ``failed``, ``failed_pct``,
    ``slow_pct`` (succeeded but over ``target``), ``p50_ms``/``p99_ms``/
    ``max_ms`` (latency of requests sent inside the impact window, failed ones
    included), ``detect_s`` (fault to the first bad request's intended send
    time; NaN when none was bad), ``recover_s`` (first to last bad request,
    by intended send time; 0 for a single one), ``availability`` (successful /
    total), ``dropped`` (not sent: the probe's in-flight bound).
    """
    if window is None:
        window = impact_window(requests, fault_at=fault_at, target=target)
    out = outcome(requests, target)
    t = relative(requests, fault_at)
    rows = []
    for lane, idx in requests.groupby("lane", sort=False).groups.items():
        o = out.loc[idx]
        tl = t.loc[idx]
        lat = requests.loc[idx, "latency"]
        n = len(idx)
        failed = int((~o.isin(["ok", "slow"])).sum())
        slow = int((o == "slow").sum())
        bad_after = tl[(o != "ok") & (tl >= 0)]
        in_win = lat[(tl >= window.start) & (tl <= window.end)]
        rows.append(
            {
                "lane": lane,
                "requests": n,
                "failed": failed,
                "failed_pct": round(100.0 * failed / n, 2) if n else math.nan,
                "slow_pct": round(100.0 * slow / n, 2) if n else math.nan,
                "p50_ms": _ms(float(in_win.quantile(0.5))) if len(in_win) else math.nan,
                "p99_ms": _ms(float(in_win.quantile(0.99))) if len(in_win) else math.nan,
                "max_ms": _ms(float(in_win.max())) if len(in_win) else math.nan,
                "detect_s": round(float(bad_after.min()), 3) if len(bad_after) else math.nan,
                "recover_s": round(float(bad_after.max() - bad_after.min()), 3) if len(bad_after) else math.nan,
                "availability": round((n - failed) / n, 5) if n else math.nan,
                "dropped": int((o == "dropped").sum()),
            }
        )
    return pd.DataFrame(rows).set_index("lane")


def per_second(requests: pd.DataFrame, *, fault_at: float = 0.0, target: float = 0.5) -> pd.DataFrame:
    """Per lane and second (intended send time relative to the fault, floored).

    Columns: ``lane``, ``second``, ``offered`` (requests scheduled in that
    second), ``achieved`` (successful responses completed in that second),
    ``p50``/``p99``/``max`` latency (seconds) of the requests sent in it, and
    one count column per error class seen.
    """
    df = requests.assign(
        _sec=(relative(requests, fault_at)).apply(math.floor),
        _done_sec=(requests["done"] - fault_at).apply(lambda v: math.floor(v) if not math.isnan(v) else v),
        _out=outcome(requests, target),
    )
    frames = []
    for lane, g in df.groupby("lane", sort=False):
        lat = g.groupby("_sec")["latency"]
        sec = pd.DataFrame({"offered": g.groupby("_sec").size(), "p50": lat.quantile(0.5),
                            "p99": lat.quantile(0.99), "max": lat.max()})
        ok = g[g["_out"].isin(["ok", "slow"])]
        sec["achieved"] = ok.groupby("_done_sec").size().reindex(sec.index).fillna(0).astype(int)
        errors = g[~g["_out"].isin(["ok", "slow"])]
        if not errors.empty:
            counts = errors.groupby(["_sec", "_out"]).size().unstack(fill_value=0)
            sec = sec.join(counts).fillna({c: 0 for c in counts.columns})
        sec = sec.reset_index(names="second")
        sec.insert(0, "lane", lane)
        frames.append(sec)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
