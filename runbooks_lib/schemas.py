"""Typed parameter schemas of the runbooks, and the checks beyond types.

:class:`Target` says which cluster a run is for and how to reach it; every
runbook's schema extends it, so one parameter file (params/lab.yaml,
params/example-vps.yaml) serves every runbook. Defaults point at the lab
(``${RUNBOOKS_LAB_DIR:-/var/lib/runbooks-lab}`` is expanded when validated);
relative paths in defaults are relative to the repository root.

:func:`from_namespace` is what a runbook's validate cell calls. Pure apart
from reading the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from runbooks_lib import errors, params

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = "${RUNBOOKS_LAB_DIR:-/var/lib/runbooks-lab}"
# Where `runbooks lab cluster` wrote the inventory (its --inventory-dir; default LAB_DIR/inventory).
LAB_INVENTORY = "${RUNBOOKS_LAB_INVENTORY_DIR:-" + LAB_DIR + "/inventory}"
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
FIX_NOTHING_CHANGED = "correct the parameter file or -p values; nothing was changed"


def not_ip_addresses(label: str, values: Iterable[str]) -> list[str]:
    """One problem line per value that is not an IP address (``label: 'x' is not an IP address``). Pure."""
    problems = []
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            problems.append(f"{label}: {value!r} is not an IP address")
    return problems


_FILE_CHECKS = {
    "inventory": (lambda p: p.inventory.is_file(),
                  "inventory {p.inventory} does not exist (the install runbook writes it)"),
    "kubespray_dir": (lambda p: (p.kubespray_dir / "cluster.yml").is_file(),
                      "kubespray_dir {p.kubespray_dir} is not a Kubespray checkout (no cluster.yml)"),
    "known_hosts": (lambda p: p.known_hosts.is_file(),
                    "known_hosts {p.known_hosts} does not exist (host keys are always verified)"),
    "ssh_key": (lambda p: p.ssh_key.is_file() and os.access(p.ssh_key, os.R_OK),
                "ssh_key {p.ssh_key} is missing or not readable by this user"),
    "kubeconfig": (lambda p: p.kubeconfig.is_file(), "kubeconfig {p.kubeconfig} does not exist"),
}


def missing_files(p: Target, *names: str) -> list[str]:
    """Problem lines for the target's files that are missing: names among ``_FILE_CHECKS``. Reads files only."""
    problems = []
    for name in names:
        present, message = _FILE_CHECKS[name]
        if not present(p):
            problems.append(message.format(p=p))
    return problems


def not_positive(p: object, *names: str) -> list[str]:
    """``timeouts must be positive`` (naming them) when any of the attributes ``names`` is <= 0. Pure."""
    bad = [name for name in names if getattr(p, name) <= 0]
    return [f"timeouts must be positive: {', '.join(bad)}"] if bad else []


def refuse(problems: list[str], what: str, fix: str = FIX_NOTHING_CHANGED) -> None:
    """Raise BadParameters listing every problem (``invalid WHAT parameters: ...``); nothing when there is none."""
    if problems:
        raise errors.BadParameters(f"invalid {what} parameters: " + "; ".join(problems), fix=fix)


@dataclass(frozen=True)
class Target:
    """The cluster a runbook acts on and how to reach it (no secrets: paths to them)."""

    cluster_name: str = "lab"
    inventory: Path = Path(f"{LAB_INVENTORY}/hosts.yaml")
    kubespray_dir: Path = Path("runbooks_lib/lab/kubespray")
    ansible_playbook: str = "ansible-playbook"
    kubeconfig: Path = Path(f"{LAB_INVENTORY}/artifacts/admin.conf")
    ssh_user: str = "root"
    ssh_key: Path = Path(f"{LAB_DIR}/ssh/id_ed25519")
    known_hosts: Path = Path(f"{LAB_DIR}/ssh/known_hosts")
    # The machines by inventory name -> address, and their roles; empty: as in the inventory.
    hosts: dict[str, str] = field(default_factory=dict)
    control_planes: tuple[str, ...] = ()
    etcd_members: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiagnosticsParams(Target):
    """Parameters of the diagnostics runbook (read-only)."""

    inspect_nodes: tuple[str, ...] = ()  # empty: every control plane and etcd member
    journal_lines: int = 20
    cert_warn_days: int = 30
    timeout_s: float = 30.0


def check_target(target: Target) -> Target:
    """Checks beyond types: names, unique valid addresses, roles naming known hosts, odd etcd count.

    The layout checks apply only when ``hosts`` is given. Raises BadParameters
    listing every problem. Pure.
    """
    problems = []
    if not _HOST_NAME.match(target.cluster_name):
        problems.append(f"cluster_name {target.cluster_name!r}: use lower-case letters, digits and '-'")
    if target.hosts:
        seen: dict[str, str] = {}
        for name, address in target.hosts.items():
            if not _HOST_NAME.match(name):
                problems.append(f"hosts: {name!r} is not a valid host name (lower-case letters, digits, '-')")
            problems += not_ip_addresses(f"hosts: {name}", [address])
            if address in seen:
                problems.append(f"hosts: {name} and {seen[address]} have the same address {address}")
            seen.setdefault(address, name)
        for role in ("control_planes", "etcd_members", "workers"):
            for name in getattr(target, role):
                if name not in target.hosts:
                    problems.append(f"{role}: {name!r} is not in hosts ({', '.join(target.hosts)})")
        if not target.control_planes:
            problems.append("control_planes: at least one host is needed")
        if len(target.etcd_members) % 2 == 0:
            problems.append(f"etcd_members: {len(target.etcd_members)} members; etcd needs an odd number "
                            "(1, 3 or 5) to keep a majority")
    if problems:
        raise errors.BadParameters("invalid target:\n" + "\n".join(f"  - {p}" for p in problems),
                                   fix="correct the parameter file; nothing was run")
    return target


def _anchor(schema: type, values: Mapping[str, Any], base: Path) -> dict[str, Any]:
    import typing

    hints = typing.get_type_hints(schema)
    out = {}
    for key, value in values.items():
        if hints.get(key) is Path and isinstance(value, (str, Path)) and str(value):
            path = Path(params.expand_env(str(value))).expanduser()
            value = path if path.is_absolute() else Path(os.path.normpath(base / path))
        out[key] = value
    return out


def from_namespace(schema: type[T], namespace: Mapping[str, Any], *, base_dir: Path = REPO_ROOT) -> T:
    """Validate a runbook's parameters as found in its namespace (``globals()``).

    ``${VAR:-default}`` is expanded, relative paths are taken relative to the
    repository root (so the kernel may run in the root or in notebooks/),
    types are checked and, for a Target, :func:`check_target` runs. Raises
    BadParameters naming every problem.
    """
    values = {}
    for f in fields(schema):  # type: ignore[arg-type]
        if f.name in namespace:
            values[f.name] = params.expand_env(namespace[f.name])
        elif isinstance(f.default, Path):
            values[f.name] = f.default  # expanded and anchored below
    result = params.validate(schema, _anchor(schema, values, base_dir))
    if isinstance(result, Target):
        check_target(result)
    return result


def load(schema: type[T], files: list[str | Path]) -> T:
    """Validate parameter files (in order) against ``schema``; relative paths are relative to each file."""
    merged: dict[str, Any] = {}
    for name in files:
        raw = params.expand_env(params.read_files([name]))
        merged.update(_anchor(schema, raw, Path(name).expanduser().resolve().parent))
    result = params.validate(schema, merged)
    if isinstance(result, Target):
        check_target(result)
    return result


@dataclass(frozen=True)
class PrepareParams(Target):
    """Parameters of the prepare-nodes runbook (destructive: changes every chosen machine)."""

    limit: tuple[str, ...] = ()  # inventory host names; empty: every host of the inventory
    upstream_dns_servers: tuple[str, ...] = ("${RUNBOOKS_LAB_DNS:-10.213.7.1}",)
    install_python: bool = True
    dry_run: bool = True
    confirm: str = ""
    timeout_s: float = 120.0


def check_prepare(p: PrepareParams, known: list[str] | tuple[str, ...]) -> list[str]:
    """Checks of PrepareParams beyond types; returns the hosts to prepare (``limit`` or all, inventory order).

    ``known``: the inventory's host names. Raises BadParameters naming every
    problem: unknown or repeated hosts in ``limit``, upstream DNS servers that
    are not IP addresses or are loopback, a non-positive timeout. Pure.
    """
    problems = []
    if not p.upstream_dns_servers:
        problems.append("upstream_dns_servers: give at least one DNS server address")
    for addr in p.upstream_dns_servers:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            problems.append(f"upstream_dns_servers: {addr!r} is not an IP address")
            continue
        if ip.is_loopback:
            problems.append(f"upstream_dns_servers: {addr} is a loopback address; systemd-resolved would "
                            "ask itself (the 127.0.0.53 loop this runbook removes)")
    unknown = [name for name in p.limit if name not in known]
    if unknown:
        problems.append(f"limit: not in the inventory: {', '.join(unknown)} (hosts: {', '.join(known)})")
    if len(set(p.limit)) != len(p.limit):
        problems.append("limit: a host is named twice")
    if p.timeout_s <= 0:
        problems.append("timeout_s: must be positive")
    if problems:
        raise errors.BadParameters("invalid parameters for PrepareParams: " + "; ".join(problems),
                                   fix="correct the parameter file or -p values; nothing was run")
    return [name for name in known if not p.limit or name in p.limit]


@dataclass(frozen=True)
class InstallParams(Target):
    """Parameters of the install-cluster runbook (destructive: runs cluster.yml).

    The layout defaults are the default lab's (node1..node4 = 10.213.7.11-14; node5 stays spare).
    """

    hosts: dict[str, str] = field(default_factory=lambda: {f"node{i}": f"10.213.7.{10 + i}" for i in range(1, 5)})
    control_planes: tuple[str, ...] = ("node1", "node2")
    etcd_members: tuple[str, ...] = ("node1", "node2", "node3")
    workers: tuple[str, ...] = ("node3", "node4")
    ingress_nginx: bool = True  # ingress-nginx on every node (addons.yml)
    ingress_host_network: bool = True  # ... listening on the nodes' port 80 (host network)
    helm: bool = True
    upstream_dns_servers: tuple[str, ...] = ()  # group_vars/all/all.yml; empty: left unset
    kube_resolv_conf: str = ""  # kubelet's resolvConf in group_vars/all/all.yml; empty: left unset
    fix_coredns: bool = True  # fix the 127.0.0.53 CrashLoopBackOff on the nodes if it appears
    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = "uuid.awesome.lab"
    dns_server: str = "10.213.7.1"  # empty: skip the DNS check
    ansible_env: dict[str, str] = field(default_factory=dict)  # extra environment for ansible-playbook
    dry_run: bool = True
    confirm: str = ""
    playbook_timeout_s: float = 1800.0
    ready_timeout_s: float = 300.0
    timeout_s: float = 30.0


def check_install(p: InstallParams) -> InstallParams:
    """Checks of the install parameters beyond types and the target's. Raises BadParameters. Reads files only."""
    problems = []
    if p.inventory.suffix.lower() not in (".yaml", ".yml", ".ini"):
        problems.append(f"inventory {p.inventory}: name it hosts.yaml (YAML) or inventory.ini (INI)")
    if not p.hosts and not p.inventory.is_file():
        problems.append(f"hosts is empty and the inventory {p.inventory} does not exist: give hosts and roles")
    if p.hosts and not p.workers:
        problems.append("workers: at least one host is needed")
    problems += missing_files(p, "kubespray_dir", "ssh_key", "known_hosts")
    problems += not_ip_addresses("upstream_dns_servers / dns_server",
                                 (*p.upstream_dns_servers, *([p.dns_server] if p.dns_server else [])))
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", p.app_host):
        problems.append(f"app_host {p.app_host!r} is not a DNS name")
    problems += not_positive(p, "playbook_timeout_s", "ready_timeout_s", "timeout_s")
    refuse(problems, "install")
    return p


@dataclass(frozen=True)
class SnapshotParams(Target):
    """Parameters of the etcd-snapshot runbook (non-destructive: safe on a timer)."""

    member: str = ""  # etcd host to save on; empty: a healthy member, not the leader when there is a choice
    backup_dir: Path = Path(f"{LAB_DIR}/etcd-backups")
    remote_dir: str = "/var/tmp"
    keep_last: int = 7  # 0: rule off
    keep_days: float = 0.0  # 0: rule off
    drill: bool = True
    drill_keys: tuple[str, ...] = ("/registry/configmaps/kube-public/cluster-info",
                                   "/registry/deployments/default/sticky-session")
    drill_bin_dir: str = ""  # directory of etcd/etcdctl(/etcdutl) for the drill; empty: PATH
    drill_snapshot: str = ""  # drill this backup (a file name in backup_dir) instead of taking a new one
    timeout_s: float = 300.0


def check_snapshot(p: SnapshotParams) -> SnapshotParams:
    """Checks beyond types: retention numbers, timeouts, key names, the backup to drill. Raises BadParameters. Pure."""
    problems = []
    if p.keep_last < 0 or p.keep_days < 0:
        problems.append("keep_last and keep_days: 0 (off) or positive")
    problems += not_positive(p, "timeout_s")
    problems += [f"drill_keys: {k!r} is not an etcd key (starts with /)" for k in p.drill_keys if not k.startswith("/")]
    if p.drill_snapshot and ("/" in p.drill_snapshot or not p.drill_snapshot.endswith(".db")):
        problems.append(f"drill_snapshot: {p.drill_snapshot!r}: give a .db file name in backup_dir")
    if not p.remote_dir.startswith("/"):
        problems.append(f"remote_dir: {p.remote_dir!r} must be an absolute path")
    refuse(problems, "snapshot", fix="correct the parameter file or -p values; nothing was run")
    return p


@dataclass(frozen=True)
class RestoreParams(Target):
    """Parameters of the restore-cluster runbook (destructive: rebuilds etcd from a snapshot)."""

    backup_dir: Path = Path(f"{LAB_DIR}/etcd-backups")
    snapshot: str = ""  # a .db file name in backup_dir; empty: the newest verified snapshot of this cluster
    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = "uuid.awesome.lab"
    ansible_env: dict[str, str] = field(default_factory=dict)
    dry_run: bool = True
    confirm: str = ""
    playbook_timeout_s: float = 1800.0
    ready_timeout_s: float = 300.0
    timeout_s: float = 60.0


def check_restore(p: RestoreParams) -> RestoreParams:
    """Checks beyond types: the snapshot name, the Kubespray checkout, files, timeouts. Raises BadParameters."""
    problems = []
    if p.snapshot and ("/" in p.snapshot or not p.snapshot.endswith(".db")):
        problems.append(f"snapshot: {p.snapshot!r}: give a .db file name in backup_dir (or leave it empty)")
    problems += missing_files(p, "kubespray_dir")
    problems += not_positive(p, "playbook_timeout_s", "ready_timeout_s", "timeout_s")
    refuse(problems, "restore")
    return p


@dataclass(frozen=True)
class AddWorkerParams(Target):
    """Parameters of the add-worker runbook (destructive: prepares the new machines, runs scale.yml)."""

    new_workers: dict[str, str] = field(default_factory=lambda: {"node5": "10.213.7.15"})  # name -> IP
    upstream_dns_servers: tuple[str, ...] = ("${RUNBOOKS_LAB_DNS:-10.213.7.1}",)  # as prepare-nodes
    install_python: bool = True
    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = "uuid.awesome.lab"
    dns_server: str = ""  # check app_host's A records there; empty: no DNS check
    dns_command: tuple[str, ...] = ()  # hook setting app_host's A records: argv with {name} and {ips}
    ansible_env: dict[str, str] = field(default_factory=dict)
    dry_run: bool = True
    confirm: str = ""
    playbook_timeout_s: float = 1800.0
    ready_timeout_s: float = 300.0
    timeout_s: float = 30.0


@dataclass(frozen=True)
class RemoveWorkerParams(Target):
    """Parameters of the remove-worker runbook (destructive: drains and removes nodes with remove-node.yml)."""

    remove: tuple[str, ...] = ("node4",)  # inventory host names of the workers to remove
    node_state: str = "auto"  # auto (SSH and the Node's Ready condition decide), alive or dead
    allow_last_worker: bool = False  # remove the last worker even if pods then have nowhere to go
    drain_timeout_s: int = 120  # bound of the drain (ours for an alive node; remove-node's drain_timeout)
    dead_drain_timeout_s: int = 60  # remove-node's drain_timeout for a dead node
    dead_drain_grace_period_s: int = 10  # remove-node's drain_grace_period for a dead node
    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = "uuid.awesome.lab"
    dns_server: str = ""  # check app_host's A records there; empty: no DNS check
    dns_command: tuple[str, ...] = ()  # hook setting app_host's A records: argv with {name} and {ips}
    ansible_env: dict[str, str] = field(default_factory=dict)
    dry_run: bool = True
    confirm: str = ""
    playbook_timeout_s: float = 900.0
    ready_timeout_s: float = 300.0
    timeout_s: float = 30.0


def _check_common_worker(p: AddWorkerParams | RemoveWorkerParams, problems: list[str]) -> None:
    problems += missing_files(p, "kubespray_dir", "inventory", "known_hosts", "ssh_key")
    problems += not_ip_addresses("dns_server", [p.dns_server] if p.dns_server else [])
    if p.dns_command and "{ips}" not in p.dns_command:
        problems.append("dns_command: one word must be {ips} (replaced by the ingress nodes' IPs)")
    problems += not_positive(p, "playbook_timeout_s", "ready_timeout_s", "timeout_s")


def check_add_worker(p: AddWorkerParams) -> AddWorkerParams:
    """Checks of AddWorkerParams beyond types: names, IPs, files. Raises BadParameters. Reads files only."""
    problems: list[str] = []
    if not p.new_workers:
        problems.append("new_workers: name at least one host (name -> IP)")
    seen: dict[str, str] = {}
    for name, ip in p.new_workers.items():
        if not _HOST_NAME.match(name):
            problems.append(f"new_workers: {name!r} is not a valid host name (lower-case letters, digits, '-')")
        problems += not_ip_addresses(f"new_workers: {name}", [ip])
        if ip in seen:
            problems.append(f"new_workers: {name} and {seen[ip]} have the same IP {ip}")
        seen.setdefault(ip, name)
    problems += not_ip_addresses("upstream_dns_servers", p.upstream_dns_servers)
    _check_common_worker(p, problems)
    refuse(problems, "add-worker")
    return p


def check_remove_worker(p: RemoveWorkerParams) -> RemoveWorkerParams:
    """Checks of RemoveWorkerParams beyond types. Raises BadParameters. Reads files only."""
    problems: list[str] = []
    if not p.remove:
        problems.append("remove: name at least one worker")
    if len(set(p.remove)) != len(p.remove):
        problems.append("remove: a host is named twice")
    if p.node_state not in ("auto", "alive", "dead"):
        problems.append(f"node_state {p.node_state!r}: use auto, alive or dead")
    if p.drain_timeout_s <= 0 or p.dead_drain_timeout_s <= 0 or p.dead_drain_grace_period_s < 0:
        problems.append("drain timeouts must be positive (grace period not negative)")
    _check_common_worker(p, problems)
    refuse(problems, "remove-worker")
    return p


@dataclass(frozen=True)
class ReplaceParams(Target):
    """Parameters of the replace-control-plane runbook (destructive: removes an etcd member, runs playbooks).

    ``replacement`` equal to ``dead_node`` means the same host reinstalled with the same IP
    (``replacement_ip`` is then ignored); any other name is a new machine at ``replacement_ip``.
    """

    dead_node: str = "node1"
    replacement: str = "node5"
    replacement_ip: str = "${RUNBOOKS_LAB_SPARE_IP:-10.213.7.15}"
    allow_answering_dead_node: bool = False  # treat a node as dead even though its etcd or API answers
    upstream_dns_servers: tuple[str, ...] = ("${RUNBOOKS_LAB_DNS:-10.213.7.1}",)  # for preparing the replacement
    app_host: str = "uuid.awesome.lab"  # the test app's host name, asked on every ingress node at the end
    kubeconfig_server_after: str = ""  # the kubeconfig's server at the end; empty: left at a survivor
    ansible_env: dict[str, str] = field(default_factory=dict)
    dry_run: bool = True
    confirm: str = ""
    drain_timeout_s: float = 30.0
    playbook_timeout_s: float = 900.0
    ready_timeout_s: float = 300.0
    timeout_s: float = 30.0


def check_replace(p: ReplaceParams) -> ReplaceParams:
    """Checks of the replace parameters beyond types. Raises BadParameters naming every problem. Reads files only."""
    problems = []
    for key in ("dead_node", "replacement"):
        if not _HOST_NAME.match(getattr(p, key)):
            problems.append(f"{key} {getattr(p, key)!r} is not a valid host name")
    if p.replacement != p.dead_node:
        problems += not_ip_addresses("replacement_ip (a new machine needs one)", [p.replacement_ip])
    problems += missing_files(p, "inventory", "kubespray_dir", "known_hosts", "kubeconfig")
    if p.kubeconfig_server_after and not re.fullmatch(r"https://\S+", p.kubeconfig_server_after):
        problems.append("kubeconfig_server_after must be an https:// URL or empty")
    problems += not_positive(p, "drain_timeout_s", "playbook_timeout_s", "ready_timeout_s", "timeout_s")
    refuse(problems, "replace")
    return p


@dataclass(frozen=True)
class FailoverParams(Target):
    """Parameters of the failover drill (faults one node: dry_run/confirm gate). Defaults: the short lab profile."""

    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = "uuid.awesome.lab"
    dns_server: str = "${RUNBOOKS_LAB_DNS:-10.213.7.1}"
    dns_port: int = 53
    strategies: tuple[str, ...] = ("dns-naive", "dns-fallback", "happy-eyeballs", "keepalived-vip", "haproxy")
    recommended: str = "haproxy"
    rate: float = 20.0  # requests per second per strategy
    warmup_s: float = 3.0
    before_s: float = 20.0
    after_s: float = 55.0
    fault_node: str = ""  # empty: an ingress node without app pods, not the controller-manager leader
    fault_mode: str = "hard"
    fault_injector: str = "lab"
    fault_command: tuple[str, ...] = ()
    power_on_command: tuple[str, ...] = ()
    restore_power: bool = True
    naive_connect_timeout_s: float = 10.0
    fallback_connect_timeout_s: float = 0.3
    happy_eyeballs_stagger_s: float = 0.25
    read_timeout_s: float = 5.0
    slow_ms: float = 300.0
    vip: str = "${RUNBOOKS_LAB_VIP:-10.213.7.100}"
    vip_prefix: int = 24
    vrrp_advert_s: float = 0.2
    vrrp_router_id: int = 61
    haproxy_bind: str = "127.0.0.1"
    haproxy_port: int = 0  # 0: a free port
    haproxy_check_inter_s: float = 0.2
    haproxy_fall: int = 2
    haproxy_rise: int = 2
    haproxy_connect_timeout_s: float = 0.1
    haproxy_retries: int = 3
    haproxy_server_timeout_s: float = 1.0
    dry_run: bool = True
    confirm: str = ""
    ready_timeout_s: float = 180.0
    timeout_s: float = 30.0


def check_failover(p: FailoverParams) -> FailoverParams:
    """Checks of the failover parameters beyond types. Raises BadParameters naming every problem. Pure."""
    from runbooks_lib import failover, faults

    problems = []
    unknown = [s for s in p.strategies if s not in failover.STRATEGIES]
    if unknown or not p.strategies:
        problems.append(f"strategies: {unknown or 'none'}; use some of {', '.join(failover.STRATEGIES)}")
    if p.recommended not in p.strategies:
        problems.append(f"recommended {p.recommended!r} is not among the strategies")
    if p.fault_mode not in faults.MODES:
        problems.append(f"fault_mode {p.fault_mode!r}: use one of {', '.join(faults.MODES)}")
    if p.fault_injector not in faults.KINDS:
        problems.append(f"fault_injector {p.fault_injector!r}: use one of {', '.join(faults.KINDS)}")
    if p.fault_injector == "command" and not p.fault_command:
        problems.append("fault_injector 'command' needs fault_command (argv; {node} {address} {mode} substituted)")
    for name, value in (("dns_server", p.dns_server), ("haproxy_bind", p.haproxy_bind),
                        *((("vip", p.vip),) if "keepalived-vip" in p.strategies else ())):
        problems += not_ip_addresses(name, [value])
    positive = {k: getattr(p, k) for k in ("rate", "before_s", "after_s", "naive_connect_timeout_s",
                                            "fallback_connect_timeout_s", "happy_eyeballs_stagger_s",
                                            "read_timeout_s", "slow_ms", "vrrp_advert_s", "haproxy_check_inter_s",
                                            "haproxy_connect_timeout_s", "haproxy_server_timeout_s", "ready_timeout_s",
                                            "timeout_s")}
    problems += [f"{k} must be positive" for k, v in positive.items() if v <= 0]
    if p.warmup_s < 0 or p.haproxy_retries < 0 or p.haproxy_fall < 1 or p.haproxy_rise < 1:
        problems.append("warmup_s and haproxy_retries must be >= 0, haproxy_fall/rise >= 1")
    if not 1 <= p.vrrp_router_id <= 255 or not 8 <= p.vip_prefix <= 32:
        problems.append("vrrp_router_id must be 1..255 and vip_prefix 8..32")
    refuse(problems, "failover", fix="correct the parameter file or -p values; nothing was run")
    return p
