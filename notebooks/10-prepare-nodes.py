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
#     description: 'Prepare the machines for Kubespray: python, ip_forward, swap off,
#       systemd-resolved with upstream DNS (the resolv.conf pitfall)'
#     destructive: true
#     schema: runbooks_lib.schemas:PrepareParams
# ---

# %% [markdown]
# # Prepare nodes: make every machine ready for Kubespray
#
# **What it does.** On every inventory host (or the hosts in `limit`), over SSH with pinned host keys:
# python3 present (Ansible needs it); `net.ipv4.ip_forward=1` now and in `/etc/sysctl.d`; swap off now and
# in `/etc/fstab`; systemd-resolved enabled and running; systemd-resolved given upstream DNS servers and
# `/etc/resolv.conf` linked to its file, which removes the **resolv.conf pitfall** (a link to the
# 127.0.0.53 stub while resolved knows no upstream server). Every step checks before it acts: a second run
# changes nothing. It ends with a table of what changed per host.
#
# **Blast radius: the chosen machines' OS settings**, one host after another: `sysctl -w`, files in
# `/etc/sysctl.d`, `/etc/fstab`, `/etc/systemd/resolved.conf.d`, the `/etc/resolv.conf` link, restarts of
# systemd-resolved (name resolution on that host pauses for about a second), `apt-get install python3` when
# missing. Nothing of Kubernetes or etcd is touched. It is gated: `dry_run=True` (the default) only shows
# the plan; a real run needs `dry_run=False` and `confirm=CLUSTER_NAME`.
#
# **How long.** Seconds per host (minutes only when python3 has to be installed).
#
# **If it fails.** Exit status 2 ("refused") means a parameter, a file or a host key was wrong and nothing
# was changed: the error names it and the fix. A failing step names its host, command and the stderr tail;
# the table of changes shows what was already done on which host. Fix the cause and run again: the steps
# already done are skipped. The Rollback cell at the end says how to undo each change.

# %%
from pathlib import Path

import pandas as pd
import paramiko
from IPython.display import display

from runbooks_lib import nodes, runbook, schemas, ssh
from runbooks_lib.errors import PreconditionFailed, RunbookError

pd.set_option("display.width", 200)
pd.set_option("display.max_colwidth", 120)

# %% [markdown]
# ## Parameters
# One line per parameter. Site values (marked `required:`) have no default: give them in your
# parameter file (`runbooks run NAME -f params/my-cluster.yaml`; `params/example-vps.yaml` shows each),
# in this cell, or, outside `runbooks run`, through `RUNBOOKS_PARAMS` (`make lab-notebooks` sets it to
# `params/lab.yaml`: the lab's values). A run missing one is refused before anything is contacted.
# Relative paths are relative to the repository root; no secrets here, only paths to them.
# `upstream_dns_servers` are the resolvers systemd-resolved forwards to: your provider's.

# %% tags=["parameters"]
cluster_name: str = ""  # required: the cluster's name: the confirmation token and runs/CLUSTER/
inventory: Path = ""  # required: Kubespray inventory
kubespray_dir: Path = ""  # Kubespray checkout (not used by this runbook)
ansible_playbook: Path = ""  # ansible-playbook command (not used by this runbook)
kubeconfig: Path = ""  # admin kubeconfig (not used by this runbook)
ssh_user: str = "root"  # SSH user on the machines (another user needs passwordless sudo)
ssh_key: Path = ""  # required: path of the SSH private key
known_hosts: Path = ""  # required: pinned host keys
hosts: dict[str, str] = {}  # name -> address: the machines before the first install (then the inventory's)
control_planes: list[str] = []  # for the install runbook (this one reads the inventory)
etcd_members: list[str] = []  # for the install runbook (this one reads the inventory)
workers: list[str] = []  # for the install runbook (this one reads the inventory)
limit: list[str] = []  # inventory host names to prepare; empty: every host
upstream_dns_servers: list[str] = []  # required: DNS servers systemd-resolved forwards to
install_python: bool = True  # apt-get install python3 where it is missing (else refuse)
dry_run: bool = True  # only show the plan; set False (and confirm) to change the machines
confirm: str = ""  # headless confirmation: the cluster name
timeout_s: float = 120.0  # bound of each remote command, seconds

# %% [markdown]
# ## Validate
# Types and unknown keys are checked against `runbooks_lib.schemas.PrepareParams`. The machines come from
# the inventory when it exists (after the install it is the source of truth), else from `hosts`: this
# runbook runs before the first install, when only your parameter file knows the machines. Then the hosts
# in `limit` and the upstream DNS servers (IP addresses, not loopback: resolved must not ask itself).
# Nothing is contacted yet.

# %%
p = schemas.from_namespace(schemas.PrepareParams, globals())
address, source = nodes.prepare_targets(p)
chosen = list(address)
sudo = p.ssh_user != "root"
print(f"target {p.cluster_name}: {len(chosen)} hosts from {source}, upstream DNS {', '.join(p.upstream_dns_servers)}")

# %% [markdown]
# ## Preflight
# Read-only. The SSH key must be a readable private key and `known_hosts` must exist. Every chosen host
# is then reached with its key checked against `known_hosts` only: a host whose key is not pinned (or has
# changed) is refused here, before any machine is changed, with how to pin it safely. A non-root user must
# have passwordless sudo.

# %%
# papermill_description=Preflight
if not p.known_hosts.is_file():
    raise PreconditionFailed(f"known_hosts {p.known_hosts} does not exist; nothing was changed",
                             fix="point known_hosts at the file that pins the machines' host keys")
try:
    paramiko.PKey.from_path(p.ssh_key)
except (OSError, paramiko.SSHException, ValueError) as exc:
    raise PreconditionFailed(f"the SSH key {p.ssh_key} is not a readable private key ({type(exc).__name__}); "
                             "nothing was changed", fix="check the ssh_key parameter (a path to the key, "
                             "never the key itself) and its permissions") from None
conns = {name: ssh.Connection(ssh.Host(name, address[name], user=p.ssh_user, key_path=str(p.ssh_key),
                                       known_hosts=str(p.known_hosts)), connect_timeout=min(10.0, p.timeout_s))
         for name in chosen}
reach = nodes.require_reachable(conns, sudo=sudo, timeout=p.timeout_s)
display(pd.DataFrame(reach))

# %% [markdown]
# ## Plan
# The hosts and, in order, what each step checks and does (compared by nbval, so it is the same text on
# every run). The table below it is what would change on each host now, read without changing anything.

# %%
# NBVAL_CHECK_OUTPUT
STEPS = ["python", "ip_forward", "swap", "systemd-resolved", "resolv.conf"]
plan_text = [
    "python: python3 --version; apt-get install -y python3 when missing",
    f"ip_forward: sysctl -w net.ipv4.ip_forward=1 and {nodes.IP_FORWARD_CONF}",
    "swap: swapoff -a, comment swap lines in /etc/fstab, mask swap units",
    "systemd-resolved: systemctl enable --now systemd-resolved",
    f"resolv.conf: DNS={' '.join(p.upstream_dns_servers)} in {nodes.RESOLVED_DROPIN}, restart systemd-resolved, "
    f"/etc/resolv.conf -> {nodes.STUB_RESOLV_CONF}",
]
print(f"cluster {p.cluster_name}: prepare {len(chosen)} hosts: {', '.join(chosen)}")
for name in chosen:
    print(f"  {name} {address[name]}")
print("steps, each checked first and done only where needed:")
for line in plan_text:
    print(f"  {line}")

# %%
# papermill_description=Plan: what would change
planned = {name: nodes.planned_changes(conns[name], p.upstream_dns_servers, sudo=sudo, timeout=p.timeout_s)
           for name in chosen}
to_do = [f"{c.host}: {c.step}: {c.detail}" for changes in planned.values() for c in changes if c.changed]
plan_table = pd.DataFrame([{"host": c.host, "step": c.step, "would change": c.changed, "detail": c.detail}
                           for changes in planned.values() for c in changes])
display(plan_table)
no_python = [name for name, found in planned.items() if found[0].changed]
if no_python and not p.install_python:
    raise PreconditionFailed(f"python3 is missing on {', '.join(no_python)} and install_python is False; "
                             "nothing was changed", fix="install python3 there, or set install_python=True")
print(f"{len(to_do)} changes planned on {len({line.split(':')[0] for line in to_do})} hosts")

# %% [markdown]
# ## Confirmation gate
# A dry run stops here after saying what it would do. A real run needs `dry_run=False` and, headless
# (papermill, `runbooks run`), `confirm` equal to the cluster name; in JupyterLab you type it.

# %%
# papermill_description=Confirmation gate
steps = runbook.Steps()
go = runbook.confirm(f"prepare {len(chosen)} hosts ({len(to_do)} changes)", cluster=p.cluster_name,
                     dry_run=p.dry_run, confirm=p.confirm, plan=to_do or ["nothing to change"],
                     lock=p.inventory)
changes: list[nodes.Change] = []


def run_step(step: str, action) -> None:
    """One step on every chosen host, recorded; skipped entirely in a dry run."""
    if not go:
        steps.skip(step, "dry run")
        return
    with steps.step(step) as s:
        done = [action(conns[name]) for name in chosen]
        changes.extend(done)
        s.detail = f"changed on {sum(c.changed for c in done)}/{len(done)} hosts"
    for c in done:
        print(f"{c.host}: {'CHANGED' if c.changed else 'ok'}: {c.detail}")


# %% [markdown]
# ## Step 1: python
# Kubespray is Ansible, and Ansible runs python on every machine: without python3 every play fails at
# "Gathering Facts". Installing it needs the machine's package mirror.

# %%
# papermill_description=Step: python
run_step("python", lambda c: nodes.ensure_python(c, install=p.install_python, sudo=sudo, timeout=max(p.timeout_s, 600)))

# %% [markdown]
# ## Step 2: IP forwarding
# Pod traffic is routed through the node: with `net.ipv4.ip_forward=0` pods cannot reach other nodes or
# Services, and Kubespray's preinstall checks complain. It is set now and written to `/etc/sysctl.d` so a
# reboot keeps it.

# %%
# papermill_description=Step: ip_forward
run_step("ip_forward", lambda c: nodes.ensure_ip_forward(c, sudo=sudo, timeout=p.timeout_s))

# %% [markdown]
# ## Step 3: swap off
# kubelet refuses to start with swap on (unless told otherwise). Turning it off now is not enough: the
# swap lines in `/etc/fstab` and systemd's swap units would turn it on again at the next boot, and the node
# would go NotReady after a reboot.

# %%
# papermill_description=Step: swap off
run_step("swap", lambda c: nodes.ensure_swap_off(c, sudo=sudo, timeout=p.timeout_s))

# %% [markdown]
# ## Step 4: systemd-resolved enabled and running
# Kubespray's scale.yml (adding a node) and its DNS settings expect systemd-resolved running on the node:
# a node added later with resolved stopped fails in scale.yml, or ends up with a `/etc/resolv.conf` link to a
# stub nobody answers. Enable it now, before the first playbook.

# %%
# papermill_description=Step: systemd-resolved
run_step("systemd-resolved", lambda c: nodes.ensure_resolved(c, sudo=sudo, timeout=p.timeout_s))

# %% [markdown]
# ## Step 5: the resolv.conf pitfall
# On Ubuntu-like images `/etc/resolv.conf` is a link to systemd-resolved's stub (`nameserver 127.0.0.53`).
# When resolved knows no upstream server (`/run/systemd/resolve/resolv.conf` lists none), the stub answers
# nothing: apt and image pulls fail, and later CoreDNS and nodelocaldns, which forward to the node's
# resolv.conf, forward to themselves and end in **CrashLoopBackOff**. This step gives resolved the upstream
# servers (a drop-in in `/etc/systemd/resolved.conf.d`) and links `/etc/resolv.conf` to the stub, which now
# has somewhere to forward. kubelet must still not hand the stub to pods: the install runbook sets kubelet's
# `resolvConf` to `/run/systemd/resolve/resolv.conf` (the real servers), the other half of this fix.

# %%
# papermill_description=Step: resolv.conf
run_step("resolv.conf", lambda c: nodes.fix_resolv_conf(c, p.upstream_dns_servers, sudo=sudo, timeout=p.timeout_s))

# %% [markdown]
# ## Verify
# Everything is read again from the machines: after a real run nothing may be left to change (the run
# fails at the end, after the summary is written, when something is). A dry run only reports.

# %%
# papermill_description=Verify
with steps.step("verify") as s:
    after = {name: nodes.planned_changes(conns[name], p.upstream_dns_servers, sudo=sudo, timeout=p.timeout_s)
             for name in chosen}
    left = [f"{c.host}: {c.step}: {c.detail}" for found in after.values() for c in found if c.changed]
    resolv = {name: nodes.resolv_conf_state(conns[name], timeout=p.timeout_s) for name in chosen}
    prepared = [name for name in chosen if not any(c.changed for c in after[name])]
    s.detail = f"{len(prepared)}/{len(chosen)} hosts prepared"
display(pd.DataFrame([{"host": n, "prepared": n in prepared, "/etc/resolv.conf ->": resolv[n].link_target,
                       "upstream DNS": ", ".join(resolv[n].upstream) or "none"} for n in chosen]))

# %% [markdown]
# ## What changed, per host

# %%
changed_count = sum(c.changed for c in changes)
table = pd.DataFrame([{"host": c.host, "step": c.step, "changed": c.changed, "detail": c.detail} for c in changes]
                     or [{"host": n, "step": "(dry run)", "changed": False, "detail": "nothing done"} for n in chosen])
per_host = pd.DataFrame([{"host": n, "changes": sum(c.changed for c in changes if c.host == n),
                          "changed steps": ", ".join(c.step for c in changes if c.host == n and c.changed)
                          or ("nothing (dry run)" if not go else "nothing to change")} for n in chosen])
display(per_host)
display(table)
if go and left:
    verdict = f"{p.cluster_name}: NOT PREPARED: {'; '.join(left)}"
elif go:
    verdict = (f"{p.cluster_name}: {len(prepared)}/{len(chosen)} hosts prepared, {changed_count} changes"
               + ("" if changed_count else " (nothing to change)"))
else:
    verdict = f"{p.cluster_name}: DRY RUN: {len(to_do)} changes planned on {len(chosen)} hosts; nothing was changed"

# %% [markdown]
# ## Summary
# Compared by nbval (only what is the same on every run: the hosts, the steps, reachability) and written as
# JSON beside the output notebook with the counts and every change.

# %%
# NBVAL_CHECK_OUTPUT
summary = runbook.write_summary("prepare-nodes", p.cluster_name, {
    "verdict": verdict,
    **({"status": "failed"} if go and left else {}),
    "dry_run": not go,
    "hosts": chosen,
    "changed": changed_count,
    "planned": len(to_do),
    "prepared": prepared,
    "not_prepared": left,
    "changes": [{"host": c.host, "step": c.step, "changed": c.changed, "detail": c.detail} for c in changes],
    "resolv_conf": {n: {"link": resolv[n].link_target, "upstream": list(resolv[n].upstream), "ok": resolv[n].ok}
                    for n in chosen},
}, steps=steps)
print(f"cluster: {p.cluster_name}")
print(f"hosts: {', '.join(chosen)}")
print(f"reached with pinned host keys: {len(reach)}/{len(chosen)}")
print(f"steps: {', '.join(STEPS)}")
print(f"python present: {sum(not a[0].changed for a in after.values())}/{len(chosen)}")

# %% [markdown]
# ## Verdict

# %%
# papermill_description=Verdict
for conn in conns.values():
    conn.close()
print(verdict)
if go and left:
    raise RunbookError(f"still not prepared after the steps: {'; '.join(left)}",
                       fix="read the step output of that host above, fix the cause and run again")

# %% [markdown]
# ## Rollback
# Not run by `runbooks run` or nbval (tags `skip-execution`, `nbval-skip`). Normally nothing is rolled back:
# these settings are what Kubespray needs. To undo on one host, run this cell by hand with `host` set.

# %% tags=["skip-execution", "nbval-skip"]
host = chosen[0]
with ssh.Connection(ssh.Host(host, address[host], user=p.ssh_user, key_path=str(p.ssh_key),
                             known_hosts=str(p.known_hosts))) as conn:
    ssh.run(conn, ["rm", "-f", nodes.IP_FORWARD_CONF, nodes.RESOLVED_DROPIN], timeout=p.timeout_s, sudo=sudo)
    ssh.run(conn, ["sysctl", "-w", "net.ipv4.ip_forward=0"], timeout=p.timeout_s, sudo=sudo)
    ssh.run(conn, ["sed", "-i", f"s/^{nodes.SWAP_COMMENT}//", "/etc/fstab"], timeout=p.timeout_s, sudo=sudo)
    ssh.run(conn, ["systemctl", "restart", "systemd-resolved"], timeout=p.timeout_s, sudo=sudo)
    # A regular /etc/resolv.conf replaced by the link was kept as /etc/resolv.conf.before-resolved:
    # `mv /etc/resolv.conf.before-resolved /etc/resolv.conf` puts it back. Swap: `swapon -a`.
