"""A run's processes end with the run, however it ends (Linux).

``runbooks run`` executes a notebook in a Jupyter kernel; the kernel starts
commands through :func:`runbooks_lib.local.run` (each in its own session so a
timeout can kill its group), and those start more (Ansible's workers call
``setsid``). None of that follows the runner when it is killed, so this
module gives a run four things:

- a **marker**: ``RUNBOOKS_RUN_ID=<id>`` in the environment the kernel is
  started with (not in the runner's own ``os.environ``: other threads of a
  process that calls ``runner.run`` must not be taken for the run), inherited
  by everything the kernel starts; a process of the run is one that carries
  it (``/proc/PID/environ``), a descendant of one that does, or a descendant
  of the kernel;
- **child subreaper** (``prctl(PR_SET_CHILD_SUBREAPER)``) on the runner for
  the run's duration, so orphans of the run (a killed ``ansible-playbook``'s
  workers, a daemonized ``ssh`` master) re-parent to it, not to init;
- a **parent-death signal** (``PR_SET_PDEATHSIG=SIGKILL``) for the kernel and
  for every command :func:`runbooks_lib.local.run` starts, through
  :func:`pdeathsig_preexec`;
- a **watchdog**: a tiny process in its own session (``python run_lifetime.py
  watch ...``) that holds a duplicate of the run lock's descriptor and a pipe
  from the runner. When the pipe closes (the runner finished, or died, even by
  SIGKILL) it kills whatever of the run is left, waits until it is all gone
  and only then exits, which releases the lock (``flock`` locks belong to the
  open file, so the lock lives while either holder does).

:class:`RunGuard` ties these together and executes the notebook in a worker
thread so that the main thread keeps SIGINT, SIGTERM and SIGHUP: any of them
stops the run's processes (SIGTERM, then SIGKILL after a grace period) before
the runner returns. Elsewhere than Linux, the prctl calls and the /proc
sweep are skipped and :data:`SUPPORTED` is false: a killed run may leave
children there (a warning says so once).

This file only imports the standard library: the watchdog runs it as a script.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MARKER_ENV = "RUNBOOKS_RUN_ID"
SUPPORTED = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
TERM_GRACE_S = 5.0  # after SIGTERM to the run's processes, how long before SIGKILL
KILL_WAIT_S = 10.0  # after SIGKILL, how long the runner waits before leaving the rest to the watchdog
WORKER_JOIN_S = 20.0  # after a signal and the sweep, how long the runner waits for the notebook thread
WATCHDOG_EXIT_S = 5.0  # how long the runner waits for the watchdog once the run's processes are gone

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

_prctl_fn: Any = None
_warned = False


def _prctl() -> Any:
    """libc's prctl (argtypes set), or None off Linux or when libc cannot be loaded."""
    global _prctl_fn
    if _prctl_fn is None and SUPPORTED:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.prctl
            fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
            fn.restype = ctypes.c_int
            _prctl_fn = fn
        except (OSError, AttributeError):
            _prctl_fn = False
    return _prctl_fn or None


def warn_unsupported() -> None:
    """Say once, on stderr, that a killed run may leave processes behind on this platform."""
    global _warned
    if not SUPPORTED and not _warned:
        _warned = True
        print(f"runbooks: on {sys.platform} a killed run may leave its child processes running "
              "(parent-death signals, subreaper and /proc are Linux only)", file=sys.stderr)


def set_subreaper(on: bool) -> bool | None:
    """Make this process a child subreaper (or not); return the previous setting, None when unsupported."""
    prctl = _prctl()
    if prctl is None:
        return None
    previous = ctypes.c_int(0)
    if prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(previous), 0, 0, 0):
        return None
    if prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0):
        return None
    return bool(previous.value)


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child SIGKILL when the thread that starts it ends; None off Linux.

    Linux sends the parent-death signal when the *thread* that forked the
    child exits, not the process. :func:`runbooks_lib.local.run` starts and
    waits in the same call, so the forking thread outlives the child;
    :class:`RunGuard` starts the kernel from its notebook thread, which lives
    exactly as long as the run. The setting survives ``exec`` (not of a
    set-user-ID program such as sudo) and is not inherited by forks, which is
    why the sweep and the watchdog exist. Compatible with
    ``start_new_session=True`` (setsid runs first). If the parent died before
    the prctl took effect, the child exits at once.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)

    return preexec


# --------------------------------------------------------------------------- /proc


@dataclasses.dataclass(frozen=True)
class Proc:
    """One process as /proc/PID/stat shows it; ``start`` (clock ticks after boot) makes pid+start unique."""

    pid: int
    ppid: int
    state: str
    start: int


def parse_stat(text: str) -> Proc:
    """A Proc from the text of /proc/PID/stat (the command name may hold spaces and parentheses). Pure."""
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    return Proc(int(head.split("(", 1)[0]), int(fields[1]), fields[0], int(fields[19]))


def _stat(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            return parse_stat(fh.read())
    except (OSError, ValueError, IndexError):
        return None


def processes() -> dict[int, Proc]:
    """Every visible process by pid (empty off Linux)."""
    if not SUPPORTED:
        return {}
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            proc = _stat(int(name))
            if proc is not None:
                found[proc.pid] = proc
    return found


def environ_has(pid: int, entry: bytes) -> bool:
    """Whether /proc/PID/environ holds ``entry`` (``b"NAME=value"``); False when unreadable or gone."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return entry in fh.read().split(b"\0")
    except OSError:
        return False


def marker_entry(run_id: str) -> bytes:
    """The environment entry that marks a run's processes."""
    return f"{MARKER_ENV}={run_id}".encode()


def descendants(procs: Mapping[int, Proc], seeds: Iterable[int], exclude: Iterable[int] = (),
                opted_out: Callable[[int], bool] | None = None) -> set[int]:
    """``seeds`` and every process whose parent chain leads to one, minus ``exclude`` and zombies.

    A descendant for which ``opted_out`` is true is left out with everything
    below it (a machine booted by the run, started without the run's marker).
    Pure apart from what ``opted_out`` reads.
    """
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    skip, found, stack = set(exclude), set(), list(seeds)
    seeded = set(stack)
    while stack:
        pid = stack.pop()
        if pid in found or pid in skip or pid not in procs:
            continue
        if pid not in seeded and opted_out is not None and opted_out(pid):
            continue
        if procs[pid].state != "Z":
            found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def members(entry: bytes | None, *, roots: Iterable[int] = (), exclude: Iterable[int] = ()) -> dict[int, Proc]:
    """The live processes of a run: carrying ``entry`` in their environment, under ``roots``, and their descendants."""
    procs = processes()
    skip = set(exclude)
    seeds = [pid for pid, p in procs.items() if pid not in skip and p.state != "Z"
             and entry is not None and environ_has(pid, entry)]

    def opted_out(pid: int) -> bool:  # started to outlive the run (local.start(outlives_run=True)): no marker
        return entry is not None and procs[pid].state != "Z" and not environ_has(pid, entry)

    return {pid: procs[pid] for pid in descendants(procs, [*seeds, *roots], skip, opted_out)}


def _signal(proc: Proc, sig: int) -> None:
    """Send ``sig`` to ``proc`` unless its pid now names another process (pidfd where available)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    fd = None
    try:
        if pidfd_open is not None:
            try:
                fd = pidfd_open(proc.pid)
            except OSError:
                fd = None
        now = _stat(proc.pid)
        if now is None or now.start != proc.start:
            return  # gone, or the pid was reused
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    finally:
        if fd is not None:
            os.close(fd)


def _reap(pids: Iterable[int]) -> None:
    """Collect exit statuses of our own dead children among ``pids`` (orphans re-parented to this subreaper)."""
    me = os.getpid()
    for pid in pids:
        proc = _stat(pid)
        if proc is not None and proc.ppid == me and proc.state == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def sweep(find: Callable[[], dict[int, Proc]], *, term_grace: float = TERM_GRACE_S,
          kill_wait: float | None = KILL_WAIT_S, interval: float = 0.1) -> dict[int, Proc]:
    """Stop every process ``find`` returns: SIGTERM, SIGKILL after ``term_grace``, until none is left.

    ``kill_wait`` bounds the wait after SIGKILL (None: wait until they are
    gone). Processes that appear meanwhile get the same treatment. Returns
    those still alive at the end (empty when all are gone).
    """
    found = find()
    if not found:
        return {}
    seen: set[int] = set()
    termed: set[tuple[int, int]] = set()
    started = time.monotonic()
    while found:
        seen.update(found)
        late = time.monotonic() - started >= term_grace
        for proc in found.values():
            if late or (proc.pid, proc.start) not in termed:
                _signal(proc, signal.SIGKILL if late else signal.SIGTERM)
                termed.add((proc.pid, proc.start))
        if kill_wait is not None and time.monotonic() - started >= term_grace + kill_wait:
            break
        time.sleep(interval)
        _reap(seen)
        found = find()
    _reap(seen)
    return found


# --------------------------------------------------------------------------- the runner's guard


class RunGuard:
    """The lifetime of one run's processes; use as a context manager around :meth:`execute`.

    On entry: subreaper on, the watchdog started (holding ``lock_fds``, the
    run lock's descriptors), SIGINT/SIGTERM/SIGHUP handlers when in the main
    thread. ``env`` (the marker and ``extra_env``) goes into the kernel's
    environment (:meth:`kernel_manager_class`) or any process given it. On
    exit (always): every process of the run stopped, the watchdog told to
    finish, handlers and subreaper setting restored. ``signum`` is
    the signal that stopped the run (None if none did); ``all_gone`` is False
    when processes of the run outlived the bounded wait: the watchdog then
    keeps the lock until they are gone (and empties the lock files then).
    """

    def __init__(self, *, lock_fds: Iterable[int] = (), extra_env: Mapping[str, str] | None = None,
                 term_grace: float = TERM_GRACE_S, kill_wait: float = KILL_WAIT_S) -> None:
        self.run_id = f"{os.getpid()}-{secrets.token_hex(8)}"
        self.entry = marker_entry(self.run_id)
        self.signum: int | None = None
        self.all_gone = True
        self.kernels: list[Proc] = []
        self._fds = tuple(lock_fds)
        self.env = {MARKER_ENV: self.run_id, **(extra_env or {})}
        self._term_grace, self._kill_wait = term_grace, kill_wait
        self._handlers: dict[int, Any] = {}
        self._subreaper: bool | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._pipe_w: int | None = None

    # -- entry and exit

    def __enter__(self) -> RunGuard:
        warn_unsupported()
        self._subreaper = set_subreaper(True)
        self._start_watchdog()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            left = self.stop()
            self.all_gone = self._finish_watchdog(wait=not left) and not left
            if left:
                print(f"runbooks: {len(left)} process(es) of the run outlived SIGKILL ({', '.join(map(str, left))}); "
                      f"the watchdog (pid {self.watchdog_pid}) keeps the lock until they are gone", file=sys.stderr)
        finally:
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            if self._subreaper is not None:
                set_subreaper(self._subreaper)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    # -- the run's processes

    def members(self) -> dict[int, Proc]:
        """The run's live processes now (not this process, not the watchdog)."""
        exclude = {os.getpid(), *([self._watchdog.pid] if self._watchdog else [])}
        kernels = [k.pid for k in self.kernels if (now := _stat(k.pid)) is not None and now.start == k.start]
        return members(self.entry, roots=kernels, exclude=exclude)

    def stop(self) -> dict[int, Proc]:
        """Stop the run's processes (SIGTERM, then SIGKILL); return those still alive after the bounded wait."""
        return sweep(self.members, term_grace=self._term_grace, kill_wait=self._kill_wait)

    def execute(self, fn: Callable[[], Any]) -> BaseException | None:
        """Run ``fn`` in a notebook thread; return the exception it raised (None if none).

        The calling thread waits, and on SIGINT/SIGTERM/SIGHUP stops the run's
        processes so that ``fn`` (papermill) sees its kernel die and returns.
        """
        outcome: list[BaseException | None] = []

        def target() -> None:
            try:
                fn()
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome.append(exc)

        worker = threading.Thread(target=target, name="runbooks-notebook", daemon=True)
        worker.start()
        while worker.is_alive() and self.signum is None:
            worker.join(0.2)
        if self.signum is not None:
            self.stop()
            worker.join(WORKER_JOIN_S)
        return outcome[0] if outcome else None

    def kernel_manager_class(self) -> type:
        """A jupyter_client kernel manager for this run: the kernel gets :attr:`env`, the parent-death signal
        (relative to the thread that starts it: :meth:`execute`'s) and is remembered as a root of the run."""
        from jupyter_client.manager import AsyncKernelManager

        guard = self

        class RunKernelManager(AsyncKernelManager):  # type: ignore[misc]
            async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
                kw["env"] = {**(kw.get("env") or os.environ), **guard.env}
                preexec = pdeathsig_preexec()
                if preexec is not None:
                    kw["preexec_fn"] = preexec
                await super()._async_launch_kernel(kernel_cmd, **kw)
                process = getattr(self.provisioner, "process", None)
                kernel = _stat(process.pid) if process is not None else None
                if kernel is not None:
                    guard.kernels.append(kernel)

        return RunKernelManager

    # -- the watchdog

    @property
    def watchdog_pid(self) -> int | None:
        return self._watchdog.pid if self._watchdog else None

    def _start_watchdog(self) -> None:
        if not SUPPORTED:
            return
        read, write = os.pipe()
        argv = [sys.executable, "-I", os.path.abspath(__file__), "watch", "--run-id", self.run_id,
                "--parent", str(os.getpid()), "--pipe", str(read), "--term-grace", str(self._term_grace),
                *[f"--lock-fd={fd}" for fd in self._fds]]
        try:
            self._watchdog = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              pass_fds=(read, *self._fds), start_new_session=True)
        except OSError as exc:
            os.close(write)
            print(f"runbooks: cannot start the run's watchdog ({exc}); a killed run may leave processes",
                  file=sys.stderr)
        else:
            self._pipe_w = write
        finally:
            os.close(read)

    def _finish_watchdog(self, *, wait: bool = True) -> bool:
        """Tell the watchdog the run ended; True once it has exited (bounded wait, none if not ``wait``)."""
        if self._pipe_w is not None:
            try:
                os.write(self._pipe_w, b"done")
            except OSError:
                pass
            os.close(self._pipe_w)
            self._pipe_w = None
        if self._watchdog is None:
            return True
        if not wait:
            return False
        try:
            self._watchdog.wait(timeout=WATCHDOG_EXIT_S)
        except subprocess.TimeoutExpired:
            return False
        return True


# --------------------------------------------------------------------------- the watchdog process


class _Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def watch(run_id: str, parent: int, pipe: int, term_grace: float, lock_fds: Iterable[int] = ()) -> int:
    """Wait for the runner to finish or die (EOF on ``pipe``), then stop the run's processes; return 0.

    Runs in its own session, ignoring SIGINT and SIGHUP (a closed terminal
    must not stop it before the run's processes are gone); SIGTERM makes it
    sweep at once. The lock descriptors it inherited close when it exits,
    after the last process of the run is gone (no time limit on that wait);
    when the runner did not end the run itself, it empties the lock files.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    received = b""
    try:
        while chunk := os.read(pipe, 64):
            received += chunk
    except (OSError, _Stop):
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    entry = marker_entry(run_id)
    left = sweep(lambda: members(entry, exclude={os.getpid(), parent}), term_grace=term_grace, kill_wait=None)
    if received != b"done":
        for fd in lock_fds:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
        try:
            print(f"runbooks: run {run_id}: the runner (pid {parent}) ended without finishing the run; "
                  "its processes were stopped", file=sys.stderr)
        except OSError:
            pass
    return 0 if not left else 1


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="run_lifetime")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("watch")
    p.add_argument("--run-id", required=True)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--pipe", type=int, required=True)
    p.add_argument("--term-grace", type=float, default=TERM_GRACE_S)
    p.add_argument("--lock-fd", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    return watch(args.run_id, args.parent, args.pipe, args.term_grace, args.lock_fd)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
