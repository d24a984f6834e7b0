"""etcd snapshots: save one on a member, verify it, download it and compare checksums.

Part of :mod:`runbooks_lib.etcd` (import the names from there:
``etcd.snapshot(ctl, ...)``); etcdctl/etcdutl run over SSH on the member.
Actions: snapshot_save, snapshot. Probes: snapshot_status, remote_sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runbooks_lib import ssh
from runbooks_lib.errors import BadParameters, CommandFailed

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


def snapshot(
    ctl: Etcdctl, remote_path: str, local_path: str | os.PathLike, *, endpoint: str | None = None,
    timeout: float = 300.0,
) -> Snapshot:
    """Action: save a snapshot on the member, verify it, download it and compare checksums.

    Raises CommandFailed when saving or verifying fails or the checksums
    differ (the bad local copy is deleted). Rollback: delete both files.
    """
    snapshot_save(ctl, remote_path, endpoint=endpoint, timeout=timeout)
    status = snapshot_status(ctl, remote_path, timeout=timeout)
    remote_sum = remote_sha256(ctl.conn, remote_path, sudo=ctl.sudo, timeout=timeout)
    Path(local_path).parent.mkdir(parents=True, exist_ok=True)
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
        host=ctl.conn.name, endpoint=endpoint or ctl.endpoints[0], remote_path=remote_path,
        local_path=str(local_path), status=status, remote_sha256=remote_sum, local_sha256=local_sum,
        size=Path(local_path).stat().st_size,
    )
