"""What changes between two inventories, rendered for a runbook's plan."""

from __future__ import annotations

from dataclasses import dataclass

from runbooks_lib.inventory.document import Inventory
from runbooks_lib.inventory.model import IMPLICIT_GROUPS


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

    def dropped_or_moved(self) -> list[str]:
        """Hosts the new inventory drops or gives another address (``node5 (dropped)``), in that order.

        After an install the inventory is the source of truth: a worker added or a
        control plane replaced since is in it and not in a parameter file's stale
        ``hosts``, and rewriting from those would drop it. Pure.
        """
        moved = sorted({v.host for v in self.vars
                        if v.key in ("ansible_host", "ip", "access_ip") and v.old not in (None, "")})
        return [f"{h} (dropped)" for h in self.hosts_removed] + [f"{h} (address changed)" for h in moved]


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
