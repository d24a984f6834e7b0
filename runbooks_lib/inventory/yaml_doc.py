"""hosts.yaml: the YAML inventory kept as a ruamel round-trip tree, comments and order intact."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import YAMLError

from runbooks_lib import errors
from runbooks_lib.inventory.model import IMPLICIT_GROUPS, Format, Group, Host


def plain(value: object) -> object:
    """ruamel's commented containers and scalars -> plain dict/list/str/int."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def round_trip_yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


class YamlDoc:
    """hosts.yaml kept as a ruamel round-trip tree."""

    format: Format = "yaml"

    def __init__(self, text: str, source: str) -> None:
        try:
            data = round_trip_yaml().load(text) if text.strip() else None
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
                gvars[name].update(plain(node["vars"]))  # type: ignore[arg-type]
            for child in node.get("children") or {}:
                if str(child) not in children[name]:
                    children[name].append(str(child))
            for host, hvars in (node.get("hosts") or {}).items():
                host = str(host)
                if host not in direct[name]:
                    direct[name].append(host)
                hosts.setdefault(host, {})
                if isinstance(hvars, Mapping):
                    hosts[host].update(plain(hvars))  # type: ignore[arg-type]
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
            if key not in target or plain(target[key]) != value:
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
        y = round_trip_yaml()
        y.explicit_start = self.explicit_start
        y.dump(self.data, buf)
        return buf.getvalue()


def render(hosts: Mapping[str, Host], groups: Mapping[str, Group]) -> str:
    """A fresh hosts.yaml text for this model (used to convert an inventory.ini)."""
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
    round_trip_yaml().dump(top, buf)
    return buf.getvalue()
