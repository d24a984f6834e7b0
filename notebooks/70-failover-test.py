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
#     description: 'Failover drill: fault one node under an open-loop probe and measure
#       what users see through each front door (table, plot, recommendation)'
#     destructive: true
#     schema: runbooks_lib.schemas:FailoverParams
# ---

# %% [markdown]
# # Failover drill: one node dies; what do users see, through which front door?
#
# **Why.** The source article's proof of high availability was a browser: a node was powered off, about a
# quarter of the requests hung for about a minute, and the question was how to build a cheap fault-tolerant
# balancer. This drill answers it with numbers. It deploys the test app (a Deployment spread over the
# nodes, a Service, an Ingress), sets up the front doors to compare (DNS round-robin seen by three kinds
# of clients, a keepalived floating IP, HAProxy with active checks), sends requests through all of them
# at once on a fixed timetable (open loop: a hung request never delays the next, latency counts from the
# intended send time), faults one node at a set time, records what the cluster and the front doors did
# (node NotReady, endpoints, VIP moves, HAProxy DOWN/UP), brings the node back and tears everything down.
# It ends with the impact table, the failover plot and a paragraph saying which front door to use and at
# what cost.
#
# **Blast radius: one node, for the length of the drill.** The fault node is powered off (or frozen, or
# partitioned) and brought back; keepalived is configured on the ingress nodes and removed afterwards;
# HAProxy runs on this machine only for the drill. Users of the dead node's address see what the table
# says. The default is a dry run that stops after the plan; run it with `dry_run=False` and
# `confirm=<cluster name>`. Schedule it weekly (a systemd timer, see the README), not during peaks.
#
# **How long.** `before_s + after_s` of probing (75 s by default, the short lab profile) plus the setup,
# the wait for the node to be Ready again and the teardown: about 2.5 minutes on the lab.
#
# **If it fails.** The failing step is named and the drill stops measuring, but the teardown cells still
# run (power back on, keepalived and HAProxy removed); the last cell raises the error. Exit status 2
# ("refused") means a parameter or a preflight check was wrong and nothing was changed.

# %%
import dataclasses
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import pandas as pd
from IPython.display import Image, display

from runbooks_lib import analysis, cluster_lock, failover, failover_cleanup, faults, ingress, kube, plots, runbook
from runbooks_lib import runner, schemas, ssh
from runbooks_lib import inventory as inventory_lib
from runbooks_lib import probe as prb
from runbooks_lib.errors import PreconditionFailed, RunbookError, WaitTimedOut
from runbooks_lib.frontdoors.haproxy import HaproxyFrontDoor
from runbooks_lib.frontdoors.keepalived import CONF as KEEPALIVED_CONF
from runbooks_lib.frontdoors.keepalived import KeepalivedVip, VrrpNode
from runbooks_lib.frontdoors.runner import SshRunner

matplotlib.use("Agg")
pd.set_option("display.width", 200)

# %% [markdown]
# ## Parameters
# One line per parameter. Site values (marked `required:`) have no default: give them in your
# parameter file (`runbooks run NAME -f params/my-cluster.yaml`; `params/example-vps.yaml` shows each),
# in this cell, or, outside `runbooks run`, through `RUNBOOKS_PARAMS` (`make lab-notebooks` sets it to
# `params/lab.yaml`: the lab's values). A run missing one is refused before anything is contacted.
# Relative paths are relative to the repository root; no secrets here, only paths to them.
# The timings are the short profile. For a real cluster see the README: the VIP must be a free address
# the nodes may claim (or leave keepalived-vip out of `strategies`), and the fault is injected with
# `fault_injector=command` (your provider's CLI) or `manual`.

# %% tags=["parameters"]
cluster_name: str = ""  # required: the cluster's name: the confirmation token and runs/CLUSTER/
inventory: Path = ""  # required: Kubespray inventory
kubespray_dir: Path = ""  # Kubespray checkout (not used by this runbook)
ansible_playbook: Path = ""  # ansible-playbook command (not used by this runbook)
kubeconfig: Path = ""  # required: admin kubeconfig
ssh_user: str = "root"  # SSH user on the nodes (keepalived needs root or sudo)
ssh_key: Path = ""  # required: path of the SSH private key
known_hosts: Path = ""  # required: pinned host keys
hosts: dict[str, str] = {}  # for the install runbook (this one reads the inventory)
control_planes: list[str] = []  # for the install runbook (this one reads the inventory)
etcd_members: list[str] = []  # for the install runbook (this one reads the inventory)
workers: list[str] = []  # for the install runbook (this one reads the inventory)
app_name: str = "sticky-session"  # the test app: Deployment, Service and Ingress of this name
app_namespace: str = "default"  # namespace of the test app
app_host: str = ""  # required: the app's host name (Ingress rule; DNS round-robin name)
app_image: str = "mopckou/sticky-session:latest"  # the test app's image: any HTTP app (its pod is shown when it reports it)
app_port: int = 8080  # the port the app listens on (also passed to it as $PORT)
app_ready_path: str = "/healthz"  # the app's readiness probe path (a 2xx when ready)
dns_server: str = ""  # required: DNS server the probe resolves app_host against
dns_port: int = 53  # its port
strategies: list[str] = ["dns-naive", "dns-fallback", "happy-eyeballs", "keepalived-vip", "haproxy"]  # front doors compared
recommended: str = "haproxy"  # the strategy judged against the bar: 0 failed, p99 under slow_ms, recovered within 1 s
rate: float = 20.0  # requests per second per strategy
warmup_s: float = 3.0  # requests before the measured run (connections, caches), not counted
before_s: float = 20.0  # seconds probed before the fault
after_s: float = 55.0  # seconds probed after the fault (node NotReady comes after ~40 s)
fault_node: str = ""  # the node to fault; empty: an ingress node without app pods, not the controller-manager leader
fault_mode: str = "hard"  # hard (power cut), graceful (shutdown), freeze, partition (from the other nodes)
fault_injector: str = ""  # required: command (fault_command), manual (the operator, interactive only) or lab (the lab's machines)
fault_command: list[str] = []  # argv for a provider's API; {node} {address} {mode} substituted
power_on_command: list[str] = []  # argv that brings the node back; empty with command: by hand
restore_power: bool = True  # bring the node back and wait for Ready at the end
naive_connect_timeout_s: float = 10.0  # the naive client's connect timeout (a browser: about 60 s)
fallback_connect_timeout_s: float = 0.3  # the fallback client's connect timeout per address
happy_eyeballs_stagger_s: float = 0.25  # RFC 8305's delay before the next address
read_timeout_s: float = 5.0  # every client's wait for the response once connected
slow_ms: float = 300.0  # latency target: slower requests count as slow (and bad)
vip: str = ""  # keepalived's floating IP (a free address on the nodes' network)
vip_prefix: int = 24  # its prefix length
vrrp_advert_s: float = 0.2  # VRRP advert interval (failover after about 3 adverts)
vrrp_router_id: int = 61  # VRRP virtual router id (unique on the segment)
haproxy_bind: str = "127.0.0.1"  # where HAProxy listens on this machine
haproxy_port: int = 0  # its port; 0: a free port
haproxy_check_inter_s: float = 0.2  # HAProxy health check interval
haproxy_fall: int = 2  # failed checks before a server is DOWN
haproxy_rise: int = 2  # passed checks before it is UP again
haproxy_connect_timeout_s: float = 0.1  # HAProxy's connect timeout (then retry on another server)
haproxy_retries: int = 3  # HAProxy's retries (redispatch: each may go to another server)
haproxy_server_timeout_s: float = 1.0  # HAProxy's wait for a node's answer, then retry elsewhere (GETs only)
dry_run: bool = True  # stop after the plan
confirm: str = ""  # the cluster name, to run headless
ready_timeout_s: float = 180.0  # bound of the waits (rollout, node Ready again), seconds
timeout_s: float = 30.0  # bound of each remote command and API request, seconds

# %% [markdown]
# ## Validate
# Types, unknown keys and values (strategies, fault mode and injector, addresses, positive durations)
# are checked against `runbooks_lib.schemas.FailoverParams` before anything is contacted.

# %%
p = schemas.check_failover(schemas.from_namespace(schemas.FailoverParams, globals()))
guard = failover.Guard()
bar = failover.Bar(failed=0, p99_ms=p.slow_ms, recovery_s=1.0)
print(f"target {p.cluster_name}: inventory {p.inventory}; fault {p.fault_mode} on {p.fault_node or 'a node chosen in the preflight'} "
      f"via {p.fault_injector}")

# %% [markdown]
# ## Leftovers of an earlier drill
# A drill that died before its teardown (killed, its machine lost) leaves its fault, keepalived or HAProxy
# behind. Before starting each of them it listed it in its ledger beside the inventory
# (`.runbooks-leftovers/failover-test.json`), and removed the entry once undone. A real run undoes what is
# still listed here, under the cluster lock and before the preflight (which would find a node down or
# the VIP taken); a dry run only lists it. `runbooks run failover-test --cleanup -f FILE` does just this.

# %%
# papermill_description=Leftovers
ledger = failover_cleanup.ledger(p.inventory)
pending = ledger.entries()
if not pending:
    print("no leftovers of an earlier drill")
elif p.dry_run:
    print("LEFTOVERS of an earlier drill; a real run, or `runbooks run failover-test --cleanup`, undoes them first:")
    print("\n".join(f"  {e.line()}" for e in pending))
else:
    cluster_lock.hold_for_session(p.inventory, "runbook failover-test: undo leftovers")
    failover_cleanup.undo(ledger, p)

# %% [markdown]
# ## Preflight
# Read-only. The inventory names the ingress nodes (every Kubernetes node: ingress-nginx runs with host
# network on each) and the fault node; the API is asked through a control plane that is NOT the fault
# node (its own API server dies with it); every ingress node answers SSH with a pinned host key and has
# keepalived, and no keepalived configuration of its own; HAProxy is installed here; `app_host` resolves
# to the ingress nodes on `dns_server` (recorded: the teardown proves DNS unchanged); the VIP is free;
# the fault injector can act (a manual injector refuses a headless run).

# %%
# papermill_description=Preflight
for what, path in [("inventory", p.inventory), ("kubeconfig", p.kubeconfig), ("known_hosts", p.known_hosts),
                   ("SSH key", p.ssh_key)]:
    if not path.is_file():
        raise PreconditionFailed(f"the {what} {path} does not exist; nothing was contacted",
                                 fix=f"check the {what} parameter (install the cluster first for the kubeconfig)")
inv = inventory_lib.Inventory.load(p.inventory)
ingress_names = inv.members("k8s_cluster") or inv.members("kube_node")
address = {name: inv.host(name).address for name in inv.hosts}
api = kube.client_from_kubeconfig(str(p.kubeconfig))
leader = failover.controller_manager_leader(api, timeout=p.timeout_s)
app_nodes = sorted({x.node for x in kube.pod_health(api, p.app_namespace, timeout=p.timeout_s)
                    if x.name.startswith(p.app_name + "-")})
fault_node = p.fault_node or failover.pick_fault_node(ingress_names, app_nodes=app_nodes, leader=leader)
if fault_node not in ingress_names:
    raise PreconditionFailed(f"fault_node {fault_node!r} is not a Kubernetes node of {p.inventory}",
                             fix=f"pick one of {', '.join(ingress_names)}")
api_node = next((n for n in inv.members("kube_control_plane") if n != fault_node), None)
if api_node is None:
    raise PreconditionFailed("no control plane other than the fault node: the drill could not watch the API",
                             fix="fault another node")
api = kube.client_from_kubeconfig(str(p.kubeconfig), server=f"https://{inv.host(api_node).api_address}:6443")
print(f"fault node: {fault_node}" + ("" if p.fault_node else " (chosen)") + f"; app pods on {', '.join(app_nodes) or 'no node yet'}; "
      f"controller-manager leader: {leader or 'unknown'}")
if fault_node == leader:
    print(f"NOTE: {fault_node} holds the controller-manager lease: NotReady will come a lease duration (15 s) "
          "later than the grace period, after a new leader starts watching.")
if fault_node in app_nodes:
    print(f"NOTE: {fault_node} runs app pods: until they leave the endpoints (after NotReady), every ingress "
          "sends some requests to them and each costs ingress-nginx's 5 s proxy-connect-timeout, whatever the "
          "front door.")
node_states = {n.name: n.status for n in kube.nodes(api, timeout=p.timeout_s)}
not_ready = [n for n in ingress_names if node_states.get(n) != "Ready"]
if not_ready:
    raise PreconditionFailed(f"nodes not Ready before the drill: {', '.join(not_ready)}; nothing was changed",
                             fix="run the diagnostics runbook and fix them first")
conns = {n: ssh.Connection(ssh.Host(n, address[n], user=p.ssh_user, key_path=str(p.ssh_key),
                                    known_hosts=str(p.known_hosts)), connect_timeout=min(5.0, p.timeout_s))
         for n in ingress_names}
sudo_prefix = [] if p.ssh_user == "root" else ["sudo", "-n"]
if "keepalived-vip" in p.strategies:
    for n, conn in conns.items():
        found = ssh.run(conn, ["sh", "-c", f"command -v keepalived; test ! -s {KEEPALIVED_CONF} || "
                               f"grep -c 'managed by runbooks_lib' {KEEPALIVED_CONF}"], timeout=p.timeout_s,
                        check=False)
        if found.exited != 0 or "keepalived" not in found.stdout:
            raise PreconditionFailed(f"{n}: keepalived missing, or {KEEPALIVED_CONF} is not ours", host=n,
                                     fix="apt-get install keepalived; move a foreign configuration aside")
    if ingress.ask_node("vip", p.vip, p.app_host, timeout=1.0).status is not None:
        raise PreconditionFailed(f"the VIP {p.vip} already answers: it is in use", fix="pick a free address")
if "haproxy" in p.strategies and not Path("/usr/sbin/haproxy").exists():
    raise PreconditionFailed("HAProxy is not installed on this machine", fix="apt-get install haproxy")
dns_before = ingress.resolve(p.app_host, p.dns_server, port=p.dns_port, timeout=min(5.0, p.timeout_s))
if address[fault_node] not in dns_before:
    raise PreconditionFailed(f"{p.app_host} does not resolve to {fault_node} ({address[fault_node]}) on "
                             f"{p.dns_server}: {list(dns_before)}", fix="set the round-robin A records first")
injector = faults.injector(p.fault_injector, fault_command=p.fault_command, power_on_command=p.power_on_command,
                           timeout=p.timeout_s)
injector.preflight(fault_node, p.fault_mode)
display(pd.DataFrame([{"node": n, "address": address[n], "Kubernetes": node_states.get(n), "in DNS":
                       address[n] in dns_before, "fault": n == fault_node} for n in ingress_names]))

# %% [markdown]
# ## Plan
# The strategies (one probe lane each, same rate, same fault), the timeline and the front doors' settings.
# keepalived lists the fault node first (highest priority: it holds the VIP, so the drill measures a move).
# Compared by nbval.

# %%
# NBVAL_CHECK_OUTPUT
fault_text, restore_text = injector.describe(fault_node, address[fault_node], p.fault_mode)
vrrp_order = [fault_node, *[n for n in ingress_names if n != fault_node]]
plan = [f"app: {p.app_name} in {p.app_namespace} for {p.app_host} (Deployment spread over nodes, Service, Ingress)",
        f"ingress nodes: {', '.join(ingress_names)}",
        *[f"strategy {s}: {failover.STRATEGIES[s]}" for s in p.strategies],
        f"probe: {p.rate:g} req/s per strategy; warm-up {p.warmup_s:g} s; fault at {p.before_s:g} s; "
        f"{p.after_s:g} s after"]
if "keepalived-vip" in p.strategies:
    plan.append(f"keepalived: VIP {p.vip}/{p.vip_prefix} on the ingress nodes, the fault node first (priority), "
                f"advert {p.vrrp_advert_s:g} s, router id {p.vrrp_router_id}, unicast peers")
if "haproxy" in p.strategies:
    plan.append(f"haproxy: on this machine at {p.haproxy_bind}, check every {p.haproxy_check_inter_s:g} s, "
                f"fall {p.haproxy_fall} rise {p.haproxy_rise}, connect timeout {p.haproxy_connect_timeout_s:g} s, "
                f"retries {p.haproxy_retries} (also of requests a dying node leaves unanswered after "
                f"{p.haproxy_server_timeout_s:g} s), redispatch")
plan.append(f"bar for {p.recommended}: 0 failed, p99 <= {bar.p99_ms:g} ms, recovery <= {bar.recovery_s:g} s")
plan.append("teardown: restore the node, remove keepalived and HAProxy, check DNS unchanged")
print("\n".join(plan))

# %% [markdown]
# The node this run faults, how, and how it comes back (not compared by nbval: when `fault_node` is empty
# the choice depends on where the app's pods and the controller-manager leader are).

# %%
node_plan = [f"fault: {fault_text}", f"restore: {restore_text if p.restore_power else 'no (restore_power is False)'}",
             f"API watched through {api_node}; keepalived priority order {', '.join(vrrp_order)}"]
plan += node_plan
print("\n".join(node_plan))

# %% [markdown]
# ## Confirmation gate
# Nothing has changed so far. A dry run stops here; a headless run passes only with `confirm` equal to the
# cluster name; in JupyterLab you are asked to type it.

# %%
proceed = runbook.confirm(f"fault {fault_node} ({p.fault_mode}) for a failover drill", cluster=p.cluster_name,
                          dry_run=p.dry_run, confirm=p.confirm or None, plan=plan,
                          lock=p.inventory)

# %% [markdown]
# ## Step 1: the test app through every ingress node
# Applied through the Kubernetes API (an unchanged app is left alone), then the rollout is awaited (ready
# pods on at least two nodes) and every ingress node must answer for `app_host`: DNS round-robin, the VIP
# and HAProxy all send users to any node.

# %%
# papermill_description=Deploy the test app
answers: list = []


def deploy_app() -> str:
    manifests = ingress.app_manifests(p.app_name, p.app_host, replicas=max(2, len(inv.members("kube_node"))),
                                      namespace=p.app_namespace, image=p.app_image,
                                      port=p.app_port, ready_path=p.app_ready_path)
    applied = kube.apply(api, manifests, namespace=p.app_namespace, timeout=p.timeout_s)
    pods: list = []

    def rolled_out() -> tuple[bool, str]:
        pods[:] = [x for x in kube.pod_health(api, p.app_namespace, timeout=p.timeout_s)
                   if x.name.startswith(p.app_name + "-") and x.healthy]
        return len({x.node for x in pods}) >= 2, f"{len(pods)} ready pods on {len({x.node for x in pods})} nodes"

    runbook.wait_for(rolled_out, timeout=p.ready_timeout_s, interval=2, what=f"{p.app_name} rolled out")

    def every_node_answers() -> tuple[bool, list[str]]:
        answers[:] = ingress.ask_every_node({n: address[n] for n in ingress_names}, p.app_host,
                                            timeout=min(5.0, p.timeout_s))
        return all(a.ok for a in answers), [f"{a.node}: {a.error or a.status}" for a in answers if not a.ok]

    runbook.wait_for(every_node_answers, timeout=p.ready_timeout_s, interval=2,
                     what=f"every ingress node to answer for {p.app_host}")
    return (", ".join(f"{a.kind}/{a.name} {a.action}" for a in applied)
            + f"; pods on {', '.join(sorted({x.node for x in pods}))}")


if proceed:
    print(guard.run("deploy the test app", deploy_app))
    display(pd.DataFrame([{"asked node": a.node, "HTTP": a.status, "pod": a.pod, "pod's node": a.served_by}
                          for a in answers]))

# %% [markdown]
# ## Step 2: the front doors
# keepalived on the ingress nodes over SSH (its configuration carries a marker, so the teardown removes
# only what the drill wrote), HAProxy on this machine in front of every node's ingress, health-checking
# `GET /` with the app's Host header. DNS round-robin needs nothing: the records exist (checked above) and
# are not touched.

# %%
# papermill_description=Set up the front doors
vip_door = None
haproxy_door = None


def free_port(host: str) -> int:
    """A TCP port nobody listens on at ``host`` now (HAProxy binds it next)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def set_up_front_doors() -> str:
    global vip_door, haproxy_door
    done = []
    if "keepalived-vip" in p.strategies:
        nodes = tuple(VrrpNode(n, address[n], SshRunner(conns[n], n)) for n in vrrp_order)
        vip_door = KeepalivedVip(p.vip, nodes, prefix=p.vip_prefix, advert_int=p.vrrp_advert_s,
                                 virtual_router_id=p.vrrp_router_id, host_header=p.app_host, timeout=p.timeout_s)
        vrrp = {"vip": p.vip, "prefix": p.vip_prefix, "nodes": [[n, address[n]] for n in vrrp_order]}
        ledger.record("keepalived", p.vip, **vrrp)
        vip_door.setup()
        ledger.record("keepalived", p.vip, **vrrp, interfaces=dict(vip_door.interfaces))
        done.append(f"VIP {p.vip} held by {vip_door.wait_single_holder(p.timeout_s)}")
    if "haproxy" in p.strategies:
        port = p.haproxy_port or free_port(p.haproxy_bind)
        haproxy_door = HaproxyFrontDoor(p.haproxy_bind, port, {n: address[n] for n in ingress_names},
                                        check_inter=p.haproxy_check_inter_s, fall=p.haproxy_fall,
                                        rise=p.haproxy_rise, timeout_connect=p.haproxy_connect_timeout_s,
                                        retries=p.haproxy_retries, timeout_server=p.haproxy_server_timeout_s,
                                        retry_on="conn-failure empty-response response-timeout",
                                        host_header=p.app_host)
        haproxy_door.setup()
        ledger.record("haproxy", f"{p.haproxy_bind}:{port}", pid=haproxy_door.pid, workdir=str(haproxy_door.workdir))
        runbook.wait_for(lambda: (set(haproxy_door.server_status().values()) == {"UP"},
                                  str(haproxy_door.server_status())),
                         timeout=p.timeout_s, interval=0.2, what="HAProxy to mark every node UP")
        done.append(f"HAProxy on {p.haproxy_bind}:{port}, every node UP")
    return "; ".join(done) or "nothing to set up"


if proceed:
    print(guard.run("set up the front doors", set_up_front_doors))

# %% [markdown]
# ## Step 3: warm up
# A few seconds of requests through every lane, not counted: the first connections, ARP entries and DNS
# answers are made here, and a front door that does not work shows now, before anything is broken.

# %%
# papermill_description=Warm up
lanes: tuple = ()


def warm_up() -> str:
    global lanes
    lanes = failover.lanes(p.strategies, app_host=p.app_host, vip=p.vip,
                           haproxy=(p.haproxy_bind, haproxy_door.port) if haproxy_door else None,
                           naive_connect_timeout=p.naive_connect_timeout_s,
                           fallback_connect_timeout=p.fallback_connect_timeout_s,
                           stagger=p.happy_eyeballs_stagger_s, read_timeout=p.read_timeout_s)
    if p.warmup_s <= 0:
        return "skipped (warmup_s = 0)"
    res = prb.run(prb.ProbeConfig(lanes, rate=p.rate, duration=p.warmup_s, dns_server=p.dns_server,
                                  dns_port=p.dns_port, progress=False))
    bad = res.requests[res.requests["error"].notna()]
    if not bad.empty:
        raise RunbookError(f"{len(bad)} of {len(res.requests)} warm-up requests failed before any fault: "
                           + ", ".join(f"{lane}: {err}" for (lane, err), _ in bad.groupby(["lane", "error"])),
                           fix="a front door does not work: read the errors; nothing was faulted")
    return f"{len(res.requests)} requests, none failed"


if proceed:
    print(guard.run("warm up", warm_up))

# %% [markdown]
# ## Step 4: probe, fault, record
# **Safety: from here `fault_node` goes down** (`fault_mode`), `before_s` seconds into the probe, for
# the rest of the run. The probe sends on its timetable the whole time; the watches record what the
# cluster does (node Ready -> NotReady from a watch on the API through `api_node`, the app's ready
# endpoints), what keepalived does (each node's notify log: the VIP's moves) and what HAProxy does
# (server DOWN/UP from its stats socket). A fault that does not happen (the injection command fails)
# stops the drill with that error; the teardown still runs.

# %%
# papermill_description=Probe, fault, record
events = prb.EventLog()
result = None
fault_state = {"injected": False, "restored": False, "at": None}
watchers: list = []


def probe_and_fault() -> str:
    global result
    watchers[:] = [kube.node_watch(api, events, timeout=min(10.0, p.timeout_s)).start(),
                   kube.endpoints_watch(api, events, p.app_namespace, p.app_name,
                                        timeout=min(10.0, p.timeout_s)).start()]
    if vip_door is not None:
        watchers.append(vip_door.watcher(events, interval=0.2).start())
    if haproxy_door is not None:
        watchers.append(haproxy_door.watcher(events, interval=0.05).start())
    run = prb.start(prb.ProbeConfig(lanes, rate=p.rate, duration=p.before_s + p.after_s, dns_server=p.dns_server,
                                    dns_port=p.dns_port, drain=p.naive_connect_timeout_s + p.read_timeout_s + 1,
                                    progress=False), events, isolated=True)
    try:
        # Half a request interval after before_s: no request is sent at the very instant of the fault.
        time.sleep(max(0.0, run.t0 + p.before_s + 0.5 / p.rate - time.monotonic()))
        events.add("fault", f"{fault_node} {p.fault_mode}", source=injector.kind)
        fault_state["at"] = datetime.now(timezone.utc).isoformat()
        ledger.record("fault", fault_node, address=address[fault_node], mode=p.fault_mode, injector=p.fault_injector)
        injector.inject(fault_node, address[fault_node], p.fault_mode)
        fault_state["injected"] = True
        events.add("fault done", f"{fault_node} {p.fault_mode}", source=injector.kind)
        result = run.wait()
    finally:
        run.stop()  # the watchers go on until the node is back (HAProxy UP, Ready again); teardown stops them
    return f"{len(result.requests)} requests, {len(result.events)} events"


if proceed:
    print(guard.run("probe, fault, record", probe_and_fault))

# %% [markdown]
# ## Step 5: the node comes back
# Power on (or resume, or heal the partition) and wait until Kubernetes reports the node Ready again.
# With `restore_power=False` the node stays down: the teardown then cannot clean keepalived on it.

# %%
# papermill_description=Restore the node


def restore_node() -> str:
    if not fault_state["injected"]:
        return "nothing to restore"
    global result
    events.add("power back", f"{fault_node} {p.fault_mode}", source=injector.kind)
    injector.restore(fault_node, address[fault_node], p.fault_mode)
    fault_state["restored"] = True
    kube.wait_for_nodes(api, [fault_node], "Ready", timeout=p.ready_timeout_s)
    ledger.done("fault", fault_node)
    if haproxy_door is not None:  # its checks need `rise` passes to mark the node UP again; not a failure if late
        try:
            runbook.wait_for(lambda: (any(e.kind == "server UP" and fault_node in e.detail
                                          for e in events.frame().itertuples()), "no UP yet"),
                             timeout=30, interval=0.5, what=f"HAProxy to mark {fault_node} UP again")
        except WaitTimedOut as exc:
            print(f"note: {exc}")
    for w in watchers:
        w.stop()
    if result is not None:  # the return is on the record too (after the probe's own timeline)
        result = dataclasses.replace(result, events=events.frame())
    return f"{fault_node} Ready"


if proceed and p.restore_power:
    print(guard.run("restore the node", restore_node))

# %% [markdown]
# ## Teardown (runs even after a failure)
# Everything the drill set up is removed, whatever happened above: the fault is undone if it was not yet,
# keepalived is stopped and its configuration, notify script and VIP removed on every node, HAProxy is
# stopped. Then the nodes are checked: no keepalived running or configured by the drill, no HAProxy of
# the drill, and `app_host` still resolving exactly as before (the drill never changes DNS). Each part is
# tried even when another failed; a failed part is named and fails the run at the end.
# Each part leaves the drill's ledger once done; what is still listed (a part that failed, a node left
# down by `restore_power=False`) is undone by the next real run or by `--cleanup`.

# %%
# papermill_description=Teardown
left_behind: dict = {}


def undo_fault() -> str:
    if fault_state["injected"] and not fault_state["restored"] and p.restore_power:
        injector.restore(fault_node, address[fault_node], p.fault_mode)
        fault_state["restored"] = True
        kube.wait_for_nodes(api, [fault_node], "Ready", timeout=p.ready_timeout_s)
        ledger.done("fault", fault_node)
        return f"{fault_node} restored"
    if fault_state["injected"] and not fault_state["restored"]:
        return f"{fault_node} stays down (restore_power is False); listed in {ledger.path} for the next run"
    ledger.done("fault", fault_node)  # not injected (the injector said so) or restored already
    return "nothing to undo"


def remove_keepalived() -> None:
    vip_door.teardown()
    ledger.done("keepalived", p.vip)


def stop_haproxy() -> None:
    haproxy_door.teardown()
    ledger.done("haproxy", f"{p.haproxy_bind}:{haproxy_door.port}")


def check_clean() -> str:
    for n, conn in conns.items():
        res = ssh.run(conn, ["sh", "-c", f"systemctl is-active keepalived; grep -l 'managed by runbooks_lib' "
                             f"{KEEPALIVED_CONF} 2>/dev/null; ip -o -4 addr show | grep -w '{p.vip}' || true"],
                      timeout=p.timeout_s, check=False)
        lines = [x for x in res.stdout.split() if x and x not in ("inactive", "unknown", "failed")]
        if lines:
            left_behind[n] = lines
    if haproxy_door is not None and haproxy_door.running:
        left_behind["haproxy"] = ["still running"]
    dns_after = ingress.resolve(p.app_host, p.dns_server, port=p.dns_port, timeout=min(5.0, p.timeout_s))
    if dns_after != dns_before:
        left_behind["dns"] = [f"{p.app_host} now {list(dns_after)}, was {list(dns_before)}"]
    if left_behind:
        raise RunbookError(f"left behind: {left_behind}", fix="remove what is named by hand")
    return "no keepalived, no HAProxy, DNS unchanged"


if proceed:
    for w in watchers:
        w.stop()
    print(guard.always("undo the fault", undo_fault))
    if vip_door is not None:
        guard.always("remove keepalived", remove_keepalived)
    if haproxy_door is not None:
        guard.always("stop HAProxy", stop_haproxy)
    print(guard.always("check nothing is left", check_clean))
for conn in conns.values():
    conn.close()

# %% [markdown]
# ## Results: the impact table
# Per strategy, over the whole run: requests, failed %, slow % (over `slow_ms`); inside the impact window
# (from the fault to the last bad request of any strategy): p50/p99/max latency; time to detect (fault to
# first bad request), time to recover (first to last bad request), availability (successful / total).

# %%
# papermill_description=Impact table
table = pd.DataFrame()
fault_at = 0.0
if result is not None:
    fault_at = analysis.fault_time(result.events)
    table = analysis.impact_table(result.requests, fault_at=fault_at, target=p.slow_ms / 1000)
    display(table)
    display(result.events[["t", "kind", "detail", "source"]].assign(t=lambda e: (e["t"] - fault_at).round(3)))

# %% [markdown]
# ## Results: the failover figure
# One row per strategy on shared axes, t = 0 at the fault: every request's latency (log scale) coloured by
# outcome and marked by the node that served it, the per-second percentiles and achieved rate, the errors
# per second by class; dotted lines for every event, the impact window shaded. Saved as PNG beside the run
# record.

# %%
# papermill_description=Figure
figure_path = None
if result is not None:
    out = os.environ.get("PAPERMILL_OUTPUT_PATH") or str(
        runner.runs_dir() / p.cluster_name / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-failover-test.ipynb")
    figure_path = runbook.summary_path_for(out).with_name(Path(out).stem + ".failover.png")
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    fig = plots.figure_for(result, target=p.slow_ms / 1000,
                           title=f"{p.cluster_name}: {p.fault_mode} fault of {fault_node} at t = 0")
    fig.savefig(figure_path, dpi=70)
    display(Image(filename=str(figure_path)))
    raw = result.save(figure_path.with_name(Path(out).stem + ".probe"))
    print(f"figure: {figure_path}\nraw samples: {raw}")

# %% [markdown]
# ## Which front door, at what cost
# Generated from the numbers above. The baseline is the article's: with N ingress nodes behind DNS
# round-robin, about 1/N of new connections go to the dead node and a naive client hangs until its connect
# timeout. The trade-off of the recommended HAProxy settings: checks every 0.2 s cost (nodes / 0.2) checks
# per second from every HAProxy (20/s for 4 nodes, cheap), and a 0.1 s connect timeout with fall 2 marks a
# node DOWN after about half a second without answers: a node frozen for that long (a GC pause, a
# saturated VPS) is taken out too (a false positive), and put back after `rise` good checks. Longer
# intervals trade those false positives for a longer recovery; `retries` + `redispatch` keep the requests
# that hit the dead node in the meantime from failing, at the cost of one connect timeout each.

# %%
# papermill_description=Conclusion
moments: dict = {}
verdict_bar = None
naive_share = None
dead_share = 1 / max(1, len(dns_before))
if result is not None:
    ev = result.events
    power_back = failover.first_event_after(ev, "power back", fault_at)
    moments = {"VIP moved": failover.first_event_after(ev, "vip moved", fault_at),
               "HAProxy marked it DOWN": failover.first_event_after(ev, "server DOWN", fault_at, fault_node),
               "Kubernetes marked it NotReady": failover.first_event_after(ev, "node NotReady", fault_at,
                                                                           fault_node),
               "endpoints changed": failover.first_event_after(ev, "endpoints changed", fault_at),
               "power came back": power_back,
               "Kubernetes marked it Ready again": failover.first_event_after(ev, "node Ready", fault_at, fault_node),
               "HAProxy marked it UP again": failover.first_event_after(ev, "server UP", fault_at, fault_node)}
    if "dns-naive" in p.strategies:
        # Stuck: failed, or waited at least half the naive client's connect timeout (not merely slow).
        naive_share = failover.post_fault_bad_share(result.requests, "dns-naive", fault_at=fault_at,
                                                    target=p.naive_connect_timeout_s / 2)
    verdict_bar = failover.judge(table, p.recommended, bar, requests=result.requests, fault_at=fault_at)
    paragraph = failover.conclusion(table, nodes=len(dns_before), dead_share=dead_share, naive_share=naive_share,
                                    naive_timeout=p.naive_connect_timeout_s, recommended=p.recommended,
                                    verdict=verdict_bar, bar=bar, moments=moments)
    print(paragraph)

# %% [markdown]
# ## Summary
# Compared by nbval (the stable lines) and written as JSON beside the output notebook with every number.

# %%
# NBVAL_CHECK_OUTPUT
drilled = proceed and guard.error is None
verdict = (f"{p.cluster_name}: DRY RUN: nothing changed" if not proceed else
           f"{p.cluster_name}: DRILL FAILED at {guard.failed_step!r}: {type(guard.error).__name__}: "
           f"{(str(guard.error).splitlines() or [''])[0]}" if guard.error else
           f"{p.cluster_name}: {p.recommended} {'MEETS' if verdict_bar and verdict_bar.meets else 'MISSES'} the bar"
           + ("" if not verdict_bar or verdict_bar.meets else f" ({'; '.join(verdict_bar.misses)})"))
summary = runbook.write_summary("failover-test", p.cluster_name, {
    "dry_run": not proceed,
    "verdict": verdict,
    "fault": {"node": fault_node, "address": address[fault_node], "mode": p.fault_mode,
              "injector": p.fault_injector, **fault_state},
    "strategies": list(p.strategies),
    "nodes": len(dns_before),
    "dns": {"name": p.app_host, "server": p.dns_server, "before": list(dns_before)},
    "impact": {k: {c: (None if pd.isna(v) else v) for c, v in row.items()}
               for k, row in table.to_dict(orient="index").items()},
    "naive_bad_share": naive_share,
    "dead_share": round(dead_share, 4),
    "moments_s": moments,
    "events": ([] if result is None else
               [{"t": round(float(e.t - fault_at), 3), "kind": e.kind, "detail": e.detail, "source": e.source}
                for e in result.events.itertuples()]),
    "bar": {"strategy": p.recommended, "failed": bar.failed, "p99_ms": bar.p99_ms, "recovery_s": bar.recovery_s,
            "meets": bool(verdict_bar and verdict_bar.meets), "misses": list(verdict_bar.misses) if verdict_bar else [],
            "measured": ({"failed": verdict_bar.failed, "p99_ms": verdict_bar.p99_ms,
                          "recovery_s": verdict_bar.recovery_s} if verdict_bar else None)},
    "conclusion": failover.conclusion(table, nodes=len(dns_before), dead_share=dead_share, naive_share=naive_share,
                                      naive_timeout=p.naive_connect_timeout_s, recommended=p.recommended,
                                      verdict=verdict_bar, bar=bar, moments=moments) if result is not None else "",
    "figure": str(figure_path) if figure_path else None,
    "left_behind": left_behind,
    "teardown_errors": guard.teardown_errors,
    "error": f"{type(guard.error).__name__}: {guard.error}" if guard.error else None,
}, steps=guard.steps)
print(f"cluster: {p.cluster_name}")
print(f"fault: {p.fault_mode} via {p.fault_injector}")
print(f"strategies: {', '.join(p.strategies)}")

# %% [markdown]
# ## Verdict
# The first failure above is raised here, after the teardown; a missed bar is reported, not raised (the
# drill measured what it should).

# %%
# papermill_description=Verdict
print(verdict)
guard.raise_if_failed()
