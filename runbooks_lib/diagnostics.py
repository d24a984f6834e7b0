"""Health findings for the diagnostics runbook: tables and problems from probe results.

The probes live in their own modules (etcd, kube, nodes, certs); this module
turns what they returned into pandas tables and into a list of problems,
each one sentence naming the member, node, pod, unit or certificate. The
verdict is one line. Pure: nothing here touches a machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from runbooks_lib import certs, etcd, kube


@dataclass(frozen=True)
class Finding:
    """One problem: which area (etcd, kubernetes, services, certificates) and what is wrong."""

    area: str
    problem: str

    def __str__(self) -> str:
        return f"{self.area}: {self.problem}"


def etcd_tables(members: Sequence[etcd.Member], health: Sequence[etcd.EndpointHealth],
                status: etcd.StatusReport | None) -> dict[str, pd.DataFrame]:
    """member list, endpoint health and endpoint status (leader, DB size, raft index) as DataFrames."""
    member_df = pd.DataFrame(
        [{"id": m.id_hex, "name": m.name or "(unstarted)", "peer": ",".join(m.peer_urls),
          "client": ",".join(m.client_urls), "learner": m.is_learner} for m in members],
        columns=["id", "name", "peer", "client", "learner"])
    health_df = pd.DataFrame([{"endpoint": h.endpoint, "healthy": h.healthy, "took": h.took, "error": h.error}
                              for h in health], columns=["endpoint", "healthy", "took", "error"])
    rows = [{"endpoint": s.endpoint, "member": s.member_hex, "leader": s.is_leader, "db_size_mb":
             round(s.db_size / 1e6, 2), "raft_term": s.raft_term, "raft_index": s.raft_index,
             "revision": s.revision, "version": s.version} for s in (status.statuses if status else ())]
    status_df = pd.DataFrame(rows, columns=["endpoint", "member", "leader", "db_size_mb", "raft_term",
                                            "raft_index", "revision", "version"])
    return {"members": member_df, "health": health_df, "status": status_df}


def _host_of(endpoint: str, names: Mapping[str, str]) -> str:
    address = endpoint.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return f" ({names[address]})" if address in names else ""


def etcd_findings(expected: Sequence[str], members: Sequence[etcd.Member],
                  health: Sequence[etcd.EndpointHealth], status: etcd.StatusReport | None,
                  names: Mapping[str, str] | None = None) -> list[Finding]:
    """Problems: member count vs the inventory's etcd group, unstarted members, unhealthy endpoints, leaders.

    ``names`` maps addresses to inventory names, so an endpoint is named as the operator knows it.
    """
    names = names or {}
    out = []
    if len(members) != len(expected):
        out.append(Finding("etcd", f"{len(members)} members, the inventory lists {len(expected)} "
                                   f"({', '.join(expected)})"))
    out += [Finding("etcd", f"member {m.id_hex} is unstarted (added but never joined)")
            for m in members if not m.started]
    out += [Finding("etcd", f"endpoint {h.endpoint}{_host_of(h.endpoint, names)} unhealthy: {h.error or 'no answer'}")
            for h in health if not h.healthy]
    if status is not None:
        if len(status.leaders) > 1:
            out.append(Finding("etcd", f"members disagree on the leader: {', '.join(sorted(status.leaders))}"))
        elif not status.leaders:
            out.append(Finding("etcd", "no leader"))
        out += [Finding("etcd", f"status: {line}") for line in status.errors]
    return out


def nodes_table(nodes: Sequence[kube.NodeInfo]) -> pd.DataFrame:
    return pd.DataFrame([{"node": n.name, "status": n.status, "roles": ",".join(n.roles), "ip": n.internal_ip,
                          "kubelet": n.kubelet_version} for n in nodes],
                        columns=["node", "status", "roles", "ip", "kubelet"])


def pods_table(pods: Sequence[kube.PodHealth]) -> pd.DataFrame:
    return pd.DataFrame([{"pod": p.name, "node": p.node, "phase": p.phase, "ready": p.ready,
                          "restarts": p.restarts, "waiting": ",".join(p.waiting_reasons)} for p in pods],
                        columns=["pod", "node", "phase", "ready", "restarts", "waiting"])


def kube_findings(expected_nodes: Iterable[str], nodes: Sequence[kube.NodeInfo],
                  pods: Sequence[kube.PodHealth]) -> list[Finding]:
    """Problems: inventory nodes missing or not Ready, crash-looping and unhealthy kube-system pods."""
    names = {n.name for n in nodes}
    out = [Finding("kubernetes", f"node {name} is in the inventory but not registered")
           for name in expected_nodes if name not in names]
    out += [Finding("kubernetes", f"node {n.name} is {n.status}") for n in nodes if not n.is_ready]
    out += [Finding("kubernetes", f"pod kube-system/{p.name} on {p.node or '(unscheduled)'} is in "
                                  f"CrashLoopBackOff ({p.restarts} restarts)") for p in kube.crash_looping(pods)]
    out += [Finding("kubernetes", f"pod kube-system/{p.name} on {p.node or '(unscheduled)'} is "
                                  f"{p.phase}{'' if p.ready else ', not ready'}")
            for p in pods if not p.healthy and not p.crash_looping]
    return out


def services_table(states: Mapping[tuple[str, str], str]) -> pd.DataFrame:
    """``{(host, unit): state}`` as a host x unit table."""
    df = pd.DataFrame([{"host": h, "unit": u, "state": s} for (h, u), s in states.items()],
                      columns=["host", "unit", "state"])
    return df.pivot(index="host", columns="unit", values="state").fillna("") if len(df) else df


def service_findings(states: Mapping[tuple[str, str], str]) -> list[Finding]:
    """Problems: a unit expected on a host that is not active (``not-found`` is not a problem:
    e.g. the API server runs as a static pod on a real Kubespray control plane)."""
    return [Finding("services", f"{unit} on {host} is {state}") for (host, unit), state in states.items()
            if state not in ("active", "not-found")]


def certs_table(found: Sequence[certs.CertExpiry]) -> pd.DataFrame:
    return pd.DataFrame([{"host": c.host, "certificate": c.path, "subject": c.subject,
                          "not_after": c.not_after.strftime("%Y-%m-%d"), "days_left": c.days_left}
                         for c in found], columns=["host", "certificate", "subject", "not_after", "days_left"])


def cert_findings(found: Sequence[certs.CertExpiry], warn_days: int) -> list[Finding]:
    """Problems: expired certificates and those expiring within ``warn_days``."""
    out = []
    for c in found:
        if c.expired:
            out.append(Finding("certificates", f"{c.host}:{c.path} EXPIRED {-c.days_left} days ago"))
        elif c.days_left < warn_days:
            out.append(Finding("certificates", f"{c.host}:{c.path} expires in {c.days_left} days"))
    return out


def verdict(cluster: str, findings: Sequence[Finding]) -> str:
    """One line: HEALTHY, or UNHEALTHY with the first problems named."""
    if not findings:
        return f"{cluster}: HEALTHY"
    shown = "; ".join(str(f) for f in findings[:4])
    more = f" (+{len(findings) - 4} more)" if len(findings) > 4 else ""
    return f"{cluster}: UNHEALTHY: {len(findings)} problem{'s' if len(findings) != 1 else ''}: {shown}{more}"
