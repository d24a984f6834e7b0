"""A Kubespray inventory file (hosts.yaml or inventory.ini): read, edit, validate, save.

Both formats Kubespray accepts are edited in place, keeping comments and
order: ``hosts.yaml`` (ruamel.yaml round trip) and ``inventory.ini`` (a small
line-preserving parser/writer: host vars on the host line, ``[group:children]``,
``[group:vars]``). Both present the same model: hosts with their vars, and
groups with direct hosts and child groups; :meth:`Inventory.members` resolves
children (``[etcd:children] kube_control_plane`` makes the control planes the
etcd members).

Group order matters to Kubespray: the first host of kube_control_plane and of
etcd is special (join tokens, etcd certificates, member removal are delegated
to it), so new hosts are always appended at the END of a group.
Nothing here touches a machine; ``save`` writes the file.
"""

from __future__ import annotations

import contextlib
import copy
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from runbooks_lib import errors, local
from runbooks_lib.inventory import ini_doc, yaml_doc
from runbooks_lib.inventory.ini_doc import IniDoc
from runbooks_lib.inventory.model import (
    ADDRESS_VARS,
    CALICO_RR,
    CONTROL_PLANE,
    ETCD,
    IMPLICIT_GROUPS,
    K8S_CLUSTER,
    KNOWN_GROUPS,
    LEGACY_GROUPS,
    WORKERS,
    Format,
    Group,
    Host,
    check_ip,
)
from runbooks_lib.inventory.yaml_doc import YamlDoc


def format_for(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        return "yaml"
    if suffix in (".ini", "", ".cfg", ".txt"):
        return "ini"
    raise errors.BadParameters(f"inventory {path}: unknown format {suffix!r}",
                               fix="use hosts.yaml (YAML) or inventory.ini (INI)")


class Inventory:
    """A Kubespray inventory (YAML or INI) with its comments and order.

    Edits change the document in memory; :meth:`save` writes it. Raises
    BadParameters for unknown hosts/groups and unreadable files.
    """

    def __init__(self, doc: YamlDoc | IniDoc, path: Path | None = None) -> None:
        self._doc = doc
        self.path = path

    # ---- construction
    @classmethod
    def parse(cls, text: str, format: Format, *, source: str = "<text>") -> Inventory:  # noqa: A002
        doc = YamlDoc(text, source) if format == "yaml" else IniDoc(text, source)
        return cls(doc)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Inventory:
        """Read ``path`` (format from the suffix). Raises BadParameters when missing or malformed."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise errors.BadParameters(f"inventory {p} does not exist",
                                       fix="pass the path of hosts.yaml or inventory.ini (inventory parameter)")
        inv = cls.parse(p.read_text(encoding="utf-8"), format_for(p), source=str(p))
        inv.path = p
        return inv

    def dumps(self) -> str:
        return self._doc.dumps()

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the inventory durably and atomically to ``path`` or where it was loaded from.

        See :func:`write_atomic`: an existing file keeps its mode, a new one gets the umask's;
        a crash or an error leaves the old file whole.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise errors.BadParameters("inventory has no path to save to", fix="pass save(path)")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, self.dumps().encode("utf-8"))
        self.path = target
        return target

    def copy(self) -> Inventory:
        return Inventory(copy.deepcopy(self._doc), self.path)

    @property
    def format(self) -> Format:
        return self._doc.format

    def convert(self, format: Format) -> Inventory:  # noqa: A002
        """The same hosts and groups written fresh in ``format`` (comments are not carried over)."""
        render = yaml_doc.render if format == "yaml" else ini_doc.render
        return Inventory.parse(render(self.hosts, self.groups), format)

    # ---- reading
    @property
    def hosts(self) -> dict[str, Host]:
        hosts, _groups = self._doc.model()
        return {name: Host(name, dict(v)) for name, v in hosts.items()}

    @property
    def groups(self) -> dict[str, Group]:
        return self._doc.model()[1]

    def host(self, name: str) -> Host:
        hosts = self.hosts
        if name not in hosts:
            raise errors.BadParameters(f"host {name!r} is not in the inventory (hosts: {', '.join(hosts) or 'none'})",
                                       fix="check the node name against the inventory")
        return hosts[name]

    def members(self, group: str) -> list[str]:
        """Hosts of ``group`` in Ansible's order: its own hosts, then its children's."""
        if group == "all":
            return list(self.hosts)
        groups = self.groups
        result: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen or name not in groups:
                return
            seen.add(name)
            for host in groups[name].hosts:
                if host not in result:
                    result.append(host)
            for child in groups[name].children:
                visit(child)

        visit(group)
        return result

    def groups_of(self, host: str) -> list[str]:
        """Every group ``host`` belongs to (resolved through children), in group order."""
        return [g for g in self.groups if g not in IMPLICIT_GROUPS and host in self.members(g)]

    @property
    def control_planes(self) -> list[str]:
        return self.members(CONTROL_PLANE)

    @property
    def etcd_members(self) -> list[str]:
        return self.members(ETCD)

    @property
    def workers(self) -> list[str]:
        return self.members(WORKERS)

    # ---- editing
    def add_host(
        self,
        name: str,
        *,
        ip: str,
        groups: Sequence[str],
        ansible_host: str | None = None,
        access_ip: str | None = None,
        etcd_member_name: str | None = None,
        vars: Mapping[str, object] | None = None,  # noqa: A002
    ) -> Host:
        """Define ``name`` and append it at the END of each group in ``groups``.

        Sets ansible_host/ip/access_ip (default: ``ip``) and, for etcd,
        etcd_member_name (default: the next free ``etcdN``). Raises
        BadParameters for a name already defined, a duplicate IP, or a group
        that gets its members from children (edit the child group instead).
        Rollback: :meth:`remove_host`.
        """
        check_ip(ip, name)
        if name in self.hosts:
            raise errors.BadParameters(f"host {name!r} is already in the inventory",
                                       fix="pick a new name, or remove the old entry first")
        for other in self.hosts.values():
            if ip in (other.ip, other.ansible_host):
                raise errors.BadParameters(f"IP {ip} is already used by host {other.name!r}",
                                           fix=f"remove {other.name} first, or check the IP")
        for group in groups:
            self._require_direct(group, name, action="add to")
        hvars: dict[str, object] = {
            "ansible_host": ansible_host or ip,
            "ip": ip,
            "access_ip": access_ip or ip,
        }
        if ETCD in groups or any(ETCD in self._ancestors(g) for g in groups):
            hvars["etcd_member_name"] = etcd_member_name or self._next_etcd_name()
        elif etcd_member_name:
            hvars["etcd_member_name"] = etcd_member_name
        hvars.update(vars or {})
        for group in groups:
            self._doc.add_member(group, name)
        self._doc.define_host(name, hvars)
        return self.host(name)

    def update_host_vars(self, name: str, updates: Mapping[str, object], *, remove: Iterable[str] = ()) -> Host:
        """Set (and remove) vars of an existing host, keeping the other vars and their order."""
        current = dict(self.host(name).vars)
        for key in remove:
            current.pop(key, None)
        current.update(updates)
        self._doc.define_host(name, current)
        return self.host(name)

    def remove_host(self, name: str, *, groups: Sequence[str] | None = None, keep_in_all: bool = False) -> list[str]:
        """Remove ``name`` from ``groups`` (default: every group it is listed in).

        With ``keep_in_all`` (or when some groups are kept) its definition and
        vars stay in the inventory. Returns the groups it was removed from.
        Raises BadParameters when it is a member only through a child group.
        Rollback: :meth:`add_host` (appends at the END, never first).
        """
        host = self.host(name)
        targets = list(groups) if groups is not None else [
            g for g, grp in self.groups.items() if name in grp.hosts and g not in IMPLICIT_GROUPS]
        for group in targets:
            self._require_direct(group, name, action="remove from", must_be_member=True)
        removed = [g for g in targets if self._doc.remove_member(g, name)]
        still_listed = any(name in grp.hosts for g, grp in self.groups.items() if g not in IMPLICIT_GROUPS)
        if keep_in_all or still_listed:
            self._doc.define_host(name, host.vars)
        else:
            self._doc.undefine_host(name)
        return removed

    def append_member(self, group: str, host: str) -> None:
        """Append an already defined host at the END of ``group`` (its vars kept). Rollback: :meth:`remove_host`."""
        if host not in self.hosts:
            raise errors.BadParameters(f"host {host!r} is not defined in the inventory", fix="use add_host")
        self._require_direct(group, host, action="add to")
        if host not in self.members(group):
            self._doc.add_member(group, host)

    def move_to_end(self, group: str, host: str) -> None:
        """Move ``host`` to the end of ``group`` (so it is no longer first). Rollback: :meth:`move_to_front`."""
        self._move(group, host, -1)

    def move_to_front(self, group: str, host: str) -> None:
        """Make ``host`` the first host of ``group`` (Kubespray delegates to it). Rollback: :meth:`move_to_end`."""
        self._move(group, host, 0)

    def _move(self, group: str, host: str, index: int) -> None:
        self._require_direct(group, host, action="reorder in", must_be_member=True)
        self._doc.move_member(group, host, index)

    def expand_children(self, group: str) -> None:
        """Replace ``group``'s child groups by their current hosts, listed directly.

        Needed before editing etcd separately when it is written as
        ``[etcd:children] kube_control_plane``.
        """
        members = self.members(group)
        self._doc.drop_children(group)
        for host in members:
            self._doc.add_member(group, host)

    def _ancestors(self, group: str) -> set[str]:
        groups = self.groups
        found: set[str] = set()
        frontier = [group]
        while frontier:
            current = frontier.pop()
            for name, grp in groups.items():
                if current in grp.children and name not in found:
                    found.add(name)
                    frontier.append(name)
        return found

    def _require_direct(self, group: str, host: str, *, action: str, must_be_member: bool = False) -> None:
        if group in IMPLICIT_GROUPS:
            raise errors.BadParameters(f"cannot {action} the implicit group {group!r}",
                                       fix="name a Kubespray group such as kube_node")
        if group in LEGACY_GROUPS:
            raise errors.BadParameters(f"group {group!r} is a legacy name",
                                       fix=f"use {LEGACY_GROUPS[group]!r} (rename the group in the file first)")
        grp = self.groups.get(group)
        if grp is not None and grp.children and not grp.hosts:
            raise errors.BadParameters(
                f"cannot {action} {group!r} for host {host!r}: {group} gets its hosts from its children "
                f"({', '.join(grp.children)})",
                fix=f"edit {' / '.join(grp.children)} instead, or call expand_children({group!r}) to list hosts directly",
            )
        if must_be_member and (grp is None or host not in grp.hosts):
            raise errors.BadParameters(f"host {host!r} is not listed in group {group!r}",
                                       fix=f"members of {group}: {', '.join(self.members(group)) or 'none'}")

    def _next_etcd_name(self) -> str:
        used = {h.etcd_member_name for h in self.hosts.values()}
        n = 1
        while f"etcd{n}" in used:
            n += 1
        return f"etcd{n}"

    # ---- validation
    def problems(
        self,
        *,
        allow_even_etcd: bool = False,
        parked: Iterable[str] = (),
        extra_groups: Iterable[str] = (),
    ) -> list[str]:
        """Every problem found, each with its fix. Empty list = valid.

        ``allow_even_etcd`` tolerates an even etcd count (midway through a
        replacement, run with ``-e ignore_assert_errors=yes``); ``parked``
        hosts may be in no group (kept in all.hosts to come back later).
        """
        found: list[str] = []
        hosts, groups = self.hosts, self.groups
        parked = set(parked)
        known = set(KNOWN_GROUPS) | set(IMPLICIT_GROUPS) | set(extra_groups)
        ini = self.format == "ini"
        if isinstance(self._doc, IniDoc):
            found += [f"{d}: list it once" for d in self._doc.duplicates()]
        for name in groups:
            if name in LEGACY_GROUPS:
                found.append(f"group {name!r} is a legacy dashed/old name: rename it to {LEGACY_GROUPS[name]!r} "
                             "(Kubespray maps old names with a deprecation and mixed names split the group)")
            elif name not in known:
                found.append(f"unknown group {name!r}: Kubespray groups are {', '.join(KNOWN_GROUPS[:5])}; "
                             "fix the spelling or pass it in extra_groups if it is yours")
        by_addr: dict[str, list[str]] = {}
        for host in hosts.values():
            if not any(host.vars.get(k) for k in ADDRESS_VARS):
                where = ", ".join(g for g in groups if host.name in groups[g].hosts) or "all"
                example = (f"'{host.name} ansible_host=IP ip=IP access_ip=IP'" if ini
                           else f"all.hosts.{host.name}: {{ansible_host: IP, ip: IP, access_ip: IP}}")
                found.append(f"host {host.name!r} is listed in {where} but not defined (no ansible_host/ip): "
                             f"add {example}")
            for addr in {host.ip, host.ansible_host} - {None}:
                by_addr.setdefault(str(addr), []).append(host.name)
        for addr, names in by_addr.items():
            if len(names) > 1:
                found.append(f"IP {addr} is used by several hosts ({', '.join(names)}): each node needs its own IP; "
                             "remove the stale entry")
        control, etcd = self.members(CONTROL_PLANE), self.members(ETCD)
        if not control:
            found.append(f"{CONTROL_PLANE} is empty: list at least one control-plane host under [{CONTROL_PLANE}]")
        if not etcd:
            found.append(f"{ETCD} is empty: list the etcd members (usually the control planes, an odd number) "
                         f"under [{ETCD}]")
        elif len(etcd) % 2 == 0 and not allow_even_etcd:
            found.append(f"{ETCD} has {len(etcd)} members ({', '.join(etcd)}), an even number: Kubespray's assert "
                         "fails; add or remove one member (append new members at the END), or pass "
                         "-e ignore_assert_errors=yes while replacing a member")
        names: dict[str, list[str]] = {}
        for member in etcd:
            member_name = hosts.get(member, Host(member)).etcd_member_name
            if not member_name:
                found.append(f"etcd member {member!r} has no etcd_member_name: set it explicitly (e.g. "
                             f"etcd_member_name=etcd{etcd.index(member) + 1}); the default follows the position in "
                             "the etcd group, so reordering would rename members")
            else:
                names.setdefault(member_name, []).append(member)
        for member_name, owners in names.items():
            if len(owners) > 1:
                found.append(f"etcd_member_name {member_name!r} is set on {', '.join(owners)}: names must be unique")
        k8s = groups.get(K8S_CLUSTER)
        missing = [g for g in (CONTROL_PLANE, WORKERS) if k8s is None or g not in k8s.children]
        if missing:
            found.append(f"{K8S_CLUSTER} must list the children {', '.join(missing)} (explicit "
                         f"[{K8S_CLUSTER}:children] with {CONTROL_PLANE}, {WORKERS}, {CALICO_RR}; "
                         "facts.yml skips workers without it)")
        grouped = {h for g in groups if g not in IMPLICIT_GROUPS for h in self.members(g)}
        for name in hosts:
            if name not in grouped and name not in parked:
                found.append(f"host {name!r} is in no group: add it to {WORKERS} (or {CONTROL_PLANE}/{ETCD}), "
                             "remove it, or pass it as parked if it is kept to come back")
        return found

    def validate(
        self,
        *,
        allow_even_etcd: bool = False,
        parked: Iterable[str] = (),
        extra_groups: Iterable[str] = (),
    ) -> None:
        """Raise BadParameters listing every problem of :meth:`problems` (same options)."""
        found = self.problems(allow_even_etcd=allow_even_etcd, parked=parked, extra_groups=extra_groups)
        if found:
            where = self.path or "inventory"
            raise errors.BadParameters(
                f"{where} has {len(found)} problem(s):\n" + "\n".join(f"  - {p}" for p in found),
                fix="edit the inventory as each line says, then run this cell again",
            )


def write_atomic(target: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Replace ``target`` with ``data`` so that it is the old file or the new one, whatever happens.

    The data goes to a hidden temp file beside ``target`` (created 0600), is flushed and fsynced,
    gets its final mode (``mode``, else an existing target's, else what the umask gives a new file),
    replaces ``target`` with ``os.replace``, and the directory is fsynced so the rename survives a
    power cut. On any error the temp file is removed and ``target`` is untouched. Raises OSError.
    """
    target = Path(target)
    directory = target.parent
    if mode is None:
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~local.current_umask()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        try:
            local.write_synced(fd, data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    local.fsync_directory(directory)


def load(path: str | os.PathLike[str]) -> Inventory:
    """Read the inventory at ``path`` (same as :meth:`Inventory.load`)."""
    return Inventory.load(path)
