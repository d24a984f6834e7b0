"""A lab machine's processes: systemd-nspawn booting it, its init, and stopping it.

Process IDs are recorded in the machine's directory when it starts
(``nspawn.pid``, ``init.pid`` and ``init.start``, the init's start time from
/proc, which guards against PID reuse); nothing is found by matching command
lines. Everything here needs root.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from runbooks_lib import local
from runbooks_lib.errors import LabError, WaitTimedOut
from runbooks_lib.waits import wait_for

# How long systemd-nspawn may take to start the machine's init.
INIT_TIMEOUT_S = 60.0


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def init_pid(mdir: Path) -> int | None:
    """The PID of the machine's systemd if it is alive (it is the leader of its PID namespace)."""
    pid = read_int(mdir / "init.pid")
    if pid is None:
        return None
    start = (mdir / "init.start").read_text().strip() if (mdir / "init.start").exists() else ""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z" or fields[19] != start:  # gone, zombie, or the PID was reused
        return None
    return pid


def boot(mdir: Path, argv: Sequence[str], name: str) -> int:
    """Start systemd-nspawn (``argv``) for machine ``name``; record and return its init's PID.

    nspawn runs in its own process group with its output in ``console.log``
    and outlives this call. Raises LabError when nspawn exits early (with the
    console's tail), WaitTimedOut when no init appears within
    :data:`INIT_TIMEOUT_S` (nspawn is killed then).
    """
    proc = local.start(argv, log_path=mdir / "console.log", outlives_run=True)  # a machine outlives the run that booted it
    (mdir / "nspawn.pid").write_text(f"{proc.pid}\n")
    init: list[int] = []

    def init_started() -> tuple[bool, str]:
        # nspawn first forks a helper in the host's PID namespace, which exits once
        # it has started init; that helper must not be mistaken for the machine.
        code = proc.poll()
        if code is not None:
            raise LabError(f"{name}: systemd-nspawn exited with {code}", stderr=proc.log_tail(30),
                           fix="see the console log in the machine's state directory")
        child = namespaced_child(proc.pid)
        if child:
            init.append(child)
        return bool(child), f"{name}: no init in a new PID namespace under nspawn {proc.pid} yet"

    try:
        wait_for(init_started, timeout=INIT_TIMEOUT_S, interval=0.05, what=f"{name}'s init to start",
                 fix="retry `runbooks lab up`; see console.log in the machine's state directory")
    except WaitTimedOut:
        kill_tree(proc.pid)
        raise
    (mdir / "init.pid").write_text(f"{init[0]}\n")
    (mdir / "init.start").write_text(_stat_fields(init[0])[19])  # type: ignore[index]
    return init[0]


def kill(mdir: Path) -> None:
    """Stop the machine at once: SIGKILL of its init takes its whole PID namespace down.

    Waits (bounded) for nspawn to exit and forgets the recorded init.
    """
    init = init_pid(mdir)
    nspawn = read_int(mdir / "nspawn.pid")
    if init is None and nspawn and is_nspawn(nspawn):
        init = namespaced_child(nspawn)  # booted, but its init was never recorded
    if init:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGCONT)
            os.kill(init, signal.SIGKILL)
    if nspawn:
        wait_exit(nspawn, 10)
    (mdir / "frozen").unlink(missing_ok=True)
    (mdir / "init.pid").unlink(missing_ok=True)


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (reaped here if it is our child, or a zombie of another parent)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return bool(done)
    except ChildProcessError:
        fields = _stat_fields(pid)
        return fields is None or fields[0] == "Z"


def wait_exit(pid: int, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``pid`` to exit, then SIGKILL it."""
    try:
        wait_for(lambda: _gone(pid), timeout=timeout, interval=0.05, what=f"process {pid} to exit")
    except WaitTimedOut:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def signal_namespace(init: int, sig: signal.Signals) -> None:
    """Send ``sig`` to every process in the PID namespace led by ``init``."""
    target = os.readlink(f"/proc/{init}/ns/pid")
    for _ in range(3):  # repeat: processes may fork while we go
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns/pid") == target:
                    os.kill(int(entry.name), sig)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in task.read_text().split()]
    return found


def namespaced_child(pid: int) -> int | None:
    """A child of ``pid`` in another PID namespace (the machine's init), if there is one."""
    try:
        own = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
    for child in children(pid):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{child}/ns/pid") != own:
                return child
    return None


def is_nspawn(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn"
    except OSError:
        return False


def kill_tree(pid: int) -> None:
    for child in children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
