"""Two API stand-ins on one etcd: exactly one controller set leads; the other takes over when it dies."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.waiting import wait_value

pytestmark = [pytest.mark.local, pytest.mark.slow]

LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"
LEASE_DURATION = 15  # the controllers' leaseDurationSeconds

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "app", "image": "mopckou/sticky-session:latest"}]}}},
}


def identity(server) -> str | None:
    m = re.search(r"controllers started as (\S+)", server.log_path.read_text(errors="replace"))
    return m.group(1) if m else None


def holder(server) -> str | None:
    code, lease = server.get(LEASE)
    return lease["spec"].get("holderIdentity") if code == 200 else None


def new_holder(server, old: str) -> str | None:
    h = holder(server)
    return h if h and h != old else None


def replicaset_replicas(server) -> list[int]:
    code, body = server.get("/apis/apps/v1/namespaces/default/replicasets")
    return [rs["spec"]["replicas"] for rs in body["items"]] if code == 200 else []


@pytest.fixture(scope="module")
def two_api_servers(etcd_factory, api_server_factory, kube_pki):
    etcd = etcd_factory(1)
    flags = [f"--controllers-ca-key={kube_pki.ca_key}", "--node-monitor-grace-period=4s"]
    servers = [api_server_factory(etcd_servers=etcd.etcd_servers, extra_args=flags) for _ in range(2)]
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()
        etcd.stop()


def test_one_leader_and_takeover_after_the_leader_dies(two_api_servers):
    a, b = two_api_servers
    ids = {wait_value(lambda: identity(s), 15, "controllers to start"): s for s in (a, b)}
    assert len(ids) == 2, "each API server runs its own candidate"
    first = wait_value(lambda: holder(a), 20, "a lease holder")
    assert first in ids
    leader, follower = ids[first], next(s for i, s in ids.items() if i != first)

    # over several renewals the holder stays, the lease is renewed and only one process leads
    renew_before = leader.get(LEASE)[1]["spec"]["renewTime"]
    time.sleep(5)
    _, lease = follower.get(LEASE)
    assert lease["spec"]["holderIdentity"] == first
    assert lease["spec"]["renewTime"] != renew_before
    assert lease["spec"]["leaseDurationSeconds"] == LEASE_DURATION
    leading = [s for s in (a, b) if "became the leader" in s.log_path.read_text(errors="replace")]
    assert leading == [leader]

    # the leader's controllers work (Deployment -> ReplicaSet)
    code, _ = follower.request("POST", "/apis/apps/v1/namespaces/default/deployments", DEPLOYMENT)
    assert code == 201
    wait_value(lambda: replicaset_replicas(follower) == [1], 15, "the ReplicaSet of the Deployment")

    # hard crash of the leader's process: no release, the lease must expire first
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait(timeout=10)
    killed = time.monotonic()
    second = wait_value(lambda: new_holder(follower, first), LEASE_DURATION + 15, "the follower to take the lease over")
    took = time.monotonic() - killed
    print(f"controller lease taken over {took:.1f}s after the leader was killed")
    assert second in ids and ids[second] is follower
    assert LEASE_DURATION - 3 <= took <= LEASE_DURATION + 10, f"took over after {took:.1f}s"
    _, lease = follower.get(LEASE)
    assert lease["spec"]["leaseTransitions"] >= 1

    # and the new leader's controllers act on a change
    code, _ = follower.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/web",
                               {"spec": {"replicas": 2}}, content_type="application/merge-patch+json")
    assert code == 200
    wait_value(lambda: replicaset_replicas(follower) == [2], 15, "the new leader to scale the ReplicaSet")


def test_a_cleanly_stopped_leader_hands_over_at_once(etcd_factory, api_server_factory, kube_pki):
    etcd = etcd_factory(1)
    flags = [f"--controllers-ca-key={kube_pki.ca_key}", "--node-monitor-grace-period=4s"]
    servers = [api_server_factory(etcd_servers=etcd.etcd_servers, extra_args=flags) for _ in range(2)]
    try:
        ids = {wait_value(lambda: identity(s), 15, "controllers to start"): s for s in servers}
        first = wait_value(lambda: holder(servers[0]), 20, "a lease holder")
        leader = ids[first]
        follower = next(s for s in servers if s is not leader)
        leader.stop()  # SIGTERM: the lease is released
        stopped = time.monotonic()
        wait_value(lambda: new_holder(follower, first), 10, "the follower to lead")
        assert time.monotonic() - stopped < 8, "a released lease is taken over without waiting for expiry"
    finally:
        for s in servers:
            s.stop()
        etcd.stop()
