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
#     description: Install the cluster with Kubespray's cluster.yml, then prove it (nodes,
#       kube-system, CoreDNS fix, test app on every ingress node, DNS)
#     destructive: true
#     schema: runbooks_lib.schemas:InstallParams
# ---

# %% [markdown]
# # Install the cluster: inventory, addons, `cluster.yml`, and proof that it serves
#
# **What it does.** Writes the Kubespray inventory from the hosts' addresses and roles (or keeps the one
# you have), sets the addons (ingress-nginx on the nodes' port 80, helm) and the DNS settings in the
# inventory's `group_vars` (never in the Kubespray checkout), runs `ansible-playbook -b cluster.yml` with
# its output streamed here, fetches the admin kubeconfig to your side, and then proves the result: every
# node Ready, kube-system healthy (the CoreDNS/nodelocaldns CrashLoopBackOff caused by the 127.0.0.53
# stub is detected and fixed), the test app answering through the ingress of **every** node, and the
# app's DNS name resolving to every ingress node.
#
# **Blast radius: the whole cluster.** cluster.yml installs or reconfigures etcd, the control planes and
# every node in the inventory. On a cluster that already runs it is idempotent (a re-run changes
# nothing), but a wrong inventory (a new host first in `etcd`, an even etcd count) can break etcd. The
# default is a dry run: it stops after the plan. Run it for real with `dry_run=False` and
# `confirm=<cluster name>`.
#
# **How long.** About 2 minutes on the lab; 15-40 minutes on real VPSes (downloads). The playbook is
# bounded by `playbook_timeout_s`, every wait by `ready_timeout_s`.
#
# **If it fails.** The failing cell names the task, host and message; the playbook's full log is kept
# beside this run record (`...cluster.yml.log`). Kubespray is idempotent: fix the cause and run the
# runbook again. Exit status 2 ("refused") means a parameter, the inventory or a preflight check was
# wrong and nothing was changed.

# %%
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from IPython.display import display

from runbooks_lib import ansible_check, etcd, ingress, kube, kubelet_dns, kubespray, nodes, runbook, schemas, ssh
from runbooks_lib import kubeconfig as kubeconfig_lib
from runbooks_lib import inventory as inventory_lib
from runbooks_lib.errors import PreconditionFailed, RunbookError, WaitTimedOut

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
inventory: Path = ""  # required: inventory to write or keep: hosts.yaml (YAML) or inventory.ini (INI)
kubespray_dir: Path = ""  # required: Kubespray checkout (run from there)
ansible_playbook: Path = ""  # the Kubespray checkout's ansible-playbook; empty: KUBESPRAY_DIR/venv/bin/ansible-playbook, else on PATH
kubeconfig: Path = ""  # required: where the admin kubeconfig is written (mode 0600)
ssh_user: str = "root"  # SSH user on the machines
ssh_key: Path = ""  # required: path of the SSH private key
known_hosts: Path = ""  # required: pinned host keys
hosts: dict[str, str] = {}  # name -> IP; empty: keep the existing inventory
control_planes: list[str] = []  # kube_control_plane, in order (the first is special)
etcd_members: list[str] = []  # etcd members, an odd number
workers: list[str] = []  # kube_node
allow_inventory_rewrite: bool = False  # rewrite an existing inventory from hosts even when that drops or moves a host
ingress_nginx: bool = True  # ingress-nginx on every node (group_vars/k8s_cluster/addons.yml)
ingress_host_network: bool = True  # ingress-nginx listens on the nodes' port 80 (host network)
helm: bool = True  # helm_enabled in addons.yml
upstream_dns_servers: list[str] = []  # upstream_dns_servers in group_vars/all/all.yml; empty: left as it is
kube_resolv_conf: str = ""  # kubelet's resolvConf (kube_resolv_conf) in group_vars/all/all.yml; empty: left as it is
fix_coredns: bool = True  # fix the CoreDNS CrashLoopBackOff (kubelet resolvConf -> systemd-resolved's upstream file)
dns_settle_s: float = 15.0  # after the fix, the new DNS pods must run this long without a restart, seconds
app_name: str = "sticky-session"  # the test app: Deployment, Service and Ingress of this name
app_namespace: str = "default"  # namespace of the test app
app_host: str = ""  # required: the app's host name (Ingress rule, DNS record)
app_image: str = "mopckou/sticky-session:latest"  # the test app's image: any HTTP app (its pod is shown when it reports it)
app_port: int = 8080  # the port the app listens on (also passed to it as $PORT)
app_ready_path: str = "/healthz"  # the app's readiness probe path (a 2xx when ready)
dns_server: str = ""  # DNS server that must resolve app_host to every ingress node; empty: skip
ansible_env: dict[str, str] = {}  # extra environment for ansible-playbook (e.g. ANSIBLE_CACHE_PLUGIN_CONNECTION)
dry_run: bool = True  # stop after the plan
confirm: str = ""  # headless confirmation: the cluster name
playbook_timeout_s: float = 5400.0  # bound of cluster.yml, seconds
ready_timeout_s: float = 300.0  # bound of each wait (nodes Ready, kube-system, the app), seconds
timeout_s: float = 30.0  # bound of each remote command and API request, seconds

# %% [markdown]
# ## Validate
# Types, unknown keys and the layout (valid names, unique addresses, roles naming known hosts, an odd
# number of etcd members: etcd needs a majority) are checked against `runbooks_lib.schemas.InstallParams`,
# and the files this runbook needs must exist, before anything is contacted.

# %%
p = schemas.check_install(schemas.from_namespace(schemas.InstallParams, globals()))
inventory_dir = p.inventory.parent
sudo = p.ssh_user != "root"
steps = runbook.Steps()
print(f"target {p.cluster_name}: inventory {p.inventory}, Kubespray {p.kubespray_dir}")

# %% [markdown]
# ## Preflight
# Read-only. The Kubespray checkout is found and its version shown (its `ansible.cfg` holds the fact
# cache, so playbooks always run from there), and its own ansible-playbook must run and lie inside the
# Ansible versions the checkout accepts (its `ansible_version.yml` gate, which would otherwise fail the
# first play). The wanted inventory is built and validated. An existing inventory is the source of truth:
# `hosts` that would drop a host of it or change its address (a worker added or a control plane replaced
# since the install) is refused unless `allow_inventory_rewrite`. Every host must answer SSH with the key
# pinned in `known_hosts` (an unknown or changed host key is refused, never accepted) and have python3
# (Ansible needs it: run the prepare-nodes runbook first).

# %%
# papermill_description=Preflight
checkout = kubespray.detect(p.kubespray_dir)
ansible = ansible_check.check(p.ansible_playbook, p.kubespray_dir)
playbook_bin = ansible.path
print(ansible.line())
current = inventory_lib.load(p.inventory) if p.inventory.is_file() else None
if p.hosts:
    wanted = inventory_lib.build(list(p.hosts.values()), names=list(p.hosts), control_planes=list(p.control_planes),
                                 etcd=list(p.etcd_members), workers=list(p.workers))
    if p.inventory.suffix.lower() == ".ini":
        wanted = wanted.convert("ini")
else:
    wanted = current
wanted.validate()
inventory_diff = inventory_lib.diff(current, wanted) if current is not None else None
write_inventory = current is None or not inventory_diff.empty
lost = inventory_diff.dropped_or_moved() if inventory_diff is not None else []
if lost and not p.allow_inventory_rewrite:
    raise PreconditionFailed(
        f"the inventory {p.inventory} has hosts that hosts would drop or move: {', '.join(lost)}; after an install "
        "the inventory is the source of truth (add-worker and replace-control-plane change it); nothing was changed",
        fix="run with -p hosts '{}' to keep the inventory as it is, or copy its hosts and roles into your parameter "
            "file; -p allow_inventory_rewrite true rewrites it from hosts anyway")
address = {name: host.address for name, host in wanted.hosts.items()}
conns = {name: ssh.Connection(ssh.Host(name, address[name], user=p.ssh_user, key_path=str(p.ssh_key),
                                       known_hosts=str(p.known_hosts)), connect_timeout=min(10.0, p.timeout_s))
         for name in wanted.hosts}
reach = {}
for name, conn in conns.items():
    try:
        reach[name] = ssh.run(conn, ["python3", "--version"], timeout=p.timeout_s).stdout.strip()
    except RunbookError as exc:
        reach[name] = f"FAILED: {str(exc).splitlines()[0]}"
display(pd.DataFrame([{"host": n, "address": address[n], "groups": ", ".join(wanted.groups_of(n)), "ssh": reach[n]}
                      for n in wanted.hosts]))
bad = [n for n, r in reach.items() if r.startswith("FAILED")]
if bad:
    raise PreconditionFailed(f"not reachable with a pinned host key, or no python3: {', '.join(bad)}; nothing was "
                             "changed", host=", ".join(bad),
                             fix="run the prepare-nodes runbook; pin the host keys in known_hosts (ssh-keyscan, then "
                                 "compare the fingerprints with the provider's console)")
print(f"Kubespray {checkout.version} ({checkout.version_source}) at {checkout.path}; {playbook_bin}")

# %% [markdown]
# ## Plan
# Exactly what will change: the inventory (a diff against the file on disk), the `group_vars` settings
# and the playbook command. Addons and DNS settings live in the INVENTORY's group_vars, so the checkout
# stays a clean release and the settings travel with the inventory. `kubeconfig_localhost: true` makes
# Kubespray copy admin.conf to `artifacts/`. Host keys are verified against `known_hosts` whatever the
# checkout's ansible.cfg says (Kubespray's own turns checking off). Compared by nbval.

# %%
# NBVAL_CHECK_OUTPUT
group_settings = {
    "all/all.yml": {"ansible_user": p.ssh_user, "ansible_ssh_private_key_file": str(p.ssh_key),
                    **({"upstream_dns_servers": list(p.upstream_dns_servers)} if p.upstream_dns_servers else {}),
                    **({"kube_resolv_conf": p.kube_resolv_conf} if p.kube_resolv_conf else {})},
    "k8s_cluster/k8s-cluster.yml": {"kubeconfig_localhost": True},
    "k8s_cluster/addons.yml": {"helm_enabled": p.helm, "ingress_nginx_enabled": p.ingress_nginx,
                               "ingress_nginx_host_network": p.ingress_host_network},
}
with tempfile.TemporaryDirectory() as scratch:  # the plan is worked out on a copy: nothing is written
    if (inventory_dir / "group_vars").is_dir():
        shutil.copytree(inventory_dir / "group_vars", Path(scratch) / "group_vars")
    seeded = inventory_lib.group_vars.seed_from_sample(checkout.path, scratch)
    vars_plan = inventory_lib.group_vars.plan(scratch, group_settings)
planned_command = (f"cd {checkout.path} && ansible-playbook -i {p.inventory} -b cluster.yml"
                   f"  (host keys checked against {p.known_hosts})")
plan = [f"hosts: {', '.join(f'{n}={a}' for n, a in address.items())}",
        f"control planes: {', '.join(wanted.control_planes)}; etcd: {', '.join(wanted.etcd_members)}; "
        f"workers: {', '.join(wanted.workers)}",
        "playbook: cluster.yml (host keys checked against known_hosts)",
        "then: kubeconfig (0600); verify nodes, kube-system"
        + (" (fix the CoreDNS crash loop if seen)" if p.fix_coredns else "")
        + f"; deploy {p.app_name} for {p.app_host}; check every ingress node"
        + (" and DNS" if p.dns_server else "")]
print("\n".join(plan))

# %% [markdown]
# What this run would write, against the files on disk (not compared by nbval: a first run writes a
# new inventory, a re-run finds it unchanged).

# %%
backup_stamp = inventory_lib.backups.stamp_now()
inventory_backup = (inventory_lib.backups.planned_path(p.inventory, "install-cluster", backup_stamp)
                    if current is not None and write_inventory else None)
changes_plan = [f"Kubespray {checkout.version} at {checkout.path}",
                f"inventory {p.inventory}: " + ("new file" if current is None else "unchanged" if not write_inventory
                                                else f"replaced (old file kept as {inventory_backup})")]
changes_plan += [f"  {line}" for line in (inventory_diff.lines() if inventory_diff is not None and write_inventory
                                          else [])]
changes_plan += [f"group_vars: copy from the sample: {', '.join(seeded)}"] if seeded else []
changes_plan += [f"  {line}" for line in vars_plan.lines()]
changes_plan += [f"run: {planned_command}", f"kubeconfig: {p.kubeconfig}"]
plan += changes_plan
print("\n".join(changes_plan))

# %% [markdown]
# ## Confirmation gate
# Nothing has changed so far. A dry run stops here and says what would be done; a headless run passes
# only with `confirm` equal to the cluster name; in JupyterLab you are asked to type it.

# %%
proceed = runbook.confirm("install the cluster with cluster.yml", cluster=p.cluster_name, dry_run=p.dry_run,
                          confirm=p.confirm or None, plan=plan, lock=p.inventory)

# %% [markdown]
# ## Write the inventory and its group_vars
# Only when something differs: an unchanged inventory is not rewritten (comments and bytes stay). The
# inventory names `etcd_member_name` explicitly (the default follows the position in the group, so
# reordering would rename members) and lists `k8s_cluster` explicitly (v2.19 needs it; some versions'
# facts.yml skip workers without it). Sample group_vars are copied only where the inventory has none.

# %%
# papermill_description=Inventory and group_vars
changes: dict = {"inventory": False, "inventory_backup": None, "group_vars": [], "dns_fix": [], "kubeconfig": False,
                 "app": []}
if proceed:
    with steps.step("inventory") as s:
        if write_inventory:
            if current is not None:
                changes["inventory_backup"] = str(inventory_lib.backups.save_backup(p.inventory, "install-cluster",
                                                                                    stamp=backup_stamp))
            wanted.save(p.inventory)
            changes["inventory"] = True
        inventory_lib.group_vars.seed_from_sample(checkout.path, inventory_dir)
        applied = inventory_lib.group_vars.plan(inventory_dir, group_settings)
        inventory_lib.group_vars.apply(applied)
        changes["group_vars"] = [c.line() for c in applied.changes]
        s.detail = f"inventory {'written' if write_inventory else 'unchanged'}, {len(applied.changes)} group_vars set"
    print(s.detail)
else:
    steps.skip("inventory", "dry run")
    print("dry run: nothing written")

# %% [markdown]
# ## Run cluster.yml
# The playbook runs from the checkout (its ansible.cfg, its fact cache) with `-b`, bounded by
# `playbook_timeout_s`. Its plays and tasks are shown as they start, with a count; failures and the
# PLAY RECAP are shown in full; every line goes to the log beside this run record. Kubespray's plays are
# `any_errors_fatal`: a host that is down aborts the run, which is why the preflight checked every host.
# Later runbooks that use `--limit` (adding a worker) must run facts.yml first: the other hosts' facts
# come from the checkout's fact cache, filled by a run like this one.

# %%
# papermill_description=cluster.yml
run = None
if proceed:
    output_record = os.environ.get("PAPERMILL_OUTPUT_PATH")
    log_path = (Path(output_record).with_name(Path(output_record).stem + ".cluster.yml.log") if output_record
                else inventory_dir / "cluster.yml.log")
    cmd = kubespray.command(checkout, "cluster", inventory=p.inventory, known_hosts=p.known_hosts,
                            ansible_playbook=playbook_bin)
    print(f"$ {' '.join(cmd.argv)}\n  (in {cmd.cwd}; log {log_path})")
    counts = {"play": 0, "task": 0}

    def show(line: str) -> None:
        if line.startswith("PLAY [") or line.startswith("PLAY RECAP"):
            counts["play"] += 1
            print(f"[play {counts['play']}] {line.rstrip(' *')}", flush=True)
        elif line.startswith(("TASK [", "RUNNING HANDLER [")):
            counts["task"] += 1
            print(f"  [task {counts['task']}] {line.rstrip(' *')}", flush=True)
        elif line.startswith(("fatal:", "failed:", "ERROR!", "[ERROR]")) or (" : ok=" in line and "changed=" in line):
            print(f"    {runbook.redact(line)}", flush=True)

    with steps.step("cluster.yml") as s:
        run = kubespray.run(cmd, timeout=p.playbook_timeout_s, on_line=show, log_path=log_path, env=p.ansible_env)
        s.detail = f"exit {run.rc} in {run.duration:.0f} s, {counts['task']} tasks"
    print(f"cluster.yml: exit {run.rc} in {run.duration:.0f} s; log {log_path}")
else:
    steps.skip("cluster.yml", "dry run")

# %% [markdown]
# ## Fetch the kubeconfig
# Kubespray copied admin.conf to the inventory's `artifacts/` (`kubeconfig_localhost`); if it is not
# there it is read from the first control plane. Its server is set to the first control plane's address
# (admin.conf on a control plane points at 127.0.0.1). The file holds the admin client key: it is
# written with mode 0600 and never shown.

# %%
# papermill_description=Kubeconfig
api = None
if proceed:
    first_cp = wanted.control_planes[0]
    with steps.step("kubeconfig") as s:
        fetched = kubeconfig_lib.fetch(p.kubeconfig, server=f"https://{wanted.host(first_cp).api_address}:6443",
                                   artifact=inventory_dir / "artifacts" / "admin.conf", conn=conns[first_cp],
                                   sudo=sudo, timeout=p.timeout_s)
        changes["kubeconfig"] = fetched.changed
        s.detail = f"from {fetched.source}, server {fetched.server}"
    print(f"kubeconfig {fetched.path} (mode {fetched.mode:o}) {s.detail}")
    api = kube.client_from_kubeconfig(str(p.kubeconfig))
else:
    steps.skip("kubeconfig", "dry run")

# %% [markdown]
# ## Verify: nodes Ready
# Every inventory node (control planes and workers) must register and be Ready within `ready_timeout_s`.

# %%
# papermill_description=Nodes Ready
k8s_nodes = wanted.members("k8s_cluster")
node_list: list = []
if proceed:
    with steps.step("nodes Ready") as s:
        kube.wait_for_nodes(api, k8s_nodes, "Ready", timeout=p.ready_timeout_s, interval=3)
        node_list = kube.nodes(api, timeout=p.timeout_s)
        s.detail = f"{sum(n.is_ready for n in node_list)}/{len(k8s_nodes)} Ready"
    display(pd.DataFrame([{"node": n.name, "ready": n.is_ready, "roles": ",".join(n.roles), "ip": n.internal_ip,
                           "kubelet": n.kubelet_version} for n in node_list]))

# %% [markdown]
# ## Verify: kube-system, and the CoreDNS CrashLoopBackOff
# The classic pitfall right after an install: where no OS vars file sets `kube_resolv_conf` (everywhere
# but Ubuntu), kubelet hands pods `/etc/resolv.conf`, which on a systemd-resolved host is the stub with
# only `127.0.0.53`. CoreDNS and nodelocaldns then forward queries to themselves and end in
# **CrashLoopBackOff**. This cell reads each node's kubelet resolvConf; where it loops back it waits for
# the crash loop to show, and with `fix_coredns` points kubelet at `/run/systemd/resolve/resolv.conf`
# (the real upstream servers), restarts kubelet and records `kube_resolv_conf` in the inventory's
# group_vars, so the next cluster.yml (or scale.yml for a new worker) keeps the fix instead of undoing it.
# A kubelet restart is not enough by itself: a pod's resolv.conf is written when its sandbox is created,
# and a crash-looping container restarts in the same sandbox. So the DNS pods of the fixed nodes (and any
# DNS pod still crash-looping) are deleted; their Deployment and DaemonSet create new pods, whose sandboxes
# get the fixed file (the article rebooted the nodes, which recreates every sandbox). Then the new pods
# must be Running and stay so: their restart counts may not grow over `dns_settle_s`.

# %%
# papermill_description=kube-system and the CoreDNS fix
pods: list = []
crash_seen: list = []
if proceed:
    with steps.step("kube-system") as s:
        dns_state = {n: kubelet_dns.kubelet_dns(conns[n], sudo=sudo, timeout=p.timeout_s) for n in k8s_nodes}
        looping = [n for n, d in dns_state.items() if d.loops]
        display(pd.DataFrame([{"node": n, "kubelet resolvConf": d.resolv_conf, "nameservers": " ".join(d.nameservers),
                               "loops back": d.loops} for n, d in dns_state.items()]))
        if not looping:
            print("kubelet's resolvConf has upstream nameservers on every node: nothing to fix, nothing changed")
        if looping:
            def dns_crash() -> tuple[bool, str]:
                found = [x for x in kube.pod_health(api, timeout=p.timeout_s) if x.crash_looping]
                crash_seen[:] = sorted(x.name for x in found)
                return bool(found), "no CoreDNS/nodelocaldns pod in CrashLoopBackOff yet"

            try:
                runbook.wait_for(dns_crash, timeout=min(120.0, p.ready_timeout_s), interval=3,
                                 what="the CrashLoopBackOff that a looping resolvConf causes")
            except WaitTimedOut:
                pass  # the cause is certain even when the symptom has not shown yet
            print(f"CrashLoopBackOff: {', '.join(crash_seen) or 'not seen yet'} (kubelet resolvConf loops back on "
                  f"{', '.join(looping)})")
            if not p.fix_coredns:
                raise RunbookError(f"CoreDNS/nodelocaldns crash-loop: kubelet's resolvConf is the 127.0.0.53 stub on "
                                   f"{', '.join(looping)}", fix="rerun with fix_coredns=True, or set kube_resolv_conf: "
                                   f"{nodes.UPSTREAM_RESOLV_CONF} and rerun")
            for n in looping:
                change = nodes.set_kubelet_resolv_conf(conns[n], sudo=sudo, timeout=p.timeout_s)
                if change.changed:
                    nodes.restart(conns[n], "kubelet", sudo=sudo)
                changes["dns_fix"].append(f"{n}: {change.detail}")
            stuck = {x.node for x in kubelet_dns.dns_pods(api, timeout=p.timeout_s) if x.crash_looping}
            recreated = kubelet_dns.recreate_dns_pods(api, sorted({*looping, *stuck}), timeout=p.timeout_s)
            changes["dns_fix"].append(f"recreated {len(recreated)} DNS pods (new sandboxes): {', '.join(recreated)}")
            recorded = inventory_lib.group_vars.plan(inventory_dir, {"all/all.yml": {
                "kube_resolv_conf": nodes.UPSTREAM_RESOLV_CONF}})
            inventory_lib.group_vars.apply(recorded)
            changes["group_vars"] += [c.line() for c in recorded.changes]
            print("fixed:", "; ".join(changes["dns_fix"]), "| recorded:", "; ".join(recorded.lines()))

        def kube_system_healthy() -> tuple[bool, list[str]]:
            pods[:] = kube.pod_health(api, timeout=p.timeout_s)
            bad = [f"{x.name} on {x.node}: {x.phase} {','.join(x.waiting_reasons)}" for x in pods if not x.healthy]
            return bool(pods) and not bad, bad or ["no kube-system pods yet"]

        runbook.wait_for(kube_system_healthy, timeout=p.ready_timeout_s, interval=3, what="kube-system pods healthy",
                         fix="read the pods' events and logs (kubectl -n kube-system describe pod NAME)")
        if looping:  # the new DNS pods stay Running: no restart over dns_settle_s
            settled = {x.name: x.restarts for x in kubelet_dns.dns_pods(api, timeout=p.timeout_s)}
            time.sleep(p.dns_settle_s)
            later = {x.name: x for x in kubelet_dns.dns_pods(api, timeout=p.timeout_s)}
            unsettled = [f"{name}: {x.phase} {','.join(x.waiting_reasons)}, restarts {settled.get(name, 0)} -> "
                         f"{x.restarts}" for name, x in later.items()
                         if not x.healthy or x.restarts > settled.get(name, x.restarts)]
            if unsettled:
                raise RunbookError(f"DNS pods not settled {p.dns_settle_s:g} s after the fix: {'; '.join(unsettled)}",
                                   fix="kubectl -n kube-system logs POD --previous; check the nodes' "
                                       f"{nodes.UPSTREAM_RESOLV_CONF}")
        s.detail = f"{len(pods)} pods healthy" + (f"; fixed DNS on {', '.join(looping)}" if looping else "")
    print(s.detail)

# %% [markdown]
# ## Verify: the test app through every node's ingress
# The app (a Deployment with one pod per worker, spread over nodes; a Service; an Ingress for
# `app_host`) is applied through the API: an unchanged app is left alone. Then every node's port 80 is
# asked for `app_host`: ingress-nginx runs on every node with host network, so each node must answer,
# whichever node the answering pod runs on. That is what DNS round-robin over the node IPs relies on.

# %%
# papermill_description=Test app and ingress
answers: list = []
app_pods: list = []
ingress_nodes = {n: address[n] for n in k8s_nodes}
if proceed:
    with steps.step("app via ingress") as s:
        manifests = ingress.app_manifests(p.app_name, p.app_host, replicas=max(2, len(wanted.workers)),
                                          namespace=p.app_namespace, image=p.app_image,
                                          port=p.app_port, ready_path=p.app_ready_path)
        applied_app = kube.apply(api, manifests, namespace=p.app_namespace, timeout=p.timeout_s)
        changes["app"] = [f"{a.kind}/{a.name} {a.action}" for a in applied_app if a.action != "unchanged"]
        print(", ".join(f"{a.kind}/{a.name} {a.action}" for a in applied_app))

        def app_ready() -> tuple[bool, list[str]]:
            app_pods[:] = [x for x in kube.pod_health(api, p.app_namespace, timeout=p.timeout_s)
                           if x.name.startswith(p.app_name + "-") and x.healthy]
            spread = len({x.node for x in app_pods})
            return spread >= 2, [f"{len(app_pods)} ready pods on {spread} nodes"]

        runbook.wait_for(app_ready, timeout=p.ready_timeout_s, interval=2,
                         what=f"{p.app_name} pods ready on at least 2 nodes")

        def every_node_answers() -> tuple[bool, list[str]]:
            answers[:] = ingress.ask_every_node(ingress_nodes, p.app_host, timeout=min(5.0, p.timeout_s))
            return all(a.ok for a in answers), [f"{a.node}: {a.error or a.status}" for a in answers if not a.ok]

        runbook.wait_for(every_node_answers, timeout=p.ready_timeout_s, interval=2,
                         what=f"every node's ingress to answer for {p.app_host}")
        s.detail = f"{sum(a.ok for a in answers)}/{len(answers)} ingress nodes answer"
    display(pd.DataFrame([{"asked node": a.node, "address": a.address, "HTTP": a.status, "answered by pod": a.pod,
                           "pod's node": a.served_by} for a in answers]))

# %% [markdown]
# ## Verify: DNS
# Clients find the cluster by the app's name: a round-robin of A records over every ingress node, set at
# your DNS provider (on the lab, the lab's DNS server). The name must resolve to exactly the ingress
# nodes on `dns_server`; a missing node gets no traffic, a stale address sends clients to nothing.

# %%
# papermill_description=DNS
resolved: list = []
if proceed and p.dns_server:
    with steps.step("DNS") as s:
        want = tuple(sorted(ingress_nodes.values()))

        def dns_matches() -> tuple[bool, str]:
            resolved[:] = ingress.resolve(p.app_host, p.dns_server, timeout=min(5.0, p.timeout_s))
            return tuple(resolved) == want, f"{p.app_host} resolves to {resolved}, want {list(want)}"

        runbook.wait_for(dns_matches, timeout=min(60.0, p.ready_timeout_s), interval=2,
                         what=f"{p.app_host} to resolve to every ingress node on {p.dns_server}",
                         fix=f"set the A records of {p.app_host} to {', '.join(want)} at your DNS provider")
        s.detail = f"{p.app_host} -> {', '.join(resolved)}"
    print(s.detail)
elif proceed:
    steps.skip("DNS", "dns_server is empty")

# %% [markdown]
# ## Verify: etcd
# etcdctl on the first etcd member with Kubespray's admin certificate: every member started and every
# endpoint healthy.

# %%
# papermill_description=etcd
members: list = []
health: list = []
if proceed:
    with steps.step("etcd") as s:
        first_etcd = wanted.etcd_members[0]
        ctl = etcd.Etcdctl(conns[first_etcd], member=first_etcd, sudo=sudo, timeout=p.timeout_s)
        members = etcd.member_list(ctl)
        health = etcd.endpoint_health(ctl, cluster=True)
        s.detail = f"{len(members)} members, {sum(h.healthy for h in health)} healthy"
    print(s.detail)

# %% [markdown]
# ## Summary
# Compared by nbval (stable text) and written as JSON beside the output notebook. `changes` says what
# this run changed besides cluster.yml: a re-run right after a success changes nothing.

# %%
# NBVAL_CHECK_OUTPUT
ready = sorted(n.name for n in node_list if n.is_ready)
answering = sorted(a.node for a in answers if a.ok)
healthy_etcd = sum(h.healthy for h in health)
installed = bool(proceed and run and run.ok and len(ready) == len(k8s_nodes) and answering == sorted(k8s_nodes)
                 and healthy_etcd == len(members) == len(wanted.etcd_members)
                 and (not p.dns_server or tuple(resolved) == tuple(sorted(ingress_nodes.values()))))
verdict = (f"{p.cluster_name}: DRY RUN: nothing changed" if not proceed else
           f"{p.cluster_name}: {'INSTALLED' if installed else 'NOT PROVEN'}: {len(ready)}/{len(k8s_nodes)} nodes Ready, "
           f"etcd {healthy_etcd}/{len(members)} healthy, app answering on {len(answering)}/{len(k8s_nodes)} "
           f"ingress nodes")
summary = runbook.write_summary("install-cluster", p.cluster_name, {
    "installed": installed,
    "dry_run": not proceed,
    "verdict": verdict,
    "kubespray": {"version": checkout.version, "path": str(checkout.path)},
    "playbook": ({"rc": run.rc, "duration_s": round(run.duration, 1), "log": str(run.log_path),
                  "changed_tasks": {h: r.changed for h, r in run.recap.items()}} if run else None),
    "changes": changes,
    "nodes_ready": ready,
    "crash_looping_seen": crash_seen,
    "etcd": {"members": len(members), "member_names": sorted(m.name for m in members), "healthy_endpoints": healthy_etcd},
    "ingress": {a.node: {"status": a.status, "pod": a.pod, "pod_node": a.served_by} for a in answers},
    "app_answering_on": answering,
    "dns": {"name": p.app_host, "server": p.dns_server, "resolved": list(resolved)},
    "kubeconfig": str(p.kubeconfig),
}, steps=steps)
print(f"cluster: {p.cluster_name}")
print(f"Kubernetes nodes: {', '.join(k8s_nodes)}")
print(f"etcd members wanted: {', '.join(wanted.etcd_members)}")
print(f"app: {p.app_host}")

# %% [markdown]
# The results (not compared by nbval: a dry run reads nothing past the plan).

# %%
print(f"nodes: {len(ready)}/{len(k8s_nodes)} Ready")
print(f"etcd: {len(members)} members, {healthy_etcd} healthy")
print(f"app {p.app_host}: answering on {len(answering)}/{len(k8s_nodes)} ingress nodes; "
      f"DNS {len(resolved)} addresses")
print(f"CoreDNS crash loop seen: {'yes, fixed' if crash_seen else 'no'}")
print("changes besides cluster.yml:", ", ".join(k for k, v in changes.items() if v) or "none")

# %% [markdown]
# ## Verdict

# %%
# papermill_description=Verdict
for conn in conns.values():
    conn.close()
print(verdict)
if proceed and not installed:
    raise RunbookError(verdict, fix="each verify step above names what is missing")

# %% [markdown]
# ## Rollback (never runs by default)
# Kubespray's reset.yml wipes Kubernetes and etcd from every host in the inventory: every workload and
# its data is lost. Run it by hand only to start over.

# %% tags=["skip-execution", "nbval-skip"]
reset = kubespray.command(checkout, "reset", inventory=p.inventory, known_hosts=p.known_hosts,
                          ansible_playbook=playbook_bin)
print(f"$ {' '.join(reset.argv)}")
# kubespray.run(reset, timeout=p.playbook_timeout_s, on_line=print, env=p.ansible_env)
