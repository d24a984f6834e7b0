"""Diagnostics findings and verdict from probe results (no machines)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from runbooks_lib import certs, diagnostics, etcd, kube

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _members(*names: str) -> list[etcd.Member]:
    return [etcd.Member(id=i + 1, name=n, peer_urls=(f"https://10.0.0.{i}:2380",), client_urls=())
            for i, n in enumerate(names)]


def _status(leaders: list[int]) -> etcd.StatusReport:
    return etcd.StatusReport(tuple(etcd.EndpointStatus(f"https://10.0.0.{i}:2379", i + 1, lead, 10, 2, 99, 2_000_000,
                                                       "3.5.0") for i, lead in enumerate(leaders)), ())


def test_healthy_etcd_has_no_findings_and_tables() -> None:
    members = _members("etcd1", "etcd2", "etcd3")
    health = [etcd.EndpointHealth(f"https://10.0.0.{i}:2379", True, "5ms") for i in range(3)]
    status = _status([1, 1, 1])
    assert diagnostics.etcd_findings(["node1", "node2", "node3"], members, health, status) == []
    tables = diagnostics.etcd_tables(members, health, status)
    assert list(tables["status"]["leader"]) == [True, False, False]
    assert list(tables["status"]["db_size_mb"]) == [2.0, 2.0, 2.0]


def test_etcd_problems_are_named() -> None:
    members = _members("etcd1", "etcd2", "")
    health = [etcd.EndpointHealth("https://10.0.0.3:2379", False, error="context deadline exceeded")]
    found = [str(f) for f in diagnostics.etcd_findings(["node1", "node2"], members, health, _status([1, 2]),
                                                                  names={"10.0.0.3": "node3"})]
    assert "etcd: 3 members, the inventory lists 2 (node1, node2)" in found
    assert "etcd: member 3 is unstarted (added but never joined)" in found
    assert "etcd: endpoint https://10.0.0.3:2379 (node3) unhealthy: context deadline exceeded" in found
    assert "etcd: members disagree on the leader: 1, 2" in found


def test_kube_findings_name_nodes_and_crash_looping_pods() -> None:
    nodes = [kube.NodeInfo("node1", "True", ("control-plane",), (), False),
             kube.NodeInfo("node3", "Unknown", (), (), False)]
    pods = [kube.PodHealth("kube-system", "coredns-1", "node3", "Running", False, 7, ("CrashLoopBackOff",)),
            kube.PodHealth("kube-system", "proxy-1", "node1", "Running", True, 0, ())]
    found = [str(f) for f in diagnostics.kube_findings(["node1", "node3", "node4"], nodes, pods)]
    assert found == ["kubernetes: node node4 is in the inventory but not registered",
                     "kubernetes: node node3 is NotReady",
                     "kubernetes: pod kube-system/coredns-1 on node3 is in CrashLoopBackOff (7 restarts)"]
    assert list(diagnostics.nodes_table(nodes)["status"]) == ["Ready", "NotReady"]


def test_services_and_certificates() -> None:
    states = {("node1", "etcd"): "active", ("node1", "kube-apiserver"): "not-found", ("node2", "kubelet"): "failed"}
    assert [str(f) for f in diagnostics.service_findings(states)] == ["services: kubelet on node2 is failed"]
    assert diagnostics.services_table(states).loc["node1", "etcd"] == "active"
    expiring = [certs.CertExpiry("node1", "/a.pem", "CN=a", "CN=ca", NOW + timedelta(days=400), NOW),
                certs.CertExpiry("node2", "/b.pem", "CN=b", "CN=ca", NOW + timedelta(days=10), NOW),
                certs.CertExpiry("node3", "/c.pem", "CN=c", "CN=ca", NOW - timedelta(days=2), NOW)]
    assert [str(f) for f in diagnostics.cert_findings(expiring, 30)] == [
        "certificates: node2:/b.pem expires in 10 days", "certificates: node3:/c.pem EXPIRED 2 days ago"]
    assert list(diagnostics.certs_table(expiring)["days_left"]) == [400, 10, -2]


def test_verdict_is_one_line() -> None:
    assert diagnostics.verdict("lab", []) == "lab: HEALTHY"
    found = [diagnostics.Finding("etcd", f"problem {i}") for i in range(6)]
    line = diagnostics.verdict("lab", found)
    assert line.startswith("lab: UNHEALTHY: 6 problems: etcd: problem 0;") and line.endswith("(+2 more)")
    assert "\n" not in line
