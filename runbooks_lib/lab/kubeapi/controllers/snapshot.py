"""One consistent-enough read of the objects the controllers work on, taken once per round."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers import util


@dataclass
class Snapshot:
    nodes: list[dict] = field(default_factory=list)
    pods: list[dict] = field(default_factory=list)
    services: list[dict] = field(default_factory=list)
    endpoints: list[dict] = field(default_factory=list)
    deployments: list[dict] = field(default_factory=list)
    replicasets: list[dict] = field(default_factory=list)
    daemonsets: list[dict] = field(default_factory=list)
    node_leases: list[dict] = field(default_factory=list)

    def pods_by_node(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = defaultdict(list)
        for pod in self.pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                out[node].append(pod)
        return out

    def node(self, name: str) -> dict | None:
        for node in self.nodes:
            if util.name_of(node) == name:
                return node
        return None


async def take(api: kc.KubeClient) -> Snapshot:
    """List every kind once (in parallel). Raises what the client raises."""
    kinds = (kc.NODES, kc.PODS, kc.SERVICES, kc.ENDPOINTS, kc.DEPLOYMENTS, kc.REPLICASETS, kc.DAEMONSETS)
    lists = await asyncio.gather(*(api.list(k) for k in kinds), api.list(kc.LEASES, namespace="kube-node-lease"))
    items = [lst.get("items") or [] for lst in lists]
    return Snapshot(*items)
