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
#     description: 'Remove workers, alive or dead: drain, remove-node.yml -e node=...
#       (with the flags that keep it from hanging on a dead node), inventory, DNS, proof'
#     destructive: true
#     schema: runbooks_lib.schemas:RemoveWorkerParams
# ---

# %% [markdown]
# # Remove workers, alive or dead
#
# **What it does.** Takes workers out of the cluster for good. An **alive** worker is drained through the
# Eviction API (PodDisruptionBudgets respected, bounded), then Kubespray's `remove-node.yml -e node=NODE`
# resets it and deletes its Node object. A **dead** worker (powered off, unreachable) gets the flags that
# keep remove-node from hanging on it: `reset_nodes=false` (no play connects to it: with Kubespray's
# `ConnectionAttempts=100` that would take many minutes), `allow_ungraceful_removal=true` and a bounded
# `drain_timeout` and grace period (its pods can never confirm termination); its Node object is deleted
# afterwards if the playbook left it (even when the playbook failed: a dead node cannot answer its last
# tasks). Then the app's DNS name stops pointing at the host (your DNS hook), and only then the host leaves
# every inventory group (and `all.hosts`). Whether a node is dead is found by the preflight (does it answer
# SSH with its pinned key; its Node's Ready condition is shown beside), or set with `node_state`.
#
# **Why `-e node=` always.** Kubespray v2.19 without it removes every `kube_node` host; v2.28+ refuse to
# run. The confirmation prompt is answered with `skip_confirmation=yes` (papermill has no terminal).
#
# **Blast radius: the removed workers** (their Kubernetes state is wiped when alive) and the pods on them,
# which are evicted and recreated elsewhere by their controllers. Control-plane and etcd hosts are refused
# (use the replace-control-plane runbook). Gated: `dry_run=True` (the default) stops after the plan.
#
# **How long.** Alive: about a minute on the lab. Dead: about `dead_drain_timeout_s` longer (remove-node
# waits that long for pods that cannot terminate).
#
# **If it fails or is interrupted.** Run it again with the same parameters: a node already drained,
# removed or out of the inventory is skipped. A node that an earlier run already took out of the inventory
# (it is still a worker in the inventory backup that run kept, and the API no longer has it) is not refused: the
# re-run only makes sure DNS no longer points at it and proves it gone. Exit status 2 ("refused") means
# nothing was changed.

# %%
import os
import time
from pathlib import Path

import pandas as pd
from IPython.display import display

from runbooks_lib import ansible_check, ingress, kube, kubespray, runbook, schemas, ssh
from runbooks_lib import inventory as inventory_lib
from runbooks_lib.errors import PlaybookFailed, PreconditionFailed, RunbookError

pd.set_option("display.width", 200)

# %% [markdown]
# ## Parameters
# One line per parameter. Site values (marked `required:`) have no default: give them in your
# parameter file (`runbooks run NAME -f params/my-cluster.yaml`; `params/example-vps.yaml` shows each),
# in this cell, or, outside `runbooks run`, through `RUNBOOKS_PARAMS` (`make lab-notebooks` sets it to
# `params/lab.yaml`: the lab's values). A run missing one is refused before anything is contacted.
# Relative paths are relative to the repository root; no secrets here, only paths to them.
# `dns_command` is your DNS provider's hook (see the add-worker runbook): `{name}` becomes `app_host`,
# `{ips}` every remaining ingress node's IP. Empty: DNS is a manual step, reported at the end.

# %% tags=["parameters"]
cluster_name: str = ""  # required: the cluster's name: the confirmation token and runs/CLUSTER/
inventory: Path = ""  # required: Kubespray inventory (hosts.yaml or inventory.ini)
kubespray_dir: Path = ""  # required: Kubespray checkout (run from there)
ansible_playbook: Path = ""  # the Kubespray checkout's ansible-playbook; empty: KUBESPRAY_DIR/venv/bin/ansible-playbook, else on PATH
kubeconfig: Path = ""  # required: admin kubeconfig
ssh_user: str = "root"  # SSH user on the machines
ssh_key: Path = ""  # required: path of the SSH private key
known_hosts: Path = ""  # required: pinned host keys
hosts: dict[str, str] = {}  # for the install runbook (this one reads the inventory)
control_planes: list[str] = []  # for the install runbook (this one reads the inventory)
etcd_members: list[str] = []  # for the install runbook (this one reads the inventory)
workers: list[str] = []  # for the install runbook (this one reads the inventory)
remove: list[str] = []  # required: inventory names of the workers to remove
node_state: str = "auto"  # auto (found by SSH and the Node's Ready condition), alive or dead
allow_last_worker: bool = False  # remove the last worker even though its pods then have nowhere to go
drain_timeout_s: int = 120  # bound of the drain of an alive node, seconds
dead_drain_timeout_s: int = 60  # remove-node's drain_timeout for a dead node, seconds
dead_drain_grace_period_s: int = 10  # remove-node's drain_grace_period for a dead node, seconds
app_name: str = "sticky-session"  # the test app that must keep answering
app_namespace: str = "default"  # namespace of the test app
app_host: str = ""  # required: the app's host name (Ingress rule, DNS name)
dns_server: str = ""  # DNS server to check app_host's A records on; empty: no DNS check
dns_command: list[str] = []  # DNS hook setting app_host's A records, e.g. ["my-dns", "set", "{name}", "{ips}"]; empty: manual
ansible_env: dict[str, str] = {}  # extra environment for ansible-playbook
dry_run: bool = True  # stop after the plan
confirm: str = ""  # headless confirmation: the cluster name
playbook_timeout_s: float = 1800.0  # bound of remove-node.yml, seconds
ready_timeout_s: float = 300.0  # bound of each wait (node gone, rollout, ingress), seconds
timeout_s: float = 30.0  # bound of each remote command and API request, seconds

# %% [markdown]
# ## Validate
# Types and unknown keys against `runbooks_lib.schemas.RemoveWorkerParams`, `node_state`, the drain
# bounds and the files this runbook needs. Nothing is contacted yet.

# %%
p = schemas.check_remove_worker(schemas.from_namespace(schemas.RemoveWorkerParams, globals()))
inventory_dir = p.inventory.parent
sudo = p.ssh_user != "root"
steps = runbook.Steps()
print(f"target {p.cluster_name}: remove {', '.join(p.remove)} (node state: {p.node_state}) from {p.inventory}")

# %% [markdown]
# ## Preflight
# Read-only. Refused, with nothing changed: a host neither the inventory nor the API knows (a typo); a
# control plane or etcd member (removing one needs the replace-control-plane runbook: etcd membership,
# cluster-info, the API servers' `--etcd-servers`); a host that is not a worker; a removal that leaves no
# Ready, schedulable worker for the evicted pods (unless `allow_last_worker`); the first control plane must
# stay alive (remove-node delegates to it). A host gone from the inventory and the API but still a worker in
# a kept backup of the inventory (the copy this runbook keeps before it saves) was removed by an earlier, interrupted
# run: it is not refused, and only DNS and the proof are done for it. A node is alive when it answers SSH
# with its pinned key, and dead only when SSH gets no answer within its bound (a timeout, no route) and its
# Node is NotReady: a changed host key, a failed login, a refused connection or a node still Ready is refused
# with the reason, since removing a live node as dead skips its reset (its kubelet could register again) and
# evicts its pods ungracefully (`node_state` overrides). The pods that will be evicted are listed with the
# PodDisruptionBudgets that cover them; a budget that allows no disruption now is a WARNING: the drain would
# wait for it until `drain_timeout_s`.

# %%
# papermill_description=Preflight
checkout = kubespray.detect(p.kubespray_dir)
ansible = ansible_check.check(p.ansible_playbook, p.kubespray_dir)
playbook_bin = ansible.path
print(ansible.line())
remove_book = checkout.playbook("remove-node")
current = inventory_lib.load(p.inventory)
backup_stamp = inventory_lib.backups.stamp_now()
backup_path = inventory_lib.backups.planned_path(p.inventory, "remove-worker", backup_stamp)
api = kube.client_from_kubeconfig(str(p.kubeconfig))
node_info = {n.name: n for n in kube.nodes(api, timeout=p.timeout_s)}
unknown = [n for n in p.remove if n not in current.hosts and n in node_info]
if unknown:
    raise PreconditionFailed(f"not in the inventory but still a node in the API: {', '.join(unknown)}; nothing was "
                             "changed", fix="add the host back to the inventory (kube_node) so remove-node.yml can act "
                             "on it, or delete the Node object by hand if the machine is gone")
# Backups are read only for names found nowhere else: every kept remove-worker backup, newest first.
kept_backups = (inventory_lib.workers.load_backups(p.inventory)
                if any(n not in current.hosts and n not in node_info for n in p.remove) else [])
earlier = inventory_lib.workers.already_removed(p.remove, current, kept_backups, node_info)
gone = [n for n in p.remove if n not in current.hosts and n not in earlier]
if gone:
    raise PreconditionFailed(f"unknown hosts: {', '.join(gone)}: not in the inventory nor in the API (a typo, or "
                             f"already removed); nothing was changed",
                             fix=f"check the names against the inventory: {', '.join(current.workers)} are workers")
todo = [n for n in p.remove if n in current.hosts]
protected = {n: [g for g in current.groups_of(n) if g in ("kube_control_plane", "etcd")] for n in todo}
protected = {n: g for n, g in protected.items() if g}
if protected:
    raise PreconditionFailed(
        "refusing to remove " + "; ".join(f"{n} ({', '.join(g)})" for n, g in protected.items())
        + ": control-plane and etcd hosts are not workers; nothing was changed",
        fix="use the replace-control-plane runbook (it removes the etcd member, fixes cluster-info and the API "
            "servers' --etcd-servers, and adds a replacement)")
not_workers = [n for n in todo if n not in current.workers]
if not_workers:
    raise PreconditionFailed(f"not in kube_node: {', '.join(not_workers)}; nothing was changed",
                             fix="this runbook removes workers (kube_node hosts) only")


def probe_state(name: str) -> inventory_lib.workers.NodeState:
    if p.node_state != "auto":
        return inventory_lib.workers.NodeState(name, p.node_state, "set by node_state")  # type: ignore[arg-type]
    host = current.host(name)
    conn = ssh.Connection(ssh.Host(name, host.address, user=p.ssh_user, key_path=str(p.ssh_key),
                                   known_hosts=str(p.known_hosts)), connect_timeout=min(10.0, p.timeout_s))
    ready = node_info[name].is_ready if name in node_info else None
    try:
        ssh.run(conn, ["true"], timeout=min(15.0, p.timeout_s))
        return inventory_lib.workers.classify_node(name, None, ready)
    except RunbookError as exc:
        return inventory_lib.workers.classify_node(name, exc, ready)
    finally:
        conn.close()


states = {n: probe_state(n) for n in todo}
refused = [s for s in states.values() if s.state == "refused"]
if refused:
    raise PreconditionFailed("not removed, neither alive nor dead: " + "; ".join(f"{s.name}: {s.reason}"
                                                                              for s in refused)
                             + "; nothing was changed", host=", ".join(s.name for s in refused),
                             fix="a dead node is one that does not answer and whose Node is NotReady; fix what is "
                                 "named, or set node_state alive|dead if you know better")
state = {n: s.state for n, s in states.items()}
dead = [n for n in todo if state[n] == "dead"]
alive = [n for n in todo if state[n] == "alive"]
remaining_workers = [n for n in current.workers if n not in p.remove]
to_evict = {n: [x for x in kube.pods_on_node(api, n, timeout=p.timeout_s)
                if not any(r.get("kind") == "DaemonSet" for r in x["metadata"].get("ownerReferences") or [])
                and "kubernetes.io/config.mirror" not in (x["metadata"].get("annotations") or {})]
            for n in todo if n in node_info}
budgets = kube.disruption_budgets(api, timeout=p.timeout_s)
display(pd.DataFrame([{"node": n, "groups": ", ".join(current.groups_of(n)), "state": state[n],
                       "Node": ("Ready" if node_info[n].is_ready else "NotReady") if n in node_info else "absent",
                       "pods to evict": len(to_evict.get(n, []))} for n in todo]
                     + [{"node": n, "groups": "(in a kept remove-worker backup only)", "state": "already removed",
                         "Node": "absent", "pods to evict": 0} for n in earlier]))
evict_rows = [{"node": n, "pod": f"{x['metadata'].get('namespace', 'default')}/{x['metadata']['name']}",
               "PodDisruptionBudget": ", ".join(f"{b.namespace}/{b.name} (allowed {b.allowed})" for b in budgets
                                               if b.matches(x)) or "-"}
              for n, pods in to_evict.items() for x in pods]
if evict_rows:
    display(pd.DataFrame(evict_rows))
refusal = inventory_lib.workers.last_worker_refusal(current.workers, todo, node_info,
                                                    sum(map(len, to_evict.values())),
                                                    allow_last_worker=p.allow_last_worker)
if refusal:
    raise PreconditionFailed(f"{refusal}; nothing was changed",
                             fix="add a worker first (add-worker runbook) or make one Ready and schedulable "
                                 "(kubectl uncordon), or set allow_last_worker=True")
stalls = inventory_lib.workers.stalling_budgets({n: to_evict[n] for n in alive if n in to_evict}, budgets)
for line in stalls:
    print(f"WARNING: {line}: the drain will wait for it until drain_timeout_s ({p.drain_timeout_s} s), then stop")
first_cp = current.control_planes[0]
if first_cp not in node_info or not node_info[first_cp].is_ready:
    raise PreconditionFailed(f"the first control plane {first_cp} is not Ready; remove-node.yml delegates drains and "
                             "node deletion to it; nothing was changed", fix="bring it back first")
print(f"Kubespray {checkout.version} at {checkout.path}: {remove_book}; alive: {', '.join(alive) or 'none'}; "
      f"dead: {', '.join(dead) or 'none'}; workers left: {', '.join(remaining_workers) or 'none'}"
      + (f"; already removed by an earlier run: {', '.join(earlier)}" if earlier else ""))

# %% [markdown]
# ## Plan
# The nodes, their state and the command (compared by nbval). Alive and dead nodes go in separate
# remove-node runs: the dead-node flags must not skip the reset of an alive one.

# %%
# NBVAL_CHECK_OUTPUT
wanted = inventory_lib.workers.without_hosts(current, todo)
inventory_diff = inventory_lib.diff(current, wanted)
removals = {}
if alive:
    removals["alive"] = kubespray.RemoveNodeVars(tuple(alive), drain_timeout_s=p.drain_timeout_s)
if dead:
    removals["dead"] = kubespray.RemoveNodeVars(tuple(dead), dead=True, drain_timeout_s=p.dead_drain_timeout_s,
                                                drain_grace_period_s=p.dead_drain_grace_period_s)
commands = {kind: kubespray.command(checkout, "remove-node", inventory=p.inventory, known_hosts=p.known_hosts,
                                    ansible_playbook=playbook_bin, extra_vars=v.extra_vars())
            for kind, v in removals.items()}
plan = [f"remove workers: {', '.join(p.remove)}"]
if earlier:
    plan.append(f"already removed by an earlier run: {', '.join(earlier)} (in a kept remove-worker backup only, "
                "no Node object): no drain, no remove-node, no inventory edit; DNS and the proof only")
plan += [f"{kind}: {', '.join(v.nodes)}: " + ("drain (Eviction API), " if kind == "alive" else "")
         + f"{remove_book} " + " ".join(f"-e {k}={val}" for k, val in
                                        {**kubespray.NO_PROMPT_VARS["remove-node"], **v.extra_vars()}.items())
         + ("; then delete the Node object if still there" if kind == "dead" else "")
         for kind, v in removals.items()]
plan += [f"WARNING: {line}: the drain stalls on it until drain_timeout_s ({p.drain_timeout_s} s); scale its "
         "workload up or relax the budget first" for line in stalls]
plan += ["then: out of the app's DNS name, then out of every inventory group and all.hosts",
         f"verify: Node objects gone; {p.app_name} rolled out elsewhere; remaining ingress nodes answer"]
print("\n".join(plan))

# %% [markdown]
# The exact commands and the inventory diff against the file on disk (not compared by nbval).

# %%
changes_plan = [f"run: {cmd}" for cmd in commands.values()]
changes_plan += [f"DNS {p.app_host}: " + (f"set through the hook ({' '.join(p.dns_command)})" if p.dns_command
                                          else "manual step (no dns_command)")]
changes_plan += [f"inventory {p.inventory}: " + ("unchanged" if inventory_diff.empty
                                                  else f"edited (old file kept as {backup_path})")]
changes_plan += [f"  {line}" for line in inventory_diff.lines()]
plan += changes_plan
print("\n".join(changes_plan))

# %% [markdown]
# ## Confirmation gate
# Nothing has changed so far. A dry run stops here; a headless run passes only with `confirm` equal to
# the cluster name; in JupyterLab you are asked to type it.

# %%
proceed = runbook.confirm(f"remove workers {', '.join(p.remove)}", cluster=p.cluster_name,
                                         dry_run=p.dry_run, confirm=p.confirm or None, plan=plan,
                                         lock=p.inventory)
act = proceed
changes: dict = {"drained": {}, "deleted_node_objects": [], "inventory": False, "inventory_backup": None, "dns": []}

# %% [markdown]
# ## Drain the alive workers
# Safety: the preflight proved the workers left can take the pods (or you allowed the last one to go).
# Eviction respects PodDisruptionBudgets, so a service keeps its minimum of ready pods; DaemonSet and
# static pods stay. Bounded by `drain_timeout_s`: a drain that cannot finish stops the run with the
# pods it could not evict, and the node stays cordoned (`kubectl uncordon` undoes it).

# %%
# papermill_description=Drain alive workers
if proceed and alive:
    with steps.step("drain") as s:
        for n in alive:
            if n in node_info:
                result = kube.drain(api, n, timeout=p.drain_timeout_s, force=True)
                changes["drained"][n] = list(result.evicted)
        s.detail = "; ".join(f"{n}: {len(v)} evicted" for n, v in changes["drained"].items()) or "no Node objects"
    print(s.detail)
else:
    steps.skip("drain", "dry run" if not proceed else "no alive worker")

# %% [markdown]
# ## Run remove-node.yml
# Safety: only the named nodes (`-e node=`), never the whole `kube_node` group. For a dead node no play
# connects to it (`reset_nodes=false`); its pods cannot confirm termination, so Kubespray's drain gives
# up after `dead_drain_timeout_s` and `allow_ungraceful_removal` lets the run continue. The Node object
# is never deleted before the playbook: v2.19's last step retries and fails when it is already gone.
# If remove-node fails for a dead node, the run does not stop there: its error is kept (step and summary),
# the Node object is deleted, and the run fails only if the Node object is still there in the proof below.
# A failure for an alive node stops the run.

# %%
# papermill_description=remove-node.yml
runs: dict = {}
playbooks: dict = {}
playbook_failures: dict = {}
output_record = os.environ.get("PAPERMILL_OUTPUT_PATH")


def show(line: str) -> None:
    if line.startswith(("PLAY [", "PLAY RECAP", "TASK [", "fatal:", "failed:", "ERROR!")) or " : ok=" in line:
        print(runbook.redact(line.rstrip(" *")), flush=True)


def remove_node(kind: str) -> None:
    """remove-node.yml for the alive or the dead nodes (one playbook per cell); a dead node's failure is tolerated."""
    cmd = commands[kind]
    log = ((Path(output_record).parent if output_record else inventory_dir)
           / f"{Path(output_record).stem if output_record else 'remove-worker'}.remove-node-{kind}.log")
    with steps.step(f"remove-node ({kind})") as s:
        print(f"$ {cmd}\n  (log {log})")
        started = time.monotonic()
        try:
            runs[kind] = kubespray.run(cmd, timeout=p.playbook_timeout_s, on_line=show, log_path=log,
                                       env=p.ansible_env)
            playbooks[kind] = {"rc": runs[kind].rc, "duration_s": round(runs[kind].duration, 1), "log": str(log)}
            s.detail = f"exit {runs[kind].rc} in {runs[kind].duration:.0f} s"
        except PlaybookFailed as e:
            if kind != "dead":
                raise
            # The dead node cannot answer; whether it is gone is decided by its Node object below.
            playbook_failures[kind] = e.what + (f"\n{e.stderr}" if e.stderr else "")
            playbooks[kind] = {"rc": e.exit_code, "duration_s": round(time.monotonic() - started, 1),
                               "log": str(log), "error": playbook_failures[kind]}
            s.detail = (f"exit {e.exit_code} in {time.monotonic() - started:.0f} s, tolerated for a dead node "
                        f"(the Node object is deleted next): {playbook_failures[kind]}")
    print(f"remove-node ({kind}): {s.detail}")


if proceed and "alive" in commands:
    remove_node("alive")

# %%
# papermill_description=remove-node.yml for dead nodes
if proceed and "dead" in commands:
    remove_node("dead")
if proceed:
    with steps.step("Node objects") as s:
        for n in todo:
            if kube.node(api, n, timeout=p.timeout_s) is not None and n in dead:
                kube.delete_node(api, n, timeout=p.timeout_s)
                changes["deleted_node_objects"].append(n)
        s.detail = (f"deleted {', '.join(changes['deleted_node_objects'])}" if changes["deleted_node_objects"]
                    else "none left to delete (remove-node or an earlier run deleted them)")
    print(s.detail)
else:
    steps.skip("remove-node", "dry run")

# %% [markdown]
# ## Take the hosts out of DNS, then out of the inventory
# DNS first: the app's DNS name must not send clients to a removed node. The hook sets it to the remaining
# ingress nodes (their IPs come from the inventory, read before it is edited); without a hook, that is a
# manual step listed at the end. Then the inventory: out of every group and `all.hosts` (comments and order
# kept; the old file is kept in `.inventory-backups/`), so the next cluster.yml or scale.yml does not reach a host
# that is gone: every Kubespray play is `any_errors_fatal`. In this order, a run interrupted after the
# inventory is saved has only the proof left to do: its re-run finds the hosts in the backups, makes sure
# DNS still leaves them out, and proves them gone.

# %%
# papermill_description=DNS and inventory
dns_manual = ""
resolved: list = []
final = wanted
want = sorted(wanted.host(n).address for n in wanted.members("k8s_cluster"))
removed_ips = sorted({current.host(n).address for n in todo}
                     | {inventory_lib.workers.host_in_backups(kept_backups, n).address for n in earlier})
if act:
    with steps.step("DNS") as s:
        dns_outcome = ingress.converge_dns(p.app_host, want, command=p.dns_command, server=p.dns_server,
                                           gone=removed_ips, timeout=p.timeout_s,
                                           settle_timeout=min(60.0, p.ready_timeout_s))
        changes["dns"] = list(dns_outcome.wanted) if dns_outcome.set_by_hook else []
        resolved[:], dns_manual = dns_outcome.resolved, dns_outcome.manual_step
        s.detail = dns_outcome.line().splitlines()[0]
    print(dns_outcome.line())
    with steps.step("inventory") as s:
        if not inventory_diff.empty:
            backup_path = inventory_lib.backups.save_backup(p.inventory, "remove-worker", stamp=backup_stamp)
            changes["inventory_backup"] = str(backup_path)
            wanted.save(p.inventory)
            changes["inventory"] = True
        final = inventory_lib.load(p.inventory)
        s.detail = "inventory edited" if changes["inventory"] else "inventory already without them"
    print(s.detail)
    print("; ".join(inventory_diff.lines()) or "no inventory change")

# %% [markdown]
# ## Verify: gone, rescheduled, still serving
# The Node objects are gone from the API; the test app's rollout is complete with no pod on a removed
# node (its pods were recreated elsewhere and run); every remaining node's ingress answers for
# `app_host`.

# %%
# papermill_description=Verify
answers: list = []
rollout = None
app_nodes: list = []
if act:
    with steps.step("verify") as s:
        kube.wait_for_nodes(api, list(p.remove), "absent", timeout=p.ready_timeout_s, interval=2)
        rollout = kube.wait_for_rollout(api, p.app_name, p.app_namespace, timeout=p.ready_timeout_s)

        def rescheduled() -> tuple[bool, list[str]]:
            pods = [x for x in kube.pod_health(api, p.app_namespace, timeout=p.timeout_s)
                    if x.name.startswith(p.app_name + "-")]
            app_nodes[:] = sorted({x.node for x in pods if x.healthy})
            stale = [f"{x.name} on {x.node}" for x in pods if x.node in p.remove or not x.healthy]
            return bool(app_nodes) and not stale, stale or ["no ready pod"]

        runbook.wait_for(rescheduled, timeout=p.ready_timeout_s, interval=2,
                         what=f"{p.app_name} pods Running on the remaining nodes only")
        ingress_nodes = {n: final.host(n).address for n in final.members("k8s_cluster")}

        def every_node_answers() -> tuple[bool, list[str]]:
            answers[:] = ingress.ask_every_node(ingress_nodes, p.app_host, timeout=min(5.0, p.timeout_s))
            return all(a.ok for a in answers), [f"{a.node}: {a.error or a.status}" for a in answers if not a.ok]

        runbook.wait_for(every_node_answers, timeout=p.ready_timeout_s, interval=2,
                         what=f"the remaining ingress nodes to answer for {p.app_host}")
        s.detail = f"{rollout.line()}; app on {', '.join(app_nodes)}; {sum(a.ok for a in answers)}/{len(answers)} answer"
    print(s.detail)
    display(pd.DataFrame([{"asked node": a.node, "HTTP": a.status, "answered by pod": a.pod,
                           "pod's node": a.served_by} for a in answers]))

# %% [markdown]
# ## Summary
# Compared by nbval (stable text) and written as JSON beside the output notebook.

# %%
# NBVAL_CHECK_OUTPUT
removed = bool(act and rollout and rollout.complete and answers and all(a.ok for a in answers)
               and not set(p.remove) & set(final.hosts))
verdict = (f"{p.cluster_name}: DRY RUN: nothing changed" if not act else
           f"{p.cluster_name}: {'REMOVED' if removed else 'NOT PROVEN'}: {', '.join(p.remove)}"
           + (f" ({', '.join(earlier)} already removed by an earlier run)" if earlier else "")
           + "".join(f"; remove-node ({kind}) failed (exit {playbooks[kind]['rc']}), tolerated for a dead node"
                     for kind in playbook_failures)
           + f"; app answering on {sum(a.ok for a in answers)}/{len(answers)} remaining ingress nodes")
summary = runbook.write_summary("remove-worker", p.cluster_name, {
    "removed": removed,
    "dry_run": not act,
    "verdict": verdict,
    "nodes": list(p.remove),
    "already_removed": earlier,
    "state": state,
    "kubespray": {"version": checkout.version, "remove_node": str(remove_book)},
    "extra_vars": {kind: v.extra_vars() for kind, v in removals.items()},
    "playbooks": playbooks,
    "changes": changes,
    "rollout": rollout.line() if rollout else None,
    "app_pod_nodes": app_nodes,
    "ingress": {a.node: {"status": a.status, "pod": a.pod, "pod_node": a.served_by} for a in answers},
    "dns": {"name": p.app_host, "server": p.dns_server, "resolved": list(resolved), "removed_ips": removed_ips,
            "manual_step": dns_manual},
    "inventory_diff": inventory_diff.lines(),
}, steps=steps)
print(f"cluster: {p.cluster_name}")
print(f"remove: {', '.join(p.remove)}")
print(f"app: {p.app_name} at {p.app_host}")

# %% [markdown]
# ## Verdict

# %%
# papermill_description=Verdict
print(verdict)
if dns_manual:
    print(f"MANUAL STEP: {dns_manual}")
if act and not removed:
    raise RunbookError(verdict, fix="each step above names what is missing")

# %% [markdown]
# ## Rollback (never runs by default)
# A removed worker comes back only by adding it again (the add-worker runbook prepares it and runs
# scale.yml). A drain that stopped half-way leaves the node cordoned: uncordon it (below).

# %% tags=["skip-execution", "nbval-skip"]
for n in alive:
    print(n, "uncordoned" if kube.uncordon(api, n, timeout=p.timeout_s) else "was schedulable")
