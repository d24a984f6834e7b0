"""The failover drill's pieces without a cluster: fault injectors, strategies, the bar, the paragraph, the guard,
the API watch's change detection, the parameter checks."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest

from runbooks_lib import errors, failover, faults, schemas
from runbooks_lib import probe as p
from runbooks_lib.kube.watch import EventWatch, _ready

# ---------------------------------------------------------------- fault injectors


class FakeLab:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def require_machine(self, name: str) -> None:
        if name not in ("node1", "node2", "node3"):
            raise errors.LabError(f"no machine {name}")

    def machine_names(self) -> list[str]:
        return ["node1", "node2", "node3"]

    def poweroff(self, name: str, mode: str = "hard") -> None:
        self.calls.append(("poweroff", name, mode))

    def poweron(self, name: str) -> None:
        self.calls.append(("poweron", name))

    def partition(self, a: str, b: str) -> None:
        self.calls.append(("partition", a, b))

    def heal(self) -> None:
        self.calls.append(("heal",))


def test_lab_faults_power_off_and_on_or_partition_from_every_other_machine() -> None:
    lab = FakeLab()
    inj = faults.injector("lab", lab=lab)
    inj.preflight("node2", "hard")
    inj.inject("node2", "10.0.0.2", "hard")
    inj.restore("node2", "10.0.0.2", "hard")
    inj.inject("node2", "10.0.0.2", "partition")
    inj.restore("node2", "10.0.0.2", "partition")
    assert lab.calls == [("poweroff", "node2", "hard"), ("poweron", "node2"), ("partition", "node2", "node1"),
                         ("partition", "node2", "node3"), ("heal",)]
    with pytest.raises(errors.PreconditionFailed, match="no machine 'node9'"):
        inj.preflight("node9", "hard")
    with pytest.raises(errors.BadParameters, match="unknown fault mode"):
        inj.preflight("node2", "melt")


def test_command_faults_substitute_placeholders_and_a_failing_command_is_a_clear_error(tmp_path) -> None:
    marker = tmp_path / "faulted"
    inj = faults.injector("command", fault_command=["sh", "-c", 'echo "$1 $2 $3" > "$4"', "x", "{node}", "{address}",
                                                    "{mode}", str(marker)],
                          power_on_command=["rm", "-f", str(marker)], timeout=10)
    inj.preflight("node2", "hard")
    inj.inject("node2", "10.0.0.2", "hard")
    assert marker.read_text() == "node2 10.0.0.2 hard\n"
    inj.restore("node2", "10.0.0.2", "hard")
    assert not marker.exists()
    failing = faults.injector("command", fault_command=["false", "{node}"])
    with pytest.raises(faults.FaultNotInjected, match="fault command failed, so node2 was not faulted"):
        failing.inject("node2", "10.0.0.2", "hard")
    with pytest.raises(errors.BadParameters, match="unknown placeholder"):
        faults.injector("command", fault_command=["stop", "{server_id}"]).preflight("node2", "hard")
    with pytest.raises(errors.PreconditionFailed, match="fault_command is empty"):
        faults.injector("command").preflight("node2", "hard")


def test_manual_faults_ask_the_operator_and_refuse_a_headless_run() -> None:
    answers = iter(["ready", "done", "done"])
    asked: list[str] = []
    inj = faults.ManualFaults(ask=lambda q: asked.append(q) or next(answers), say=lambda m: None)
    inj.preflight("node2", "hard")
    inj.inject("node2", "10.0.0.2", "hard")
    inj.restore("node2", "10.0.0.2", "hard")
    assert "NOW: hard-fault node2" in asked[1]

    def no_stdin(_: str) -> str:
        raise EOFError

    with pytest.raises(errors.PreconditionFailed, match="headless run"):
        faults.ManualFaults(ask=no_stdin).preflight("node2", "hard")
    with pytest.raises(faults.FaultNotInjected):
        faults.ManualFaults(ask=lambda q: "no").inject("node2", "10.0.0.2", "hard")
    with pytest.raises(errors.BadParameters):
        faults.injector("ipmi")


# ---------------------------------------------------------------- strategies, bar, paragraph


def test_one_lane_per_strategy_named_after_it() -> None:
    lanes = failover.lanes(list(failover.STRATEGIES), app_host="app.lab", vip="10.0.0.100",
                           haproxy=("127.0.0.1", 8080), naive_connect_timeout=7)
    assert [lane.name for lane in lanes] == list(failover.STRATEGIES)
    assert [lane.model for lane in lanes] == ["naive", "fallback", "happy_eyeballs", "direct", "direct"]
    assert lanes[0].connect_timeout == 7 and lanes[3].target.host == "app.lab"
    assert lanes[4].target == p.Target("127.0.0.1", 8080, "/", "app.lab")
    with pytest.raises(errors.BadParameters):
        failover.lanes(["keepalived-vip"], app_host="app.lab")
    with pytest.raises(errors.BadParameters):
        failover.lanes(["anycast"], app_host="app.lab")


def _table(**rows: dict) -> pd.DataFrame:
    base = {"requests": 100, "failed": 0, "failed_pct": 0.0, "slow_pct": 0.0, "p50_ms": 2.0, "p99_ms": 150.0,
            "max_ms": 200.0, "detect_s": math.nan, "recover_s": math.nan, "availability": 1.0, "dropped": 0}
    return pd.DataFrame([{"lane": k, **base, **v} for k, v in rows.items()]).set_index("lane")


def test_the_bar_says_by_how_much_it_is_missed() -> None:
    table = _table(haproxy={}, **{"keepalived-vip": {"failed": 2, "p99_ms": 1100.0, "detect_s": 0.1,
                                                      "recover_s": 1.4}})
    assert failover.judge(table, "haproxy").meets
    missed = failover.judge(table, "keepalived-vip")
    assert missed.misses == ("2 failed requests over 0", "p99 1100 ms is 800 ms over 300 ms",
                             "recovery 1.50 s is 0.50 s over 1 s")
    with pytest.raises(errors.BadParameters):
        failover.judge(table, "dns-naive")


def test_a_miss_names_a_stall_shared_by_the_other_lanes() -> None:
    """HAProxy's only bad request, 33 s after the fault, came with bad requests on most other lanes."""
    lanes = ["haproxy", "keepalived-vip", "happy-eyeballs", "dns-naive"]
    rows = [{"lane": lane, "intended": t / 10, "latency": 0.005, "error": None, "send_lag": 0.0}
            for t in range(0, 400) for lane in lanes]
    df = pd.DataFrame(rows)
    stalled = (df["intended"].between(33.2, 33.4)) & (df["lane"] != "dns-naive")
    df.loc[stalled, "latency"] = 0.45
    table = _table(haproxy={"p99_ms": 230.0, "detect_s": 23.2, "recover_s": 0.2})
    verdict = failover.judge(table, "haproxy", requests=df, fault_at=10.0)
    assert not verdict.meets
    assert any("2 of the 3 other lanes were bad too (happy-eyeballs, keepalived-vip)" in m
               and "probe host or the lab machine" in m for m in verdict.misses), verdict.misses
    df.loc[stalled & (df["lane"] != "haproxy"), "latency"] = 0.005  # only HAProxy's lane was bad
    verdict = failover.judge(table, "haproxy", requests=df, fault_at=10.0)
    assert any("0 of the 3 other lanes were bad: the front door's own" in m for m in verdict.misses), verdict.misses


def test_the_paragraph_has_the_baseline_each_strategy_and_the_recommendation() -> None:
    table = _table(**{"dns-naive": {"failed": 30}, "haproxy": {}})
    text = failover.conclusion(table, nodes=4, dead_share=0.25, naive_share=0.24, naive_timeout=10,
                               recommended="haproxy", verdict=failover.judge(table, "haproxy"),
                               moments={"VIP moved": 0.61, "endpoints changed": None})
    assert "with 4 ingress nodes behind DNS round-robin, 24% of a naive client's requests" in text
    assert "share of the answers is 25%" in text and "10 s connect timeout" in text
    assert "haproxy: 0 failed, p99 150 ms" in text and "VIP moved 0.61 s after the fault" in text
    assert "Recommended: haproxy, which met the bar" in text and "false positives" in text


def test_bad_share_after_the_fault_counts_failed_and_slow() -> None:
    df = pd.DataFrame({"lane": ["a"] * 4, "intended": [0.0, 1.0, 2.0, 3.0], "latency": [0.01, 0.9, 0.01, 0.01],
                       "error": [None, None, "connect_timeout", None]})
    assert failover.post_fault_bad_share(df, "a", fault_at=0.5, target=0.3) == pytest.approx(2 / 3, abs=1e-3)


def test_the_guard_keeps_the_first_error_skips_later_steps_and_always_runs_teardown() -> None:
    said: list[str] = []
    guard = failover.Guard(say=said.append)
    assert guard.run("one", lambda: 1) == 1
    assert guard.run("two", lambda: 1 / 0) is None
    assert guard.run("three", lambda: 3) is None
    assert guard.always("teardown", lambda: "clean") == "clean"
    assert [(r.name, r.status) for r in guard.steps.records] == [("one", "ok"), ("two", "failed"),
                                                                  ("three", "skipped"), ("teardown", "ok")]
    with pytest.raises(ZeroDivisionError):
        guard.raise_if_failed()
    stopped = failover.Guard(say=said.append)  # the operator's stop button during the probe
    assert stopped.run("probe", lambda: (_ for _ in ()).throw(KeyboardInterrupt())) is None
    assert stopped.always("teardown", lambda: "clean") == "clean"
    assert [(r.name, r.status) for r in stopped.steps.records] == [("probe", "failed"), ("teardown", "ok")]
    with pytest.raises(KeyboardInterrupt):
        stopped.raise_if_failed()
    clean = failover.Guard(say=said.append)
    clean.always("teardown", lambda: (_ for _ in ()).throw(errors.CommandFailed("stuck")))
    with pytest.raises(errors.RunbookError, match="teardown failed: teardown: CommandFailed: stuck"):
        clean.raise_if_failed()


# ---------------------------------------------------------------- the API watch's change detection


def test_a_watch_records_each_change_of_state_not_the_first_sight() -> None:
    events = p.EventLog()
    w = EventWatch(api=None, path="/api/v1/nodes", describe=_ready, events=events,  # type: ignore[arg-type]
                   kind_of=lambda old, new: f"node {new}", source="kubernetes")

    def node(name: str, ready: str) -> dict:
        return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}

    for obj in (node("node1", "True"), node("node2", "True"), node("node2", "True"), node("node2", "Unknown"),
                node("node2", "True")):
        w._see(obj)
    frame = events.frame()
    assert list(frame["kind"]) == ["node NotReady", "node Ready"]
    assert list(frame["detail"]) == ["node2 Ready -> NotReady", "node2 NotReady -> Ready"]


# ---------------------------------------------------------------- parameters


def test_failover_parameters_are_checked_beyond_types() -> None:
    good = schemas.FailoverParams(dns_server="10.0.0.1", vip="10.0.0.100", fault_injector="lab")
    assert schemas.check_failover(good) is good
    bad = replace(good, strategies=("dns-naive", "anycast"), recommended="haproxy", fault_mode="melt",
                  fault_injector="command", rate=0, vip="not-an-ip")
    with pytest.raises(errors.BadParameters) as exc:
        schemas.check_failover(bad)
    text = str(exc.value)
    for part in ("anycast", "recommended 'haproxy'", "fault_mode 'melt'", "needs fault_command", "rate must be"):
        assert part in text, part


def test_the_fault_node_chosen_runs_no_app_pod_and_is_not_the_controller_manager_leader() -> None:
    nodes = ["node1", "node2", "node3", "node4"]
    assert failover.pick_fault_node(nodes, app_nodes=["node3", "node4"], leader="node2") == "node1"
    assert failover.pick_fault_node(nodes, app_nodes=["node3", "node4"], leader="node1") == "node2"
    assert failover.pick_fault_node(nodes, app_nodes=nodes, leader=None) == "node4"
