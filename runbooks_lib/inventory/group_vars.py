"""An inventory's group_vars: seed them from the checkout's sample, set variables with comments kept.

Kubespray reads settings such as addons (``group_vars/k8s_cluster/addons.yml``)
and DNS (``group_vars/all/all.yml``) from the INVENTORY directory; the checkout
is never edited. :func:`plan` works out what would change (nothing is
written), :func:`apply` writes the files of a plan. Files are edited with
ruamel.yaml round trips: comments, order and untouched keys stay as they are;
a new key is appended at the end of its file.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from runbooks_lib import errors
from runbooks_lib.inventory.yaml_doc import plain, round_trip_yaml

SAMPLE = Path("inventory") / "sample" / "group_vars"
_MISSING = object()


@dataclass(frozen=True)
class VarChange:
    """One variable set in one group_vars file (``old`` is None when it was not set)."""

    file: str  # relative to group_vars/, e.g. "k8s_cluster/addons.yml"
    key: str
    old: object
    new: object

    def line(self) -> str:
        return f"group_vars/{self.file}: {self.key}: {self.old!r} -> {self.new!r}"


@dataclass(frozen=True)
class GroupVarsPlan:
    """What :func:`apply` would write: the changes and each changed file's new text."""

    directory: Path  # the inventory's group_vars directory
    changes: tuple[VarChange, ...]
    texts: Mapping[str, str]

    @property
    def empty(self) -> bool:
        return not self.changes

    def lines(self) -> list[str]:
        return [c.line() for c in self.changes] or ["no changes"]


def seed_from_sample(kubespray_dir: str | Path, inventory_dir: str | Path, *, dry_run: bool = False) -> list[str]:
    """Copy the checkout's inventory/sample/group_vars files the inventory does not have yet.

    As ``cp -r inventory/sample inventory/mycluster`` does, but never over a
    file that exists (the operator may have edited it). Returns the copied
    files (relative to group_vars/); ``dry_run`` copies nothing. Raises
    PreconditionFailed when the checkout has no sample. Rollback: delete the
    listed files.
    """
    sample = Path(kubespray_dir).expanduser() / SAMPLE
    if not sample.is_dir():
        raise errors.PreconditionFailed(f"{sample} does not exist",
                                        fix="pass the top directory of a Kubespray checkout as kubespray_dir")
    target = Path(inventory_dir).expanduser() / "group_vars"
    copied = []
    for source in sorted(sample.rglob("*.yml")):
        rel = source.relative_to(sample)
        if (target / rel).exists():
            continue
        copied.append(str(rel))
        if not dry_run:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / rel)
    return copied


def _load(path: Path) -> CommentedMap:
    if not path.is_file():
        return CommentedMap()
    try:
        data = round_trip_yaml().load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise errors.BadParameters(f"{path} is not valid YAML: {exc}", fix="fix the YAML syntax at the position shown") from None
    if data is None:
        return CommentedMap()
    if not isinstance(data, CommentedMap):
        raise errors.BadParameters(f"{path} is not a mapping of variables", fix="group_vars files hold `name: value` lines")
    return data


def _dump(data: CommentedMap, original: str) -> str:
    buf = io.StringIO()
    round_trip_yaml().dump(data, buf)
    text = buf.getvalue()
    if original.startswith("---") and not text.startswith("---"):
        text = "---\n" + text
    return text


def read(inventory_dir: str | Path, file: str) -> dict[str, object]:
    """The variables of ``group_vars/FILE`` as plain values ({} when the file does not exist)."""
    return plain(_load(Path(inventory_dir).expanduser() / "group_vars" / file))  # type: ignore[return-value]


def plan(inventory_dir: str | Path, wanted: Mapping[str, Mapping[str, object]]) -> GroupVarsPlan:
    """What setting ``wanted`` (file -> {key: value}) changes. Reads files only.

    A key whose current value already equals the wanted one is no change, so a
    second run plans nothing. Raises BadParameters for a file that is not YAML.
    """
    directory = Path(inventory_dir).expanduser() / "group_vars"
    changes: list[VarChange] = []
    texts: dict[str, str] = {}
    for file, values in wanted.items():
        path = directory / file
        original = path.read_text(encoding="utf-8") if path.is_file() else ""
        data = _load(path)
        changed = False
        for key, value in values.items():
            old = data.get(key, _MISSING)
            if old is not _MISSING and plain(old) == value:
                continue
            changes.append(VarChange(file, key, None if old is _MISSING else plain(old), value))
            data[key] = value
            changed = True
        if changed:
            texts[file] = _dump(data, original)
    return GroupVarsPlan(directory, tuple(changes), texts)


def apply(planned: GroupVarsPlan) -> list[Path]:
    """Write the files of ``planned`` (each atomically); returns the files written.

    Side effect: files under the inventory's group_vars/. Rollback: set the
    ``old`` values of the plan's changes again (or restore the files from
    version control).
    """
    written = []
    for file, text in planned.texts.items():
        path = planned.directory / file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
