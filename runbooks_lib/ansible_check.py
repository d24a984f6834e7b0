"""Which ansible-playbook runs a Kubespray checkout, and whether the checkout accepts its version.

Kubespray gates its own Ansible: a play named "Check Ansible version" asserts
``minimal_ansible_version <= ansible_version < maximal_ansible_version``
(``ansible_version.yml`` at the root up to v2.21, ``playbooks/ansible_version.yml``
from v2.22). An Ansible outside that range fails the first play of every
playbook, which for a destructive runbook means after it changed the cluster.
:func:`check` reads the gate and asks the operator's ansible-playbook for its
version, so a runbook refuses in its preflight instead.

Reads files and runs ``ansible-playbook --version`` only.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from runbooks_lib import errors, local

GATE_FILES = ("ansible_version.yml", "playbooks/ansible_version.yml")
_VERSION = re.compile(r"^ansible-playbook\s+(?:\[core\s+)?(?P<version>\d+\.\d+(?:\.\d+)?)", re.M)


@dataclass(frozen=True)
class Gate:
    """The checkout's accepted Ansible versions: ``minimum <= version < maximum``."""

    minimum: str
    maximum: str
    file: Path


@dataclass(frozen=True)
class AnsibleCheck:
    """The ansible-playbook a runbook will run, its version and the checkout's gate (None: no gate found)."""

    path: str
    version: str
    gate: Gate | None

    def line(self) -> str:
        """One line for a preflight table."""
        where = f"{self.gate.minimum} <= version < {self.gate.maximum} ({self.gate.file.name})" if self.gate \
            else "no version gate in the checkout"
        return f"{self.path}: Ansible {self.version}; the checkout accepts {where}"


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def resolve(value: str | os.PathLike[str], kubespray_dir: str | os.PathLike[str]) -> str:
    """The ansible-playbook to run for the ``ansible_playbook`` parameter ``value``.

    Empty: ``KUBESPRAY_DIR/venv/bin/ansible-playbook`` when that exists (the
    checkout's own virtualenv, as Kubespray's docs set it up), else
    ``ansible-playbook`` on PATH, else the one beside this Python. A bare name
    is looked up on PATH; a path has ``~`` expanded. Raises PreconditionFailed
    when it does not exist or cannot be executed. Reads the file system only.
    """
    text = os.fspath(value)
    checkout = Path(kubespray_dir).expanduser()
    if text in ("", "."):
        own = checkout / "venv" / "bin" / "ansible-playbook"
        beside = Path(sys.executable).parent / "ansible-playbook"
        found = str(own) if own.exists() else shutil.which("ansible-playbook") or (
            str(beside) if beside.exists() else None)
    elif "/" not in text and not text.startswith("~"):
        found = shutil.which(text)
    else:
        found = str(Path(text).expanduser())
    if not found or not Path(found).is_file() or not os.access(found, os.X_OK):
        raise errors.PreconditionFailed(
            f"ansible-playbook {text or '(empty: the checkout venv, PATH)'} not found or not executable; "
            "nothing was changed", fix=_fix(checkout))
    return found


def _fix(checkout: Path) -> str:
    return (f"install the checkout's own Ansible into its virtualenv: cd {checkout} && python3 -m venv venv && "
            "venv/bin/pip install -r requirements.txt; then set ansible_playbook to "
            f"{checkout}/venv/bin/ansible-playbook (or leave it empty)")


def gate(kubespray_dir: str | os.PathLike[str]) -> Gate | None:
    """The version range the checkout's "Check Ansible version" play asserts, or None when it has none.

    Raises BadParameters for a gate file that is not YAML. Reads files only.
    """
    checkout = Path(kubespray_dir).expanduser()
    for name in GATE_FILES:
        path = checkout / name
        if not path.is_file():
            continue
        try:
            plays = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        except yaml.YAMLError as exc:
            raise errors.BadParameters(f"{path} is not valid YAML: {exc}", fix="restore the checkout's file "
                                       "(git checkout -- ansible_version.yml)") from None
        for play in plays if isinstance(plays, list) else []:
            found = (play or {}).get("vars") or {} if isinstance(play, dict) else {}
            if "minimal_ansible_version" in found and "maximal_ansible_version" in found:
                return Gate(str(found["minimal_ansible_version"]), str(found["maximal_ansible_version"]), path)
    return None


def check(value: str | os.PathLike[str], kubespray_dir: str | os.PathLike[str], *,
          timeout: float = 60.0) -> AnsibleCheck:
    """Resolve ``value`` (:func:`resolve`), run it with ``--version`` and compare with the checkout's gate.

    Raises PreconditionFailed when it does not run, prints no version, or its
    version lies outside the gate, naming the fix (the checkout's requirements
    in its own virtualenv). Side effects: runs ``ansible-playbook --version``.
    """
    path = resolve(value, kubespray_dir)
    checkout = Path(kubespray_dir).expanduser()
    result = local.run([path, "--version"], timeout=timeout, check=False)
    match = _VERSION.search(result.stdout)
    if result.exited != 0 or not match:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise errors.PreconditionFailed(
            f"{path} --version failed (exit {result.exited}): {' / '.join(tail) or 'no output'}; nothing was changed",
            fix=_fix(checkout))
    version = match.group("version")
    found = gate(checkout)
    if found and not _numbers(found.minimum) <= _numbers(version) < _numbers(found.maximum):
        raise errors.PreconditionFailed(
            f"{path} is Ansible {version}, but the Kubespray checkout {checkout} accepts "
            f"{found.minimum} <= version < {found.maximum} ({found.file.relative_to(checkout)}): its first play "
            "would fail after this runbook had started changing the cluster; nothing was changed",
            fix=_fix(checkout))
    return AnsibleCheck(path, version, found)
