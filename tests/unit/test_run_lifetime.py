"""A run's lifetime: the cluster lock's key and refusal, and the process helpers of runbooks_lib.run_lifetime.

Real but tiny processes (sleep, a Python child); no kernel, no network.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from runbooks_lib import cli, cluster_lock, errors, run_lifetime, runner
from tests.waiting import wait_until

LINUX_ONLY = pytest.mark.skipif(not run_lifetime.SUPPORTED, reason="needs Linux /proc and prctl")


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private lock directory (the shared /run/lock/runbooks stays untouched)."""
    monkeypatch.setenv(cluster_lock.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv(cluster_lock.HELD_LOCK_ENV, raising=False)
    return tmp_path / "locks"


# --------------------------------------------------------------------------- the lock's key and place


def test_one_inventory_spelled_three_ways_has_one_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "clusters" / "prod" / "hosts.yaml"
    real.parent.mkdir(parents=True)
    real.write_text("all: {}\n")
    link = tmp_path / "checkout-b" / "inventory"
    link.parent.mkdir()
    link.symlink_to(real.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path / "clusters")
    spellings = [real, link / "hosts.yaml", "prod/../prod/hosts.yaml", f"{tmp_path}/clusters/./prod/hosts.yaml"]
    assert len({cluster_lock.lock_key(s) for s in spellings}) == 1


def test_different_inventories_have_different_keys(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "hosts.yaml", tmp_path / "b" / "hosts.yaml"
    assert cluster_lock.lock_key(a) != cluster_lock.lock_key(b)
    assert len(cluster_lock.lock_key(a)) == 32


def test_lock_path_is_in_the_lock_directory_named_by_the_key(locks: Path, tmp_path: Path) -> None:
    path = cluster_lock.lock_path(tmp_path / "hosts.yaml")
    assert path == locks / f"inventory-{cluster_lock.lock_key(tmp_path / 'hosts.yaml')}.lock"
    assert locks.is_dir()


def test_lock_dir_falls_back_when_run_lock_is_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cluster_lock.LOCK_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir()
    missing_parent = tmp_path / "no-such-dir" / "runbooks"
    monkeypatch.setattr(cluster_lock, "LOCK_DIRS", (str(missing_parent), "${XDG_RUNTIME_DIR}/runbooks-locks",
                                              str(tmp_path / "tmp-locks")))
    assert cluster_lock.lock_dir() == tmp_path / "xdg" / "runbooks-locks"
    assert (tmp_path / "xdg" / "runbooks-locks").stat().st_mode & 0o777 == 0o700  # per user
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    shared = cluster_lock.lock_dir()
    assert shared == tmp_path / "tmp-locks"
    assert shared.stat().st_mode & 0o1777 == 0o1777  # every user's runs share it


def test_lock_dir_refuses_when_nothing_is_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cluster_lock.LOCK_DIR_ENV, raising=False)
    monkeypatch.setattr(cluster_lock, "LOCK_DIRS", (str(tmp_path / "x" / "y"),))
    with pytest.raises(errors.RunRefused, match="no usable lock directory"):
        cluster_lock.lock_dir()


# --------------------------------------------------------------------------- holding and refusing


def test_second_holder_is_refused_naming_runbook_pid_start_and_output(locks: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yaml"
    holder = "pid 4242 runbook add-worker since 20260101T000000Z output /srv/a/runs/prod/x-add-worker.ipynb"
    with cluster_lock.hold(inventory, holder) as held:
        assert held.path.read_text() == f"{holder} inventory {os.path.realpath(inventory)}\n"
        with pytest.raises(errors.RunRefused) as info:
            cluster_lock.hold(tmp_path / "." / "hosts.yaml", "pid 1 runbook other")
        message = str(info.value)
        for part in ("another destructive run holds", "runbook add-worker", "pid 4242",
                     "since 20260101T000000Z", "output /srv/a/runs/prod/x-add-worker.ipynb", str(held.path)):
            assert part in message
    assert held.path.read_text() == ""  # released and emptied
    with cluster_lock.hold(inventory, "pid 2 runbook again"):
        pass


def test_refusal_message_without_a_holder_line() -> None:
    assert "unknown holder" in cluster_lock.refusal(Path("/run/lock/runbooks/x.lock"), "", "the lock of inventory /i")


def test_the_kernel_of_a_run_holding_the_lock_does_not_take_it_again(locks: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = tmp_path / "hosts.yaml"
    with cluster_lock.hold(inventory, "pid 1 runbook outer") as outer:
        monkeypatch.setenv(cluster_lock.HELD_LOCK_ENV, str(outer.path))
        inner = cluster_lock.hold(inventory, "pid 2 runbook inner")
        assert inner.fd == -1
        inner.release()
        assert "runbook outer" in outer.path.read_text()


def test_a_gate_holds_the_lock_until_its_process_ends_and_a_second_gate_is_refused(locks: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yaml"
    script = textwrap.dedent(f"""
        import sys, time
        from runbooks_lib import cluster_lock
        cluster_lock.hold_for_session({str(inventory)!r}, "runbook remove-worker")
        cluster_lock.hold_for_session({str(inventory)!r}, "runbook remove-worker")  # the gate cell run again
        print("held", flush=True)
        sys.stdin.read()
    """)
    env = {**os.environ, cluster_lock.LOCK_DIR_ENV: str(locks)}
    env.pop(cluster_lock.HELD_LOCK_ENV, None)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, cwd=Path(__file__).resolve().parents[2], text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(errors.RunRefused) as info:
            cluster_lock.hold_for_session(inventory, "runbook add-worker")
        assert f"pid {proc.pid} runbook remove-worker since " in str(info.value)
        assert "interactive" in str(info.value)
    finally:
        proc.communicate("", timeout=30)
    with cluster_lock.hold(inventory, "pid 3 runbook after") as after:  # the kernel ended: free again
        assert after.fd >= 0


def _book(directory: Path, stem: str, *, destructive: bool = False, locks: bool | None = None) -> runner.Runbook:
    nb = nbformat.v4.new_notebook()
    meta: dict[str, object] = {"description": "test", "destructive": destructive}
    if locks is not None:
        meta["locks"] = locks
    nb.metadata["runbook"] = meta
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell('cluster_name: str = "unit"  # c\ninventory: Path = ""  # i\n')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("from pathlib import Path"), cell,
                nbformat.v4.new_code_cell("print('ran')")]
    directory.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, directory / f"{stem}.ipynb")
    return runner.find(stem, directory)


def test_which_runbooks_take_the_lock(tmp_path: Path) -> None:
    assert runner.takes_lock(_book(tmp_path, "10-wipe", destructive=True))
    assert runner.takes_lock(_book(tmp_path, "60-etcd-snapshot"))  # by name: its retention deletes files
    assert runner.takes_lock(_book(tmp_path, "20-tidy", locks=True))
    assert not runner.takes_lock(_book(tmp_path, "30-diagnostics"))


def test_run_is_refused_by_the_inventory_lock_from_another_runs_folder(
        locks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _book(tmp_path / "nb", "10-wipe", destructive=True)
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("all: {}\n")
    holder = "pid 777 runbook install-cluster since 20260101T000000Z output /elsewhere/runs/a/x.ipynb"
    with cluster_lock.hold(inventory, holder):
        rc = cli.main(["run", "wipe", "--notebooks-dir", str(tmp_path / "nb"), "--runs-dir", str(tmp_path / "runs"),
                       "-p", "cluster_name", "other-name", "-p", "inventory", str(tmp_path / "." / "hosts.yaml"),
                       "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("REFUSED: wipe:") and "runbook install-cluster" in err and "pid 777" in err
    assert not list((tmp_path / "runs").rglob("*.ipynb"))


# --------------------------------------------------------------------------- /proc helpers


def test_parse_stat_copes_with_spaces_and_parentheses_in_the_name() -> None:
    fields = " ".join(["S", "41"] + ["0"] * 17 + ["987654"] + ["0"] * 10)
    proc = run_lifetime.parse_stat(f"1234 (a (weird) name) {fields}")
    assert proc == run_lifetime.Proc(pid=1234, ppid=41, state="S", start=987654)


def test_descendants_follow_parents_and_skip_zombies_and_excluded() -> None:
    P = run_lifetime.Proc
    procs = {1: P(1, 0, "S", 1), 10: P(10, 1, "S", 2), 11: P(11, 10, "S", 3), 12: P(12, 11, "Z", 4),
             13: P(13, 12, "S", 5), 20: P(20, 1, "S", 6), 21: P(21, 10, "S", 7)}
    assert run_lifetime.descendants(procs, [10]) == {10, 11, 13, 21}
    assert run_lifetime.descendants(procs, [10], exclude=[21]) == {10, 11, 13}
    assert run_lifetime.descendants(procs, [99]) == set()


@LINUX_ONLY
def test_own_stat_and_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    me = run_lifetime.processes()[os.getpid()]
    assert me.ppid == os.getppid() and me.state in "RS"
    child = subprocess.Popen(["sleep", "30"], env={**os.environ, "RLT_UNIT": "yes"})
    try:
        assert wait_until(lambda: run_lifetime.environ_has(child.pid, b"RLT_UNIT=yes"), 5, "child environ")
        assert not run_lifetime.environ_has(child.pid, b"RLT_UNIT=no")
    finally:
        child.kill()
        child.wait()


@LINUX_ONLY
def test_subreaper_can_be_set_and_restored() -> None:
    before = run_lifetime.set_subreaper(True)
    assert before is not None
    try:
        assert run_lifetime.set_subreaper(True) is True
    finally:
        run_lifetime.set_subreaper(before)


def _alive(pid: int) -> bool:
    proc = run_lifetime._stat(pid)
    return proc is not None and proc.state != "Z"


@LINUX_ONLY
def test_local_run_children_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: SIGKILL of the caller takes its local.run child along, not left with parent 1."""
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import os, threading
        from runbooks_lib import local
        def go():
            local.run(["sh", "-c", "echo $$ > {pidfile}; exec sleep 300"], timeout=600)
        t = threading.Thread(target=go)
        t.start()
        t.join()
    """)
    caller = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit(), 15, "the child's pid")
        child = int(pidfile.read_text())
        assert _alive(child)
        caller.send_signal(signal.SIGKILL)
        caller.wait(5)
        wait_until(lambda: not _alive(child), 5, f"pid {child} to die with its parent")
    finally:
        caller.kill()
        caller.wait()


@LINUX_ONLY
def test_guard_stops_a_setsid_process_of_the_run_and_nothing_else() -> None:
    guard = run_lifetime.RunGuard(term_grace=2, kill_wait=5, extra_env={"RLT_EXTRA": "1"})
    assert guard.env == {run_lifetime.MARKER_ENV: guard.run_id, "RLT_EXTRA": "1"}
    outsider = subprocess.Popen(["sleep", "60"])  # not given the run's environment: not the run's
    try:
        with guard:
            assert run_lifetime.MARKER_ENV not in os.environ  # only the kernel (or whom it is given) carries it
            # not a group leader: setsid(2), then exec, as Ansible's workers
            worker = subprocess.Popen(["setsid", "sleep", "61"], env={**os.environ, **guard.env})
            wait_until(lambda: worker.pid in guard.members(), 5, "the run's process to carry the marker")
            assert outsider.pid not in guard.members()
            assert guard.watchdog_pid is not None and guard.watchdog_pid not in guard.members()
            watchdog = guard.watchdog_pid
        assert worker.wait(5) is not None
        assert guard.all_gone and guard.signum is None
        assert not _alive(watchdog)
        assert outsider.poll() is None
    finally:
        outsider.kill()
        outsider.wait()


@LINUX_ONLY
def test_guard_execute_returns_the_exception_of_the_work() -> None:
    with run_lifetime.RunGuard() as guard:
        started = time.monotonic()
        failure = guard.execute(lambda: 1 / 0)
    assert isinstance(failure, ZeroDivisionError) and time.monotonic() - started < 5
    with run_lifetime.RunGuard() as guard:
        assert guard.execute(lambda: None) is None


def test_signal_name() -> None:
    assert runner.signal_name(signal.SIGTERM) == "SIGTERM" and runner.signal_name(999) == "signal 999"


def test_a_descendant_started_to_outlive_the_run_is_left_with_its_subtree() -> None:
    """A lab machine booted inside a run (no marker) and the processes in it are not the run's."""
    from runbooks_lib.run_lifetime import Proc, descendants

    procs = {pid: Proc(pid, ppid, "S", 0) for pid, ppid in
             ((10, 1), (11, 10), (12, 11), (20, 10), (21, 20), (22, 21))}
    outlives = {20}  # 20: nspawn started with outlives_run; 21, 22: the machine's init and its services
    assert descendants(procs, [10]) == {10, 11, 12, 20, 21, 22}
    assert descendants(procs, [10], opted_out=lambda pid: pid in outlives) == {10, 11, 12}
    assert descendants(procs, [20], opted_out=lambda pid: pid in outlives) == {20, 21, 22}  # a seed is never skipped
