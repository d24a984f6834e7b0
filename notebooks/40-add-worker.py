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
#     description: 'Add workers: prepare them, append them to kube_node, facts.yml,
#       scale.yml --limit, then prove them (Ready, a pod of the test app, ingress, DNS)'
#     destructive: true
#     schema: runbooks_lib.schemas:AddWorkerParams
# ---

# %% [markdown]
# # Add workers: prepare, inventory, `facts.yml`, `scale.yml --limit`, and proof that they serve
#
# **What it does.** For each new machine (name and IP): checks it answers SSH with its host key pinned,
# prepares it with the prepare-nodes runbook's steps (python, ip_forward, swap off, systemd-resolved, the
# resolv.conf pitfall), appends it at the END of `kube_node` in the inventory (comments kept, diff shown
# first), runs `facts.yml` over the whole inventory and then `scale.yml --limit=NEW`, and proves the result:
# the node is Ready, a pod of the test app runs on it, its ingress answers for the app's host name, and
# (optionally, through your DNS hook) the app's DNS name includes its IP.
#
# **Why facts first.** `scale.yml --limit` runs only on the new node, but its templates need the other
# hosts' facts (addresses of the control planes and etcd members). They come from the checkout's fact
# cache, which `facts.yml` without `--limit` fills; without it, newer Kubespray fails on `--limit`.
#
# **Blast radius: the new machines**, plus the inventory file and the test app's replica count. The
# existing nodes are only read by `facts.yml`. A node already in the inventory and Ready is reported and
# nothing runs. Gated: `dry_run=True` (the default) stops after the plan.
#
# **How long.** About a minute on the lab; 10-20 minutes on real VPSes (downloads).
#
# **If it fails or is interrupted.** Run it again with the same parameters: every step checks first (a
# prepared node is not prepared again, an inventory that already lists the node is not rewritten) and
# Kubespray's playbooks are idempotent, so a re-run converges. Exit status 2 ("refused") means a
# parameter or a preflight check was wrong and nothing was changed.

# %%
import os
from pathlib import Path

import pandas as pd
from IPython.display import display

from runbooks_lib import ansible_check, ingress, kube, kubespray, nodes, runbook, schemas, ssh
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
# `dns_command` is your DNS provider's hook: a command whose word `{name}` becomes `app_host` and whose word
# `{ips}` becomes every ingress node's IP (the full list the name must resolve to). Empty: updating DNS
# is a manual step, reported at the end.

# %% tags=["parameters"]
cluster_name: str = ""  # required: the cluster's name: the confirmation token and runs/CLUSTER/
inventory: Path = ""  # required: Kubespray inventory (hosts.yaml or inventory.ini)
kubespray_dir: Path = ""  # required: Kubespray checkout (run from there)
ansible_playbook: Path = ""  # the Kubespray checkout's ansible-playbook; empty: KUBESPRAY_DIR/venv/bin/ansible-playbook, else on PATH
kubeconfig: Path = ""  # required: admin kubeconfig
ssh_user: str = "root"  # SSH user on the machines (another user needs passwordless sudo)
ssh_key: Path = ""  # required: path of the SSH private key
known_hosts: Path = ""  # required: pinned host keys
hosts: dict[str, str] = {}  # for the install runbook (this one reads the inventory)
control_planes: list[str] = []  # for the install runbook (this one reads the inventory)
etcd_members: list[str] = []  # for the install runbook (this one reads the inventory)
workers: list[str] = []  # for the install runbook (this one reads the inventory)
new_workers: dict[str, str] = {}  # required: the workers to add: name -> IP
upstream_dns_servers: list[str] = []  # required: DNS servers systemd-resolved forwards to (as prepare-nodes)
install_python: bool = True  # apt-get install python3 where it is missing (else refuse)
app_name: str = "sticky-session"  # the test app (Deployment, Service, Ingress) the install runbook deployed
app_namespace: str = "default"  # namespace of the test app
app_host: str = ""  # required: the app's host name (Ingress rule, DNS name)
app_image: str = "mopckou/sticky-session:latest"  # the test app's image: any HTTP app (its pod is shown when it reports it)
app_port: int = 8080  # the port the app listens on (also passed to it as $PORT)
app_ready_path: str = "/healthz"  # the app's readiness probe path (a 2xx when ready)
dns_server: str = ""  # DNS server to check app_host's A records on; empty: no DNS check
dns_command: list[str] = []  # DNS hook setting app_host's A records, e.g. ["my-dns", "set", "{name}", "{ips}"]; empty: manual
ansible_env: dict[str, str] = {}  # extra environment for ansible-playbook (e.g. ANSIBLE_CACHE_PLUGIN_CONNECTION)
dry_run: bool = True  # stop after the plan
confirm: str = ""  # headless confirmation: the cluster name
playbook_timeout_s: float = 3600.0  # bound of each playbook (facts.yml, scale.yml; one cell each), seconds
ready_timeout_s: float = 300.0  # bound of each wait (node Ready, rollout, ingress, DNS), seconds
timeout_s: float = 30.0  # bound of each remote command and API request, seconds

# %% [markdown]
# ## Validate
# Types and unknown keys against `runbooks_lib.schemas.AddWorkerParams`, then names, IPs (no two new
# workers with one IP) and the files this runbook needs. Nothing is contacted yet.

# %%
p = schemas.check_add_worker(schemas.from_namespace(schemas.AddWorkerParams, globals()))
inventory_dir = p.inventory.parent
sudo = p.ssh_user != "root"
steps = runbook.Steps()
new = list(p.new_workers)
print(f"target {p.cluster_name}: add {', '.join(f'{n}={ip}' for n, ip in p.new_workers.items())} "
      f"to {p.inventory}")

# %% [markdown]
# ## Preflight
# Read-only. The Kubespray checkout is found (`facts.yml` at its root or in `playbooks/`, whichever it
# has). The inventory is read and the new workers added to a copy: a name already used by another kind of
# host or an IP already used by another host is refused. Every new machine must answer SSH with the key
# pinned in `known_hosts` (an unknown or changed key is refused, never accepted). The API must answer:
# a node already in the inventory and Ready needs nothing, and the run succeeds without any playbook.

# %%
# papermill_description=Preflight
checkout = kubespray.detect(p.kubespray_dir)
ansible = ansible_check.check(p.ansible_playbook, p.kubespray_dir)
playbook_bin = ansible.path
print(ansible.line())
facts_book, scale_book = checkout.playbook("facts"), checkout.playbook("scale")
current = inventory_lib.load(p.inventory)
try:
    wanted = inventory_lib.workers.with_workers(current, p.new_workers)
except RunbookError as exc:
    raise PreconditionFailed(f"{exc.what}; nothing was changed", fix=exc.fix) from None
inventory_diff = inventory_lib.diff(current, wanted)
conns = {name: ssh.Connection(ssh.Host(name, ip, user=p.ssh_user, key_path=str(p.ssh_key),
                                       known_hosts=str(p.known_hosts)), connect_timeout=min(10.0, p.timeout_s))
         for name, ip in p.new_workers.items()}
nodes.require_reachable(conns, sudo=sudo, timeout=p.timeout_s)
api = kube.client_from_kubeconfig(str(p.kubeconfig))
node_state = {n.name: n for n in kube.nodes(api, timeout=p.timeout_s)}
already = [n for n in new if n in current.workers and n in node_state and node_state[n].is_ready]
to_add = [n for n in new if n not in already]
display(pd.DataFrame([{"worker": n, "IP": ip, "ssh": "ok, host key pinned", "in inventory": n in current.hosts,
                       "node": ("Ready" if node_state[n].is_ready else "NotReady") if n in node_state else "absent"}
                      for n, ip in p.new_workers.items()]))
print(f"Kubespray {checkout.version} at {checkout.path}: {facts_book}, {scale_book}; "
      f"{len(node_state)} nodes in the API; already added and Ready: {', '.join(already) or 'none'}")

# %% [markdown]
# ## Plan
# The workers, the steps and the commands (compared by nbval). `scale.yml` is limited to the new
# workers; `facts.yml` is not (it refreshes every host's facts in the checkout's cache). Host keys are
# verified against `known_hosts` whatever the checkout's ansible.cfg says.

# %%
# NBVAL_CHECK_OUTPUT
limit = ",".join(to_add)
plan = [f"add workers: {', '.join(new)} (at the end of kube_node)",
        "prepare: python, ip_forward, swap off, systemd-resolved, resolv.conf (the prepare-nodes steps)",
        f"playbooks: {facts_book} (every host), then {scale_book} --limit=<new workers>",
        f"verify: Ready; a pod of {p.app_name} on each new worker; its ingress answers for {p.app_host}"]
print("\n".join(plan))

# %% [markdown]
# What this run would change, against the files on disk and the cluster as it is now (not compared by
# nbval: a re-run finds the inventory already edited).

# %%
facts_cmd = kubespray.command(checkout, "facts", inventory=p.inventory, known_hosts=p.known_hosts,
                              ansible_playbook=playbook_bin)
scale_cmd = kubespray.command(checkout, "scale", inventory=p.inventory, known_hosts=p.known_hosts,
                              ansible_playbook=playbook_bin, limit=limit or None)
backup_stamp = inventory_lib.backups.stamp_now()
inventory_backup = inventory_lib.backups.planned_path(p.inventory, "add-worker", backup_stamp)
changes_plan = [f"inventory {p.inventory}: " + ("unchanged" if inventory_diff.empty
                                                 else f"edited (old file kept as {inventory_backup})")]
changes_plan += [f"DNS {p.app_host}: " + (f"set through the hook ({' '.join(p.dns_command)})" if p.dns_command
                                          else "manual step (no dns_command)")]
changes_plan += [f"  {line}" for line in inventory_diff.lines()]
if to_add:
    changes_plan += [f"run: {facts_cmd}", f"run: {scale_cmd}"]
else:
    changes_plan += [f"nothing to do: {', '.join(already)} already in the inventory and Ready; no playbook runs"]
plan += changes_plan
print("\n".join(changes_plan))

# %% [markdown]
# ## Confirmation gate
# Nothing has changed so far. A dry run stops here; a headless run passes only with `confirm` equal to
# the cluster name; in JupyterLab you are asked to type it. With nothing to add there is nothing to confirm.

# %%
proceed = bool(to_add) and runbook.confirm(f"add workers {limit} with scale.yml", cluster=p.cluster_name,
                                           dry_run=p.dry_run, confirm=p.confirm or None, plan=plan,
                                           lock=p.inventory)
act = proceed or (bool(already) and not to_add and not p.dry_run)  # verify an existing worker too
changes: dict = {"prepared": [], "inventory": False, "inventory_backup": None, "app": [], "dns": []}

# %% [markdown]
# ## Prepare the new machines
# The same library steps as the prepare-nodes runbook (`nodes.ensure_*`), each checked before it acts:
# Ansible needs python3; pods need `net.ipv4.ip_forward=1`; kubelet refuses swap; scale.yml expects
# systemd-resolved running with upstream servers, or the node's DNS points at a stub that answers nothing.

# %%
# papermill_description=Prepare the new workers
PREPARE = [
    ("python", lambda c: nodes.ensure_python(c, install=p.install_python, sudo=sudo, timeout=max(p.timeout_s, 600))),
    ("ip_forward", lambda c: nodes.ensure_ip_forward(c, sudo=sudo, timeout=p.timeout_s)),
    ("swap", lambda c: nodes.ensure_swap_off(c, sudo=sudo, timeout=p.timeout_s)),
    ("systemd-resolved", lambda c: nodes.ensure_resolved(c, sudo=sudo, timeout=p.timeout_s)),
    ("resolv.conf", lambda c: nodes.fix_resolv_conf(c, p.upstream_dns_servers, sudo=sudo, timeout=p.timeout_s)),
]
if proceed:
    with steps.step("prepare") as s:
        done = [action(conns[name]) for name in to_add for _step, action in PREPARE]
        changes["prepared"] = [f"{c.host}: {c.step}: {c.detail}" for c in done if c.changed]
        s.detail = f"{len(changes['prepared'])} changes on {', '.join(to_add)}"
    for c in done:
        print(f"{c.host}: {'CHANGED' if c.changed else 'ok'}: {c.step}: {c.detail}")
else:
    steps.skip("prepare", "dry run" if to_add else "nothing to add")

# %% [markdown]
# ## Append the workers to the inventory
# At the END of `kube_node`: Kubespray treats the first hosts of a group specially, so existing order is
# kept. `k8s_cluster` still includes `kube_node` (v2.19 needs it). Comments and formatting are kept; an
# inventory that already lists the workers (a re-run) is not rewritten.

# %%
# papermill_description=Inventory
if proceed:
    with steps.step("inventory") as s:
        if not inventory_diff.empty:
            changes["inventory_backup"] = str(inventory_lib.backups.save_backup(p.inventory, "add-worker",
                                                                                stamp=backup_stamp))
            wanted.save(p.inventory)
            changes["inventory"] = True
        s.detail = "appended to kube_node" if changes["inventory"] else "already listed"
    print(s.detail, "|", "; ".join(inventory_diff.lines()) or "no change")
else:
    steps.skip("inventory", "dry run" if to_add else "nothing to add")

# %% [markdown]
# ## Run facts.yml, then scale.yml --limit
# From the checkout (its ansible.cfg and fact cache), with `-b`, each bounded by `playbook_timeout_s` in a
# cell of its own (a cell's timeout covers one playbook); plays, tasks and failures are shown, every line
# goes to a log beside this run record. Every Kubespray play is `any_errors_fatal`: a dead host anywhere in
# the inventory aborts `facts.yml` (remove it first with the remove-worker runbook).

# %%
# papermill_description=facts.yml
runs: dict = {}
output_record = os.environ.get("PAPERMILL_OUTPUT_PATH")


def log_for(book: str) -> Path:
    stem = Path(output_record).stem if output_record else "add-worker"
    return (Path(output_record).parent if output_record else inventory_dir) / f"{stem}.{Path(book).name}.log"


def show(line: str) -> None:
    if line.startswith(("PLAY [", "PLAY RECAP", "TASK [", "fatal:", "failed:", "ERROR!")) or " : ok=" in line:
        print(runbook.redact(line.rstrip(" *")), flush=True)


def run_playbook(name: str, cmd: kubespray.PlaybookCommand) -> None:
    """One playbook as a step: its command and log path printed, its plays and tasks shown live."""
    with steps.step(cmd.playbook) as s:
        print(f"$ {cmd}\n  (log {log_for(cmd.playbook)})")
        runs[name] = kubespray.run(cmd, timeout=p.playbook_timeout_s, on_line=show,
                                   log_path=log_for(cmd.playbook), env=p.ansible_env)
        s.detail = f"exit {runs[name].rc} in {runs[name].duration:.0f} s"
    print(f"{cmd.playbook}: {s.detail}")


if proceed:
    run_playbook("facts", facts_cmd)
else:
    steps.skip("playbooks", "dry run" if to_add else "nothing to add")

# %%
# papermill_description=scale.yml
if proceed:
    run_playbook("scale", scale_cmd)

# %% [markdown]
# ## Verify: Ready, and a pod of the test app on each new worker
# The new nodes must register and be Ready. Then the test app gets one replica per worker (its pods are
# spread over nodes, so the new replicas land on the new workers) and its rollout must complete: that
# proves pods schedule and run there.

# %%
# papermill_description=Ready and scheduling
ready: list = []
on_new: dict = {}
rollout = None
if act:
    with steps.step("Ready and a pod") as s:
        kube.wait_for_nodes(api, new, "Ready", timeout=p.ready_timeout_s, interval=3)
        ready = sorted(n.name for n in kube.nodes(api, timeout=p.timeout_s) if n.is_ready and n.name in new)
        workers_now = inventory_lib.load(p.inventory).workers
        manifests = ingress.app_manifests(p.app_name, p.app_host, replicas=max(2, len(workers_now)),
                                          namespace=p.app_namespace, image=p.app_image,
                                          port=p.app_port, ready_path=p.app_ready_path)
        changes["app"] = [f"{a.kind}/{a.name} {a.action}" for a in kube.apply(api, manifests, namespace=p.app_namespace,
                                                                               timeout=p.timeout_s)
                          if a.action != "unchanged"]
        rollout = kube.wait_for_rollout(api, p.app_name, p.app_namespace, timeout=p.ready_timeout_s)

        def pods_on_new() -> tuple[bool, list[str]]:
            pods = [x for x in kube.pod_health(api, p.app_namespace, timeout=p.timeout_s)
                    if x.name.startswith(p.app_name + "-") and x.healthy]
            on_new.clear()
            on_new.update({n: sorted(x.name for x in pods if x.node == n) for n in new})
            missing = [n for n, found in on_new.items() if not found]
            return not missing, [f"no ready {p.app_name} pod on {n}" for n in missing]

        runbook.wait_for(pods_on_new, timeout=p.ready_timeout_s, interval=2,
                         what=f"a ready {p.app_name} pod on each new worker")
        s.detail = f"{len(ready)}/{len(new)} Ready; {rollout.line()}"
    print(s.detail)
    display(pd.DataFrame([{"worker": n, "Ready": n in ready, f"{p.app_name} pods": ", ".join(on_new.get(n, []))}
                          for n in new]))

# %% [markdown]
# ## Verify: the new workers' ingress, and DNS
# ingress-nginx runs on every node with host network: each new worker's port 80 must answer for
# `app_host`. Clients reach the cluster through a round-robin of A records over the ingress nodes. With a
# DNS hook the name is set to every ingress node's IP and checked on `dns_server`; without one, adding the
# IP at your DNS provider is a manual step, listed at the end (a missing IP only means the node gets no
# traffic yet).

# %%
# papermill_description=Ingress and DNS
answers: list = []
resolved: list = []
dns_manual = ""
if act:
    with steps.step("ingress and DNS") as s:
        def new_answer() -> tuple[bool, list[str]]:
            answers[:] = ingress.ask_every_node(p.new_workers, p.app_host, timeout=min(5.0, p.timeout_s))
            return all(a.ok for a in answers), [f"{a.node}: {a.error or a.status}" for a in answers if not a.ok]

        runbook.wait_for(new_answer, timeout=p.ready_timeout_s, interval=2,
                         what=f"the new workers' ingress to answer for {p.app_host}")
        final = inventory_lib.load(p.inventory)
        want = sorted(final.host(n).address for n in final.members("k8s_cluster"))
        if p.dns_command and (not p.dns_server or list(ingress.resolve(p.app_host, p.dns_server,
                                                                        timeout=min(5.0, p.timeout_s))) != want):
            ingress.update_dns(p.dns_command, p.app_host, want, timeout=p.timeout_s)
            changes["dns"] = want
        if p.dns_server:
            def dns_matches() -> tuple[bool, str]:
                resolved[:] = ingress.resolve(p.app_host, p.dns_server, timeout=min(5.0, p.timeout_s))
                return list(resolved) == want, f"{p.app_host} resolves to {resolved}, want {want}"

            if p.dns_command:
                runbook.wait_for(dns_matches, timeout=min(60.0, p.ready_timeout_s), interval=2,
                                 what=f"{p.app_host} to resolve to every ingress node on {p.dns_server}")
            elif not dns_matches()[0]:
                dns_manual = f"add {', '.join(sorted(set(want) - set(resolved)))} to the A records of {p.app_host}"
        elif not p.dns_command:
            dns_manual = f"make {p.app_host} resolve to {', '.join(want)} (add the new workers' IPs)"
        s.detail = f"{sum(a.ok for a in answers)}/{len(answers)} new ingress nodes answer; DNS " + (
            "set by the hook" if changes["dns"] else "manual" if dns_manual else "already right")
    display(pd.DataFrame([{"asked node": a.node, "address": a.address, "HTTP": a.status, "answered by pod": a.pod,
                           "pod's node": a.served_by} for a in answers]))
    print(s.detail + (f"\nMANUAL STEP: {dns_manual}" if dns_manual else ""))

# %% [markdown]
# ## Summary
# Compared by nbval (stable text) and written as JSON beside the output notebook.

# %%
# NBVAL_CHECK_OUTPUT
added = bool(act and ready == sorted(new) and all(on_new.get(n) for n in new) and answers and all(a.ok for a in answers))
verdict = (f"{p.cluster_name}: DRY RUN: nothing changed" if p.dry_run and to_add else
           f"{p.cluster_name}: DRY RUN: nothing to add ({', '.join(already)} already in the cluster)" if not act else
           f"{p.cluster_name}: {'ADDED' if added else 'NOT PROVEN'}: {len(ready)}/{len(new)} new workers Ready, "
           f"serving {p.app_name}" + ("" if to_add else " (already in the cluster: no playbook ran)"))
summary = runbook.write_summary("add-worker", p.cluster_name, {
    "added": added,
    "dry_run": not act,
    "verdict": verdict,
    "workers": dict(p.new_workers),
    "already_in_cluster": already,
    "kubespray": {"version": checkout.version, "facts": str(facts_book), "scale": str(scale_book)},
    "playbooks": {name: {"rc": r.rc, "duration_s": round(r.duration, 1), "log": str(r.log_path)} for name, r in runs.items()},
    "changes": changes,
    "ready": ready,
    "app_pods_on_new_workers": on_new,
    "rollout": rollout.line() if rollout else None,
    "ingress": {a.node: {"status": a.status, "pod": a.pod, "pod_node": a.served_by} for a in answers},
    "dns": {"name": p.app_host, "server": p.dns_server, "resolved": list(resolved), "manual_step": dns_manual},
    "inventory_diff": inventory_diff.lines(),
}, steps=steps)
print(f"cluster: {p.cluster_name}")
print(f"new workers: {', '.join(new)}")
print(f"app: {p.app_name} at {p.app_host}")

# %% [markdown]
# ## Verdict

# %%
# papermill_description=Verdict
for conn in conns.values():
    conn.close()
print(verdict)
if dns_manual:
    print(f"MANUAL STEP: {dns_manual}")
if act and not added:
    raise RunbookError(verdict, fix="each verify step above names what is missing")

# %% [markdown]
# ## Rollback (never runs by default)
# To take the workers out again, run the remove-worker runbook (`runbooks run remove-worker -p remove
# '[...]'`): it drains them, runs remove-node.yml and edits the inventory. To start the test app over,
# delete it (below) and run the install runbook again, which re-applies it.

# %% tags=["skip-execution", "nbval-skip"]
print(ingress.delete_app(api, p.app_name, namespace=p.app_namespace, timeout=p.timeout_s))
