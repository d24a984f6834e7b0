"""Preparing cluster machines over SSH, and reading their services' state.

Each preparation step checks before it acts, so running it twice changes
nothing the second time; it returns a :class:`Change` saying what it did.
Steps: python present, net.ipv4.ip_forward=1 (now and persisted), swap off
(now and kept off), the resolv.conf pitfall (systemd-resolved stub without
upstream servers) detected and fixed, systemd-resolved running, kubelet's
resolvConf. Diagnostics: journal, status, is_active, restart, wait_active.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from runbooks_lib import ssh
from runbooks_lib.errors import BadParameters, HostKeyError, PreconditionFailed, RunbookError, WaitTimedOut
from runbooks_lib.waits import wait_for

if TYPE_CHECKING:
    from runbooks_lib.schemas import PrepareParams

IP_FORWARD_CONF = "/etc/sysctl.d/99-kubernetes-ip-forward.conf"
RESOLVED_DROPIN = "/etc/systemd/resolved.conf.d/90-upstream-dns.conf"
STUB_RESOLV_CONF = "/run/systemd/resolve/stub-resolv.conf"
UPSTREAM_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
KUBELET_CONFIG = "/etc/kubernetes/kubelet-config.yaml"
RESOLV_CONF_BACKUP = "/etc/resolv.conf.before-resolved"
SWAP_COMMENT = "#swap-off# "
STUB_ADDRESS = "127.0.0.53"


@dataclass(frozen=True)
class Change:
    """What one step did on one host; ``restart`` lists units that must restart to apply it."""

    host: str
    step: str
    changed: bool
    detail: str
    restart: tuple[str, ...] = ()


def require_reachable(conns: Mapping[str, ssh.BaseConnection], *, sudo: bool = False,
                      timeout: float = 30.0) -> list[dict[str, str]]:
    """Prove each machine answers SSH with its pinned host key (and ``sudo -n`` when ``sudo``). Read-only.

    Returns one row per host for the preflight table. Raises PreconditionFailed
    at the first host that does not answer, naming it and the fix (for a host
    key: how to pin the new one); nothing has been changed by then.
    """
    rows = []
    for name, conn in conns.items():
        address = conn.host.address
        try:
            ssh.run(conn, ["true"], timeout=timeout)
            if sudo:
                ssh.run(conn, ["sudo", "-n", "true"], timeout=timeout)
        except HostKeyError as exc:
            raise PreconditionFailed(f"{name}: {exc.what}; nothing was changed", host=name, fix=exc.fix) from None
        except RunbookError as exc:
            raise PreconditionFailed(f"{name} ({address}) cannot be used: {exc.what}; nothing was changed",
                                     host=name, fix=exc.fix or "check the machine and the SSH parameters") from None
        rows.append({"host": name, "address": address, "ssh": "ok, host key pinned"})
    return rows


def _run(conn: ssh.BaseConnection, argv: list[str], timeout: float, sudo: bool, check: bool = True) -> ssh.Result:
    return ssh.run(conn, argv, timeout=timeout, sudo=sudo, check=check)


# -- python -----------------------------------------------------------------------


def ensure_python(conn: ssh.BaseConnection, *, install: bool = True, sudo: bool = False, timeout: float = 600.0) -> Change:
    """Action: make sure python3 exists (Ansible needs it); apt-get installs it if missing.

    Raises PreconditionFailed when missing and ``install=False``,
    CommandFailed when apt fails. Rollback: ``apt-get remove python3``
    (breaks Ansible; normally left installed).
    """
    found = _run(conn, ["python3", "--version"], 30, False, check=False)
    if found.ok:
        return Change(conn.name, "python", False, (found.stdout or found.stderr).strip())
    if not install:
        raise PreconditionFailed(f"python3 is missing on {conn.name}", host=conn.name, fix="install python3")
    _run(conn, ["apt-get", "update"], timeout, sudo)
    _run(conn, ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "python3"], timeout, sudo)
    version = _run(conn, ["python3", "--version"], 30, False)
    return Change(conn.name, "python", True, f"installed {version.stdout.strip()}")


# -- ip forwarding ------------------------------------------------------------------


def ensure_ip_forward(
    conn: ssh.BaseConnection, *, path: str = IP_FORWARD_CONF, sudo: bool = False, timeout: float = 30.0
) -> Change:
    """Action: net.ipv4.ip_forward=1 now (sysctl -w) and at boot (a file in /etc/sysctl.d/).

    Raises CommandFailed. Rollback: delete ``path`` and ``sysctl -w net.ipv4.ip_forward=0``.
    """
    done = []
    now = _run(conn, ["sysctl", "-n", "net.ipv4.ip_forward"], timeout, sudo).stdout.strip()
    if now != "1":
        _run(conn, ["sysctl", "-w", "net.ipv4.ip_forward=1"], timeout, sudo)
        done.append(f"set to 1 now (was {now})")
    want = "net.ipv4.ip_forward = 1\n"
    if ssh.read_text(conn, path, timeout=timeout, sudo=sudo, missing_ok=True) != want:
        ssh.write_text(conn, path, want, timeout=timeout, sudo=sudo, mode="0644")
        done.append(f"persisted in {path}")
    return Change(conn.name, "ip_forward", bool(done), "; ".join(done) or "already 1 and persisted")


# -- swap ---------------------------------------------------------------------------


def comment_swap_lines(fstab: str) -> tuple[str, int]:
    """fstab text with its active swap entries commented out, and how many were."""
    out, count = [], 0
    for line in fstab.splitlines(keepends=True):
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 3 and fields[2] == "swap":
            out.append(SWAP_COMMENT + line)
            count += 1
        else:
            out.append(line)
    return "".join(out), count


def ensure_swap_off(conn: ssh.BaseConnection, *, sudo: bool = False, timeout: float = 60.0) -> Change:
    """Action: swapoff -a now; comment out swap lines in /etc/fstab; mask swap units.

    Raises CommandFailed. Rollback: remove the ``#swap-off# `` prefix from
    /etc/fstab, ``systemctl unmask`` the units named in the detail, ``swapon -a``.
    """
    done = []
    swaps = (ssh.read_text(conn, "/proc/swaps", timeout=timeout, missing_ok=True) or "").splitlines()[1:]
    if any(line.strip() for line in swaps):
        _run(conn, ["swapoff", "-a"], timeout, sudo)
        done.append("swapoff -a")
    fstab = ssh.read_text(conn, "/etc/fstab", timeout=timeout, sudo=sudo, missing_ok=True)
    if fstab is not None:
        new, count = comment_swap_lines(fstab)
        if count:
            ssh.write_text(conn, "/etc/fstab", new, timeout=timeout, sudo=sudo)
            done.append(f"commented {count} swap line(s) in /etc/fstab")
    units = _run(
        conn, ["systemctl", "list-units", "--type=swap", "--all", "--no-legend", "--plain"], timeout, sudo, check=False
    )
    for line in units.stdout.splitlines():
        unit = line.split()[0] if line.split() else ""
        if not unit.endswith(".swap"):
            continue
        state = _run(conn, ["systemctl", "is-enabled", unit], timeout, sudo, check=False).stdout.strip()
        if state != "masked":
            _run(conn, ["systemctl", "mask", unit], timeout, sudo)
            done.append(f"masked {unit}")
    return Change(conn.name, "swap", bool(done), "; ".join(done) or "no swap active, none configured")


# -- resolv.conf / systemd-resolved ---------------------------------------------------------


def nameservers(text: str | None) -> tuple[str, ...]:
    """The ``nameserver`` addresses of a resolv.conf text, in order (comments ignored). Pure."""
    found = []
    for line in (text or "").splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            found.append(parts[1])
    return tuple(found)


@dataclass(frozen=True)
class ResolvConf:
    """Probe result: where /etc/resolv.conf points and which DNS servers are really used."""

    host: str
    link_target: str | None  # absolute, None when /etc/resolv.conf is not a symlink
    nameservers: tuple[str, ...]  # from /etc/resolv.conf
    upstream: tuple[str, ...]  # non-stub servers in /run/systemd/resolve/resolv.conf

    @property
    def problems(self) -> tuple[str, ...]:
        found = []
        if self.link_target is None:
            found.append("/etc/resolv.conf is a regular file, not a link to systemd-resolved's file")
        elif self.link_target not in (STUB_RESOLV_CONF, UPSTREAM_RESOLV_CONF):
            found.append(f"/etc/resolv.conf points at {self.link_target}, not at systemd-resolved's files")
        if not self.upstream:
            found.append(
                f"systemd-resolved has no upstream DNS servers ({UPSTREAM_RESOLV_CONF} lists none): "
                f"the {STUB_ADDRESS} stub cannot resolve names, and CoreDNS forwarding to it loops"
            )
        return tuple(found)

    @property
    def ok(self) -> bool:
        return not self.problems


def resolv_conf_state(conn: ssh.BaseConnection, *, timeout: float = 30.0) -> ResolvConf:
    """Probe: the resolv.conf link and the nameservers seen by the host and by resolved."""
    link = _run(conn, ["readlink", "/etc/resolv.conf"], timeout, False, check=False)
    target = os.path.normpath(os.path.join("/etc", link.stdout.strip())) if link.ok and link.stdout.strip() else None
    etc = ssh.read_text(conn, "/etc/resolv.conf", timeout=timeout, missing_ok=True)
    run_file = ssh.read_text(conn, UPSTREAM_RESOLV_CONF, timeout=timeout, missing_ok=True)
    upstream = tuple(ns for ns in nameservers(run_file) if ns != STUB_ADDRESS)
    return ResolvConf(conn.name, target, nameservers(etc), upstream)


def ensure_resolved(conn: ssh.BaseConnection, *, sudo: bool = False, timeout: float = 60.0) -> Change:
    """Action: systemd-resolved enabled and running (``systemctl enable --now``).

    Raises CommandFailed (e.g. not installed). Rollback: ``systemctl disable --now systemd-resolved``.
    """
    unit = "systemd-resolved"
    enabled = _run(conn, ["systemctl", "is-enabled", unit], timeout, sudo, check=False).stdout.strip()
    active = is_active(conn, unit, timeout=timeout)
    if enabled == "enabled" and active == "active":
        return Change(conn.name, "systemd-resolved", False, "enabled and active")
    if enabled == "masked":
        _run(conn, ["systemctl", "unmask", unit], timeout, sudo)
    _run(conn, ["systemctl", "enable", "--now", unit], timeout, sudo)
    wait_active(conn, unit, timeout=timeout)
    return Change(conn.name, "systemd-resolved", True, f"was {enabled or 'unknown'}/{active}; now enabled and active")


def resolved_dropin_text(upstream: Sequence[str]) -> str:
    """The resolved.conf.d drop-in :func:`fix_resolv_conf` writes for these upstream servers."""
    return "# Upstream DNS servers for systemd-resolved (Kubernetes node preparation)\n[Resolve]\nDNS=" + " ".join(upstream) + "\n"


def fix_resolv_conf(
    conn: ssh.BaseConnection,
    upstream: Sequence[str],
    *,
    link_target: str = STUB_RESOLV_CONF,
    dropin: str = RESOLVED_DROPIN,
    sudo: bool = False,
    timeout: float = 60.0,
) -> Change:
    """Action: give systemd-resolved upstream servers and link /etc/resolv.conf to its file.

    Writes ``DNS=...`` into a resolved.conf.d drop-in (restarting
    systemd-resolved when it changes), then makes /etc/resolv.conf a link to
    ``link_target`` (a regular file is kept as /etc/resolv.conf.before-resolved).
    Run :func:`ensure_resolved` first. Raises BadParameters for bad
    addresses, CommandFailed. Rollback: delete the drop-in, restart
    systemd-resolved, move the backup back to /etc/resolv.conf (or re-link
    the old target named in the detail).
    """
    if not upstream:
        raise BadParameters("give at least one upstream DNS server address")
    for addr in upstream:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise BadParameters(f"not an IP address: {addr!r}") from None
        if ip.is_loopback:
            raise BadParameters(f"{addr} is a loopback address: it would point resolved at itself")
    if link_target not in (STUB_RESOLV_CONF, UPSTREAM_RESOLV_CONF):
        raise BadParameters(f"link_target must be {STUB_RESOLV_CONF} or {UPSTREAM_RESOLV_CONF}")
    done = []
    want = resolved_dropin_text(upstream)
    if ssh.read_text(conn, dropin, timeout=timeout, sudo=sudo, missing_ok=True) != want:
        _run(conn, ["mkdir", "-p", os.path.dirname(dropin)], timeout, sudo)
        ssh.write_text(conn, dropin, want, timeout=timeout, sudo=sudo, mode="0644")
        _run(conn, ["systemctl", "restart", "systemd-resolved"], timeout, sudo)
        wait_active(conn, "systemd-resolved", timeout=timeout)
        done.append(f"DNS={' '.join(upstream)} in {dropin}; restarted systemd-resolved")
    before = resolv_conf_state(conn, timeout=timeout)
    if before.link_target != link_target:
        if before.link_target is None:
            exists = _run(conn, ["test", "-e", "/etc/resolv.conf"], timeout, sudo, check=False).ok
            has_backup = _run(conn, ["test", "-e", RESOLV_CONF_BACKUP], timeout, sudo, check=False).ok
            if exists and not has_backup:
                _run(conn, ["cp", "-p", "/etc/resolv.conf", RESOLV_CONF_BACKUP], timeout, sudo)
                done.append(f"kept the old file as {RESOLV_CONF_BACKUP}")
        _run(conn, ["ln", "-sfn", link_target, "/etc/resolv.conf"], timeout, sudo)
        done.append(f"/etc/resolv.conf -> {link_target} (was {before.link_target or 'a regular file'})")
    after = resolv_conf_state(conn, timeout=timeout)
    if not after.ok:
        raise PreconditionFailed(
            f"resolv.conf still wrong on {conn.name}: {'; '.join(after.problems)}",
            host=conn.name, fix="check `resolvectl status` and journalctl -u systemd-resolved",
        )
    return Change(conn.name, "resolv.conf", bool(done), "; ".join(done) or f"already linked to {link_target} with upstream {', '.join(after.upstream)}")


_RESOLV_LINE = re.compile(r"^resolvConf:.*$", re.M)


def set_kubelet_resolv_conf(
    conn: ssh.BaseConnection, *, value: str = UPSTREAM_RESOLV_CONF, path: str = KUBELET_CONFIG,
    sudo: bool = False, timeout: float = 30.0,
) -> Change:
    """Action: set ``resolvConf`` in kubelet's config (the CoreDNS CrashLoopBackOff fix).

    Only that top-level line changes (added if absent). The Change lists
    ``kubelet`` in ``restart`` when kubelet must restart to use it. Raises
    CommandFailed (file unreadable), PreconditionFailed (not a YAML mapping).
    Rollback: ``set_kubelet_resolv_conf(conn, value=OLD)`` (OLD in the
    detail) and restart kubelet.
    """
    text = ssh.read_text(conn, path, timeout=timeout, sudo=sudo) or ""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise PreconditionFailed(f"{path} on {conn.name} is not a YAML mapping", host=conn.name)
    old = doc.get("resolvConf")
    if old == value:
        return Change(conn.name, "kubelet resolvConf", False, f"resolvConf is already {value}")
    line = f"resolvConf: {value}"
    if _RESOLV_LINE.search(text):
        new_text = _RESOLV_LINE.sub(line, text, count=1)
    else:
        new_text = text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    check = yaml.safe_load(new_text)
    if check.get("resolvConf") != value or {k: v for k, v in check.items() if k != "resolvConf"} != {
        k: v for k, v in doc.items() if k != "resolvConf"
    }:
        raise PreconditionFailed(f"could not edit resolvConf in {path} safely; edit it by hand", host=conn.name)
    ssh.write_text(conn, path, new_text, timeout=timeout, sudo=sudo)
    return Change(conn.name, "kubelet resolvConf", True, f"resolvConf {old} -> {value}", restart=("kubelet",))


# -- plan (read-only) -------------------------------------------------------------------


def planned_changes(
    conn: ssh.BaseConnection, upstream: Sequence[str], *, link_target: str = STUB_RESOLV_CONF,
    dropin: str = RESOLVED_DROPIN, ip_forward_conf: str = IP_FORWARD_CONF, sudo: bool = False,
    timeout: float = 30.0,
) -> tuple[Change, ...]:
    """Probe: what :func:`ensure_python`, :func:`ensure_ip_forward`, :func:`ensure_swap_off`,
    :func:`ensure_resolved` and :func:`fix_resolv_conf` would change, read-only.

    One Change per step, in that order; ``changed`` means "would change".
    Run again after the steps, it is the verification: nothing left to change.
    """
    name = conn.name
    out = []
    found = _run(conn, ["python3", "--version"], timeout, False, check=False)
    out.append(Change(name, "python", not found.ok,
                      "install python3 with apt-get" if not found.ok else (found.stdout or found.stderr).strip()))
    todo = []
    now = _run(conn, ["sysctl", "-n", "net.ipv4.ip_forward"], timeout, sudo).stdout.strip()
    if now != "1":
        todo.append(f"set to 1 now (is {now})")
    if ssh.read_text(conn, ip_forward_conf, timeout=timeout, sudo=sudo, missing_ok=True) != "net.ipv4.ip_forward = 1\n":
        todo.append(f"persist in {ip_forward_conf}")
    out.append(Change(name, "ip_forward", bool(todo), "; ".join(todo) or "already 1 and persisted"))
    todo = []
    swaps = (ssh.read_text(conn, "/proc/swaps", timeout=timeout, missing_ok=True) or "").splitlines()[1:]
    if any(line.strip() for line in swaps):
        todo.append("swapoff -a")
    fstab = ssh.read_text(conn, "/etc/fstab", timeout=timeout, sudo=sudo, missing_ok=True)
    count = comment_swap_lines(fstab)[1] if fstab is not None else 0
    if count:
        todo.append(f"comment {count} swap line(s) in /etc/fstab")
    units = _run(conn, ["systemctl", "list-units", "--type=swap", "--all", "--no-legend", "--plain"], timeout, sudo,
                 check=False)
    for line in units.stdout.splitlines():
        unit = line.split()[0] if line.split() else ""
        if unit.endswith(".swap") and _run(conn, ["systemctl", "is-enabled", unit], timeout, sudo,
                                           check=False).stdout.strip() != "masked":
            todo.append(f"mask {unit}")
    out.append(Change(name, "swap", bool(todo), "; ".join(todo) or "no swap active, none configured"))
    enabled = _run(conn, ["systemctl", "is-enabled", "systemd-resolved"], timeout, sudo, check=False).stdout.strip()
    active = is_active(conn, "systemd-resolved", timeout=timeout)
    ok = enabled == "enabled" and active == "active"
    out.append(Change(name, "systemd-resolved", not ok,
                      "enabled and active" if ok else f"is {enabled or 'unknown'}/{active}: enable --now"))
    todo = []
    if ssh.read_text(conn, dropin, timeout=timeout, sudo=sudo, missing_ok=True) != resolved_dropin_text(upstream):
        todo.append(f"write DNS={' '.join(upstream)} to {dropin} and restart systemd-resolved")
    state = resolv_conf_state(conn, timeout=timeout)
    if state.link_target != link_target:
        todo.append(f"link /etc/resolv.conf -> {link_target} (is {state.link_target or 'a regular file'})")
    problems = "; ".join(state.problems)
    detail = "; ".join(todo) + (f" [now: {problems}]" if problems and todo else "")
    out.append(Change(name, "resolv.conf", bool(todo),
                      detail or f"linked to {link_target} with upstream {', '.join(state.upstream)}"))
    return tuple(out)


# -- diagnostics ------------------------------------------------------------------------


def journal(
    conn: ssh.BaseConnection, unit: str, *, lines: int = 100, since: str | None = None, sudo: bool = False,
    timeout: float = 30.0,
) -> str:
    """Probe: the last ``lines`` journal lines of ``unit`` (``journalctl -u UNIT -n N --no-pager``)."""
    argv = ["journalctl", "-u", unit, "-n", str(int(lines)), "--no-pager"]
    if since:
        argv += ["--since", since]
    return _run(conn, argv, timeout, sudo).stdout


def status(conn: ssh.BaseConnection, unit: str, *, lines: int = 10, sudo: bool = False, timeout: float = 30.0) -> ssh.Result:
    """Probe: ``systemctl status UNIT`` (a Result: exit 3 means inactive, not an error)."""
    return _run(conn, ["systemctl", "status", unit, "--no-pager", f"--lines={int(lines)}"], timeout, sudo, check=False)


def is_active(conn: ssh.BaseConnection, unit: str, *, timeout: float = 30.0) -> str:
    """Probe: ``systemctl is-active UNIT``: active, inactive, failed, activating..."""
    return _run(conn, ["systemctl", "is-active", unit], timeout, False, check=False).stdout.strip() or "unknown"


def wait_active(conn: ssh.BaseConnection, unit: str, *, timeout: float = 60.0, interval: float = 1.0) -> str:
    """Probe: wait until UNIT is active. Raises WaitTimedOut with its last state and journal tail."""
    deadline = time.monotonic() + timeout
    state = ["unknown"]

    def active() -> tuple[bool, str]:
        state[0] = is_active(conn, unit, timeout=max(1.0, min(30.0, deadline - time.monotonic())))
        return state[0] == "active", f"{unit} on {conn.name} is {state[0]}"

    try:
        wait_for(active, timeout=timeout, interval=interval, what=f"{unit} on {conn.name} to be active")
    except WaitTimedOut as exc:
        raise WaitTimedOut(
            f"{exc.what}; {unit} on {conn.name} is {state[0]}, not active",
            host=conn.name, stderr=journal(conn, unit, lines=15, timeout=30),
            fix=f"read journalctl -u {unit} on {conn.name}",
        ) from None
    return state[0]


def restart(conn: ssh.BaseConnection, unit: str, *, sudo: bool = False, timeout: float = 90.0) -> Change:
    """Action: ``systemctl restart UNIT`` and wait until it is active again.

    Raises CommandFailed, WaitTimedOut. Rollback: none (revert the
    configuration that needed the restart, then restart again).
    """
    deadline = time.monotonic() + timeout
    _run(conn, ["systemctl", "restart", unit], timeout, sudo)
    wait_active(conn, unit, timeout=max(1.0, deadline - time.monotonic()))
    return Change(conn.name, f"restart {unit}", True, "restarted; active")


def prepare_targets(p: PrepareParams) -> tuple[dict[str, str], str]:
    """The hosts the prepare-nodes runbook works on (name -> SSH address) and where they came from.

    The inventory when it exists (after install it is the source of truth);
    before the first install, ``hosts`` (the layout install-cluster will write).
    ``limit`` picks some of them. Raises PreconditionFailed when there is
    neither, BadParameters for a bad ``limit`` (:func:`schemas.check_prepare`).
    Reads the inventory file only.
    """
    from runbooks_lib import inventory, schemas

    if p.inventory.is_file():
        inv = inventory.Inventory.load(p.inventory)
        known, source = {name: inv.host(name).address for name in inv.hosts}, f"the inventory {p.inventory.name}"
    elif p.hosts:
        known, source = dict(p.hosts), "hosts (no inventory yet: install-cluster writes it from them)"
    else:
        raise PreconditionFailed(f"the inventory {p.inventory} does not exist and hosts is empty; nothing was contacted",
                                 fix="give hosts (name: address) and the roles in your parameter file, as for "
                                     "install-cluster, or point inventory at an existing Kubespray inventory")
    chosen = schemas.check_prepare(p, list(known))
    return {name: known[name] for name in chosen}, source
