"""Runbooks as commands: ``runbooks list``, ``runbooks params NAME``, ``runbooks run NAME``.

A runbook is a notebook in notebooks/ named ``NN-name.ipynb``. Its notebook
metadata may hold a ``runbook`` mapping::

    {"description": "one line", "destructive": false, "schema": "runbooks_lib.schemas:DiagnosticsParams"}

``schema`` names the typed parameter dataclass; without it the parameters
cell's own annotations are the schema. ``run`` validates the parameters
before anything runs, executes the notebook with papermill (progress bar,
per-cell timeout, saved after every cell) into
``runs/CLUSTER/UTC-TIMESTAMP-NAME.ipynb`` with ``NAME.summary.json`` beside it,
and returns exit status 0 (success), 1 (failure) or 2 (refused before any
change: bad parameters, preflight, confirmation gate, lock held); a run
stopped by SIGINT, SIGTERM or SIGHUP exits 128 + the signal's number.

Runs that change a cluster (destructive runbooks, ``etcd-snapshot``, metadata
``locks: true``) hold one lock per cluster, keyed by the inventory's real path
and kept in a directory every checkout shares (see :func:`lock_dir`). Every
process a run starts ends with it, however the run ends (see
:mod:`runbooks_lib.run_lifetime`); the lock is released only after they have.

Relative paths: in a parameter file, relative to that file's directory; in
``-p``, relative to the current directory; in a parameters cell, relative to
the repository root (the runbook's validate cell resolves them there, so the
kernel may run in the repository root or in notebooks/). ``${VAR:-default}``
is expanded in parameter files, ``-p`` values and parameters-cell strings.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import fcntl
import hashlib
import importlib
import json
import os
import re
import signal
import sys
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml

from runbooks_lib import errors, params, run_lifetime, runbook, schemas

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
# Exceptions that mean "refused, nothing was changed" when a runbook cell raises them.
REFUSED_ERRORS = frozenset({"BadParameters", "PreconditionFailed"})
DEFAULT_CELL_TIMEOUT = 1800.0
# A cell that runs a playbook also waits for hosts and prints its log: its timeout is the playbook's plus this.
PLAYBOOK_CELL_MARGIN_S = 600.0


def cell_timeout_for(values: object, requested: float) -> float:
    """The per-cell timeout: ``requested``, raised to the runbook's ``playbook_timeout_s`` plus a margin.

    A cell runs at most one playbook, so a cell timeout shorter than the playbook's
    own bound would cut the playbook off before its bound does. Pure.
    """
    bound = getattr(values, "playbook_timeout_s", None)
    return max(requested, bound + PLAYBOOK_CELL_MARGIN_S) if isinstance(bound, (int, float)) else requested
_NAME = re.compile(r"^(?:(?P<number>\d+)-)?(?P<name>[A-Za-z0-9_.-]+)$")


class RunRefused(errors.RunbookError):
    """A run was refused before anything ran (lock held, bad parameters); nothing was changed."""


class RunInterrupted(KeyboardInterrupt):
    """A run was stopped by SIGINT, SIGTERM or SIGHUP; its processes were stopped and its record written.

    ``signum`` is the signal; ``result`` the RunResult (status "failed", exit code 128 + signum).
    """

    def __init__(self, signum: int, result: RunResult) -> None:
        super().__init__(f"stopped by {signal_name(signum)}")
        self.signum = signum
        self.result = result


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15. Pure."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def repo_root() -> Path:
    """The repository root: paths in parameters cells are relative to it."""
    return REPO_ROOT


def notebooks_dir() -> Path:
    """Where runbooks live: $RUNBOOKS_NOTEBOOKS_DIR or notebooks/ in the repository."""
    return Path(os.environ.get("RUNBOOKS_NOTEBOOKS_DIR") or REPO_ROOT / "notebooks")


def runs_dir() -> Path:
    """Where run records go: $RUNBOOKS_RUNS_DIR or runs/ in the repository."""
    return Path(os.environ.get("RUNBOOKS_RUNS_DIR") or REPO_ROOT / "runs")


# --------------------------------------------------------------------------- discovery


@dataclasses.dataclass(frozen=True)
class Runbook:
    """One runbook notebook and what its metadata declares."""

    name: str
    path: Path
    description: str
    destructive: bool
    schema: str | None


def _read(path: Path) -> Any:
    import nbformat  # imported late: the CLI's other commands do not need it

    return nbformat.read(path, as_version=4)


def _describe(path: Path) -> Runbook:
    nb = _read(path)
    meta = nb.metadata.get("runbook", {}) or {}
    description = str(meta.get("description") or "").strip()
    if not description:
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                heading = next((ln.lstrip("#").strip() for ln in cell.source.splitlines() if ln.startswith("#")), "")
                if heading:
                    description = heading
                    break
    match = _NAME.match(path.stem)
    name = match.group("name") if match else path.stem
    return Runbook(name=name, path=path, description=description or "(no description)",
                   destructive=bool(meta.get("destructive", False)), schema=meta.get("schema"))


def discover(directory: Path | None = None) -> list[Runbook]:
    """Every ``*.ipynb`` in the notebooks directory, in file-name (operator's) order. Reads files only."""
    directory = directory or notebooks_dir()
    return [_describe(p) for p in sorted(directory.glob("*.ipynb")) if not p.name.startswith(".")]


def find(name: str, directory: Path | None = None) -> Runbook:
    """A runbook by name (``diagnostics``), file stem (``30-diagnostics``) or path. Raises BadParameters."""
    candidate = Path(name)
    if candidate.suffix == ".ipynb" and candidate.is_file():
        return _describe(candidate)
    books = discover(directory)
    for book in books:
        if name in (book.name, book.path.stem, book.path.name):
            return book
    known = ", ".join(b.name for b in books) or "none"
    raise errors.BadParameters(f"no runbook named {name!r} in {directory or notebooks_dir()}",
                               fix=f"pick one of: {known} (runbooks list)")


# --------------------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True)
class ParameterLine:
    """One ``name: type = literal  # help`` line of a parameters cell."""

    name: str
    type: str
    default: str
    help: str

    def render(self) -> str:
        text = f"{self.name}: {self.type} = {self.default}"
        return f"{text}  # {self.help}" if self.help else text


def _parameters_source(path: Path) -> str:
    nb = _read(path)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise errors.BadParameters(f"{path} has {len(cells)} cells tagged 'parameters'",
                                   fix="tag exactly one code cell 'parameters'")
    return cells[0].source


def parameter_lines(book: Runbook) -> list[ParameterLine]:
    """The parameters cell as typed lines (what ``runbooks params`` prints). Raises BadParameters."""
    source = _parameters_source(book.path)
    lines = source.splitlines()
    result = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = lines[node.end_lineno - 1] if node.end_lineno else ""
        comment = text.split("#", 1)[1].strip() if "#" in text[node.value.end_col_offset:] else ""
        result.append(ParameterLine(node.target.id, ast.get_source_segment(source, node.annotation) or "",
                                    ast.get_source_segment(source, node.value) or "", comment))
    return result


_ANNOTATION_NAMES = {"Path": Path, "Literal": Literal, "Any": Any, "Optional": typing.Optional,
                     "list": list, "tuple": tuple, "dict": dict, "str": str, "int": int, "float": float,
                     "bool": bool, "None": None}


def _cell_schema(book: Runbook) -> type:
    """A dataclass built from the parameters cell's annotations and literal defaults."""
    source = _parameters_source(book.path)
    defaults = params.notebook_parameters(book.path)
    fields = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = ast.get_source_segment(source, node.annotation) or "Any"
            try:
                tp = eval(text, {"__builtins__": {}}, _ANNOTATION_NAMES)  # noqa: S307 - names above only
            except Exception:  # noqa: BLE001 - an unknown annotation accepts anything
                tp = Any
            default = defaults[node.target.id]
            fields.append((node.target.id, tp, dataclasses.field(default_factory=lambda d=default: d)))
    return dataclasses.make_dataclass(f"{book.name.title().replace('-', '')}CellParams", fields, frozen=True)


def schema_of(book: Runbook) -> type:
    """The runbook's parameter schema: metadata ``schema`` ("module:Class") or its parameters cell."""
    if not book.schema:
        return _cell_schema(book)
    module, _, attr = book.schema.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise errors.BadParameters(f"{book.path}: schema {book.schema!r} cannot be imported: {exc}",
                                   fix="fix the notebook metadata runbook.schema (module:Class)") from None


def _has_path(tp: Any) -> bool:
    if tp is Path:
        return True
    return any(_has_path(a) for a in typing.get_args(tp))


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, str) and value:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    return value


def _anchor_paths(schema: type, values: Mapping[str, Any], base: Path) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {k: _absolute(v, base) if k in hints and _has_path(hints[k]) and not schemas.is_command_name(k, v) else v
            for k, v in values.items()}


def parse_value(text: str) -> Any:
    """A ``-p`` value as a YAML scalar: ``3`` int, ``true``/``True`` bool, ``'3'`` str, ``[a, b]`` list."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def resolve_parameters(
    book: Runbook, files: Sequence[str | Path] = (), overrides: Mapping[str, Any] | None = None,
    *, cwd: Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Validate files (in order) then overrides against the runbook's schema.

    Returns (the validated schema object, the explicitly given values with
    paths made absolute, ready for papermill). Raises BadParameters naming
    every bad key before anything runs. Reads the files only.
    """
    schema = schema_of(book)
    given: dict[str, Any] = {}
    for name in files:
        own, _ = schemas.file_values(schema, params.expand_env(params.read_files([name])))
        given.update(_anchor_paths(schema, own, Path(name).expanduser().resolve().parent))
    given.update(_anchor_paths(schema, params.expand_env(dict(overrides or {})), (cwd or Path.cwd()).resolve()))
    defaults = {k: params.expand_env(v) for k, v in params.notebook_parameters(book.path).items()}
    merged = {**_anchor_paths(schema, {k: v for k, v in defaults.items() if k not in given}, REPO_ROOT), **given}
    schemas.require(schema, merged)
    values = params.validate(schema, merged)
    if isinstance(values, schemas.Target):
        schemas.check_target(values)
    return values, {k: _plain(v) for k, v in given.items()}


def _plain(value: Any) -> Any:
    """A value papermill can write into the injected cell (paths as str, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- the cluster lock

LOCK_DIR_ENV = "RUNBOOKS_LOCK_DIR"
# Shared by every checkout and runs folder on the machine; the first writable one is used.
LOCK_DIRS = ("/run/lock/runbooks", "${XDG_RUNTIME_DIR}/runbooks-locks", "/tmp/runbooks-locks")
# Not destructive by their metadata, yet they change something on the cluster: etcd-snapshot's
# retention deletes snapshot files. (Notebook metadata ``runbook.locks: true`` says the same.)
LOCKING_RUNBOOKS = frozenset({"etcd-snapshot"})
# Set in a run's kernel: the lock file its runner holds (hold_cluster_lock there does not take it again).
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
    raise RunRefused(f"no usable lock directory ({'; '.join(problems)}); nothing was run",
                     fix=f"make /run/lock writable or set ${LOCK_DIR_ENV} to a directory every run on this host shares")


def lock_key(inventory: str | os.PathLike[str]) -> str:
    """The cluster lock's key: a hash of the inventory's real path (symlinks and relative spellings resolved)."""
    real = os.path.realpath(os.path.expanduser(os.fspath(inventory)))
    return hashlib.sha256(real.encode()).hexdigest()[:32]


def lock_path(inventory: str | os.PathLike[str]) -> Path:
    """The lock file for the cluster of ``inventory`` (in :func:`lock_dir`, which it creates)."""
    return lock_dir() / f"inventory-{lock_key(inventory)}.lock"


def takes_lock(book: Runbook) -> bool:
    """Whether a run of ``book`` holds the cluster lock: destructive, listed in LOCKING_RUNBOOKS, or ``locks: true``."""
    if book.destructive or book.name in LOCKING_RUNBOOKS:
        return True
    meta = _read(book.path).metadata.get("runbook", {}) or {}
    return bool(meta.get("locks", False))


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


def _acquire(path: Path, holder: str, what: str) -> LockHandle:
    """Take ``path`` (flock, not blocking) and write ``holder`` into it; RunRefused names the current holder."""
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            raise RunRefused(refusal(path, current, what),
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


def hold_cluster_lock(inventory: str | os.PathLike[str], holder: str) -> LockHandle:
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
    return _acquire(path, f"{holder} inventory {real}", f"the lock of inventory {real}")


@contextmanager
def cluster_lock(cluster_dir: Path, holder: str) -> Iterator[Path]:
    """Hold ``cluster_dir/.lock`` (flock, not blocking): the lock of a runbook without an ``inventory``.

    Raises RunRefused naming the current holder when another run has it.
    Side effect: creates the directory and the lock file (left in place).
    """
    cluster_dir.mkdir(parents=True, exist_ok=True)
    with _acquire(cluster_dir / ".lock", holder, "the lock of this runs folder") as handle:
        yield handle.path


def _run_lock(book: Runbook, values: object, cluster_dir: Path, holder: str) -> LockHandle | None:
    """The lock a run of ``book`` holds: its inventory's cluster lock, else (no inventory) ``cluster_dir/.lock``."""
    cluster_dir.mkdir(parents=True, exist_ok=True)
    if not takes_lock(book):
        return None
    inventory = getattr(values, "inventory", None)
    if inventory is not None and str(inventory) not in ("", "."):
        return hold_cluster_lock(inventory, holder)
    return _acquire(cluster_dir / ".lock", holder, "the lock of this runs folder")


# --------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class RunResult:
    """How one ``runbooks run`` ended."""

    runbook: str
    cluster: str
    status: Literal["ok", "failed", "refused"]
    exit_code: int
    output: Path | None
    summary_path: Path | None
    html: Path | None
    duration_s: float
    message: str

    def line(self) -> str:
        """The one-line result printed by ``runbooks run``."""
        where = f" -> {self.output}" if self.output else ""
        return f"{self.status.upper()}: {self.runbook} on {self.cluster} in {self.duration_s:.0f}s: {self.message}{where}"


@contextmanager
def _kernel_env(output: Path) -> Iterator[None]:
    """The kernel inherits this process's environment: the output path and this library first on the path."""
    saved = {k: os.environ.get(k) for k in ("PAPERMILL_OUTPUT_PATH", "PYTHONPATH", schemas.PARAMS_ENV)}
    # The run's parameters are the ones validated here: the notebook must not fill its defaults from elsewhere.
    os.environ.pop(schemas.PARAMS_ENV, None)
    os.environ["PAPERMILL_OUTPUT_PATH"] = str(output)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), saved["PYTHONPATH"]) if p)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def run(
    book: Runbook,
    *,
    files: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    html: bool = False,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    progress_bar: bool = True,
    runs: Path | None = None,
    cwd: Path | None = None,
) -> RunResult:
    """Validate, lock (destructive runbooks), execute with papermill, write the run record.

    Side effects: runs the notebook (which may change the cluster), writes
    runs/CLUSTER/UTC-NAME.ipynb, NAME.summary.json and optionally NAME.html.
    Raises BadParameters or RunRefused before anything runs; a failing cell is
    a RunResult with status "failed" (or "refused" when the cell raised
    BadParameters/PreconditionFailed), never an exception.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    started = time.monotonic()
    values, given = resolve_parameters(book, files, overrides, cwd=cwd)
    cluster = str(getattr(values, "cluster_name", None) or "default")
    cluster_dir = (runs or runs_dir()) / cluster
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    output = cluster_dir / f"{stamp}-{book.name}.ipynb"
    holder = f"pid {os.getpid()} runbook {book.name} since {stamp} output {output}"
    lock = _run_lock(book, values, cluster_dir, holder)
    error: tuple[str, str] | None = None
    guard = run_lifetime.RunGuard(lock_fds=[lock.fd] if lock and lock.fd >= 0 else [],
                                  extra_env={HELD_LOCK_ENV: str(lock.path)} if lock else None)
    try:
        with guard, _kernel_env(output):
            failure = guard.execute(lambda: papermill.execute_notebook(
                str(book.path), str(output), parameters=given, progress_bar=progress_bar,
                request_save_on_cell_execute=True, execution_timeout=cell_timeout_for(values, cell_timeout),
                cwd=str(book.path.parent.parent), log_output=False,
                kernel_manager_class=guard.kernel_manager_class(),
            ))
        if guard.signum is not None:
            error = ("Interrupted", f"stopped by {signal_name(guard.signum)}; the run's processes were stopped")
        elif isinstance(failure, PapermillExecutionError):
            error = (failure.ename, _first_line(failure.evalue))
        elif isinstance(failure, Exception):  # a timeout or dead kernel is a failed run, recorded below
            error = (type(failure).__name__, _first_line(str(failure)))
        elif failure is not None:
            raise failure
    finally:
        if lock is not None:
            # Left to the watchdog (still holding it) when processes of the run outlived the sweep.
            lock.release(clear=guard.all_gone)
    duration = time.monotonic() - started
    summary_path = runbook.summary_path_for(output)
    summary = _read_summary(summary_path)
    refused = summary.get("status") == "refused" or (error is not None and error[0] in REFUSED_ERRORS)
    status: Literal["ok", "failed", "refused"] = "refused" if refused else ("failed" if error else "ok")
    exit_code = {"ok": EXIT_OK, "failed": EXIT_FAILED, "refused": EXIT_REFUSED}[status]
    if guard.signum is not None:
        status, exit_code = "failed", 128 + guard.signum
    message = str(summary.get("verdict") or (f"{error[0]}: {error[1]}" if error else "completed"))
    if error and summary.get("verdict") and error[1] not in message:
        message = f"{message} ({error[0]})"
    html_path = _html(output) if html and output.exists() and guard.signum is None else None
    summary.setdefault("runbook", book.name)
    summary.setdefault("cluster", cluster)
    if error or "status" not in summary:
        summary["status"] = status if status != "ok" else summary.get("status", "ok")
    summary["run"] = {"exit_code": exit_code, "result": status, "duration_s": round(duration, 1),
                      "output": str(output), "html": str(html_path) if html_path else None,
                      "error": {"ename": error[0], "evalue": error[1]} if error else None,
                      "parameters": given}
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(runbook.redact_data(summary), indent=2, default=str) + "\n")
    result = RunResult(book.name, cluster, status, exit_code, output, summary_path, html_path, duration,
                       runbook.redact(message))
    if guard.signum is not None:
        raise RunInterrupted(guard.signum, result)
    return result


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _html(output: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(output))
    target = output.with_suffix(".html")
    target.write_text(runbook.redact(body), encoding="utf-8")
    return target


# --------------------------------------------------------------------------- command line


def _list(args: argparse.Namespace) -> int:
    books = discover(Path(args.notebooks_dir) if args.notebooks_dir else None)
    width = max((len(b.name) for b in books), default=0)
    for book in books:
        flag = " [destructive]" if book.destructive else ""
        print(f"{book.name:<{width}}  {book.description}{flag}")
    return EXIT_OK


def _params(args: argparse.Namespace) -> int:
    book = find(args.name, Path(args.notebooks_dir) if args.notebooks_dir else None)
    print(f"{book.name} ({book.path.name}): {book.description}")
    print(f"schema: {book.schema or 'the parameters cell'}; destructive: {'yes' if book.destructive else 'no'}")
    required = set(getattr(schema_of(book), "REQUIRED", ()))
    print("parameters (-f FILE.yaml, -p NAME VALUE; [required]: a site value without a default):")
    for line in parameter_lines(book):
        print(f"  {line.render()}{'  [required]' if line.name in required else ''}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    try:
        book = find(args.name, Path(args.notebooks_dir) if args.notebooks_dir else None)
        overrides = {key: parse_value(value) for key, value in args.param}
        result = run(book, files=args.file, overrides=overrides, html=args.html, cell_timeout=args.cell_timeout,
                     progress_bar=not args.no_progress, runs=Path(args.runs_dir) if args.runs_dir else None)
    except (errors.BadParameters, RunRefused) as exc:
        print(f"REFUSED: {args.name}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RunInterrupted as exc:
        try:  # the terminal may be gone (SIGHUP)
            print(exc.result.line(), flush=True)
        except OSError:
            pass
        return exc.result.exit_code
    print(result.line())
    return result.exit_code


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``list``, ``params`` and ``run`` to the ``runbooks`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--notebooks-dir", default=None,
                        help="where the runbooks are (default: $RUNBOOKS_NOTEBOOKS_DIR or notebooks/)")

    p = sub.add_parser("list", parents=[common], help="each runbook with a one-line description")
    p.set_defaults(func=_list)

    p = sub.add_parser("params", parents=[common], help="a runbook's typed parameters")
    p.add_argument("name")
    p.set_defaults(func=_params)

    p = sub.add_parser("run", parents=[common], help="run a runbook headless with papermill and keep the record",
                       description="Exit status: 0 success, 1 failure, 2 refused before any change.")
    p.add_argument("name")
    p.add_argument("-f", "--file", action="append", default=[], metavar="FILE",
                   help="YAML parameter file (repeatable, later files win; relative paths in it are "
                        "relative to the file's directory)")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="one parameter (YAML scalar; repeatable; overrides files)")
    p.add_argument("--html", action="store_true", help="also write an HTML copy of the output notebook")
    p.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT, metavar="S",
                   help=f"fail a cell that runs longer than S seconds (default {DEFAULT_CELL_TIMEOUT:.0f}; a cell "
                        "that runs a playbook gets at least playbook_timeout_s plus 600)")
    p.add_argument("--runs-dir", default=None, help="where run records go (default: $RUNBOOKS_RUNS_DIR or runs/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. under cron)")
    p.set_defaults(func=_run)
