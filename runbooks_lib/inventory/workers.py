"""Inventory edits for adding and removing workers, on a copy (the file is written by the caller),
and the decisions of the remove-worker runbook's preflight.

Pure: each edit returns an edited copy of the Inventory and leaves the
original as it was, so a runbook can show the diff before it saves anything;
the decisions take what the preflight read (inventories, Node info, pods,
PodDisruptionBudgets) and contact nothing. Only :func:`load_backup` and
:func:`load_backups` read files (the inventory's kept backups, see
:mod:`runbooks_lib.inventory.backups`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runbooks_lib import errors
from runbooks_lib.inventory import backups as _backups
from runbooks_lib.inventory.document import Inventory, format_for
from runbooks_lib.inventory.model import K8S_CLUSTER, WORKERS, Host

if TYPE_CHECKING:
    from runbooks_lib.kube.drain import DisruptionBudget
    from runbooks_lib.kube.node import NodeInfo


def with_workers(inv: Inventory, hosts: Mapping[str, str]) -> Inventory:
    """A copy with each new host (name -> IP) defined and appended at the END of kube_node.

    A host already defined with the same IP and already in kube_node is left
    as it is (a re-run). Raises BadParameters for a name defined with another
    IP or outside kube_node, an IP used by another host, or an inventory whose k8s_cluster does not
    include kube_node (Kubespray v2.19 needs k8s_cluster; facts.yml of some
    versions skips workers outside it). Rollback: :func:`without_hosts`.
    """
    out = inv.copy()
    for name, ip in hosts.items():
        if name in out.hosts:
            existing = out.host(name)
            if ip not in (existing.ip, existing.ansible_host):
                raise errors.BadParameters(f"host {name!r} is already in the inventory with IP {existing.ip}, not {ip}",
                                           fix="check the name and IP, or remove the old entry first")
            if name not in out.members(WORKERS):
                raise errors.BadParameters(f"host {name!r} is already in the inventory but not a worker "
                                           f"({', '.join(out.groups_of(name)) or 'in no group'})",
                                           fix="pick a new name; control planes and etcd members have their own runbook")
            continue
        out.add_host(name, ip=ip, groups=[WORKERS])
    if not set(hosts) <= set(out.members(K8S_CLUSTER)):
        raise errors.BadParameters(f"the inventory's {K8S_CLUSTER} group does not include {WORKERS}",
                                   fix=f"list {WORKERS} as a child of {K8S_CLUSTER} (Kubespray needs k8s_cluster)")
    return out


def without_hosts(inv: Inventory, names: Sequence[str]) -> Inventory:
    """A copy with each host taken out of every group and out of all.hosts.

    A host already absent is skipped (a re-run). Rollback: :func:`with_workers`
    (which appends at the end).
    """
    out = inv.copy()
    for name in names:
        if name in out.hosts:
            out.remove_host(name)
    return out


REMOVE_WORKER = "remove-worker"  # the runbook name its backups are saved under


def backup_path(path: str | os.PathLike[str]) -> Path:
    """The LEGACY backup ``<path>.bak`` that earlier versions of every runbook overwrote; nothing writes it now.

    Still read, as the oldest backup, by :func:`load_backups` (a run of an earlier version may have been
    interrupted). New backups: :func:`runbooks_lib.inventory.backups.save_backup`.
    """
    return Path(path).with_name(Path(path).name + ".bak")


def load_backups(path: str | os.PathLike[str], runbook: str | None = REMOVE_WORKER) -> list[Inventory]:
    """Every kept backup of the inventory at ``path`` saved by ``runbook`` (None: any), newest first.

    The legacy ``<path>.bak`` (:func:`backup_path`), when present, comes last. Reads files, changes
    nothing. Raises BadParameters when a backup is malformed.
    """
    found = _backups.load_backups(path, runbook)
    legacy = backup_path(path)
    if legacy.is_file():
        inv = Inventory.parse(legacy.read_text(encoding="utf-8"), format_for(Path(path)), source=str(legacy))
        inv.path = legacy
        found.append(inv)
    return found


def load_backup(path: str | os.PathLike[str]) -> Inventory | None:
    """The newest of :func:`load_backups` (remove-worker's, else the legacy ``.bak``); None when there is none."""
    found = load_backups(path)
    return found[0] if found else None


def already_removed(names: Sequence[str], current: Inventory,
                    backups: Inventory | Sequence[Inventory] | None, api_nodes: Collection[str]) -> list[str]:
    """The names an earlier run already removed: in neither ``current`` nor the API, but a worker in a backup.

    ``backups``: the inventory as it was before earlier remove-worker runs saved it (:func:`load_backups`,
    any order), or one such Inventory, or None when there is none. A name found nowhere is not returned:
    it is a typo.
    """
    found = _as_list(backups)
    return [n for n in names if n not in current.hosts and n not in api_nodes
            and any(n in b.members(WORKERS) for b in found)]


def host_in_backups(backups: Inventory | Sequence[Inventory] | None, name: str) -> Host:
    """``name`` as the newest backup that lists it as a worker defines it (its address, vars).

    ``backups`` newest first, as :func:`load_backups` returns them. Raises BadParameters when none does.
    """
    for inv in _as_list(backups):
        if name in inv.members(WORKERS):
            return inv.host(name)
    raise errors.BadParameters(f"host {name!r} is a worker in none of the inventory's backups",
                               fix="check the name; only hosts removed by an earlier remove-worker run are there")


def _as_list(backups: Inventory | Sequence[Inventory] | None) -> list[Inventory]:
    if backups is None:
        return []
    if isinstance(backups, Inventory):
        return [backups]
    return list(backups)


# How an SSH connection fails when nothing answers: a timeout (a powered-off VPS drops SYNs) or no route.
_NO_ANSWER = ("timed out", "timeout", "no route to host", "errno 113", "network is unreachable", "errno 101",
              "host is unreachable")


@dataclass(frozen=True)
class NodeState:
    """Whether a worker to remove is alive, dead, or must not be removed now (``refused``), and why."""

    name: str
    state: Literal["alive", "dead", "refused"]
    reason: str


def classify_node(name: str, ssh_error: BaseException | None, node_ready: bool | None) -> NodeState:
    """A worker is dead only when SSH got no answer within its bound and its Node is NotReady (or gone).

    ``ssh_error``: what a command over SSH with the pinned key raised (None:
    it answered). A changed host key, a failed authentication, a refused
    connection (something answers on the address) or any other SSH error is
    ``refused``: removing such a node as dead would skip its reset, leave its
    kubelet able to register again and evict its pods ungracefully. An
    unanswering node whose Node is still Ready is refused too (its kubelet
    still reports: a network problem between here and there, not a dead
    machine). ``node_ready``: the Node's Ready condition, None without a Node. Pure.
    """
    if ssh_error is None:
        return NodeState(name, "alive", "answers SSH with its pinned key")
    text = str(ssh_error).lower()
    if isinstance(ssh_error, errors.HostKeyError):
        return NodeState(name, "refused", "its SSH host key is not the pinned one (changed or unknown): a "
                         "reinstalled machine or someone in between, not a dead one; pin the key after checking "
                         "it on the provider's console, or remove it with node_state dead if it is really gone")
    if not isinstance(ssh_error, errors.HostUnreachable) or "refused" in text \
            or not any(word in text for word in _NO_ANSWER):
        return NodeState(name, "refused", f"SSH failed without a timeout ({str(ssh_error).splitlines()[0]}): "
                         "something answers at its address; fix SSH (key, user, sshd) or set node_state")
    if node_ready:
        return NodeState(name, "refused", "SSH gets no answer but its Node is still Ready (its kubelet reports): "
                         "a network problem between here and there, not a dead machine; check the route, "
                         "or set node_state")
    return NodeState(name, "dead", "no SSH answer within the bound and the Node is "
                     + ("NotReady" if node_ready is False else "gone"))


def last_worker_refusal(workers: Sequence[str], removing: Collection[str], nodes: Mapping[str, NodeInfo],
                        pods_to_evict: int, *, allow_last_worker: bool = False) -> str:
    """Why removing ``removing`` must be refused, or "" when it may go on.

    Refused when pods are to be evicted (``pods_to_evict`` > 0) and none of the ``workers`` that stay is
    Ready and schedulable (not cordoned) according to the API's ``nodes``: the evicted pods would have
    nowhere to run. ``allow_last_worker`` lifts the refusal.
    """
    if allow_last_worker or pods_to_evict <= 0:
        return ""
    staying = [n for n in workers if n not in removing]
    if any(n in nodes and nodes[n].is_ready and not nodes[n].unschedulable for n in staying):
        return ""
    others = "; ".join(f"{n} {nodes[n].status if n in nodes else 'has no Node object'}" for n in staying)
    return (f"removing {', '.join(removing)} would leave no Ready, schedulable worker"
            + (f" ({others})" if others else "") + f", and {pods_to_evict} pods would have nowhere to go")


def stalling_budgets(pods_by_node: Mapping[str, Sequence[Mapping[str, Any]]],
                     budgets: Sequence[DisruptionBudget]) -> list[str]:
    """One line per PodDisruptionBudget that allows no disruption now and covers a pod to evict.

    ``pods_by_node`` maps each node to drain to its pods to evict. An eviction such a budget covers is
    refused until the budget allows one, so a drain waits for it until its timeout. Empty when none.
    """
    lines = []
    for budget in budgets:
        if budget.allowed > 0:
            continue
        covered = [f"{(x.get('metadata') or {}).get('namespace', 'default')}/{(x.get('metadata') or {}).get('name')}"
                   f" on {node}" for node, pods in pods_by_node.items() for x in pods if budget.matches(x)]
        if covered:
            lines.append(f"PodDisruptionBudget {budget.namespace}/{budget.name} allows 0 disruptions and covers "
                         + ", ".join(covered))
    return lines
