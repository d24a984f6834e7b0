"""The operator's admin kubeconfig: fetched after an install, pointed at a control plane, mode 0600.

Kubespray leaves admin.conf on every control plane (/etc/kubernetes/admin.conf,
pointing at 127.0.0.1 or that node) and, with ``kubeconfig_localhost: true``,
copies it to INVENTORY/artifacts/admin.conf. :func:`fetch` takes the artifact
when it exists, else reads the file over SSH, sets every cluster's ``server:``
to ``https://CONTROL_PLANE:6443`` and writes the target with mode 0600. The
content holds a client key: it is never printed, returned or logged.
:func:`repoint_remote` moves a control plane's own admin.conf off a dead API
server (Kubespray v2.31 points it at the first control plane).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from runbooks_lib import errors, ssh

REMOTE_ADMIN_CONF = "/etc/kubernetes/admin.conf"


@dataclass(frozen=True)
class Fetched:
    """Where the kubeconfig came from and what was written (never its content)."""

    path: Path
    source: str  # "artifacts/admin.conf" or "HOST:/etc/kubernetes/admin.conf"
    server: str
    changed: bool
    mode: int


def with_server(text: str, server: str) -> str:
    """The kubeconfig ``text`` with every cluster's server set to ``server``. Raises PreconditionFailed."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    clusters = doc.get("clusters") if isinstance(doc, dict) else None
    if not clusters:
        raise errors.PreconditionFailed("the admin kubeconfig has no clusters (not a kubeconfig?)",
                                        fix="check /etc/kubernetes/admin.conf on the control plane")
    for entry in clusters:
        entry.setdefault("cluster", {})["server"] = server
    return yaml.safe_dump(doc, sort_keys=False)


def fetch(
    target: str | os.PathLike[str],
    *,
    server: str,
    artifact: str | os.PathLike[str] | None = None,
    conn: ssh.BaseConnection | None = None,
    sudo: bool = False,
    timeout: float = 30.0,
) -> Fetched:
    """Action: write the admin kubeconfig to ``target`` (mode 0600) with its server set to ``server``.

    Source: ``artifact`` when that file exists (Kubespray's artifacts/admin.conf),
    else /etc/kubernetes/admin.conf read over ``conn`` (a control plane). An
    unchanged file is not rewritten (its mode is still set to 0600). Raises
    PreconditionFailed when neither source is available, CommandFailed when
    the remote read fails. Rollback: delete ``target``.
    """
    path = Path(target).expanduser()
    art = Path(artifact).expanduser() if artifact else None
    if art is not None and art.is_file():
        text, source = art.read_text(encoding="utf-8"), "artifacts/admin.conf"
    elif conn is not None:
        text = ssh.read_text(conn, REMOTE_ADMIN_CONF, timeout=timeout, sudo=sudo) or ""
        source = f"{conn.name}:{REMOTE_ADMIN_CONF}"
    else:
        raise errors.PreconditionFailed(
            f"no admin kubeconfig: {art or 'artifacts/admin.conf'} does not exist and no control plane was given",
            fix="set kubeconfig_localhost: true in group_vars, or pass a connection to a control plane")
    new = with_server(text, server)
    old = path.read_text(encoding="utf-8") if path.is_file() else None
    changed = old != new
    path.parent.mkdir(parents=True, exist_ok=True)
    if changed:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new)
        tmp.replace(path)
    os.chmod(path, 0o600)
    return Fetched(path, source, server, changed, 0o600)


@dataclass(frozen=True)
class Repointed:
    """A control plane's admin.conf servers before and after :func:`repoint_remote` (never its content)."""

    host: str
    old: tuple[str, ...]
    new: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.old != self.new


def servers_in(text: str) -> tuple[str, ...]:
    """Every cluster's ``server:`` in kubeconfig ``text`` (empty when it is not a kubeconfig)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return ()
    clusters = doc.get("clusters") if isinstance(doc, dict) else None
    return tuple(str((c.get("cluster") or {}).get("server", "")) for c in clusters or () if isinstance(c, dict))


def repoint_remote(
    conn: ssh.BaseConnection, server: str, *, away_from: Sequence[str], sudo: bool = False, timeout: float = 30.0,
) -> Repointed:
    """Action: set /etc/kubernetes/admin.conf's server on ``conn`` to ``server`` when it names one of ``away_from``.

    Kubespray v2.23+ writes the first control plane's address into every
    control plane's admin.conf; when that node is dead, each ``kubectl`` task
    of a playbook waits out a connect timeout. Only the server lines change
    (atomic rewrite, mode 0600); a file that names none of ``away_from`` is
    left alone. Raises PreconditionFailed when the file is not a kubeconfig,
    CommandFailed when the remote read or write fails. Rollback: call again
    with the old server (Kubespray's control-plane role also rewrites it).
    """
    text = ssh.read_text(conn, REMOTE_ADMIN_CONF, timeout=timeout, sudo=sudo) or ""
    old = servers_in(text)
    if not old:
        raise errors.PreconditionFailed(f"{conn.name}:{REMOTE_ADMIN_CONF} is missing or not a kubeconfig",
                                        host=conn.name, fix="run cluster.yml on this control plane, or copy "
                                        "admin.conf from another control plane")
    if not {o.rstrip("/") for o in old} & {u.rstrip("/") for u in away_from}:
        return Repointed(conn.name, old, old)
    new_text = with_server(text, server)
    ssh.write_text(conn, REMOTE_ADMIN_CONF, new_text, timeout=timeout, sudo=sudo, mode="0600")
    return Repointed(conn.name, old, servers_in(new_text))
