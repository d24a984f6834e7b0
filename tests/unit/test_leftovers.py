"""The leftovers ledger and the failover drill's cleanup (local parts; the lab test kills a real drill)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from runbooks_lib import cli, cluster_lock, errors, failover_cleanup
from runbooks_lib.leftovers import LEDGER_DIR, Ledger


def test_ledger_records_replaces_and_forgets_atomically(tmp_path: Path) -> None:
    inventory = tmp_path / "cluster" / "hosts.yaml"
    inventory.parent.mkdir()
    book = Ledger.for_runbook(inventory, "failover-test")
    assert book.path == tmp_path / "cluster" / LEDGER_DIR / "failover-test.json"
    assert book.entries() == []
    book.record("fault", "node2", address="10.0.0.12", mode="hard", injector="command")
    book.record("keepalived", "10.0.0.100", nodes=[["node2", "10.0.0.12"], ["node1", "10.0.0.11"]])
    book.record("fault", "node2", address="10.0.0.12", mode="freeze", injector="command")  # replaces
    entries = book.entries()
    assert [(e.kind, e.target) for e in entries] == [("keepalived", "10.0.0.100"), ("fault", "node2")]
    assert entries[1].detail["mode"] == "freeze" and entries[1].pid == os.getpid()
    assert "fault on node2 (address 10.0.0.12, mode freeze, injector command), started " in entries[1].line()
    assert stat.S_IMODE(book.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(book.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in book.path.parent.iterdir()] == ["failover-test.json"]  # no temp file left
    book.done("fault", "node2")
    book.done("fault", "node2")  # idempotent
    assert [e.kind for e in book.entries()] == ["keepalived"]
    book.done("keepalived", "10.0.0.100")
    assert not book.path.exists() and book.entries() == []


def test_every_spelling_of_the_inventory_shares_one_ledger(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    a = Ledger.for_runbook(tmp_path / "real" / "hosts.yaml", "failover-test")
    b = Ledger.for_runbook(tmp_path / "link" / "." / "hosts.yaml", "failover-test")
    assert a.path == b.path


def test_a_damaged_ledger_and_a_bad_name_are_refused(tmp_path: Path) -> None:
    book = Ledger.for_runbook(tmp_path / "hosts.yaml", "failover-test")
    book.path.parent.mkdir()
    book.path.write_text("{not json")
    with pytest.raises(errors.RunbookError, match="cannot be read"):
        book.entries()
    book.path.write_text(json.dumps([{"kind": "fault"}]))
    with pytest.raises(errors.RunbookError, match="malformed"):
        book.entries()
    with pytest.raises(errors.BadParameters):
        Ledger.for_runbook(tmp_path / "hosts.yaml", "../escape")


def test_undo_goes_fault_first_keeps_what_failed_and_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = Ledger.for_runbook(tmp_path / "hosts.yaml", "failover-test")
    book.record("haproxy", "127.0.0.1:9000", pid=1, workdir="/nonexistent")
    book.record("keepalived", "10.0.0.100", nodes=[])
    book.record("fault", "node2", address="10.0.0.12", mode="hard", injector="lab")
    order: list[str] = []

    def ok(entry, p):  # type: ignore[no-untyped-def]
        order.append(entry.kind)
        return "done"

    def broken(entry, p):  # type: ignore[no-untyped-def]
        order.append(entry.kind)
        raise errors.HostUnreachable("node1 did not answer")

    monkeypatch.setattr(failover_cleanup, "_UNDO", {"fault": ok, "keepalived": broken, "haproxy": ok})
    said: list[str] = []
    with pytest.raises(errors.RunbookError) as info:
        failover_cleanup.undo(book, SimpleNamespace(), say=said.append)
    assert order == ["fault", "keepalived", "haproxy"]
    assert "keepalived on 10.0.0.100" in str(info.value) and "node1 did not answer" in str(info.value)
    assert said == ["undid fault on node2: done", "undid haproxy on 127.0.0.1:9000: done"]
    assert [(e.kind, e.target) for e in book.entries()] == [("keepalived", "10.0.0.100")]


def test_a_leftover_haproxy_is_stopped_and_a_stranger_with_its_pid_is_not(tmp_path: Path) -> None:
    workdir = tempfile.mkdtemp(prefix="runbooks-haproxy-")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", workdir], start_new_session=True)
    try:
        entry = SimpleNamespace(kind="haproxy", target="127.0.0.1:1", detail={"pid": proc.pid, "workdir": workdir})
        assert failover_cleanup._undo_haproxy(entry, None) == f"stopped pid {proc.pid}"
        assert proc.wait(timeout=10) is not None
        assert not Path(workdir).exists()
        # A pid reused by another process (its command line lacks the work directory) is left alone.
        stranger = SimpleNamespace(kind="haproxy", target="x", detail={"pid": os.getpid(), "workdir": workdir})
        assert failover_cleanup._undo_haproxy(stranger, None) == "already gone"
    finally:
        if proc.poll() is None:
            proc.kill()


def _failover_params(tmp_path: Path) -> Path:
    for name in ("hosts.yaml", "admin.conf", "id", "known_hosts"):
        (tmp_path / name).write_text("x\n")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({
        "cluster_name": "prod", "inventory": str(tmp_path / "hosts.yaml"), "kubeconfig": str(tmp_path / "admin.conf"),
        "ssh_key": str(tmp_path / "id"), "known_hosts": str(tmp_path / "known_hosts"), "app_host": "app.example.org",
        "dns_server": "192.0.2.53", "fault_injector": "manual"}))
    return path


def test_cleanup_without_leftovers_says_so_and_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cluster_lock.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv(cluster_lock.HELD_LOCK_ENV, raising=False)
    params = _failover_params(tmp_path)
    assert cli.main(["run", "failover-test", "--cleanup", "-f", str(params)]) == 0
    assert "nothing to undo: no leftovers listed" in capsys.readouterr().out
    assert not (tmp_path / LEDGER_DIR).exists()


def test_cleanup_is_refused_while_another_run_holds_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cluster_lock.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv(cluster_lock.HELD_LOCK_ENV, raising=False)
    params = _failover_params(tmp_path)
    with cluster_lock.hold(tmp_path / "hosts.yaml", "pid 55 runbook failover-test"):
        assert cli.main(["run", "failover-test", "--cleanup", "-f", str(params)]) == 2
    assert "pid 55 runbook failover-test" in capsys.readouterr().err


def test_cleanup_of_a_runbook_that_starts_nothing_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "diagnostics", "--cleanup"]) == 2
    assert "has no --cleanup" in capsys.readouterr().err


