"""The shape every runbook shares: confirmation gate, bounded waits, step records,
the JSON summary written beside the output notebook, and redaction of secrets.

Nothing here touches a cluster. The confirmation gate is the one place that asks
a human; under papermill or nbval (no stdin) it falls back to the ``confirm``
parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from runbooks_lib import errors

REDACTED = "[redacted]"

# --------------------------------------------------------------------------- redaction

_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL
)
# A PEM private key whose END line never arrived (truncated output): hide the rest.
# What a redacted key block shows (spelled in two parts so no key marker sits in the source).
_PEM_MARK = "-----BEGIN " + "PRIVATE KEY-----"
_PEM_OPEN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?!\[redacted\]).*\Z", re.DOTALL)
_PEM_BEGIN_LINE = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END_LINE = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]+")
# kubeadm bootstrap tokens (abcdef.0123456789abcdef) grant cluster join rights.
_KUBEADM_TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):([^@\s/]+)@")
# key=value / key: value / "key": "value" where the key ends with a secret-ish word.
_SECRET_KEY = r"[A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret|token|_pass|key-data|key_data)"
_QUOTED_VALUE = re.compile(
    rf"(?i)(?P<key>\b{_SECRET_KEY})(?P<sep>[\"']?\s*[:=]\s*)(?P<q>[\"'])(?P<val>.*?)(?P=q)"
)
_BARE_VALUE = re.compile(
    rf"(?i)(?P<key>\b{_SECRET_KEY})(?P<sep>[\"']?\s*[:=]\s*)(?P<val>[^\s\"',;}}\]\[]+)"
)
# Base64 of "-----BEGIN": a PEM blob embedded in YAML/JSON (kubeconfig client-key-data).
_B64_PEM = re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/=]{8,}")


def _b64_private(match: re.Match[str]) -> str:
    blob = match.group(0)
    head = blob[: (min(len(blob), 64) // 4) * 4]
    try:
        decoded = base64.b64decode(head).decode("ascii", "replace")
    except (binascii.Error, ValueError):
        return blob
    return REDACTED if "PRIVATE KEY" in decoded else blob


def _keep_placeholder(match: re.Match[str]) -> str:
    val = match.group("val")
    if val == REDACTED or val.startswith(("{{", "[redacted")) or val in ("", "null", "None"):
        return match.group(0)
    quote = match.groupdict().get("q") or ""
    return f"{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"


def redact(text: str) -> str:
    """Return ``text`` with private keys, bootstrap/bearer tokens and passwords scrubbed.

    Covers PEM private keys (any kind, also base64-encoded as in kubeconfig
    ``client-key-data``), ``Bearer ...``, kubeadm join tokens, credentials in
    URLs and ``password=...``/``token: ...``-style assignments. Certificates
    (public parts) are kept. Pure function; never raises.
    """
    if not text:
        return text
    text = _PEM_BLOCK.sub(lambda m: f"-----BEGIN {m.group(1)}-----{REDACTED}-----END {m.group(1)}-----", text)
    text = _PEM_OPEN.sub(f"{_PEM_MARK}{REDACTED}", text)
    text = _B64_PEM.sub(_b64_private, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    text = _QUOTED_VALUE.sub(_keep_placeholder, text)
    text = _BARE_VALUE.sub(_keep_placeholder, text)
    text = _KUBEADM_TOKEN.sub(REDACTED, text)
    return text


class LineRedactor:
    """Redact a stream line by line, hiding multi-line PEM private key blocks.

    ``feed(line)`` returns the line to show, or ``None`` while inside a private
    key block (the BEGIN line is replaced by one marker line).
    """

    def __init__(self) -> None:
        self._in_key = False

    def feed(self, line: str) -> str | None:
        if self._in_key:
            if _PEM_END_LINE.search(line):
                self._in_key = False
                rest = line[_PEM_END_LINE.search(line).end():]  # type: ignore[union-attr]
                return redact(rest) if rest.strip() else None
            return None
        begin = _PEM_BEGIN_LINE.search(line)
        if begin and not _PEM_END_LINE.search(line, begin.end()):
            self._in_key = True
            return redact(line[: begin.start()]) + f"{_PEM_MARK}{REDACTED}"
        return redact(line)


def redact_data(value: object) -> object:
    """Return a copy of a JSON-like structure with every string passed through :func:`redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value


# --------------------------------------------------------------------------- confirmation


def _is_no_stdin(exc: BaseException) -> bool:
    # IPython raises StdinNotImplementedError when the frontend has no stdin
    # (papermill, nbval); plain Python raises EOFError when stdin is closed.
    if isinstance(exc, EOFError):
        return True
    return any(cls.__name__ == "StdinNotImplementedError" for cls in type(exc).__mro__)


def confirm(
    action: str,
    *,
    cluster: str,
    dry_run: bool,
    confirm: str | None = None,
    plan: str | Iterable[str] | None = None,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
) -> bool:
    """Gate a destructive step; return True to proceed, False for a dry run.

    Three paths: ``dry_run`` says what would be done and returns False;
    a non-empty ``confirm`` parameter passes only if it equals ``cluster``
    (headless, papermill); otherwise a human is asked to type the cluster
    name. When there is no stdin (papermill/nbval raise
    StdinNotImplementedError) the headless rule applies. Raises
    PreconditionFailed when not confirmed; nothing has been changed then.
    """
    steps = [plan] if isinstance(plan, str) else list(plan or [])
    if dry_run:
        lines = [f"DRY RUN: would {action} on cluster {cluster!r}."]
        lines += [f"  {line}" for line in steps]
        lines.append(f"To run it: set dry_run=False and confirm={cluster!r} (or answer the prompt).")
        say("\n".join(lines))
        return False
    headless_fix = (
        f"rerun with the parameters dry_run=False and confirm={cluster!r} "
        f"(papermill: -p dry_run False -p confirm {cluster})"
    )
    if confirm:
        if confirm == cluster:
            say(f"Confirmed by parameter: {action} on cluster {cluster!r}.")
            return True
        raise errors.PreconditionFailed(
            f"confirmation {confirm!r} does not match the cluster name {cluster!r}; "
            f"refusing to {action}. Nothing was changed.",
            fix=headless_fix,
        )
    try:
        answer = ask(f"Type the cluster name ({cluster}) to {action}: ")
    except BaseException as exc:  # noqa: BLE001 - only the no-stdin case is handled
        if not _is_no_stdin(exc):
            raise
        raise errors.PreconditionFailed(
            f"no confirmation for: {action} on cluster {cluster!r} "
            "(no interactive input available and the confirm parameter is empty). "
            "Nothing was changed.",
            fix=headless_fix,
        ) from None
    if answer.strip() != cluster:
        raise errors.PreconditionFailed(
            f"typed {answer.strip()!r}, expected {cluster!r}; refusing to {action}. Nothing was changed.",
            fix=f"run the cell again and type {cluster} exactly, or keep dry_run=True",
        )
    say(f"Confirmed: {action} on cluster {cluster!r}.")
    return True


# --------------------------------------------------------------------------- bounded wait

CheckOutcome = bool | tuple[bool, str] | tuple[bool, Iterable[str]]


@dataclass(frozen=True)
class Waited:
    """How a successful :func:`wait_for` went."""

    what: str
    attempts: int
    elapsed: float
    detail: str


def _outcome(value: CheckOutcome) -> tuple[bool, str]:
    if isinstance(value, tuple):
        done, detail = value
        if not isinstance(detail, str):
            detail = ", ".join(map(str, detail))
        return bool(done), detail
    return bool(value), ""


def wait_for(
    check: Callable[[], CheckOutcome],
    *,
    timeout: float,
    interval: float,
    what: str,
    retry_on: tuple[type[BaseException], ...] = (),
    fix: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Waited:
    """Call ``check`` until it reports done, at most ``timeout`` seconds.

    ``check`` returns a bool, or ``(done, detail)`` where detail is a string
    or the items still pending. Exceptions listed in ``retry_on`` count as
    "not yet" (their message becomes the pending detail); others propagate.
    Raises WaitTimedOut naming ``what`` and what is still pending. No side
    effects beyond those of ``check``.
    """
    if timeout <= 0 or interval <= 0:
        raise errors.BadParameters(f"wait for {what}: timeout and interval must be positive",
                                   fix="pass timeout > 0 and interval > 0")
    start = clock()
    deadline = start + timeout
    attempts = 0
    detail = ""
    while True:
        attempts += 1
        try:
            done, detail = _outcome(check())
        except retry_on as exc:
            done, detail = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        now = clock()
        if done:
            return Waited(what=what, attempts=attempts, elapsed=now - start, detail=detail)
        if now >= deadline:
            pending = f"; still pending: {detail}" if detail else ""
            raise errors.WaitTimedOut(
                f"timed out after {timeout:g}s waiting for {what} ({attempts} checks){pending}",
                fix=fix or f"look at what is still pending, fix it, or rerun with a longer timeout than {timeout:g}s",
            )
        sleep(max(0.0, min(interval, deadline - now)))


# --------------------------------------------------------------------------- step records

Status = Literal["ok", "failed", "skipped"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class StepRecord:
    """One finished step: times are UTC, duration in seconds."""

    name: str
    start: datetime
    end: datetime
    duration: float
    status: Status
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["start"] = self.start.isoformat()
        data["end"] = self.end.isoformat()
        data["duration"] = round(self.duration, 3)
        return data


@dataclass
class StepHandle:
    """Yielded by :meth:`Steps.step`; set ``detail`` to record what the step found."""

    name: str
    detail: str = ""


@dataclass
class Steps:
    """Records steps in order. ``with steps.step("drain node3") as s: ...``."""

    records: list[StepRecord] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[StepHandle]:
        """Record the block as a step; an exception marks it failed and is re-raised."""
        handle = StepHandle(name)
        start = _now()
        t0 = time.monotonic()
        try:
            yield handle
        except BaseException as exc:
            message = str(exc).splitlines()[0] if str(exc) else ""
            detail = f"{type(exc).__name__}: {message}".rstrip(": ")
            if handle.detail:
                detail = f"{handle.detail}; {detail}"
            self._add(name, start, t0, "failed", detail)
            raise
        self._add(name, start, t0, "ok", handle.detail)

    def skip(self, name: str, reason: str) -> StepRecord:
        """Record a step that was deliberately not run (dry run, already done)."""
        now = _now()
        record = StepRecord(name, now, now, 0.0, "skipped", reason)
        self.records.append(record)
        return record

    def _add(self, name: str, start: datetime, t0: float, status: Status, detail: str) -> None:
        self.records.append(
            StepRecord(name, start, _now(), time.monotonic() - t0, status, redact(detail))
        )

    @property
    def failed(self) -> list[StepRecord]:
        return [r for r in self.records if r.status == "failed"]

    def as_list(self) -> list[dict[str, object]]:
        return [r.as_dict() for r in self.records]


# --------------------------------------------------------------------------- summary


def summary_path_for(output_notebook: str | os.PathLike[str]) -> Path:
    """``runs/lab/2024-...-install.ipynb`` -> ``runs/lab/2024-...-install.summary.json``."""
    path = Path(output_notebook)
    stem = path.name[: -len(".ipynb")] if path.name.endswith(".ipynb") else path.name
    return path.with_name(f"{stem}.summary.json")


def write_summary(
    runbook: str,
    cluster: str,
    data: Mapping[str, object],
    *,
    steps: Steps | None = None,
    output_notebook: str | os.PathLike[str] | None = None,
) -> dict[str, object]:
    """Build the run summary and write it as JSON beside the output notebook.

    The notebook path is ``output_notebook`` (papermill's injected
    ``PAPERMILL_OUTPUT_PATH`` parameter or the runbook's own), else the
    ``PAPERMILL_OUTPUT_PATH`` environment variable; with neither, nothing is
    written (interactive run) and ``summary_path`` is None. Strings are
    redacted. Side effect: creates/overwrites ``NAME.summary.json``.
    Returns the summary dict.
    """
    records = steps.records if steps else []
    status = "failed" if any(r.status == "failed" for r in records) else "ok"
    target = output_notebook or os.environ.get("PAPERMILL_OUTPUT_PATH") or None
    path = summary_path_for(target) if target else None
    summary: dict[str, object] = {
        "runbook": runbook,
        "cluster": cluster,
        "status": status,
        "finished": _now().isoformat(),
        "steps": steps.as_list() if steps else [],
        **dict(data),
        "summary_path": str(path) if path else None,
    }
    summary = redact_data(summary)  # type: ignore[assignment]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n")
        tmp.replace(path)  # atomic: a reader never sees half a file
    return summary
