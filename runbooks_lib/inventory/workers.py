"""Inventory edits for adding and removing workers, on a copy (the file is written by the caller).

Pure: each function returns an edited copy of the Inventory and leaves the
original as it was, so a runbook can show the diff before it saves anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runbooks_lib import errors
from runbooks_lib.inventory.document import Inventory
from runbooks_lib.inventory.model import K8S_CLUSTER, WORKERS


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
