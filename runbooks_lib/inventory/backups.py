"""Each runbook's own copy of the inventory as it was before that run saved it, timestamped.

Layout: a hidden directory beside the inventory, one file per backup::

    <inventory dir>/.inventory-backups/<inventory name>.<UTC stamp>.<runbook>.bak
    e.g. inventory/lab/.inventory-backups/hosts.yaml.20250301T101500Z.remove-worker.bak

The stamp is ``YYYYmmddTHHMMSSZ`` (UTC); when another backup of the same inventory already has it (two
saves in one second), ``-2``, ``-3``... is appended, so the names still sort in the order they were made.

Ansible never reads a backup as an inventory source, even with ``-i <inventory dir>``: its inventory
directory loader skips every entry whose name starts with a dot (``IGNORED_ALWAYS = [br"^\\.", ...]`` in
ansible/inventory/manager.py, ansible-core 2.12 to 2.19 at least, not configurable), and the ``.bak``
suffix is in the default ``INVENTORY_IGNORE_EXTS`` as a second guard. Kubespray reads every file under
``group_vars/``, never this directory.

The directory is 0700 and every backup 0600 (an inventory may carry secrets such as
``ansible_become_password``); each backup is written to a temp file, fsynced, then linked to its final
name (never overwriting another run's backup), and the directory is fsynced. Pruning is per runbook: the
newest ``keep`` backups of each runbook are kept, so frequent runs of one runbook (add-worker) never push
out another's (the remove-worker backups its re-run check reads).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from runbooks_lib import errors, local
from runbooks_lib.inventory.document import Inventory, format_for
from runbooks_lib.local import fsync_directory

BACKUP_DIR = ".inventory-backups"
KEEP = 10
SUFFIX = ".bak"

_STAMP = re.compile(r"\d{8}T\d{6}Z")
_RUNBOOK = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MIDDLE = re.compile(rf"(?P<stamp>{_STAMP.pattern})(?:-(?P<n>[1-9][0-9]*))?\.(?P<runbook>{_RUNBOOK.pattern})")


@dataclass(frozen=True)
class Backup:
    """One kept backup: its file, its stamp (``20250301T101500Z`` or ``20250301T101500Z-2``) and runbook."""

    path: Path
    stamp: str
    runbook: str

    @property
    def inventory_name(self) -> str:
        """The name of the inventory file it is a copy of (``hosts.yaml``)."""
        return self.path.name[: -len(f".{self.stamp}.{self.runbook}{SUFFIX}")]

    def load(self) -> Inventory:
        """The backup read as an inventory (format from the inventory's name). Raises BadParameters when malformed."""
        inv = Inventory.parse(self.path.read_text(encoding="utf-8"), format_for(Path(self.inventory_name)),
                              source=str(self.path))
        inv.path = self.path
        return inv

    def _order(self) -> tuple[str, int]:
        base, _, n = self.stamp.partition("-")
        return base, int(n or 1)


def backup_dir(inventory_path: str | os.PathLike[str]) -> Path:
    """The directory that holds the backups of ``inventory_path``: ``<its dir>/.inventory-backups``."""
    return Path(inventory_path).expanduser().parent / BACKUP_DIR


def stamp_now(now: datetime | None = None) -> str:
    """A UTC stamp ``YYYYmmddTHHMMSSZ`` for ``now`` (default: the current time)."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise errors.BadParameters(f"stamp_now needs an aware datetime, got {now!r}", fix="pass a UTC datetime")
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def backups(inventory_path: str | os.PathLike[str], runbook: str | None = None) -> list[Backup]:
    """The kept backups of ``inventory_path`` (only ``runbook``'s when given), newest first. Reads a directory."""
    inventory_path = Path(inventory_path).expanduser()
    directory = backup_dir(inventory_path)
    prefix = inventory_path.name + "."
    found = []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(SUFFIX)):
            continue
        match = _MIDDLE.fullmatch(name[len(prefix): -len(SUFFIX)])
        if match is None or (runbook is not None and match["runbook"] != runbook):
            continue
        stamp = match["stamp"] + (f"-{match['n']}" if match["n"] else "")
        if (directory / name).is_file():
            found.append(Backup(directory / name, stamp, match["runbook"]))
    return sorted(found, key=Backup._order, reverse=True)


def latest(inventory_path: str | os.PathLike[str], runbook: str | None = None) -> Backup | None:
    """The newest kept backup of ``inventory_path`` (of ``runbook`` when given); None when there is none."""
    found = backups(inventory_path, runbook)
    return found[0] if found else None


def load_backups(inventory_path: str | os.PathLike[str], runbook: str | None = None) -> list[Inventory]:
    """Every kept backup of ``inventory_path`` (of ``runbook`` when given) read as an Inventory, newest first.

    Raises BadParameters when a backup is malformed.
    """
    return [b.load() for b in backups(inventory_path, runbook)]


def planned_path(inventory_path: str | os.PathLike[str], runbook: str, stamp: str) -> Path:
    """The file :func:`save_backup` with this ``stamp`` would write now (to name it in a plan before saving).

    Raises BadParameters for a malformed runbook name or stamp.
    """
    _check(runbook, stamp)
    inventory_path = Path(inventory_path).expanduser()
    taken = {b.stamp for b in backups(inventory_path)}
    return backup_dir(inventory_path) / _name(inventory_path.name, _free_stamp(stamp, taken), runbook)


def save_backup(inventory_path: str | os.PathLike[str], runbook: str, *, stamp: str | None = None,
                keep: int = KEEP) -> Path:
    """Copy the inventory as it is now to a new backup of ``runbook``; return the backup's path.

    Call it right before the runbook saves the inventory, and name the returned path in the run record
    (:func:`planned_path` names it in the plan). ``stamp`` (default: now, see :func:`stamp_now`) is the
    run's UTC stamp. The backup is 0600, fsynced, never overwrites another; then the oldest backups of
    ``runbook`` for this inventory beyond the newest ``keep`` are deleted. Raises BadParameters when
    there is no inventory file, for a malformed runbook name or stamp, or ``keep`` < 1; OSError when the
    file system refuses. Rollback: delete the returned file.
    """
    stamp = stamp or stamp_now()
    _check(runbook, stamp)
    if keep < 1:
        raise errors.BadParameters(f"keep must be at least 1, got {keep}", fix="keep the new backup at least")
    source = Path(inventory_path).expanduser()
    if not source.is_file():
        raise errors.BadParameters(f"inventory {source} does not exist: nothing to back up",
                                   fix="back up only an inventory that is about to be replaced")
    data = source.read_bytes()
    directory = backup_dir(source)
    if not directory.is_dir():
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        fsync_directory(directory.parent)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")  # 0600 from its creation
    try:
        try:
            local.write_synced(fd, data)
        finally:
            os.close(fd)
        while True:
            taken = {b.stamp for b in backups(source)}
            target = directory / _name(source.name, _free_stamp(stamp, taken), runbook)
            try:
                os.link(tmp, target)  # fails rather than overwrite a backup another run just made
                break
            except FileExistsError:
                continue
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_directory(directory)
    prune(source, runbook, keep=keep, spare=target)
    return target


def prune(inventory_path: str | os.PathLike[str], runbook: str, *, keep: int = KEEP,
          spare: Path | None = None) -> list[Path]:
    """Delete the backups of ``runbook`` for ``inventory_path`` beyond the newest ``keep``; return them.

    ``spare`` (the backup just made) is never deleted, even when its stamp is older than ``keep`` others.
    """
    old = [b.path for b in backups(inventory_path, runbook)[keep:] if b.path != spare]
    for path in old:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if old:
        fsync_directory(backup_dir(inventory_path))
    return old


def _check(runbook: str, stamp: str) -> None:
    if not _RUNBOOK.fullmatch(runbook):
        raise errors.BadParameters(f"runbook name {runbook!r} cannot name a backup",
                                   fix="use lower-case letters, digits and dashes, e.g. 'remove-worker'")
    if not _STAMP.fullmatch(stamp):
        raise errors.BadParameters(f"backup stamp {stamp!r} is not YYYYmmddTHHMMSSZ",
                                   fix="pass stamp_now() or leave stamp out")


def _free_stamp(stamp: str, taken: set[str]) -> str:
    if stamp not in taken:
        return stamp
    n = 2
    while f"{stamp}-{n}" in taken:
        n += 1
    return f"{stamp}-{n}"


def _name(inventory_name: str, stamp: str, runbook: str) -> str:
    return f"{inventory_name}.{stamp}.{runbook}{SUFFIX}"
