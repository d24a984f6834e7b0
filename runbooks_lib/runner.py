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
and kept in a directory every checkout shares (see :func:`runbooks_lib.cluster_lock.lock_dir`). Every
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

from runbooks_lib import cluster_lock, errors, params, run_lifetime, runbook, schemas
from runbooks_lib.errors import RunRefused

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

# Not destructive by their metadata, yet they change something on the cluster: etcd-snapshot's
# retention deletes snapshot files. (Notebook metadata ``runbook.locks: true`` says the same.)
LOCKING_RUNBOOKS = frozenset({"etcd-snapshot"})


def takes_lock(book: Runbook) -> bool:
    """Whether a run of ``book`` holds the cluster lock: destructive, listed in LOCKING_RUNBOOKS, or ``locks: true``."""
    if book.destructive or book.name in LOCKING_RUNBOOKS:
        return True
    meta = _read(book.path).metadata.get("runbook", {}) or {}
    return bool(meta.get("locks", False))


def _run_lock(book: Runbook, values: object, cluster_dir: Path, holder: str) -> cluster_lock.LockHandle | None:
    """The lock a run of ``book`` holds: its inventory's cluster lock, else (no inventory) ``cluster_dir/.lock``."""
    cluster_dir.mkdir(parents=True, exist_ok=True)
    if not takes_lock(book):
        return None
    inventory = getattr(values, "inventory", None)
    if inventory is not None and str(inventory) not in ("", "."):
        return cluster_lock.hold(inventory, holder)
    return cluster_lock.acquire(cluster_dir / ".lock", holder, "the lock of this runs folder")


# --------------------------------------------------------------------------- cleanup

# Runbooks that undo what a dead run of theirs left behind: name -> "module:function(values) -> lines".
CLEANUPS = {"failover-test": "runbooks_lib.failover_cleanup:cleanup"}


def cleanup(book: Runbook, files: Sequence[str | Path] = (), overrides: Mapping[str, Any] | None = None,
            *, cwd: Path | None = None) -> list[str]:
    """``runbooks run NAME --cleanup``: undo the leftovers of an earlier run of ``book``, under the cluster lock.

    Validates the parameters as a run does; returns what was undone. Raises
    BadParameters for a runbook that starts nothing it must stop, RunRefused
    when another run holds the lock, RunbookError naming what could not be
    undone. Side effects: whatever undoing the leftovers takes (see the
    runbook's cleanup module).
    """
    target = CLEANUPS.get(book.name)
    if target is None:
        raise errors.BadParameters(f"{book.name} starts nothing it must stop afterwards: it has no --cleanup",
                                   fix=f"--cleanup is for {', '.join(sorted(CLEANUPS))}")
    values, _ = resolve_parameters(book, files, overrides, cwd=cwd)
    module, function = target.split(":")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with cluster_lock.hold(values.inventory, f"pid {os.getpid()} runbook {book.name} --cleanup since {stamp}"):
        return list(getattr(importlib.import_module(module), function)(values))


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
                                  extra_env={cluster_lock.HELD_LOCK_ENV: str(lock.path)} if lock else None)
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
        if args.cleanup:
            for line in cleanup(book, files=args.file, overrides=overrides):
                print(line)
            return EXIT_OK
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
    p.add_argument("--cleanup", action="store_true",
                   help="do not run: undo what an earlier run that died before its teardown left behind "
                        f"({', '.join(sorted(CLEANUPS))}), under the cluster lock")
    p.set_defaults(func=_run)
