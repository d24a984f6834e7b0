"""The inventory model: hosts with their vars, groups as written, Kubespray's group names.

Nothing here reads a file or touches a machine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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
        return str_or_none(self.vars.get("ansible_host"))

    @property
    def ip(self) -> str | None:
        return str_or_none(self.vars.get("ip"))

    @property
    def access_ip(self) -> str | None:
        return str_or_none(self.vars.get("access_ip"))

    @property
    def etcd_member_name(self) -> str | None:
        return str_or_none(self.vars.get("etcd_member_name"))

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


def str_or_none(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def check_ip(ip: str, name: str) -> None:
    """Raise BadParameters unless ``ip`` (given for host ``name``) is an IPv4/IPv6 address."""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise errors.BadParameters(f"{ip!r} (host {name}) is not an IP address",
                                   fix="pass IPv4/IPv6 addresses such as 10.0.0.11") from None
