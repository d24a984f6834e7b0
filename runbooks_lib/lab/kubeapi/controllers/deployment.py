"""Deployment controller: one ReplicaSet per pod template, rollouts, and the status rollout status reads.

The ReplicaSet for the current template is DEPLOYMENT-HASH (label
pod-template-hash). On a template change the new ReplicaSet is scaled to the
full replica count at once and older ones are scaled down as new pods become
available (RollingUpdate with an unbounded surge); Recreate scales old ones to
zero first. Status: replicas, updatedReplicas, readyReplicas,
availableReplicas, unavailableReplicas, observedGeneration and the Available
and Progressing conditions (reason NewReplicaSetAvailable when complete,
ProgressDeadlineExceeded after progressDeadlineSeconds without progress), so
``kubectl rollout status`` completes or fails as against kube-controller-manager.
"""

from __future__ import annotations

import logging
import time

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers import util
from runbooks_lib.lab.kubeapi.controllers.snapshot import Snapshot

log = logging.getLogger(__name__)
COMPONENT = "deployment-controller"
REVISION = "deployment.kubernetes.io/revision"


def _revision(obj: dict) -> int:
    try:
        return int((util.meta(obj).get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def _replicas(obj: dict) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1))


class Deployments:
    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.progress: dict[str, tuple[tuple, float]] = {}

    async def sync(self, api: kc.KubeClient, snap: Snapshot) -> None:
        for deploy in snap.deployments:
            try:
                await self._sync_one(api, deploy, snap)
            except RunbookError as exc:
                log.warning("deployment %s/%s: %s", util.ns_of(deploy), util.name_of(deploy), exc.what)

    async def _sync_one(self, api: kc.KubeClient, deploy: dict, snap: Snapshot) -> None:
        if util.is_terminating(deploy):
            return
        ns = util.ns_of(deploy)
        spec = deploy.get("spec") or {}
        desired = _replicas(deploy)
        template = spec.get("template") or {}
        tpl_hash = util.template_hash(template)
        owned = [rs for rs in snap.replicasets if util.ns_of(rs) == ns and util.is_controlled_by(rs, deploy)]
        new_rs = next((rs for rs in owned if (util.meta(rs).get("labels") or {}).get("pod-template-hash") == tpl_hash), None)
        old = [rs for rs in owned if rs is not new_rs]
        paused = bool(spec.get("paused"))
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        old_running = sum(int((rs.get("status") or {}).get("replicas", 0)) for rs in old)
        if new_rs is None and not paused:
            new_rs = await self._create_rs(api, deploy, template, tpl_hash, max((_revision(r) for r in owned), default=0) + 1,
                                           0 if recreate and old_running else desired)
            owned.append(new_rs)
        elif new_rs is not None and not paused:
            want = 0 if recreate and old_running else desired
            if _replicas(new_rs) != want:
                await self._scale(api, new_rs, want)
        if not paused and old:
            new_available = int(((new_rs or {}).get("status") or {}).get("availableReplicas", 0))
            budget = 0 if recreate else max(0, desired - new_available)
            # keep the newest old ReplicaSets up while the new one is not yet available
            for rs in sorted(old, key=_revision, reverse=True):
                want = min(_replicas(rs), budget)
                budget -= want
                if _replicas(rs) != want:
                    await self._scale(api, rs, want)
        await self._status(api, deploy, new_rs, owned)

    async def _create_rs(self, api: kc.KubeClient, deploy: dict, template: dict, tpl_hash: str, revision: int,
                         replicas: int) -> dict:
        ns, name = util.ns_of(deploy), util.name_of(deploy)
        spec = deploy.get("spec") or {}
        tpl = {"metadata": dict(template.get("metadata") or {}), "spec": template.get("spec") or {}}
        tpl["metadata"]["labels"] = dict((tpl["metadata"].get("labels") or {}), **{"pod-template-hash": tpl_hash})
        selector = dict(spec.get("selector") or {})
        selector["matchLabels"] = dict(selector.get("matchLabels") or {}, **{"pod-template-hash": tpl_hash})
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{tpl_hash}",
                "namespace": ns,
                "labels": tpl["metadata"]["labels"],
                "annotations": {REVISION: str(revision),
                                "deployment.kubernetes.io/desired-replicas": str(_replicas(deploy)),
                                "deployment.kubernetes.io/max-replicas": str(_replicas(deploy))},
                "ownerReferences": [util.owner_reference(deploy, "apps/v1", "Deployment")],
            },
            "spec": {"replicas": replicas, "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                     "selector": selector, "template": tpl},
        }
        try:
            created = await api.create(kc.REPLICASETS, body, ns)
        except kc.ApiError as exc:
            if not exc.conflict:
                raise
            created = await api.get(kc.REPLICASETS, f"{name}-{tpl_hash}", ns)
        await api.patch(kc.DEPLOYMENTS, name, {"metadata": {"annotations": {REVISION: str(revision)}}}, ns)
        await util.record_event(api, deploy, "ScalingReplicaSet",
                                f"Scaled up replica set {util.name_of(created)} to {replicas}", COMPONENT)
        return created

    async def _scale(self, api: kc.KubeClient, rs: dict, replicas: int) -> None:
        before = _replicas(rs)
        await api.patch(kc.REPLICASETS, util.name_of(rs), {"spec": {"replicas": replicas}}, util.ns_of(rs))
        verb = "up" if replicas > before else "down"
        owner = util.controller_ref(rs) or {}
        deploy = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": owner.get("name", ""), "namespace": util.ns_of(rs), "uid": owner.get("uid", "")}}
        await util.record_event(api, deploy, "ScalingReplicaSet",
                                f"Scaled {verb} replica set {util.name_of(rs)} from {before} to {replicas}", COMPONENT)

    async def _status(self, api: kc.KubeClient, deploy: dict, new_rs: dict | None, owned: list[dict]) -> None:
        spec = deploy.get("spec") or {}
        desired = _replicas(deploy)

        def total(field: str) -> int:
            return sum(int((rs.get("status") or {}).get(field, 0)) for rs in owned)

        updated = int(((new_rs or {}).get("status") or {}).get("replicas", 0))
        available = total("availableReplicas")
        replicas = total("replicas")
        counts = {
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": total("readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(0, desired - available),
            "observedGeneration": util.meta(deploy).get("generation", 1),
        }
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = 0 if (spec.get("strategy") or {}).get("type") == "Recreate" else \
            util.int_or_percent(rolling.get("maxUnavailable"), desired, "25%", round_up=False)
        available_ok = available >= desired - max_unavailable
        complete = updated == desired and replicas == desired and available >= desired
        rs_name = util.name_of(new_rs) if new_rs else ""

        key = f"{util.ns_of(deploy)}/{util.name_of(deploy)}"
        progress_sig = (updated, available, replicas, rs_name)
        now = self.clock()
        last = self.progress.get(key)
        if last is None or last[0] != progress_sig:
            self.progress[key] = last = (progress_sig, now)
        deadline = float(spec.get("progressDeadlineSeconds") or 600)
        if complete:
            progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif now - last[1] > deadline:
            progressing = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.')
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        available_cond = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.") if available_ok \
            else ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")

        current = deploy.get("status") or {}
        old_conds = {c.get("type"): c for c in current.get("conditions") or ()}
        stamp = util.now_iso()
        conditions = []
        for ctype, (status, reason, message) in (("Available", available_cond), ("Progressing", progressing)):
            old = old_conds.get(ctype) or {}
            same = old.get("status") == status
            unchanged = same and old.get("reason") == reason and old.get("message") == message
            conditions.append({
                "type": ctype, "status": status, "reason": reason, "message": message,
                "lastUpdateTime": old.get("lastUpdateTime") if unchanged and old.get("lastUpdateTime") else stamp,
                "lastTransitionTime": old.get("lastTransitionTime") if same and old.get("lastTransitionTime") else stamp,
            })
        if all(current.get(k, 0) == v for k, v in counts.items()) and all(
            (old_conds.get(c["type"]) or {}).get(f) == c[f]
            for c in conditions for f in ("status", "reason", "message")
        ):
            return
        status = dict(counts, conditions=conditions)
        try:
            await api.patch(kc.DEPLOYMENTS, util.name_of(deploy), {"status": status}, util.ns_of(deploy),
                            subresource="status")
        except kc.ApiError as exc:
            if not exc.not_found:
                raise
