"""How to reach one machine over SSH, and how an inventory host becomes one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runbooks_lib.errors import BadParameters
from runbooks_lib.inventory.model import ssh_address


@dataclass(frozen=True)
class Host:
    """How to reach one machine: inventory name, address and SSH settings."""

    name: str
    address: str
    user: str = "root"
    port: int = 22
    key_path: str | None = None
    known_hosts: str | None = None


def from_inventory_host(
    name: str,
    address: str | None = None,
    vars: Mapping[str, Any] | None = None,  # noqa: A002 - Ansible's word for host variables
    *,
    user: str | None = None,
    key_path: str | None = None,
    known_hosts: str | None = None,
) -> Host:
    """Build a :class:`Host` from an inventory host's name, address and variables.

    Without an explicit ``address`` the host is reached where Ansible would
    reach it (:func:`runbooks_lib.inventory.model.ssh_address`: ``ansible_host``,
    else the inventory name; never Kubespray's ``ip``/``access_ip``). User,
    port and key come from ``ansible_user``, ``ansible_port`` and
    ``ansible_ssh_private_key_file`` unless given explicitly. Raises
    BadParameters for an empty name.
    """
    if not name:
        raise BadParameters("an inventory host needs a name", fix="pass the host's name as written in the inventory")
    hostvars = dict(vars or {})
    return Host(
        name=name,
        address=address or ssh_address(name, hostvars),
        user=user or str(hostvars.get("ansible_user") or "root"),
        port=int(hostvars.get("ansible_port") or 22),
        key_path=key_path or hostvars.get("ansible_ssh_private_key_file"),
        known_hosts=known_hosts,
    )
