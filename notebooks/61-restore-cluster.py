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
#     description: Restore etcd from a verified snapshot when quorum is lost, then let
#       Kubespray rebuild the reinstalled members and control planes
#     destructive: true
#     schema: runbooks_lib.schemas:RestoreParams
# ---

# %% [markdown]
# # Restore the cluster from an etcd snapshot (quorum lost)
#
# **The symptom.** A majority of the etcd members is gone (two of three machines died or were
# reinstalled): etcd refuses every write and the Kubernetes API is down (`etcdserver: request timed out`,
# `context deadline exceeded`). No replace procedure can help: a member can only be removed or added with
# quorum. Only a restore can.
#
# **What is lost: every change made after the snapshot.** Objects created, changed or deleted since then
# are back as they were in the snapshot; a Deployment scaled since then is scaled back. Run the
# etcd-snapshot runbook often (README: nightly timer) so that this is little.
#
# **What it does.** Proves quorum is really lost (it refuses while a majority is healthy: use the
# replace-control-plane runbook then), picks the snapshot (the newest verified one by default) and checks
# its sha256 and manifest. Then, in the order Kubernetes' documentation for operating etcd gives: stops
# every API server (with kube-controller-manager and kube-scheduler: their manifests moved out of kubelet's
# directory); on the member(s) that survived stops etcd, keeps the old data directory aside (never
# deleted), restores the snapshot as a NEW cluster of the survivors (new initial cluster, new cluster
# token), writes /etc/etcd.env to match and starts etcd; starts the API servers again (fresh caches) and
# restarts every kubelet, and proves the API serves what etcd now holds; prepares the reinstalled machines (python3, ip_forward, swap) and runs Kubespray's
# `cluster.yml --limit=etcd,kube_control_plane -e etcd_retries=10`, which joins them as new members and
# rebuilds their control plane. Then it proves the result: every etcd member healthy, the snapshot's
# objects served by the API, every node Ready, the test app answering.
#
# **Why restore on the survivors only, and let Kubespray join the others.** A reinstalled machine has no
# etcd binary, no certificates and no /etc/etcd.env until Kubespray installs them; Kubespray generates the
# certificates on the first etcd host, from its CA key, which only a survivor still has. So the survivors
# are restored (they have everything), and the reinstalled machines join the healthy restored cluster the
# way Kubespray adds any member (`member add`, then start with state `existing`). Restoring on every member
# first would need Kubespray to run on a cluster without etcd, which it cannot (its health check fails and
# it bootstraps separate clusters). A dead or new host is never first in the etcd group (Kubespray would
# mint a new CA there), and no unreachable host is put in a play (upstream's ConnectionAttempts=100 would
# hang it for many minutes).
#
# **Blast radius: the whole cluster.** etcd is rebuilt from the snapshot. The default is a dry run that
# stops after the plan. Run it for real with `dry_run=False` and `confirm=<cluster name>`.
#
# **If it fails or is interrupted.** Every step checks before it acts: run the runbook again with the same
# parameters and it continues where it stopped (a marker on each restored member records the snapshot it
# was restored from). Old data directories are at `/var/lib/etcd.before-restore-STAMP` on each survivor.

# %%
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from IPython.display import display

from runbooks_lib import ansible_check, controlplane_pods, etcd, etcd_restore, etcd_snapshot, ingress, kube, kubespray
from runbooks_lib import nodes, runbook, schemas, ssh
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
cluster_name: str = ""  # required: the cluster's name: the confirmation token and runs/CLUSTER/
inventory: Path = ""  # required: Kubespray inventory
kubespray_dir: Path = ""  # required: Kubespray checkout (run from there)
ansible_playbook: Path = ""  # the Kubespray checkout's ansible-playbook; empty: KUBESPRAY_DIR/venv/bin/ansible-playbook, else on PATH
kubeconfig: Path = ""  # required: admin kubeconfig
ssh_user: str = "root"  # SSH user on the machines
ssh_key: Path = ""  # required: path of the SSH private key
known_hosts: Path = ""  # required: pinned host keys (reinstalled machines: pin their new keys first)
hosts: dict[str, str] = {}  # for the install runbook (this one reads the inventory)
control_planes: list[str] = []  # for the install runbook (this one reads the inventory)
etcd_members: list[str] = []  # for the install runbook (this one reads the inventory)
workers: list[str] = []  # for the install runbook (this one reads the inventory)
backup_dir: Path = ""  # required: where the etcd-snapshot runbook keeps snapshots
snapshot: str = ""  # snapshot file name in backup_dir; empty: the newest verified snapshot of this cluster
app_name: str = "sticky-session"  # the test app that must be served again (Deployment and Ingress)
app_namespace: str = "default"  # namespace of the test app
app_host: str = ""  # required: the app's host name (Ingress rule)
ansible_env: dict[str, str] = {}  # extra environment for ansible-playbook
dry_run: bool = True  # stop after the plan
confirm: str = ""  # headless confirmation: the cluster name
playbook_timeout_s: float = 5400.0  # bound of each playbook, seconds
ready_timeout_s: float = 300.0  # bound of each wait (etcd healthy, API back, nodes Ready), seconds
timeout_s: float = 60.0  # bound of each remote command, seconds

# %% [markdown]
# ## Validate
# Types, unknown keys and values are checked against `runbooks_lib.schemas.RestoreParams` before
# anything is contacted.

# %%
p = schemas.check_restore(schemas.from_namespace(schemas.RestoreParams, globals()))
sudo = p.ssh_user != "root"
steps = runbook.Steps()
print(f"target {p.cluster_name}: inventory {p.inventory}, snapshots in {p.backup_dir}")

# %% [markdown]
# ## Preflight: the snapshot
# Read-only. The snapshot (the newest whose manifest says verified and whose restore drill passed, unless
# one is named) must exist, be of this cluster, and have the sha256 its manifest records: a corrupted or
# foreign snapshot is refused before the cluster is contacted.

# %%
# papermill_description=Preflight: snapshot
for what, path in [("inventory", p.inventory), ("known_hosts", p.known_hosts), ("SSH key", p.ssh_key),
                   ("kubeconfig", p.kubeconfig)]:
    if not path.is_file():
        raise PreconditionFailed(f"the {what} {path} does not exist; nothing was changed",
                                 fix=f"check the {what} parameter")
if p.snapshot:
    manifest = etcd_snapshot.read_manifest(etcd_snapshot.manifest_path(p.backup_dir / p.snapshot))
else:
    proven = [m for m in etcd_snapshot.backups(p.backup_dir, p.cluster_name)
              if m.verified and m.drill.get("ok", False)]
    if not proven:
        raise PreconditionFailed(f"no verified snapshot of {p.cluster_name} with a passing drill in {p.backup_dir}",
                                 fix="name one with the snapshot parameter, or check backup_dir")
    manifest = proven[-1]
if manifest.cluster != p.cluster_name:
    raise PreconditionFailed(f"{manifest.file} is a snapshot of {manifest.cluster}, not {p.cluster_name}",
                             fix="pick a snapshot of this cluster")
snapshot_path = etcd_snapshot.check_backup(p.backup_dir, manifest)
age = datetime.now(timezone.utc) - manifest.taken
print(f"snapshot {snapshot_path}: taken {manifest.time} on {manifest.member} ({age.days} d "
      f"{age.seconds // 3600} h ago), revision {manifest.revision}, {manifest.keys} keys, sha256 matches; "
      f"drill {'passed' if manifest.drill.get('ok') else 'not run'}")

# %% [markdown]
# ## Preflight: is quorum really lost?
# Each etcd host of the inventory is asked over SSH (host keys checked against `known_hosts`): does it
# answer, is etcd installed (env file, certificates, binary), does its own endpoint answer a quorum read?
# Survivors are the hosts with etcd installed; reinstalled machines are the reachable ones without it.
# **While a majority of members is healthy a real run is refused**: replacing the lost members keeps
# every change, a restore loses those since the snapshot. A dry run shows the refusal and the plan
# without failing. A marker of this same snapshot on a survivor means an earlier run got that far: the run
# resumes with the members that run restored (its marker's initial cluster); a host Kubespray has joined
# since is never restored again (that would split the cluster), only handed to Kubespray once more.

# %%
# papermill_description=Preflight: quorum
ansible = ansible_check.check(p.ansible_playbook, p.kubespray_dir)
print(ansible.line())
inv = inventory_lib.Inventory.load(p.inventory)
etcd_hosts = inv.members("etcd")
control_plane_hosts = inv.members("kube_control_plane")
k8s_nodes = inv.members("k8s_cluster")
address = {name: inv.host(name).address for name in inv.hosts}
conns = {name: ssh.Connection(ssh.Host(name, address[name], user=p.ssh_user, key_path=str(p.ssh_key),
                                       known_hosts=str(p.known_hosts)), connect_timeout=min(10.0, p.timeout_s))
         for name in inv.hosts}
states = {h: etcd_restore.member_state(conns[h], h, sudo=sudo, timeout=min(30.0, p.timeout_s)) for h in etcd_hosts}
decision = etcd_restore.decide(etcd_hosts, control_plane_hosts, states, manifest.sha256)
display(pd.DataFrame([{"etcd host": h, "address": address[h], "reachable": s.reachable, "etcd installed": s.installed,
                       "healthy": s.healthy, "version": s.version, "member name": s.name,
                       "restored from": (s.marker or {}).get("snapshot", ""),
                       "role": "survivor" if h in decision.survivors else "unreachable" if not s.reachable
                       else "joined since (left to Kubespray)" if s.installed else "reinstalled"}
                      for h, s in states.items()]))
print(f"healthy {decision.healthy} of {len(etcd_hosts)}, quorum {decision.quorum}"
      + ("; resuming a restore of this snapshot" if decision.resuming else ""))
if decision.refuse and not p.dry_run:
    raise PreconditionFailed(f"refusing to restore: {decision.refuse}. Nothing was changed.", fix=decision.fix)
elif decision.refuse:
    print(f"A REAL RUN WOULD BE REFUSED: {decision.refuse}\n  next step: {decision.fix}")

# %% [markdown]
# ## Preflight: can every API server be stopped?
# A kube-apiserver serves lists and watches from a cache it keeps at etcd's revision. A restore takes
# etcd's revision backwards: an API server left running serves objects that no longer exist and its
# watchers (kube-controller-manager, kube-scheduler, every kubelet) never see the restored state. So
# every API server is stopped before etcd is touched. Each surviving control plane (a reinstalled one runs
# none) must answer SSH and have its kube-apiserver manifest in kubelet's directory (or moved aside by an
# earlier run of this restore); otherwise the run is refused here, with nothing changed.

# %%
# papermill_description=Preflight: API servers
surviving_cps = [h for h in control_plane_hosts if h not in decision.rebuilt]
kubelet_nodes = [n for n in k8s_nodes if n not in decision.rebuilt]
places: dict = {}
unstoppable: list[str] = []
for h in surviving_cps:
    try:
        places[h] = controlplane_pods.manifest_places(conns[h], sudo=sudo, timeout=min(30.0, p.timeout_s))
    except RunbookError as exc:
        unstoppable.append(f"{h} does not answer ({str(exc).splitlines()[0]})")
        continue
    if not places[h].apiserver_known:
        unstoppable.append(f"{h} has no {controlplane_pods.APISERVER} in {controlplane_pods.MANIFEST_DIR} (nor aside)")
if unstoppable:
    raise PreconditionFailed("refusing to restore: an API server that cannot be stopped would go on serving the "
                             f"old state: {'; '.join(unstoppable)}. Nothing was changed.",
                             fix="bring that control plane back, or put its manifest back, then run again")
display(pd.DataFrame([{"control plane": h, "in kubelet's directory": ", ".join(pl.in_place) or "-",
                       "moved aside": ", ".join(pl.aside) or "-"} for h, pl in places.items()]))

# %% [markdown]
# ## Plan
# The members to rebuild and where, the steps, and what is lost. Compared by nbval.

# %%
# NBVAL_CHECK_OUTPUT
checkout = kubespray.detect(p.kubespray_dir)
versions = {h: states[h].version for h in decision.survivors}
new_cluster = decision.restored_cluster or etcd_restore.initial_cluster(states, decision.survivors)
token = etcd_restore.new_token(manifest.sha256)
cluster_cmd = kubespray.command(checkout, "cluster", inventory=p.inventory, known_hosts=p.known_hosts,
                                ansible_playbook=ansible.path, limit="etcd,kube_control_plane",
                                extra_vars={"etcd_retries": 10})
plan = [
    f"refused for a real run: {decision.refuse}" if decision.refuse else "quorum is lost: restore",
    f"restore on the survivors: {', '.join(decision.survivors) or 'none'}",
    f"rebuild with Kubespray: {', '.join(decision.rebuilt) or 'none'}",
    f"stop every API server, kube-controller-manager and kube-scheduler on {', '.join(surviving_cps) or 'none'}: "
    f"mv {controlplane_pods.MANIFEST_DIR}/kube-{{apiserver,controller-manager,scheduler}}.yaml "
    f"{controlplane_pods.ASIDE_DIR}/ (kubelet stops the pods); wait until :6443 is closed",
    "stop etcd on the survivors (systemctl stop etcd); move /var/lib/etcd to /var/lib/etcd.before-restore-STAMP (kept)",
    "restore the snapshot as a new cluster of the survivors with a new cluster token (etcdutl snapshot restore); "
    "write /etc/etcd.env; systemctl start etcd",
    "check: etcd holds the snapshot's keys (etcdctl get '' --prefix --keys-only: the manifest's count)",
    f"start the API servers: the manifests back into {controlplane_pods.MANIFEST_DIR} (kubelet starts them with "
    "empty caches); wait until each answers",
    f"restart kubelet on {', '.join(kubelet_nodes) or 'none'} (systemctl restart kubelet)",
    "check: the API serves what etcd holds (kubectl get configmaps,deployments -A against etcdctl get --prefix)",
    "prepare the reinstalled machines (python3, ip_forward, swap), then Kubespray:",
    "  facts.yml, then cluster.yml --limit=etcd,kube_control_plane -e etcd_retries=10",
    "verify: every etcd member healthy, the app's Deployment served, nodes Ready, the app answers",
    "lost: every change made after the snapshot was taken",
]
print("\n".join(plan))

# %% [markdown]
# The figures of this plan (not compared by nbval: they change with the snapshot and the cluster's state).

# %%
details = [f"snapshot {manifest.file}: taken {manifest.time}, revision {manifest.revision}",
           f"new initial cluster: {new_cluster or '-'}; token {token}",
           f"etcd versions: {', '.join(f'{h} {v}' for h, v in versions.items()) or '-'}",
           f"$ {' '.join(cluster_cmd.argv)}  (in {cluster_cmd.cwd})"]
print("\n".join(details))

# %% [markdown]
# ## Confirmation gate
# Nothing has changed so far. A dry run stops here; a headless run passes only with `confirm` equal to the
# cluster name.

# %%
proceed = (not decision.refuse) and runbook.confirm(
    "restore etcd from a snapshot (every change after it is lost)", cluster=p.cluster_name, dry_run=p.dry_run,
    confirm=p.confirm or None, plan=plan + details, lock=p.inventory)
stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
done = {h: (states[h].marker or {}).get("sha256") == manifest.sha256 for h in decision.survivors}
remote_snapshot = f"{etcd_restore.WORK_DIR}/{manifest.file}"

# %% [markdown]
# ## Stop every API server
# **From here the Kubernetes API is down until the API servers start again below.** The control-plane
# manifests are moved out of kubelet's directory into `/etc/kubernetes/manifests.restore-aside/` (0700,
# kept until moved back); kubelet stops those static pods. This waits (bounded) until no surviving control
# plane accepts connections on port 6443.

# %%
# papermill_description=Stop the API servers
if proceed:
    with steps.step("stop API servers") as s:
        moved = {h: controlplane_pods.move_aside(conns[h], sudo=sudo, timeout=p.timeout_s) for h in surviving_cps}

        def apis_stopped() -> tuple[bool, list[str]]:
            running = [f"{h} still accepts on {inv.host(h).api_address}:6443" for h in surviving_cps
                       if controlplane_pods.apiserver_listening(inv.host(h).api_address)]
            return not running, running

        runbook.wait_for(apis_stopped, timeout=p.ready_timeout_s, interval=2,
                         what="kubelet to stop every API server", fix="check kubelet on the control planes")
        s.detail = "; ".join(f"{h}: {', '.join(m) or 'already aside'}" for h, m in moved.items()) or "none"
    print(f"moved aside: {s.detail}; no API server answers")
else:
    steps.skip("stop API servers", "dry run or refused")

# %% [markdown]
# ## Stop etcd on the survivors
# A survivor's etcd must not run while its data directory is replaced. A survivor already restored from
# this snapshot (its marker says so) is left running.

# %%
# papermill_description=Stop etcd
if proceed:
    with steps.step("stop etcd") as s:
        for h in decision.survivors:
            if not done[h]:
                ssh.run(conns[h], ["systemctl", "stop", "etcd"], timeout=p.timeout_s, sudo=sudo)
        s.detail = ", ".join(f"{h}: {'already restored' if done[h] else 'stopped'}" for h in decision.survivors)
    print(s.detail)
else:
    steps.skip("stop etcd", "dry run or refused")

# %% [markdown]
# ## Upload the snapshot to the survivors
# Into `/var/lib/etcd-restore/` (0700), skipped when a file with the same sha256 is there; its sha256 is
# checked on the member after the copy.

# %%
# papermill_description=Upload the snapshot
if proceed:
    with steps.step("upload snapshot") as s:
        for h in decision.survivors:
            if done[h]:
                continue
            ssh.run(conns[h], ["mkdir", "-p", "-m", "700", etcd_restore.WORK_DIR], timeout=p.timeout_s, sudo=sudo)
            present = ssh.run(conns[h], ["test", "-f", remote_snapshot], timeout=p.timeout_s, check=False).ok
            if not present or etcd.remote_sha256(conns[h], remote_snapshot, sudo=sudo) != manifest.sha256:
                ssh.put(conns[h], snapshot_path, remote_snapshot, timeout=p.playbook_timeout_s)
            if etcd.remote_sha256(conns[h], remote_snapshot, sudo=sudo) != manifest.sha256:
                raise RunbookError(f"the snapshot copied to {h} has the wrong sha256", host=h,
                                   fix="check the disk space on the member and run again")
        s.detail = f"{remote_snapshot} on {', '.join(h for h in decision.survivors if not done[h]) or 'none'}"
    print(s.detail)

# %% [markdown]
# ## Keep the old data directories aside, and restore
# **Safety:** etcd is stopped on the survivor, and the old data directory is MOVED, never deleted
# (`/var/lib/etcd.before-restore-STAMP`). The restore writes a staging directory and renames it into
# place, so an interruption never leaves a half-restored data directory; the marker is written last.

# %%
# papermill_description=Set aside and restore
kept_aside: dict[str, str] = {}
if proceed:
    with steps.step("restore") as s:
        for h in decision.survivors:
            if done[h]:
                continue
            kept_aside[h] = etcd_restore.set_aside(conns[h], stamp, sudo=sudo, timeout=p.timeout_s)
            etcd_restore.restore_member(conns[h], versions[h], remote_snapshot, name=states[h].name,
                                        peer_url=states[h].peer_url, initial_cluster=new_cluster, token=token,
                                        sudo=sudo, timeout=p.playbook_timeout_s)
            for key, value in (("ETCD_INITIAL_CLUSTER", new_cluster), ("ETCD_INITIAL_CLUSTER_STATE", "new"),
                               ("ETCD_INITIAL_CLUSTER_TOKEN", token)):
                etcd.set_env(conns[h], key, value, sudo=sudo, timeout=p.timeout_s)
            etcd_restore.write_marker(conns[h], {"sha256": manifest.sha256, "snapshot": manifest.file,
                                                 "revision": manifest.revision, "token": token,
                                                 "initial_cluster": new_cluster, "kept_aside": kept_aside[h],
                                                 "at": stamp}, sudo=sudo)
        s.detail = ", ".join(f"{h}: old data at {d or '(none)'}" for h, d in kept_aside.items()) or "already restored"
    print(s.detail)

# %% [markdown]
# ## Start etcd and wait for health
# The survivors start as the new cluster; each one's own endpoint must answer a quorum read.

# %%
# papermill_description=Start etcd
if proceed:
    with steps.step("start etcd") as s:
        for h in decision.survivors:
            ssh.run(conns[h], ["systemctl", "start", "etcd"], timeout=p.timeout_s, sudo=sudo)
        ctls = {h: etcd.Etcdctl(conns[h], member=h, sudo=sudo, timeout=min(30.0, p.timeout_s))
                for h in decision.survivors}

        def survivors_healthy() -> tuple[bool, list[str]]:
            sick = [h for h, c in ctls.items() if not any(x.healthy for x in etcd.endpoint_health(c))]
            return not sick, sick

        runbook.wait_for(survivors_healthy, timeout=p.ready_timeout_s, interval=2,
                         what="etcd on the survivors to be healthy")
        restored_members = etcd.member_list(ctls[decision.survivors[0]])
        # Nothing writes to etcd while the API servers are stopped: it must hold exactly the snapshot's keys.
        held = etcd.key_count(ctls[decision.survivors[0]], timeout=p.timeout_s)
        if any(not done[h] for h in decision.survivors) and held != manifest.keys:
            raise RunbookError(f"etcd holds {held} keys after the restore, the snapshot {manifest.keys}",
                               fix="do not start the API servers: check the restore on the survivors by hand")
        s.detail = (f"{len(restored_members)} member(s): {', '.join(m.name for m in restored_members)}; "
                    f"{held} keys (snapshot: {manifest.keys})")
    print(s.detail)

# %% [markdown]
# ## Start the API servers again, restart every kubelet
# The manifests go back into kubelet's directory (a file Kubespray wrote there since is never
# overwritten); kubelet starts kube-apiserver, kube-controller-manager and kube-scheduler afresh, with
# empty caches filled from the restored etcd. This waits (bounded) until each surviving control plane's
# API server answers, then restarts kubelet on every node that was not reinstalled, so that no kubelet
# acts on what it saw before the restore (a node that does not answer is named; restart its kubelet when
# it is back). Last, the proof that no API server serves a stale cache: what the API lists equals what etcd
# holds, for ConfigMaps and Deployments.

# %%
# papermill_description=Start the API servers
kubelets: dict[str, str] = {}
served: dict = {}
if proceed:
    with steps.step("start API servers") as s:
        back = {h: controlplane_pods.move_back(conns[h], sudo=sudo, timeout=p.timeout_s) for h in surviving_cps}

        def apis_answer() -> tuple[bool, list[str]]:
            pending = []
            for h in surviving_cps:
                try:
                    kube.nodes(kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{inv.host(h).api_address}:6443"),
                               timeout=min(10.0, p.timeout_s))
                except RunbookError as exc:
                    pending.append(f"{h}: {str(exc).splitlines()[0]}")
            return not pending, pending

        runbook.wait_for(apis_answer, timeout=p.ready_timeout_s, interval=2, what="the API servers to answer")
        for n in kubelet_nodes:
            try:
                ssh.run(conns[n], ["systemctl", "restart", "kubelet"], timeout=p.timeout_s, sudo=sudo)
                kubelets[n] = "restarted"
            except RunbookError as exc:
                kubelets[n] = f"NOT restarted: {str(exc).splitlines()[0]}"
        s.detail = (f"manifests back: {'; '.join(f'{h}: {len(m)}' for h, m in back.items()) or 'none'}; answering: "
                    f"{', '.join(surviving_cps)}; kubelet: " + ", ".join(f"{n} {v}" for n, v in kubelets.items()))
    print(s.detail)
    with steps.step("API serves etcd") as s:
        api = kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{inv.host(surviving_cps[0]).api_address}:6443")
        ctl = etcd.Etcdctl(conns[decision.survivors[0]], member=decision.survivors[0], sudo=sudo,
                           timeout=min(30.0, p.timeout_s))
        kinds = {"configmaps": "/api/v1/configmaps", "deployments": "/apis/apps/v1/deployments"}

        def api_equals_etcd() -> tuple[bool, list[str]]:
            differ = []
            for kind, path in kinds.items():
                listed = len((kube.api.get(api, path, timeout=min(10.0, p.timeout_s)) or {}).get("items") or [])
                stored = etcd.key_count(ctl, f"/registry/{kind}/", timeout=p.timeout_s)
                served[kind] = {"api": listed, "etcd": stored}
                if listed != stored:
                    differ.append(f"{kind}: the API lists {listed}, etcd holds {stored}")
            return not differ, differ

        runbook.wait_for(api_equals_etcd, timeout=p.ready_timeout_s, interval=2, retry_on=(RunbookError,),
                         what="the API to serve what etcd holds",
                         fix="an API server serves a stale cache: restart every API server (manifests out and back)")
        s.detail = ", ".join(f"{k}: {v['api']} listed = {v['etcd']} in etcd" for k, v in served.items())
    print(s.detail)
    if any(v != "restarted" for v in kubelets.values()):
        print("NOTE: " + "; ".join(f"{n}: {v}" for n, v in kubelets.items() if v != "restarted"))

# %% [markdown]
# ## Prepare the reinstalled machines
# What the prepare-nodes runbook does first on a new machine, each step a no-op when already done:
# python3 for Ansible, IPv4 forwarding, swap off.

# %%
# papermill_description=Prepare reinstalled machines
prepared: list = []
if proceed:
    with steps.step("prepare") as s:
        for h in decision.rebuilt:
            prepared += [nodes.ensure_python(conns[h], sudo=sudo, timeout=max(p.timeout_s, 600)),
                         nodes.ensure_ip_forward(conns[h], sudo=sudo, timeout=p.timeout_s),
                         nodes.ensure_swap_off(conns[h], sudo=sudo, timeout=p.timeout_s)]
        s.detail = f"{sum(c.changed for c in prepared)} change(s) on {', '.join(decision.rebuilt) or 'none'}"
    print(s.detail)

# %% [markdown]
# ## Kubespray: join the reinstalled machines and rebuild their control plane
# facts.yml first (`--limit` needs every host's facts in the checkout's cache), then
# `cluster.yml --limit=etcd,kube_control_plane -e etcd_retries=10`: Kubespray finds the restored cluster
# healthy on the first etcd host, issues certificates for the new machines from the surviving CA,
# `member add`s them one at a time and starts them with state `existing`, then installs their control
# plane. Skipped when every etcd member is already started and healthy and every node is Ready (a re-run).
# Every host in these plays answered SSH in the preflight.

# %%
# papermill_description=Kubespray: facts.yml
runs: list = []


def cluster_complete() -> tuple[bool, str]:
    ctl = etcd.Etcdctl(conns[decision.survivors[0]], member=decision.survivors[0], sudo=sudo,
                       timeout=min(30.0, p.timeout_s))
    members = etcd.member_list(ctl)
    health = etcd.endpoint_health(ctl, cluster=True)
    api = kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{inv.host(surviving_cps[0]).api_address}:6443")
    ready = sorted(n.name for n in kube.nodes(api, timeout=min(10.0, p.timeout_s)) if n.is_ready)
    complete = (len([m for m in members if m.started]) == len(etcd_hosts) and sum(x.healthy for x in health)
                == len(etcd_hosts) and ready == sorted(k8s_nodes))
    return complete, f"{len(members)} members, {sum(x.healthy for x in health)} healthy, {len(ready)} nodes Ready"


def run_playbook(name: str, limit: str | None = None, extra: dict | None = None) -> None:
    """One Kubespray playbook (its own cell: a cell's timeout covers one playbook), its log beside the record."""
    output_record = os.environ.get("PAPERMILL_OUTPUT_PATH")
    cmd = kubespray.command(checkout, name, inventory=p.inventory, known_hosts=p.known_hosts,
                            ansible_playbook=ansible.path, limit=limit, extra_vars=extra)
    log_path = (Path(output_record).with_name(Path(output_record).stem + f".{name}.yml.log")
                if output_record else None)
    print(f"$ {' '.join(cmd.argv)}", flush=True)
    runs.append(kubespray.run(cmd, timeout=p.playbook_timeout_s, log_path=log_path, env=p.ansible_env,
                              on_line=lambda line: print(f"    {line}", flush=True)
                              if line.startswith(("PLAY RECAP", "fatal:")) or " : ok=" in line else None))


complete, state = cluster_complete() if proceed else (True, "not run")
if proceed and not complete:
    run_playbook("facts")

# %%
# papermill_description=Kubespray: cluster.yml
if proceed:
    with steps.step("kubespray") as s:
        if complete:
            s.detail = f"nothing to do: {state}"
        else:
            run_playbook("cluster", "etcd,kube_control_plane", {"etcd_retries": 10})
            s.detail = ", ".join(f"{Path(r.command.playbook).name}: exit {r.rc} in {r.duration:.0f} s" for r in runs)
    print(s.detail)

# %% [markdown]
# ## Verify
# Every etcd member of the inventory started and healthy; the API serves the snapshot's objects (the test
# app's Deployment); every node Ready; the test app answers through every node's ingress.

# %%
# papermill_description=Verify
members: list = []
health: list = []
node_list: list = []
answers: list = []
deployment = None
if proceed:
    with steps.step("verify") as s:
        ctl = etcd.Etcdctl(conns[decision.survivors[0]], member=decision.survivors[0], sudo=sudo,
                           timeout=min(30.0, p.timeout_s))

        def etcd_whole() -> tuple[bool, str]:
            members[:] = etcd.member_list(ctl)
            health[:] = etcd.endpoint_health(ctl, cluster=True)
            ok = len(members) == len(etcd_hosts) and all(m.started for m in members) and \
                sum(x.healthy for x in health) == len(etcd_hosts)
            return ok, f"{len(members)} members, {sum(x.healthy for x in health)} healthy"

        runbook.wait_for(etcd_whole, timeout=p.ready_timeout_s, interval=2, what="every etcd member healthy")
        api = kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{inv.host(surviving_cps[0]).api_address}:6443")
        deployment = kube.api.get(api, f"/apis/apps/v1/namespaces/{p.app_namespace}/deployments/{p.app_name}",
                                  timeout=min(10.0, p.timeout_s))
        if deployment is None:
            raise RunbookError(f"the snapshot's Deployment {p.app_namespace}/{p.app_name} is not served",
                               fix="check the snapshot with the etcd-snapshot runbook's drill")
        node_list = [n for n in kube.wait_for_nodes(api, k8s_nodes, timeout=p.ready_timeout_s).values() if n]
        ingress_nodes = {n: address[n] for n in k8s_nodes}

        def app_answers() -> tuple[bool, list[str]]:
            answers[:] = ingress.ask_every_node(ingress_nodes, p.app_host, timeout=min(5.0, p.timeout_s))
            return all(a.ok for a in answers), [f"{a.node}: {a.error or a.status}" for a in answers if not a.ok]

        runbook.wait_for(app_answers, timeout=p.ready_timeout_s, interval=2,
                         what=f"every node's ingress to answer for {p.app_host}")
        s.detail = (f"etcd {len(members)} members healthy; {sum(n.is_ready for n in node_list)}/{len(k8s_nodes)} "
                    f"nodes Ready; app on {sum(a.ok for a in answers)}/{len(answers)} nodes")
    print(s.detail)
    display(pd.DataFrame([{"member": m.name, "peer": ",".join(m.peer_urls), "started": m.started} for m in members]))

# %% [markdown]
# ## Summary
# Compared by nbval (stable text) and written as JSON beside the output notebook.

# %%
# NBVAL_CHECK_OUTPUT
healthy_members = sum(x.healthy for x in health)
ready = sorted(n.name for n in node_list if n.is_ready)
restored = bool(proceed and healthy_members == len(etcd_hosts) == len(members) and deployment is not None
                and ready == sorted(k8s_nodes) and answers and all(a.ok for a in answers))
verdict = (f"{p.cluster_name}: REFUSED for a real run: {decision.refuse}" if decision.refuse else
           f"{p.cluster_name}: DRY RUN: nothing changed" if not proceed else
           f"{p.cluster_name}: {'RESTORED' if restored else 'NOT PROVEN'} from {manifest.file}: etcd "
           f"{healthy_members}/{len(etcd_hosts)} healthy, {len(ready)}/{len(k8s_nodes)} nodes Ready, app on "
           f"{sum(a.ok for a in answers)}/{len(answers)} nodes")
summary = runbook.write_summary("restore-cluster", p.cluster_name, {
    "restored": restored,
    "dry_run": not proceed,
    "refused": decision.refuse,
    "verdict": verdict,
    "snapshot": {"file": manifest.file, "time": manifest.time, "revision": manifest.revision, "keys": manifest.keys,
                 "sha256": manifest.sha256},
    "survivors": list(decision.survivors),
    "rebuilt": list(decision.rebuilt),
    "resumed": decision.resuming,
    "kept_aside": kept_aside,
    "api_servers": {"stopped_and_started": surviving_cps if proceed else [], "kubelets": kubelets,
                    "api_vs_etcd": served},
    "playbooks": [{"playbook": Path(r.command.playbook).name, "rc": r.rc, "duration_s": round(r.duration, 1)}
                  for r in runs],
    "etcd": {"members": sorted(m.name for m in members), "healthy": healthy_members},
    "nodes_ready": ready,
    "app_answering_on": sorted(a.node for a in answers if a.ok),
}, steps=steps)
print(f"cluster: {p.cluster_name}")
print(f"etcd hosts: {', '.join(etcd_hosts)}")
print(f"lost: every change after the snapshot")

# %% [markdown]
# ## Verdict

# %%
# papermill_description=Verdict
for conn in conns.values():
    conn.close()
print(verdict)
if proceed and not restored:
    raise RunbookError(verdict, fix="each verify step above names what is missing")

# %% [markdown]
# ## Rollback (never runs by default)
# Only before Kubespray has joined the reinstalled machines: on each survivor stop etcd, move the restored
# `/var/lib/etcd` away, move `/var/lib/etcd.before-restore-STAMP` back, restore /etc/etcd.env's
# ETCD_INITIAL_* values and start etcd. That brings back the old, quorum-less member, nothing more.

# %% tags=["skip-execution", "nbval-skip"]
for h in decision.survivors:
    print(f"{h}: systemctl stop etcd; mv /var/lib/etcd /var/lib/etcd.restored-{stamp}; "
          f"mv {kept_aside.get(h) or '/var/lib/etcd.before-restore-STAMP'} /var/lib/etcd; systemctl start etcd")
