"""Kubespray inventories: read, build, edit, validate and diff.

Import the package as a namespace: ``inventory.load(path)``,
``inventory.build(ips)``, ``inventory.diff(old, new)``. Modules: ``model``
(Host, Group, group names, the SSH address rule), ``yaml_doc`` (hosts.yaml),
``ini_doc`` (inventory.ini), ``document`` (Inventory: read, edit, validate,
save), ``build`` (a new inventory from IPs), ``diff``, ``group_vars`` (the
inventory's group_vars files, edited with comments kept), ``workers``
(add and remove workers on a copy).
"""

from runbooks_lib.inventory import group_vars, workers
from runbooks_lib.inventory.build import build
from runbooks_lib.inventory.diff import GroupChange, InventoryDiff, VarChange, diff
from runbooks_lib.inventory.document import Inventory, load
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
    ssh_address,
)

__all__ = [
    "ADDRESS_VARS",
    "CALICO_RR",
    "CONTROL_PLANE",
    "ETCD",
    "IMPLICIT_GROUPS",
    "K8S_CLUSTER",
    "KNOWN_GROUPS",
    "LEGACY_GROUPS",
    "WORKERS",
    "Format",
    "Group",
    "GroupChange",
    "Host",
    "Inventory",
    "InventoryDiff",
    "VarChange",
    "build",
    "diff",
    "group_vars",
    "load",
    "ssh_address",
    "workers",
]
