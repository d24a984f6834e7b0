"""Kubernetes semantics the controllers share: selectors, taints, readiness, ownership, times.

Pure functions over object dicts, plus :func:`record_event` (writes an Event,
best effort).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc

log = logging.getLogger(__name__)

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
DEFAULT_TOLERATION_SECONDS = 300
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.String alphabet


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(timestamp: float) -> str:
    """metav1.Time of seconds since the epoch."""
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> float | None:
    """Seconds since the epoch of a metav1.Time or MicroTime string; None if absent or malformed."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_NAME_ALPHABET) for _ in range(n))


def safe_hash(data: object, n: int = 10) -> str:
    """A short stable hash of JSON-able ``data`` in the alphabet of pod-template-hash."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).digest()
    return "".join(_NAME_ALPHABET[b % len(_NAME_ALPHABET)] for b in digest[:n])


def template_hash(template: Mapping) -> str:
    """pod-template-hash of a pod template (its own hash label excluded)."""
    tpl = json.loads(json.dumps(template))
    labels = tpl.get("metadata", {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    labels.pop("controller-revision-hash", None)
    return safe_hash(tpl)


# ---- selectors -------------------------------------------------------------------

def _expression_matches(expr: Mapping, labels: Mapping[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            have, want = int(labels[key]), int(values[0])
        except (KeyError, IndexError, ValueError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def selector_matches(selector: Mapping | None, labels: Mapping[str, str] | None) -> bool:
    """metav1.LabelSelector semantics: None matches nothing, {} matches everything."""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(_expression_matches(e, labels) for e in selector.get("matchExpressions") or ())


def map_selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A Service's or nodeSelector's plain map: every pair must be present. Empty/None matches nothing."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def node_affinity_matches(pod_spec: Mapping, node: Mapping) -> bool:
    """requiredDuringSchedulingIgnoredDuringExecution of the pod's node affinity (absent: matches)."""
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not required:
        return True
    labels = node.get("metadata", {}).get("labels") or {}
    fields = {"metadata.name": node.get("metadata", {}).get("name", "")}
    for term in required.get("nodeSelectorTerms") or ():
        if all(_expression_matches(e, labels) for e in term.get("matchExpressions") or ()) and all(
            _expression_matches(e, fields) for e in term.get("matchFields") or ()
        ):
            return True
    return False


def node_selector_matches(pod_spec: Mapping, node: Mapping) -> bool:
    """nodeSelector (every pair present) and required node affinity."""
    labels = node.get("metadata", {}).get("labels") or {}
    wanted = pod_spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    return node_affinity_matches(pod_spec, node)


# ---- taints and tolerations ------------------------------------------------------

def toleration_matches(toleration: Mapping, taint: Mapping) -> bool:
    """corev1 Toleration.ToleratesTaint."""
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if not key:
        return False  # an empty key is only valid with Exists
    return (toleration.get("value") or "") == (taint.get("value") or "")


def matching_toleration(tolerations: Iterable[Mapping] | None, taint: Mapping) -> Mapping | None:
    for tol in tolerations or ():
        if toleration_matches(tol, taint):
            return tol
    return None


def untolerated_taints(tolerations: Iterable[Mapping] | None, taints: Iterable[Mapping] | None,
                       effects: Sequence[str] = ("NoSchedule", "NoExecute")) -> list[Mapping]:
    tolerations = list(tolerations or ())
    return [t for t in taints or () if t.get("effect") in effects and matching_toleration(tolerations, t) is None]


def default_tolerations(tolerations: Sequence[Mapping] | None) -> list[dict]:
    """DefaultTolerationSeconds admission: add not-ready/unreachable NoExecute for 300 s unless present."""
    out = [dict(t) for t in tolerations or ()]
    for key in (NOT_READY_TAINT, UNREACHABLE_TAINT):
        probe = {"key": key, "effect": "NoExecute"}
        if matching_toleration(out, probe) is None:
            out.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                        "tolerationSeconds": DEFAULT_TOLERATION_SECONDS})
    return out


# ---- objects ---------------------------------------------------------------------

def meta(obj: Mapping) -> Mapping:
    return obj.get("metadata") or {}


def name_of(obj: Mapping) -> str:
    return str(meta(obj).get("name", ""))


def ns_of(obj: Mapping) -> str:
    return str(meta(obj).get("namespace", "") or "")


def uid_of(obj: Mapping) -> str:
    return str(meta(obj).get("uid", ""))


def controller_ref(obj: Mapping) -> Mapping | None:
    for ref in meta(obj).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: Mapping, owner: Mapping) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == uid_of(owner)


def owner_reference(owner: Mapping, api_version: str, kind: str) -> dict:
    return {"apiVersion": api_version, "kind": kind, "name": name_of(owner), "uid": uid_of(owner),
            "controller": True, "blockOwnerDeletion": True}


def condition(obj: Mapping, ctype: str) -> Mapping | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == ctype:
            return cond
    return None


def is_terminating(obj: Mapping) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def pod_active(pod: Mapping) -> bool:
    """Counts toward a controller's replicas: not terminating, not finished."""
    return not is_terminating(pod) and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def pod_ready(pod: Mapping) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def pod_available(pod: Mapping, min_ready_seconds: int, now: float) -> bool:
    if not pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
    return since is not None and now - since >= min_ready_seconds


def node_ready_status(node: Mapping) -> str:
    """"True", "False" or "Unknown" (Unknown when the Ready condition is missing)."""
    cond = condition(node, "Ready")
    return str(cond.get("status")) if cond else "Unknown"


def int_or_percent(value: int | str | None, total: int, default: str, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if value is None:
        value = default
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        scaled = int(text[:-1]) * total / 100
        return int(-(-scaled // 1)) if round_up else int(scaled)
    return int(text)


def pod_from_template(template: Mapping, name: str, namespace: str, owner_ref: Mapping,
                      extra_labels: Mapping[str, str]) -> dict:
    """A Pod from a pod template with the defaults kube-apiserver would apply."""
    tpl = json.loads(json.dumps(template))
    tmeta = tpl.get("metadata") or {}
    spec = tpl.get("spec") or {}
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec["tolerations"] = default_tolerations(spec.get("tolerations"))
    for c in spec.get("containers") or ():
        c.setdefault("imagePullPolicy", "Always" if str(c.get("image", "")).endswith(":latest") else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or ():
            p.setdefault("protocol", "TCP")
    labels = dict(tmeta.get("labels") or {})
    labels.update(extra_labels)
    metadata = {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [dict(owner_ref)]}
    if tmeta.get("annotations"):
        metadata["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


async def record_event(api: kc.KubeClient, obj: Mapping, reason: str, message: str, component: str,
                       event_type: str = "Normal") -> None:
    """Write a core/v1 Event about ``obj`` (best effort: failures are logged, not raised)."""
    namespace = ns_of(obj) or "default"
    now = now_iso()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name_of(obj)}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", ""), "name": name_of(obj),
            "namespace": ns_of(obj) or None, "uid": uid_of(obj),
            "resourceVersion": meta(obj).get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    if not event["involvedObject"]["namespace"]:
        del event["involvedObject"]["namespace"]
    try:
        await api.create(kc.EVENTS, event)
    except RunbookError as exc:
        log.debug("event %s for %s not recorded: %s", reason, name_of(obj), exc.what)
