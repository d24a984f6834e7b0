"""The failover figure is drawn from a probe-like frame and written as a PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from runbooks_lib import plots  # noqa: E402


def _requests() -> pd.DataFrame:
    rows = []
    for lane in ("naive", "fallback"):
        for k in range(200):
            t = k / 20.0
            dead = lane == "naive" and 4.0 <= t < 7.0 and (k - 80) % 3 == 0
            lat = 2.0 if dead else 0.01 + 0.001 * (k % 5)
            rows.append({"lane": lane, "seq": k, "intended": t, "done": t + lat, "latency": lat,
                         "error": "connect_timeout" if dead else None,
                         "node": None if dead else f"node{k % 3 + 1}"})
    return pd.DataFrame(rows)


def _events() -> pd.DataFrame:
    return pd.DataFrame({"t": [4.0, 6.5], "wall": [0.0, 0.0], "kind": ["poweroff", "vip moved"],
                         "detail": ["node1", "node2 MASTER"], "source": ["lab", "keepalived"]})


def test_failover_figure_png(tmp_path):
    fig = plots.failover_figure(_requests(), _events(), target=0.5, client_timeouts={"naive": 2.0}, rate=20)
    out = tmp_path / "failover.png"
    fig.savefig(out, dpi=60)
    assert out.stat().st_size > 10_000
    main_axes = [ax for ax in fig.axes if ax.get_ylabel() != "req/s"]
    assert len(main_axes) == 6  # two lanes x three panels
    scatter_naive = main_axes[0]
    assert scatter_naive.get_yscale() == "log"
    labels = scatter_naive.get_legend_handles_labels()[1]
    assert "connect_timeout" in labels and "client timeout 2s" in labels and "target 0.5s" in labels
    assert any(label.startswith("ok node") for label in labels)
    # t = 0 at the fault: the dead requests start at x = 0.
    offsets = [c.get_offsets() for c in scatter_naive.collections if c.get_label() == "connect_timeout"][0]
    assert np.isclose(offsets[:, 0].min(), 0.0)
    for ax in main_axes:
        assert len([l for l in ax.lines if l.get_gid() == "event"]) == 2
        assert any(p.get_gid() == "impact-window" for p in ax.patches)
    errors_naive = main_axes[2]
    assert sum(bar.get_height() for bar in errors_naive.patches if bar.get_gid() != "impact-window") == 20
    # Twin axes carry offered and achieved rates.
    assert len([ax for ax in fig.axes if ax.get_ylabel() == "req/s"]) == 2


def test_events_after_the_probe_stay_off_the_figure():
    """The node's return, recorded after the probe ended, neither stretches the time axis nor gets a line."""
    late = pd.DataFrame({"t": [60.0], "wall": [0.0], "kind": ["node Ready"], "detail": ["node1 NotReady -> Ready"],
                         "source": ["kubernetes"]})
    fig = plots.failover_figure(_requests(), pd.concat([_events(), late], ignore_index=True), target=0.5)
    scatter = fig.axes[0]
    lo, hi = scatter.get_xlim()
    assert -4.25 < lo < -4.15 and 6.1 < hi < 6.2  # the probe's 0..9.95 s, fault at 4 s, 2% margin
    assert len([line for line in scatter.lines if line.get_gid() == "event"]) == 2


def test_helpers_draw_into_a_given_axis():
    fig = matplotlib.figure.Figure()
    ax = fig.add_subplot()
    assert plots.latency_scatter(_requests(), ax=ax, fault_at=4.0) is fig
    assert ax.get_yscale() == "log"
    fig2 = plots.errors_by_class(_requests())
    assert fig2 is not fig and len(fig2.axes) == 1
