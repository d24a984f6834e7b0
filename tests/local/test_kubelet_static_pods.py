"""The kubelet stand-in's static pods against a real API stand-in (memory storage): a changed manifest
restarts its unit (a fake runtime records it) and the mirror pod follows, as kubelet does."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from runbooks_lib.lab.kubeapi.client import PODS, KubeClient
from runbooks_lib.lab.kubelet import staticpods

pytestmark = pytest.mark.local

MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
  labels: {component: kube-apiserver, tier: control-plane}
spec:
  hostNetwork: true
  containers:
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.30.6
    command: [kube-apiserver, --etcd-servers=https://10.0.0.1:2379]
"""


class FakeRuntime:
    """A unit that 'starts' when restarted; records restarts."""

    def __init__(self, started: float | None) -> None:
        self.started = started
        self.restarted: list[str] = []

    async def started_at(self, unit: str) -> float | None:
        return self.started

    async def restart(self, unit: str) -> None:
        self.restarted.append(unit)
        self.started = time.time()


def test_changed_manifest_restarts_the_unit_and_replaces_the_mirror_pod(api_server, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    path = manifests / "kube-apiserver.yaml"
    path.write_text(MANIFEST)
    runtime = FakeRuntime(started=time.time() + 1)  # started after the manifest was written (as by Ansible)

    async def scenario() -> None:
        api = KubeClient.from_kubeconfig(str(api_server.kubeconfig))
        try:
            static = staticpods.StaticPods(api, "cp1", "127.0.0.2", manifests, 0.1, lambda: None, runtime)
            await static.sync()
            assert runtime.restarted == []  # the unit already runs this manifest
            first = await api.get(PODS, "kube-apiserver-cp1", "kube-system")
            annotations = first["metadata"]["annotations"]
            assert annotations["kubernetes.io/config.hash"] == staticpods.manifest_hash(MANIFEST)
            assert annotations["kubernetes.io/config.mirror"] and first["spec"]["nodeName"] == "cp1"
            assert first["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            assert static.owns(first)
            await static.sync()
            assert runtime.restarted == []  # nothing changed: no restart
            path.touch()  # a newer file with the same content is not a new pod either
            await static.sync()
            assert runtime.restarted == []

            time.sleep(1.1)
            new = MANIFEST.replace("10.0.0.1:2379", "10.0.0.2:2379")
            path.write_text(new)
            await static.sync()
            assert runtime.restarted == ["kube-apiserver.service"]
            second = await api.get(PODS, "kube-apiserver-cp1", "kube-system")
            assert second["metadata"]["uid"] != first["metadata"]["uid"]  # a new pod, as kubelet makes it
            assert second["metadata"]["annotations"]["kubernetes.io/config.hash"] == staticpods.manifest_hash(new)
            assert "--etcd-servers=https://10.0.0.2:2379" in second["spec"]["containers"][0]["command"]
            started = second["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            assert started == staticpods.iso(runtime.started) and second["status"]["phase"] == "Running"

            # The node controller marks pods of a NotReady node not ready: the next check reports Ready again.
            await api.patch(PODS, "kube-apiserver-cp1", {"status": {"conditions": [
                {"type": "Ready", "status": "False"}]}}, "kube-system", subresource="status")
            await static.sync()
            again = await api.get(PODS, "kube-apiserver-cp1", "kube-system")
            assert {c["type"]: c["status"] for c in again["status"]["conditions"]}["Ready"] == "True"
            assert runtime.restarted == ["kube-apiserver.service"]

            # A kubelet restart remembers the running manifest through the mirror pod's hash.
            fresh = staticpods.StaticPods(api, "cp1", "127.0.0.2", manifests, 0.1, lambda: None, runtime)
            await fresh.sync()
            assert runtime.restarted == ["kube-apiserver.service"]
        finally:
            await api.close()

    asyncio.run(scenario())


NGINX_PROXY = """apiVersion: v1
kind: Pod
metadata:
  name: nginx-proxy
  namespace: kube-system
  annotations: {nginx-cfg-checksum: "1111"}
spec:
  hostNetwork: true
  containers:
  - name: nginx-proxy
    image: docker.io/library/nginx:1.25.2-alpine
"""


class UnitsRuntime:
    """Per-unit fake: only the units that were started run; records starts and restarts."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.restarted: list[str] = []
        self.stopped: list[str] = []

    async def started_at(self, unit: str) -> float | None:
        return self.started.get(unit)

    async def restart(self, unit: str) -> None:
        self.restarted.append(unit)
        self.started[unit] = time.time()

    async def stop(self, unit: str) -> None:
        self.stopped.append(unit)
        self.started.pop(unit, None)


def test_the_kubelet_itself_runs_nginx_proxy_from_its_manifest(api_server, tmp_path: Path) -> None:
    """nginx-proxy is a static pod: the kubelet starts it (nothing else does) and restarts it when its
    manifest changes (Kubespray's nginx-cfg-checksum annotation); kube-apiserver.service it leaves to the installer."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "kube-apiserver.yaml").write_text(MANIFEST)
    path = manifests / "nginx-proxy.yml"
    path.write_text(NGINX_PROXY)
    runtime = UnitsRuntime()

    async def scenario() -> None:
        api = KubeClient.from_kubeconfig(str(api_server.kubeconfig))
        try:
            static = staticpods.StaticPods(api, "node3", "127.0.0.3", manifests, 0.1, lambda: None, runtime)
            await static.sync()
            assert runtime.restarted == ["nginx-proxy.service"]  # started; the API server's unit is not
            mirror = await api.get(PODS, "nginx-proxy-node3", "kube-system")
            assert mirror["status"]["phase"] == "Running" and static.owns(mirror)
            await static.sync()
            assert runtime.restarted == ["nginx-proxy.service"]
            time.sleep(1.1)
            path.write_text(NGINX_PROXY.replace("1111", "2222"))  # nginx.conf changed
            await static.sync()
            assert runtime.restarted == ["nginx-proxy.service", "nginx-proxy.service"]
        finally:
            await api.close()

    asyncio.run(scenario())


def test_a_manifest_moved_aside_stops_its_pod_and_moved_back_starts_it(api_server, tmp_path: Path) -> None:
    """How an operator stops every API server before an etcd restore: kubelet kills a static pod whose
    manifest is gone (and deletes its mirror pod) and runs it again when the manifest is back."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    path = manifests / "kube-apiserver.yaml"
    path.write_text(MANIFEST)
    aside = tmp_path / "kube-apiserver.yaml"
    runtime = UnitsRuntime()
    runtime.started["kube-apiserver.service"] = time.time() + 1  # started by the installer after the file

    async def scenario() -> None:
        api = KubeClient.from_kubeconfig(str(api_server.kubeconfig))
        try:
            static = staticpods.StaticPods(api, "cp1", "127.0.0.2", manifests, 0.1, lambda: None, runtime)
            await static.sync()
            assert (await api.get(PODS, "kube-apiserver-cp1", "kube-system"))["status"]["phase"] == "Running"
            path.rename(aside)
            await static.sync()
            assert runtime.stopped == ["kube-apiserver.service"]
            assert "kube-apiserver.service" not in runtime.started
            pods = await api.list(PODS, "kube-system")
            assert "kube-apiserver-cp1" not in [p["metadata"]["name"] for p in pods["items"]]
            await static.sync()
            assert runtime.stopped == ["kube-apiserver.service"] and runtime.restarted == []  # stays stopped
            aside.rename(path)
            await static.sync()
            assert runtime.restarted == ["kube-apiserver.service"]
            assert (await api.get(PODS, "kube-apiserver-cp1", "kube-system"))["status"]["phase"] == "Running"
        finally:
            await api.close()

    asyncio.run(scenario())
