"""What a run started and must undo, written down before it starts it.

A run can end without reaching its teardown: SIGKILL, a dead kernel, a lost
machine. A runbook that starts something it must stop (a fault on a node,
keepalived on the nodes, a local HAProxy) records each such thing in its
ledger *before* starting it and removes the entry once it is undone. The next
run of that runbook, or ``runbooks run NAME --cleanup``, reads the ledger and
undoes what is still listed before anything else.

The ledger is a JSON file beside the inventory
(``INVENTORY_DIR/.runbooks-leftovers/RUNBOOK.json``): shared by every checkout
and runs folder that use this inventory, and it survives a reboot of this
machine. Writes are atomic (temp file, fsync, rename, fsync of the directory).
It holds names, addresses and modes only, never a secret.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runbooks_lib import errors, local
from runbooks_lib.inventory.document import write_atomic

LEDGER_DIR = ".runbooks-leftovers"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class Leftover:
    """One thing a run started and has not undone (yet)."""

    kind: str
    target: str
    since: str
    pid: int
    detail: Mapping[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """``kind on target (since STAMP, run pid N)``: how a leftover is named to the operator."""
        extra = ", ".join(f"{k} {v}" for k, v in self.detail.items() if isinstance(v, (str, int, float)))
        return f"{self.kind} on {self.target}" + (f" ({extra})" if extra else "") + \
            f", started {self.since} by pid {self.pid}"


class Ledger:
    """The ledger of one runbook for one inventory (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_runbook(cls, inventory: str | os.PathLike[str], runbook: str) -> Ledger:
        """The ledger of ``runbook`` beside ``inventory`` (the inventory's real path; nothing is created)."""
        if not _NAME.fullmatch(runbook):
            raise errors.BadParameters(f"runbook name {runbook!r} cannot name a ledger")
        real = Path(os.path.realpath(os.path.expanduser(os.fspath(inventory))))
        return cls(real.parent / LEDGER_DIR / f"{runbook}.json")

    def entries(self) -> list[Leftover]:
        """What is still listed, oldest first; [] without a ledger. Raises RunbookError for a damaged file."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise errors.RunbookError(f"the leftovers ledger {self.path} cannot be read: {exc}",
                                      fix="read it, undo what it lists by hand, then remove it") from None
        try:
            return [Leftover(str(e["kind"]), str(e["target"]), str(e["since"]), int(e["pid"]),
                             dict(e.get("detail") or {})) for e in data]
        except (TypeError, KeyError, ValueError) as exc:
            raise errors.RunbookError(f"the leftovers ledger {self.path} is malformed ({exc})",
                                      fix="read it, undo what it lists by hand, then remove it") from None

    def record(self, kind: str, target: str, **detail: Any) -> Leftover:
        """List ``kind`` on ``target`` (replacing an entry of the same kind and target) before starting it.

        Side effect: writes the ledger (creating its directory, mode 0700).
        """
        entry = Leftover(kind, target, datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"), os.getpid(),
                         dict(detail))
        kept = [e for e in self.entries() if (e.kind, e.target) != (kind, target)]
        self._write([*kept, entry])
        return entry

    def done(self, kind: str, target: str) -> None:
        """Remove ``kind`` on ``target`` once it is undone (idempotent). Side effect: writes or removes the ledger."""
        kept = [e for e in self.entries() if (e.kind, e.target) != (kind, target)]
        self._write(kept)

    def _write(self, entries: list[Leftover]) -> None:
        directory = self.path.parent
        if not entries:
            if self.path.exists():
                self.path.unlink()
                local.fsync_directory(directory)
            return
        if not directory.is_dir():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            local.fsync_directory(directory.parent)
        data = json.dumps([{"kind": e.kind, "target": e.target, "since": e.since, "pid": e.pid,
                            "detail": dict(e.detail)} for e in entries], indent=2, default=str) + "\n"
        write_atomic(self.path, data.encode(), mode=0o600)
