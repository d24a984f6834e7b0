"""cluster.yml of the lab's Kubespray stand-in: what an operator checks after an install.

One install per session (``kubespray_cluster``); these tests only read, except
the DNS fix, which puts kubelet's configuration back afterwards.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from runbooks_lib import kubespray
from runbooks_lib.lab import cluster
from tests.lab.cluster_fixtures import LabCluster
from tests.lab.processes import descendants
from tests.waiting import wait_until, wait_value

pytestmark = pytest.mark.lab

CONTROL_PLANES = ("node1", "node2")
ETCD = ("node1", "node2", "node3")
NODES = ("node1", "node2", "node3", "node4")


def _pods(c: LabCluster, namespace: str = "kube-system") -> list[dict]:
    return json.loads(c.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]


def _wait(predicate, timeout: float, what: str, interval: float = 2.0):
    return wait_value(predicate, timeout, what, interval)


def test_etcd_has_three_healthy_members_over_tls(kubespray_cluster: LabCluster) -> None:
    c = kubespray_cluster
    health = c.etcdctl("node1", "endpoint", "health", "--cluster", "-w", "json").stdout
    assert sorted(h["endpoint"] for h in json.loads(health) if h["health"]) == [
        f"https://{c.ip(n)}:2379" for n in ETCD]
    members = json.loads(c.etcdctl("node2", "member", "list", "-w", "json").stdout)["members"]
    assert sorted(m["name"] for m in members) == ["etcd1", "etcd2", "etcd3"]
    env = c.lab.ssh("node3", ["cat", "/etc/etcd.env"]).stdout
    assert "ETCD_NAME=etcd3" in env and "ETCDCTL_ENDPOINTS=https://127.0.0.1:2379" in env
    assert f"ETCD_INITIAL_CLUSTER=etcd1=https://{c.ip('node1')}:2380,etcd2=https://{c.ip('node2')}:2380," in env
    certs = c.lab.ssh("node2", ["ls", "/etc/ssl/etcd/ssl"]).stdout.split()
    for name in ("ca.pem", "admin-node2.pem", "admin-node2-key.pem", "member-node2.pem", "node-node2.pem"):
        assert name in certs
    # Without the admin certificate etcd refuses clients (client-cert-auth is on).
    anonymous = c.lab.ssh("node1", ["etcdctl", "--endpoints=https://127.0.0.1:2379",
                                    "--cacert=/etc/ssl/etcd/ssl/ca.pem", "--command-timeout=3s",
                                    "endpoint", "health"], check=False)
    assert anonymous.exited != 0


def test_api_answers_through_each_control_plane_and_nodes_are_ready(kubespray_cluster: LabCluster) -> None:
    c = kubespray_cluster
    for node in CONTROL_PLANES:
        manifest = c.lab.ssh(node, ["cat", "/etc/kubernetes/manifests/kube-apiserver.yaml"]).stdout
        assert f"--etcd-servers=https://{c.ip('node1')}:2379,https://{c.ip('node2')}:2379,https://{c.ip('node3')}:2379" in manifest
        assert f"--etcd-certfile=/etc/ssl/etcd/ssl/node-{node}.pem" in manifest
        assert f"--advertise-address={c.ip(node)}" in manifest
        # v2.19 (the default era): the local API server; v2.31 points it at the first control plane.
        conf = c.lab.ssh(node, ["grep", "server:", "/etc/kubernetes/admin.conf"]).stdout
        assert "server: https://127.0.0.1:6443" in conf
        names = c.kubectl("get", "nodes", "-o", "name", server_node=node).stdout.split()
        assert names == [f"node/{n}" for n in NODES]

    def all_ready():
        nodes = json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        ready = {n["metadata"]["name"]: any(k["type"] == "Ready" and k["status"] == "True"
                                            for k in n["status"]["conditions"]) for n in nodes}
        return ready if all(ready.values()) and len(ready) == len(NODES) else None

    _wait(all_ready, 60, "all nodes Ready")
    roles = c.kubectl("get", "nodes").stdout
    assert "control-plane" in roles.splitlines()[1]
    info = json.loads(c.kubectl("-n", "kube-public", "get", "configmap", "cluster-info", "-o", "json").stdout)
    assert f"server: https://{c.ip('node1')}:6443" in info["data"]["kubeconfig"]
    # Workers reach the API through nginx-proxy on localhost.
    for worker in ("node3", "node4"):
        assert "server: https://localhost:6443" in c.lab.ssh(worker, ["cat", "/etc/kubernetes/kubelet.conf"]).stdout
        upstreams = c.lab.ssh(worker, ["grep", "server ", "/etc/nginx/nginx.conf"]).stdout
        assert f"{c.ip('node1')}:6443" in upstreams and f"{c.ip('node2')}:6443" in upstreams


def test_kube_system_pods_and_the_coredns_crash_loop_fix(kubespray_cluster: LabCluster) -> None:
    c = kubespray_cluster
    names = [p["metadata"]["name"] for p in _pods(c)]
    for prefix, count in (("coredns-", 2), ("nodelocaldns-", 4), ("kube-proxy-", 4), ("calico-node-", 4),
                          ("nginx-proxy-", 2)):
        assert sum(n.startswith(prefix) for n in names) == count, (prefix, names)
    assert {"nginx-proxy-node3", "nginx-proxy-node4"} <= set(names)

    def dns_states() -> set[str]:
        states = set()
        for pod in _pods(c):
            if pod["metadata"]["name"].startswith(("coredns-", "nodelocaldns-")):
                for status in pod.get("status", {}).get("containerStatuses") or ():
                    waiting = status.get("state", {}).get("waiting") or {}
                    states.add(waiting.get("reason") or next(iter(status.get("state", {})), "unknown"))
        return states

    fix = ("grep -q '^resolvConf:' /etc/kubernetes/kubelet-config.yaml || "
           "echo 'resolvConf: /run/systemd/resolve/resolv.conf' >> /etc/kubernetes/kubelet-config.yaml; "
           "systemctl restart kubelet")
    undo = "sed -i '/^resolvConf:/d' /etc/kubernetes/kubelet-config.yaml; systemctl restart kubelet"
    # The install runbook fixed the crash loop (resolvConf in kubelet's config): put the pitfall back.
    try:
        for node in NODES:
            c.lab.ssh(node, ["bash", "-c", undo])
        # kubelet reads /etc/resolv.conf, the systemd-resolved stub: CoreDNS would forward to itself.
        _wait(lambda: "CrashLoopBackOff" in dns_states(), 90, "CoreDNS/nodelocaldns CrashLoopBackOff")
        assert "resolvConf" not in c.lab.ssh("node1", ["cat", "/etc/kubernetes/kubelet-config.yaml"]).stdout
    finally:
        for node in NODES:
            c.lab.ssh(node, ["bash", "-c", fix], check=False)
    _wait(lambda: dns_states() == {"running"}, 120, "CoreDNS and nodelocaldns running after the fix")


def test_ingress_routes_hosts_to_ready_endpoints_on_every_node(kubespray_cluster: LabCluster) -> None:
    import urllib.request

    c = kubespray_cluster
    manifest = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress-probe, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: ingress-probe}}
  template:
    metadata: {labels: {app: ingress-probe}}
    spec:
      containers: [{name: echo, image: "lab/echo-node:1", ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: ingress-probe, namespace: default}
spec:
  selector: {app: ingress-probe}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ingress-probe, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - host: probe.lab.test
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: ingress-probe, port: {number: 80}}}}]
"""
    path = c.inventory_dir / "ingress-probe.yaml"
    path.write_text(manifest)
    c.kubectl("apply", "-f", str(path))
    try:
        def answers() -> dict | None:
            seen = {}
            for node in NODES:
                request = urllib.request.Request(f"http://{c.ip(node)}/", headers={"Host": "probe.lab.test"})
                try:
                    with urllib.request.urlopen(request, timeout=3) as resp:
                        seen[node] = json.loads(resp.read())["pod"]
                except (OSError, ValueError):
                    return None
            return seen

        seen = _wait(answers, 90, "every node's port 80 to answer for probe.lab.test")
        assert all(pod.startswith("ingress-probe-") for pod in seen.values())
        # Unknown hosts get ingress-nginx's default backend answer.
        request = urllib.request.Request(f"http://{c.ip('node3')}/", headers={"Host": "unknown.lab.test"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=3)
        assert err.value.code == 404
    finally:
        c.kubectl("delete", "-f", str(path), "--wait=false", check=False)


def test_even_number_of_etcd_members_fails_the_assert_unless_ignored(restored_cluster: LabCluster) -> None:
    c = restored_cluster
    c.set_group("etcd", ["node1", "node2", "node3", "node4"])
    c.add_host("node4", etcd_member_name="etcd4")
    run = c.playbook("facts.yml")
    assert not run.ok
    assert "Stop if even number of etcd hosts" in run.output_tail and "Assertion failed" in run.output_tail
    run = c.playbook("facts.yml", extra_vars={"ignore_assert_errors": "yes"})
    assert run.ok, run.output_tail


def test_remove_node_requires_the_node_variable_from_v2_28(kubespray_cluster: LabCluster) -> None:
    """v2.31 refuses without `-e node` (v2.19 would remove every worker: test_kubespray_local checks that)."""
    run = kubespray_cluster.playbook("remove-node.yml", extra_vars={"skip_confirmation": "yes"},
                                     kubespray_dir=cluster.kubespray_dir("v2.31"))
    assert not run.ok
    assert "No nodes specified for removal. The `node` variable must be set explicitly." in run.output_tail
    assert list(run.recap) == ["localhost"]  # refused before touching a machine


def test_prompts_wait_for_an_answer(kubespray_cluster: LabCluster) -> None:
    import fcntl
    import os
    import pty
    import select
    import signal
    import subprocess
    import termios

    c = kubespray_cluster
    # On a terminal, pause waits for the operator: papermill would hang here.
    primary, secondary = pty.openpty()

    def controlling_terminal() -> None:  # runs in the child: the pty becomes its terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([str(cluster.ansible_playbook_path()), "-i", str(c.hosts), "-b", "remove-node.yml",
                             "-e", "node=node4"], cwd=cluster.KUBESPRAY_DIR,
                            # plain ansible-playbook: the host-key settings are passed explicitly
                            env={**os.environ, **cluster.playbook_env(),
                                 **kubespray.host_key_env(kubespray.detect(cluster.KUBESPRAY_DIR),
                                                          c.description["known_hosts"])},
                            stdin=secondary, stdout=secondary,
                            stderr=secondary, start_new_session=True, preexec_fn=controlling_terminal)
    os.close(secondary)
    output = b""
    try:
        closed = False

        def prompted() -> tuple[bool, str]:
            nonlocal output, closed
            ready, _, _ = select.select([primary], [], [], 1)
            if ready:
                try:
                    output += os.read(primary, 65536)
                except OSError:  # the playbook ended and closed the terminal
                    closed = True
            return closed or b"Type 'yes' to delete nodes" in output, output[-200:].decode(errors="replace")

        wait_until(prompted, 60, "remove-node.yml to ask for confirmation", 0.05)
        assert b"Are you sure you want to delete nodes state? Type 'yes' to delete nodes." in output, output[-3000:]
        time.sleep(5)
        assert proc.poll() is None, "remove-node.yml went on without an answer"
    finally:
        # Ansible's workers start their own sessions: kill the whole tree, not just the group.
        for pid in [*descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
        os.close(primary)
    # Without a terminal the prompt gets no answer and the playbooks stop.
    run = c.playbook("remove-node.yml", extra_vars={"node": "node4"})
    assert not run.ok and "Delete nodes confirmation failed" in run.output_tail
    run = c.playbook("reset.yml")
    assert not run.ok and "Reset confirmation failed" in run.output_tail
    c.kubectl("get", "node", "node4")  # still there
