"""A new hosts.yaml inventory from a list of IPs, in the shape Kubespray's inventory builder wrote."""

from __future__ import annotations

import io
from collections.abc import Sequence

from ruamel.yaml.comments import CommentedMap

from runbooks_lib import errors
from runbooks_lib.inventory.document import Inventory
from runbooks_lib.inventory.model import CALICO_RR, CONTROL_PLANE, ETCD, K8S_CLUSTER, WORKERS, check_ip
from runbooks_lib.inventory.yaml_doc import round_trip_yaml


def build(
    ips: Sequence[str],
    *,
    control_planes: int | Sequence[str] = 2,
    etcd: int | Sequence[str] = 3,
    workers: Sequence[str] | None = None,
    prefix: str = "node",
    names: Sequence[str] | None = None,
) -> Inventory:
    """A hosts.yaml inventory in the shape Kubespray's inventory builder wrote.

    Hosts are ``{prefix}1..N`` with ansible_host = ip = access_ip = the IP.
    ``control_planes``/``etcd`` are a count (the first N hosts) or names/IPs;
    workers default to every host. ``names`` (one per IP) replaces the
    ``{prefix}N`` names, e.g. the operator's own host names. Unlike the old builder, etcd members get an
    explicit ``etcd_member_name`` (etcd1..N) and k8s_cluster lists
    kube_control_plane, kube_node and calico_rr. Raises BadParameters for
    duplicate or invalid IPs, unknown names, an even or empty etcd.
    """
    if not ips:
        raise errors.BadParameters("no IPs given", fix="pass the node IPs, e.g. ['10.0.0.11', '10.0.0.12']")
    if names is not None and len(names) != len(ips):
        raise errors.BadParameters(f"{len(names)} names for {len(ips)} IPs", fix="give one name per IP")
    names = list(names) if names is not None else [f"{prefix}{i}" for i in range(1, len(ips) + 1)]
    if len(set(names)) != len(names):
        raise errors.BadParameters(f"duplicate host names: {', '.join(sorted({n for n in names if names.count(n) > 1}))}",
                                   fix="give each host its own name")
    for ip, name in zip(ips, names):
        check_ip(ip, name)
    if len(set(ips)) != len(ips):
        dupes = sorted({ip for ip in ips if ips.count(ip) > 1})
        raise errors.BadParameters(f"duplicate IPs: {', '.join(dupes)}", fix="list each node once")
    by_key = {**dict(zip(names, names)), **dict(zip(ips, names))}

    def pick(spec: int | Sequence[str], role: str) -> list[str]:
        if isinstance(spec, int):
            return names[: max(0, min(spec, len(names)))]
        unknown = [s for s in spec if s not in by_key]
        if unknown:
            raise errors.BadParameters(f"{role}: {', '.join(unknown)} not among the nodes",
                                       fix=f"use node names ({', '.join(names)}) or their IPs")
        return [by_key[s] for s in spec]

    control = pick(control_planes, CONTROL_PLANE)
    if isinstance(etcd, int):
        if etcd % 2 == 0:
            raise errors.BadParameters(f"etcd={etcd}: etcd needs an odd number of members",
                                       fix="pass etcd=1, 3 or 5")
        count = min(etcd, len(names))
        count -= 0 if count % 2 else 1  # the builder's rule: fewer nodes than asked -> largest odd count
        members = names[:max(count, 1)]
    else:
        members = pick(etcd, ETCD)
    workers_list = names if workers is None else pick(workers, WORKERS)
    if not control:
        raise errors.BadParameters("no control plane chosen", fix="pass control_planes >= 1")
    if not members or len(members) % 2 == 0:
        raise errors.BadParameters(f"etcd needs an odd number of members, got {len(members)}",
                                   fix="pick 1, 3 or 5 etcd members")
    top = CommentedMap()
    all_node = CommentedMap()
    top["all"] = all_node
    hosts = CommentedMap()
    all_node["hosts"] = hosts
    for ip, name in zip(ips, names):
        hvars = CommentedMap([("ansible_host", ip), ("ip", ip), ("access_ip", ip)])
        if name in members:
            hvars["etcd_member_name"] = f"etcd{members.index(name) + 1}"
        hosts[name] = hvars
    children = CommentedMap()
    all_node["children"] = children

    def group(members_: list[str]) -> CommentedMap:
        node = CommentedMap()
        node["hosts"] = CommentedMap((m, None) for m in members_)
        if not members_:
            node["hosts"].fa.set_flow_style()  # `hosts: {}` as the builder wrote it
        return node

    children[CONTROL_PLANE] = group(control)
    children[WORKERS] = group(workers_list)
    children[ETCD] = group(members)
    children[K8S_CLUSTER] = CommentedMap(children=CommentedMap([(CONTROL_PLANE, None), (WORKERS, None),
                                                                (CALICO_RR, None)]))
    children[CALICO_RR] = group([])
    buf = io.StringIO()
    round_trip_yaml().dump(top, buf)
    return Inventory.parse(buf.getvalue(), "yaml")
