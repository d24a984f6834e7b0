"""The impact table and per-second series on a hand-made request frame."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from runbooks_lib import analysis

FAULT = 10.0


def frame() -> pd.DataFrame:
    intended = [9.0, 10.0, 11.0, 12.0, 13.0, 14.0]
    rows = []
    lat_a = [0.01, 0.01, 5.0, 0.8, 0.01, 0.01]
    err_a = [None, None, "connect_timeout", None, None, None]
    for t, lat, err in zip(intended, lat_a, err_a):
        rows.append({"lane": "a", "intended": t, "latency": lat, "done": t + lat, "error": err})
    for t in intended:
        rows.append({"lane": "b", "intended": t, "latency": 0.02, "done": t + 0.02, "error": None})
    return pd.DataFrame(rows)


def test_outcome_classes():
    out = analysis.outcome(frame(), target=0.5)
    assert list(out[:6]) == ["ok", "ok", "connect_timeout", "slow", "ok", "ok"]


def test_impact_window_spans_fault_to_last_bad_request():
    assert analysis.impact_window(frame(), fault_at=FAULT, target=0.5) == analysis.Window(0.0, 2.0)
    clean = frame()[frame()["lane"] == "b"]
    assert analysis.impact_window(clean, fault_at=FAULT, target=0.5).length == 1.0


def test_impact_table():
    table = analysis.impact_table(frame(), fault_at=FAULT, target=0.5)
    a, b = table.loc["a"], table.loc["b"]
    assert a["requests"] == 6 and a["failed"] == 1
    assert a["failed_pct"] == pytest.approx(16.67) and a["slow_pct"] == pytest.approx(16.67)
    # Inside the window [0, 2] s after the fault: latencies 0.01, 5.0, 0.8.
    assert a["p50_ms"] == pytest.approx(800.0)
    assert a["p99_ms"] == pytest.approx(4916.0)
    assert a["max_ms"] == pytest.approx(5000.0)
    assert a["detect_s"] == pytest.approx(1.0) and a["recover_s"] == pytest.approx(1.0)
    assert a["availability"] == pytest.approx(5 / 6, abs=1e-5)
    assert b["failed"] == 0 and b["availability"] == 1.0
    assert math.isnan(b["detect_s"]) and math.isnan(b["recover_s"])
    assert b["p50_ms"] == pytest.approx(20.0)


def test_dropped_requests_count_as_failed():
    df = frame()
    df.loc[0, "error"] = "dropped"
    table = analysis.impact_table(df, fault_at=FAULT, target=0.5)
    assert table.loc["a", "dropped"] == 1 and table.loc["a", "failed"] == 2


def test_per_second_series():
    sec = analysis.per_second(frame(), fault_at=FAULT, target=0.5)
    a = sec[sec["lane"] == "a"].set_index("second")
    assert list(a.index) == [-1, 0, 1, 2, 3, 4]
    assert (a["offered"] == 1).all()
    assert a.loc[1, "connect_timeout"] == 1 and a.loc[1, "max"] == 5.0
    # The failed request is not achieved; the slow one completes in second 2.
    assert a["achieved"].sum() == 5


def test_fault_time_from_events():
    events = pd.DataFrame({"t": [3.0, 7.5, 9.0], "kind": ["probe started", "poweroff", "vip moved"]})
    assert analysis.fault_time(events) == 7.5
    assert analysis.fault_time(None, default=2.0) == 2.0
