"""The API stand-in on a real 3-member etcd cluster: losing one member, losing quorum, recovering.

Also: --manifest decides which etcd members the server uses, and a watch
from a compacted revision gets 410 Gone.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests.waiting import wait_until

pytestmark = [pytest.mark.local, pytest.mark.slow]


def _create_configmaps(server, ns: str, count: int) -> None:
    assert server.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})[0] == 201
    for i in range(count):
        code, body = server.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                    {"metadata": {"name": f"cm-{i}"}, "data": {"i": str(i)}})
        assert code == 201, body


def _names(server, ns: str) -> set[str]:
    code, body = server.get(f"/api/v1/namespaces/{ns}/configmaps", timeout=20)
    assert code == 200, body
    return {i["metadata"]["name"] for i in body["items"]}


def test_quorum_loss_and_recovery(etcd3, api_server_factory):
    server = api_server_factory(etcd_servers=etcd3.etcd_servers)
    ns = f"q-{uuid.uuid4().hex[:6]}"
    _create_configmaps(server, ns, 20)

    # One member down: quorum holds (2 of 3), the API keeps serving reads and writes.
    etcd3.members[0].kill()
    assert _names(server, ns) == {f"cm-{i}" for i in range(20)}
    code, body = server.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "during-one-down"}})
    assert code == 201, body
    assert len(server.kubectl("-n", ns, "get", "cm", "-o", "name").stdout.split()) == 21

    # Two members down: no quorum. Requests fail with a 5xx naming etcd, within a bounded time.
    etcd3.members[1].kill()
    started = time.monotonic()
    code, body = server.get(f"/api/v1/namespaces/{ns}/configmaps", timeout=30)
    elapsed = time.monotonic() - started
    assert code == 503 and body["reason"] == "ServiceUnavailable", body
    assert "etcd" in body["message"]
    assert elapsed < 10, f"a read without quorum took {elapsed:.1f}s"
    print(f"read without quorum answered {code} after {elapsed:.2f}s")
    started = time.monotonic()
    code, body = server.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "lost"}}, timeout=30)
    assert code >= 500 and "etcd" in body["message"], body
    assert time.monotonic() - started < 10
    started = time.monotonic()
    proc = server.kubectl("-n", ns, "get", "cm", check=False, timeout=60)
    assert proc.returncode != 0 and "etcd" in proc.stderr, proc.stderr
    assert time.monotonic() - started < 15
    assert server.get("/readyz", timeout=30)[0] == 500

    # Members back: the API serves again and nothing was lost.
    etcd3.members[0].start()
    etcd3.members[1].start()
    etcd3.wait_healthy(30)
    waited = wait_until(lambda: server.get("/readyz")[0] == 200, 30, "the API server to be ready again", 0.3)
    print(f"ready again {waited.elapsed:.2f}s after etcd reported healthy")
    names = _names(server, ns)
    assert names >= {f"cm-{i}" for i in range(20)} | {"during-one-down"}
    code, _ = server.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "after"}})
    assert code == 201
    assert server.proc.poll() is None


def _manifest(path: Path, server, etcd_urls: list[str]) -> None:
    p = server.pki
    command = [
        "kube-apiserver",
        "--advertise-address=127.0.0.1",
        "--allow-privileged=true",  # a flag the stand-in ignores, as every manifest has many
        "--authorization-mode=Node,RBAC",
        f"--client-ca-file={p.ca_cert}",
        f"--etcd-cafile={p.ca_cert}",
        f"--etcd-certfile={p.etcd_client_cert}",
        f"--etcd-keyfile={p.etcd_client_key}",
        f"--etcd-servers={','.join(etcd_urls)}",
        f"--secure-port={server.port}",
        f"--tls-cert-file={p.server_cert}",
        f"--tls-private-key-file={p.server_key}",
        "--service-cluster-ip-range=10.233.0.0/18",
    ]
    doc = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "kube-apiserver", "namespace": "kube-system"},
           "spec": {"hostNetwork": True, "containers": [{"name": "kube-apiserver", "image": "k8s/kube-apiserver:v1.30.6",
                                                         "command": command}]}}
    path.write_text(yaml.safe_dump(doc))


def test_manifest_decides_which_etcd_members_are_used(etcd3, api_server_factory, tmp_path: Path):
    manifest = tmp_path / "kube-apiserver.yaml"
    server = api_server_factory(extra_args=["--no-controllers", f"--manifest={manifest}", "--bind-address=127.0.0.1"],
                                start=False)
    only_third = [etcd3.members[2].client_url]
    _manifest(manifest, server, only_third)
    server.start()
    ns = f"m-{uuid.uuid4().hex[:6]}"
    _create_configmaps(server, ns, 1)

    # Its only etcd member dies: this server is down although the cluster has quorum.
    etcd3.members[2].kill()
    code, body = server.get(f"/api/v1/namespaces/{ns}/configmaps", timeout=30)
    assert code == 503 and etcd3.members[2].client_url.split("//")[1] in body["message"]

    # Edit --etcd-servers in the manifest and restart, as after replacing a control plane.
    _manifest(manifest, server, [m.client_url for m in etcd3.members[:2]])
    server.stop()
    server.start()
    assert _names(server, ns) == {"cm-0"}


def test_watch_from_compacted_revision_is_gone(etcd1, api_server):
    ns = f"w-{uuid.uuid4().hex[:6]}"
    _create_configmaps(api_server, ns, 1)
    code, cm = api_server.get(f"/api/v1/namespaces/{ns}/configmaps/cm-0")
    old_rv = cm["metadata"]["resourceVersion"]
    for i in range(3):
        cm["data"]["i"] = str(i + 10)
        cm["metadata"].pop("resourceVersion")
        code, cm = api_server.request("PUT", f"/api/v1/namespaces/{ns}/configmaps/cm-0", cm)
        assert code == 200
    current = int(cm["metadata"]["resourceVersion"])
    proc = etcd1.etcdctl("compact", str(current))
    assert proc.returncode == 0, proc.stderr
    req = urllib.request.Request(
        f"{api_server.url}/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={old_rv}&timeoutSeconds=5")
    with urllib.request.urlopen(req, context=api_server.ssl_context(), timeout=15) as resp:
        first = json.loads(resp.readline())
    assert first["type"] == "ERROR"
    assert first["object"]["code"] == 410 and first["object"]["reason"] == "Expired"
    assert "too old resource version" in first["object"]["message"]


def test_a_frozen_member_costs_latency_not_errors(etcd3, api_server_factory):
    """SIGSTOP keeps a follower's connections open but silent, like a hung VPS: requests still succeed.

    (Freezing the leader adds an election, about a second here, during which requests fail.)
    """
    server = api_server_factory(etcd_servers=etcd3.etcd_servers)
    ns = f"f-{uuid.uuid4().hex[:6]}"
    _create_configmaps(server, ns, 1)
    frozen = etcd3.members[(etcd3.leader_index() + 1) % 3]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        slowest = 0.0
        for i in range(4):
            t = time.monotonic()
            assert _names(server, ns) >= {"cm-0"}
            code, body = server.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": f"w{i}"}},
                                        timeout=20)
            assert code == 201, body
            slowest = max(slowest, time.monotonic() - t)
        print(f"with a frozen member: slowest read+write {slowest:.2f}s, 4 rounds in {time.monotonic() - started:.1f}s")
        assert slowest < 6.5
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    assert _names(server, ns) == {"cm-0", "w0", "w1", "w2", "w3"}
