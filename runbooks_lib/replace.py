"""Replacing a dead control-plane/etcd node: the decisions the replace runbook takes, in one place.

Everything that touches a host lives in the modules of that system (etcd,
controlplane, kube, kubespray, nodes, inventory); this module decides what to do
with what they report, so that each step of the runbook can check before it
acts and a re-run after an interruption converges:

- :func:`member_add_first`: Kubespray's membership grep (``etcdctl member list |
  grep -q IP`` without ``-w`` up to v2.22) takes a replacement whose IP is a
  substring of another member's for a member and skips ``member add``; a
  same-IP re-add can be skipped the same way on any version. Then etcd fails
  with "member count is unequal"; adding the member by hand first avoids it.
- :func:`stale_member`: which member with the dead node's peer URL is the dead
  one (started, not healthy), as opposed to the replacement added by hand
  (unstarted) or already joined (healthy).
- :func:`resuming`: whether the inventory already lists the replacement at
  the END of the groups, i.e. the removal half is done.
- inventory edits: :func:`without_dead`, :func:`with_replacement`.
- :func:`nginx_upstreams`: the control planes a worker's nginx-proxy balances over.

Pure apart from :func:`nginx_upstreams` (reads a file over SSH).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from runbooks_lib import etcd, ssh
from runbooks_lib.inventory import Inventory

CONTROL_PLANE = "kube_control_plane"
ETCD = "etcd"
GROUPS = (CONTROL_PLANE, ETCD)
GREP_FIXED = (2, 23)  # joins match with `grep -w` from this release on
NGINX_CONF = "/etc/nginx/nginx.conf"
_UPSTREAM = re.compile(r"^\s*server\s+(?P<addr>[^\s;]+):(?P<port>\d+)\s*;", re.M)


@dataclass(frozen=True)
class AddFirst:
    """Whether to ``etcdctl member add`` the replacement before cluster.yml, and why (plain words)."""

    needed: bool
    reason: str


def grep_matches(ip: str, member_ips: Sequence[str]) -> list[str]:
    """The member IPs that ``grep -q IP`` (no ``-w``) also matches: those containing ``ip`` as a substring."""
    return [m for m in member_ips if m != ip and ip in m]


def member_add_first(release: tuple[int, int] | None, new_ip: str, member_ips: Sequence[str], *,
                     same_ip: bool) -> AddFirst:
    """Decide the membership-grep workaround for a replacement at ``new_ip``.

    ``release`` is the Kubespray checkout's (major, minor) (None: unknown, taken
    as old); ``member_ips`` are the IPs of the etcd members that stay. A
    same-IP re-add is always added first: Kubespray writes the full member
    list into the node's /etc/etcd.env before it adds the member, and any
    skipped or failed add ends in "member count is unequal". Pure.
    """
    matched = grep_matches(new_ip, member_ips)
    old = release is None or release < GREP_FIXED
    grep_hazard = ""
    if matched and old:
        version = "an unknown Kubespray version" if release is None else f"Kubespray v{release[0]}.{release[1]}"
        grep_hazard = (f"{version} checks etcd membership with `grep {new_ip}` (no -w): it also matches "
                       f"{', '.join(matched)}, so Kubespray would take the new node for a member and skip `member add`")
    if same_ip:
        return AddFirst(True, f"{new_ip} is re-added with the same IP: Kubespray writes the full member list into "
                              "its /etc/etcd.env before adding the member, and a skipped or failed add ends in etcd's "
                              "\"member count is unequal\"" + (f"; besides, {grep_hazard}" if grep_hazard else "")
                              + "; the member is added by hand first")
    if grep_hazard:
        return AddFirst(True, f"{grep_hazard}, and etcd would fail with \"member count is unequal\"; the member is "
                              "added by hand first")
    if matched:
        return AddFirst(False, f"{new_ip} is a substring of {', '.join(matched)}, but Kubespray "
                               f"v{release[0]}.{release[1]} matches whole words (grep -w): no workaround needed")
    return AddFirst(False, f"{new_ip} is not a substring of another member's IP: Kubespray adds the member itself")


def stale_member(members: Sequence[etcd.Member], healthy_endpoints: Sequence[str], dead_ip: str) -> etcd.Member | None:
    """The dead node's member, still to be removed: started, with the dead IP's peer URL, not healthy.

    A member with that peer URL that never started (added by hand for the
    replacement) or that is healthy (the replacement has joined) is not
    stale. None when nothing is left to remove. Pure.
    """
    peer = etcd.peer_url(dead_ip)
    healthy = {e.rstrip("/") for e in healthy_endpoints}
    for m in members:
        if peer in {u.rstrip("/") for u in m.peer_urls} and m.started:
            if not healthy & {u.rstrip("/") for u in m.client_urls}:
                return m
    return None


def resuming(inv: Inventory, dead: str, new: str) -> bool:
    """True when the inventory already has the replacement appended (the removal half is done).

    New machine: ``new`` is in kube_control_plane or etcd. Same name (``new ==
    dead``): it is listed, and not first, in both groups (the original was first).
    """
    if new != dead:
        return any(new in inv.members(g) for g in GROUPS)
    lists = [inv.members(g) for g in GROUPS]
    return all(dead in m and m[0] != dead for m in lists)


def without_dead(inv: Inventory, dead: str, *, keep_in_all: bool) -> list[str]:
    """Edit ``inv``: take ``dead`` out of every group (survivors keep their order, so one of them is first).

    ``keep_in_all`` keeps its definition (a same-IP re-add comes back with
    its vars, etcd_member_name included). Returns the groups it left.
    """
    if not inv.groups_of(dead) or dead not in inv.hosts:
        return []
    return inv.remove_host(dead, keep_in_all=keep_in_all)


def with_replacement(inv: Inventory, new: str, ip: str, *, etcd_member_name: str,
                     also: Sequence[str] = ()) -> list[str]:
    """Edit ``inv``: append ``new`` at the END of kube_control_plane and etcd (and of ``also``, e.g. kube_node).

    A host already defined (same-IP re-add) keeps its vars and gets
    ``etcd_member_name``; a new one is defined with ip/access_ip/ansible_host.
    Returns the groups it was added to; [] when nothing was to do.
    """
    groups = [g for g in (*GROUPS, *also) if new not in inv.members(g)]
    if new in inv.hosts:
        for g in groups:
            inv.append_member(g, new)
        if inv.host(new).vars.get("etcd_member_name") != etcd_member_name:
            inv.update_host_vars(new, {"etcd_member_name": etcd_member_name})
    elif groups:
        inv.add_host(new, ip=ip, groups=groups, etcd_member_name=etcd_member_name)
    return groups


def client_url(ip: str) -> str:
    """An etcd member's client URL as Kubespray writes it into --etcd-servers."""
    return etcd.peer_url(ip, 2379)


def nginx_upstreams(conn: ssh.BaseConnection, *, sudo: bool = False, timeout: float = 30.0) -> tuple[str, ...]:
    """Probe: the API server addresses of a worker's nginx-proxy (``server IP:PORT;`` in /etc/nginx/nginx.conf)."""
    text = ssh.read_text(conn, NGINX_CONF, sudo=sudo, timeout=timeout, missing_ok=True) or ""
    upstream = text.split("upstream kube_apiserver", 1)[-1].split("}", 1)[0] if "upstream kube_apiserver" in text else ""
    return tuple(m["addr"] for m in _UPSTREAM.finditer(upstream))
