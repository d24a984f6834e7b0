"""Step records of a runbook run and the JSON summary written beside the output notebook."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from runbooks_lib.redaction import redact, redact_data

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
