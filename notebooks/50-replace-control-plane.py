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
#     description: Replace a dead control-plane/etcd node with a new machine or the
#       same IP reinstalled, quorum-guarded and re-runnable, then prove the cluster
#       healthy
#     destructive: true
#     schema: runbooks_lib.schemas:ReplaceParams
# ---

# %% [markdown]
# # Replace a dead control-plane/etcd node
#
# **Symptom.** A control-plane node that is also an etcd member is gone (powered off, disk lost, provider
# outage). etcd runs on two of three members: it still has quorum but no margin left, the kubeconfig and
# kube-public/cluster-info may point at the dead API server, and Kubespray's playbooks fail on the
# unreachable host (every play is `any_errors_fatal`). Re-adding a node naively can end in etcd's
# `member count is unequal`, or in a new node bootstrapping an etcd cluster of its own (Kubespray #10560).
#
# **What it does.** The whole procedure in one run: point the kubeconfig at a survivor; cordon, drain
# (bounded) and delete the dead node; point cluster-info at a survivor; remove the dead etcd member
# through the quorum guard; fix `--etcd-servers` on the surviving control planes (kubelet restarts the
# static pod); take the dead host out of the inventory's groups and refresh the survivors with
# `upgrade-cluster.yml`; prepare the replacement; add its etcd member by hand first where Kubespray's
# membership check would skip it; append it at the END of `kube_control_plane` and `etcd`; run
# `cluster.yml --limit=etcd,kube_control_plane`; refresh the workers' nginx-proxy; verify.
#
# **Two replacements.** A new machine with a new IP (`replacement` = its inventory name), or the same host
# reinstalled with the same IP (`replacement` = `dead_node`). A reinstalled host has a new SSH host key:
# pin it in `known_hosts` first (compare the fingerprint with the provider's console); the runbook
# refuses an unpinned key and never turns checking off.
#
# **Blast radius: etcd and every control plane.** The default is a dry run that stops after the plan.
# Every step checks before it acts: after an interruption, run the runbook again with the same
# parameters and it continues where it stopped. No play ever includes the dead host (with Kubespray's
# SSH settings it would hang for many minutes). Exit status 2 ("refused") means nothing was changed.
#
# **When not to use it.** Two of three etcd members dead: etcd has lost quorum and no member can be
# removed; use the restore-from-snapshot runbook (restore-cluster) instead.

# %%
import os
import time
from pathlib import Path

import pandas as pd
from IPython.display import display

from runbooks_lib import ansible_check, controlplane, etcd, etcd_snapshot, ingress, knownhosts, kube, kubespray, nodes
from runbooks_lib import replace, runbook, schemas, ssh
from runbooks_lib import inventory as inventory_lib
from runbooks_lib import kubeconfig as kubeconfig_lib
from runbooks_lib.errors import (CommandFailed, HostKeyError, HostUnreachable, PreconditionFailed, RunbookError,
                                 WaitTimedOut)

pd.set_option("display.width", 200)

# %% [markdown]
# ## Parameters
# One line per parameter. Site values (marked `required:`) have no default: give them in your
# parameter file (`runbooks run NAME -f params/my-cluster.yaml`; `params/example-vps.yaml` shows each),
# in this cell, or, outside `runbooks run`, through `RUNBOOKS_PARAMS` (`make lab-notebooks` sets it to
# `params/lab.yaml`: the lab's values). A run missing one is refused before anything is contacted.
# Relative paths are relative to the repository root; no secrets here, only paths to them.

# %% tags=["parameters"]
cluster_name: str = ""  # required: the cluster's name: the confirmation token and runs/CLUSTER/
inventory: Path = ""  # required: the cluster's inventory (hosts.yaml or inventory.ini), edited in place (a backup kept)
kubespray_dir: Path = ""  # required: Kubespray checkout (run from there)
ansible_playbook: Path = ""  # the Kubespray checkout's ansible-playbook; empty: KUBESPRAY_DIR/venv/bin/ansible-playbook, else on PATH
kubeconfig: Path = ""  # required: the admin kubeconfig (its server is switched to a survivor)
ssh_user: str = "root"  # SSH user on the machines
ssh_key: Path = ""  # required: path of the SSH private key
known_hosts: Path = ""  # required: pinned host keys (the replacement's too)
hosts: dict[str, str] = {}  # name -> address, for the install runbook (this one reads the inventory)
control_planes: list[str] = []  # for the install runbook (this one reads the inventory)
etcd_members: list[str] = []  # for the install runbook (this one reads the inventory)
workers: list[str] = []  # for the install runbook (this one reads the inventory)
dead_node: str = ""  # required: inventory name of the dead control-plane/etcd node
replacement: str = ""  # required: inventory name of the replacement (the dead node's own name: the same host reinstalled, same IP)
replacement_ip: str = ""  # the new machine's IP (ignored for a same-IP reinstall)
allow_answering_dead_node: bool = False  # treat dead_node as dead even though its etcd or API answers
upstream_dns_servers: list[str] = []  # required: DNS servers for preparing the replacement
app_host: str = ""  # required: the test app's host name, asked on every ingress node at the end
dns_server: str = ""  # DNS server to check app_host's A records on; empty: no DNS check
dns_command: list[str] = []  # DNS hook setting app_host's A records, e.g. ["my-dns", "set", "{name}", "{ips}"]; empty: manual
kubeconfig_server_after: str = ""  # the kubeconfig's server at the end (https://IP:6443); empty: left at a survivor
backup_dir: Path = ""  # required: where the safety snapshot is kept (the etcd-snapshot runbook's backup_dir)
remote_dir: str = "/var/tmp"  # where the survivor writes the snapshot before the download (then deleted)
ansible_env: dict[str, str] = {}  # extra environment for ansible-playbook (e.g. ANSIBLE_CACHE_PLUGIN_CONNECTION)
dry_run: bool = True  # stop after the plan
confirm: str = ""  # headless confirmation: the cluster name
drain_timeout_s: float = 30.0  # bound of the dead node's drain (its pods never confirm), seconds
playbook_timeout_s: float = 5400.0  # bound of each playbook, seconds
ready_timeout_s: float = 300.0  # bound of each wait, seconds
timeout_s: float = 30.0  # bound of each remote command and API request, seconds

# %% [markdown]
# ## Validate
# Types and unknown keys against `runbooks_lib.schemas.ReplaceParams`; names, the replacement's IP and
# the files this runbook needs, before anything is contacted.

# %%
p = schemas.check_replace(schemas.from_namespace(schemas.ReplaceParams, globals()))
same_ip = p.replacement == p.dead_node
sudo = p.ssh_user != "root"
steps = runbook.Steps()
print(f"target {p.cluster_name}: replace {p.dead_node} with "
      + (f"{p.dead_node} reinstalled (same IP)" if same_ip else f"the new machine {p.replacement} ({p.replacement_ip})"))

# %% [markdown]
# ## Preflight
# Read-only, and everything that can refuse refuses here, before any change:
# - the dead node must be a control plane or etcd member of the inventory; the replacement's IP must not
#   belong to another host; the replacement must answer SSH with a host key pinned in `known_hosts`;
# - the surviving members answer over SSH; `etcdctl member list` and `endpoint health --cluster` from a
#   survivor; the quorum arithmetic (removing the dead member must leave a majority healthy; with two of
#   three members dead that is impossible, and the restore-from-snapshot runbook is the way out);
# - the node given as dead really is dead: its etcd member and its API server do not answer (unless
#   `allow_answering_dead_node`);
# - a re-run after an interruption is recognised: when the inventory already lists the replacement at the
#   end of the groups, the removal half is done and only what is left is planned;
# - `backup_dir`, where the safety snapshot goes, is writable (created, mode 0700, when missing).

# %%
# papermill_description=Preflight
checkout = kubespray.detect(p.kubespray_dir)
p.backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
if not os.access(p.backup_dir, os.W_OK):
    raise PreconditionFailed(f"backup_dir {p.backup_dir} is not writable; nothing was changed",
                             fix="pick a backup_dir this user can write (it will hold every Secret: keep it private)")
ansible = ansible_check.check(p.ansible_playbook, p.kubespray_dir)
print(ansible.line())
inv = inventory_lib.load(p.inventory)
resumed = replace.resuming(inv, p.dead_node, p.replacement)
if p.dead_node not in inv.hosts and not resumed:
    raise PreconditionFailed(f"{p.dead_node} is not in the inventory {p.inventory} (hosts: {', '.join(inv.hosts)}); "
                             "nothing was changed", fix="pass the inventory name of the dead node as dead_node")
# A new machine's run forgets the dead host when it appends the replacement: a re-run after that knows no dead IP.
dead_ip = (inv.host(p.dead_node).ip or inv.host(p.dead_node).ansible_host) if p.dead_node in inv.hosts else None
if not resumed and not set(inv.groups_of(p.dead_node)) & set(replace.GROUPS):
    raise PreconditionFailed(f"{p.dead_node} is neither a control plane nor an etcd member; nothing was changed",
                             fix="remove a dead worker with the remove-node procedure instead")
new_ip = dead_ip if same_ip else p.replacement_ip
# SSH goes where Ansible goes: a reinstalled host keeps its inventory ansible_host (which may differ from its ip).
new_ssh = (inv.host(p.dead_node).ansible_host or new_ip) if same_ip and p.dead_node in inv.hosts else new_ip
owner = next((h.name for h in inv.hosts.values() if new_ip in (h.ip, h.ansible_host) and h.name != p.replacement
              and (h.name != p.dead_node or not same_ip)), None)
if owner:
    raise PreconditionFailed(f"the replacement's IP {new_ip} belongs to {owner} in the inventory; nothing was changed",
                             fix="give the new machine's own IP as replacement_ip, or replacement=dead_node for a "
                                 "same-IP reinstall")
if not same_ip and p.replacement in inv.hosts and not resumed:
    raise PreconditionFailed(f"{p.replacement} is already in the inventory; nothing was changed",
                             fix="name the new machine with a name the inventory does not use")
# The replacement takes the dead member's name (the ETCD_NAME Kubespray writes from etcd_member_name): the old
# member is removed before the new one joins, and the name stays the same across re-runs.
etcd_name = str((inv.host(p.replacement).vars.get("etcd_member_name") if p.replacement in inv.hosts else None)
                or inv.host(p.dead_node).vars.get("etcd_member_name") or "")
if not etcd_name:
    raise PreconditionFailed(f"{p.dead_node} has no etcd_member_name in the inventory; nothing was changed",
                             fix="set etcd_member_name of every etcd host explicitly (the default follows the position "
                                 "in the group, which this procedure changes)")
if not knownhosts.pinned(p.known_hosts, new_ssh):
    raise PreconditionFailed(f"no host key is pinned for the replacement {p.replacement} ({new_ssh}) in "
                             f"{p.known_hosts}; nothing was changed",
                             fix=f"pin it: ssh-keyscan {new_ssh} >> {p.known_hosts}, after comparing the fingerprint "
                                 "with the provider's console")


def connect(name: str, address: str) -> ssh.Connection:
    return ssh.Connection(ssh.Host(name, address, user=p.ssh_user, key_path=str(p.ssh_key),
                                   known_hosts=str(p.known_hosts)), connect_timeout=min(10.0, p.timeout_s))


def serves(client) -> bool:
    """Whether the API server behind ``client`` answers /readyz with 200 (bounded)."""
    try:
        return kube.api.call(client, "GET", "/readyz", timeout=min(5.0, p.timeout_s))[0] == 200
    except HostUnreachable:
        return False


address = {n: h.ansible_host or h.ip or n for n, h in inv.hosts.items() if n != p.dead_node}
# The API servers are reached at Kubespray's access address (in their certificates), SSH at ansible_host.
api_at = {n: h.api_address for n, h in inv.hosts.items() if n != p.dead_node}
conns = {n: connect(n, a) for n, a in address.items()}
new_conn = connect(p.replacement, new_ssh)
try:
    ssh.run(new_conn, ["true"], timeout=p.timeout_s)
except HostKeyError as exc:
    raise PreconditionFailed(f"the replacement {p.replacement} ({new_ssh}) presents a host key that known_hosts does "
                             f"not pin; nothing was changed", host=p.replacement,
                             fix=f"pin its new key in {p.known_hosts} (ssh-keygen -R {new_ssh}; ssh-keyscan {new_ssh} "
                                 ">> known_hosts) after comparing the fingerprint with the provider's console") from exc
except (HostUnreachable, CommandFailed) as exc:
    raise PreconditionFailed(f"the replacement {p.replacement} ({new_ssh}) does not answer SSH: "
                             f"{str(exc).splitlines()[0]}; nothing was changed", host=p.replacement,
                             fix="boot it (reinstalled), check the address and the SSH key") from exc

members_before = [m for m in inv.etcd_members if m not in (p.dead_node, p.replacement)]
answering = []
for m in members_before:
    try:
        ssh.run(conns[m], ["true"], timeout=p.timeout_s)
        answering.append(m)
    except RunbookError:
        pass
restore_fix = ("etcd has lost quorum: restore it from a snapshot with the restore-from-snapshot runbook "
               "(restore-cluster); no member can be removed before that")
if not answering:
    raise PreconditionFailed(f"no surviving etcd member answers SSH ({', '.join(members_before)}); nothing was changed",
                             fix=restore_fix)
survivor = answering[0]
ctl = etcd.Etcdctl(conns[survivor], member=survivor, sudo=sudo, timeout=p.timeout_s)
try:
    members = etcd.member_list(ctl)
    # Bounded: right after a member dies the others fail health checks until they elect a new leader.
    health = etcd.endpoint_health_settled(ctl, needed=etcd.quorum(len(members)), timeout=p.timeout_s)
except RunbookError as exc:
    raise PreconditionFailed(f"etcd on {survivor} does not answer (lost quorum?): {str(exc).splitlines()[0]}; nothing "
                             "was changed",
                             host=survivor, fix=restore_fix) from exc
healthy_urls = [h.endpoint for h in health if h.healthy]
rehearsal = ""
if not resumed:
    dead_answers = []
    if replace.client_url(dead_ip) in {u.rstrip("/") for u in healthy_urls}:
        dead_answers.append("its etcd member is healthy")
    if serves(kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{dead_ip}:6443")):
        dead_answers.append("its API server answers /readyz")
    if dead_answers and not p.allow_answering_dead_node and p.dry_run:
        rehearsal = (f"REHEARSAL: {p.dead_node} is not dead ({' and '.join(dead_answers)}): this dry run plans as if "
                     "it were; a real run refuses")
    elif dead_answers and not p.allow_answering_dead_node:
        raise PreconditionFailed(f"{p.dead_node} ({dead_ip}) is not dead: {' and '.join(dead_answers)}; nothing was "
                                 "changed", host=p.dead_node,
                                 fix="check the node name; to replace a live node anyway pass "
                                     "allow_answering_dead_node=True")
# Resumed: the dead member went before the replacement was appended; a member with that peer URL now is the
# replacement's, whatever its health, and is never removed.
stale = None if resumed else (dead_ip and replace.stale_member(members, healthy_urls, dead_ip)) or (
    next((m for m in members if etcd.peer_url(dead_ip) in m.peer_urls and m.started), None) if rehearsal else None)
labels = [m.name or m.id_hex for m in members]
healthy_labels = [m.name or m.id_hex for m in members if set(m.client_urls) & set(healthy_urls)]
if stale is not None:
    verdict = etcd.check_removal(labels, healthy_labels, stale.name)
else:
    n = len(members)
    ok = len(healthy_labels) >= etcd.quorum(n)
    verdict = etcd.QuorumVerdict(ok, f"{len(healthy_labels)} of {n} members healthy, quorum {etcd.quorum(n)}", n,
                                 len(healthy_labels), etcd.quorum(n))
display(pd.DataFrame([{"member": m.name or "(unstarted)", "id": m.id_hex, "peer": ",".join(m.peer_urls),
                       "healthy": bool(set(m.client_urls) & set(healthy_urls))} for m in members]))
if not verdict.ok:
    raise PreconditionFailed(f"refusing: {verdict.message}; nothing was changed", host=survivor, fix=restore_fix)

survivor_cps = [c for c in inv.control_planes if c not in (p.dead_node, p.replacement)]
apis = {c: kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{api_at[c]}:6443") for c in survivor_cps}
found_cp: list[str] = []


def some_cp_serves() -> tuple[bool, str]:
    # An API server restarting (kubelet re-reads an edited manifest, e.g. after an interrupted run) is waited for.
    found_cp[:] = [c for c in survivor_cps if serves(apis[c])][:1]
    return bool(found_cp), f"none of {', '.join(survivor_cps)} answers /readyz"


try:
    runbook.wait_for(some_cp_serves, timeout=min(120.0, p.ready_timeout_s), interval=3,
                     what="a surviving control plane to serve the API")
except WaitTimedOut:
    pass
live_cp = found_cp[0] if found_cp else None
if live_cp is None:
    raise PreconditionFailed(f"no surviving control plane serves the API ({', '.join(survivor_cps)}); nothing was "
                             "changed", fix="bring a control plane back first (diagnostics runbook)")
api = apis[live_cp]
stay_ips = [inv.host(m).ip or address[m] for m in members_before]
add_first = replace.member_add_first(checkout.release, new_ip, stay_ips, same_ip=same_ip)
print(f"Kubespray {checkout.version} at {checkout.path}; etcd from {survivor}: {verdict.message}")
print(f"API through {live_cp}; {'RESUMING: the replacement is already in the inventory' if resumed else 'fresh start'}")
print(f"membership check: {add_first.reason}")

# %% [markdown]
# ## Plan
# Every host, etcd member operation, inventory change and playbook command, in order. The plan's shape
# is compared by nbval (stable text); addresses depend on the lab and are sanitised.

# %%
# NBVAL_CHECK_OUTPUT
workers = [w for w in inv.workers if w not in inv.control_planes]
after_cps = survivor_cps + [p.replacement]
after_etcd = members_before + [p.replacement]
live_hosts = sorted({*inv.members("k8s_cluster"), *inv.etcd_members} - {p.dead_node, p.replacement})
wanted_servers = tuple(replace.client_url(inv.host(m).ip or address[m]) for m in members_before)
planned = inv.copy()
replace.without_dead(planned, p.dead_node, keep_in_all=True)
removal_diff = inventory_lib.diff(inv, planned)
replace.with_replacement(planned, p.replacement, new_ip, etcd_member_name=etcd_name)
env_note = f"(host keys checked against {p.known_hosts.name})"
plan = [
    f"replace {p.dead_node} ({'same IP, reinstalled' if same_ip else 'new machine ' + p.replacement})",
    f"0. etcd snapshot from {survivor} into {p.backup_dir} with its manifest (the way back: restore-cluster)",
    f"1. kubeconfig server -> https://{api_at[live_cp]}:6443 ({live_cp})",
    f"2. cordon, drain (bounded {p.drain_timeout_s:.0f} s) and delete node {p.dead_node}",
    f"3. kube-public/cluster-info server -> https://{api_at[live_cp]}:6443",
    f"3b. /etc/kubernetes/admin.conf on {', '.join(survivor_cps)} -> https://127.0.0.1:6443 where it names "
    f"{p.dead_node}",
    f"4. etcd member remove {stale.name if stale else '(already removed)'} on {survivor}, "
    "through the quorum guard",
    f"5. --etcd-servers={','.join(wanted_servers)} on {', '.join(survivor_cps)} (kubelet restarts the static pod)",
    f"6. inventory: {p.dead_node} out of kube_control_plane and etcd (kept in all.hosts, out of every play)",
    f"7. upgrade-cluster.yml -e ignore_assert_errors=yes -e '{{\"drain_nodes\": false}}' "
    f"--limit={','.join(live_hosts)} {env_note}",
    f"8. prepare {p.replacement}: python, ip_forward, swap off, systemd-resolved, resolv.conf",
    f"9. etcdctl member add {etcd_name} --peer-urls={etcd.peer_url(new_ip)} on {survivor}"
    if add_first.needed else "9. no member add by hand (Kubespray adds the member)",
    f"10. inventory: {p.replacement} appended to kube_control_plane ({', '.join(after_cps)}) and etcd "
    f"({', '.join(after_etcd)}), etcd_member_name {etcd_name}"
    + ("" if same_ip else f"; {p.dead_node} removed from all.hosts"),
    f"11. cluster.yml --limit=etcd,kube_control_plane -e etcd_retries=10 {env_note}",
    f"11b. --etcd-servers={','.join((*wanted_servers, replace.client_url(new_ip)))} on {', '.join(survivor_cps)}",
    f"12. scale.yml --limit={','.join(workers)} where a worker's nginx-proxy lacks a control plane",
    "13. kubeconfig server -> " + (p.kubeconfig_server_after or "left at the survivor"),
    f"14. DNS {p.app_host} -> every node's ingress, {p.dead_node}'s address out"
    + (f" and {p.replacement}'s in" if not same_ip else "") + ": "
    + ("through the hook (dns_command)" if p.dns_command else "a manual step at your DNS provider (no dns_command)"),
    "verify: 3 etcd members started and healthy, --etcd-servers, cluster-info, every control plane serves, "
    "all nodes Ready, the app on every ingress node",
]
if rehearsal:
    plan.insert(1, rehearsal)
if resumed:
    plan.insert(1, "resuming: steps 1-7 were done by an earlier run (the replacement is in the inventory)")
print("\n".join(plan))

# %% [markdown]
# The inventory change of step 6 against the file on disk (then step 10 appends the replacement):

# %%
print("\n".join(removal_diff.lines()) or "no change (already done)")

# %% [markdown]
# ## Confirmation gate
# Nothing has changed so far. A dry run stops here; a headless run passes only with `confirm` equal to the
# cluster name; in JupyterLab you are asked to type it.

# %%
proceed = runbook.confirm(f"replace {p.dead_node} (etcd member remove, playbooks)", cluster=p.cluster_name,
                          dry_run=p.dry_run, confirm=p.confirm or None, plan=plan,
                          lock=p.inventory)
backup_stamp = inventory_lib.backups.stamp_now()  # the inventory's backup, kept before the first edit
started = time.monotonic()
run_dir = Path(os.environ.get("PAPERMILL_OUTPUT_PATH") or p.inventory).parent
changes: dict = {}
runs: dict = {}


def playbook(name: str, key: str, **kwargs) -> kubespray.PlaybookRun:
    """Run one Kubespray playbook from the checkout, its log beside the run record; raise on failure."""
    cmd = kubespray.command(checkout, name, inventory=p.inventory, known_hosts=p.known_hosts,
                            ansible_playbook=ansible.path, **kwargs)
    log_path = run_dir / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{key}.log"
    print(f"$ {' '.join(cmd.argv)}\n  (in {cmd.cwd}; log {log_path})", flush=True)
    result = kubespray.run(cmd, timeout=p.playbook_timeout_s, log_path=log_path, env=p.ansible_env)
    runs[key] = {"rc": result.rc, "duration_s": round(result.duration, 1), "log": str(log_path)}
    print(f"{key}: exit {result.rc} in {result.duration:.0f} s")
    return result


# %% [markdown]
# ## Snapshot etcd first
# A fresh snapshot from a survivor, before any change, taken as the etcd-snapshot runbook takes one: saved,
# verified (status, checksum), downloaded into `backup_dir` with its manifest (so restore-cluster takes it
# by name, and etcd-snapshot's retention counts it), and the survivor's copy (every Secret of the cluster)
# deleted. If anything below goes wrong, the restore-from-snapshot runbook starts from it: the command is
# printed here and in the rollback section.

# %%
# papermill_description=etcd snapshot
snap = None
restore_command = None
if proceed:
    with steps.step("etcd snapshot") as s:
        statuses = etcd.endpoint_status(ctl, timeout=p.timeout_s)
        snap, snap_manifest = etcd_snapshot.save_backup(
            ctl, cluster=p.cluster_name, member=survivor, backup_dir=p.backup_dir, remote_dir=p.remote_dir,
            etcd_version=next((st.version for st in statuses), ""), timeout=max(p.timeout_s, 120))
        etcd_snapshot.remove_remote(conns[survivor], snap.remote_path, sudo=sudo, timeout=p.timeout_s)
        restore_command = (f"runbooks run restore-cluster -f YOUR-PARAMS.yaml -p backup_dir {p.backup_dir} "
                           f"-p snapshot {snap_manifest.file}")
        s.detail = (f"revision {snap.status.revision}, {snap.status.total_keys} keys, {snap.local_path} "
                    f"(the survivor's copy deleted)")
    print(s.detail)
    print(f"way back: {restore_command}")

# %% [markdown]
# ## 1. Point the kubeconfig at a live control plane
# The operator's kubeconfig usually names the first control plane, the dead one. Only the `server:`
# line changes; certificates are the same (Kubespray puts every control plane in the API certificate).

# %%
# papermill_description=Kubeconfig at a survivor
live_server = f"https://{api_at[live_cp]}:6443"
if proceed:
    with steps.step("kubeconfig at a survivor") as s:
        text = p.kubeconfig.read_text()
        new_text = kubeconfig_lib.with_server(text, live_server)
        if kube.api.server_of(kube.client_from_kubeconfig(str(p.kubeconfig))) != live_server:
            p.kubeconfig.write_text(new_text)
            os.chmod(p.kubeconfig, 0o600)
            s.detail = f"server -> {live_server}"
        else:
            s.detail = f"already {live_server}"
    print(s.detail)

# %% [markdown]
# ## 2. Cordon, drain and delete the dead node
# Its pods are evicted so their controllers recreate them elsewhere; a dead kubelet never confirms, so the
# drain is bounded and does not wait for deletion. Skipped on a resumed run: in the same-IP case the node
# of that name is the replacement by then.

# %%
# papermill_description=Drain and delete the dead node
if proceed and not resumed:
    with steps.step("drain and delete node") as s:
        if kube.node(api, p.dead_node, timeout=p.timeout_s) is None:
            s.detail = f"node {p.dead_node} already deleted"
        else:
            drained = kube.drain(api, p.dead_node, timeout=p.drain_timeout_s, force=True, wait_for_deletion=False,
                                 check=False)
            kube.delete_node(api, p.dead_node, timeout=p.timeout_s)
            s.detail = f"evicted {len(drained.evicted)} pods, node {p.dead_node} deleted"
    print(s.detail)
elif proceed:
    steps.skip("drain and delete node", "resumed: done by an earlier run")

# %% [markdown]
# ## 3. Point cluster-info at a live control plane
# kube-public/cluster-info names the API server that joining nodes contact (kubeadm join): left at the dead
# node, the replacement's join fails.

# %%
# papermill_description=cluster-info at a survivor
if proceed:
    with steps.step("cluster-info") as s:
        current_info = kube.cluster_info_server(api, timeout=p.timeout_s)
        live_cp_servers = {f"https://{api_at[c]}:6443" for c in survivor_cps}
        if current_info in live_cp_servers:
            s.detail = f"already {current_info}"
        else:
            change = kube.set_cluster_info_server(api, live_server, timeout=p.timeout_s)
            s.detail = f"{change.old} -> {change.new}"
    print(s.detail)

# %% [markdown]
# ## 3b. admin.conf on the surviving control planes
# From v2.23 Kubespray writes the first control plane's address into every control plane's
# /etc/kubernetes/admin.conf (before: 127.0.0.1), and its playbooks run kubectl with that file on the
# first control plane. When the dead node was the first control plane, every such kubectl call waits out
# a connect timeout: on the lab's v2.31 stand-in, upgrade-cluster.yml took 403 s instead of about 100 s.
# Each survivor's admin.conf is pointed at its own API server (127.0.0.1 is in every API server
# certificate); Kubespray rewrites it for the new first control plane in step 7. Only the server line
# changes: the file holds a client key and is never shown.

# %%
# papermill_description=admin.conf on survivors
dead_servers = [f"https://{a}:6443" for a in dict.fromkeys(
    (dead_ip, inv.host(p.dead_node).access_ip, inv.host(p.dead_node).ansible_host)) if a
] if p.dead_node in inv.hosts else []
if proceed and not resumed:
    with steps.step("admin.conf on survivors") as s:
        moved = [kubeconfig_lib.repoint_remote(conns[c], "https://127.0.0.1:6443", away_from=dead_servers,
                                               sudo=sudo, timeout=p.timeout_s) for c in survivor_cps]
        s.detail = "; ".join(f"{m.host}: {', '.join(m.old)} -> {', '.join(m.new)}" for m in moved if m.changed) or (
            f"none names {p.dead_node}")
    print(s.detail)
elif proceed:
    steps.skip("admin.conf on survivors", "resumed: done by an earlier run")

# %% [markdown]
# ## 4. Remove the dead etcd member
# **Safety condition:** the removal keeps a healthy majority. `etcd.member_remove` checks it again against
# `endpoint health --cluster` right before removing, and refuses otherwise. Only a member that started once
# and is not healthy is removed: a member added by hand for a same-IP replacement (unstarted) or the
# replacement once joined (healthy) is left alone. Removing it first keeps Kubespray's health check
# passing, so the replacement joins the existing cluster instead of bootstrapping its own (#10560).

# %%
# papermill_description=etcd member remove
if proceed and not resumed:
    with steps.step("etcd member remove") as s:
        def removed() -> tuple[bool, str]:
            current = etcd.member_list(ctl)
            up = [h.endpoint for h in etcd.endpoint_health(ctl, cluster=True, timeout=p.timeout_s) if h.healthy]
            target = replace.stale_member(current, up, dead_ip) if dead_ip else None
            if target is None:
                return True, ""
            try:
                etcd.member_remove(ctl, member_id=target.id)
            except CommandFailed as exc:  # a leader election in progress: retried
                return False, str(exc).splitlines()[0]
            s.detail = f"removed {target.name} ({target.id_hex})"
            return True, ""

        runbook.wait_for(removed, timeout=90, interval=3, what=f"the dead etcd member of {p.dead_node} to be removed",
                         retry_on=(HostUnreachable,))
        s.detail = s.detail or "already removed"
    print(s.detail)
elif proceed:
    steps.skip("etcd member remove", "resumed: done by an earlier run")

# %% [markdown]
# ## 5. --etcd-servers on the surviving control planes
# Each API server talks only to the etcd endpoints in its `--etcd-servers`. The manifest is edited on the
# host and kubelet restarts the static pod; the wait proves the API server runs with the new list.

# %%
# papermill_description=--etcd-servers on survivors
def set_etcd_servers(servers: tuple[str, ...]) -> str:
    """--etcd-servers=SERVERS on every surviving control plane, each proven served; what changed, in words."""
    done = []
    for c in survivor_cps:
        change = controlplane.set_etcd_servers(conns[c], servers, sudo=sudo, timeout=p.timeout_s)
        if change.changed:
            controlplane.wait_for_apiserver(apis[c], change, node=c, timeout=p.ready_timeout_s)
            done.append(c)
    return f"changed on {', '.join(done)}" if done else "already right"


if proceed and not resumed:
    with steps.step("--etcd-servers") as s:
        s.detail = set_etcd_servers(wanted_servers)
    print(s.detail)
elif proceed:
    steps.skip("--etcd-servers", "resumed: done by an earlier run")

# %% [markdown]
# ## 6. The inventory without the dead host
# Survivors first (Kubespray delegates to the first host of each group), the dead host out of the
# groups: out of every play from here on. The old file is kept once, in `.inventory-backups/` beside it.

# %%
# papermill_description=Inventory without the dead host
if proceed and not resumed:
    with steps.step("inventory without dead host") as s:
        edited = inventory_lib.load(p.inventory)
        left = replace.without_dead(edited, p.dead_node, keep_in_all=True)
        if left:
            changes["inventory_backup"] = str(inventory_lib.backups.save_backup(p.inventory, "replace-control-plane",
                                                                                stamp=backup_stamp))
            edited.save(p.inventory)
        changes["inventory_removed_from"] = left
        s.detail = f"{p.dead_node} out of {', '.join(left)}" if left else "already out of the groups"
    print(s.detail)
elif proceed:
    steps.skip("inventory without dead host", "resumed: done by an earlier run")

# %% [markdown]
# ## 7. upgrade-cluster.yml over the survivors
# Rewrites /etc/etcd.env, the control-plane manifests and the workers' nginx-proxy from the inventory.
# Two etcd members is an even number: `ignore_assert_errors` lets the assert pass; drains are off. The
# check: a survivor's /etc/etcd.env still names the dead member until this has run.

# %%
# papermill_description=upgrade-cluster.yml
if proceed and not resumed:
    with steps.step("upgrade-cluster.yml") as s:
        dead_name = inv.host(p.dead_node).vars.get("etcd_member_name", "")
        initial = etcd.read_env(conns[survivor], sudo=sudo, timeout=p.timeout_s).as_dict().get("ETCD_INITIAL_CLUSTER", "")
        if etcd.peer_url(dead_ip) not in initial:
            s.detail = "survivors already refreshed"
        else:
            run = playbook("upgrade-cluster", "upgrade-cluster.yml", limit=live_hosts,
                           extra_vars={"ignore_assert_errors": "yes", "drain_nodes": False})
            s.detail = f"exit {run.rc} in {run.duration:.0f} s"
    print(s.detail)
elif proceed:
    steps.skip("upgrade-cluster.yml", "resumed: done by an earlier run")

# %% [markdown]
# ## 8. Prepare the replacement
# The prepare-nodes runbook's steps (the same library calls), each a no-op where already done.

# %%
# papermill_description=Prepare the replacement
if proceed:
    with steps.step("prepare replacement") as s:
        prepared = [nodes.ensure_python(new_conn, sudo=sudo, timeout=max(p.timeout_s, 600)),
                    nodes.ensure_ip_forward(new_conn, sudo=sudo, timeout=p.timeout_s),
                    nodes.ensure_swap_off(new_conn, sudo=sudo, timeout=p.timeout_s),
                    nodes.ensure_resolved(new_conn, sudo=sudo, timeout=p.timeout_s),
                    nodes.fix_resolv_conf(new_conn, p.upstream_dns_servers, sudo=sudo, timeout=p.timeout_s)]
        s.detail = ", ".join(c.step for c in prepared if c.changed) or "already prepared"
    print(s.detail)

# %% [markdown]
# ## 9. etcd member add by hand, where Kubespray would skip it
# Observed on the lab's stand-in: Kubespray writes the full member list into the new node's
# /etc/etcd.env and starts etcd before `member add`; when its membership check (`grep IP` without `-w`
# up to v2.22) wrongly matches, or for a same-IP re-add, the add never happens and etcd logs
# "member count is unequal" for good. Adding the member first, with the ETCD_NAME Kubespray will
# write (the inventory's `etcd_member_name`), avoids it. **Safety condition:** an added member counts in
# the quorum until it starts: with two healthy members of three, etcd keeps quorum.
#
# Observed on the lab with the v2.19 stand-in and the source article's pair of addresses (node1
# 10.213.7.5, node2 10.213.7.53, as its 185.186.142.5 and .53), node1 reinstalled with its old IP:
# - Kubespray alone (`cluster.yml --limit=etcd,kube_control_plane`, node1 appended last): the task
#   "Configure | Check if member is in etcd cluster" is ok for node1 (`grep 10.213.7.5` matched .53's
#   line), "Join Member | Add member to etcd cluster" never runs, and etcd on node1 logs "member count is
#   unequal" and keeps failing (tests/lab/test_kubespray_eras.py).
# - This runbook: the plan names the hazard, the member is added here first, and the same re-add ends
#   with three healthy members, also when the run is killed inside cluster.yml and run again
#   (tests/lab/test_runbook_replace.py).

# %%
# papermill_description=etcd member add
if proceed and add_first.needed:
    with steps.step("etcd member add") as s:
        peer = etcd.peer_url(new_ip)
        have = [m for m in etcd.member_list(ctl) if peer in {u.rstrip("/") for u in m.peer_urls}]
        if have:
            s.detail = f"already a member ({have[0].name or 'unstarted'} {have[0].id_hex})"
        else:
            added = etcd.member_add(ctl, etcd_name, peer, retry_for=60)
            s.detail = f"added {etcd_name} ({added.id_hex}) {peer}"
    print(s.detail)
elif proceed:
    steps.skip("etcd member add", "not needed: " + add_first.reason)

# %% [markdown]
# ## 10. Append the replacement to the inventory
# At the END of `kube_control_plane` and `etcd`: the first host mints etcd certificates and, without the
# CA key, a NEW etcd CA that the survivors would not trust.

# %%
# papermill_description=Inventory with the replacement
if proceed:
    with steps.step("inventory with replacement") as s:
        edited = inventory_lib.load(p.inventory)
        also = [g for g in ("kube_node",) if p.dead_node in inv.members(g) and not same_ip]
        added_to = replace.with_replacement(edited, p.replacement, new_ip, etcd_member_name=etcd_name, also=also)
        forget = not same_ip and p.dead_node in edited.hosts
        if forget:  # out of all.hosts too: a later play without --limit must not reach the dead host
            edited.remove_host(p.dead_node)
        if added_to or forget:
            if "inventory_backup" not in changes:  # a resumed run skipped step 6: keep the file it edits now
                changes["inventory_backup"] = str(inventory_lib.backups.save_backup(
                    p.inventory, "replace-control-plane", stamp=backup_stamp))
            edited.save(p.inventory)
        s.detail = (f"appended to {', '.join(added_to)}" if added_to else "already there") + (
            f"; {p.dead_node} forgotten" if forget else "")
    print(s.detail)

# %% [markdown]
# ## 11. cluster.yml --limit=etcd,kube_control_plane
# Installs etcd and the control plane on the replacement and refreshes the other members; `etcd_retries`
# gives the new member time to join. Skipped when the replacement is already a healthy member serving
# the API as a Ready node.

# %%
# papermill_description=cluster.yml --limit=etcd,kube_control_plane
new_api = kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{new_ip}:6443")


def replacement_done() -> list[str]:
    """What is still missing for the replacement to count as joined; [] when it is."""
    missing = []
    members_now = etcd.member_list(ctl)
    up = {h.endpoint.rstrip("/") for h in etcd.endpoint_health(ctl, cluster=True, timeout=p.timeout_s) if h.healthy}
    mine = [m for m in members_now if etcd.peer_url(new_ip) in m.peer_urls]
    if not mine or not mine[0].started or replace.client_url(new_ip) not in up:
        missing.append(f"etcd member {etcd_name} not started and healthy")
    if not serves(new_api):
        missing.append(f"API server on {p.replacement} not serving")
    info = kube.node(api, p.replacement, timeout=p.timeout_s)
    if info is None or not info.is_ready:
        missing.append(f"node {p.replacement} not Ready")
    return missing


if proceed:
    with steps.step("cluster.yml") as s:
        missing = replacement_done()
        if not missing:
            s.detail = "replacement already joined"
        else:
            run = playbook("cluster", "cluster.yml", limit="etcd,kube_control_plane", extra_vars={"etcd_retries": "10"})
            s.detail = f"exit {run.rc} in {run.duration:.0f} s ({'; '.join(missing)} before)"
    print(s.detail)

# %% [markdown]
# ## 11b. --etcd-servers on the surviving control planes, with the replacement
# cluster.yml writes the replacement's manifest with every member, but leaves the existing control planes'
# manifests alone (only the upgrade path rewrites them): their `--etcd-servers` gets the new member the
# same way as in step 5, in the etcd group's order.

# %%
# papermill_description=--etcd-servers with the replacement
if proceed:
    with steps.step("--etcd-servers with replacement") as s:
        s.detail = set_etcd_servers((*wanted_servers, replace.client_url(new_ip)))
    print(s.detail)

# %% [markdown]
# ## 12. Workers' nginx-proxy
# On every worker nginx-proxy balances over the control planes (127.0.0.1:6443); Kubespray refreshes it
# only on hosts in the play, so the workers run scale.yml when one lacks a control plane.

# %%
# papermill_description=Workers' nginx-proxy
if proceed and workers:
    with steps.step("workers' nginx-proxy") as s:
        cp_ips = {inv.host(c).ip or address[c] for c in survivor_cps} | {new_ip}
        stale_workers = [w for w in workers if set(replace.nginx_upstreams(conns[w], sudo=sudo)) != cp_ips]
        if stale_workers:
            run = playbook("scale", "scale.yml", limit=workers)
            s.detail = f"scale.yml on {', '.join(workers)}: exit {run.rc} in {run.duration:.0f} s"
        else:
            s.detail = "every worker balances over the current control planes"
    print(s.detail)

# %% [markdown]
# ## 13. The kubeconfig's server
# Left at the survivor unless `kubeconfig_server_after` names another (e.g. the replacement).

# %%
# papermill_description=Kubeconfig server after
if proceed and p.kubeconfig_server_after:
    with steps.step("kubeconfig server") as s:
        p.kubeconfig.write_text(kubeconfig_lib.with_server(p.kubeconfig.read_text(), p.kubeconfig_server_after))
        os.chmod(p.kubeconfig, 0o600)
        s.detail = f"server -> {p.kubeconfig_server_after}"
    print(s.detail)
elif proceed:
    steps.skip("kubeconfig server", f"left at {live_server}")

# %% [markdown]
# ## Verify
# Re-read from the cluster, bounded: three etcd members started and healthy over TLS; every control plane's
# `--etcd-servers` lists exactly the live members; cluster-info names a live control plane; every control
# plane serves the API; every node Ready; the test app answers through every node's ingress.

# %%
# papermill_description=Verify
checks: dict = {}
if proceed:
    with steps.step("verify") as s:
        final = inventory_lib.load(p.inventory)
        cps = final.control_planes
        ips = {n: h.ip or h.ansible_host for n, h in final.hosts.items()}
        vconns = {**conns, p.replacement: new_conn}

        def etcd_healthy() -> tuple[bool, str]:
            ms = etcd.member_list(ctl)
            up = [h for h in etcd.endpoint_health(ctl, cluster=True, timeout=p.timeout_s) if h.healthy]
            checks["etcd"] = {"members": sorted(m.name or "(unstarted)" for m in ms), "healthy": len(up)}
            return len(ms) == len(final.etcd_members) == len(up) and all(m.started for m in ms), str(checks["etcd"])

        runbook.wait_for(etcd_healthy, timeout=p.ready_timeout_s, interval=3, what="every etcd member started and healthy",
                         retry_on=(CommandFailed,))
        want = {replace.client_url(ips[m]) for m in final.etcd_members}
        checks["etcd_servers"] = {c: sorted(controlplane.read_etcd_servers(vconns[c], sudo=sudo)) for c in cps}
        checks["cluster_info"] = kube.cluster_info_server(api, timeout=p.timeout_s)
        cp_apis = {c: kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{final.host(c).api_address}:6443")
                   for c in cps}

        def serving() -> tuple[bool, str]:
            bad = [c for c in cps if not serves(cp_apis[c])]
            return not bad, f"not serving: {bad}"

        runbook.wait_for(serving, timeout=p.ready_timeout_s, interval=2, what="every control plane to serve the API",
                         retry_on=(HostUnreachable, CommandFailed))
        k8s = final.members("k8s_cluster")
        kube.wait_for_nodes(api, k8s, "Ready", timeout=p.ready_timeout_s, interval=3)
        answers: list = []

        def every_ingress() -> tuple[bool, list[str]]:
            answers[:] = ingress.ask_every_node({n: ips[n] for n in k8s}, p.app_host, timeout=min(5.0, p.timeout_s))
            return all(a.ok for a in answers), [f"{a.node}: {a.error or a.status}" for a in answers if not a.ok]

        runbook.wait_for(every_ingress, timeout=p.ready_timeout_s, interval=2,
                         what=f"every node's ingress to answer for {p.app_host}")
        checks["ingress"] = sorted(a.node for a in answers if a.ok)
        problems = [f"{c}: --etcd-servers {v}" for c, v in checks["etcd_servers"].items() if set(v) != want]
        if checks["cluster_info"] not in {f"https://{final.host(c).api_address}:6443" for c in cps}:
            problems.append(f"cluster-info points at {checks['cluster_info']}")
        if problems:
            raise RunbookError("verify failed: " + "; ".join(problems),
                               fix="run the runbook again (each step checks before it acts)")
        s.detail = (f"etcd {checks['etcd']['healthy']}/{len(checks['etcd']['members'])} healthy; "
                    f"{len(cps)} control planes serve; {len(k8s)} nodes Ready; ingress on {len(checks['ingress'])}")
    print(s.detail)
healthy_at = time.monotonic()

# %% [markdown]
# ## DNS: the app's name follows the change of machines
# The app's DNS round robin lists every node's ingress. Left alone it would still name the dead machine, and
# a share of new visitors would hang on it (the source article's complaint). With your DNS provider's hook
# (`dns_command`: `{name}` becomes `app_host`, a word `{ips}` every node's address) the records are set and,
# with `dns_server`, awaited; without one this is a manual step, printed here and in the summary.

# %%
# papermill_description=DNS
dns_outcome = None
if proceed:
    with steps.step("dns") as s:
        final = inventory_lib.load(p.inventory)
        dns_outcome = ingress.converge_dns(
            p.app_host, [ips[n] for n in final.members("k8s_cluster")], command=p.dns_command,  # as verified
            server=p.dns_server, gone=[dead_ip] if dead_ip and not same_ip else [], timeout=p.timeout_s,
            settle_timeout=min(60.0, p.ready_timeout_s))
        s.detail = dns_outcome.line().splitlines()[0]
    print(dns_outcome.line())

# %% [markdown]
# ## Summary
# Each step's duration and the time from the gate to a healthy cluster; written as JSON beside the output
# notebook. The shape is compared by nbval.

# %%
# NBVAL_CHECK_OUTPUT
replaced = bool(proceed and checks.get("ingress"))
verdict = (f"{p.cluster_name}: DRY RUN: nothing changed" if not proceed else
           f"{p.cluster_name}: {'REPLACED' if replaced else 'NOT PROVEN'}: {p.dead_node} -> {p.replacement}, etcd "
           f"{checks.get('etcd', {}).get('healthy', 0)} healthy, total {healthy_at - started:.0f} s")
summary = runbook.write_summary("replace-control-plane", p.cluster_name, {
    "replaced": replaced,
    "dry_run": not proceed,
    "verdict": verdict,
    "dead_node": p.dead_node,
    "replacement": p.replacement,
    "same_ip": same_ip,
    "resumed": resumed,
    "member_add_first": {"needed": add_first.needed, "reason": add_first.reason},
    "kubespray": {"version": checkout.version, "path": str(checkout.path)},
    "snapshot": snap.local_path if snap else None,
    "restore_command": restore_command,
    "playbooks": runs,
    "checks": checks,
    "inventory_backup": changes.get("inventory_backup"),
    "dns": {"name": p.app_host, "wanted": list(dns_outcome.wanted), "set_by_hook": dns_outcome.set_by_hook,
            "resolved": list(dns_outcome.resolved), "manual_step": dns_outcome.manual_step} if dns_outcome else None,
    "total_s": round(healthy_at - started, 1) if proceed else 0.0,
    "plan": plan,
}, steps=steps)
print(f"cluster: {p.cluster_name}")
print(f"replace: {p.dead_node} -> {p.replacement} ({'same IP' if same_ip else 'new machine'})")
print(f"member add first: {add_first.needed}")
display(pd.DataFrame([{"step": r.name, "status": r.status, "seconds": round(r.duration, 1), "detail": r.detail}
                      for r in steps.records]))

# %% [markdown]
# ## Verdict

# %%
# papermill_description=Verdict
for conn in [*conns.values(), new_conn]:
    conn.close()
print(verdict)
if dns_outcome is not None and dns_outcome.manual_step:
    print(f"MANUAL STEP: {dns_outcome.manual_step}")
if proceed and not replaced:
    raise RunbookError(verdict, fix="each step above names what is missing; run the runbook again")

# %% [markdown]
# ## Rollback (never runs by default)
# The dead member's removal cannot be undone (its data is gone); the snapshot taken first is the way
# back: the restore-from-snapshot runbook rebuilds etcd from it (`restore_command` in the summary names
# it). The inventory's previous version is kept in `.inventory-backups/` beside it (named in the summary).

# %% tags=["skip-execution", "nbval-skip"]
print(f"inventory before: {changes.get('inventory_backup') or inventory_lib.backups.latest(p.inventory, 'replace-control-plane')}; "
      f"snapshot: {snap.local_path if snap else None}; restore it with: {restore_command}")
