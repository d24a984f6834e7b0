"""How to reach one machine over SSH, and how an inventory host becomes one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runbooks_lib.errors import BadParameters


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

    The address falls back to ``ansible_host``, then ``access_ip``, then ``ip``
    (Ansible's own order for reaching a host); user, port and key come from
    ``ansible_user``, ``ansible_port`` and ``ansible_ssh_private_key_file``
    unless given explicitly. Raises BadParameters when no address is known.
    """
    hostvars = dict(vars or {})
    address = address or hostvars.get("ansible_host") or hostvars.get("access_ip") or hostvars.get("ip")
    if not address:
        raise BadParameters(
            f"inventory host {name} has no address",
            fix="set ansible_host (or ip/access_ip) for it in the inventory",
        )
    return Host(
        name=name,
        address=str(address),
        user=user or str(hostvars.get("ansible_user") or "root"),
        port=int(hostvars.get("ansible_port") or 22),
        key_path=key_path or hostvars.get("ansible_ssh_private_key_file"),
        known_hosts=known_hosts,
    )
