# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-papermill,-execution
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,runbook,-all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
#   runbook:
#     description: Is the cluster healthy? etcd, nodes, kube-system pods, services,
#       certificate expiry (read-only)
#     destructive: false
#     schema: runbooks_lib.schemas:DiagnosticsParams
# ---

# %% [markdown]
# # Diagnostics: is the cluster healthy?
#
# **What it does.** Reads, and changes nothing:
# etcd's members, endpoint health and status (leader, DB size, raft index);
# the Kubernetes nodes and the kube-system pods, naming any pod in CrashLoopBackOff;
# the state and journal tail of etcd, kubelet and the API server on the chosen nodes;
# how many days the etcd member/admin certificates and the API server certificate have left.
# It ends with **one verdict line**, and the run fails (exit status 1) when anything is unhealthy.
#
# **Blast radius: none.** Only reading commands over SSH (`etcdctl member list / endpoint health /
# endpoint status`, `systemctl status`, `journalctl`, `cat` of certificates, never of keys) and GET
# requests to the Kubernetes API. Safe on a timer (see the README's systemd timer and cron line).
#
# **How long.** About half a minute on the lab. Every remote command and API request is bounded by
# `timeout_s`; a powered-off machine costs one connect timeout.
#
# **If it fails.** The verdict line names each problem (member, node, pod, unit, certificate); the table
# above it with that name has the detail, and the journal tails show the service's own words.
# Exit status 2 ("refused") means a parameter or a file checked in the preflight is wrong: nothing was
# contacted. Expired certificates are a classic way a year-old Kubespray cluster dies: renew them with
# Kubespray before they run out.

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from runbooks_lib import certs, diagnostics, etcd, kube, nodes, runbook, schemas, ssh
from runbooks_lib import inventory as inventory_lib
from runbooks_lib.errors import PreconditionFailed, RunbookError

pd.set_option("display.width", 200)

# %% [markdown]
# ## Parameters
# One line per parameter. Site values (marked `required:`) have no default: give them in your
# parameter file (`runbooks run NAME -f params/my-cluster.yaml`; `params/example-vps.yaml` shows each),
# in this cell, or, outside `runbooks run`, through `RUNBOOKS_PARAMS` (`make lab-notebooks` sets it to
# `params/lab.yaml`: the lab's values). A run missing one is refused before anything is contacted.
# Relative paths are relative to the repository root; no secrets here, only paths to them.

# %% tags=["parameters"]
cluster_name: str = ""  # required: the cluster's name: the verdict and runs/CLUSTER/
inventory: Path = ""  # required: Kubespray inventory
kubespray_dir: Path = ""  # Kubespray checkout (not used by this runbook)
ansible_playbook: Path = ""  # ansible-playbook command (not used by this runbook)
kubeconfig: Path = ""  # required: admin kubeconfig
ssh_user: str = "root"  # SSH user on the machines (another user runs reads with sudo -n)
ssh_key: Path = ""  # required: path of the SSH private key
known_hosts: Path = ""  # required: pinned host keys
hosts: dict[str, str] = {}  # name -> address, for the install runbook (this one reads the inventory)
control_planes: list[str] = []  # for the install runbook (this one reads the inventory)
etcd_members: list[str] = []  # for the install runbook (this one reads the inventory)
workers: list[str] = []  # for the install runbook (this one reads the inventory)
inspect_nodes: list[str] = []  # nodes whose services to read; empty: control planes and etcd members
journal_lines: int = 20  # journal lines shown per unit
cert_warn_days: int = 30  # a certificate with fewer days left is a problem
timeout_s: float = 30.0  # bound of each remote command and API request, seconds

# %% [markdown]
# ## Validate
# Types, unknown keys and the target's layout are checked against `runbooks_lib.schemas.DiagnosticsParams`
# before anything is contacted.

# %%
p = schemas.check_diagnostics(schemas.from_namespace(schemas.DiagnosticsParams, globals()))
print(f"target {p.cluster_name}: inventory {p.inventory}")

# %% [markdown]
# ## Preflight
# The files this runbook reads must exist; the inventory must name etcd members and control planes; the
# nodes to inspect must be in it. SSH host keys are checked against `known_hosts` only: an unknown or
# changed key is refused, never accepted.

# %%
# papermill_description=Preflight
for what, path in [("inventory", p.inventory), ("kubeconfig", p.kubeconfig), ("known_hosts", p.known_hosts),
                   ("SSH key", p.ssh_key)]:
    if not path.is_file():
        raise PreconditionFailed(f"the {what} {path} does not exist; nothing was contacted",
                                 fix=f"check the {what} parameter (install the cluster first for the kubeconfig)")
inv = inventory_lib.Inventory.load(p.inventory)
etcd_hosts = inv.members("etcd")
control_planes_found = inv.members("kube_control_plane")
k8s_nodes = inv.members("k8s_cluster")
if not etcd_hosts or not control_planes_found:
    raise PreconditionFailed(f"{p.inventory} lists no etcd members or no control planes",
                             fix="point inventory at the cluster's Kubespray inventory")
unknown = [name for name in p.inspect_nodes if name not in inv.hosts]
if unknown:
    raise PreconditionFailed(f"inspect_nodes names hosts not in the inventory: {', '.join(unknown)}",
                             fix=f"pick from {', '.join(inv.hosts)}")
inspect = list(p.inspect_nodes) or list(dict.fromkeys([*control_planes_found, *etcd_hosts]))
sudo = p.ssh_user != "root"
address = {name: inv.host(name).address for name in inv.hosts}
conns = {name: ssh.Connection(ssh.Host(name, address[name], user=p.ssh_user, key_path=str(p.ssh_key),
                                       known_hosts=str(p.known_hosts)), connect_timeout=min(10.0, p.timeout_s))
         for name in inv.hosts}
findings: list[diagnostics.Finding] = []
unreachable: dict[str, str] = {}
steps = runbook.Steps()
display(pd.DataFrame([{"host": n, "address": address[n], "etcd": n in etcd_hosts,
                       "control plane": n in control_planes_found, "inspected": n in inspect} for n in inv.hosts]))

# %% [markdown]
# ## etcd
# etcdctl runs on the first etcd member that answers, with Kubespray's admin certificate of that member.
# A healthy cluster has as many started members as the inventory's etcd group, every endpoint healthy and
# one leader that every member agrees on. A member that does not answer is named by its inventory name.

# %%
# papermill_description=etcd members, health and status
members: list = []
health: list = []
status = None
asked = None
with steps.step("etcd") as s:
    for name in etcd_hosts:
        ctl = etcd.Etcdctl(conns[name], member=name, sudo=sudo, timeout=p.timeout_s)
        try:
            members = etcd.member_list(ctl)
        except RunbookError as exc:
            unreachable[name] = str(exc).splitlines()[0]
            findings.append(diagnostics.Finding("etcd", f"member {name} did not answer: {unreachable[name]}"))
            continue
        asked = name
        health = etcd.endpoint_health(ctl, cluster=True)
        try:
            status = etcd.endpoint_status(ctl, cluster=True)
        except RunbookError as exc:
            findings.append(diagnostics.Finding("etcd", f"no endpoint status: {str(exc).splitlines()[0]}"))
        break
    if asked is None:
        findings.append(diagnostics.Finding("etcd", "no etcd member answered"))
    findings += diagnostics.etcd_findings(etcd_hosts, members, health, status,
                                          names={a: n for n, a in address.items()})
    s.detail = f"{len(members)} members, asked {asked}"
etcd_tables = diagnostics.etcd_tables(members, health, status)
for title, table in etcd_tables.items():
    print(f"etcd {title} (asked {asked}):")
    display(table)

# %% [markdown]
# ## Kubernetes: nodes and kube-system pods
# Every control plane's API server is asked in turn (the kubeconfig's credentials, that control plane's
# address, TLS verified). Every inventory node should be registered and Ready; a kube-system pod in
# CrashLoopBackOff is named. CoreDNS crash-looping right after an install is the classic sign of kubelet's
# resolvConf pointing at systemd-resolved's stub (127.0.0.53).

# %%
# papermill_description=Nodes and kube-system pods
node_list: list = []
pods: list = []
api_answers: dict[str, str] = {}
with steps.step("kubernetes") as s:
    for name in control_planes_found:
        client = kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{inv.host(name).api_address}:6443")
        try:
            listed = kube.nodes(client, timeout=p.timeout_s)
            if not node_list:
                node_list = listed
                pods = kube.pod_health(client, "kube-system", timeout=p.timeout_s)
            api_answers[name] = "answers"
        except RunbookError as exc:
            api_answers[name] = str(exc).splitlines()[0]
            findings.append(diagnostics.Finding("kubernetes", f"API server on {name} did not answer: "
                                                f"{api_answers[name]}"))
    if not node_list:
        findings.append(diagnostics.Finding("kubernetes", "no API server answered"))
    findings += diagnostics.kube_findings(k8s_nodes, node_list, pods)
    s.detail = f"{sum(n.is_ready for n in node_list)}/{len(node_list)} nodes Ready"
display(diagnostics.nodes_table(node_list))
display(diagnostics.pods_table(pods))
crash = [f"{pod.name} on {pod.node}" for pod in kube.crash_looping(pods)]
print("crash-looping kube-system pods:", ", ".join(crash) or "none")

# %% [markdown]
# ## Services on the inspected nodes
# etcd on etcd members, kubelet on Kubernetes nodes, the API server on control planes. `not-found` means
# the unit does not exist on that machine (Kubespray runs the API server as a static pod under kubelet):
# not a problem by itself; the API check above covers it.

# %%
# papermill_description=Services: etcd, kubelet, API server
def units_on(name: str) -> list[str]:
    return ([*(["etcd"] if name in etcd_hosts else []), *(["kubelet"] if name in k8s_nodes else []),
             *(["kube-apiserver"] if name in control_planes_found else [])])


states: dict[tuple[str, str], str] = {}
with steps.step("services") as s:
    for name in inspect:
        for unit in units_on(name):
            if name in unreachable:
                states[(name, unit)] = "unreachable"
                continue
            try:
                result = nodes.status(conns[name], unit, lines=0, sudo=sudo, timeout=p.timeout_s)
                states[(name, unit)] = ("not-found" if result.exited == 4
                                        else nodes.is_active(conns[name], unit, timeout=p.timeout_s))
            except RunbookError as exc:
                unreachable[name] = str(exc).splitlines()[0]
                states[(name, unit)] = "unreachable"
    findings += diagnostics.service_findings(states)
    s.detail = f"{sum(v == 'active' for v in states.values())}/{len(states)} active"
display(diagnostics.services_table(states))

# %% [markdown]
# The units' own words: `systemctl status` and the last journal lines (secrets redacted).

# %%
# papermill_description=Journal tails
for (name, unit), state in states.items():
    if state in ("unreachable", "not-found"):
        continue
    print(f"==== {name}: systemctl status {unit}")
    print(runbook.redact(nodes.status(conns[name], unit, lines=0, sudo=sudo, timeout=p.timeout_s).stdout))
    print(f"==== {name}: journalctl -u {unit} -n {p.journal_lines}")
    print(runbook.redact(nodes.journal(conns[name], unit, lines=p.journal_lines, sudo=sudo, timeout=p.timeout_s)))

# %% [markdown]
# ## Certificate expiry
# Kubespray's certificates last a year (etcd's longer); a cluster that was never upgraded dies when they
# expire: etcd peers refuse each other, the API server cannot reach etcd. Read here: each etcd member's
# member and admin certificates and each control plane's API server certificate (certificates only; key
# files are never read).

# %%
# papermill_description=Certificate expiry
wanted = ([(n, certs.etcd_member_cert(n)) for n in etcd_hosts] + [(n, certs.etcd_admin_cert(n)) for n in etcd_hosts]
          + [(n, certs.APISERVER_CERT) for n in control_planes_found])
found_certs: list = []
with steps.step("certificates") as s:
    for name, path in wanted:
        if name in unreachable:
            continue
        try:
            found_certs.append(certs.remote_expiry(conns[name], path, sudo=sudo, timeout=p.timeout_s))
        except RunbookError as exc:
            findings.append(diagnostics.Finding("certificates", f"{name}:{path} unreadable: "
                                                f"{str(exc).splitlines()[0]}"))
    findings += diagnostics.cert_findings(found_certs, p.cert_warn_days)
    s.detail = f"{len(found_certs)} certificates"
display(diagnostics.certs_table(found_certs))

# %% [markdown]
# ## Summary
# Compared by nbval (stable text) and written as JSON beside the output notebook.

# %%
# NBVAL_CHECK_OUTPUT
healthy = not findings
verdict = diagnostics.verdict(p.cluster_name, findings)
ready = sorted(n.name for n in node_list if n.is_ready)
summary = runbook.write_summary("diagnostics", p.cluster_name, {
    "healthy": healthy,
    "verdict": verdict,
    "problems": [str(f) for f in findings],
    "etcd": {"members": len(members), "member_names": sorted(m.name for m in members),
             "healthy_endpoints": sum(h.healthy for h in health), "endpoints": len(health),
             "leaders": sorted(status.leaders) if status else [], "asked": asked},
    "nodes": {n.name: n.status for n in node_list},
    "nodes_ready": ready,
    "crash_looping": crash,
    "services": {f"{h}/{u}": v for (h, u), v in states.items()},
    "certificates": [{"host": c.host, "path": c.path, "days_left": c.days_left} for c in found_certs],
}, steps=steps)
leaders = len(status.leaders) if status else 0
print(f"cluster: {p.cluster_name}")
print(f"etcd: {len(members)} members, {summary['etcd']['healthy_endpoints']}/{len(health)} endpoints healthy, "
      f"{leaders} leader{'s' if leaders != 1 else ''}")
print(f"nodes: {len(ready)}/{len(node_list)} Ready")
print(f"kube-system: {len(crash)} crash-looping, {sum(not p_.healthy for p_ in pods)} unhealthy pods")
print(f"services: {sum(v == 'active' for v in states.values())}/{len(states)} active")
soon = sum(c.days_left < p.cert_warn_days for c in found_certs)
print(f"certificates: {len(found_certs)} read, {soon} expiring within {p.cert_warn_days} days")
print(f"problems: {len(findings)}")

# %% [markdown]
# ## Verdict

# %%
# papermill_description=Verdict
for conn in conns.values():
    conn.close()
print(verdict)
if not healthy:
    raise RunbookError(verdict, fix="each problem names its member, node, pod, unit or certificate: "
                                    "read its table and journal above")
