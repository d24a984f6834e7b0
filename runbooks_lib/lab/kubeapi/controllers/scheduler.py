"""Scheduler: binds pending pods to nodes.

Filters like kube-scheduler's default plugins: node Ready, not unschedulable
(unless tolerated), NoSchedule/NoExecute taints tolerated, nodeSelector and
required node affinity, free hostPorts, pod count under allocatable pods.
Scores: fewest pods of the same owner on the node (spread), then fewest pods.
Before binding it adds the default not-ready/unreachable tolerations (300 s)
if the pod lacks them, as DefaultTolerationSeconds admission would have. Binds
through pods/NAME/binding. A pod that fits nowhere gets PodScheduled=False,
reason Unschedulable, with kube-scheduler's style of message.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers import util
from runbooks_lib.lab.kubeapi.controllers.snapshot import Snapshot

log = logging.getLogger(__name__)
COMPONENT = "default-scheduler"


def host_ports(pod: Mapping) -> set[tuple[str, int]]:
    out = set()
    for c in (pod.get("spec") or {}).get("containers") or ():
        for p in c.get("ports") or ():
            if p.get("hostPort"):
                out.add((p.get("protocol", "TCP"), int(p["hostPort"])))
    return out


def _allocatable_pods(node: Mapping) -> int:
    try:
        return int(((node.get("status") or {}).get("allocatable") or {}).get("pods", 110))
    except ValueError:
        return 110


def filter_node(pod: Mapping, node: Mapping, node_pods: list[Mapping]) -> str | None:
    """None if ``pod`` fits ``node``; else kube-scheduler's reason phrase."""
    spec = pod.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    if util.node_ready_status(node) != "True":
        return "node(s) were not ready"
    if (node.get("spec") or {}).get("unschedulable"):
        taint = {"key": util.UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
        if util.matching_toleration(tolerations, taint) is None:
            return "node(s) were unschedulable"
    bad = util.untolerated_taints(tolerations, (node.get("spec") or {}).get("taints"))
    if bad:
        t = bad[0]
        value = f": {t['value']}" if t.get("value") else ""
        return f"node(s) had untolerated taint {{{t.get('key')}{value}}}"
    if not util.node_selector_matches(spec, node):
        return "node(s) didn't match Pod's node affinity/selector"
    wanted = host_ports(pod)
    if wanted and any(wanted & host_ports(p) for p in node_pods if util.pod_active(p)):
        return "node(s) didn't have free ports for the requested pod ports"
    if sum(1 for p in node_pods if util.pod_active(p)) >= _allocatable_pods(node):
        return "Too many pods"
    return None


def _owner_key(pod: Mapping) -> str:
    ref = util.controller_ref(pod)
    return ref.get("uid", "") if ref else ""


def choose_node(pod: Mapping, nodes: list[Mapping], pods_by_node: Mapping[str, list[Mapping]]) -> tuple[str | None, str]:
    """Return (node name, "") or (None, the FailedScheduling message)."""
    reasons: Counter[str] = Counter()
    fits = []
    owner = _owner_key(pod)
    for node in nodes:
        name = util.name_of(node)
        node_pods = list(pods_by_node.get(name, []))
        reason = filter_node(pod, node, node_pods)
        if reason:
            reasons[reason] += 1
            continue
        active = [p for p in node_pods if util.pod_active(p)]
        same = sum(1 for p in active if owner and _owner_key(p) == owner)
        fits.append((same, len(active), name))
    if fits:
        return min(fits)[2], ""
    detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    message = f"0/{len(nodes)} nodes are available: {detail}." if detail else f"0/{len(nodes)} nodes are available."
    return None, message + " preemption: 0/%d nodes are available." % len(nodes)


def is_pending(pod: Mapping) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and util.pod_active(pod)
            and spec.get("schedulerName", "default-scheduler") == "default-scheduler")


class Scheduler:
    async def sync(self, api: kc.KubeClient, snap: Snapshot) -> None:
        by_node = snap.pods_by_node()
        pending = sorted((p for p in snap.pods if is_pending(p)),
                         key=lambda p: (util.meta(p).get("creationTimestamp") or "", util.name_of(p)))
        for pod in pending:
            name, message = choose_node(pod, snap.nodes, by_node)
            try:
                if name is None:
                    await self._unschedulable(api, pod, message)
                    continue
                await self._bind(api, pod, name)
                bound = dict(pod)
                bound["spec"] = dict(pod.get("spec") or {}, nodeName=name)
                by_node.setdefault(name, []).append(bound)
            except RunbookError as exc:
                log.warning("scheduling %s/%s: %s", util.ns_of(pod), util.name_of(pod), exc.what)

    async def _bind(self, api: kc.KubeClient, pod: dict, node: str) -> None:
        ns, name = util.ns_of(pod), util.name_of(pod)
        tolerations = (pod.get("spec") or {}).get("tolerations") or []
        with_defaults = util.default_tolerations(tolerations)
        if with_defaults != tolerations:
            await api.patch(kc.PODS, name, {"spec": {"tolerations": with_defaults}}, ns)
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            await api.create(kc.PODS, binding, ns, subresource="binding", name=name)
        except kc.ApiError as exc:
            if exc.conflict or exc.not_found:
                return  # bound meanwhile, or deleted
            raise
        log.info("bound %s/%s to %s", ns, name, node)
        await util.record_event(api, pod, "Scheduled", f"Successfully assigned {ns}/{name} to {node}", COMPONENT)

    async def _unschedulable(self, api: kc.KubeClient, pod: dict, message: str) -> None:
        cond = util.condition(pod, "PodScheduled") or {}
        if cond.get("status") == "False" and cond.get("message") == message:
            return
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or () if c.get("type") != "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                           "lastProbeTime": None, "lastTransitionTime": util.now_iso()})
        await api.patch(kc.PODS, util.name_of(pod), {"status": {"phase": "Pending", "conditions": conditions}},
                        util.ns_of(pod), subresource="status")
        await util.record_event(api, pod, "FailedScheduling", message, COMPONENT, "Warning")
