"""Typed parameter schemas of the runbooks, and the checks beyond types.

:class:`Target` says which cluster a run is for and how to reach it; every
runbook's schema extends it, so one parameter file (params/lab.yaml,
params/example-vps.yaml) serves every runbook: its top-level keys are shared
(a key another runbook declares is left to that runbook), and a mapping under
a runbook's name (``add-worker: {new_workers: ...}``) holds values for that
runbook alone (:func:`file_values`).

No default is a lab value. A value that depends on the site (addresses, paths,
host names) is listed in the schema's ``REQUIRED`` and defaults to empty: a run
that lacks one is refused before anything is contacted, naming every missing
key (:func:`require`). ``RUNBOOKS_PARAMS`` (parameter files, ``:``-separated)
fills a notebook's untouched defaults when it runs outside ``runbooks run``
(JupyterLab, nbval): ``make lab-notebooks`` sets it to params/lab.yaml.

:func:`from_namespace` is what a runbook's validate cell calls. Pure apart
from reading the environment and those files.
"""

from __future__ import annotations

import ipaddress
import math
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from runbooks_lib import errors, params

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_ENV = "RUNBOOKS_PARAMS"
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
    """``timeouts must be positive and finite`` (naming them) when an attribute of ``names`` is <= 0, NaN or
    infinite. Pure. (The runbook checks use :func:`out_of_range`, which also states each upper bound.)"""
    bad = [name for name in names if not (math.isfinite(getattr(p, name)) and getattr(p, name) > 0)]
    return [f"timeouts must be positive and finite: {', '.join(bad)}"] if bad else []


@dataclass(frozen=True)
class Bounds:
    """The range a number must be in: ``low..high``, or ``positive and at most high`` when ``above`` (low
    excluded). Always finite. ``unit`` is appended to the stated range (`` s (7 days)``)."""

    low: float
    high: float
    above: bool = False
    unit: str = ""

    def holds(self, value: float) -> bool:
        return math.isfinite(value) and (value > self.low if self.above else value >= self.low) \
            and value <= self.high

    def __str__(self) -> str:
        if not self.above:
            return f"{self.low:g}..{self.high:g}{self.unit}"
        low = "positive" if self.low == 0 else f"more than {self.low:g}"
        return f"{low} and at most {self.high:g}{self.unit}"


WEEK_S = 7 * 24 * 3600
# Timeouts and other durations in seconds: a field whose name ends in _s or contains "timeout".
TIMEOUT_BOUNDS = Bounds(0, WEEK_S, above=True, unit=" s (7 days)")
# Every other number of a runbook schema, by field name (the same name means the same thing in every schema).
NUMBER_BOUNDS: Mapping[str, Bounds] = {
    "journal_lines": Bounds(1, 10000),
    "cert_warn_days": Bounds(0, 3650, unit=" days"),
    "keep_last": Bounds(0, 10000),  # 0: rule off
    "keep_days": Bounds(0, 36500, unit=" days"),  # 0: rule off
    "dead_drain_grace_period_s": Bounds(0, WEEK_S, unit=" s"),  # 0: no grace period
    "dns_port": Bounds(1, 65535),
    "app_port": Bounds(1, 65535),
    "haproxy_port": Bounds(0, 65535),  # 0: a free port
    "rate": Bounds(0, 1000, above=True, unit=" requests per second per strategy"),
    "warmup_s": Bounds(0, 3600, unit=" s"),  # 0: no warm-up
    "before_s": Bounds(0, 3600, above=True, unit=" s"),
    "after_s": Bounds(0, 3600, above=True, unit=" s"),
    "slow_ms": Bounds(0, 60000, above=True, unit=" ms"),
    "vip_prefix": Bounds(8, 32),
    "vrrp_advert_s": Bounds(0.01, 255, unit=" s (keepalived's advert_int)"),
    "vrrp_router_id": Bounds(1, 255),
    "haproxy_fall": Bounds(1, 100),
    "haproxy_rise": Bounds(1, 100),
    "haproxy_retries": Bounds(0, 100),
}


def number_bounds(name: str) -> Bounds | None:
    """The stated range of the number field ``name``: ``NUMBER_BOUNDS``, else TIMEOUT_BOUNDS for a name
    ending in ``_s`` or containing ``timeout``; None: only finiteness is checked."""
    if name in NUMBER_BOUNDS:
        return NUMBER_BOUNDS[name]
    return TIMEOUT_BOUNDS if name.endswith("_s") or "timeout" in name else None


def out_of_range(p: object) -> list[str]:
    """One problem line per number field of the dataclass ``p`` that is not finite or not within its stated
    range (:func:`number_bounds`): ``journal_lines must be 1..10000, got -5``. Every int and float field is
    checked, so a new timeout cannot be forgotten. Pure."""
    problems = []
    for f in fields(p):  # type: ignore[arg-type]
        value = getattr(p, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        bounds = number_bounds(f.name)
        if bounds is not None and not bounds.holds(value):
            problems.append(f"{f.name} must be {bounds}, got {value}")
        elif bounds is None and not math.isfinite(value):
            problems.append(f"{f.name} must be a finite number, got {value}")
    return problems


def bad_app(p: object) -> list[str]:
    """Problems of the test app's image and readiness path (fields ``app_image``, ``app_ready_path``). Pure."""
    problems = []
    image, ready = getattr(p, "app_image", ""), getattr(p, "app_ready_path", "/")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", image or ""):
        problems.append(f"app_image {image!r} is not an image reference (e.g. registry.example.org/team/app:1.4.2)")
    if not re.fullmatch(r"/[^\s]*", ready or ""):
        problems.append(f"app_ready_path {ready!r} must be an absolute URL path such as /healthz")
    return problems


_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def _not_unicast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, link_local: bool) -> str | None:
    """Why ``ip`` cannot be a machine's own address (None: it can). IPv4-mapped IPv6 is judged as IPv4."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_multicast:
        return "a multicast address"
    if ip == _LIMITED_BROADCAST:
        return "the broadcast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK:
        return "in 0.0.0.0/8 ('this network', not a host's address)"
    if ip.is_reserved:
        return "a reserved address"
    if link_local and ip.is_link_local:
        return "a link-local address (not routed between machines)"
    return None


def _parsed_ips(label: str, values: Iterable[str], problems: list[str]) -> Iterator[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """(value, address) for each value that is an IP address; a problem line appended for each that is not."""
    for value in values:
        try:
            yield value, ipaddress.ip_address(value)
        except ValueError:
            problems.append(f"{label}: {value!r} is not an IP address")


def bad_node_addresses(label: str, values: Iterable[str], *, prefix: int | None = None) -> list[str]:
    """Problem lines for values that cannot be a machine's address: not an IP address, unspecified (0.0.0.0,
    ::), loopback, multicast, the broadcast 255.255.255.255, 0.0.0.0/8, reserved (240.0.0.0/4) or link-local
    (169.254.0.0/16, fe80::/10: not routed, and 169.254.169.254 is a cloud's metadata service). With the
    network's ``prefix`` (IPv4, /30 or shorter) its network and broadcast addresses are refused too. Pure."""
    problems: list[str] = []
    for value, ip in _parsed_ips(label, values, problems):
        why = _not_unicast(ip, link_local=True)
        if why is None and prefix is not None and isinstance(ip, ipaddress.IPv4Address) and prefix <= 30:
            net = ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False)
            why = (f"the broadcast address of {net}" if ip == net.broadcast_address
                   else f"the network address of {net}" if ip == net.network_address else None)
        if why:
            problems.append(f"{label}: {value} is {why}; give a unicast address of the machine")
    return problems


def bad_dns_servers(label: str, values: Iterable[str]) -> list[str]:
    """Problem lines for upstream DNS servers that are not IP addresses or cannot be a resolver's: loopback
    (systemd-resolved would ask itself), unspecified, multicast, broadcast, reserved. Link-local is allowed
    (some clouds' resolvers are, e.g. 169.254.169.253). Pure."""
    problems: list[str] = []
    for value, ip in _parsed_ips(label, values, problems):
        why = _not_unicast(ip, link_local=False)
        if why == "a loopback address":
            problems.append(f"{label}: {value} is a loopback address; systemd-resolved would "
                            "ask itself (the 127.0.0.53 loop the prepare-nodes runbook removes)")
        elif why:
            problems.append(f"{label}: {value} is {why}, not a DNS server's")
    return problems


# Directories a remote_dir may not be (exactly; a directory below one, as /var/tmp or /var/lib/x, is fine).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys",
               "/usr", "/var")


def bad_remote_dir(label: str, value: str) -> list[str]:
    """Problem lines for a directory on a remote machine the runbook writes files to (and deletes them from):
    it must be absolute, normalised (no ``..``, ``.``, ``//`` or trailing ``/``), not ``/`` and not one of
    ``SYSTEM_DIRS`` itself. Pure."""
    if not value.startswith("/"):
        return [f"{label}: {value!r} must be an absolute path"]
    if ".." in value.split("/"):
        return [f"{label}: {value!r} must be a normalised path (no '..'); name the directory itself"]
    if value != posixpath.normpath(value) or value.startswith("//"):
        return [f"{label}: {value!r} must be a normalised path (no '.', '//' or trailing '/'): "
                f"{posixpath.normpath('/' + value.lstrip('/'))!r}"]
    if value == "/":
        return [f"{label}: '/' is the root directory; give a scratch directory such as /var/tmp"]
    if value in SYSTEM_DIRS:
        return [f"{label}: {value} is a system directory; give a scratch directory such as /var/tmp"]
    return []


def repeated(label: str, names: Iterable[str]) -> list[str]:
    """``label: NAME is named twice`` for each name given more than once (in order). Pure."""
    seen: set[str] = set()
    twice: list[str] = []
    for name in names:
        if name in seen and name not in twice:
            twice.append(name)
        seen.add(name)
    return [f"{label}: {name} is named twice" for name in twice]


def pin_breaking_env(label: str, env: Mapping[str, str]) -> list[str]:
    """Problem lines for ``ansible_env`` keys that would undo the pinned SSH host keys: those of
    :data:`runbooks_lib.inventory.ssh_pins.ENV_KEYS` (ANSIBLE_SSH_ARGS, ANSIBLE_HOST_KEY_CHECKING,
    ANSIBLE_SSH_EXECUTABLE other than plain ssh, ...), as the run itself refuses them. Pure."""
    from runbooks_lib.inventory import ssh_pins

    problems = []
    for key, value in env.items():
        reason = ssh_pins.ENV_KEYS.get(str(key).upper())
        if reason and not (str(key).upper() == "ANSIBLE_SSH_EXECUTABLE" and str(value).strip() in ssh_pins.TRUSTED_SSH):
            problems.append(f"{label}: {key} {reason}; host keys must stay pinned (remove {key})")
    return problems


def refuse(problems: list[str], what: str, fix: str = FIX_NOTHING_CHANGED) -> None:
    """Raise BadParameters listing every problem (``invalid WHAT parameters: ...``); nothing when there is none."""
    if problems:
        raise errors.BadParameters(f"invalid {what} parameters: " + "; ".join(problems), fix=fix)


@dataclass(frozen=True)
class Target:
    """The cluster a runbook acts on and how to reach it (no secrets: paths to them).

    Site values default to empty; ``REQUIRED`` names those a runbook cannot run without.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ("cluster_name", "inventory", "ssh_key", "known_hosts")

    cluster_name: str = ""
    inventory: Path = Path()
    kubespray_dir: Path = Path()
    ansible_playbook: Path = Path()  # empty: the checkout's venv/bin/ansible-playbook, else ansible-playbook on PATH
    kubeconfig: Path = Path()
    ssh_user: str = "root"
    ssh_key: Path = Path()
    known_hosts: Path = Path()
    # The machines by inventory name -> address, and their roles; empty: as in the inventory.
    hosts: dict[str, str] = field(default_factory=dict)
    control_planes: tuple[str, ...] = ()
    etcd_members: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiagnosticsParams(Target):
    """Parameters of the diagnostics runbook (read-only)."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*Target.REQUIRED, "kubeconfig")

    inspect_nodes: tuple[str, ...] = ()  # empty: every control plane and etcd member
    journal_lines: int = 20
    cert_warn_days: int = 30
    timeout_s: float = 30.0


def check_target(target: Target) -> Target:
    """Checks beyond types: names, unique unicast addresses, roles naming known hosts once, odd etcd count.

    The layout checks apply only when ``hosts`` is given; a name repeated in a
    role list is refused always. Raises BadParameters listing every problem. Pure.
    """
    problems = []
    if not _HOST_NAME.match(target.cluster_name):
        problems.append(f"cluster_name {target.cluster_name!r}: use lower-case letters, digits and '-'")
    for role in ("control_planes", "etcd_members", "workers"):
        problems += repeated(role, getattr(target, role))
    if target.hosts:
        seen: dict[str, str] = {}
        for name, address in target.hosts.items():
            if not _HOST_NAME.match(name):
                problems.append(f"hosts: {name!r} is not a valid host name (lower-case letters, digits, '-')")
            problems += bad_node_addresses(f"hosts: {name}", [address])
            if address in seen:
                problems.append(f"hosts: {name} and {seen[address]} have the same address {address}")
            seen.setdefault(address, name)
        for role in ("control_planes", "etcd_members", "workers"):
            for name in dict.fromkeys(getattr(target, role)):
                if name not in target.hosts:
                    problems.append(f"{role}: {name!r} is not in hosts ({', '.join(target.hosts)})")
        if not target.control_planes:
            problems.append("control_planes: at least one host is needed")
        members = len(set(target.etcd_members))
        if members % 2 == 0:
            problems.append(f"etcd_members: {members} members; etcd needs an odd number "
                            "(1, 3 or 5) to keep a majority")
    if problems:
        raise errors.BadParameters("invalid target:\n" + "\n".join(f"  - {p}" for p in problems),
                                   fix="correct the parameter file; nothing was run")
    return target


def check_diagnostics(p: DiagnosticsParams) -> DiagnosticsParams:
    """Checks of DiagnosticsParams beyond types and the target's: numbers in range (journal_lines 1..10000,
    cert_warn_days 0..3650, timeout_s), valid host names named once in ``inspect_nodes``. Raises
    BadParameters. Pure."""
    problems = out_of_range(p)
    problems += [f"inspect_nodes: {n!r} is not a valid host name" for n in p.inspect_nodes if not _HOST_NAME.match(n)]
    problems += repeated("inspect_nodes", p.inspect_nodes)
    refuse(problems, "diagnostics", fix="correct the parameter file or -p values; nothing was run")
    return p


def is_command_name(key: str, value: object) -> bool:
    """True for an ``ansible_playbook`` given as a bare command name (looked up on PATH, never anchored)."""
    return key == "ansible_playbook" and isinstance(value, str) and bool(value) and "/" not in value \
        and not value.startswith("~")


def _anchor(schema: type, values: Mapping[str, Any], base: Path) -> dict[str, Any]:
    import typing

    hints = typing.get_type_hints(schema)
    out = {}
    for key, value in values.items():
        if hints.get(key) is Path and isinstance(value, (str, Path)) and not _unset(value) \
                and not is_command_name(key, value):
            path = Path(params.expand_env(str(value))).expanduser()
            value = path if path.is_absolute() else Path(os.path.normpath(base / path))
        out[key] = value
    return out


def _unset(value: object) -> bool:
    return value is None or value == "" or value == Path() or (isinstance(value, (list, tuple, dict)) and not value)


def _default(f: Any) -> Any:
    import dataclasses

    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return "" if value == Path() else str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def runbook_of(schema: type) -> str:
    """The runbook name whose schema is ``schema`` (``""`` for Target and other schemas)."""
    return next((name for name, s in RUNBOOK_SCHEMAS.items() if s is schema), "")


def file_values(schema: type, raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split a parameter file's mapping into (the values for ``schema``'s runbook, the keys left to others).

    Top-level keys are shared: a key this runbook does not declare but another
    runbook does is left out (listed in the second item); a key no runbook
    declares is kept, so validation refuses it as unknown. The mapping under the
    runbook's own name is merged last and kept whole (its unknown keys are
    refused too); the other runbooks' sections are left out. Raises
    BadParameters for a runbook section that is not a mapping. Pure.
    """
    own = {f.name for f in fields(schema)}  # type: ignore[arg-type]
    anywhere = {f.name for s in RUNBOOK_SCHEMAS.values() for f in fields(s)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    left: list[str] = []
    for key, value in raw.items():
        if key in RUNBOOK_SCHEMAS:
            if not isinstance(value, Mapping):
                raise errors.BadParameters(f"{key}: the values for the {key} runbook must be a mapping of name: value",
                                           fix=f"write them indented under '{key}:'")
        elif key in own or key not in anywhere:
            values[key] = value
        else:
            left.append(key)
    values.update(raw.get(runbook_of(schema)) or {})
    return values, left


def require(schema: type, values: Mapping[str, Any]) -> None:
    """Refuse when a site value of ``schema.REQUIRED`` is missing or empty, naming every one. Pure.

    No runbook default is a lab value: the operator's parameter file gives these.
    """
    missing = [name for name in getattr(schema, "REQUIRED", ()) if _unset(values.get(name))]
    if missing:
        name = runbook_of(schema) or schema.__name__
        raise errors.BadParameters(
            f"{name}: no value for {', '.join(missing)} (site values have no default); nothing was contacted",
            fix="give them in your parameter file (params/example-vps.yaml shows each) or with -p NAME VALUE; "
                f"for the lab: -f params/lab.yaml (in JupyterLab or nbval: {PARAMS_ENV}=params/lab.yaml)")


def _defaults_from_env(schema: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the notebook's untouched defaults replaced by the ``RUNBOOKS_PARAMS`` files' values."""
    names = [n for n in os.environ.get(PARAMS_ENV, "").split(os.pathsep) if n.strip()]
    out = dict(values)
    defaults = {f.name: _plain(_default(f)) for f in fields(schema)}  # type: ignore[arg-type]
    for name in names:
        path = Path(params.expand_env(name)).expanduser()
        path = path if path.is_absolute() else REPO_ROOT / path
        own, _ = file_values(schema, params.expand_env(params.read_files([path])))
        for key, value in _anchor(schema, own, path.resolve().parent).items():
            if key not in out or _plain(out[key]) == defaults.get(key):
                out[key] = value
    return out


def from_namespace(schema: type[T], namespace: Mapping[str, Any], *, base_dir: Path = REPO_ROOT) -> T:
    """Validate a runbook's parameters as found in its namespace (``globals()``).

    ``${VAR:-default}`` is expanded, relative paths are taken relative to the
    repository root (so the kernel may run in the root or in notebooks/),
    defaults nobody changed are taken from ``$RUNBOOKS_PARAMS`` files when set,
    required site values are checked (:func:`require`), types are checked and,
    for a Target, :func:`check_target` runs. Raises BadParameters naming every
    problem. Reads the environment (and those files) only.
    """
    values = {f.name: params.expand_env(namespace[f.name])
              for f in fields(schema) if f.name in namespace}  # type: ignore[arg-type]
    values = _defaults_from_env(schema, _anchor(schema, values, base_dir))
    require(schema, values)
    result = params.validate(schema, _anchor(schema, values, base_dir))
    if isinstance(result, Target):
        check_target(result)
    return result


def load(schema: type[T], files: list[str | Path]) -> T:
    """Validate parameter files (in order) against ``schema``, as ``runbooks run -f`` does.

    Relative paths are relative to each file; keys left to other runbooks are
    ignored (:func:`file_values`). Raises BadParameters. Reads the files only.
    """
    merged: dict[str, Any] = {}
    for name in files:
        own, _ = file_values(schema, params.expand_env(params.read_files([name])))
        merged.update(_anchor(schema, own, Path(name).expanduser().resolve().parent))
    require(schema, merged)
    result = params.validate(schema, merged)
    if isinstance(result, Target):
        check_target(result)
    return result


@dataclass(frozen=True)
class PrepareParams(Target):
    """Parameters of the prepare-nodes runbook (destructive: changes every chosen machine)."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*Target.REQUIRED, "upstream_dns_servers")

    limit: tuple[str, ...] = ()  # inventory host names; empty: every host of the inventory
    upstream_dns_servers: tuple[str, ...] = ()  # your resolvers (the provider's), never 127.0.0.53
    install_python: bool = True
    dry_run: bool = True
    confirm: str = ""
    timeout_s: float = 120.0


def check_prepare(p: PrepareParams, known: list[str] | tuple[str, ...]) -> list[str]:
    """Checks of PrepareParams beyond types; returns the hosts to prepare (``limit`` or all, inventory order).

    ``known``: the inventory's host names. Raises BadParameters naming every
    problem: unknown or repeated hosts in ``limit``, upstream DNS servers that
    cannot be a resolver's (:func:`bad_dns_servers`: loopback, unspecified, ...),
    a timeout out of range (:func:`out_of_range`). Pure.
    """
    problems = []
    if not p.upstream_dns_servers:
        problems.append("upstream_dns_servers: give at least one DNS server address")
    problems += bad_dns_servers("upstream_dns_servers", p.upstream_dns_servers)
    unknown = [name for name in p.limit if name not in known]
    if unknown:
        problems.append(f"limit: not in the inventory: {', '.join(unknown)} (hosts: {', '.join(known)})")
    if len(set(p.limit)) != len(p.limit):
        problems.append("limit: a host is named twice")
    problems += out_of_range(p)
    if problems:
        raise errors.BadParameters("invalid parameters for PrepareParams: " + "; ".join(problems),
                                   fix="correct the parameter file or -p values; nothing was run")
    return [name for name in known if not p.limit or name in p.limit]


@dataclass(frozen=True)
class InstallParams(Target):
    """Parameters of the install-cluster runbook (destructive: runs cluster.yml).

    ``hosts`` and the roles write the inventory; empty ``hosts`` keeps the existing one.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = (*Target.REQUIRED, "kubespray_dir", "kubeconfig", "app_host")
    allow_inventory_rewrite: bool = False  # rewrite an existing inventory from hosts even if it drops or moves a host
    ingress_nginx: bool = True  # ingress-nginx on every node (addons.yml)
    ingress_host_network: bool = True  # ... listening on the nodes' port 80 (host network)
    helm: bool = True
    upstream_dns_servers: tuple[str, ...] = ()  # group_vars/all/all.yml; empty: left unset
    kube_resolv_conf: str = ""  # kubelet's resolvConf in group_vars/all/all.yml; empty: left unset
    fix_coredns: bool = True  # fix the 127.0.0.53 CrashLoopBackOff on the nodes if it appears
    dns_settle_s: float = 15.0  # the new DNS pods run this long without a restart after the fix
    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = ""
    app_image: str = "mopckou/sticky-session:latest"  # the test app's image (any HTTP app: see app_port, app_ready_path)
    app_port: int = 8080  # the port the app listens on (also passed to it as $PORT)
    app_ready_path: str = "/healthz"  # the app's readiness probe path (a 2xx when ready)
    dns_server: str = ""  # empty: skip the DNS check
    ansible_env: dict[str, str] = field(default_factory=dict)  # extra environment for ansible-playbook
    dry_run: bool = True
    confirm: str = ""
    playbook_timeout_s: float = 5400.0  # cluster.yml: 30-90 minutes on real VPSes
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
    problems += bad_dns_servers("upstream_dns_servers", p.upstream_dns_servers)
    problems += not_ip_addresses("dns_server", [p.dns_server] if p.dns_server else [])
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", p.app_host):
        problems.append(f"app_host {p.app_host!r} is not a DNS name")
    problems += bad_app(p)
    problems += pin_breaking_env("ansible_env", p.ansible_env)
    problems += out_of_range(p)
    refuse(problems, "install")
    return p


@dataclass(frozen=True)
class SnapshotParams(Target):
    """Parameters of the etcd-snapshot runbook (non-destructive: safe on a timer)."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*Target.REQUIRED, "backup_dir")

    member: str = ""  # etcd host to save on; empty: a healthy member, not the leader when there is a choice
    backup_dir: Path = Path()
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
    """Checks beyond types: retention numbers, timeouts, key names, the backup to drill, the member's scratch
    directory (:func:`bad_remote_dir`). Raises BadParameters. Pure."""
    problems = out_of_range(p)
    problems += [f"drill_keys: {k!r} is not an etcd key (starts with /)" for k in p.drill_keys if not k.startswith("/")]
    if p.drill_snapshot and ("/" in p.drill_snapshot or not p.drill_snapshot.endswith(".db")):
        problems.append(f"drill_snapshot: {p.drill_snapshot!r}: give a .db file name in backup_dir")
    problems += bad_remote_dir("remote_dir", p.remote_dir)
    refuse(problems, "snapshot", fix="correct the parameter file or -p values; nothing was run")
    return p


@dataclass(frozen=True)
class RestoreParams(Target):
    """Parameters of the restore-cluster runbook (destructive: rebuilds etcd from a snapshot)."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*Target.REQUIRED, "kubespray_dir", "kubeconfig", "backup_dir", "app_host")

    backup_dir: Path = Path()
    snapshot: str = ""  # a .db file name in backup_dir; empty: the newest verified snapshot of this cluster
    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = ""
    ansible_env: dict[str, str] = field(default_factory=dict)
    dry_run: bool = True
    confirm: str = ""
    playbook_timeout_s: float = 5400.0  # cluster.yml --limit on reinstalled machines
    ready_timeout_s: float = 300.0
    timeout_s: float = 60.0


def check_restore(p: RestoreParams) -> RestoreParams:
    """Checks beyond types: the snapshot name, the Kubespray checkout, files, timeouts. Raises BadParameters."""
    problems = []
    if p.snapshot and ("/" in p.snapshot or not p.snapshot.endswith(".db")):
        problems.append(f"snapshot: {p.snapshot!r}: give a .db file name in backup_dir (or leave it empty)")
    problems += missing_files(p, "kubespray_dir")
    problems += pin_breaking_env("ansible_env", p.ansible_env)
    problems += out_of_range(p)
    refuse(problems, "restore")
    return p


@dataclass(frozen=True)
class AddWorkerParams(Target):
    """Parameters of the add-worker runbook (destructive: prepares the new machines, runs scale.yml)."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*Target.REQUIRED, "kubespray_dir", "kubeconfig", "new_workers",
                                           "upstream_dns_servers", "app_host")

    new_workers: dict[str, str] = field(default_factory=dict)  # name -> IP
    upstream_dns_servers: tuple[str, ...] = ()  # as prepare-nodes
    install_python: bool = True
    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = ""
    app_image: str = "mopckou/sticky-session:latest"  # the test app's image (any HTTP app: see app_port, app_ready_path)
    app_port: int = 8080  # the port the app listens on (also passed to it as $PORT)
    app_ready_path: str = "/healthz"  # the app's readiness probe path (a 2xx when ready)
    dns_server: str = ""  # check app_host's A records there; empty: no DNS check
    dns_command: tuple[str, ...] = ()  # hook setting app_host's A records: argv with {name} and {ips}
    ansible_env: dict[str, str] = field(default_factory=dict)
    dry_run: bool = True
    confirm: str = ""
    playbook_timeout_s: float = 3600.0  # scale.yml installs a whole node (downloads, runtime)
    ready_timeout_s: float = 300.0
    timeout_s: float = 30.0


@dataclass(frozen=True)
class RemoveWorkerParams(Target):
    """Parameters of the remove-worker runbook (destructive: drains and removes nodes with remove-node.yml)."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*Target.REQUIRED, "kubespray_dir", "kubeconfig", "remove", "app_host")

    remove: tuple[str, ...] = ()  # inventory host names of the workers to remove
    node_state: str = "auto"  # auto (SSH and the Node's Ready condition decide), alive or dead
    allow_last_worker: bool = False  # remove the last worker even if pods then have nowhere to go
    drain_timeout_s: int = 120  # bound of the drain (ours for an alive node; remove-node's drain_timeout)
    dead_drain_timeout_s: int = 60  # remove-node's drain_timeout for a dead node
    dead_drain_grace_period_s: int = 10  # remove-node's drain_grace_period for a dead node
    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = ""
    dns_server: str = ""  # check app_host's A records there; empty: no DNS check
    dns_command: tuple[str, ...] = ()  # hook setting app_host's A records: argv with {name} and {ips}
    ansible_env: dict[str, str] = field(default_factory=dict)
    dry_run: bool = True
    confirm: str = ""
    playbook_timeout_s: float = 1800.0  # drain (360 s by default) and reset
    ready_timeout_s: float = 300.0
    timeout_s: float = 30.0


def _check_common_worker(p: AddWorkerParams | RemoveWorkerParams, problems: list[str]) -> None:
    problems += missing_files(p, "kubespray_dir", "inventory", "known_hosts", "ssh_key")
    problems += not_ip_addresses("dns_server", [p.dns_server] if p.dns_server else [])
    if p.dns_command and "{ips}" not in p.dns_command:
        problems.append("dns_command: one word must be {ips} (replaced by the ingress nodes' IPs)")
    problems += pin_breaking_env("ansible_env", p.ansible_env)
    problems += out_of_range(p)


def check_add_worker(p: AddWorkerParams) -> AddWorkerParams:
    """Checks of AddWorkerParams beyond types: names, IPs, files. Raises BadParameters. Reads files only."""
    problems: list[str] = []
    if not p.new_workers:
        problems.append("new_workers: name at least one host (name -> IP)")
    seen: dict[str, str] = {}
    for name, ip in p.new_workers.items():
        if not _HOST_NAME.match(name):
            problems.append(f"new_workers: {name!r} is not a valid host name (lower-case letters, digits, '-')")
        problems += bad_node_addresses(f"new_workers: {name}", [ip])
        if ip in seen:
            problems.append(f"new_workers: {name} and {seen[ip]} have the same IP {ip}")
        seen.setdefault(ip, name)
    problems += bad_dns_servers("upstream_dns_servers", p.upstream_dns_servers)
    problems += bad_app(p)
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
    _check_common_worker(p, problems)
    refuse(problems, "remove-worker")
    return p


@dataclass(frozen=True)
class ReplaceParams(Target):
    """Parameters of the replace-control-plane runbook (destructive: removes an etcd member, runs playbooks).

    ``replacement`` equal to ``dead_node`` means the same host reinstalled with the same IP
    (``replacement_ip`` is then ignored); any other name is a new machine at ``replacement_ip``.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = (*Target.REQUIRED, "kubespray_dir", "kubeconfig", "dead_node",
                                           "replacement", "upstream_dns_servers", "app_host", "backup_dir")

    dead_node: str = ""
    replacement: str = ""
    replacement_ip: str = ""  # a new machine's address; ignored when replacement is dead_node
    allow_answering_dead_node: bool = False  # treat a node as dead even though its etcd or API answers
    upstream_dns_servers: tuple[str, ...] = ()  # for preparing the replacement
    app_host: str = ""  # the test app's host name, asked on every ingress node at the end
    dns_server: str = ""  # check app_host's A records there; empty: no DNS check
    dns_command: tuple[str, ...] = ()  # hook setting app_host's A records: argv with {name} and {ips}
    kubeconfig_server_after: str = ""  # the kubeconfig's server at the end; empty: left at a survivor
    backup_dir: Path = Path()  # the safety snapshot goes there (the etcd-snapshot runbook's backup_dir)
    remote_dir: str = "/var/tmp"  # where the survivor writes it before the download (then deleted)
    ansible_env: dict[str, str] = field(default_factory=dict)
    dry_run: bool = True
    confirm: str = ""
    drain_timeout_s: float = 30.0
    playbook_timeout_s: float = 5400.0  # upgrade-cluster.yml rolls over every node; cluster.yml --limit
    ready_timeout_s: float = 300.0
    timeout_s: float = 30.0


def check_replace(p: ReplaceParams) -> ReplaceParams:
    """Checks of the replace parameters beyond types. Raises BadParameters naming every problem. Reads files only."""
    problems = []
    for key in ("dead_node", "replacement"):
        if not _HOST_NAME.match(getattr(p, key)):
            problems.append(f"{key} {getattr(p, key)!r} is not a valid host name")
    if p.replacement != p.dead_node:
        problems += bad_node_addresses("replacement_ip (a new machine needs one)", [p.replacement_ip])
    problems += bad_dns_servers("upstream_dns_servers", p.upstream_dns_servers)
    problems += missing_files(p, "inventory", "kubespray_dir", "known_hosts", "kubeconfig")
    if p.kubeconfig_server_after and not re.fullmatch(r"https://\S+", p.kubeconfig_server_after):
        problems.append("kubeconfig_server_after must be an https:// URL or empty")
    problems += not_ip_addresses("dns_server", [p.dns_server] if p.dns_server else [])
    if p.dns_command and "{ips}" not in p.dns_command:
        problems.append("dns_command: one word must be {ips} (replaced by the ingress nodes' IPs)")
    problems += bad_remote_dir("remote_dir", p.remote_dir)
    problems += pin_breaking_env("ansible_env", p.ansible_env)
    problems += out_of_range(p)
    refuse(problems, "replace")
    return p


@dataclass(frozen=True)
class FailoverParams(Target):
    """Parameters of the failover drill (faults one node: dry_run/confirm gate). Timings: the short profile."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*Target.REQUIRED, "kubeconfig", "app_host", "dns_server",
                                           "fault_injector")

    app_name: str = "sticky-session"
    app_namespace: str = "default"
    app_host: str = ""
    app_image: str = "mopckou/sticky-session:latest"  # the test app's image (any HTTP app: see app_port, app_ready_path)
    app_port: int = 8080  # the port the app listens on (also passed to it as $PORT)
    app_ready_path: str = "/healthz"  # the app's readiness probe path (a 2xx when ready)
    dns_server: str = ""
    dns_port: int = 53
    strategies: tuple[str, ...] = ("dns-naive", "dns-fallback", "happy-eyeballs", "keepalived-vip", "haproxy")
    recommended: str = "haproxy"
    rate: float = 20.0  # requests per second per strategy
    warmup_s: float = 3.0
    before_s: float = 20.0
    after_s: float = 55.0
    fault_node: str = ""  # empty: an ingress node without app pods, not the controller-manager leader
    fault_mode: str = "hard"
    fault_injector: str = ""  # command (fault_command), manual (interactive) or a registered injector
    fault_command: tuple[str, ...] = ()
    power_on_command: tuple[str, ...] = ()
    restore_power: bool = True
    naive_connect_timeout_s: float = 10.0
    fallback_connect_timeout_s: float = 0.3
    happy_eyeballs_stagger_s: float = 0.25
    read_timeout_s: float = 5.0
    slow_ms: float = 300.0
    vip: str = ""  # the keepalived-vip strategy's floating IP (needed only with that strategy)
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
    for name, value in (("dns_server", p.dns_server), ("haproxy_bind", p.haproxy_bind)):
        problems += not_ip_addresses(name, [value])
    if "keepalived-vip" in p.strategies:
        prefix = p.vip_prefix if NUMBER_BOUNDS["vip_prefix"].holds(p.vip_prefix) else None
        problems += bad_node_addresses("vip", [p.vip], prefix=prefix)
    problems += bad_app(p)
    problems += out_of_range(p)
    refuse(problems, "failover", fix="correct the parameter file or -p values; nothing was run")
    return p


# Every runbook's schema by runbook name (the notebook's file name without its number).
RUNBOOK_SCHEMAS: dict[str, type[Target]] = {
    "prepare-nodes": PrepareParams, "install-cluster": InstallParams, "diagnostics": DiagnosticsParams,
    "add-worker": AddWorkerParams, "remove-worker": RemoveWorkerParams, "replace-control-plane": ReplaceParams,
    "etcd-snapshot": SnapshotParams, "restore-cluster": RestoreParams, "failover-test": FailoverParams,
}
