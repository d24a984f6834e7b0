"""`make demo`'s orchestration (runbooks_lib.lab.demo) with a fake runner: order, parameters, skips, failures."""

from __future__ import annotations

from pathlib import Path

from runbooks_lib import errors, runner
from runbooks_lib.lab import demo

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTION = {"host_ip": "10.213.14.1", "machines": [
    {"name": f"node{i}", "ip": f"10.213.14.{10 + i}", "state": "running"} for i in range(1, 6)]}
DESTRUCTIVE = {"prepare-nodes": True, "install-cluster": True, "diagnostics": False, "failover-test": True}
# The install runbooks and diagnostics; the failover drill that ends the demo is tested on its own below.
INSTALL_RUNBOOKS = tuple(item for item in demo.RUNBOOKS if item.name != "failover-test")


class FakeRunner:
    """``find`` and ``run`` with runner's signatures; ``present`` notebooks exist, ``results`` maps name -> status."""

    def __init__(self, present: set[str], results: dict[str, str] | None = None) -> None:
        self.present = present
        self.results = results or {}
        self.calls: list[tuple[str, list, dict, Path | None]] = []

    def find(self, name: str) -> runner.Runbook:
        if name not in self.present:
            raise errors.BadParameters(f"no runbook named {name!r}", fix="pick another")
        return runner.Runbook(name, Path(f"/nb/{name}.ipynb"), "d", DESTRUCTIVE[name], None)

    def run(self, book: runner.Runbook, *, files, overrides, cwd=None) -> runner.RunResult:
        self.calls.append((book.name, list(files), dict(overrides), cwd))
        status = self.results.get(book.name, "ok")
        if status == "raise-refused":
            raise runner.RunRefused("another destructive run holds runs/lab/.lock", fix="wait")
        code = {"ok": 0, "failed": 1, "refused": 2}[status]
        out = Path(f"/runs/lab/T-{book.name}.ipynb")
        return runner.RunResult(book.name, "lab", status, code, out, out.with_suffix(".summary.json"), None, 3.0,
                                f"{book.name} verdict")

    def outcomes(self, lines: list[str]) -> list[demo.Outcome]:
        return demo.run_runbooks(DESCRIPTION, runbooks=INSTALL_RUNBOOKS, find=self.find, run=self.run,
                                 echo=lines.append)


def test_the_three_runbooks_run_in_order_with_the_lab_s_parameters() -> None:
    fake = FakeRunner({"prepare-nodes", "install-cluster", "diagnostics"})
    lines: list[str] = []
    outcomes = fake.outcomes(lines)
    assert [c[0] for c in fake.calls] == ["prepare-nodes", "install-cluster", "diagnostics"]
    assert all(c[1] == [ROOT / "params" / "lab.yaml"] and c[3] == ROOT for c in fake.calls)
    prepare, install, diagnostics = (c[2] for c in fake.calls)
    assert prepare == {"dry_run": False, "confirm": "lab", "upstream_dns_servers": ["10.213.14.1"]}
    assert install == {"dry_run": False, "confirm": "lab", "dns_server": "10.213.14.1",
                       "hosts": {f"node{i}": f"10.213.14.{10 + i}" for i in range(1, 5)}}
    assert diagnostics == {}
    assert [o.status for o in outcomes] == ["ok", "ok", "ok"] and demo.exit_code(outcomes) == 0
    assert "== runbooks run install-cluster -f " in "\n".join(lines)
    text = demo.report(outcomes, Path("/runs/lab"))
    assert text.splitlines()[0].startswith("Run records: /runs/lab ")
    assert [ln.strip() for ln in text.splitlines()[1:]] == [
        f"OK: {n} on lab in 3s: {n} verdict -> /runs/lab/T-{n}.ipynb"
        for n in ("prepare-nodes", "install-cluster", "diagnostics")]


def test_a_missing_notebook_is_skipped_with_a_line_and_the_rest_runs() -> None:
    fake = FakeRunner({"diagnostics"}, {"diagnostics": "refused"})
    lines: list[str] = []
    outcomes = fake.outcomes(lines)
    assert [c[0] for c in fake.calls] == ["diagnostics"]
    assert [o.status for o in outcomes] == ["missing", "missing", "refused"]
    assert outcomes[0].line.startswith("SKIPPED: prepare-nodes: its notebook is not in ")
    assert "runbooks list" in outcomes[1].line and outcomes[1].line in lines
    assert demo.exit_code(outcomes) == 2


def test_after_a_failure_destructive_runbooks_are_not_run_and_diagnostics_still_is() -> None:
    fake = FakeRunner({"prepare-nodes", "install-cluster", "diagnostics"}, {"prepare-nodes": "failed"})
    outcomes = fake.outcomes([])
    assert [c[0] for c in fake.calls] == ["prepare-nodes", "diagnostics"]
    assert [o.status for o in outcomes] == ["failed", "not run", "ok"]
    assert outcomes[1].line == ("NOT RUN: install-cluster: prepare-nodes did not succeed, "
                                "and install-cluster changes the cluster")
    assert demo.exit_code(outcomes) == 1


def test_a_run_refused_before_it_starts_is_an_outcome_not_a_crash() -> None:
    fake = FakeRunner({"prepare-nodes", "install-cluster", "diagnostics"}, {"prepare-nodes": "raise-refused"})
    outcomes = fake.outcomes([])
    assert outcomes[0].status == "refused" and outcomes[0].exit_code == 2
    assert outcomes[0].line.startswith("REFUSED: prepare-nodes: another destructive run holds")
    assert [o.status for o in outcomes[1:]] == ["not run", "ok"]


def test_the_demo_s_parameters_are_parameters_of_its_notebooks() -> None:
    """Every parameter the demo passes is one the runbook declares, for each demo runbook in notebooks/."""
    present = {book.name: book for book in runner.discover(ROOT / "notebooks")}
    checked = [item.name for item in demo.RUNBOOKS if item.name in present]
    assert "diagnostics" in checked
    for name in checked:
        item = next(i for i in demo.RUNBOOKS if i.name == name)
        declared = {line.name for line in runner.parameter_lines(present[name])}
        assert set(item.parameters(DESCRIPTION)) <= declared, f"{name}: unknown {set(item.parameters(DESCRIPTION)) - declared}"
        assert present[name].destructive == DESTRUCTIVE[name], name


def test_the_demo_ends_with_the_failover_drill_on_the_lab_s_addresses_and_prints_its_table(tmp_path: Path) -> None:
    assert demo.RUNBOOKS[-1].name == "failover-test"
    assert demo.RUNBOOKS[-1].parameters(DESCRIPTION) == {
        "dry_run": False, "confirm": "lab", "dns_server": "10.213.14.1", "vip": "10.213.14.100", "vip_prefix": 24}
    out = tmp_path / "T-failover-test.ipynb"
    out.with_name("T-failover-test.summary.json").write_text(
        '{"impact": {"haproxy": {"requests": 1500, "failed": 0, "p99_ms": 120.5}}, '
        '"figure": "/runs/lab/T-failover-test.failover.png", "verdict": "lab: haproxy MEETS the bar"}')
    text = demo.failover_report([demo.Outcome("failover-test", "ok", "OK", 0, out)])
    assert "haproxy" in text and "120.5" in text and "plot: /runs/lab/T-failover-test.failover.png" in text
    assert demo.failover_report([demo.Outcome("diagnostics", "ok", "OK", 0, out)]) == ""
