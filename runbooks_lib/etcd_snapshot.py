"""etcd snapshots: save one on a member, verify it, download it, keep a manifest, prune old ones.

Part of :mod:`runbooks_lib.etcd` (import the names from there:
``etcd.snapshot(ctl, ...)``); etcdctl/etcdutl run over SSH on the member.
Actions: snapshot_save, snapshot, save_backup, remove_remote, write_manifest, apply_retention.
Probes: snapshot_status, remote_sha256, choose_member, read_manifest,
backups, check_backup. Pure: plan_retention, backup_name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from runbooks_lib import ssh
from runbooks_lib.errors import BadParameters, CommandFailed, PreconditionFailed

if TYPE_CHECKING:
    from runbooks_lib.etcd import Etcdctl


def _json(result: ssh.Result, what: str) -> object:
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise CommandFailed(
            f"etcdctl {what} did not print JSON",
            host=result.host, command=result.command, exit_code=result.exited,
            stderr=result.stderr or result.stdout,
            fix="check the etcdctl version and the certificate paths",
        ) from None



@dataclass(frozen=True)
class SnapshotStatus:
    hash: int
    revision: int
    total_keys: int
    total_size: int


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot: where it was taken and stored, its status and checksums."""

    host: str
    endpoint: str
    remote_path: str
    local_path: str
    status: SnapshotStatus
    remote_sha256: str
    local_sha256: str
    size: int
    keys: int = -1  # live keys at the snapshot's revision (what a restore must hold); -1: not read


def snapshot_save(ctl: Etcdctl, remote_path: str, *, endpoint: str | None = None, timeout: float = 300.0) -> ssh.Result:
    """Action: ``etcdctl snapshot save PATH`` against ONE endpoint (etcd requires one).

    Raises BadParameters for several endpoints, CommandFailed if the save
    fails. Rollback: delete ``remote_path``.
    """
    ep = endpoint or (ctl.endpoints[0] if len(ctl.endpoints) == 1 else None)
    if not ep or "," in ep:
        raise BadParameters(
            f"snapshot save takes exactly one endpoint, got {endpoint or ctl.endpoints}",
            fix="pass endpoint= the client URL of one healthy member",
        )
    result = ctl.run("snapshot", "save", remote_path, endpoints=[ep], timeout=timeout)
    if ctl.sudo and ctl.conn.needs_sudo:
        # etcdctl ran as root; let the SSH user download it.
        ssh.run(ctl.conn, ["chown", ctl.conn.host.user, remote_path], timeout=30, sudo=True)
    return result


def snapshot_status(ctl: Etcdctl, remote_path: str, *, timeout: float = 120.0) -> SnapshotStatus:
    """Probe: hash, revision, key count and size of a snapshot file on the member.

    Uses ``etcdutl snapshot status`` when installed (etcd 3.5+, required on
    3.6), else ``etcdctl snapshot status``. Raises CommandFailed for a
    corrupt or missing file.
    """
    has_etcdutl = ssh.run(ctl.conn, ["sh", "-c", "command -v etcdutl"], timeout=30, check=False).ok
    if has_etcdutl:
        argv = ["etcdutl", "snapshot", "status", remote_path, "-w", "json"]
        result = ssh.run(ctl.conn, argv, timeout=timeout, sudo=ctl.sudo)
    else:
        result = ssh.run(
            ctl.conn, ["env", "ETCDCTL_API=3", ctl.etcdctl, "snapshot", "status", remote_path, "-w", "json"],
            timeout=timeout, sudo=ctl.sudo,
        )
    data = _json(result, "snapshot status")
    assert isinstance(data, dict)
    return SnapshotStatus(
        hash=int(data["hash"]), revision=int(data["revision"]),
        total_keys=int(data["totalKey"]), total_size=int(data["totalSize"]),
    )


def remote_sha256(conn: ssh.BaseConnection, path: str, *, sudo: bool = False, timeout: float = 120.0) -> str:
    """Probe: ``sha256sum`` of a remote file."""
    result = ssh.run(conn, ["sha256sum", "--", path], timeout=timeout, sudo=sudo)
    return result.stdout.split()[0]


def local_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# One remote shell script (constant; the snapshot path and the etcdctl command line are its arguments):
# save, snapshot status (etcdutl where installed), sha256 and the live key count at the snapshot's
# revision, in one SSH round trip. The sha256 runs beside the status and the count (each reads the
# whole file or database once). Prints the status JSON, the sha256sum line and the count JSON.
_SAVE_AND_VERIFY = r"""set -e
snap=$1; shift
"$@" snapshot save "$snap" >/dev/null
sum=$(mktemp)
trap 'rm -f -- "$sum"' EXIT
sha256sum -- "$snap" >"$sum" &
hashing=$!
if command -v etcdutl >/dev/null 2>&1; then status=$(etcdutl snapshot status "$snap" -w json)
else status=$("$@" snapshot status "$snap" -w json); fi
rev=$(printf '%s' "$status" | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
count=$("$@" get "" --prefix --keys-only --limit=1 --rev="$rev" -w json)
wait "$hashing"
printf '%s\n' "$status"
cat -- "$sum"
printf '%s\n' "$count"
"""


def save_and_verify_argv(ctl: Etcdctl, remote_path: str, endpoint: str) -> list[str]:
    """The one command that saves, verifies and counts (see _SAVE_AND_VERIFY). Pure."""
    return ["sh", "-c", _SAVE_AND_VERIFY, "etcd-snapshot", remote_path, *ctl.argv(endpoints=[endpoint])]


def parse_save_and_verify(result: ssh.Result) -> tuple[SnapshotStatus, str, int]:
    """Status, remote sha256 and live key count from the script's three lines. Raises CommandFailed."""
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    try:
        status, count = json.loads(lines[0]), json.loads(lines[2])
        digest = lines[1].split()[0]
        return (SnapshotStatus(hash=int(status["hash"]), revision=int(status["revision"]),
                               total_keys=int(status["totalKey"]), total_size=int(status["totalSize"])),
                digest, int(count.get("count", 0)))
    except (IndexError, KeyError, ValueError, TypeError):
        raise CommandFailed("snapshot save/verify printed something unexpected", host=result.host,
                            command=result.command, exit_code=result.exited, stderr=result.stderr or result.stdout,
                            fix="check the etcdctl version and the certificate paths") from None


def snapshot(
    ctl: Etcdctl, remote_path: str, local_path: str | os.PathLike, *, endpoint: str | None = None,
    timeout: float = 300.0,
) -> Snapshot:
    """Action: save a snapshot on the member, verify it, download it (mode 0600) and compare checksums.

    Saving, ``snapshot status``, the member's sha256 and the live key count at
    the snapshot's revision take one SSH command; then the download. Raises
    BadParameters for several endpoints, CommandFailed when saving or
    verifying fails or the checksums differ (the bad local copy is deleted).
    Rollback: delete both files.
    """
    ep = endpoint or (ctl.endpoints[0] if len(ctl.endpoints) == 1 else None)
    if not ep or "," in ep:
        raise BadParameters(
            f"snapshot save takes exactly one endpoint, got {endpoint or ctl.endpoints}",
            fix="pass endpoint= the client URL of one healthy member",
        )
    result = ssh.run(ctl.conn, save_and_verify_argv(ctl, remote_path, ep), timeout=timeout, sudo=ctl.sudo)
    status, remote_sum, keys = parse_save_and_verify(result)
    if ctl.sudo and ctl.conn.needs_sudo:
        # etcdctl ran as root; let the SSH user download it.
        ssh.run(ctl.conn, ["chown", ctl.conn.host.user, remote_path], timeout=30, sudo=True)
    Path(local_path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Created 0600 before the download writes into it: the snapshot holds every Secret of the cluster.
    os.close(os.open(local_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    os.chmod(local_path, 0o600)
    ssh.get(ctl.conn, remote_path, local_path, timeout=timeout)
    local_sum = local_sha256(local_path)
    if local_sum != remote_sum:
        Path(local_path).unlink(missing_ok=True)
        raise CommandFailed(
            f"downloaded snapshot differs from {remote_path} on {ctl.conn.name}: "
            f"sha256 {local_sum} here, {remote_sum} there",
            host=ctl.conn.name,
            fix="download it again; check disk space on both ends",
        )
    return Snapshot(
        host=ctl.conn.name, endpoint=ep, remote_path=remote_path, local_path=str(local_path), status=status,
        remote_sha256=remote_sum, local_sha256=local_sum, size=Path(local_path).stat().st_size, keys=keys,
    )


def save_backup(
    ctl: Etcdctl, *, cluster: str, member: str, etcd_version: str, backup_dir: str | os.PathLike,
    remote_dir: str, timeout: float = 300.0, when: datetime | None = None,
) -> tuple[Snapshot, Manifest]:
    """Action: a snapshot of ``member`` saved, verified and kept in ``backup_dir`` with its manifest.

    What every runbook that keeps a snapshot does (etcd-snapshot, and
    replace-control-plane before its first change): :func:`snapshot` into
    ``remote_dir/etcd-snapshot-STAMP.db`` on the member and a hidden partial
    file here, renamed to :func:`backup_name` once its sha256 matches, then
    the manifest beside it (restore-cluster takes it by its file name). The
    member's copy stays: remove it with :func:`remove_remote`. Raises as
    :func:`snapshot`. Rollback: delete the snapshot and its manifest.
    """
    now = when or datetime.now(timezone.utc)
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    directory = Path(backup_dir)
    partial = directory / f".{stamp}.partial"
    snap = snapshot(ctl, f"{remote_dir.rstrip('/')}/etcd-snapshot-{stamp}.db", partial, timeout=timeout)
    final = directory / backup_name(cluster, now, snap.status.revision)
    os.replace(partial, final)
    snap = dataclasses.replace(snap, local_path=str(final))
    manifest = manifest_for(snap, cluster=cluster, member=member, etcd_version=etcd_version, when=now)
    write_manifest(directory, manifest)
    return snap, manifest


def remove_remote(conn: ssh.BaseConnection, remote_path: str, *, sudo: bool = False, timeout: float = 60.0) -> None:
    """Action: delete the member's copy of a snapshot (``rm -f``). No rollback: the local copy is kept."""
    ssh.run(conn, ["rm", "-f", "--", remote_path], timeout=timeout, sudo=sudo)


# -- choosing the member ----------------------------------------------------------------


def choose_member(members: Sequence[str], healthy: Sequence[str], leader: str | None,
                  given: str = "") -> tuple[str, str]:
    """The member to save the snapshot on, and why. Pure.

    ``given`` must be healthy. Otherwise the first healthy member (in the
    inventory's order) that is not the leader: a snapshot streams the whole
    database, which the leader would have to do while it also replicates
    every write. The leader only when it is the one healthy member. Raises
    PreconditionFailed when no member (or not the given one) is healthy.
    """
    if given:
        if given not in members:
            raise PreconditionFailed(f"member {given} is not an etcd member ({', '.join(members)})",
                                     fix="give one of the inventory's etcd hosts, or leave member empty")
        if given not in healthy:
            raise PreconditionFailed(f"member {given} is not healthy; healthy: {', '.join(healthy) or 'none'}",
                                     fix="pick a healthy member, or leave member empty to choose one")
        return given, "given"
    up = [m for m in members if m in healthy]
    if not up:
        raise PreconditionFailed("no etcd member is healthy: a snapshot needs a member that answers",
                                 fix="run the diagnostics runbook; with quorum lost, restore from an earlier snapshot")
    followers = [m for m in up if m != leader]
    if followers:
        return followers[0], f"healthy, not the leader ({leader or 'unknown'})"
    return up[0], "the leader: the only healthy member"


# -- manifests and the backup directory ----------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What a downloaded snapshot is: written beside it as NAME.json.

    ``keys`` is the live key count at ``revision`` (what a restore must
    hold); ``total_keys``, ``hash`` and ``total_size`` are snapshot status's.
    """

    cluster: str
    member: str
    revision: int
    keys: int
    size: int
    time: str  # UTC, ISO 8601
    etcd_version: str
    sha256: str
    file: str  # the snapshot's file name, in the manifest's directory
    total_keys: int
    total_size: int
    hash: int
    verified: bool = True
    drill: dict = field(default_factory=dict)  # the restore drill's result, once run

    @property
    def taken(self) -> datetime:
        return datetime.fromisoformat(self.time)

    def with_drill(self, drill: dict) -> Manifest:
        return Manifest(**{**asdict(self), "drill": dict(drill)})


def backup_name(cluster: str, when: datetime, revision: int) -> str:
    """``CLUSTER-YYYYmmddTHHMMSSZ-revN.db``: sorts by time, names the revision. Pure."""
    return f"{cluster}-{when.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-rev{revision}.db"


def manifest_for(snap: Snapshot, *, cluster: str, member: str, etcd_version: str, when: datetime,
                 keys: int | None = None) -> Manifest:
    """The manifest of a verified download (``keys``: the snapshot's own count unless given). Pure."""
    return Manifest(
        cluster=cluster, member=member, revision=snap.status.revision,
        keys=snap.keys if keys is None else keys, size=snap.size,
        time=when.astimezone(timezone.utc).isoformat(timespec="seconds"), etcd_version=etcd_version,
        sha256=snap.local_sha256, file=Path(snap.local_path).name, total_keys=snap.status.total_keys,
        total_size=snap.status.total_size, hash=snap.status.hash,
    )


def manifest_path(snapshot_path: str | os.PathLike) -> Path:
    return Path(snapshot_path).with_suffix(".json")


def write_manifest(directory: str | os.PathLike, manifest: Manifest) -> Path:
    """Action: write NAME.json (mode 0600) beside the snapshot, atomically. Rollback: delete it."""
    path = manifest_path(Path(directory) / manifest.file)
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Probe: a manifest file. Raises PreconditionFailed for a missing or unreadable one."""
    try:
        data = json.loads(Path(path).read_text())
        return Manifest(**data)
    except FileNotFoundError:
        raise PreconditionFailed(f"no manifest {path}", fix="use a snapshot written by the etcd-snapshot runbook") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise PreconditionFailed(f"manifest {path} is unreadable: {exc}",
                                 fix="use a snapshot written by the etcd-snapshot runbook") from None


def backups(directory: str | os.PathLike, cluster: str | None = None) -> list[Manifest]:
    """Probe: the manifests in a backup directory (of ``cluster`` if given), oldest first.

    Unreadable manifests are skipped (they are not this runbook's files).
    """
    out = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            m = read_manifest(path)
        except PreconditionFailed:
            continue
        if cluster is None or m.cluster == cluster:
            out.append(m)
    return sorted(out, key=lambda m: (m.taken, m.revision))


def check_backup(directory: str | os.PathLike, manifest: Manifest) -> Path:
    """Probe: the snapshot file exists and its sha256 is the manifest's; returns its path.

    Raises PreconditionFailed naming the file for a missing or corrupted snapshot.
    """
    path = Path(directory) / manifest.file
    if not path.is_file():
        raise PreconditionFailed(f"snapshot {path} is missing (its manifest is there)",
                                 fix="pick another snapshot, or take a new one with the etcd-snapshot runbook")
    found = local_sha256(path)
    if found != manifest.sha256:
        raise PreconditionFailed(
            f"snapshot {path} is corrupted: sha256 {found}, the manifest says {manifest.sha256}",
            fix="do not restore it; pick another snapshot (and check the disk it was stored on)")
    return path


@dataclass(frozen=True)
class RetentionPlan:
    keep: tuple[Manifest, ...]
    delete: tuple[Manifest, ...]

    def lines(self) -> list[str]:
        return ([f"keep   {m.file} ({m.time}, revision {m.revision})" for m in self.keep]
                + [f"delete {m.file} ({m.time}, revision {m.revision})" for m in self.delete])


def plan_retention(manifests: Sequence[Manifest], *, keep_last: int = 0, keep_days: float = 0,
                   now: datetime | None = None) -> RetentionPlan:
    """Which snapshots to keep: the last ``keep_last`` and/or those younger than ``keep_days``. Pure.

    0 switches a rule off; with both on, a snapshot either rule keeps is kept;
    with both off everything is kept. The newest verified snapshot is never
    deleted, whatever the rules say.
    """
    if keep_last < 0 or keep_days < 0:
        raise BadParameters("keep_last and keep_days must be 0 (off) or positive")
    ordered = sorted(manifests, key=lambda m: (m.taken, m.revision))
    if not keep_last and not keep_days:
        return RetentionPlan(tuple(ordered), ())
    now = now or datetime.now(timezone.utc)
    keep_ids = set()
    if keep_last:
        keep_ids |= {m.file for m in ordered[-keep_last:]}
    if keep_days:
        keep_ids |= {m.file for m in ordered if now - m.taken <= timedelta(days=keep_days)}
    verified = [m for m in ordered if m.verified]
    if verified:
        keep_ids.add(verified[-1].file)
    return RetentionPlan(tuple(m for m in ordered if m.file in keep_ids),
                         tuple(m for m in ordered if m.file not in keep_ids))


def apply_retention(directory: str | os.PathLike, plan: RetentionPlan) -> list[str]:
    """Action: delete each planned snapshot and its manifest; returns the deleted file names. No rollback."""
    deleted = []
    for m in plan.delete:
        for path in (Path(directory) / m.file, manifest_path(Path(directory) / m.file)):
            path.unlink(missing_ok=True)
        deleted.append(m.file)
    return deleted
