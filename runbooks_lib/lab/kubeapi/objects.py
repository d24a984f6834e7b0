"""Defaulting of stored objects, as kube-apiserver's defaulters and Go serialization would leave them.

Fields Go always serializes (non-omitempty strings and integers such as
Node ``status.nodeInfo.*``, ContainerStatus ``restartCount``/``imageID``,
DaemonSet status counters) are filled with their zero values, so that strict
clients (kubernetes Python client 37.x, pydantic) accept every object. User
supplied values are never rewritten, so ``kubectl apply`` stays "unchanged".
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

NODE_INFO_FIELDS = (
    "architecture",
    "bootID",
    "containerRuntimeVersion",
    "kernelVersion",
    "kubeProxyVersion",
    "kubeletVersion",
    "machineID",
    "operatingSystem",
    "osImage",
    "systemUUID",
)


def now_rfc3339(offset_seconds: float = 0) -> str:
    """UTC time as Kubernetes writes it (second precision, Z suffix)."""
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset_seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> dt.datetime | None:
    """Parse an RFC 3339 timestamp (None if absent or malformed)."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def new_uid() -> str:
    return str(uuid.uuid4())


def _setdefault_path(obj: dict, path: tuple[str, ...], value: Any) -> None:
    cur = obj
    for part in path[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur.setdefault(path[-1], value)


def _container_defaults(container: dict) -> None:
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in container.get("env") or []:
        if isinstance(env, dict) and "valueFrom" not in env:
            env.setdefault("value", "")


def pod_spec_defaults(spec: dict) -> None:
    """Defaults of a PodSpec (pods and pod templates)."""
    spec.setdefault("containers", [])
    for c in spec.get("containers") or []:
        if isinstance(c, dict):
            _container_defaults(c)
    for c in spec.get("initContainers") or []:
        if isinstance(c, dict):
            _container_defaults(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    if spec.get("serviceAccountName") or spec.get("serviceAccount"):
        spec.setdefault("serviceAccountName", spec.get("serviceAccount"))
        spec.setdefault("serviceAccount", spec.get("serviceAccountName"))
    for tol in spec.get("tolerations") or []:
        if isinstance(tol, dict) and "key" in tol and "operator" not in tol:
            tol["operator"] = "Equal"


def _template_defaults(spec: dict) -> None:
    template = spec.setdefault("template", {})
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        pod_spec_defaults(template.setdefault("spec", {}))


def _container_status_defaults(status: dict) -> None:
    for key in ("containerStatuses", "initContainerStatuses"):
        for cs in status.get(key) or []:
            if isinstance(cs, dict):
                cs.setdefault("name", "")
                cs.setdefault("ready", False)
                cs.setdefault("restartCount", 0)
                cs.setdefault("image", "")
                cs.setdefault("imageID", "")
                cs.setdefault("state", {})
                cs.setdefault("lastState", {})
                term = (cs.get("lastState") or {}).get("terminated")
                if isinstance(term, dict):
                    term.setdefault("exitCode", 0)
                term = (cs.get("state") or {}).get("terminated")
                if isinstance(term, dict):
                    term.setdefault("exitCode", 0)
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict):
            cond.setdefault("status", "Unknown")


def _conditions_defaults(status: dict) -> None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict):
            cond.setdefault("status", "Unknown")


def apply_defaults(kind: str, obj: dict) -> dict:
    """Fill defaults in place for ``kind`` and return ``obj``."""
    spec = obj.get("spec")
    if kind == "Pod":
        pod_spec_defaults(obj.setdefault("spec", {}))
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", "BestEffort")
        _container_status_defaults(status)
    elif kind == "Node":
        obj.setdefault("spec", {})
        status = obj.setdefault("status", {})
        info = status.setdefault("nodeInfo", {})
        for f in NODE_INFO_FIELDS:
            info.setdefault(f, "")
        status.setdefault("daemonEndpoints", {"kubeletEndpoint": {"Port": 0}})
        for addr in status.get("addresses") or []:
            if isinstance(addr, dict):
                addr.setdefault("address", "")
        _conditions_defaults(status)
    elif kind in ("Deployment", "ReplicaSet", "DaemonSet"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("selector", {})
        _template_defaults(spec)
        spec.setdefault("revisionHistoryLimit", 10)
        if kind == "Deployment":
            spec.setdefault("replicas", 1)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy.setdefault("type", "RollingUpdate")
                strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
        elif kind == "ReplicaSet":
            spec.setdefault("replicas", 1)
            st = obj.setdefault("status", {})
            st.setdefault("replicas", 0)
            _conditions_defaults(st)
        else:
            strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy.setdefault("type", "RollingUpdate")
                strategy.setdefault("rollingUpdate", {"maxUnavailable": 1, "maxSurge": 0})
            st = obj.setdefault("status", {})
            for f in ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"):
                st.setdefault(f, 0)
            _conditions_defaults(st)
        if kind == "Deployment" and isinstance(obj.get("status"), dict):
            _conditions_defaults(obj["status"])
    elif kind == "Service":
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
        if spec.get("clusterIP") != "None":
            spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
        name = obj.get("metadata", {}).get("name")
        if name:
            obj["metadata"].setdefault("labels", {}).setdefault("kubernetes.io/metadata.name", name)
    elif kind == "PodDisruptionBudget":
        st = obj.setdefault("status", {})
        for f in ("currentHealthy", "desiredHealthy", "disruptionsAllowed", "expectedPods"):
            st.setdefault(f, 0)
        _conditions_defaults(st)
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif kind == "Ingress":
        for rule in (spec or {}).get("rules") or []:
            for path in ((rule or {}).get("http") or {}).get("paths") or []:
                if isinstance(path, dict):
                    path.setdefault("pathType", "ImplementationSpecific")
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif kind == "Event":
        obj.setdefault("involvedObject", {})
        obj.setdefault("reportingComponent", "")
        obj.setdefault("reportingInstance", "")
    elif kind == "Endpoints":
        for subset in obj.get("subsets") or []:
            for port in (subset or {}).get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
    return obj


def has_generation(obj: dict) -> bool:
    """Objects with a spec carry metadata.generation (bumped on every spec change)."""
    return isinstance(obj.get("spec"), dict) and obj.get("kind") not in ("Node", "Namespace")
