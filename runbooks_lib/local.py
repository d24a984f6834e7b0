"""The one place local processes are run.

Argument lists only (never a shell string), a required timeout, the whole
process group killed when it runs out (and killed when the calling thread
dies: a parent-death signal, see :mod:`runbooks_lib.run_lifetime`), a frozen
:class:`Result`, and
``check=True`` by default (``check=False`` is the one opt-out). Output can be
streamed line by line to a callback and to a log file while the process runs;
both see redacted text (see :func:`runbooks_lib.redaction.redact`).

Daemons that must outlive the call (HAProxy, dnsmasq, a lab machine) are
started with :func:`start`: their own process group, output to a log file,
and a :class:`Background` handle whose ``stop`` waits a bounded time and
kills the whole group.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from runbooks_lib import errors, run_lifetime
from runbooks_lib.redaction import LineRedactor, redact

# After SIGTERM to the group, how long before SIGKILL (ansible cleans up its workers).
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class Result:
    """How a finished local command ended. ``exited`` is negative for a signal."""

    command: tuple[str, ...]
    exited: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exited == 0 and not self.timed_out

    @property
    def failed(self) -> bool:
        return not self.ok

    def tail(self, lines: int = 15, stream: str = "stderr") -> str:
        """Last ``lines`` lines of stderr (or ``stream="stdout"``), redacted."""
        text = self.stderr if stream == "stderr" else self.stdout
        # Redacted before cutting: a key whose BEGIN line falls outside the tail is still hidden.
        return errors.tail(redact(text), lines)

    def __str__(self) -> str:
        return f"{shlex.join(self.command)} -> exit {self.exited} in {self.duration:.1f}s"


def _reader(
    pipe: IO[str],
    sink: list[str],
    on_line: Callable[[str], None] | None,
    log: IO[str] | None,
    lock: threading.Lock,
) -> None:
    redactor = LineRedactor()
    for line in iter(pipe.readline, ""):
        sink.append(line)
        if on_line is None and log is None:
            continue
        shown = redactor.feed(line.rstrip("\n"))
        if shown is None:
            continue
        with lock:  # one line at a time from stdout and stderr
            if log is not None:
                log.write(shown + "\n")
                log.flush()
            if on_line is not None:
                try:
                    on_line(shown)
                except Exception:  # noqa: BLE001 - a display error must not kill the run
                    pass
    pipe.close()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process group, SIGKILL it if still alive after the grace period."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no straggler of the group survives it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def run(
    command: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    check: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,  # noqa: A002 - same name as subprocess
    on_line: Callable[[str], None] | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> Result:
    """Run ``command`` (an argument list) and wait at most ``timeout`` seconds.

    ``env`` entries are added to the current environment. ``on_line`` gets
    every output line (stdout and stderr, redacted) as it arrives;
    ``log_path`` gets the same lines appended, between a header and an exit
    line. On timeout the whole process group is terminated (SIGTERM, then
    SIGKILL). On Linux the command gets SIGKILL if the calling thread dies
    first (PR_SET_PDEATHSIG; this call waits for the command, so the thread
    outlives it unless the process is killed). Raises CommandFailed when the command cannot be started or
    exits non-zero, WaitTimedOut when it ran out of time (the partial Result
    is on the exception's ``result``); ``check=False`` returns the Result
    instead (``timed_out`` set). Side effects: those of the command; the log
    file is created/appended.
    """
    argv = tuple(os.fspath(part) for part in command)
    if not argv:
        raise errors.BadParameters("empty command", fix="pass the program and its arguments as a list")
    if timeout is None or timeout <= 0:
        raise errors.BadParameters(f"{argv[0]}: timeout must be a positive number of seconds",
                                   fix="pass timeout=SECONDS", command=list(argv))
    full_env = None if env is None else {**os.environ, **env}
    log: IO[str] | None = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in finally
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"# {stamp} $ {redact(shlex.join(argv))}  (cwd={cwd or os.getcwd()}, timeout={timeout:g}s)\n")
        log.flush()
    start = time.monotonic()
    try:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                start_new_session=True,  # own process group: a timeout kills all of it
                preexec_fn=run_lifetime.pdeathsig_preexec(),  # dies with us, even by SIGKILL (Linux)
            )
        except OSError as exc:
            raise errors.CommandFailed(
                f"cannot start {argv[0]}: {exc.strerror or exc}",
                command=list(argv),
                fix=f"install {Path(argv[0]).name} or pass its full path; check cwd={cwd or os.getcwd()} exists",
            ) from exc
        out: list[str] = []
        err: list[str] = []
        lock = threading.Lock()
        threads = [
            threading.Thread(target=_reader, args=(proc.stdout, out, on_line, log, lock), daemon=True),
            threading.Thread(target=_reader, args=(proc.stderr, err, on_line, log, lock), daemon=True),
        ]
        if input is not None:
            threads.append(threading.Thread(target=_feed, args=(proc.stdin, input), daemon=True))
        for thread in threads:
            thread.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        except BaseException:
            # KeyboardInterrupt in a notebook: do not leave the command running.
            _kill_group(proc)
            raise
        for thread in threads:
            # Bounded: a daemonized grandchild holding the pipe must not hang us.
            thread.join(timeout=KILL_GRACE_S)
        duration = time.monotonic() - start
        result = Result(argv, proc.returncode if proc.returncode is not None else -signal.SIGKILL,
                        "".join(out), "".join(err), duration, timed_out)
        if log is not None:
            end = "timed out, process group killed" if timed_out else f"exit {result.exited}"
            log.write(f"# {end} after {duration:.1f}s\n")
    finally:
        if log is not None:
            log.close()
    if check and timed_out:
        exc = errors.WaitTimedOut(
            f"{Path(argv[0]).name} did not finish within {timeout:g}s; its process group was killed",
            command=list(argv),
            stderr=result.stderr or result.stdout,
            fix="check why it hangs (output above); rerun with a longer timeout if it was progressing",
        )
        exc.result = result  # type: ignore[attr-defined]
        raise exc
    if check and result.exited != 0:
        exc = errors.CommandFailed(
            f"{Path(argv[0]).name} failed",
            command=list(argv),
            exit_code=result.exited,
            stderr=result.tail() or result.tail(stream="stdout"),
            fix="read the error output above, fix the cause and rerun",
        )
        exc.result = result  # type: ignore[attr-defined]
        raise exc
    return result


def _feed(pipe: IO[str], text: str) -> None:
    try:
        pipe.write(text)
        pipe.close()
    except (BrokenPipeError, OSError):
        pass  # the command exited without reading all of it


@dataclass
class Background:
    """A process started by :func:`start`, leader of its own process group."""

    command: tuple[str, ...]
    pid: int
    log_path: Path
    _proc: subprocess.Popen[bytes]

    def poll(self) -> int | None:
        """The exit code if the process has ended (negative for a signal), else None."""
        return self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of its log file, redacted."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return errors.tail(redact(text), lines)

    def stop(self, timeout: float = KILL_GRACE_S) -> int:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds; return the exit code.

        Idempotent. Every member of the group gets the signals, so children
        the daemon forked do not survive it. Bounded: at most about
        ``timeout`` + :data:`KILL_GRACE_S` seconds.
        """
        for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, KILL_GRACE_S)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            try:
                self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)  # stragglers of the group
            break
        code = self._proc.poll()
        if code is None:
            raise errors.WaitTimedOut(
                f"{Path(self.command[0]).name} (pid {self.pid}) still runs after SIGKILL",
                command=list(self.command), fix=f"look at process {self.pid} (uninterruptible I/O?)",
            )
        return code


def start(
    command: Sequence[str | os.PathLike[str]],
    *,
    log_path: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    outlives_run: bool = False,
) -> Background:
    """Start ``command`` (an argument list) in the background and return its handle at once.

    The process gets its own session and process group, stdin from
    /dev/null, stdout and stderr appended to ``log_path`` (created with its
    parent directory; no other descriptors are inherited). ``env`` entries
    are added to the current environment. It outlives this call; stop it
    with :meth:`Background.stop`. Started inside a ``runbooks run``, it is
    stopped with the run (it carries the run's marker, see
    :mod:`runbooks_lib.run_lifetime`) unless ``outlives_run``: a machine or
    service that must stay up after the run (the lab's machines and DNS). Raises CommandFailed when it cannot be
    started. Side effects: the process, the log file.
    """
    argv = tuple(os.fspath(part) for part in command)
    if not argv:
        raise errors.BadParameters("empty command", fix="pass the program and its arguments as a list")
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = None if env is None else {**os.environ, **env}
    if outlives_run:
        from runbooks_lib.run_lifetime import MARKER_ENV

        full_env = {k: v for k, v in (full_env or os.environ).items() if k != MARKER_ENV}
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise errors.CommandFailed(
                f"cannot start {argv[0]}: {exc.strerror or exc}", command=list(argv),
                fix=f"install {Path(argv[0]).name} or pass its full path",
            ) from exc
    return Background(argv, proc.pid, log, proc)


def current_umask() -> int:
    """This process's umask, read without changing it (Linux /proc; else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync ``directory`` so that a rename or a new entry in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the open file ``fd`` and fsync it (the caller closes it and renames it into place)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)
