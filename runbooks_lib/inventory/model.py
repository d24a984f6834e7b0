"""The inventory model: hosts with their vars, groups as written, Kubespray's group names,
and where Ansible reaches a host.

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


def ssh_address(name: str, vars: Mapping[str, object]) -> str:  # noqa: A002 - Ansible's word
    """The address Ansible (and so Kubespray's playbooks) connects to for inventory host ``name``.

    Ansible's rule: ``ansible_host`` when it is set, else the inventory
    hostname itself, resolved by the SSH client (Ansible's ssh connection
    plugin also honours the older alias ``ansible_ssh_host``, which wins when
    both are set). Kubespray's ``ip`` and ``access_ip`` are not SSH
    addresses: ``ip`` is the address its services bind to and ``access_ip``
    the one other nodes use to reach them (Kubespray docs/ansible/vars.md);
    Ansible never connects to them, so neither does this library. This is the
    one place the library decides it (:attr:`Host.address`,
    :func:`runbooks_lib.ssh.from_inventory_host`).
    """
    for key in ("ansible_ssh_host", "ansible_host"):
        value = str_or_none(vars.get(key))
        if value is not None:
            return value
    return name


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
        """Where Ansible connects to the host over SSH (see :func:`ssh_address`)."""
        return ssh_address(self.name, self.vars)

    @property
    def api_address(self) -> str:
        """Where its services (the API server on 6443) are reached: Kubespray's main_access_ip.

        ``access_ip``, else ``ip``, else the SSH address: the first two are in
        every API server certificate Kubespray issues, the SSH address only
        when it is also the machine's default IPv4 address or listed in
        ``supplementary_addresses_in_ssl_keys``.
        """
        return self.access_ip or self.ip or self.address


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
