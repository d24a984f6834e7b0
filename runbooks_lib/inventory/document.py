"""Kubespray inventories: read, build, edit, validate and diff.

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

import ast
import copy
import io
import ipaddress
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import YAMLError

from runbooks_lib import errors

Format = Literal["yaml", "ini"]

CONTROL_PLANE = "kube_control_plane"
WORKERS = "kube_node"
ETCD = "etcd"
K8S_CLUSTER = "k8s_cluster"
CALICO_RR = "calico_rr"
KNOWN_GROUPS = (
    CONTROL_PLANE, WORKERS, ETCD, K8S_CLUSTER, CALICO_RR,
    "broken_etcd", "broken_kube_control_plane", "bastion",
)
IMPLICIT_GROUPS = ("all", "ungrouped")
LEGACY_GROUPS = {
    "kube-master": CONTROL_PLANE,
    "kube_master": CONTROL_PLANE,
    "kube-control-plane": CONTROL_PLANE,
    "kube-node": WORKERS,
    "k8s-cluster": K8S_CLUSTER,
    "calico-rr": CALICO_RR,
}
ADDRESS_VARS = ("ansible_host", "ip", "access_ip")


@dataclass(frozen=True)
class Host:
    """A host and its inventory vars (plain Python values)."""

    name: str
    vars: Mapping[str, object] = field(default_factory=dict)

    @property
    def ansible_host(self) -> str | None:
        return _str_or_none(self.vars.get("ansible_host"))

    @property
    def ip(self) -> str | None:
        return _str_or_none(self.vars.get("ip"))

    @property
    def access_ip(self) -> str | None:
        return _str_or_none(self.vars.get("access_ip"))

    @property
    def etcd_member_name(self) -> str | None:
        return _str_or_none(self.vars.get("etcd_member_name"))

    @property
    def address(self) -> str:
        """Where to reach the host: ansible_host, else ip, else its name."""
        return self.ansible_host or self.ip or self.access_ip or self.name


@dataclass(frozen=True)
class Group:
    """A group as written: its direct hosts and child groups, in file order."""

    name: str
    hosts: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    vars: Mapping[str, object] = field(default_factory=dict)


def _str_or_none(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _plain(value: object) -> object:
    """ruamel's commented containers and scalars -> plain dict/list/str/int."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


# =========================================================================== YAML backend


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


class _YamlDoc:
    """hosts.yaml kept as a ruamel round-trip tree."""

    format: Format = "yaml"

    def __init__(self, text: str, source: str) -> None:
        try:
            data = _yaml().load(text) if text.strip() else None
        except DuplicateKeyError as exc:
            raise errors.BadParameters(
                f"inventory {source}: a name is defined twice ({exc.problem}, {exc.problem_mark})",
                fix="host and group names must be unique in each mapping: remove or rename the duplicate",
            ) from None
        except YAMLError as exc:
            raise errors.BadParameters(f"inventory {source} is not valid YAML: {exc}",
                                       fix="fix the YAML syntax at the position shown") from None
        if data is None:
            data = CommentedMap()
        if not isinstance(data, CommentedMap):
            raise errors.BadParameters(f"inventory {source}: the top level must be a mapping of groups (all: ...)",
                                       fix="start the file with 'all:' and put hosts under all.hosts")
        self.data = data
        self.source = source
        # ruamel drops a leading `---` unless told to write one.
        first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
        self.explicit_start = first.rstrip() == "---" or first.startswith("--- ")

    # ---- reading
    def _walk(self) -> Iterable[tuple[str, CommentedMap | None, CommentedMap, object]]:
        """Yield (group, node, parent, key) for every group mention, depth first."""
        seen: set[int] = set()

        def visit(name: str, parent: CommentedMap, key: object):
            node = parent[key]
            yield name, node if isinstance(node, CommentedMap) else None, parent, key
            if isinstance(node, CommentedMap) and id(node) not in seen:
                seen.add(id(node))
                children = node.get("children")
                if isinstance(children, CommentedMap):
                    for child in list(children.keys()):
                        yield from visit(str(child), children, child)

        for top in list(self.data.keys()):
            yield from visit(str(top), self.data, top)

    def model(self) -> tuple[dict[str, dict[str, object]], dict[str, Group]]:
        hosts: dict[str, dict[str, object]] = {}
        direct: dict[str, list[str]] = {}
        children: dict[str, list[str]] = {}
        gvars: dict[str, dict[str, object]] = {}
        for name, node, _parent, _key in self._walk():
            direct.setdefault(name, [])
            children.setdefault(name, [])
            gvars.setdefault(name, {})
            if node is None:
                continue
            if isinstance(node.get("vars"), Mapping):
                gvars[name].update(_plain(node["vars"]))  # type: ignore[arg-type]
            for child in node.get("children") or {}:
                if str(child) not in children[name]:
                    children[name].append(str(child))
            for host, hvars in (node.get("hosts") or {}).items():
                host = str(host)
                if host not in direct[name]:
                    direct[name].append(host)
                hosts.setdefault(host, {})
                if isinstance(hvars, Mapping):
                    hosts[host].update(_plain(hvars))  # type: ignore[arg-type]
        groups = {n: Group(n, tuple(direct[n]), tuple(children[n]), gvars[n]) for n in direct}
        return hosts, groups

    # ---- editing
    def _all(self) -> CommentedMap:
        if not isinstance(self.data.get("all"), CommentedMap):
            self.data["all"] = CommentedMap()
        return self.data["all"]

    @staticmethod
    def _submap(node: CommentedMap, key: str) -> CommentedMap:
        value = node.get(key)
        if not isinstance(value, CommentedMap):
            value = CommentedMap()
            node[key] = value
        value.fa.set_block_style()  # `hosts: {}` becomes a block mapping once it has entries
        return value

    def _group_node(self, group: str, create: bool) -> CommentedMap | None:
        mentions = [(node, parent, key) for name, node, parent, key in self._walk() if name == group]
        for node, _parent, _key in mentions:  # prefer the definition that lists hosts
            if node is not None and "hosts" in node:
                return node
        for node, _parent, _key in mentions:
            if node is not None:
                return node
        if not create:
            return None
        # New group (or one only mentioned as `group:` with no body): define it under all.children.
        children = self._submap(self._all(), "children")
        children[group] = CommentedMap()
        return children[group]

    def define_host(self, name: str, hvars: Mapping[str, object]) -> None:
        target: CommentedMap | None = None
        all_hosts = self._all().get("hosts")
        if isinstance(all_hosts, CommentedMap) and name in all_hosts:
            if not isinstance(all_hosts[name], CommentedMap):
                all_hosts[name] = CommentedMap()
            target = all_hosts[name]
        else:
            for _n, node, _p, _k in self._walk():
                if node is not None and isinstance(node.get("hosts"), CommentedMap):
                    if isinstance(node["hosts"].get(name), CommentedMap):
                        target = node["hosts"][name]
                        break
        if target is None:
            target = CommentedMap()
            self._submap(self._all(), "hosts")[name] = target
            # keep `all:` as hosts then children, the way Kubespray's builder wrote it
            all_node = self._all()
            if "children" in all_node and list(all_node.keys()).index("hosts") > list(all_node.keys()).index("children"):
                hosts_map = all_node.pop("hosts")
                all_node.insert(0, "hosts", hosts_map)
        for key in [k for k in target if k not in hvars]:
            del target[key]
        for key, value in hvars.items():
            if key not in target or _plain(target[key]) != value:
                target[key] = value

    def undefine_host(self, name: str) -> None:
        for _n, node, _p, _k in list(self._walk()):
            if node is not None and isinstance(node.get("hosts"), CommentedMap) and name in node["hosts"]:
                del node["hosts"][name]

    def add_member(self, group: str, host: str) -> None:
        node = self._group_node(group, create=True)
        assert node is not None
        members = self._submap(node, "hosts")
        if host not in members:
            members[host] = None

    def remove_member(self, group: str, host: str) -> bool:
        removed = False
        for name, node, _p, _k in list(self._walk()):
            if name == group and node is not None and isinstance(node.get("hosts"), CommentedMap):
                if host in node["hosts"]:
                    del node["hosts"][host]
                    removed = True
        return removed

    def move_member(self, group: str, host: str, index: int) -> None:
        node = self._group_node(group, create=False)
        members = node.get("hosts") if node is not None else None
        if not isinstance(members, CommentedMap) or host not in members:
            raise KeyError(host)
        value = members.pop(host)
        index = len(members) if index < 0 or index > len(members) else index
        members.insert(index, host, value)

    def drop_children(self, group: str) -> None:
        for name, node, _p, _k in list(self._walk()):
            if name == group and node is not None and "children" in node:
                del node["children"]

    def add_child(self, group: str, child: str) -> None:
        node = self._group_node(group, create=True)
        assert node is not None
        kids = self._submap(node, "children")
        if child not in kids:
            kids[child] = None

    def dumps(self) -> str:
        buf = io.StringIO()
        y = _yaml()
        y.explicit_start = self.explicit_start
        y.dump(self.data, buf)
        return buf.getvalue()


# =========================================================================== INI backend

_SECTION = re.compile(r"^\s*\[(?P<name>[^\]:]+)(?::(?P<kind>children|vars))?\]\s*(?:[#;].*)?$")


@dataclass
class _Line:
    raw: str
    kind: Literal["blank", "comment", "section", "entry"]
    section: str = "ungrouped"
    section_kind: str = "hosts"  # hosts | children | vars
    name: str = ""
    vars: dict[str, object] = field(default_factory=dict)
    comment: str = ""


def _ini_value(text: str) -> object:
    # Ansible's INI plugin evaluates literals (22 -> int, True -> bool), else keeps the string.
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value if isinstance(value, (int, float, bool, list, dict, tuple)) else text


def _ini_render_value(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    if text == "" or re.search(r"[\s'\"#;=\\]", text):
        return shlex.quote(text) if "'" not in text else '"' + text.replace('"', '\\"') + '"'
    return text


def _split_comment(text: str) -> tuple[str, str]:
    """Split ``node1 ip=1.2.3.4  # note`` into body and comment (outside quotes)."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "#;" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i:]
    return text.rstrip(), ""


class _IniDoc:
    """inventory.ini as a list of lines; untouched lines are written back verbatim."""

    format: Format = "ini"

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: list[_Line] = []
        self.trailing_newline = text.endswith("\n") or not text
        section, kind = "ungrouped", "hosts"
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if not stripped:
                self.lines.append(_Line(raw, "blank", section, kind))
            elif stripped[0] in "#;":
                self.lines.append(_Line(raw, "comment", section, kind))
            elif stripped.startswith("["):
                match = _SECTION.match(raw)
                if not match:
                    raise errors.BadParameters(f"inventory {source}, line {number}: bad section header {raw!r}",
                                               fix="write [group], [group:children] or [group:vars]")
                section, kind = match["name"].strip(), match["kind"] or "hosts"
                self.lines.append(_Line(raw, "section", section, kind))
            else:
                self.lines.append(self._parse_entry(raw, section, kind, number))

    def _parse_entry(self, raw: str, section: str, kind: str, number: int) -> _Line:
        body, comment = _split_comment(raw.strip())
        if kind == "vars":
            key, sep, value = body.partition("=")
            if not sep:
                raise errors.BadParameters(f"inventory {self.source}, line {number}: {raw!r} is not key=value",
                                           fix=f"write 'key=value' lines under [{section}:vars]")
            return _Line(raw, "entry", section, kind, key.strip(), {key.strip(): _ini_value(value.strip())}, comment)
        try:
            tokens = shlex.split(body, posix=True)
        except ValueError as exc:
            raise errors.BadParameters(f"inventory {self.source}, line {number}: {exc} in {raw!r}",
                                       fix="close the quote") from None
        name, hvars = tokens[0], {}
        for token in tokens[1:]:
            key, sep, value = token.partition("=")
            if not sep or kind == "children":
                raise errors.BadParameters(
                    f"inventory {self.source}, line {number}: {token!r} in {raw!r} is not key=value",
                    fix="host lines are 'name key=value ...'; children sections list one group per line",
                )
            hvars[key] = _ini_value(value)
        return _Line(raw, "entry", section, kind, name, hvars, comment)

    # ---- reading
    def model(self) -> tuple[dict[str, dict[str, object]], dict[str, Group]]:
        hosts: dict[str, dict[str, object]] = {}
        direct: dict[str, list[str]] = {}
        children: dict[str, list[str]] = {}
        gvars: dict[str, dict[str, object]] = {}
        for line in self.lines:
            if line.kind not in ("section", "entry"):
                continue
            for name in (line.section,) if line.section != "ungrouped" else ():
                direct.setdefault(name, [])
                children.setdefault(name, [])
                gvars.setdefault(name, {})
            if line.kind != "entry":
                continue
            if line.section_kind == "vars":
                gvars[line.section].update(line.vars)
            elif line.section_kind == "children":
                direct.setdefault(line.name, [])
                children.setdefault(line.name, [])
                gvars.setdefault(line.name, {})
                if line.name not in children[line.section]:
                    children[line.section].append(line.name)
            else:
                hosts.setdefault(line.name, {}).update(line.vars)
                if line.section not in ("ungrouped", "all"):
                    if line.name not in direct[line.section]:
                        direct[line.section].append(line.name)
        groups = {n: Group(n, tuple(direct[n]), tuple(children[n]), gvars[n]) for n in direct}
        return hosts, groups

    def host_lines(self, host: str) -> list[int]:
        return [i for i, ln in enumerate(self.lines)
                if ln.kind == "entry" and ln.section_kind == "hosts" and ln.name == host]

    def duplicates(self) -> list[str]:
        seen: dict[tuple[str, str, str], int] = {}
        found = []
        for ln in self.lines:
            if ln.kind == "entry" and ln.section_kind != "vars":
                key = (ln.section, ln.section_kind, ln.name)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] == 2:
                    found.append(f"{ln.name!r} is listed twice in [{ln.section}"
                                 f"{':children' if ln.section_kind == 'children' else ''}]")
        return found

    # ---- editing
    @staticmethod
    def _render(line: _Line) -> str:
        parts = [line.name] + [f"{k}={_ini_render_value(v)}" for k, v in line.vars.items()]
        text = " ".join(parts)
        return f"{text}  {line.comment}" if line.comment else text

    def _section_range(self, section: str, kind: str) -> tuple[int, int] | None:
        for i, ln in enumerate(self.lines):
            if ln.kind == "section" and ln.section == section and ln.section_kind == kind:
                end = i + 1
                while end < len(self.lines) and self.lines[end].kind != "section":
                    end += 1
                return i, end
        return None

    def _append_to_section(self, section: str, kind: str, line: _Line) -> None:
        rng = self._section_range(section, kind)
        if rng is None:
            if self.lines and self.lines[-1].kind != "blank":
                self.lines.append(_Line("", "blank", section, kind))
            self.lines.append(_Line(f"[{section}{'' if kind == 'hosts' else ':' + kind}]", "section", section, kind))
            self.lines.append(line)
            return
        start, end = rng
        entries = [i for i in range(start + 1, end) if self.lines[i].kind == "entry"]
        if entries:
            at = entries[-1] + 1
        else:  # after commented examples that follow the header, before the blank separator
            at = start + 1
            while at < end and self.lines[at].kind == "comment":
                at += 1
        self.lines.insert(at, line)

    def define_host(self, name: str, hvars: Mapping[str, object]) -> None:
        where = self.host_lines(name)
        carrying = [i for i in where if self.lines[i].vars]
        if carrying:
            target, others = carrying[0], carrying[1:]
        elif where:
            target, others = where[0], []
        else:
            line = _Line("", "entry", "all", "hosts", name, dict(hvars))
            line.raw = self._render(line)
            if self._section_range("all", "hosts") is None:
                self._insert_all_section()
            self._append_to_section("all", "hosts", line)
            return
        for i in others:  # one place for a host's vars, or Ansible merges them silently
            self.lines[i].vars = {}
            self.lines[i].raw = self._render(self.lines[i])
        line = self.lines[target]
        if line.vars != dict(hvars):
            line.vars = dict(hvars)
            line.raw = self._render(line)

    def _insert_all_section(self) -> None:
        first = next((i for i, ln in enumerate(self.lines) if ln.kind == "section"), len(self.lines))
        block = [_Line("[all]", "section", "all", "hosts")]
        if first < len(self.lines):
            block.append(_Line("", "blank", "all", "hosts"))
        self.lines[first:first] = block

    def undefine_host(self, name: str) -> None:
        drop = set(self.host_lines(name))
        self.lines = [ln for i, ln in enumerate(self.lines) if i not in drop]

    def add_member(self, group: str, host: str) -> None:
        if any(self.lines[i].section == group for i in self.host_lines(host)):
            return
        line = _Line(host, "entry", group, "hosts", host)
        self._append_to_section(group, "hosts", line)

    def remove_member(self, group: str, host: str) -> bool:
        drop = {i for i in self.host_lines(host) if self.lines[i].section == group}
        self.lines = [ln for i, ln in enumerate(self.lines) if i not in drop]
        return bool(drop)

    def move_member(self, group: str, host: str, index: int) -> None:
        rng = self._section_range(group, "hosts")
        if rng is None:
            raise KeyError(host)
        entries = [i for i in range(rng[0] + 1, rng[1]) if self.lines[i].kind == "entry"]
        mine = [i for i in entries if self.lines[i].name == host]
        if not mine:
            raise KeyError(host)
        line = self.lines[mine[0]]
        others = [i for i in entries if i != mine[0]]
        if index < 0 or index >= len(others):
            anchor = others[-1] + 1 if others else mine[0]
        else:
            anchor = others[index]
        self.lines.insert(anchor, line)
        del self.lines[mine[0] + (1 if anchor <= mine[0] else 0)]

    def drop_children(self, group: str) -> None:
        rng = self._section_range(group, "children")
        while rng is not None:
            start, end = rng
            keep = [ln for ln in self.lines[start + 1:end] if ln.kind != "entry"]
            if self._section_range(group, "hosts") is None:
                header = _Line(f"[{group}]", "section", group, "hosts")
                for ln in keep:
                    ln.section, ln.section_kind = group, "hosts"
                self.lines[start:end] = [header, *keep]
            else:
                self.lines[start:end] = []
            rng = self._section_range(group, "children")

    def add_child(self, group: str, child: str) -> None:
        rng = self._section_range(group, "children")
        if rng and any(ln.kind == "entry" and ln.name == child for ln in self.lines[rng[0]:rng[1]]):
            return
        self._append_to_section(group, "children", _Line(child, "entry", group, "children", child))

    def dumps(self) -> str:
        text = "\n".join(ln.raw for ln in self.lines)
        return text + "\n" if self.trailing_newline and text else text


# =========================================================================== the model


def _format_for(path: Path) -> Format:
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

    def __init__(self, doc: _YamlDoc | _IniDoc, path: Path | None = None) -> None:
        self._doc = doc
        self.path = path

    # ---- construction
    @classmethod
    def parse(cls, text: str, format: Format, *, source: str = "<text>") -> Inventory:  # noqa: A002
        doc = _YamlDoc(text, source) if format == "yaml" else _IniDoc(text, source)
        return cls(doc)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Inventory:
        """Read ``path`` (format from the suffix). Raises BadParameters when missing or malformed."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise errors.BadParameters(f"inventory {p} does not exist",
                                       fix="pass the path of hosts.yaml or inventory.ini (inventory parameter)")
        inv = cls.parse(p.read_text(encoding="utf-8"), _format_for(p), source=str(p))
        inv.path = p
        return inv

    def dumps(self) -> str:
        return self._doc.dumps()

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the inventory (atomically) to ``path`` or where it was loaded from."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise errors.BadParameters("inventory has no path to save to", fix="pass save(path)")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(self.dumps(), encoding="utf-8")
        tmp.replace(target)
        self.path = target
        return target

    def copy(self) -> Inventory:
        return Inventory(copy.deepcopy(self._doc), self.path)

    @property
    def format(self) -> Format:
        return self._doc.format

    def convert(self, format: Format) -> Inventory:  # noqa: A002
        """The same hosts and groups written fresh in ``format`` (comments are not carried over)."""
        if format == "yaml":
            return _from_model(self.hosts, self.groups)
        lines: list[str] = ["[all]"]
        for host in self.hosts.values():
            lines.append(" ".join([host.name, *(f"{k}={_ini_render_value(v)}" for k, v in host.vars.items())]))
        all_vars = self.groups.get("all", Group("all")).vars
        if all_vars:
            lines += ["", "[all:vars]", *(f"{k}={_ini_render_value(v)}" for k, v in all_vars.items())]
        for group in self.groups.values():
            if group.name in IMPLICIT_GROUPS:
                continue
            if group.hosts or not group.children:
                lines += ["", f"[{group.name}]", *group.hosts]
            if group.children:
                lines += ["", f"[{group.name}:children]", *group.children]
            if group.vars:
                lines += ["", f"[{group.name}:vars]",
                          *(f"{k}={_ini_render_value(v)}" for k, v in group.vars.items())]
        return Inventory.parse("\n".join(lines) + "\n", "ini")

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
        _check_ip(ip, name)
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
        if isinstance(self._doc, _IniDoc):
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


def _check_ip(ip: str, name: str) -> None:
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise errors.BadParameters(f"{ip!r} (host {name}) is not an IP address",
                                   fix="pass IPv4/IPv6 addresses such as 10.0.0.11") from None


def _from_model(hosts: Mapping[str, Host], groups: Mapping[str, Group]) -> Inventory:
    top = CommentedMap()
    all_node = CommentedMap()
    top["all"] = all_node
    all_node["hosts"] = CommentedMap()
    for host in hosts.values():
        all_node["hosts"][host.name] = CommentedMap(host.vars)
    if "all" in groups and groups["all"].vars:
        all_node["vars"] = CommentedMap(groups["all"].vars)
    all_node["children"] = CommentedMap()
    for group in groups.values():
        if group.name in IMPLICIT_GROUPS:
            continue
        node = CommentedMap()
        if group.hosts or not group.children:
            node["hosts"] = CommentedMap((h, None) for h in group.hosts)
        if group.children:
            node["children"] = CommentedMap((c, None) for c in group.children)
        if group.vars:
            node["vars"] = CommentedMap(group.vars)
        all_node["children"][group.name] = node
    buf = io.StringIO()
    _yaml().dump(top, buf)
    return Inventory.parse(buf.getvalue(), "yaml")


def build(
    ips: Sequence[str],
    *,
    control_planes: int | Sequence[str] = 2,
    etcd: int | Sequence[str] = 3,
    workers: Sequence[str] | None = None,
    prefix: str = "node",
) -> Inventory:
    """A hosts.yaml inventory in the shape Kubespray's inventory builder wrote.

    Hosts are ``{prefix}1..N`` with ansible_host = ip = access_ip = the IP.
    ``control_planes``/``etcd`` are a count (the first N hosts) or names/IPs;
    workers default to every host. Unlike the old builder, etcd members get an
    explicit ``etcd_member_name`` (etcd1..N) and k8s_cluster lists
    kube_control_plane, kube_node and calico_rr. Raises BadParameters for
    duplicate or invalid IPs, unknown names, an even or empty etcd.
    """
    if not ips:
        raise errors.BadParameters("no IPs given", fix="pass the node IPs, e.g. ['10.0.0.11', '10.0.0.12']")
    names = [f"{prefix}{i}" for i in range(1, len(ips) + 1)]
    for ip, name in zip(ips, names):
        _check_ip(ip, name)
    if len(set(ips)) != len(ips):
        dupes = sorted({ip for ip in ips if ips.count(ip) > 1})
        raise errors.BadParameters(f"duplicate IPs: {', '.join(dupes)}", fix="list each node once")
    by_key = {**dict(zip(names, names)), **dict(zip(ips, names))}

    def pick(spec: int | Sequence[str], role: str) -> list[str]:
        if isinstance(spec, int):
            return names[: max(0, min(spec, len(names)))]
        unknown = [s for s in spec if s not in by_key]
        if unknown:
            raise errors.BadParameters(f"{role}: {', '.join(unknown)} not among the nodes",
                                       fix=f"use node names ({', '.join(names)}) or their IPs")
        return [by_key[s] for s in spec]

    control = pick(control_planes, CONTROL_PLANE)
    if isinstance(etcd, int):
        if etcd % 2 == 0:
            raise errors.BadParameters(f"etcd={etcd}: etcd needs an odd number of members",
                                       fix="pass etcd=1, 3 or 5")
        count = min(etcd, len(names))
        count -= 0 if count % 2 else 1  # the builder's rule: fewer nodes than asked -> largest odd count
        members = names[:max(count, 1)]
    else:
        members = pick(etcd, ETCD)
    workers_list = names if workers is None else pick(workers, WORKERS)
    if not control:
        raise errors.BadParameters("no control plane chosen", fix="pass control_planes >= 1")
    if not members or len(members) % 2 == 0:
        raise errors.BadParameters(f"etcd needs an odd number of members, got {len(members)}",
                                   fix="pick 1, 3 or 5 etcd members")
    top = CommentedMap()
    all_node = CommentedMap()
    top["all"] = all_node
    hosts = CommentedMap()
    all_node["hosts"] = hosts
    for ip, name in zip(ips, names):
        hvars = CommentedMap([("ansible_host", ip), ("ip", ip), ("access_ip", ip)])
        if name in members:
            hvars["etcd_member_name"] = f"etcd{members.index(name) + 1}"
        hosts[name] = hvars
    children = CommentedMap()
    all_node["children"] = children

    def group(members_: list[str]) -> CommentedMap:
        node = CommentedMap()
        node["hosts"] = CommentedMap((m, None) for m in members_)
        if not members_:
            node["hosts"].fa.set_flow_style()  # `hosts: {}` as the builder wrote it
        return node

    children[CONTROL_PLANE] = group(control)
    children[WORKERS] = group(workers_list)
    children[ETCD] = group(members)
    children[K8S_CLUSTER] = CommentedMap(children=CommentedMap([(CONTROL_PLANE, None), (WORKERS, None),
                                                                (CALICO_RR, None)]))
    children[CALICO_RR] = group([])
    buf = io.StringIO()
    _yaml().dump(top, buf)
    return Inventory.parse(buf.getvalue(), "yaml")


# =========================================================================== diff


@dataclass(frozen=True)
class GroupChange:
    """Membership change of one group (resolved through children)."""

    group: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    first_before: str | None
    first_after: str | None
    reordered: bool


@dataclass(frozen=True)
class VarChange:
    host: str
    key: str
    old: object
    new: object


@dataclass(frozen=True)
class InventoryDiff:
    """What changes between two inventories; ``lines()`` renders it for a plan."""

    hosts_added: tuple[str, ...]
    hosts_removed: tuple[str, ...]
    groups: tuple[GroupChange, ...]
    vars: tuple[VarChange, ...]

    @property
    def empty(self) -> bool:
        return not (self.hosts_added or self.hosts_removed or self.groups or self.vars)

    def lines(self) -> list[str]:
        out = [f"+ host {h}" for h in self.hosts_added] + [f"- host {h}" for h in self.hosts_removed]
        for g in self.groups:
            parts = [f"+{h}" for h in g.added] + [f"-{h}" for h in g.removed]
            text = f"  {g.group}: {' '.join(parts)}" if parts else f"  {g.group}:"
            if g.first_before != g.first_after:
                text += f" (first host {g.first_before or 'none'} -> {g.first_after or 'none'})"
            elif g.reordered:
                text += " (order changed)"
            out.append(text)
        for v in self.vars:
            out.append(f"  {v.host}.{v.key}: {v.old!r} -> {v.new!r}")
        return out or ["no changes"]


def diff(old: Inventory, new: Inventory) -> InventoryDiff:
    """Compare two inventories: hosts, resolved group membership and order, host vars."""
    old_hosts, new_hosts = old.hosts, new.hosts
    changes: list[GroupChange] = []
    names = list(old.groups) + [g for g in new.groups if g not in old.groups]
    for group in names:
        if group in IMPLICIT_GROUPS:
            continue
        before, after = old.members(group), new.members(group)
        added = tuple(h for h in after if h not in before)
        removed = tuple(h for h in before if h not in after)
        common_before = [h for h in before if h in after]
        common_after = [h for h in after if h in before]
        first_b, first_a = (before[0] if before else None), (after[0] if after else None)
        reordered = common_before != common_after
        if added or removed or reordered or first_b != first_a:
            changes.append(GroupChange(group, added, removed, first_b, first_a, reordered))
    var_changes: list[VarChange] = []
    for name in old_hosts.keys() & new_hosts.keys():
        a, b = old_hosts[name].vars, new_hosts[name].vars
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                var_changes.append(VarChange(name, key, a.get(key), b.get(key)))
    var_changes.sort(key=lambda v: (list(new_hosts).index(v.host), v.key))
    return InventoryDiff(
        hosts_added=tuple(h for h in new_hosts if h not in old_hosts),
        hosts_removed=tuple(h for h in old_hosts if h not in new_hosts),
        groups=tuple(changes),
        vars=tuple(var_changes),
    )
