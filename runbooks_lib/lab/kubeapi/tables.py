"""Server-side printing (meta.k8s.io/v1 Table), the columns ``kubectl get`` shows.

Column logic follows kube-apiserver's printers for nodes, pods, deployments,
replica sets, daemon sets, services, ingresses and PDBs; every other kind gets
NAME and AGE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from .objects import parse_time

Column = tuple[str, str, int]  # name, type, priority (1 = only with -o wide)


def human_duration(seconds: float) -> str:
    """Kubernetes' HumanDuration (the AGE column)."""
    if seconds < -1:
        return "<invalid>"
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    y = h // (24 * 365)
    if y < 8:
        return f"{y}y{(h // 24) % 365}d"
    return f"{y}y"


def age(obj: dict) -> str:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    if created is None:
        return "<unknown>"
    return human_duration((dt.datetime.now(dt.timezone.utc) - created).total_seconds())


def _name(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def node_status(node: dict) -> str:
    conds = [c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
    parts = []
    for c in conds:
        parts.append("Ready" if c.get("status") == "True" else "NotReady")
    if not parts:
        parts.append("Unknown")
    if (node.get("spec") or {}).get("unschedulable"):
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def node_roles(node: dict) -> str:
    roles = set()
    for key, value in ((node.get("metadata") or {}).get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key.split("/", 1)[1]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(node: dict, kind: str) -> str:
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == kind:
            return a.get("address", "")
    return "<none>"


def pod_status_reason(pod: dict) -> str:
    """The STATUS column of ``kubectl get pods`` (CrashLoopBackOff, Terminating, Completed...)."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    init_done = True
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode", 0) == 0:
            continue
        init_done = False
        n = len((pod.get("spec") or {}).get("initContainers") or [])
        if term:
            reason = f"Init:{term.get('reason') or 'Error'}"
        elif (state.get("waiting") or {}).get("reason") not in (None, "", "PodInitializing"):
            reason = f"Init:{state['waiting']['reason']}"
        else:
            reason = f"Init:{i}/{n}"
        break
    if init_done:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            waiting, term = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif term and term.get("reason"):
                reason = term["reason"]
            elif term:
                reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode', 0)}"
            elif state.get("running") and cs.get("ready"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def _pod_ready(pod: dict) -> str:
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for cs in (pod.get("status") or {}).get("containerStatuses") or [] if cs.get("ready"))
    return f"{ready}/{total}"


def _pod_restarts(pod: dict) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    last = None
    for cs in statuses:
        finished = parse_time(((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if finished and (last is None or finished > last):
            last = finished
    if restarts and last:
        ago = human_duration((dt.datetime.now(dt.timezone.utc) - last).total_seconds())
        return f"{restarts} ({ago} ago)"
    return str(restarts)


def _images(obj: dict) -> tuple[str, str]:
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


def _selector(obj: dict) -> str:
    sel = (obj.get("spec") or {}).get("selector") or {}
    if "matchLabels" in sel or "matchExpressions" in sel:
        from .selectors import label_selector_string

        return label_selector_string(sel) or "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items())) or "<none>"


def _svc_ports(svc: dict) -> str:
    out = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _ingress_hosts(ing: dict) -> str:
    hosts = [r.get("host") for r in (ing.get("spec") or {}).get("rules") or [] if r.get("host")]
    return ",".join(hosts) or "*"


def _lb_addresses(obj: dict) -> str:
    ing = (((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    return ",".join(i.get("ip") or i.get("hostname") or "" for i in ing)


def _int_or_str(value: object) -> str:
    return "N/A" if value is None else str(value)


Printer = tuple[list[Column], Callable[[dict], list]]

PRINTERS: dict[str, Printer] = {
    "Node": (
        [("Name", "string", 0), ("Status", "string", 0), ("Roles", "string", 0), ("Age", "string", 0),
         ("Version", "string", 0), ("Internal-IP", "string", 1), ("External-IP", "string", 1),
         ("OS-Image", "string", 1), ("Kernel-Version", "string", 1), ("Container-Runtime", "string", 1)],
        lambda o: [_name(o), node_status(o), node_roles(o), age(o),
                   ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""),
                   _node_address(o, "InternalIP"), _node_address(o, "ExternalIP"),
                   ((o.get("status") or {}).get("nodeInfo") or {}).get("osImage") or "<unknown>",
                   ((o.get("status") or {}).get("nodeInfo") or {}).get("kernelVersion") or "<unknown>",
                   ((o.get("status") or {}).get("nodeInfo") or {}).get("containerRuntimeVersion") or "<unknown>"],
    ),
    "Pod": (
        [("Name", "string", 0), ("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "string", 0),
         ("Age", "string", 0), ("IP", "string", 1), ("Node", "string", 1), ("Nominated Node", "string", 1),
         ("Readiness Gates", "string", 1)],
        lambda o: [_name(o), _pod_ready(o), pod_status_reason(o), _pod_restarts(o), age(o),
                   (o.get("status") or {}).get("podIP") or "<none>",
                   (o.get("spec") or {}).get("nodeName") or "<none>",
                   (o.get("status") or {}).get("nominatedNodeName") or "<none>", "<none>"],
    ),
    "Deployment": (
        [("Name", "string", 0), ("Ready", "string", 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0),
         ("Age", "string", 0), ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)],
        lambda o: [_name(o),
                   f"{(o.get('status') or {}).get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 1)}",
                   (o.get("status") or {}).get("updatedReplicas", 0),
                   (o.get("status") or {}).get("availableReplicas", 0), age(o), *_images(o), _selector(o)],
    ),
    "ReplicaSet": (
        [("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0),
         ("Age", "string", 0), ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)],
        lambda o: [_name(o), (o.get("spec") or {}).get("replicas", 1), (o.get("status") or {}).get("replicas", 0),
                   (o.get("status") or {}).get("readyReplicas", 0), age(o), *_images(o), _selector(o)],
    ),
    "DaemonSet": (
        [("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0),
         ("Up-to-date", "integer", 0), ("Available", "integer", 0), ("Node Selector", "string", 0),
         ("Age", "string", 0), ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)],
        lambda o: [_name(o), *[(o.get("status") or {}).get(f, 0) for f in (
                   "desiredNumberScheduled", "currentNumberScheduled", "numberReady", "updatedNumberScheduled",
                   "numberAvailable")],
                   ",".join(f"{k}={v}" for k, v in sorted(((((o.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeSelector") or {}).items())) or "<none>",
                   age(o), *_images(o), _selector(o)],
    ),
    "Service": (
        [("Name", "string", 0), ("Type", "string", 0), ("Cluster-IP", "string", 0), ("External-IP", "string", 0),
         ("Port(s)", "string", 0), ("Age", "string", 0), ("Selector", "string", 1)],
        lambda o: [_name(o), (o.get("spec") or {}).get("type", "ClusterIP"),
                   (o.get("spec") or {}).get("clusterIP") or "<none>",
                   _lb_addresses(o) or ",".join((o.get("spec") or {}).get("externalIPs") or []) or "<none>",
                   _svc_ports(o), age(o), _selector(o)],
    ),
    "Ingress": (
        [("Name", "string", 0), ("Class", "string", 0), ("Hosts", "string", 0), ("Address", "string", 0),
         ("Ports", "string", 0), ("Age", "string", 0)],
        lambda o: [_name(o), (o.get("spec") or {}).get("ingressClassName") or "<none>", _ingress_hosts(o),
                   _lb_addresses(o), "443, 80" if (o.get("spec") or {}).get("tls") else "80", age(o)],
    ),
    "PodDisruptionBudget": (
        [("Name", "string", 0), ("Min Available", "string", 0), ("Max Unavailable", "string", 0),
         ("Allowed Disruptions", "integer", 0), ("Age", "string", 0)],
        lambda o: [_name(o), _int_or_str((o.get("spec") or {}).get("minAvailable")),
                   _int_or_str((o.get("spec") or {}).get("maxUnavailable")),
                   (o.get("status") or {}).get("disruptionsAllowed", 0), age(o)],
    ),
    "Namespace": (
        [("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)],
        lambda o: [_name(o), (o.get("status") or {}).get("phase", "Active"), age(o)],
    ),
    "Endpoints": (
        [("Name", "string", 0), ("Endpoints", "string", 0), ("Age", "string", 0)],
        lambda o: [_name(o), ",".join(f"{a.get('ip')}:{p.get('port')}" for s in o.get("subsets") or []
                                      for a in s.get("addresses") or [] for p in s.get("ports") or [{}])
                   or "<none>", age(o)],
    ),
    "Lease": (
        [("Name", "string", 0), ("Holder", "string", 0), ("Age", "string", 0)],
        lambda o: [_name(o), (o.get("spec") or {}).get("holderIdentity", ""), age(o)],
    ),
}

_GENERIC: Printer = ([("Name", "string", 0), ("Age", "string", 0)], lambda o: [_name(o), age(o)])


def _partial(obj: dict) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}


def table(kind: str, objects: list[dict], resource_version: str | None = None, include_object: str = "Metadata",
          continue_token: str | None = None) -> dict:
    """Build a meta.k8s.io/v1 Table of ``objects`` (rows carry PartialObjectMetadata by default)."""
    columns, row = PRINTERS.get(kind, _GENERIC)
    rows = []
    for obj in objects:
        r: dict = {"cells": row(obj)}
        if include_object == "Object":
            r["object"] = obj
        elif include_object != "None":
            r["object"] = _partial(obj)
        rows.append(r)
    meta: dict = {}
    if resource_version:
        meta["resourceVersion"] = resource_version
    if continue_token:
        meta["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": [
            {"name": name, "type": typ, "format": "name" if name == "Name" else "", "description": name,
             "priority": prio}
            for name, typ, prio in columns
        ],
        "rows": rows,
    }
