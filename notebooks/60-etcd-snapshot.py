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
#     description: Save an etcd snapshot, verify and download it, prune old ones, and
#       prove it restores (a scratch etcd on this machine)
#     destructive: false
#     schema: runbooks_lib.schemas:SnapshotParams
# ---

# %% [markdown]
# # etcd snapshot: saved, verified, downloaded, and proven to restore
#
# **What it does.** Saves a snapshot of etcd (every Kubernetes object, Secrets included) on one healthy
# member, reads its hash, revision, key count and size (`snapshot status`), downloads it into a local
# backup directory (mode 0600, sha256 compared at both ends, a JSON manifest beside it), deletes the
# member's copy, prunes old snapshots (keep the last N and/or D days; the newest verified one is never
# deleted), and then runs a **restore drill**: the downloaded file is restored into a scratch etcd on this
# machine (loopback only, a temporary directory), started, and must hold the snapshot's revision and key
# count, the cluster's Nodes, `kube-public/cluster-info` and the test app's Deployment. A snapshot that has
# never been restored is a hope, not a backup.
#
# **Blast radius: none on the cluster.** `etcdctl snapshot save` reads the database on one member (chosen
# healthy and, when there is a choice, not the leader: streaming the whole database costs the leader time
# it needs for replication); the member's temporary copy is deleted. On this machine: files in
# `backup_dir`, and a scratch etcd on 127.0.0.1 that is removed afterwards. Safe on a timer (README:
# nightly systemd timer).
#
# **How long.** A few seconds on the lab; on a real cluster about the time to copy the database twice
# (etcd's default quota is 2 GiB).
#
# **If it fails.** Exit status 2 ("refused"): a parameter, a file or the cluster's health was wrong before
# anything was saved, or the backup to drill is corrupted. Exit status 1: a step failed; its cell says
# which command on which member. A failed drill leaves the snapshot in place, marked in its manifest as not
# proven: take another one and find out why (the drill's message names the missing keys).

# %%
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from IPython.display import display

from runbooks_lib import etcd, etcd_restore, etcd_snapshot, runbook, schemas, ssh
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
cluster_name: str = ""  # required: the cluster's name: manifests, snapshot names and runs/CLUSTER/
inventory: Path = ""  # required: Kubespray inventory
kubespray_dir: Path = ""  # Kubespray checkout (not used by this runbook)
ansible_playbook: Path = ""  # ansible-playbook command (not used by this runbook)
kubeconfig: Path = ""  # admin kubeconfig (not used by this runbook)
ssh_user: str = "root"  # SSH user on the machines (another user runs etcdctl with sudo -n)
ssh_key: Path = ""  # required: path of the SSH private key
known_hosts: Path = ""  # required: pinned host keys
hosts: dict[str, str] = {}  # for the install runbook (this one reads the inventory)
control_planes: list[str] = []  # for the install runbook (this one reads the inventory)
etcd_members: list[str] = []  # for the install runbook (this one reads the inventory)
workers: list[str] = []  # for the install runbook (this one reads the inventory)
member: str = ""  # etcd host to save on; empty: a healthy member, not the leader when there is a choice
backup_dir: Path = ""  # required: local backup directory (0700; files 0600)
remote_dir: str = "/var/tmp"  # where the member writes the snapshot before it is downloaded (then deleted)
keep_last: int = 7  # keep the last N snapshots of this cluster; 0: rule off
keep_days: float = 0.0  # keep snapshots younger than D days; 0: rule off (both off: keep all)
drill: bool = True  # restore the snapshot into a scratch etcd on this machine and check it
drill_keys: list[str] = ["/registry/configmaps/kube-public/cluster-info", "/registry/deployments/default/sticky-session"]  # etcd keys the drill must find (besides every Node)
drill_bin_dir: str = ""  # directory of etcd, etcdctl (and etcdutl for 3.5+) for the drill; empty: PATH
drill_snapshot: str = ""  # drill this existing backup (a .db file name in backup_dir) instead of taking a new one
timeout_s: float = 300.0  # bound of each remote command, the download and the drill, seconds

# %% [markdown]
# ## Validate
# Types, unknown keys and values are checked against `runbooks_lib.schemas.SnapshotParams` before
# anything is contacted.

# %%
p = schemas.check_snapshot(schemas.from_namespace(schemas.SnapshotParams, globals()))
sudo = p.ssh_user != "root"
steps = runbook.Steps()
print(f"target {p.cluster_name}: inventory {p.inventory}, backups in {p.backup_dir}")

# %% [markdown]
# ## Preflight
# Read-only. The inventory names the etcd members; etcdctl runs on the first member that answers, with
# Kubespray's admin certificate of that member, and reports every member's health and the leader. The
# member to save on is chosen here (or the given one must be healthy). With `drill_snapshot` set, only
# that backup is drilled and the cluster is not contacted. SSH host keys are checked against
# `known_hosts` only.

# %%
# papermill_description=Preflight
for what, path in [("inventory", p.inventory), ("known_hosts", p.known_hosts), ("SSH key", p.ssh_key)]:
    if not path.is_file():
        raise PreconditionFailed(f"the {what} {path} does not exist; nothing was contacted",
                                 fix=f"check the {what} parameter")
inv = inventory_lib.Inventory.load(p.inventory)
etcd_hosts = inv.members("etcd")
k8s_nodes = inv.members("k8s_cluster")
if not etcd_hosts:
    raise PreconditionFailed(f"{p.inventory} lists no etcd members", fix="point inventory at the cluster's inventory")
address = {name: inv.host(name).address for name in inv.hosts}
host_of = {etcd.peer_url(address[n]).rsplit(":", 1)[0]: n for n in etcd_hosts}  # https://IP -> inventory name
conns = {name: ssh.Connection(ssh.Host(name, address[name], user=p.ssh_user, key_path=str(p.ssh_key),
                                       known_hosts=str(p.known_hosts)), connect_timeout=min(10.0, p.timeout_s))
         for name in etcd_hosts}
drill_version = etcd_restore.local_etcd_version(p.drill_bin_dir or None) if p.drill or p.drill_snapshot else ""
chosen, reason, leader, etcd_version, health = "", "", None, "", []
if p.drill_snapshot:
    drill_manifest = etcd_snapshot.read_manifest(etcd_snapshot.manifest_path(p.backup_dir / p.drill_snapshot))
    print(f"drill only: {p.drill_snapshot} ({drill_manifest.time}, revision {drill_manifest.revision}); "
          "the cluster is not contacted")
else:
    asked = None
    for name in etcd_hosts:
        try:
            ctl = etcd.Etcdctl(conns[name], member=name, sudo=sudo, timeout=min(30.0, p.timeout_s))
            health = etcd.endpoint_health(ctl, cluster=True)
            asked = name
            break
        except RunbookError as exc:
            print(f"{name}: no answer ({str(exc).splitlines()[0]})")
    if asked is None:
        raise PreconditionFailed("no etcd member answered; nothing was saved",
                                 fix="run the diagnostics runbook; with quorum lost, use the restore-cluster runbook")
    healthy = [host_of.get(h.endpoint.rsplit(":", 1)[0], h.endpoint) for h in health if h.healthy]
    statuses = {host_of.get(s.endpoint.rsplit(":", 1)[0], s.endpoint): s
                for s in etcd.endpoint_status(ctl, cluster=True)}
    leader = next((n for n, s in statuses.items() if s.is_leader), None)
    chosen, reason = etcd_snapshot.choose_member(etcd_hosts, healthy, leader, given=p.member)
    etcd_version = statuses[chosen].version if chosen in statuses else ""
    display(pd.DataFrame([{"member": n, "address": address[n], "healthy": n in healthy, "leader": n == leader,
                           "version": statuses[n].version if n in statuses else "", "chosen": n == chosen}
                          for n in etcd_hosts]))
p.backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
if not os.access(p.backup_dir, os.W_OK):
    raise PreconditionFailed(f"backup_dir {p.backup_dir} is not writable", fix="pick another backup_dir")
print(f"drill: {'etcd ' + drill_version + ' on this machine (' + etcd_restore.restore_tool(drill_version) + ')' if drill_version else 'off'}")

# %% [markdown]
# ## Plan
# What this run does, in order. Compared by nbval.

# %%
# NBVAL_CHECK_OUTPUT
plan = ([f"drill {p.drill_snapshot} from {p.backup_dir}"] if p.drill_snapshot else [
    "save: etcdctl snapshot save on a healthy member (not the leader when there is a choice), one endpoint",
    "verify: snapshot status (hash, revision, keys, size) and the live key count at that revision",
    f"download into the backup directory (0600), sha256 compared at both ends, JSON manifest beside it",
    f"delete the member's copy in {p.remote_dir}",
    f"retention: keep the last {p.keep_last or 'all'}" + (f" and {p.keep_days:g} days" if p.keep_days else "")
    + "; never the newest verified",
    "drill: restore into a scratch etcd on 127.0.0.1, check revision, key count, Nodes, known keys; remove it"
    if p.drill else "drill: off"])
print("\n".join(plan))

# %% [markdown]
# ## Save, verify and download
# `etcdctl snapshot save` talks to ONE endpoint (etcd refuses several), here the chosen member's own. The
# file is then checked where it was written (`snapshot status`, `sha256sum`), downloaded into a new 0600
# file, and its sha256 compared with the member's; a mismatch deletes the local copy. The live key count at
# the snapshot's revision is read too: it is the number a restored etcd must hold (`snapshot status`'s
# total counts every stored revision of every key, plus etcd's own records). Save, status, sha256 and
# count are one SSH command, so verifying costs little more than saving.

# %%
# papermill_description=Save, verify, download
snap = None
manifest = None
timings: dict[str, float] = {}
if not p.drill_snapshot:
    ctl = etcd.Etcdctl(conns[chosen], member=chosen, sudo=sudo, timeout=min(30.0, p.timeout_s))
    with steps.step("save, verify, download") as s:
        t0 = time.monotonic()
        snap, manifest = etcd_snapshot.save_backup(ctl, cluster=p.cluster_name, member=chosen,
                                                   etcd_version=etcd_version, backup_dir=p.backup_dir,
                                                   remote_dir=p.remote_dir, timeout=p.timeout_s)
        timings["save_verify_download_s"] = time.monotonic() - t0
        s.detail = f"{manifest.file}: revision {manifest.revision}, {manifest.keys} keys, {manifest.size} bytes"
    print(s.detail)
    print(f"sha256 {snap.local_sha256} (member and local copy agree)")
else:
    steps.skip("save, verify, download", "drill only")

# %% [markdown]
# ## Delete the member's copy
# The snapshot holds every Secret: it does not stay on the member's disk.

# %%
# papermill_description=Delete the remote copy
if snap is not None:
    with steps.step("delete remote copy") as s:
        etcd_snapshot.remove_remote(conns[chosen], snap.remote_path, sudo=sudo, timeout=p.timeout_s)
        s.detail = f"{chosen}:{snap.remote_path} deleted"
    print(s.detail)
else:
    steps.skip("delete remote copy", "drill only")

# %% [markdown]
# ## Restore drill
# The snapshot is restored (`etcdutl snapshot restore` for etcd 3.5+, `etcdctl snapshot restore` for 3.4,
# chosen by this machine's etcd version) into a temporary directory, started on free 127.0.0.1 ports and
# asked: same revision and key count as the snapshot, every Node of the inventory (Kubernetes keeps them
# under `/registry/minions/`, the lab's API stand-in under `/registry/nodes/`), and the keys in
# `drill_keys`. The sha256 and the snapshot status are compared with the manifest first: a corrupted file is
# refused before anything starts. The scratch etcd is stopped and deleted in every case. The result is
# recorded in the manifest.

# %%
# papermill_description=Restore drill
drilled = None
target = manifest if manifest is not None else (drill_manifest if p.drill_snapshot else None)
if (p.drill or p.drill_snapshot) and target is not None:
    with steps.step("restore drill") as s:
        drilled = etcd_restore.drill(p.backup_dir, target, known_keys=p.drill_keys, nodes=k8s_nodes,
                                     bin_dir=p.drill_bin_dir or None, timeout=min(120.0, p.timeout_s))
        etcd_snapshot.write_manifest(p.backup_dir, target.with_drill({**drilled.as_dict(),
                                                                      "at": datetime.now(timezone.utc).isoformat()}))
        s.detail = drilled.message
        if not drilled.ok:
            raise RunbookError(f"restore drill of {target.file} failed: {drilled.message}",
                               fix="the snapshot does not hold the cluster: take another and find the cause")
    print(f"drill: {drilled.message}; {drilled.total_s:.1f} s")
else:
    steps.skip("restore drill", "drill is off")

# %% [markdown]
# ## Retention
# Snapshots of this cluster in `backup_dir` (found by their manifests; other files are left alone) beyond
# the last `keep_last` and older than `keep_days` are deleted with their manifests. The newest verified
# snapshot is never deleted, whatever the rules.

# %%
# papermill_description=Retention
deleted: list[str] = []
kept: list = []
if not p.drill_snapshot:
    with steps.step("retention") as s:
        retention = etcd_snapshot.plan_retention(etcd_snapshot.backups(p.backup_dir, p.cluster_name),
                                                 keep_last=p.keep_last, keep_days=p.keep_days)
        deleted = etcd_snapshot.apply_retention(p.backup_dir, retention)
        kept = list(retention.keep)
        s.detail = f"{len(kept)} kept, {len(deleted)} deleted"
    print("\n".join(retention.lines()))
else:
    steps.skip("retention", "drill only")

# %% [markdown]
# ## Summary
# Compared by nbval (stable text) and written as JSON beside the output notebook.

# %%
# NBVAL_CHECK_OUTPUT
shown = manifest or target
ok = shown is not None and (drilled.ok if drilled else not (p.drill or p.drill_snapshot))
verdict = (f"{p.cluster_name}: SNAPSHOT {'VERIFIED' if ok else 'NOT PROVEN'}: {shown.file if shown else 'none'}, "
           f"revision {shown.revision if shown else '-'}, {shown.keys if shown else '-'} keys, "
           f"drill {'passed' if drilled and drilled.ok else 'failed' if drilled else 'off'}")
summary = runbook.write_summary("etcd-snapshot", p.cluster_name, {
    "verified": ok,
    "verdict": verdict,
    "snapshot": {"path": str(p.backup_dir / shown.file), "size": shown.size, "revision": shown.revision,
                 "keys": shown.keys, "total_keys": shown.total_keys, "hash": shown.hash, "sha256": shown.sha256,
                 "member": shown.member, "etcd_version": shown.etcd_version, "time": shown.time} if shown else None,
    "member_choice": {"member": chosen, "reason": reason, "leader": leader} if chosen else None,
    "drill": drilled.as_dict() if drilled else None,
    "timings": {k: round(v, 2) for k, v in timings.items()},
    "retention": {"kept": [m.file for m in kept], "deleted": deleted},
}, steps=steps)
print(f"cluster: {p.cluster_name}")
print(f"snapshot: {'downloaded and verified (sha256 at both ends), member copy deleted' if snap else 'existing backup'}")
print(f"drill: {'passed' if drilled and drilled.ok else 'failed' if drilled else 'off'}")

# %% [markdown]
# The figures of this run (not compared by nbval: they change with every snapshot).

# %%
if shown:
    print(f"path: {p.backup_dir / shown.file}")
    print(f"size: {shown.size} bytes; revision {shown.revision}; keys {shown.keys} (status total {shown.total_keys})")
    if chosen:
        print(f"member: {chosen} ({reason})")
for k, v in timings.items():
    print(f"{k}: {v:.2f}")
if drilled:
    print(f"drill: {drilled.message}: restore {drilled.restore_s:.2f} s, start {drilled.start_s:.2f} s, "
          f"checks {drilled.check_s:.2f} s, total {drilled.total_s:.2f} s")
print(f"retention: {len(kept)} kept, {len(deleted)} deleted")

# %% [markdown]
# ## Verdict

# %%
# papermill_description=Verdict
for conn in conns.values():
    conn.close()
print(verdict)
if not ok:
    raise RunbookError(verdict, fix="read the drill step above")
