"""etcd members, health, snapshots and /etc/etcd.env, via etcdctl over SSH on a member.

etcdctl runs on one chosen member with Kubespray's client certificates
(``/etc/ssl/etcd/ssl/admin-HOST.pem``), so nothing but SSH is needed from the
operator's machine. Output is read with ``-w json``; member ids are shown in
hex as etcdctl's table does. The quorum arithmetic at the end is pure.

Probes: member_list, endpoint_health, endpoint_status, snapshot_status, read_env,
check_removal, check_loss, key_count. Actions: member_add, member_remove, snapshot_save,
snapshot, set_env (each names its rollback). Snapshots are implemented in
:mod:`runbooks_lib.etcd_snapshot`, the env file in :mod:`runbooks_lib.etcd_env`;
their names are importable from here.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

from runbooks_lib import ssh
from runbooks_lib.errors import BadParameters, CommandFailed, PreconditionFailed, WaitTimedOut

# Snapshots and /etc/etcd.env live in their own modules; their names are part of this one.
from runbooks_lib.etcd_env import ENV_FILE, EnvChange, EnvFile, read_env, set_env  # noqa: F401
from runbooks_lib.etcd_snapshot import (  # noqa: F401
    Snapshot,
    SnapshotStatus,
    local_sha256,
    remote_sha256,
    snapshot,
    snapshot_save,
    _json,
    snapshot_status,
)
from runbooks_lib.waits import wait_for

T = TypeVar("T")

CERT_DIR = "/etc/ssl/etcd/ssl"
LOCAL_ENDPOINT = "https://127.0.0.1:2379"


@dataclass(frozen=True)
class Etcdctl:
    """Where and how to run etcdctl: a connection to an etcd member and its inventory name.

    ``member`` is the member's inventory hostname, used in Kubespray's
    certificate names. ``sudo`` is needed when logged in as a non-root user
    (the keys are readable by root only).
    """

    conn: ssh.BaseConnection
    member: str
    endpoints: tuple[str, ...] = (LOCAL_ENDPOINT,)
    cert_dir: str = CERT_DIR
    etcdctl: str = "etcdctl"
    sudo: bool = False
    timeout: float = 30.0

    def argv(self, *args: str, endpoints: Sequence[str] | None = None) -> list[str]:
        """The full etcdctl command line for ``args``."""
        eps = tuple(endpoints or self.endpoints)
        d = self.cert_dir
        return [
            "env", "ETCDCTL_API=3", self.etcdctl,
            f"--endpoints={','.join(eps)}",
            f"--cacert={d}/ca.pem",
            f"--cert={d}/admin-{self.member}.pem",
            f"--key={d}/admin-{self.member}-key.pem",
            *args,
        ]

    def run(self, *args: str, endpoints: Sequence[str] | None = None, check: bool = True,
            timeout: float | None = None) -> ssh.Result:
        return ssh.run(
            self.conn, self.argv(*args, endpoints=endpoints),
            timeout=timeout or self.timeout, check=check, sudo=self.sudo,
        )


def peer_url(ip: str, port: int = 2380) -> str:
    """Kubespray's peer URL for a member address: ``https://IP:2380`` (IPv6 in brackets)."""
    host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    return f"https://{host}:{port}"


# -- members ---------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One etcd member as ``etcdctl member list`` reports it."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    @property
    def id_hex(self) -> str:
        """The id as etcdctl's table and ``member remove`` spell it."""
        return format(self.id, "x")

    @property
    def started(self) -> bool:
        """False for a member added but never started (etcdctl shows "unstarted")."""
        return bool(self.name)


def parse_member_list(text: str) -> list[Member]:
    """Members from ``etcdctl member list -w json`` output."""
    data = json.loads(text)
    return [
        Member(
            id=int(m["ID"]),
            name=m.get("name", ""),
            peer_urls=tuple(m.get("peerURLs") or ()),
            client_urls=tuple(m.get("clientURLs") or ()),
            is_learner=bool(m.get("isLearner", False)),
        )
        for m in data.get("members", [])
    ]


def key_count(ctl: Etcdctl, prefix: str = "", *, timeout: float | None = None) -> int:
    """Probe: how many keys start with ``prefix`` ("" : every key), from a quorum read.

    ``etcdctl get PREFIX --prefix --keys-only --limit=1 -w json``: the
    response's count is every match, whatever the limit. Raises CommandFailed.
    """
    result = ctl.run("get", prefix, "--prefix", "--keys-only", "--limit=1", "-w", "json", timeout=timeout)
    try:
        return int(json.loads(result.stdout).get("count", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise CommandFailed(f"etcdctl get {prefix!r} --count gave no count", host=ctl.conn.name,
                            stderr=result.stdout + result.stderr, fix="check the etcdctl version") from None


def member_list(ctl: Etcdctl) -> list[Member]:
    """Probe: the cluster's members (``etcdctl member list -w json``). Raises CommandFailed."""
    result = ctl.run("member", "list", "-w", "json")
    _json(result, "member list")
    return parse_member_list(result.stdout)


def _normalise_url(url: str) -> str:
    return url.rstrip("/")


def find_member(
    members: Sequence[Member], *, member_id: int | str | None = None, name: str | None = None,
    peer_url: str | None = None,
) -> Member:
    """The one member matching exactly one selector.

    ``member_id`` is an int or etcdctl's hex string; ``peer_url`` must equal a
    member's peer URL exactly (``https://10.0.0.1:2380`` never matches
    10.0.0.11). Raises BadParameters (not exactly one selector) or
    PreconditionFailed (no member or several match).
    """
    given = [s for s in (member_id, name, peer_url) if s is not None]
    if len(given) != 1:
        raise BadParameters("give exactly one of member_id, name, peer_url")
    if member_id is not None:
        wanted = member_id if isinstance(member_id, int) else int(str(member_id), 16)
        matches = [m for m in members if m.id == wanted]
        label = f"id {format(wanted, 'x')}"
    elif name is not None:
        matches = [m for m in members if m.name == name]
        label = f"name {name}"
    else:
        url = _normalise_url(str(peer_url))
        matches = [m for m in members if url in {_normalise_url(u) for u in m.peer_urls}]
        label = f"peer URL {url}"
    listing = ", ".join(f"{m.id_hex} {m.name or '(unstarted)'} {','.join(m.peer_urls)}" for m in members)
    if not matches:
        raise PreconditionFailed(
            f"no etcd member with {label}; members: {listing}",
            fix="check the member list; it may already have been removed",
        )
    if len(matches) > 1:
        raise PreconditionFailed(f"several etcd members match {label}: {listing}", fix="select by id")
    return matches[0]


@dataclass(frozen=True)
class MemberAdded:
    """What ``etcdctl member add`` printed: the values the new member must start with."""

    id: int
    name: str
    peer_url: str
    initial_cluster: str
    initial_cluster_state: str

    @property
    def id_hex(self) -> str:
        return format(self.id, "x")


def parse_member_add(text: str, name: str, peer: str) -> MemberAdded:
    """Parse ``etcdctl member add`` output (``Member ID added ...`` and ETCD_* lines)."""
    m = re.search(r"Member\s+([0-9a-f]+)\s+added", text)
    env = dict(re.findall(r'^(ETCD_[A-Z_]+)="?([^"\n]*)"?\s*$', text, flags=re.M))
    if not m or "ETCD_INITIAL_CLUSTER" not in env:
        raise ValueError(f"unexpected member add output: {text!r}")
    return MemberAdded(
        id=int(m.group(1), 16),
        name=env.get("ETCD_NAME", name),
        peer_url=env.get("ETCD_INITIAL_ADVERTISE_PEER_URLS", peer),
        initial_cluster=env["ETCD_INITIAL_CLUSTER"],
        initial_cluster_state=env.get("ETCD_INITIAL_CLUSTER_STATE", "existing"),
    )


def member_add(
    ctl: Etcdctl, name: str, peer: str, *, learner: bool = False, retry_for: float = 20.0
) -> MemberAdded:
    """Action: announce a new member (``etcdctl member add NAME --peer-urls=URL``).

    ``name`` must be the ETCD_NAME the new node will start with. Returns the
    ETCD_INITIAL_CLUSTER etcd printed. etcd's "unhealthy cluster" refusal
    (members not yet connected for 5 s) is retried for ``retry_for`` seconds.
    Raises PreconditionFailed if the peer URL is already a member,
    CommandFailed otherwise. Until the new member
    starts, the cluster counts it in its quorum. Rollback: ``member_remove(ctl,
    member_id=result.id)``.
    """
    for m in member_list(ctl):
        if _normalise_url(peer) in {_normalise_url(u) for u in m.peer_urls}:
            raise PreconditionFailed(
                f"peer URL {peer} already belongs to member {m.id_hex} ({m.name or 'unstarted'})",
                host=ctl.conn.name,
                fix="remove that member first, or start the node with the existing membership",
            )
    args = ["member", "add", name, f"--peer-urls={peer}"]
    if learner:
        args.append("--learner")
    result = _reconfigure(ctl, args, retry_for=retry_for, what=f"member add {name}")
    try:
        return parse_member_add(result.stdout, name, peer)
    except ValueError:
        raise CommandFailed(
            "could not read etcdctl member add output", host=result.host, command=result.command,
            stderr=result.stdout, fix="check the member list by hand",
        ) from None


def member_remove(
    ctl: Etcdctl, *, member_id: int | str | None = None, name: str | None = None, peer_url: str | None = None,
    check: bool = True, retry_for: float = 20.0,
) -> Member:
    """Action: remove one member (``etcdctl member remove HEXID``), selected exactly.

    First checks the quorum with :func:`check_removal` against the members'
    health (``endpoint health --cluster``) and raises PreconditionFailed
    when the removal would lose quorum, before anything is changed;
    ``check=False`` skips that check (the library's one opt-out spelling),
    e.g. to remove a member of a cluster being restored. Raises
    PreconditionFailed if no member or several match, CommandFailed if etcd
    refuses (its "unhealthy cluster" refusal, survivors connected for less
    than 5 s, is retried for ``retry_for`` seconds). Returns the removed
    member. Rollback: :func:`member_add` with its name and peer URL, then
    start it with a fresh data dir and ETCD_INITIAL_CLUSTER_STATE=existing.
    """
    members = member_list(ctl)
    member = find_member(members, member_id=member_id, name=name, peer_url=peer_url)
    if check:
        verdict = removal_verdict(ctl, members, member)
        if not verdict.ok:
            raise PreconditionFailed(
                f"refusing to remove etcd member {_label(member)}: {verdict.message}",
                host=ctl.conn.name,
                fix="bring the unhealthy members back first (`etcd.endpoint_health(ctl, cluster=True)`), "
                    "or pass check=False if you know the cluster must shrink anyway",
            )
    _reconfigure(ctl, ["member", "remove", member.id_hex], retry_for=retry_for,
                 what=f"member remove {_label(member)}")
    return member


def _reconfigure(ctl: Etcdctl, args: list[str], *, retry_for: float, what: str) -> ssh.Result:
    """Action: run a membership change, retrying etcd's "unhealthy cluster" refusal for ``retry_for`` seconds.

    etcd refuses reconfiguration until the members that must remain have been
    connected for 5 s (strict reconfig check), e.g. right after a member
    restarts or another change. Raises CommandFailed with etcd's last words.
    """
    result = _last_answer(lambda: ctl.run(*args, check=False),
                          lambda r: (r.ok or "unhealthy cluster" not in r.stderr, r.tail("stderr", 1)),
                          within=retry_for, interval=1.0, what=f"etcd to accept {what}")
    if result.failed:  # the last refusal, with etcd's own words
        raise ssh.failure(result, fix="check `endpoint health --cluster`: every started member must be healthy")
    return result


def _label(member: Member) -> str:
    """A member's name, or its hex id for a member added but never started."""
    return member.name or member.id_hex


def removal_verdict(ctl: Etcdctl, members: Sequence[Member], member: Member) -> QuorumVerdict:
    """Probe: :func:`check_removal` for ``member`` with the health etcd reports for every member now.

    A member is healthy when one of its client URLs answers ``endpoint health``.
    Raises CommandFailed when no endpoint answers at all.
    """
    health = endpoint_health(ctl, cluster=True)
    healthy_urls = {_normalise_url(h.endpoint) for h in health if h.healthy}
    healthy = [_label(m) for m in members if healthy_urls & {_normalise_url(u) for u in m.client_urls}]
    return check_removal([_label(m) for m in members], healthy, _label(member))


# -- health and status -----------------------------------------------------------------


@dataclass(frozen=True)
class EndpointHealth:
    endpoint: str
    healthy: bool
    took: str = ""
    error: str = ""


def parse_endpoint_health(text: str) -> list[EndpointHealth]:
    """Parse ``etcdctl endpoint health -w json`` output."""
    data = json.loads(text) if text.strip() else []
    if isinstance(data, dict):
        data = [data]
    return [
        EndpointHealth(
            endpoint=d.get("endpoint", ""), healthy=bool(d.get("health")),
            took=str(d.get("took", "")), error=str(d.get("error") or ""),
        )
        for d in data
    ]


_HEALTH_LINE = re.compile(r"^(?P<endpoint>\S+) is (?P<state>healthy|unhealthy): (?P<rest>.*)$")


def parse_endpoint_health_text(stdout: str, stderr: str) -> list[EndpointHealth]:
    """Parse ``etcdctl endpoint health`` in its default (simple) output, from both streams.

    etcdctl 3.4 prints every result on stderr; 3.5 and later print healthy
    endpoints on stdout and unhealthy ones on stderr (with "Error: unhealthy
    cluster"). Log lines and other text are ignored.
    """
    results = []
    for line in (stdout + "\n" + stderr).splitlines():
        match = _HEALTH_LINE.match(line.strip())
        if not match:
            continue
        healthy = match["state"] == "healthy"
        took = re.search(r"took = (\S+)", match["rest"]) if healthy else None
        results.append(EndpointHealth(endpoint=match["endpoint"], healthy=healthy,
                                      took=took[1] if took else "", error="" if healthy else match["rest"]))
    return results


def endpoint_health(
    ctl: Etcdctl, *, cluster: bool = False, endpoints: Sequence[str] | None = None, timeout: float | None = None
) -> list[EndpointHealth]:
    """Probe: health of the given endpoints, or of every member's with ``cluster=True``.

    An unhealthy endpoint is a result (healthy False, error set), not an
    exception; CommandFailed only when etcdctl printed nothing usable (e.g.
    with ``cluster=True`` and no endpoint answering the member list).
    """
    args = ["endpoint", "health", "-w", "json"] + (["--cluster"] if cluster else [])
    result = ctl.run(*args, endpoints=endpoints, check=False, timeout=timeout)
    try:
        return parse_endpoint_health(result.stdout)
    except json.JSONDecodeError:
        raise ssh.failure(result, fix="check that at least one endpoint answers (etcd running, certificates)") from None


def endpoint_health_settled(
    ctl: Etcdctl, *, needed: int, within: float = 30.0, interval: float = 3.0, timeout: float | None = None,
) -> list[EndpointHealth]:
    """Probe: ``endpoint health --cluster``, asked again for up to ``within`` s while fewer than ``needed`` are healthy.

    Right after a member dies (the leader above all), the others answer
    "context deadline exceeded" until they have elected a new leader, a few
    election timeouts later: one look would report a lost quorum that is not.
    Returns the last answer (the caller judges it); no side effects.
    """
    def enough(health: list[EndpointHealth]) -> tuple[bool, str]:
        healthy = sum(h.healthy for h in health)
        return healthy >= needed, f"{healthy} healthy, {needed} needed"

    return _last_answer(lambda: endpoint_health(ctl, cluster=True, timeout=timeout), enough,
                        within=within, interval=interval, what="etcd members to answer health checks")


def _last_answer(ask: Callable[[], T], done: Callable[[T], tuple[bool, str]], *, within: float, interval: float,
                 what: str) -> T:
    """Call ``ask`` until ``done(answer)`` holds or ``within`` seconds pass; return the last answer.

    For probes whose caller judges the final answer itself: a timeout is not
    an error here (no WaitTimedOut). Side effects are those of ``ask``.
    """
    last: list[T] = []

    def check() -> tuple[bool, str]:
        last[:] = [ask()]
        return done(last[0])

    try:
        wait_for(check, timeout=within, interval=interval, what=what)
    except WaitTimedOut:
        pass
    return last[0]


@dataclass(frozen=True)
class EndpointStatus:
    """One member's ``endpoint status``: its leader view, revision, raft term, db size, version."""

    endpoint: str
    member_id: int
    leader: int
    revision: int
    raft_term: int
    raft_index: int
    db_size: int
    version: str
    is_learner: bool = False

    @property
    def member_hex(self) -> str:
        return format(self.member_id, "x")

    @property
    def leader_hex(self) -> str:
        return format(self.leader, "x")

    @property
    def is_leader(self) -> bool:
        return self.member_id == self.leader


def parse_endpoint_status(text: str) -> list[EndpointStatus]:
    """Parse ``etcdctl endpoint status -w json`` output."""
    data = json.loads(text) if text.strip() else []
    out = []
    for d in data:
        s = d["Status"]
        header = s.get("header", {})
        out.append(
            EndpointStatus(
                endpoint=d["Endpoint"], member_id=int(header.get("member_id", 0)), leader=int(s.get("leader", 0)),
                revision=int(header.get("revision", 0)), raft_term=int(s.get("raftTerm", header.get("raft_term", 0))),
                raft_index=int(s.get("raftIndex", 0)), db_size=int(s.get("dbSize", 0)),
                version=str(s.get("version", "")), is_learner=bool(s.get("isLearner", False)),
            )
        )
    return out


@dataclass(frozen=True)
class StatusReport:
    """Statuses of the endpoints that answered, and errors of those that did not."""

    statuses: tuple[EndpointStatus, ...]
    errors: tuple[str, ...]

    def __iter__(self):
        return iter(self.statuses)

    def __len__(self) -> int:
        return len(self.statuses)

    @property
    def leaders(self) -> set[str]:
        """Distinct leaders seen (hex); more than one means a split view."""
        return {s.leader_hex for s in self.statuses if s.leader}


def endpoint_status(
    ctl: Etcdctl, *, cluster: bool = False, endpoints: Sequence[str] | None = None, timeout: float | None = None
) -> StatusReport:
    """Probe: status of the given endpoints, or of every member's with ``cluster=True``.

    Endpoints that do not answer are listed in ``errors`` (etcdctl's stderr
    lines). Raises CommandFailed when no endpoint answered.
    """
    args = ["endpoint", "status", "-w", "json"] + (["--cluster"] if cluster else [])
    result = ctl.run(*args, endpoints=endpoints, check=False, timeout=timeout)
    try:
        statuses = parse_endpoint_status(result.stdout)
    except (json.JSONDecodeError, KeyError, TypeError):
        statuses = []
    if not statuses:
        raise ssh.failure(result, fix="no etcd endpoint answered: check that etcd runs on the members")
    errors = tuple(line for line in result.stderr.splitlines() if line.strip())
    return StatusReport(tuple(statuses), errors)


# -- quorum arithmetic ------------------------------------------------------------


def quorum(n: int) -> int:
    """Members that must agree in an ``n``-member cluster: n // 2 + 1."""
    return n // 2 + 1


def fault_tolerance(n: int) -> int:
    """Members an ``n``-member cluster can lose and keep quorum."""
    return max(0, (n - 1) // 2)


@dataclass(frozen=True)
class QuorumVerdict:
    ok: bool
    message: str
    members: int
    healthy: int
    quorum: int


def check_removal(members: Collection[str], healthy: Collection[str], remove: str) -> QuorumVerdict:
    """Would removing member ``remove`` keep quorum, given which members are healthy?

    The removal itself needs quorum of the current cluster, and the cluster
    left behind needs quorum of its smaller size.
    """
    names, up = set(members), set(healthy) & set(members)
    n = len(names)
    if remove not in names:
        return QuorumVerdict(False, f"{remove} is not a member ({', '.join(sorted(names))})", n, len(up), quorum(n))
    if len(up) < quorum(n):
        return QuorumVerdict(
            False,
            f"the cluster has lost quorum: {len(up)} of {n} members healthy, {quorum(n)} needed; "
            "no member can be removed until quorum is back (or restore from a snapshot)",
            n, len(up), quorum(n),
        )
    n2, up2 = n - 1, up - {remove}
    if n2 == 0 or len(up2) < quorum(n2):
        return QuorumVerdict(
            False,
            f"removing {remove} would leave {n2} members with {len(up2)} healthy, below quorum {quorum(n2)}: "
            "the cluster would stop accepting writes",
            n2, len(up2), quorum(n2),
        )
    return QuorumVerdict(
        True,
        f"removing {remove} leaves {n2} members, {len(up2)} healthy, quorum {quorum(n2)}, "
        f"tolerating {fault_tolerance(n2)} more failure(s)" + (
            " (an even member count: add a member back soon)" if n2 % 2 == 0 else ""
        ),
        n2, len(up2), quorum(n2),
    )


def check_loss(members: Collection[str], healthy: Collection[str], lose: str) -> QuorumVerdict:
    """Would losing member ``lose`` (powered off, not removed) keep quorum?"""
    names, up = set(members), set(healthy) & set(members)
    n = len(names)
    up2 = up - {lose}
    if len(up2) < quorum(n):
        return QuorumVerdict(
            False,
            f"losing {lose} would leave {len(up2)} of {n} members healthy, below quorum {quorum(n)}: "
            "etcd and the Kubernetes API would stop",
            n, len(up2), quorum(n),
        )
    return QuorumVerdict(
        True,
        f"losing {lose} leaves {len(up2)} of {n} members healthy, quorum {quorum(n)}, "
        f"{len(up2) - quorum(n)} more failure(s) tolerated",
        n, len(up2), quorum(n),
    )
