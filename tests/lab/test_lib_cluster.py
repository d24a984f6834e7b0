"""runbooks_lib's etcd and kube modules against the cluster the Kubespray stand-in installed on the lab.

Real SSH (pinned host keys), real etcd with Kubespray's TLS layout, and the API
stand-in through the official Python client. Other lab tests reimage and restart
machines, so the module starts from the installed snapshot. Read-only except the
drain, which uncordons the worker again.
"""

from __future__ import annotations

import subprocess

import pytest

from runbooks_lib import controlplane, errors, etcd, kube, runbook, ssh
from runbooks_lib.lab import cluster
from tests.lab.cluster_fixtures import SNAPSHOT, LabCluster

pytestmark = pytest.mark.lab

ETCD_HOSTS = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def installed(kubespray_cluster: LabCluster) -> LabCluster:
    """The cluster as cluster.yml left it, with etcd healthy and the API answering."""
    c = kubespray_cluster
    c.lab.heal()
    c.lab.restore_all(SNAPSHOT)
    cluster.close_ssh_masters()

    def ready() -> tuple[bool, str]:
        health = c.etcdctl("node1", "endpoint", "health", "--cluster", check=False, timeout=20)
        api = c.kubectl("get", "nodes", check=False, timeout=30)
        return health.exited == 0 and api.returncode == 0, f"etcd: {health.stderr.strip()[-200:]} " \
            f"api: {api.stderr.strip()[-200:]}"

    runbook.wait_for(ready, timeout=180, interval=3, what="etcd health and the API after restoring the lab",
                     retry_on=(errors.RunbookError, subprocess.TimeoutExpired))
    return c


def connect(c: LabCluster, name: str) -> ssh.Connection:
    d = c.description
    return ssh.Connection(ssh.Host(name, c.ip(name), user=d["ssh_user"], key_path=d["ssh_key"],
                                   known_hosts=d["known_hosts"]), connect_timeout=5)


def test_etcd_members_health_status_and_quorum(installed: LabCluster) -> None:
    c = installed
    with connect(c, "node2") as conn:
        ctl = etcd.Etcdctl(conn, member="node2")
        members = etcd.member_list(ctl)
        assert sorted(m.name for m in members) == ["etcd1", "etcd2", "etcd3"]
        assert sorted(m.peer_urls[0] for m in members) == [etcd.peer_url(c.ip(n)) for n in ETCD_HOSTS]
        assert all(int(m.id_hex, 16) == m.id for m in members)
        health = etcd.endpoint_health(ctl, cluster=True)
        assert len(health) == 3 and all(h.healthy for h in health)
        report = etcd.endpoint_status(ctl, cluster=True)
        assert len(report) == 3 and len(report.leaders) == 1
        names = [m.name for m in members]
        assert etcd.check_removal(names, names, "etcd1").ok
        assert not etcd.check_loss(names, ["etcd1", "etcd2"], "etcd2").ok
        env = etcd.read_env(conn)
        assert env.get("ETCD_NAME") == "etcd2"
        assert env.get("ETCD_DATA_DIR") == "/var/lib/etcd"


def test_kube_nodes_through_either_control_plane(installed: LabCluster) -> None:
    c = installed
    for server in (None, f"https://{c.ip('node2')}:6443"):
        api = kube.client_from_kubeconfig(str(c.kubeconfig), server=server)
        infos = {n.name: n for n in kube.nodes(api)}
        assert {"node1", "node2", "node3", "node4"} <= set(infos)
        assert "control-plane" in infos["node1"].roles
        ready = kube.wait_for_nodes(api, ["node1", "node2", "node3", "node4"], "Ready", timeout=90)
        assert all(info is not None and info.is_ready for info in ready.values())
    assert kube.cluster_info_server(api) == f"https://{c.ip('node1')}:6443"
    pods = kube.pod_health(api, "kube-system")
    assert {p.name.split("-")[0] for p in pods} >= {"coredns", "nodelocaldns", "kube"}
    with connect(c, "node1") as conn:
        servers = controlplane.read_etcd_servers(conn)
    assert sorted(servers) == [f"https://{c.ip(n)}:2379" for n in ETCD_HOSTS]


def test_kube_drain_evicts_through_the_eviction_api(installed: LabCluster) -> None:
    c = installed
    api = kube.client_from_kubeconfig(str(c.kubeconfig))
    try:
        result = kube.drain(api, "node4", timeout=120)
        assert result.ok, result.failed
        assert kube.node(api, "node4").unschedulable
        left = [p for p in kube.pod_health(api, "kube-system", node="node4") if p.owner_kind != "DaemonSet"]
        assert not [p for p in left if p.name.startswith("coredns")], left
        assert result.skipped_daemonset, "DaemonSet pods must be skipped, not evicted"
    finally:
        kube.uncordon(api, "node4")
    assert not kube.node(api, "node4").unschedulable


def test_etcd_servers_edit_takes_effect_through_the_kubelet(installed: LabCluster) -> None:
    """The manifest edit alone restarts the API server (kubelet's static pod), as on a kubeadm control plane."""
    c = installed
    api = kube.client_from_kubeconfig(str(c.kubeconfig), server=f"https://{c.ip('node1')}:6443")
    mirror = "/api/v1/namespaces/kube-system/pods/kube-apiserver-node1"
    before = kube.api.get(api, mirror)
    assert before is not None, "the kubelet stand-in publishes the API server's mirror pod"
    with connect(c, "node1") as conn:
        old = controlplane.read_etcd_servers(conn)
        fewer = tuple(s for s in old if c.ip("node3") not in s)
        change = controlplane.set_etcd_servers(conn, fewer)
        try:
            assert change.changed and change.modified is not None
            waited = controlplane.wait_for_apiserver(api, change, timeout=120, interval=2)
            assert waited.attempts > 1  # it was not serving with the new list at once: kubelet restarted it
            after = kube.api.get(api, mirror)
            assert after["metadata"]["uid"] != before["metadata"]["uid"]
            assert f"--etcd-servers={','.join(fewer)}" in after["spec"]["containers"][0]["command"]
            assert {n.name for n in kube.nodes(api)} >= {"node1", "node2", "node3", "node4"}
        finally:
            back = controlplane.set_etcd_servers(conn, old)
            controlplane.wait_for_apiserver(api, back, timeout=120, interval=2)
