"""Inventory settings that would undo the pinned SSH host keys of an ansible-playbook run.

:mod:`runbooks_lib.kubespray` pins host keys through the environment
(ANSIBLE_HOST_KEY_CHECKING, ANSIBLE_SSH_ARGS), but Ansible's inventory
variables outrank the environment: ``ansible_ssh_args`` replaces the pinned
options, host-key options in ``ansible_ssh_common_args`` /
``ansible_ssh_extra_args`` take effect, ``ansible_host_key_checking`` turns
checking off, another ``ansible_connection`` does not use OpenSSH. The same
holds for some environment variables passed in (the runbooks' ``ansible_env``).
:func:`problems` finds them in the inventory file, the group_vars/ and
host_vars/ beside it, and that environment. Reads files only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import yaml

from runbooks_lib.inventory.document import load

# Variables that replace the pinned ssh options, whatever their value.
REPLACING_VARS = ("ansible_ssh_args",)
# Variables whose ssh options are added to the command line: host-key options in them are refused.
ARGS_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_scp_extra_args", "ansible_sftp_extra_args")
CHECKING_VARS = ("ansible_host_key_checking", "ansible_ssh_host_key_checking", "ansible_paramiko_host_key_checking")
# ansible-core runs "smart" as ssh; "local" connects to no machine, so no host key is involved.
SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh", "smart", "local", "ansible.builtin.local")
TRUE = ("true", "yes", "on", "1", "y", "t")
# Host-key options (lower case) and the only value each may have in an inventory (None: no value).
HOST_KEY_OPTIONS: Mapping[str, str | None] = {
    "stricthostkeychecking": "yes",
    "userknownhostsfile": None,  # only the pinned known_hosts itself (see problems(known_hosts=...))
    "globalknownhostsfile": "/dev/null",
    "updatehostkeys": "no",
    "knownhostscommand": "none",
    "verifyhostkeydns": "no",
    "checkhostip": "no",
    "hostkeyalias": None,
}
_OPTION = re.compile(r"(?i)(" + "|".join(HOST_KEY_OPTIONS) + r")(?:\s*=\s*|\s+)"
                     r"(?:\"([^\"]*)\"|'([^']*)'|([^\s\"']*))")
# ssh programs the run may use: OpenSSH itself and the lab's wrapper, which changes ConnectionAttempts only.
TRUSTED_SSH = ("ssh", "/usr/bin/ssh")
ENV_KEYS: Mapping[str, str] = {
    "ANSIBLE_SSH_ARGS": "replaces the pinned ssh options",
    "ANSIBLE_SSH_COMMON_ARGS": "adds ssh options after the pinned ones",
    "ANSIBLE_SSH_EXTRA_ARGS": "adds ssh options after the pinned ones",
    "ANSIBLE_SCP_EXTRA_ARGS": "adds ssh options to file transfers",
    "ANSIBLE_SFTP_EXTRA_ARGS": "adds ssh options to file transfers",
    "ANSIBLE_HOST_KEY_CHECKING": "decides whether host keys are checked",
    "ANSIBLE_SSH_HOST_KEY_CHECKING": "decides whether host keys are checked",
    "ANSIBLE_PARAMIKO_HOST_KEY_CHECKING": "decides whether paramiko checks host keys",
    "ANSIBLE_PARAMIKO_HOST_KEY_AUTO_ADD": "makes paramiko accept and record unknown host keys",
    "ANSIBLE_SSH_EXECUTABLE": "runs another program instead of ssh, which may drop the pinned options",
    "ANSIBLE_TRANSPORT": "picks the connection plugin (paramiko has its own host-key policy)",
    "ANSIBLE_CONNECTION_PLUGINS": "can replace the ssh connection plugin",
    "ANSIBLE_CONFIG": "replaces the checkout's ansible.cfg, whose ssh settings are not checked",
}
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")


class _Loader(yaml.SafeLoader):
    """safe_load that reads Ansible's tags (!vault, !unsafe) as plain values: only keys matter here."""


_Loader.add_multi_constructor("!", lambda loader, _suffix, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None))


def _option_problems(text: str, known_hosts: Path | None) -> list[str]:
    found = []
    for match in _OPTION.finditer(text):
        name = match[1].lower()
        value = next((v for v in match.groups()[1:] if v is not None), "")
        allowed = HOST_KEY_OPTIONS[name]
        if name == "userknownhostsfile" and known_hosts is not None and value:
            if Path(value).expanduser().resolve() == known_hosts:
                continue
        elif allowed is not None and value.lower() == allowed:
            continue
        found.append(f"{match[1]}={value}")
    return found


def _var_problem(key: str, value: object, known_hosts: Path | None) -> str | None:
    """Why setting ``key`` to ``value`` undoes the pins, or None."""
    if key in REPLACING_VARS:
        return (", which replaces the pinned host-key options (remove it; put other ssh options in "
                "ansible_ssh_common_args without host-key options)")
    if key in ARGS_VARS:
        bad = _option_problems(str(value), known_hosts)
        if bad:
            return (f" with host-key option(s) {', '.join(bad)}, which override the pinned known_hosts checking "
                    f"(remove them from {key}; host keys are pinned by the run)")
    elif key in CHECKING_VARS:
        if value is not True and value != 1 and str(value).strip().lower() not in TRUE:
            return f" to {value!r}, which turns host-key checking off (remove it)"
    elif key == "ansible_connection":
        if str(value).strip() not in SSH_CONNECTIONS:
            return (f" to {value!r}: only OpenSSH (ansible_connection ssh) runs with the pinned host keys; "
                    "local connects to nothing (remove it)")
    elif key == "ansible_ssh_executable":
        if str(value).strip() not in TRUSTED_SSH:
            return f" to {value!r}, which runs instead of ssh and may drop the pinned options (remove it)"
    return None


def _vars_files(directory: Path) -> Iterator[Path]:
    """The files Ansible reads in ``directory`` (as its vars loader: no hidden or ``~`` files, YAML/JSON or
    no suffix, directories recursively)."""
    if not directory.is_dir():
        return
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith("~") or entry.suffix not in _VARS_SUFFIXES:
            continue
        if entry.is_dir():
            yield from _vars_files(entry)
        elif entry.is_file():
            yield entry


def _vars_file_problems(file: Path, where: str, known_hosts: Path | None) -> list[str]:
    text = file.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("$ANSIBLE_VAULT"):
        return [f"{file}: {where}: vault-encrypted, so its connection settings cannot be checked (keep "
                "ansible_ssh_* and ansible_connection out of encrypted files; encrypt single values with !vault)"]
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        return [f"{file}: {where}: not valid YAML, so it cannot be checked ({str(exc).splitlines()[0]})"]
    if not isinstance(data, Mapping):
        return []
    return _mapping_problems(file, where, data, known_hosts)


def _mapping_problems(file: Path | str, where: str, variables: Mapping[object, object],
                      known_hosts: Path | None) -> list[str]:
    found = []
    for key, value in variables.items():
        why = _var_problem(str(key), value, known_hosts)
        if why:
            found.append(f"{file}: {where} sets {key}{why}")
    return found


def _inventory_files(path: Path) -> Iterable[Path]:
    if path.is_dir():  # ansible-playbook -i DIR reads every inventory file in it
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml", ".ini", ".json"))
    return (path,)


def problems(inventory_path: str | Path, ansible_env: Mapping[str, str] | None = None, *,
             known_hosts: str | Path | None = None, trusted_ssh: tuple[str, ...] = ()) -> list[str]:
    """One line per setting that would undo the pinned host keys, naming file, host or group, key and fix.

    Checks host vars and group vars of the inventory file (hosts.yaml or
    inventory.ini), every file of the group_vars/ and host_vars/ directories
    beside it, and the keys of ``ansible_env``. Values are not evaluated (a
    Jinja value is only read as text). ``known_hosts`` is the file the run
    pins: ``UserKnownHostsFile`` naming it is allowed (the lab writes it so).
    ``trusted_ssh``: ssh wrappers the caller vouches for in ANSIBLE_SSH_EXECUTABLE
    (besides plain ssh), e.g. a test's wrapper that keeps every option.
    Empty list = nothing found. Raises BadParameters for an unreadable inventory.
    """
    path = Path(inventory_path).expanduser()
    pinned = Path(known_hosts).expanduser().resolve() if known_hosts is not None else None
    found: list[str] = []
    for file in _inventory_files(path):
        inv = load(file)
        for name, group in inv.groups.items():
            found += _mapping_problems(file, f"group {name}", group.vars, pinned)
        for name, host in inv.hosts.items():
            found += _mapping_problems(file, f"host {name}", host.vars, pinned)
    base = path if path.is_dir() else path.parent
    for kind, label in (("group_vars", "group"), ("host_vars", "host")):
        for file in _vars_files(base / kind):
            name = file.relative_to(base / kind).parts[0]
            name = name[: -len(Path(name).suffix)] if Path(name).suffix else name
            found += _vars_file_problems(file, f"{label} {name}", pinned)
    for key, value in (ansible_env or {}).items():
        reason = ENV_KEYS.get(str(key).upper())
        if reason and not (str(key).upper() == "ANSIBLE_SSH_EXECUTABLE"
                           and str(value).strip() in (*TRUSTED_SSH, *trusted_ssh)):
            found.append(f"ansible_env: {key} {reason}; host keys must stay pinned (remove {key} from ansible_env)")
    return found
