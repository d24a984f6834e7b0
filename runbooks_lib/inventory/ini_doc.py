"""inventory.ini: a small line-preserving parser and writer for Ansible's INI inventory.

Host vars sit on the host line, ``[group:children]`` lists child groups and
``[group:vars]`` group vars; lines nobody edits are written back verbatim.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from runbooks_lib import errors
from runbooks_lib.inventory.model import IMPLICIT_GROUPS, Format, Group, Host

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


def render_value(value: object) -> str:
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


class IniDoc:
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
        parts = [line.name] + [f"{k}={render_value(v)}" for k, v in line.vars.items()]
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


def render(hosts: Mapping[str, Host], groups: Mapping[str, Group]) -> str:
    """A fresh inventory.ini text for this model (used to convert a hosts.yaml)."""
    lines: list[str] = ["[all]"]
    for host in hosts.values():
        lines.append(" ".join([host.name, *(f"{k}={render_value(v)}" for k, v in host.vars.items())]))
    all_vars = groups.get("all", Group("all")).vars
    if all_vars:
        lines += ["", "[all:vars]", *(f"{k}={render_value(v)}" for k, v in all_vars.items())]
    for group in groups.values():
        if group.name in IMPLICIT_GROUPS:
            continue
        if group.hosts or not group.children:
            lines += ["", f"[{group.name}]", *group.hosts]
        if group.children:
            lines += ["", f"[{group.name}:children]", *group.children]
        if group.vars:
            lines += ["", f"[{group.name}:vars]", *(f"{k}={render_value(v)}" for k, v in group.vars.items())]
    return "\n".join(lines) + "\n"
