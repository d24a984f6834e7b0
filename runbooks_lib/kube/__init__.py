"""Kubernetes API: nodes, drain, cluster-info, kube-system health, apply.

Probes: nodes, node, wait_for_nodes, pods_on_node, disruption_budgets, cluster_info_server,
pod_health, rollout, wait_for_rollout. Actions: cordon, uncordon, drain, delete_node,
set_cluster_info_server, apply, delete; each action's docstring names its kubectl
equivalent and its rollback. An ``ApiClient`` (client_from_kubeconfig) is passed
into every function; every request has a timeout, every wait is bounded
(runbook.wait_for). The static pod manifests on control planes are
runbooks_lib.controlplane's.
"""

from runbooks_lib.kube.api import REQUEST_TIMEOUT, client_from_kubeconfig
from runbooks_lib.kube.apply import KINDS, Applied, apply, delete
from runbooks_lib.kube.clusterinfo import ServerChange, cluster_info_server, set_cluster_info_server
from runbooks_lib.kube.drain import DisruptionBudget, DrainResult, disruption_budgets, drain, pods_on_node
from runbooks_lib.kube.health import PodHealth, by_node, crash_looping, pod_health, pod_health_of
from runbooks_lib.kube.watch import EventWatch, endpoints_watch, node_watch
from runbooks_lib.kube.node import (
    NODE_STATES,
    NodeInfo,
    Taint,
    cordon,
    delete_node,
    node,
    node_info,
    nodes,
    uncordon,
    wait_for_nodes,
)
from runbooks_lib.kube.rollout import Rollout, rollout, wait_for_rollout

__all__ = [
    "KINDS", "NODE_STATES", "REQUEST_TIMEOUT", "Applied", "DrainResult", "NodeInfo", "PodHealth", "ServerChange",
    "Taint", "apply", "by_node", "client_from_kubeconfig", "cluster_info_server", "cordon", "crash_looping",
    "delete_node", "drain", "node", "node_info", "nodes", "pod_health", "pod_health_of", "pods_on_node",
    "set_cluster_info_server", "uncordon", "wait_for_nodes",
    "DisruptionBudget", "Rollout", "delete", "disruption_budgets", "rollout", "wait_for_rollout",
    "EventWatch", "endpoints_watch", "node_watch",
]
