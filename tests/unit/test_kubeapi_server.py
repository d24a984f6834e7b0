"""REST semantics of the API stand-in over the in-memory store, through its real HTTP layer (loopback)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient, TestServer

from runbooks_lib.lab.kubeapi.api import Api
from runbooks_lib.lab.kubeapi.config import parse_serve_args
from runbooks_lib.lab.kubeapi.runner import ensure_initial_objects
from runbooks_lib.lab.kubeapi.server import build_app
from runbooks_lib.lab.kubeapi.storage import MemoryStore, StorageUnavailable

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def run(test: Callable[[TestClient, Api], Awaitable[None]], store: MemoryStore | None = None) -> None:
    """Serve a fresh API on a loopback port and run ``test(client, api)`` against it."""

    async def main() -> None:
        api = Api(store or MemoryStore())
        await ensure_initial_objects(api, parse_serve_args(["--storage=memory", "--secure-port=6443"]))
        client = TestClient(TestServer(build_app(api, client_cert_required=False)))
        await client.start_server()
        try:
            await asyncio.wait_for(test(client, api), 30)
        finally:
            await client.close()
            await api.close()

    asyncio.run(main())


async def call(client: TestClient, method: str, path: str, body: object = None, ctype: str = "application/json",
               accept: str = "application/json") -> tuple[int, dict]:
    data = None if body is None else json.dumps(body)
    resp = await client.request(method, path, data=data, headers={"Content-Type": ctype, "Accept": accept})
    text = await resp.text()
    return resp.status, json.loads(text) if text and text[0] in "{[" else {"text": text}


def pod(name: str, node: str | None = "n1", labels: dict | None = None, ready: bool = True, **meta) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}, **meta},
            "spec": {**({"nodeName": node} if node else {}), "containers": [{"name": "c", "image": "i:1"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_create_get_update_conflict_and_generation():
    async def t(c: TestClient, api: Api) -> None:
        code, d = await call(c, "POST", "/apis/apps/v1/namespaces/default/deployments", {
            "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
                                               "template": {"metadata": {"labels": {"a": "b"}},
                                                            "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
        assert code == 201 and d["metadata"]["generation"] == 1 and d["metadata"]["uid"]
        assert d["kind"] == "Deployment" and d["spec"]["replicas"] == 1
        d["spec"]["replicas"] = 3
        code, d2 = await call(c, "PUT", "/apis/apps/v1/namespaces/default/deployments/d", d)
        assert code == 200 and d2["metadata"]["generation"] == 2
        code, err = await call(c, "PUT", "/apis/apps/v1/namespaces/default/deployments/d", d)
        assert code == 409 and err["reason"] == "Conflict"
        code, listing = await call(c, "GET", "/apis/apps/v1/deployments")
        assert listing["kind"] == "DeploymentList" and listing["metadata"]["resourceVersion"]
        code, err = await call(c, "POST", "/api/v1/namespaces/nope/configmaps", {"metadata": {"name": "x"}})
        assert code == 404
        code, err = await call(c, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "Bad_Name"}})
        assert code == 422 and err["reason"] == "Invalid"
        code, err = await call(c, "POST", "/api/v1/namespaces/default/configmaps", {"apiVersion": "apps/v1", "metadata": {"name": "x"}})
        assert code == 400

    run(t)


def test_status_subresource_separates_spec_and_status():
    async def t(c: TestClient, api: Api) -> None:
        await call(c, "POST", "/api/v1/namespaces/default/pods", pod("p"))
        code, p = await call(c, "PATCH", "/api/v1/namespaces/default/pods/p",
                             {"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}},
                             "application/merge-patch+json")
        assert p["status"]["phase"] == "Running" and p["metadata"]["labels"] == {"x": "y"}
        code, p = await call(c, "PATCH", "/api/v1/namespaces/default/pods/p/status",
                             {"status": {"phase": "Succeeded"}, "spec": {"nodeName": "other"}},
                             "application/strategic-merge-patch+json")
        assert p["status"]["phase"] == "Succeeded" and p["spec"]["nodeName"] == "n1"

    run(t)


def test_pod_graceful_deletion_and_finalizers():
    async def t(c: TestClient, api: Api) -> None:
        await call(c, "POST", "/api/v1/namespaces/default/pods", pod("p"))
        code, p = await call(c, "DELETE", "/api/v1/namespaces/default/pods/p")
        assert code == 200 and p["metadata"]["deletionGracePeriodSeconds"] == 30
        assert (await call(c, "GET", "/api/v1/namespaces/default/pods/p"))[0] == 200
        # The kubelet confirms with grace 0 once the containers are gone.
        code, _ = await call(c, "DELETE", "/api/v1/namespaces/default/pods/p", {"gracePeriodSeconds": 0})
        assert (await call(c, "GET", "/api/v1/namespaces/default/pods/p"))[0] == 404
        # An unscheduled pod goes at once.
        await call(c, "POST", "/api/v1/namespaces/default/pods", pod("u", node=None))
        await call(c, "DELETE", "/api/v1/namespaces/default/pods/u")
        assert (await call(c, "GET", "/api/v1/namespaces/default/pods/u"))[0] == 404
        # Finalizers keep an object until they are removed.
        await call(c, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "f", "finalizers": ["x/y"]}})
        code, cm = await call(c, "DELETE", "/api/v1/namespaces/default/configmaps/f")
        assert cm["metadata"]["deletionTimestamp"]
        await call(c, "PATCH", "/api/v1/namespaces/default/configmaps/f", {"metadata": {"finalizers": []}},
                   "application/merge-patch+json")
        assert (await call(c, "GET", "/api/v1/namespaces/default/configmaps/f"))[0] == 404

    run(t)


def test_garbage_collection_policies_and_namespace_deletion():
    async def t(c: TestClient, api: Api) -> None:
        await call(c, "POST", "/api/v1/namespaces", {"metadata": {"name": "gc"}})
        _, owner = await call(c, "POST", "/api/v1/namespaces/gc/configmaps", {"metadata": {"name": "owner"}})
        ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
        await call(c, "POST", "/api/v1/namespaces/gc/pods", pod("dep", node=None, ownerReferences=[ref]))
        _, other = await call(c, "POST", "/api/v1/namespaces/gc/configmaps", {"metadata": {"name": "other"}})
        ref2 = {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": other["metadata"]["uid"]}
        await call(c, "POST", "/api/v1/namespaces/gc/configmaps", {"metadata": {"name": "two", "ownerReferences": [ref, ref2]}})
        await call(c, "DELETE", "/api/v1/namespaces/gc/configmaps/owner")
        await api.idle()
        assert (await call(c, "GET", "/api/v1/namespaces/gc/pods/dep"))[0] == 404
        code, two = await call(c, "GET", "/api/v1/namespaces/gc/configmaps/two")
        assert code == 200 and two["metadata"]["ownerReferences"] == [ref2]

        # Foreground: the owner waits for its dependents.
        _, fg = await call(c, "POST", "/api/v1/namespaces/gc/configmaps", {"metadata": {"name": "fg"}})
        fref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "fg", "uid": fg["metadata"]["uid"]}
        await call(c, "POST", "/api/v1/namespaces/gc/configmaps", {"metadata": {"name": "fdep", "ownerReferences": [fref]}})
        code, fg = await call(c, "DELETE", "/api/v1/namespaces/gc/configmaps/fg?propagationPolicy=Foreground")
        assert "foregroundDeletion" in fg["metadata"]["finalizers"]
        await api.idle()
        assert (await call(c, "GET", "/api/v1/namespaces/gc/configmaps/fdep"))[0] == 404
        assert (await call(c, "GET", "/api/v1/namespaces/gc/configmaps/fg"))[0] == 404

        # Namespaces: Terminating, content deleted, then gone; protected ones refuse.
        code, ns = await call(c, "DELETE", "/api/v1/namespaces/gc")
        assert ns["status"]["phase"] == "Terminating"
        code, err = await call(c, "POST", "/api/v1/namespaces/gc/configmaps", {"metadata": {"name": "late"}})
        assert code == 403
        await api.idle()
        assert (await call(c, "GET", "/api/v1/namespaces/gc"))[0] == 404
        assert (await call(c, "DELETE", "/api/v1/namespaces/kube-system"))[0] == 403

    run(t)


def test_watch_events_selectors_and_gone():
    store = MemoryStore(history=50)

    async def t(c: TestClient, api: Api) -> None:
        _, cm = await call(c, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "w", "labels": {"a": "1"}}})
        rv = cm["metadata"]["resourceVersion"]
        resp = await c.get(f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&labelSelector=a%3D1&timeoutSeconds=5")
        await call(c, "PATCH", "/api/v1/namespaces/default/configmaps/w", {"data": {"x": "1"}}, "application/merge-patch+json")
        await call(c, "PATCH", "/api/v1/namespaces/default/configmaps/w", {"metadata": {"labels": {"a": "2"}}},
                   "application/merge-patch+json")
        await call(c, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "z", "labels": {"a": "1"}}})
        await call(c, "DELETE", "/api/v1/namespaces/default/configmaps/z")
        events = []
        while len(events) < 4:
            line = await asyncio.wait_for(resp.content.readline(), 5)
            events.append(json.loads(line))
        resp.close()
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("MODIFIED", "w"), ("DELETED", "w"), ("ADDED", "z"), ("DELETED", "z")]
        assert int(events[-1]["object"]["metadata"]["resourceVersion"]) > int(rv)
        # Table watch events (kubectl get -w).
        resp = await c.get("/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=2", headers={"Accept": TABLE})
        first = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
        resp.close()
        assert first["type"] == "ADDED" and first["object"]["kind"] == "Table"
        store.compact(int(rv) + 1)
        resp = await c.get(f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}")
        err = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
        assert err["type"] == "ERROR" and err["object"]["code"] == 410

    run(t, store)


def test_eviction_is_atomic_under_concurrency():
    async def t(c: TestClient, api: Api) -> None:
        for i in range(6):
            await call(c, "POST", "/api/v1/namespaces/default/pods", pod(f"p{i}", labels={"app": "x"}))
        await call(c, "POST", "/api/v1/namespaces/default/pods", pod("sick", labels={"app": "x"}, ready=False))
        code, pdb = await call(c, "POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
                               {"metadata": {"name": "b"}, "spec": {"maxUnavailable": "50%",
                                                                      "selector": {"matchLabels": {"app": "x"}}}})
        # 7 pods expected, maxUnavailable 50% rounds up to 4: desired 3, healthy 6 -> 3 disruptions allowed.
        assert pdb["status"]["disruptionsAllowed"] == 3 and pdb["status"]["expectedPods"] == 7
        body = {"apiVersion": "policy/v1", "kind": "Eviction"}
        results = await asyncio.gather(*[
            call(c, "POST", f"/api/v1/namespaces/default/pods/p{i}/eviction", body) for i in range(6)])
        assert sorted(code for code, _ in results) == [201, 201, 201, 429, 429, 429]
        assert all(r["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
                   for code, r in results if code == 429)
        # An unready pod may still go while the budget holds (currentHealthy 3 >= desired 3).
        assert (await call(c, "POST", "/api/v1/namespaces/default/pods/sick/eviction", body))[0] == 201
        assert (await call(c, "POST", "/api/v1/namespaces/default/pods/gone/eviction", body))[0] == 404

    run(t)


def test_tables_services_scale_apply_and_logs():
    async def t(c: TestClient, api: Api) -> None:
        await call(c, "POST", "/api/v1/namespaces/default/pods", pod("p"))
        code, table = await call(c, "GET", "/api/v1/pods", accept=TABLE)
        assert table["kind"] == "Table" and table["rows"][0]["object"]["metadata"]["namespace"] == "default"
        assert [col["name"] for col in table["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
        code, svc = await call(c, "POST", "/api/v1/namespaces/default/services",
                               {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}], "clusterIP": "10.233.0.10"}})
        assert code == 201 and svc["spec"]["clusterIPs"] == ["10.233.0.10"]
        code, err = await call(c, "POST", "/api/v1/namespaces/default/services",
                               {"metadata": {"name": "s2"}, "spec": {"ports": [{"port": 80}], "clusterIP": "10.233.0.10"}})
        assert code == 422 and "already allocated" in err["message"]
        svc["spec"].pop("clusterIP")
        svc["spec"].pop("clusterIPs")
        code, svc = await call(c, "PUT", "/api/v1/namespaces/default/services/s", svc)
        assert svc["spec"]["clusterIP"] == "10.233.0.10"
        # Server-side apply creates, then merges.
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}}
        code, out = await call(c, "PATCH", "/api/v1/namespaces/default/configmaps/ssa?fieldManager=t", cm,
                               "application/apply-patch+yaml")
        assert code == 200 and out["data"] == {"a": "1"}
        # Scale subresource.
        await call(c, "POST", "/apis/apps/v1/namespaces/default/replicasets", {
            "metadata": {"name": "rs"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {}}})
        code, scale = await call(c, "PATCH", "/apis/apps/v1/namespaces/default/replicasets/rs/scale",
                                 {"spec": {"replicas": 4}}, "application/merge-patch+json")
        assert code == 200 and scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4
        # Logs stored by the kubelet stand-in.
        resp = await c.put("/api/v1/namespaces/default/pods/p/log?container=c", data="a\nb\n",
                           headers={"Content-Type": "text/plain"})
        assert resp.status == 200
        resp = await c.get("/api/v1/namespaces/default/pods/p/log?tailLines=1")
        assert await resp.text() == "b\n"

    run(t)


class DownStore(MemoryStore):
    """A store whose etcd lost quorum."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def get(self, key):  # type: ignore[override]
        if self.down:
            raise StorageUnavailable("etcd did not answer GET within 3s (etcd servers https://127.0.0.1:2379)")
        return await super().get(key)

    async def list(self, prefix):  # type: ignore[override]
        if self.down:
            raise StorageUnavailable("etcd did not answer LIST within 3s (etcd servers https://127.0.0.1:2379)")
        return await super().list(prefix)

    async def health(self) -> None:
        if self.down:
            raise StorageUnavailable("etcd did not answer health check")


def test_storage_failure_is_503_naming_etcd():
    store = DownStore()

    async def t(c: TestClient, api: Api) -> None:
        store.down = True
        code, err = await call(c, "GET", "/api/v1/nodes")
        assert code == 503 and err["kind"] == "Status" and err["reason"] == "ServiceUnavailable"
        assert "etcd" in err["message"]
        resp = await c.get("/readyz")
        assert resp.status == 500 and "etcd failed" in await resp.text()
        store.down = False
        assert (await call(c, "GET", "/api/v1/nodes"))[0] == 200
        assert (await c.get("/readyz")).status == 200

    run(t, store)
