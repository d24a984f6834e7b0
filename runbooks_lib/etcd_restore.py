"""Restoring etcd snapshots: the command forms by etcd version, a scratch-etcd drill, members rebuilt.

etcd 3.5 moved ``snapshot restore`` and ``snapshot status`` to ``etcdutl``
(3.6 removed them from etcdctl); 3.4 has only ``etcdctl snapshot restore``.
:func:`restore_argv` picks the form from the version.

Probes: etcd_version, local_etcd_version, restored_marker. Actions: drill
(a scratch etcd on this machine's loopback, removed afterwards),
set_aside, restore_member, write_marker. Pure: restore_tool, restore_argv,
status_argv, new_token, parse_version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runbooks_lib import etcd, local, ssh
from runbooks_lib.errors import BadParameters, CommandFailed, PreconditionFailed
from runbooks_lib.etcd_snapshot import Manifest, check_backup
from runbooks_lib.waits import wait_for

DATA_DIR = "/var/lib/etcd"
# Where the restore runbook keeps its files on a member: the uploaded snapshot, the staged data dir, the marker.
WORK_DIR = "/var/lib/etcd-restore"
MARKER = f"{WORK_DIR}/restored.json"
# Kubernetes keeps Nodes under /registry/minions/ (the historical name); the lab's API stand-in under /registry/nodes/.
NODE_PREFIXES = ("/registry/minions/", "/registry/nodes/")

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) from ``etcd --version`` output or a version string. Raises BadParameters."""
    m = _VERSION.search(text or "")
    if not m:
        raise BadParameters(f"no etcd version in {text!r}", fix="check the etcd binary")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def restore_tool(version: str) -> str:
    """``etcdutl`` for etcd 3.5+ (3.6 removed etcdctl's restore), ``etcdctl`` before. Pure."""
    return "etcdutl" if parse_version(version) >= (3, 5, 0) else "etcdctl"


def status_argv(version: str, snapshot: str, *, etcdctl: str = "etcdctl", etcdutl: str = "etcdutl") -> list[str]:
    """``snapshot status SNAP -w json`` in the version's form. Pure."""
    if restore_tool(version) == "etcdutl":
        return [etcdutl, "snapshot", "status", snapshot, "-w", "json"]
    return ["env", "ETCDCTL_API=3", etcdctl, "snapshot", "status", snapshot, "-w", "json"]


def restore_argv(version: str, snapshot: str, *, data_dir: str, name: str, peer_url: str, initial_cluster: str,
                 token: str, etcdctl: str = "etcdctl", etcdutl: str = "etcdutl") -> list[str]:
    """``snapshot restore`` into a new data dir, as a member of a NEW cluster, in the version's form. Pure.

    3.5+: ``etcdutl snapshot restore``; 3.4: ``etcdctl snapshot restore``
    (ETCDCTL_API=3). Both check the snapshot's own integrity hash.
    """
    flags = [f"--data-dir={data_dir}", f"--name={name}", f"--initial-cluster={initial_cluster}",
             f"--initial-cluster-token={token}", f"--initial-advertise-peer-urls={peer_url}"]
    if restore_tool(version) == "etcdutl":
        return [etcdutl, "snapshot", "restore", snapshot, *flags]
    return ["env", "ETCDCTL_API=3", etcdctl, "snapshot", "restore", snapshot, *flags]


def new_token(sha256: str) -> str:
    """The new cluster token: derived from the snapshot, so a re-run of the same restore uses the same. Pure."""
    return f"etcd-restore-{sha256[:12]}"


def local_etcd_version(bin_dir: str | os.PathLike | None = None, *, timeout: float = 30.0) -> str:
    """Probe: ``etcd --version`` of this machine's etcd (in ``bin_dir``, else on PATH), as ``3.4.23``."""
    etcd_bin = _local_bin("etcd", bin_dir)
    result = local.run([etcd_bin, "--version"], timeout=timeout)
    return ".".join(map(str, parse_version(result.stdout)))


def _local_bin(name: str, bin_dir: str | os.PathLike | None) -> str:
    found = str(Path(bin_dir) / name) if bin_dir else shutil.which(name)
    if not found or not os.access(found, os.X_OK):
        raise PreconditionFailed(f"{name} not found{' in ' + str(bin_dir) if bin_dir else ' on PATH'}",
                                 fix="install etcd on this machine (Debian: apt-get install etcd-server etcd-client) "
                                     "or pass the directory of its binaries")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the restore drill ----------------------------------------------------------------------


@dataclass(frozen=True)
class DrillResult:
    """What the scratch etcd held, and how long each phase took (seconds)."""

    ok: bool
    etcd_version: str
    tool: str
    revision: int
    keys: int
    expected_keys: int
    found: tuple[str, ...]
    missing: tuple[str, ...]
    nodes: tuple[str, ...]
    restore_s: float
    start_s: float
    check_s: float
    total_s: float
    message: str

    def as_dict(self) -> dict:
        return {"ok": self.ok, "etcd_version": self.etcd_version, "tool": self.tool, "revision": self.revision,
                "keys": self.keys, "expected_keys": self.expected_keys, "missing": list(self.missing),
                "nodes": list(self.nodes), "restore_s": round(self.restore_s, 2), "start_s": round(self.start_s, 2),
                "check_s": round(self.check_s, 2), "total_s": round(self.total_s, 2), "message": self.message}


def _ctl(etcdctl: str, endpoint: str, *args: str, timeout: float, check: bool = True) -> local.Result:
    return local.run(["env", "ETCDCTL_API=3", etcdctl, f"--endpoints={endpoint}", "--dial-timeout=3s",
                      "--command-timeout=10s", *args], timeout=timeout, check=check)


def _status_json(result: local.Result, what: str) -> dict:
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise CommandFailed(f"{what} did not print JSON", command=list(result.command), exit_code=result.exited,
                            stderr=result.stderr or result.stdout, fix="check the etcd binaries") from None
    return data if isinstance(data, dict) else {}


def drill(directory: str | os.PathLike, manifest: Manifest, *, known_keys: Sequence[str] = (),
          nodes: Sequence[str] = (), bin_dir: str | os.PathLike | None = None, timeout: float = 60.0) -> DrillResult:
    """Action: restore a downloaded snapshot into a scratch etcd on loopback, prove what it holds, remove it.

    Refuses (PreconditionFailed) a snapshot whose sha256 or snapshot status
    differs from its manifest, before anything is started. The scratch etcd
    runs from a temporary directory on 127.0.0.1 ports picked free, and is
    stopped and deleted however the check ends. Passes when it holds the
    manifest's revision and key count, every ``known_keys`` key and a Node
    key for every name in ``nodes``. Raises CommandFailed/WaitTimedOut when
    the scratch etcd cannot be restored or started. No rollback needed.
    """
    started = time.monotonic()
    path = check_backup(directory, manifest)  # sha256 first: a corrupted file is refused here
    version = local_etcd_version(bin_dir, timeout=timeout)
    tool = restore_tool(version)
    etcd_bin, etcdctl = _local_bin("etcd", bin_dir), _local_bin("etcdctl", bin_dir)
    etcdutl = _local_bin("etcdutl", bin_dir) if tool == "etcdutl" else "etcdutl"
    status = _status_json(local.run(status_argv(version, str(path), etcdctl=etcdctl, etcdutl=etcdutl),
                                    timeout=timeout, check=False), "snapshot status")
    seen = (int(status.get("hash", -1)), int(status.get("revision", -1)), int(status.get("totalKey", -1)))
    if seen != (manifest.hash, manifest.revision, manifest.total_keys):
        raise PreconditionFailed(
            f"snapshot {path} does not match its manifest: status hash/revision/keys {seen}, manifest "
            f"{(manifest.hash, manifest.revision, manifest.total_keys)}", fix="do not restore it; pick another snapshot")
    scratch = Path(tempfile.mkdtemp(prefix="etcd-drill-"))
    server = None
    try:
        peer, client = _free_port(), _free_port()
        peer_url, client_url = f"http://127.0.0.1:{peer}", f"http://127.0.0.1:{client}"
        t0 = time.monotonic()
        local.run(restore_argv(version, str(path), data_dir=str(scratch / "data"), name="drill", peer_url=peer_url,
                               initial_cluster=f"drill={peer_url}", token=new_token(manifest.sha256),
                               etcdctl=etcdctl, etcdutl=etcdutl), timeout=timeout, cwd=scratch)
        t1 = time.monotonic()
        server = local.start([etcd_bin, "--name=drill", f"--data-dir={scratch / 'data'}",
                              f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
                              f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                              f"--initial-cluster=drill={peer_url}", "--log-level=warn"],
                             log_path=scratch / "etcd.log", cwd=scratch)

        def healthy() -> tuple[bool, str]:
            if not server.running:
                raise CommandFailed("the scratch etcd exited", stderr=server.log_tail(),
                                    fix="read the scratch etcd's log above")
            r = _ctl(etcdctl, client_url, "endpoint", "health", timeout=15, check=False)
            return r.ok, (r.stderr or r.stdout).strip()[-200:]

        wait_for(healthy, timeout=timeout, interval=0.2, what=f"the scratch etcd on {client_url} to be healthy")
        t2 = time.monotonic()
        count = _status_json(_ctl(etcdctl, client_url, "get", "", "--prefix", "--keys-only", "--limit=1", "-w", "json",
                                  timeout=timeout), "get --prefix")
        keys, revision = int(count.get("count", 0)), int(count.get("header", {}).get("revision", 0))
        found, missing = [], []
        for key in known_keys:
            r = _ctl(etcdctl, client_url, "get", key, "--keys-only", timeout=timeout)
            (found if r.stdout.strip() else missing).append(key)
        node_keys = set()
        for prefix in NODE_PREFIXES:
            r = _ctl(etcdctl, client_url, "get", prefix, "--prefix", "--keys-only", timeout=timeout)
            node_keys |= {line[len(prefix):] for line in r.stdout.split() if line.startswith(prefix)}
        missing += [f"Node {n}" for n in nodes if n not in node_keys]
        t3 = time.monotonic()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    problems = []
    if keys != manifest.keys:
        problems.append(f"{keys} keys, the snapshot held {manifest.keys}")
    if revision != manifest.revision:
        problems.append(f"revision {revision}, the snapshot's is {manifest.revision}")
    if missing:
        problems.append("missing " + ", ".join(missing))
    ok = not problems
    message = (f"restored with {tool} {version}: revision {revision}, {keys} keys, {len(found)} known keys and "
               f"{len(nodes)} nodes present" if ok else "; ".join(problems))
    return DrillResult(ok, version, tool, revision, keys, manifest.keys, tuple(found), tuple(missing),
                       tuple(sorted(node_keys)), t1 - t0, t2 - t1, t3 - t2, time.monotonic() - started, message)


# -- rebuilding members on the cluster's machines ------------------------------------------------


def etcd_version(conn: ssh.BaseConnection, *, etcd: str = "etcd", sudo: bool = False, timeout: float = 30.0) -> str:
    """Probe: the member's ``etcd --version`` as ``3.5.3``. Raises CommandFailed when etcd is not installed."""
    result = ssh.run(conn, [etcd, "--version"], timeout=timeout, sudo=sudo)
    return ".".join(map(str, parse_version(result.stdout)))


def restored_marker(conn: ssh.BaseConnection, *, sudo: bool = False, timeout: float = 30.0) -> dict:
    """Probe: the marker a finished restore left on a member ({} when none): snapshot sha256, token, old dir."""
    text = ssh.read_text(conn, MARKER, sudo=sudo, timeout=timeout, missing_ok=True)
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


def set_aside(conn: ssh.BaseConnection, stamp: str, *, data_dir: str = DATA_DIR, sudo: bool = False,
              timeout: float = 60.0) -> str:
    """Action: move the member's data dir to ``DATA_DIR.before-restore-STAMP`` (never deleted); returns it.

    A no-op returning "" when there is no data dir. Refuses (PreconditionFailed)
    when that name is already taken. Rollback: move it back (etcd stopped).
    """
    kept = f"{data_dir}.before-restore-{stamp}"
    present = ssh.run(conn, ["test", "-e", data_dir], timeout=timeout, sudo=sudo, check=False).ok
    if not present:
        return ""
    if ssh.run(conn, ["test", "-e", kept], timeout=timeout, sudo=sudo, check=False).ok:
        raise PreconditionFailed(f"{kept} already exists on {conn.name}; not overwriting it", host=conn.name,
                                 fix="move it somewhere safe by hand, then run again")
    ssh.run(conn, ["mv", "--", data_dir, kept], timeout=timeout, sudo=sudo)
    return kept


def restore_member(conn: ssh.BaseConnection, version: str, snapshot: str, *, name: str, peer_url: str,
                   initial_cluster: str, token: str, data_dir: str = DATA_DIR, sudo: bool = False,
                   timeout: float = 300.0) -> None:
    """Action: restore ``snapshot`` (on the member) into an absent ``data_dir`` as member ``name``.

    Restores into a staging dir first and renames it into place, so an
    interrupted restore leaves no half-written data dir. Raises
    PreconditionFailed when ``data_dir`` exists (set it aside first),
    CommandFailed when the restore fails. Rollback: delete ``data_dir`` and
    move the set-aside one back.
    """
    if ssh.run(conn, ["test", "-e", data_dir], timeout=30, sudo=sudo, check=False).ok:
        raise PreconditionFailed(f"{data_dir} exists on {conn.name}: set it aside before restoring", host=conn.name)
    staging = f"{WORK_DIR}/staging"
    ssh.run(conn, ["mkdir", "-p", "-m", "700", WORK_DIR], timeout=30, sudo=sudo)
    ssh.run(conn, ["rm", "-rf", "--", staging], timeout=60, sudo=sudo)  # a partial restore of an earlier run
    ssh.run(conn, restore_argv(version, snapshot, data_dir=staging, name=name, peer_url=peer_url,
                               initial_cluster=initial_cluster, token=token), timeout=timeout, sudo=sudo)
    ssh.run(conn, ["chmod", "700", staging], timeout=30, sudo=sudo)
    ssh.run(conn, ["mv", "--", staging, data_dir], timeout=60, sudo=sudo)


def write_marker(conn: ssh.BaseConnection, record: dict, *, sudo: bool = False, timeout: float = 30.0) -> None:
    """Action: record on the member that this snapshot was restored here (read by a re-run). Rollback: delete it."""
    ssh.run(conn, ["mkdir", "-p", "-m", "700", WORK_DIR], timeout=timeout, sudo=sudo)
    ssh.write_text(conn, MARKER, json.dumps(record, sort_keys=True) + "\n", sudo=sudo, timeout=timeout)


# -- what the restore-cluster runbook finds and decides ---------------------------------------------

REPLACE_RUNBOOK = "replace-control-plane"


@dataclass(frozen=True)
class MemberState:
    """One etcd host as the restore preflight finds it."""

    host: str
    reachable: bool
    installed: bool  # /etc/etcd.env, the etcd certificates and an etcd binary are there
    healthy: bool  # its own endpoint answers a quorum read
    version: str = ""
    name: str = ""  # ETCD_NAME from /etc/etcd.env
    peer_url: str = ""  # ETCD_INITIAL_ADVERTISE_PEER_URLS from /etc/etcd.env
    marker: Mapping = field(default_factory=dict)  # the restore marker, {} when none
    error: str = ""


def member_state(conn: ssh.BaseConnection, host: str, *, cert_dir: str = "/etc/ssl/etcd/ssl",
                 sudo: bool = False, timeout: float = 30.0) -> MemberState:
    """Probe: reachability, installation, health, version and restore marker of one etcd host.

    Never raises for an unreachable or blank machine: that is what it reports.
    """
    try:
        ssh.run(conn, ["true"], timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means unreachable here
        return MemberState(host, False, False, False, marker={}, error=str(exc).splitlines()[0])
    env_text = ssh.read_text(conn, etcd.ENV_FILE, sudo=sudo, timeout=timeout, missing_ok=True)
    certs = ssh.run(conn, ["test", "-f", f"{cert_dir}/admin-{host}.pem"], timeout=timeout, sudo=sudo,
                    check=False).ok
    version = ""
    found = ssh.run(conn, ["etcd", "--version"], timeout=timeout, sudo=sudo, check=False)
    if found.ok:
        version = ".".join(map(str, parse_version(found.stdout)))
    env = etcd.EnvFile.parse(env_text or "")
    installed = bool(env_text) and certs and bool(version)
    healthy = False
    if installed:
        ctl = etcd.Etcdctl(conn, member=host, cert_dir=cert_dir, sudo=sudo, timeout=timeout)
        healthy = any(h.healthy for h in etcd.endpoint_health(ctl, timeout=timeout))
    return MemberState(host, True, installed, healthy, version, env.get("ETCD_NAME") or "",
                       env.get("ETCD_INITIAL_ADVERTISE_PEER_URLS") or "",
                       restored_marker(conn, sudo=sudo, timeout=timeout), "")


@dataclass(frozen=True)
class RestoreDecision:
    """What the preflight decided: refuse (and why) or rebuild, and who plays which part."""

    refuse: str  # "" to go ahead
    fix: str
    survivors: tuple[str, ...]  # restored from the snapshot, in the etcd group's order
    rebuilt: tuple[str, ...]  # every other reachable etcd host: joined by Kubespray afterwards
    resuming: bool  # a marker of this snapshot is on a survivor: an earlier run got that far
    healthy: int
    quorum: int
    restored_cluster: str = ""  # when resuming: the initial cluster that earlier run restored


def decide(etcd_hosts: Sequence[str], control_planes: Sequence[str], states: Mapping[str, MemberState],
           sha256: str) -> RestoreDecision:
    """Is this a lost quorum that a restore must fix, and which hosts are survivors? Pure.

    Survivors are the hosts with etcd installed; when resuming (a marker of
    this snapshot on a host), only the members that earlier run restored
    (its marker's initial cluster): a host Kubespray has joined since has
    etcd installed too, and restoring it again would split the cluster.
    Refused: a majority of the etcd group healthy (unless resuming a restore
    of this same snapshot), an unreachable etcd host (never put one in a
    play), no survivor, or a reinstalled host first in ``etcd`` or
    ``kube_control_plane`` (Kubespray mints a new CA / runs kubeadm init on
    the first one).
    """
    n, q = len(etcd_hosts), len(etcd_hosts) // 2 + 1
    healthy = sum(1 for h in etcd_hosts if states[h].healthy)
    marked = [h for h in etcd_hosts if (states[h].marker or {}).get("sha256") == sha256]
    resuming = bool(marked)
    restored_cluster = (states[marked[0]].marker or {}).get("initial_cluster", "") if marked else ""
    restored_names = {entry.split("=", 1)[0] for entry in restored_cluster.split(",") if entry}
    if resuming:
        survivors = tuple(h for h in etcd_hosts if states[h].installed
                          and (states[h].name in restored_names or (not restored_names and h in marked)))
    else:
        survivors = tuple(h for h in etcd_hosts if states[h].installed)
    rebuilt = tuple(h for h in etcd_hosts if states[h].reachable and h not in survivors)
    unreachable = [h for h in etcd_hosts if not states[h].reachable]

    def out(refuse: str, fix: str) -> RestoreDecision:
        return RestoreDecision(refuse, fix, survivors, rebuilt, resuming, healthy, q, restored_cluster)

    if healthy >= q and not resuming:
        return out(f"etcd still has quorum: {healthy} of {n} members healthy ({q} needed); a restore would throw "
                   "away every change since the snapshot for nothing",
                   f"replace the lost member(s) with the {REPLACE_RUNBOOK} runbook instead")
    if unreachable:
        return out(f"etcd host(s) {', '.join(unreachable)} do not answer SSH; Kubespray must not run with an "
                   "unreachable host in the play",
                   "reinstall the machine(s) (same address) and pin the new host key, or remove them from the "
                   "inventory's etcd group")
    if not survivors:
        return out("no etcd host still has etcd installed (env file, certificates, binary): the etcd CA is gone",
                   "this runbook restores onto at least one surviving member; with every member reinstalled, "
                   "reinstall the cluster and restore by hand")
    for group, hosts in (("etcd", etcd_hosts), ("kube_control_plane", control_planes)):
        if hosts and hosts[0] in rebuilt and not states[hosts[0]].installed:
            return out(f"{hosts[0]}, first in {group}, is a reinstalled machine; Kubespray treats the first host "
                       "as the source of the etcd CA and of the control plane",
                       f"put a surviving host ({', '.join(survivors)}) first in {group} in the inventory")
    return out("", "")


def initial_cluster(states: Mapping[str, MemberState], survivors: Sequence[str]) -> str:
    """``NAME=PEER_URL,...`` of the survivors, from their /etc/etcd.env. Pure."""
    return ",".join(f"{states[h].name}={states[h].peer_url}" for h in survivors)
