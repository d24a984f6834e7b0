"""Controllers against an in-memory fake of the API (resourceVersion preconditions, merge patches)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import uuid

import pytest

from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers import endpoints, scheduler, snapshot, util
from runbooks_lib.lab.kubeapi.controllers.daemonset import DaemonSets
from runbooks_lib.lab.kubeapi.controllers.deployment import Deployments
from runbooks_lib.lab.kubeapi.controllers.leader import ElectionConfig, LeaderElector
from runbooks_lib.lab.kubeapi.controllers.nodelifecycle import NodeLifecycle
from runbooks_lib.lab.kubeapi.controllers.podgc import PodGC
from runbooks_lib.lab.kubeapi.controllers.replicaset import ReplicaSets


def _merge(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class FakeApi:
    """Just enough of KubeClient: objects keyed by (plural, namespace, name)."""

    def __init__(self):
        self.objects: dict[tuple, dict] = {}
        self.rv = itertools.count(1)
        self.deleted: list[tuple] = []

    def _key(self, res, namespace, name):
        return (res.plural, namespace if res.namespaced else None, name)

    def _missing(self, method, name):
        return kc.ApiError(404, "NotFound", f"{name} not found", method, name)

    def put(self, res, obj):
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", util.now_iso())
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self.rv))
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        self.objects[self._key(res, meta.get("namespace"), meta["name"])] = obj
        return copy.deepcopy(obj)

    async def get(self, res, name, namespace=None, subresource=None):
        obj = self.objects.get(self._key(res, namespace, name))
        if obj is None:
            raise self._missing("GET", name)
        return copy.deepcopy(obj)

    async def list(self, res, namespace=None, label_selector=None, field_selector=None):
        items = [copy.deepcopy(o) for k, o in sorted(self.objects.items())
                 if k[0] == res.plural and (namespace is None or k[1] == namespace)]
        return {"items": items, "metadata": {"resourceVersion": "0"}}

    async def create(self, res, body, namespace=None, subresource=None, name=None):
        ns = namespace or body.get("metadata", {}).get("namespace")
        if subresource == "binding":
            pod = self.objects.get(self._key(res, ns, name))
            if pod is None:
                raise self._missing("POST", name)
            pod["spec"]["nodeName"] = body["target"]["name"]
            return self.put(res, pod)
        key = self._key(res, ns, body["metadata"]["name"])
        if key in self.objects:
            raise kc.ApiError(409, "AlreadyExists", "exists", "POST", key[2])
        return self.put(res, copy.deepcopy(body))

    async def update(self, res, body, subresource=None):
        meta = body["metadata"]
        key = self._key(res, meta.get("namespace"), meta["name"])
        current = self.objects.get(key)
        if current is None:
            raise self._missing("PUT", meta["name"])
        if meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise kc.ApiError(409, "Conflict", "the object has been modified", "PUT", meta["name"])
        new = copy.deepcopy(body)
        new["metadata"]["uid"] = current["metadata"]["uid"]
        return self.put(res, new)

    async def patch(self, res, name, patch, namespace=None, subresource=None, patch_type="merge"):
        key = self._key(res, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise self._missing("PATCH", name)
        return self.put(res, _merge(current, patch))

    async def delete(self, res, name, namespace=None, grace_period_seconds=None, uid=None, propagation_policy=None):
        key = self._key(res, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise self._missing("DELETE", name)
        if uid and current["metadata"]["uid"] != uid:
            raise kc.ApiError(409, "Conflict", "uid precondition", "DELETE", name)
        del self.objects[key]
        self.deleted.append(key)
        return {}

    def of(self, res, namespace=None):
        return [o for k, o in sorted(self.objects.items()) if k[0] == res.plural and (namespace is None or k[1] == namespace)]


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def run(coro):
    return asyncio.run(coro)


def make_node(api, name, ready="True", heartbeat="2024-01-01T00:00:00Z", taints=None, labels=None, unschedulable=False):
    node = {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {}, "status": {"allocatable": {"pods": "110"}, "conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat, "reason": "KubeletReady"},
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat}]}}
    if taints:
        node["spec"]["taints"] = taints
    if unschedulable:
        node["spec"]["unschedulable"] = True
    return api.put(kc.NODES, node)


def make_pod(api, name, node=None, labels=None, ready=True, owner=None, tolerations=None, ns="default", ports=None):
    pod = {"metadata": {"name": name, "namespace": ns, "labels": labels or {}},
           "spec": {"containers": [{"name": "c", "image": "x", "ports": ports or []}]},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    if node:
        pod["spec"]["nodeName"] = node
        pod["status"]["podIP"] = f"10.0.0.{len(api.objects) + 1}"
    if owner:
        pod["metadata"]["ownerReferences"] = [owner]
    if tolerations is not None:
        pod["spec"]["tolerations"] = tolerations
    return api.put(kc.PODS, pod)


# ---- util --------------------------------------------------------------------------

def test_selectors():
    sel = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}
    assert util.selector_matches(sel, {"app": "web", "tier": "a"})
    assert not util.selector_matches(sel, {"app": "web", "tier": "c"})
    assert util.selector_matches({}, {"x": "y"})
    assert not util.selector_matches(None, {"x": "y"})
    assert util.selector_matches({"matchExpressions": [{"key": "gone", "operator": "DoesNotExist"}]}, {})
    assert not util.map_selector_matches({}, {"a": "b"})


def test_tolerations():
    taint = {"key": util.UNREACHABLE_TAINT, "effect": "NoExecute"}
    assert util.toleration_matches({"operator": "Exists"}, taint)
    assert util.toleration_matches({"key": util.UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"}, taint)
    assert not util.toleration_matches({"key": util.UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}, taint)
    assert not util.toleration_matches({"key": "other", "operator": "Exists"}, taint)
    assert util.toleration_matches({"key": "k", "value": "v", "effect": "NoSchedule"},
                                   {"key": "k", "value": "v", "effect": "NoSchedule"})
    defaults = util.default_tolerations([])
    assert {t["key"] for t in defaults} == {util.NOT_READY_TAINT, util.UNREACHABLE_TAINT}
    assert all(t["tolerationSeconds"] == 300 for t in defaults)
    custom = [{"key": util.UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]
    assert len(util.default_tolerations(custom)) == 2 and custom[0] in util.default_tolerations(custom)


def test_template_hash_ignores_its_own_label_and_is_stable():
    tpl = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}
    labelled = copy.deepcopy(tpl)
    labelled["metadata"]["labels"]["pod-template-hash"] = "zzz"
    assert util.template_hash(tpl) == util.template_hash(labelled)
    changed = copy.deepcopy(tpl)
    changed["spec"]["containers"][0]["image"] = "y"
    assert util.template_hash(tpl) != util.template_hash(changed)


# ---- leader election ---------------------------------------------------------------

def test_exactly_one_leader_and_takeover_after_the_lease_expires():
    api, clock = FakeApi(), Clock()
    cfg = ElectionConfig(lease_duration=15, renew_deadline=10, retry_period=2)
    a, b = LeaderElector(api, "a", cfg, clock), LeaderElector(api, "b", cfg, clock)

    async def scenario():
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        for _ in range(5):  # a renews, b keeps seeing a fresh record
            clock.t += 2
            assert await a.try_acquire_or_renew()
            assert not await b.try_acquire_or_renew()
        assert a.is_leader and not b.is_leader
        clock.t += 10  # a is gone: no renewals
        assert not await b.try_acquire_or_renew()
        clock.t += 6
        assert await b.try_acquire_or_renew()
        lease = await api.get(kc.LEASES, "kube-controller-manager", "kube-system")
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1
        assert not a.is_leader
        assert not await a.try_acquire_or_renew()  # a comes back and sees b's fresh lease

    run(scenario())


def test_release_lets_the_other_candidate_take_over_at_once():
    api, clock = FakeApi(), Clock()
    a, b = LeaderElector(api, "a", clock=clock), LeaderElector(api, "b", clock=clock)

    async def scenario():
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        await a.release()
        assert await b.try_acquire_or_renew()

    run(scenario())


def test_a_conflicting_renewal_is_not_leadership():
    api, clock = FakeApi(), Clock()
    a = LeaderElector(api, "a", clock=clock)

    async def scenario():
        assert await a.try_acquire_or_renew()
        real_update = api.update

        async def conflict(res, body, subresource=None):
            raise kc.ApiError(409, "Conflict", "modified", "PUT", "lease")

        api.update = conflict
        clock.t += 11
        assert not await a.try_acquire_or_renew()
        assert not a.is_leader
        api.update = real_update

    run(scenario())


# ---- node lifecycle -------------------------------------------------------------------

def test_node_goes_unknown_after_grace_then_recovers():
    api, clock, wall = FakeApi(), Clock(), Clock(1_700_000_000.0)
    ctrl = NodeLifecycle(4.0, clock=clock, wall=wall)
    make_node(api, "n1")
    make_node(api, "n2")
    make_pod(api, "web-1", node="n1", labels={"app": "web"})
    ds_owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "proxy", "uid": "ds1", "controller": True}
    make_pod(api, "proxy-1", node="n1", owner=ds_owner)

    async def round_():
        await ctrl.sync(api, await snapshot.take(api))

    run(round_())
    clock.t += 3
    # n2 keeps heartbeating, n1 is silent
    run(api.patch(kc.NODES, "n2", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "2024-01-01T00:00:03Z"}]}}))
    run(round_())
    assert util.node_ready_status(run(api.get(kc.NODES, "n1"))) == "True"
    clock.t += 2
    run(round_())
    n1 = run(api.get(kc.NODES, "n1"))
    ready = util.condition(n1, "Ready")
    assert ready["status"] == "Unknown" and ready["reason"] == "NodeStatusUnknown"
    assert util.condition(n1, "MemoryPressure")["status"] == "Unknown"
    assert {(t["key"], t["effect"]) for t in n1["spec"]["taints"]} == {
        (util.UNREACHABLE_TAINT, "NoSchedule"), (util.UNREACHABLE_TAINT, "NoExecute")}
    assert util.node_ready_status(run(api.get(kc.NODES, "n2"))) == "True"
    assert not util.pod_ready(run(api.get(kc.PODS, "web-1", "default")))
    events = [e["reason"] for e in api.of(kc.EVENTS)]
    assert "NodeNotReady" in events
    # the default 300 s toleration holds the pod until it runs out; the DaemonSet pod stays for good
    wall.t += 299
    run(round_())
    assert ("pods", "default", "web-1") not in api.deleted
    wall.t += 2
    run(round_())
    assert ("pods", "default", "web-1") in api.deleted
    assert ("pods", "default", "proxy-1") not in api.deleted
    # the kubelet is back
    run(api.patch(kc.NODES, "n1", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "2024-01-01T00:10:00Z"}]}}))
    run(round_())
    assert not run(api.get(kc.NODES, "n1"))["spec"].get("taints")


def test_short_toleration_evicts_early():
    api, clock, wall = FakeApi(), Clock(), Clock(1_700_000_000.0)
    ctrl = NodeLifecycle(1.0, clock=clock, wall=wall)
    make_node(api, "n1")
    quick = [{"key": util.UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]
    make_pod(api, "quick", node="n1", tolerations=quick)
    make_pod(api, "forever", node="n1", tolerations=[{"operator": "Exists"}])

    async def round_():
        await ctrl.sync(api, await snapshot.take(api))

    run(round_())
    clock.t += 2
    run(round_())
    wall.t = util.parse_time(run(api.get(kc.NODES, "n1"))["spec"]["taints"][0]["timeAdded"]) + 6
    run(round_())
    assert ("pods", "default", "quick") in api.deleted
    assert ("pods", "default", "forever") not in api.deleted


# ---- scheduler -------------------------------------------------------------------------

def _n(name, **kw):
    api = FakeApi()
    return make_node(api, name, **kw)


def test_filter_reasons():
    pod = {"metadata": {"name": "p"}, "spec": {"containers": []}}
    assert scheduler.filter_node(pod, _n("a"), []) is None
    assert scheduler.filter_node(pod, _n("a", ready="Unknown"), []) == "node(s) were not ready"
    assert scheduler.filter_node(pod, _n("a", unschedulable=True), []) == "node(s) were unschedulable"
    cp = _n("a", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    assert "untolerated taint {node-role.kubernetes.io/control-plane}" in scheduler.filter_node(pod, cp, [])
    tolerant = {"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}}
    assert scheduler.filter_node(tolerant, cp, []) is None
    picky = {"metadata": {"name": "p"}, "spec": {"containers": [], "nodeSelector": {"disk": "ssd"}}}
    assert scheduler.filter_node(picky, _n("a"), []) is not None
    assert scheduler.filter_node(picky, _n("a", labels={"disk": "ssd"}), []) is None
    hostport = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": [
        {"containerPort": 80, "hostPort": 80}]}]}}
    other = {"metadata": {"name": "o"}, "spec": hostport["spec"], "status": {"phase": "Running"}}
    assert "free ports" in scheduler.filter_node(hostport, _n("a"), [other])


def test_scheduler_spreads_and_reports_unschedulable():
    api = FakeApi()
    for name in ("n1", "n2", "n3"):
        make_node(api, name)
    make_node(api, "cp", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs1", "controller": True}
    for i in range(6):
        make_pod(api, f"web-{i}", owner=owner, ready=False)
    make_pod(api, "picky", ready=False)
    api.objects[("pods", "default", "picky")]["spec"]["nodeSelector"] = {"disk": "nvme"}

    async def round_():
        await scheduler.Scheduler().sync(api, await snapshot.take(api))

    run(round_())
    placed = [p["spec"].get("nodeName") for p in api.of(kc.PODS) if p["metadata"]["name"].startswith("web-")]
    assert sorted(placed) == ["n1", "n1", "n2", "n2", "n3", "n3"]
    web0 = run(api.get(kc.PODS, "web-0", "default"))
    assert {t["key"] for t in web0["spec"]["tolerations"]} == {util.NOT_READY_TAINT, util.UNREACHABLE_TAINT}
    picky = run(api.get(kc.PODS, "picky", "default"))
    cond = util.condition(picky, "PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert cond["message"].startswith("0/4 nodes are available:")
    assert "1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane}" in cond["message"]


# ---- deployments and replicasets ---------------------------------------------------------

def _deployment(api, replicas=3, image="mopckou/sticky-session:1"):
    return api.put(kc.DEPLOYMENTS, {"metadata": {"name": "web", "namespace": "default"}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "app", "image": image}]}}}})


def _kubelet_marks_ready(api):
    for pod in api.of(kc.PODS):
        if pod["spec"].get("nodeName"):
            pod["status"] = {"phase": "Running", "podIP": "10.0.0.1",
                             "conditions": [{"type": "Ready", "status": "True"}]}


def _rounds(api, controllers, n, kubelet=True):
    async def go():
        for _ in range(n):
            snap = await snapshot.take(api)
            for c in controllers:
                await c.sync(api, snap)
            if kubelet:
                _kubelet_marks_ready(api)
    run(go())


def _rollout_done(deploy):
    st = deploy.get("status") or {}
    spec_replicas = deploy["spec"]["replicas"]
    progressing = next((c for c in st.get("conditions") or () if c["type"] == "Progressing"), {})
    return (st.get("observedGeneration", 0) >= deploy["metadata"]["generation"]
            and st.get("updatedReplicas") == spec_replicas and st.get("replicas") == spec_replicas
            and st.get("availableReplicas") == spec_replicas
            and progressing.get("reason") == "NewReplicaSetAvailable")


def test_deployment_rolls_out_and_rolls_over_to_a_new_template():
    api = FakeApi()
    for name in ("n1", "n2"):
        make_node(api, name)
    _deployment(api)
    ctrls = [scheduler.Scheduler(), Deployments(), ReplicaSets()]
    _rounds(api, ctrls, 1, kubelet=False)
    assert not _rollout_done(run(api.get(kc.DEPLOYMENTS, "web", "default")))
    _rounds(api, ctrls, 5)
    deploy = run(api.get(kc.DEPLOYMENTS, "web", "default"))
    assert _rollout_done(deploy), deploy["status"]
    rs = api.of(kc.REPLICASETS)
    assert len(rs) == 1 and rs[0]["metadata"]["name"].startswith("web-")
    tpl_hash = rs[0]["metadata"]["labels"]["pod-template-hash"]
    pods = api.of(kc.PODS)
    assert len(pods) == 3 and all(p["metadata"]["labels"]["pod-template-hash"] == tpl_hash for p in pods)
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == rs[0]["metadata"]["uid"] for p in pods)
    assert {c["type"]: c["status"] for c in deploy["status"]["conditions"]} == {"Available": "True", "Progressing": "True"}
    # new template, new generation
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "mopckou/sticky-session:2"
    deploy["metadata"]["generation"] = 2
    api.put(kc.DEPLOYMENTS, deploy)
    _rounds(api, ctrls, 8)
    deploy = run(api.get(kc.DEPLOYMENTS, "web", "default"))
    assert _rollout_done(deploy), deploy["status"]
    sets = {r["metadata"]["name"]: r["spec"]["replicas"] for r in api.of(kc.REPLICASETS)}
    assert sorted(sets.values()) == [0, 3]
    assert all(p["spec"]["containers"][0]["image"].endswith(":2") for p in api.of(kc.PODS))
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


def test_replicaset_replaces_a_terminating_pod_and_scales_down():
    api = FakeApi()
    make_node(api, "n1")
    _deployment(api, replicas=2)
    ctrls = [scheduler.Scheduler(), Deployments(), ReplicaSets()]
    _rounds(api, ctrls, 4)
    pod = api.of(kc.PODS)[0]
    pod["metadata"]["deletionTimestamp"] = util.now_iso()
    _rounds(api, ctrls, 2)
    active = [p for p in api.of(kc.PODS) if util.pod_active(p)]
    assert len(active) == 2 and pod["metadata"]["name"] not in {util.name_of(p) for p in active}
    deploy = run(api.get(kc.DEPLOYMENTS, "web", "default"))
    deploy["spec"]["replicas"] = 1
    deploy["metadata"]["generation"] = 2
    api.put(kc.DEPLOYMENTS, deploy)
    _rounds(api, ctrls, 3)
    assert len([p for p in api.of(kc.PODS) if util.pod_active(p)]) == 1
    assert _rollout_done(run(api.get(kc.DEPLOYMENTS, "web", "default")))


# ---- daemonsets ------------------------------------------------------------------------

def test_daemonset_one_pod_per_eligible_node():
    api = FakeApi()
    make_node(api, "n1")
    make_node(api, "n2", ready="Unknown", taints=[{"key": util.UNREACHABLE_TAINT, "effect": "NoExecute"}])
    make_node(api, "cp", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    api.put(kc.DAEMONSETS, {"metadata": {"name": "proxy", "namespace": "kube-system"}, "spec": {
        "selector": {"matchLabels": {"k8s-app": "proxy"}},
        "template": {"metadata": {"labels": {"k8s-app": "proxy"}},
                     "spec": {"containers": [{"name": "p", "image": "kube-proxy"}]}}}})
    _rounds(api, [DaemonSets()], 3)
    pods = api.of(kc.PODS)
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["n1", "n2"]
    assert all(util.controller_ref(p)["kind"] == "DaemonSet" for p in pods)
    status = run(api.get(kc.DAEMONSETS, "proxy", "kube-system"))["status"]
    assert status["desiredNumberScheduled"] == 2 and status["currentNumberScheduled"] == 2
    assert status["numberReady"] == 2 and status["updatedNumberScheduled"] == 2 and status["numberUnavailable"] == 0
    # the control plane joins once its taint is tolerated by a new template
    ds = run(api.get(kc.DAEMONSETS, "proxy", "kube-system"))
    ds["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]
    ds["metadata"]["generation"] = 2
    api.put(kc.DAEMONSETS, ds)
    _rounds(api, [DaemonSets()], 8)
    status = run(api.get(kc.DAEMONSETS, "proxy", "kube-system"))["status"]
    assert status["desiredNumberScheduled"] == 3 and status["updatedNumberScheduled"] == 3
    assert status["observedGeneration"] == 2


# ---- endpoints and pod gc ------------------------------------------------------------------

def test_endpoints_ready_and_not_ready_with_actual_ports():
    api = FakeApi()
    ports = [{"name": "http", "containerPort": 8080}]
    make_pod(api, "a", node="n1", labels={"app": "web"}, ports=ports)
    b = make_pod(api, "b", node="n1", labels={"app": "web"}, ports=ports)
    api.objects[("pods", "default", "b")]["metadata"]["annotations"] = {"lab.runbooks/ports": json.dumps({"8080": 8081})}
    make_pod(api, "c", node="n2", labels={"app": "web"}, ports=ports, ready=False)
    make_pod(api, "other", node="n2", labels={"app": "db"}, ports=ports)
    gone = make_pod(api, "d", node="n2", labels={"app": "web"}, ports=ports)
    api.objects[("pods", "default", "d")]["metadata"]["deletionTimestamp"] = util.now_iso()
    api.put(kc.SERVICES, {"metadata": {"name": "web", "namespace": "default", "labels": {"team": "x"}},
                          "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}})
    run(endpoints.EndpointsController().sync(api, run(snapshot.take(api))))
    ep = run(api.get(kc.ENDPOINTS, "web", "default"))
    by_port = {s["ports"][0]["port"]: s for s in ep["subsets"]}
    assert set(by_port) == {8080, 8081}
    assert [a["targetRef"]["name"] for a in by_port[8080]["addresses"]] == ["a"]
    assert [a["targetRef"]["name"] for a in by_port[8080]["notReadyAddresses"]] == ["c"]
    assert [a["targetRef"]["name"] for a in by_port[8081]["addresses"]] == [b["metadata"]["name"]]
    assert ep["metadata"]["labels"]["team"] == "x"
    names = {a["targetRef"]["name"] for s in ep["subsets"] for f in ("addresses", "notReadyAddresses")
             for a in s.get(f, [])}
    assert gone["metadata"]["name"] not in names and "other" not in names
    rv = ep["metadata"]["resourceVersion"]
    run(endpoints.EndpointsController().sync(api, run(snapshot.take(api))))
    assert run(api.get(kc.ENDPOINTS, "web", "default"))["metadata"]["resourceVersion"] == rv, "no-op rounds write nothing"
    # the Service goes away: so do its Endpoints
    del api.objects[("services", "default", "web")]
    run(endpoints.EndpointsController().sync(api, run(snapshot.take(api))))
    assert ("endpoints", "default", "web") in api.deleted


def test_pod_gc_deletes_pods_of_deleted_nodes_after_quarantine():
    api, clock = FakeApi(), Clock()
    make_node(api, "n1")
    make_pod(api, "kept", node="n1")
    make_pod(api, "orphan", node="n9")
    gc = PodGC(quarantine=40, clock=clock)
    run(gc.sync(api, run(snapshot.take(api))))
    clock.t += 39
    run(gc.sync(api, run(snapshot.take(api))))
    assert api.deleted == []
    clock.t += 2
    run(gc.sync(api, run(snapshot.take(api))))
    assert api.deleted == [("pods", "default", "orphan")]


@pytest.mark.parametrize(("value", "total", "up", "expected"), [
    ("25%", 3, False, 0), ("25%", 3, True, 1), (2, 10, False, 2), (None, 4, False, 1), ("1", 5, True, 1)])
def test_int_or_percent(value, total, up, expected):
    assert util.int_or_percent(value, total, "25%", up) == expected
