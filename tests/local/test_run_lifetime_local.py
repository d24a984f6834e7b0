"""A real ``runbooks run`` of a tiny destructive runbook, killed while its command runs.

The runbook's one cell starts ``setsid sleep 312`` from the kernel and runs a
real ``ansible-playbook`` (the venv's, against localhost over the local
connection) through ``local.run``; the playbook's one task is ``command: sleep
311``. The run is killed while that task runs: ansible-playbook's worker has
called setsid, so the module and its ``sleep 311`` are outside the session
``local.run`` started. After SIGTERM, SIGHUP or SIGKILL to the ``runbooks run``
process, none of them (ansible-playbook, its worker, the module, the sleeps) may
survive, and the cluster lock (keyed by the inventory's real path) must stay
held until they are gone.
A second run on the same inventory, from another runs folder under another
cluster name and another spelling of the path, is refused naming the holder.

Every process of a run carries a unique marker in its environment; the
finalizers kill whatever still carries it.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from runbooks_lib import cluster_lock
from tests.waiting import wait_until

pytestmark = [pytest.mark.local, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")]

ROOT = Path(__file__).resolve().parents[2]
MARK = "RUNBOOKS_TEST_RUN_MARK"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
TASK_SLEEP = "sleep 311"  # the playbook's task
KERNEL_SLEEP = "sleep 312"  # the kernel's own child
STARTUP_S = 60  # kernel start, ansible-playbook start and its task reaching the command
CLEANUP_S = 30  # the bound on everything of a run being gone after the signal

PLAYBOOK = f"""- hosts: localhost
  gather_facts: false
  tasks:
    - name: Sleep
      ansible.builtin.command: {TASK_SLEEP}
"""

CELL = """import subprocess
from runbooks_lib import local
subprocess.Popen(["setsid", "sleep", "312"])  # a kernel child in its own session
local.run({command!r}, cwd={cwd!r}, env={env!r}, timeout=600)
"""


def _cell(base: Path) -> str:
    """The cell that runs the sleeping playbook: its file and Ansible's temp dirs are under ``base``."""
    playbook = base / "playbook" / "sleep.yml"
    playbook.parent.mkdir(parents=True)
    playbook.write_text(PLAYBOOK)
    home = base / "ansible"
    env = {"ANSIBLE_HOME": home, "ANSIBLE_LOCAL_TEMP": home / "local-tmp", "ANSIBLE_REMOTE_TEMP": home / "remote-tmp",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    command = [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}", playbook]
    return CELL.format(command=[str(part) for part in command], cwd=str(playbook.parent),
                       env={key: str(value) for key, value in env.items()})


def _notebook(directory: Path, cell: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["runbook"] = {"description": "Sleeps (a test runbook)", "destructive": True}
    params = nbformat.v4.new_code_cell('cluster_name: str = "unit"  # which cluster\n'
                                       'inventory: Path = ""  # the inventory file\n')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("from pathlib import Path"), params, nbformat.v4.new_code_cell(cell)]
    directory.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, directory / "10-sleepy.ipynb")


def _marked(marker: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment carries ``MARK=marker``."""
    entry = f"{MARK}={marker}".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if entry not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                found[int(name)] = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return found


def _lock_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also releases it when we got it
    return True


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not; its parent has yet to collect it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _session(pid: int) -> int:
    """The session id of ``pid`` (/proc/PID/stat: state, ppid, pgrp, session)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[3])


def _kill_marked(marker: str) -> None:
    for pid in _marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Site:
    """One tmp directory: the runbook and its playbook, an inventory (and a symlink to it), runs folders,
    a private lock dir."""

    def __init__(self, base: Path) -> None:
        if not ANSIBLE_PLAYBOOK.is_file():
            pytest.fail(f"{ANSIBLE_PLAYBOOK} missing: install ansible-core into the venv")
        self.base = base
        _notebook(base / "notebooks", _cell(base))
        (base / "clusters" / "prod").mkdir(parents=True)
        self.inventory = base / "clusters" / "prod" / "hosts.yaml"
        self.inventory.write_text("all: {}\n")
        (base / "checkout-b").mkdir()
        (base / "checkout-b" / "inventory").symlink_to(self.inventory.parent, target_is_directory=True)
        self.inventory_link = base / "checkout-b" / "inventory" / "hosts.yaml"
        self.locks = base / "locks"
        self.procs: list[tuple[subprocess.Popen[bytes], str]] = []

    def lock_file(self) -> Path:
        """The inventory's lock file (what cluster_lock.lock_path gives with this site's lock directory)."""
        return self.locks / f"inventory-{cluster_lock.lock_key(self.inventory)}.lock"

    def command(self, runs: str, cluster: str, inventory: Path) -> list[str]:
        return [sys.executable, "-m", "runbooks_lib.cli", "run", "sleepy",
                "--notebooks-dir", str(self.base / "notebooks"), "--runs-dir", str(self.base / runs),
                "-p", "cluster_name", cluster, "-p", "inventory", str(inventory), "--no-progress",
                "--cell-timeout", "120"]

    def env(self, marker: str) -> dict[str, str]:
        dropped = ("RUNBOOKS_RUN_ID", cluster_lock.HELD_LOCK_ENV, "RUNBOOKS_NOTEBOOKS_DIR", "RUNBOOKS_RUNS_DIR")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        return {**env, MARK: marker, cluster_lock.LOCK_DIR_ENV: str(self.locks), "PYTHONPATH": str(ROOT)}

    def start(self, runs: str = "runs-a", cluster: str = "alpha") -> tuple[subprocess.Popen[bytes], str]:
        marker = uuid.uuid4().hex
        log = self.base / f"{marker}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(self.command(runs, cluster, self.inventory), cwd=ROOT, env=self.env(marker),
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append((proc, marker))

        def running() -> tuple[bool, str]:
            if proc.poll() is not None:
                raise AssertionError(f"runbooks run exited {proc.returncode}:\n{log.read_text()}")
            commands = set(_marked(marker).values())
            missing = [s for s in (TASK_SLEEP, KERNEL_SLEEP) if s not in commands]
            return not missing, f"not yet running: {', '.join(missing)}"

        wait_until(running, STARTUP_S, "the playbook's task and the kernel's child to run", 0.2)
        return proc, marker

    def log(self, marker: str) -> str:
        return (self.base / f"{marker}.log").read_text(errors="replace")

    def cleanup(self) -> None:
        for proc, marker in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            _kill_marked(marker)
            _kill_marked(marker)  # what the first pass orphaned


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_a_killed_run_leaves_no_process_and_holds_the_lock_until_they_are_gone(site: Site, sig: signal.Signals) -> None:
    proc, marker = site.start()
    lock = site.lock_file()
    assert lock.exists() and not _lock_free(lock), "a destructive run holds the inventory's lock"
    assert f"pid {proc.pid} runbook sleepy" in lock.read_text()
    children = {pid: cmd for pid, cmd in _marked(marker).items() if pid != proc.pid}
    ansible = {pid for pid, cmd in children.items() if "ansible-playbook" in cmd}
    task = next(pid for pid, cmd in children.items() if cmd == TASK_SLEEP)
    assert len(ansible) >= 2, f"ansible-playbook and its worker: {children}"
    assert _session(task) in ansible and len({_session(pid) for pid in ansible}) >= 2, \
        f"the task runs in the session of ansible-playbook's worker, not of the command local.run started: {children}"

    proc.send_signal(sig)

    def ended() -> tuple[bool, str]:
        free = _lock_free(lock)  # first the lock, then who is left: nothing of the run may outlive the lock
        left = {pid: cmd for pid, cmd in _marked(marker).items() if pid != proc.pid}
        if free and left:
            raise AssertionError(f"the lock was free while processes of the run lived: {left}")
        return free and not left and proc.poll() is not None, f"lock free: {free}; left: {sorted(left.values())}"

    wait_until(ended, CLEANUP_S, f"every process of the run to end after {sig.name}", 0.05)
    assert not _marked(marker), "nothing carries the run's marker any more"
    assert not [cmd for pid, cmd in children.items() if _alive(pid)]
    output = site.log(marker)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert lock.read_text() == "", "the watchdog emptied the holder line"
    else:
        assert proc.returncode == 128 + sig, output
        assert "FAILED: sleepy on alpha" in output and f"stopped by {sig.name}" in output, output
        assert lock.read_text() == ""
        record = next((site.base / "runs-a" / "alpha").glob("*-sleepy.summary.json"))
        assert f'"exit_code": {128 + sig}' in record.read_text()


def test_a_second_run_on_the_same_inventory_is_refused_from_another_runs_folder(site: Site) -> None:
    first, marker = site.start(runs="runs-a", cluster="alpha")
    output = next((site.base / "runs-a" / "alpha").glob("*-sleepy.ipynb"))
    second = subprocess.run(site.command("runs-b", "beta", site.inventory_link), cwd=ROOT,
                            env=site.env(uuid.uuid4().hex), capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second.stdout + second.stderr
    err = second.stderr
    assert err.startswith("REFUSED: sleepy: another destructive run holds the lock of inventory"), err
    for part in (f"pid {first.pid}", "runbook sleepy", "since ", f"output {output}"):
        assert part in err, (part, err)
    assert not (site.base / "runs-b" / "beta").exists() or not list((site.base / "runs-b").rglob("*.ipynb"))
    first.send_signal(signal.SIGTERM)
    assert first.wait(CLEANUP_S) == 128 + signal.SIGTERM
    wait_until(lambda: not _marked(marker), CLEANUP_S, "the first run's processes to end")


def test_a_dead_kernel_fails_the_run_and_its_orphans_are_stopped(site: Site) -> None:
    """SIGKILL of the kernel: its command dies with it (parent-death signal), the setsid ones re-parent to
    the runner (child subreaper) and are stopped when the run ends; the run fails (exit 1)."""
    proc, marker = site.start()
    kernels = [pid for pid, cmd in _marked(marker).items() if "ipykernel" in cmd]
    assert len(kernels) == 1, _marked(marker)
    os.kill(kernels[0], signal.SIGKILL)
    assert proc.wait(CLEANUP_S) == 1, site.log(marker)
    assert "FAILED: sleepy on alpha" in site.log(marker)
    wait_until(lambda: not _marked(marker), 5, "the run's processes to be gone")
    assert _lock_free(site.lock_file())
