"""The cluster lock: one per cluster, keyed by its inventory's real path, shared by every checkout.

A run that changes a cluster holds it (``runbooks run`` for the whole run,
a notebook opened in JupyterLab from its confirmation gate until its kernel
ends). The lock is an flock on a file in :func:`lock_dir`; the file holds one
line naming the holder, which a refused run quotes. Nothing here touches a
cluster; side effects are the lock directory and files.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from runbooks_lib import errors

LOCK_DIR_ENV = "RUNBOOKS_LOCK_DIR"
# Shared by every checkout and runs folder on the machine; the first writable one is used.
LOCK_DIRS = ("/run/lock/runbooks", "${XDG_RUNTIME_DIR}/runbooks-locks", "/tmp/runbooks-locks")
# Set in a run's kernel: the lock file its runner holds (hold there does not take it again).
HELD_LOCK_ENV = "RUNBOOKS_HELD_LOCK"


def lock_dir() -> Path:
    """Where cluster locks live: $RUNBOOKS_LOCK_DIR, else the first usable of :data:`LOCK_DIRS`.

    ``/run/lock/runbooks`` is shared by every user and checkout on the machine
    (created mode 1777, like /run/lock); ``$XDG_RUNTIME_DIR/runbooks-locks`` is
    per user and ``/tmp/runbooks-locks`` is the last resort. Raises RunRefused
    when none can be used. Side effect: creates the directory.
    """
    override = os.environ.get(LOCK_DIR_ENV)
    candidates = [override] if override else [os.path.expandvars(d) for d in LOCK_DIRS
                                              if "$" not in os.path.expandvars(d)]
    problems = []
    for candidate in candidates:
        path = Path(candidate)
        shared = not override and not candidate.startswith(os.environ.get("XDG_RUNTIME_DIR") or "\0")
        try:
            if not path.is_dir():
                path.mkdir(mode=0o700, parents=bool(override))
                if shared:
                    os.chmod(path, 0o1777)  # every user's runs share it; sticky like /run/lock
            if path.is_symlink() or not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(f"{path} is not writable")
            return path
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
    raise errors.RunRefused(f"no usable lock directory ({'; '.join(problems)}); nothing was run",
                     fix=f"make /run/lock writable or set ${LOCK_DIR_ENV} to a directory every run on this host shares")


def lock_key(inventory: str | os.PathLike[str]) -> str:
    """The cluster lock's key: a hash of the inventory's real path (symlinks and relative spellings resolved)."""
    real = os.path.realpath(os.path.expanduser(os.fspath(inventory)))
    return hashlib.sha256(real.encode()).hexdigest()[:32]


def lock_path(inventory: str | os.PathLike[str]) -> Path:
    """The lock file for the cluster of ``inventory`` (in :func:`lock_dir`, which it creates)."""
    return lock_dir() / f"inventory-{lock_key(inventory)}.lock"


def refusal(path: Path, current: str, what: str) -> str:
    """The message of a run refused because ``current`` (the holder's line) holds the lock at ``path``. Pure."""
    return f"another destructive run holds {what} ({path}): {current or 'unknown holder'}; nothing was run"


@dataclasses.dataclass
class LockHandle:
    """A held cluster lock (flock on ``path``); a context manager. ``fd`` is -1 once released or when not owned."""

    path: Path
    fd: int
    holder: str

    def release(self, *, clear: bool = True) -> None:
        """Release it (idempotent). ``clear``: empty the holder line first.

        Closes the descriptor, never LOCK_UN: a run's watchdog holds a
        duplicate, and the lock stays held until it too has closed it.
        """
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        try:
            if clear:
                os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> LockHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(path: Path, holder: str, what: str) -> LockHandle:
    """Take ``path`` (flock, not blocking) and write ``holder`` into it; RunRefused names the current holder."""
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            raise errors.RunRefused(refusal(path, current, what),
                             fix="wait for it to finish (or check that its process is gone) and run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode() + b"\n", 0)
    except BaseException:
        os.close(fd)
        raise
    return LockHandle(path, fd, holder)


def _open_lock_file(path: Path) -> int:
    """Open (or create, mode 0666 so other users' runs can take it) a lock file; no symlinks followed.

    An existing file is opened without O_CREAT: fs.protected_regular refuses
    O_CREAT on another user's file in a sticky directory such as /run/lock.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(3):
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, 0o666)
        except OSError:
            pass
        return fd
    return os.open(path, flags)


def hold(inventory: str | os.PathLike[str], holder: str) -> LockHandle:
    """Take the cluster lock of ``inventory`` for an interactive session (e.g. a notebook's confirmation gate).

    The same lock ``runbooks run`` takes: keyed by the inventory's real path,
    in :func:`lock_dir`. Returns a handle (``with`` it, or call ``release()``;
    it is also released when the process ends). ``holder`` is the line others
    are refused with: say who and what, e.g. ``"pid 123 runbook add-worker
    since 20260101T000000Z output JupyterLab"``. In the kernel of a run whose
    runner already holds this lock it returns a handle that owns nothing.
    Raises RunRefused naming the current holder. Side effects: the lock
    directory and file.
    """
    path = lock_path(inventory)
    if os.environ.get(HELD_LOCK_ENV) == str(path):
        return LockHandle(path, -1, holder)
    real = os.path.realpath(os.path.expanduser(os.fspath(inventory)))
    return acquire(path, f"{holder} inventory {real}", f"the lock of inventory {real}")


@contextmanager
def runs_folder_lock(cluster_dir: Path, holder: str) -> Iterator[Path]:
    """Hold ``cluster_dir/.lock`` (flock, not blocking): the lock of a runbook without an ``inventory``.

    Raises RunRefused naming the current holder when another run has it.
    Side effect: creates the directory and the lock file (left in place).
    """
    cluster_dir.mkdir(parents=True, exist_ok=True)
    with acquire(cluster_dir / ".lock", holder, "the lock of this runs folder") as handle:
        yield handle.path


# Locks taken by confirmation gates in this process, by lock file: held until the process ends.
_SESSION: dict[str, LockHandle] = {}


def hold_for_session(inventory: str | os.PathLike[str], what: str) -> LockHandle:
    """Take the cluster lock of ``inventory`` until this process ends (a notebook's kernel, at its gate).

    ``what`` names the work, e.g. ``"runbook remove-worker"``. Taking it again
    in the same process returns the handle already held (a gate cell run twice).
    Under ``runbooks run`` the runner already holds it and nothing is taken.
    Raises RunRefused naming the current holder. Side effects: the lock file.
    """
    path = lock_path(inventory)
    held = _SESSION.get(str(path))
    if held is not None and held.fd >= 0:
        return held
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    handle = hold(inventory, f"pid {os.getpid()} {what} since {stamp} interactive")
    if handle.fd >= 0:
        _SESSION[str(path)] = handle
    return handle
