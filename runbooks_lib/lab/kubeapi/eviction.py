"""pods/eviction honouring PodDisruptionBudgets atomically.

``kubectl drain`` evicts pods in parallel. A check-then-delete lets two
protected pods go at once, so the decision and the deletion are one store
transaction that compares the mod revisions of the PDB and of every pod it
selects; a concurrent eviction changes one of them, the transaction fails and
the eviction is re-evaluated. The PDB's status (currentHealthy,
desiredHealthy, disruptionsAllowed, expectedPods, disruptedPods) is written in
the same transaction.
"""

from __future__ import annotations

import asyncio
import copy
import math
import random

from . import objects, status
from .api import Api, _meta, stored_form, with_rv
from .resources import get as resource
from .selectors import matches, selector_from_label_selector
from .status import ApiError

PODS = resource("pods")
PDBS = resource("poddisruptionbudgets", "policy")
REPLICASETS = resource("replicasets", "apps")
DEPLOYMENTS = resource("deployments", "apps")
RETRIES = 20
VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def pod_healthy(pod: dict) -> bool:
    """Ready and not being deleted (what the disruption controller counts as healthy)."""
    if _meta(pod).get("deletionTimestamp"):
        return False
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _scaled(value: object, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(value)  # type: ignore[arg-type]


async def _expected(api: Api, namespace: str, pods: list[dict], pdb: dict) -> int:
    """Expected pod count: the scale of the pods' controllers (Deployment through its ReplicaSet)."""
    if isinstance((pdb.get("spec") or {}).get("minAvailable"), int):
        return len(pods)
    total, seen = 0, set()
    for pod in pods:
        ref = next((r for r in _meta(pod).get("ownerReferences") or [] if r.get("controller")), None)
        if ref is None or ref.get("kind") != "ReplicaSet":
            total += 1
            continue
        rs = await api.store.get(REPLICASETS.key(namespace, ref.get("name", "")))
        if rs is None:
            total += 1
            continue
        owner = rs.value
        dref = next((r for r in _meta(owner).get("ownerReferences") or [] if r.get("controller") and r.get("kind") == "Deployment"), None)
        if dref is not None:
            dep = await api.store.get(DEPLOYMENTS.key(namespace, dref.get("name", "")))
            if dep is not None:
                owner = dep.value
        uid = _meta(owner).get("uid")
        if uid not in seen:
            seen.add(uid)
            total += int((owner.get("spec") or {}).get("replicas", 1))
    return total


def pdb_numbers(pdb: dict, pods: list[dict], expected: int) -> tuple[int, int, int]:
    """(currentHealthy, desiredHealthy, disruptionsAllowed) for the selected pods."""
    spec = pdb.get("spec") or {}
    healthy = sum(1 for p in pods if pod_healthy(p))
    if spec.get("maxUnavailable") is not None:
        desired = max(expected - _scaled(spec["maxUnavailable"], expected), 0)
    elif spec.get("minAvailable") is not None:
        desired = _scaled(spec["minAvailable"], expected)
    else:
        desired = expected
    return healthy, desired, max(healthy - desired, 0)


async def pdb_status(api: Api, pdb: dict, pods: list[dict] | None = None) -> dict:
    """Compute a PDB's status from the live pods (used on eviction and on PDB creation)."""
    namespace = _meta(pdb).get("namespace", "")
    if pods is None:
        sel = selector_from_label_selector((pdb.get("spec") or {}).get("selector"))
        items, _ = await api.store.list(PODS.prefix(namespace))
        pods = [i.value for i in items if matches(sel, _meta(i.value).get("labels"))]
    expected = await _expected(api, namespace, pods, pdb)
    healthy, desired, allowed = pdb_numbers(pdb, pods, expected)
    st = copy.deepcopy(pdb.get("status") or {})
    st.update(currentHealthy=healthy, desiredHealthy=desired, disruptionsAllowed=allowed, expectedPods=expected,
              observedGeneration=_meta(pdb).get("generation", 1))
    cond = {"type": "DisruptionAllowed", "status": "True" if allowed > 0 else "False",
            "reason": "SufficientPods" if allowed > 0 else "InsufficientPods", "message": "",
            "observedGeneration": _meta(pdb).get("generation", 1), "lastTransitionTime": objects.now_rfc3339()}
    old = next((c for c in st.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None)
    if old and old.get("status") == cond["status"]:
        cond["lastTransitionTime"] = old.get("lastTransitionTime", cond["lastTransitionTime"])
    st["conditions"] = [cond]
    return st


async def evict(api: Api, namespace: str, name: str, body: dict, dry_run: bool = False) -> dict:
    """POST pods/NAME/eviction: 201 Success, 429 when a PDB forbids it, 404 if the pod is gone.

    A dry run (``dryRun=All`` in the query or in the body's deleteOptions, as
    ``kubectl drain --dry-run=server`` sends it) checks the budget and changes nothing.
    """
    options = (body or {}).get("deleteOptions") or {}
    dry_run = dry_run or bool(options.get("dryRun"))
    for attempt in range(RETRIES):
        pod_item = await api.get_item(PODS, namespace, name)
        pod = pod_item.value
        phase = (pod.get("status") or {}).get("phase")
        if _meta(pod).get("deletionTimestamp") or phase in ("Succeeded", "Failed", "Pending"):
            if not dry_run:
                await api.delete(PODS, namespace, name, options)
            return _success()
        pdb_items, _ = await api.store.list(PDBS.prefix(namespace))
        matching = []
        for item in pdb_items:
            sel = selector_from_label_selector((item.value.get("spec") or {}).get("selector"))
            if sel and matches(sel, _meta(pod).get("labels")):
                matching.append(item)
        if not matching:
            if not dry_run:
                await api.delete(PODS, namespace, name, options)
            return _success()
        if len(matching) > 1:
            raise status.internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")
        pdb_item = matching[0]
        pdb = pdb_item.value
        sel = selector_from_label_selector((pdb.get("spec") or {}).get("selector"))
        pod_items, _ = await api.store.list(PODS.prefix(namespace))
        selected = [i for i in pod_items if matches(sel, _meta(i.value).get("labels"))]
        pods = [i.value for i in selected]
        expected = await _expected(api, namespace, pods, pdb)
        healthy, desired, allowed = pdb_numbers(pdb, pods, expected)
        evicted_healthy = pod_healthy(pod)
        if evicted_healthy and allowed <= 0:
            raise ApiError(429, "TooManyRequests", VIOLATION, {"causes": [{
                "reason": "DisruptionBudget",
                "message": f"The disruption budget {_meta(pdb)['name']} needs {desired} healthy pods and has {healthy} currently",
            }]})
        if not evicted_healthy and healthy < desired:
            # Unhealthy pods may go only while the budget is met (unhealthyPodEvictionPolicy IfHealthyBudget).
            raise ApiError(429, "TooManyRequests", VIOLATION, {"causes": [{
                "reason": "DisruptionBudget",
                "message": f"The disruption budget {_meta(pdb)['name']} needs {desired} healthy pods and has {healthy} currently",
            }]})
        if dry_run:
            return _success()
        new_pdb = copy.deepcopy(pdb)
        st = await pdb_status(api, pdb, pods)
        if evicted_healthy:
            # The status as the disruption controller will see it once this pod is gone.
            st["currentHealthy"] = healthy - 1
            st["disruptionsAllowed"] = allowed - 1
            st.setdefault("disruptedPods", {})[name] = objects.now_rfc3339()
        new_pdb["status"] = st
        grace = api._pod_grace(pod, options)
        compares = [(pdb_item.key, pdb_item.mod_revision)] + [(i.key, i.mod_revision) for i in selected]
        if all(i.key != pod_item.key for i in selected):
            compares.append((pod_item.key, pod_item.mod_revision))
        puts = [(pdb_item.key, stored_form(new_pdb))]
        deletes = []
        if grace > 0 or _meta(pod).get("finalizers"):
            marked = copy.deepcopy(pod)
            _meta(marked)["deletionTimestamp"] = objects.now_rfc3339(grace)
            _meta(marked)["deletionGracePeriodSeconds"] = grace
            puts.append((pod_item.key, stored_form(marked)))
        else:
            deletes.append(pod_item.key)
        rev = await api.store.txn(compares, puts, deletes)
        if rev is not None:
            if deletes:
                api.after_removal(PODS, with_rv(pod_item))
            return _success()
        await asyncio.sleep(random.uniform(0.0, 0.02 * (attempt + 1)))
    raise ApiError(429, "TooManyRequests", "too many concurrent evictions for this disruption budget; try again")


def _success() -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
