"""Failover plots: one row per strategy on a shared time axis, t = 0 at the fault.

Each row has three panels: every request's latency (log scale) against its
intended send time, coloured by outcome and marked by serving node, with
dashed lines for the client timeout and the latency target; per-second
p50/p99/max with achieved vs offered rate; per-second errors by class. Every
event is a vertical line in every panel and the impact window is shaded.

Helpers take data and an optional ``ax`` and return the figure; nothing here
calls ``plt.show()`` or changes matplotlib's global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from runbooks_lib import analysis

OUTCOME_COLOURS: dict[str, str] = {
    "ok": "#2ca02c",
    "slow": "#ff7f0e",
    "connect_timeout": "#d62728",
    "read_timeout": "#9467bd",
    "refused": "#8c564b",
    "unreachable": "#e377c2",
    "reset": "#17becf",
    "http_5xx": "#bcbd22",
    "dns": "#7f7f7f",
    "dropped": "#000000",
    "unfinished": "#555555",
    "other": "#aaaaaa",
}
NODE_MARKERS = ("o", "s", "^", "D", "v", "P", "*", "h", "<", ">")
EVENT_COLOURS = ("#444444", "#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _new_axes(ax: Axes | None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=(8, 3))
    return fig, fig.add_subplot()


def mark_events(ax: Axes, events: pd.DataFrame | None, *, fault_at: float = 0.0, labels: bool = True,
                span: tuple[float, float] | None = None) -> None:
    """Draw a dotted vertical line (and a label) for every event (only those inside ``span``, when given)."""
    if events is None or events.empty:
        return
    kinds = list(dict.fromkeys(events["kind"].astype(str)))
    for _, ev in events.iterrows():
        colour = EVENT_COLOURS[kinds.index(str(ev["kind"])) % len(EVENT_COLOURS)]
        x = float(ev["t"]) - fault_at
        if span is not None and not span[0] <= x <= span[1]:
            continue
        ax.axvline(x, color=colour, linestyle=":", linewidth=1.2, gid="event")
        if labels:
            detail = f" {ev['detail']}" if isinstance(ev.get("detail"), str) and ev["detail"] else ""
            ax.annotate(f"{ev['kind']}{detail}", xy=(x, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=7, color=colour, va="top", ha="right")


def shade_window(ax: Axes, window: analysis.Window | None) -> None:
    """Shade the impact window."""
    if window is not None:
        ax.axvspan(window.start, window.end, color="#ffdddd", alpha=0.5, zorder=0, gid="impact-window")


def latency_scatter(
    requests: pd.DataFrame,
    *,
    ax: Axes | None = None,
    fault_at: float = 0.0,
    target: float = 0.5,
    client_timeout: float | None = None,
) -> Figure:
    """Per-request latency (log y) against intended send time, coloured by outcome, marked by node."""
    fig, ax = _new_axes(ax)
    t = analysis.relative(requests, fault_at)
    out = analysis.outcome(requests, target)
    nodes = requests["node"].where(requests["node"].notna(), None) if "node" in requests else pd.Series(None, index=requests.index)
    node_names = sorted({str(n) for n in nodes.dropna()})
    lat = requests["latency"].clip(lower=1e-4)
    for kind in [k for k in OUTCOME_COLOURS if (out == k).any()] + sorted(set(out) - set(OUTCOME_COLOURS)):
        sel = out == kind
        colour = OUTCOME_COLOURS.get(kind, "#aaaaaa")
        if kind in ("ok", "slow"):
            for i, node in enumerate(node_names + [None]):
                pick = sel & ((nodes == node) if node is not None else nodes.isna())
                if pick.any():
                    ax.scatter(t[pick], lat[pick], s=6, c=colour, marker=NODE_MARKERS[i % len(NODE_MARKERS)] if node else ".",
                               label=f"{kind} {node}" if node else kind, linewidths=0)
        else:
            ax.scatter(t[sel], lat[sel], s=12, c=colour, marker="x", label=kind, linewidths=0.8)
    ax.set_yscale("log")
    ax.axhline(target, color="#ff7f0e", linestyle="--", linewidth=1, label=f"target {target:g}s")
    if client_timeout is not None:
        ax.axhline(client_timeout, color="#d62728", linestyle="--", linewidth=1, label=f"client timeout {client_timeout:g}s")
    ax.set_ylabel("latency (s)")
    ax.set_xlabel("intended send time from fault (s)")
    ax.legend(fontsize=6, loc="upper left", ncol=2, markerscale=1.5)
    return fig


def percentiles(requests: pd.DataFrame, *, ax: Axes | None = None, fault_at: float = 0.0, target: float = 0.5,
                rate: float | None = None) -> Figure:
    """Per-second p50/p99/max latency (log y) and achieved vs offered rate (right axis)."""
    fig, ax = _new_axes(ax)
    sec = analysis.per_second(requests, fault_at=fault_at, target=target)
    if not sec.empty:
        sec = sec.groupby("second")[["p50", "p99", "max", "offered", "achieved"]].agg(
            {"p50": "median", "p99": "max", "max": "max", "offered": "sum", "achieved": "sum"})
        x = sec.index + 0.5
        ax.plot(x, sec["p50"].clip(lower=1e-4), label="p50", color="#2ca02c")
        ax.plot(x, sec["p99"].clip(lower=1e-4), label="p99", color="#ff7f0e")
        ax.plot(x, sec["max"].clip(lower=1e-4), label="max", color="#d62728")
        ax.set_yscale("log")
        ax.set_ylabel("latency per second (s)")
        rate_ax = ax.twinx()
        rate_ax.step(x, sec["offered"], where="mid", color="#7f7f7f", linestyle="--", label="offered req/s")
        rate_ax.step(x, sec["achieved"], where="mid", color="#1f77b4", label="achieved req/s")
        rate_ax.set_ylabel("req/s")
        rate_ax.set_ylim(bottom=0)
        rate_ax.legend(fontsize=6, loc="lower right")
    ax.legend(fontsize=6, loc="upper left")
    ax.set_xlabel("time from fault (s)")
    return fig


def errors_by_class(requests: pd.DataFrame, *, ax: Axes | None = None, fault_at: float = 0.0, target: float = 0.5) -> Figure:
    """Per-second count of failed requests, stacked by error class."""
    fig, ax = _new_axes(ax)
    sec = analysis.per_second(requests, fault_at=fault_at, target=target)
    classes = [c for c in OUTCOME_COLOURS if c not in ("ok", "slow") and not sec.empty and c in sec.columns]
    if classes:
        counts = sec.groupby("second")[classes].sum()
        bottom = pd.Series(0.0, index=counts.index)
        for cls in classes:
            ax.bar(counts.index + 0.5, counts[cls], width=0.9, bottom=bottom, color=OUTCOME_COLOURS[cls], label=cls)
            bottom += counts[cls]
        ax.legend(fontsize=6, loc="upper left")
    ax.set_ylabel("errors per second")
    ax.set_xlabel("time from fault (s)")
    return fig


def failover_figure(
    requests: pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    fault_at: float | None = None,
    target: float = 0.5,
    client_timeouts: Mapping[str, float] | None = None,
    rate: float | None = None,
    window: analysis.Window | None = None,
    title: str | None = None,
) -> Figure:
    """The whole failover on one figure: one row per group of lanes (default: one per lane).

    ``groups`` maps a row title to the lanes drawn in it; ``fault_at`` is the
    fault's probe-timeline time (default: the first fault event, else 0);
    ``client_timeouts`` maps a lane to its client timeout (dashed line).
    """
    if fault_at is None:
        fault_at = analysis.fault_time(events)
    if groups is None:
        groups = {lane: [lane] for lane in dict.fromkeys(requests["lane"])}
    if window is None:
        window = analysis.impact_window(requests, fault_at=fault_at, target=target)
    rows = max(1, len(groups))
    span = None
    if not requests.empty:  # the probe's timeline: events after it (the node's return) are in the table only
        lo, hi = float(requests["intended"].min()) - fault_at, float(requests["intended"].max()) - fault_at
        pad = 0.02 * ((hi - lo) or 1.0)
        span = (lo - pad, hi + pad)
    fig = Figure(figsize=(18, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, 3, sharex=True, squeeze=False)
    for row, (title_row, lanes) in zip(axes, groups.items()):
        part = requests[requests["lane"].isin(list(lanes))]
        timeouts = [client_timeouts[l] for l in lanes if client_timeouts and l in client_timeouts]
        latency_scatter(part, ax=row[0], fault_at=fault_at, target=target, client_timeout=max(timeouts) if timeouts else None)
        percentiles(part, ax=row[1], fault_at=fault_at, target=target, rate=rate)
        errors_by_class(part, ax=row[2], fault_at=fault_at, target=target)
        row[0].set_title(title_row, loc="left", fontsize=10, fontweight="bold")
        for i, ax in enumerate(row):
            shade_window(ax, window)
            mark_events(ax, events, fault_at=fault_at, labels=(i == 0), span=span)
    if span is not None:
        axes[0][0].set_xlim(*span)  # shared by every axis
    if title:
        fig.suptitle(title)
    return fig


def figure_for(result, *, groups: Mapping[str, Sequence[str]] | None = None, target: float = 0.5,  # type: ignore[no-untyped-def]
               fault_at: float | None = None, title: str | None = None) -> Figure:
    """:func:`failover_figure` for a :class:`runbooks_lib.probe.ProbeResult` (timeouts and rate from it)."""
    timeouts = {lane.name: lane.connect_timeout for lane in result.lanes}
    return failover_figure(result.requests, result.events, groups=groups, fault_at=fault_at, target=target,
                           client_timeouts=timeouts, rate=result.rate, title=title)
