"""Control-plane files on the hosts: the kube-apiserver static pod manifest, over SSH.

On a kubeadm (Kubespray) control plane kube-apiserver is a static pod: kubelet
watches /etc/kubernetes/manifests and restarts the API server when
kube-apiserver.yaml changes. So an edit here is an action in two halves:
:func:`set_etcd_servers` rewrites the flag, :func:`wait_for_apiserver` proves
the API server on that host serves again with it. Nothing is restarted by hand,
on a real cluster as on the lab (whose kubelet stand-in does what kubelet does).

Probes: etcd_servers_in, read_etcd_servers, apiserver_pending. Actions:
set_etcd_servers (rollback: set the old list, wait again).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import kubernetes
import yaml

from runbooks_lib import runbook, ssh
from runbooks_lib.errors import BadParameters, CommandFailed, HostUnreachable, PreconditionFailed
from runbooks_lib.kube import api as api_

APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"


@dataclass(frozen=True)
class ManifestChange:
    """What set_etcd_servers did to a control plane's kube-apiserver manifest."""

    host: str
    path: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    modified: float | None = None  # the file's mtime on the host after the write (epoch s); None if unchanged

    @property
    def changed(self) -> bool:
        return self.old != self.new


_ETCD_FLAG = re.compile(r"^(?P<lead>\s*-\s*['\"]?--etcd-servers=)(?P<value>[^'\"\s]*)(?P<trail>['\"]?\s*)$", re.M)


def etcd_servers_in(manifest: str) -> tuple[str, ...]:
    """The --etcd-servers of the kube-apiserver container in a static pod manifest."""
    doc = yaml.safe_load(manifest) or {}
    for container in (doc.get("spec") or {}).get("containers") or []:
        for arg in list(container.get("command") or []) + list(container.get("args") or []):
            if isinstance(arg, str) and arg.startswith("--etcd-servers="):
                return tuple(u for u in arg.split("=", 1)[1].split(",") if u)
    raise PreconditionFailed(
        "no --etcd-servers=... flag in the kube-apiserver manifest", fix="check the manifest by hand"
    )


def read_etcd_servers(
    conn: ssh.BaseConnection, *, path: str = APISERVER_MANIFEST, sudo: bool = False, timeout: float = 30.0
) -> tuple[str, ...]:
    """Probe: --etcd-servers in /etc/kubernetes/manifests/kube-apiserver.yaml on a control plane."""
    return etcd_servers_in(ssh.read_text(conn, path, sudo=sudo, timeout=timeout) or "")


def set_etcd_servers(
    conn: ssh.BaseConnection, servers: Sequence[str], *, path: str = APISERVER_MANIFEST, sudo: bool = False,
    timeout: float = 30.0,
) -> ManifestChange:
    """Action: rewrite only --etcd-servers in kube-apiserver.yaml (atomically: temp file + mv).

    kubectl has no equivalent (static pod manifests live on the node); by
    hand: edit the file on the control plane. kubelet notices the change
    (within its fileCheckFrequency, 20 s by default) and restarts the API
    server: follow with :func:`wait_for_apiserver`. Raises BadParameters for
    non-https URLs, PreconditionFailed if the flag is not found exactly
    once. Rollback: ``set_etcd_servers(conn, change.old)``, then wait again.
    """
    if not servers or not all(re.match(r"^https://[^,\s]+$", s) for s in servers):
        raise BadParameters(f"etcd servers must be https:// URLs, got {list(servers)}")
    text = ssh.read_text(conn, path, sudo=sudo, timeout=timeout) or ""
    old = etcd_servers_in(text)
    new = tuple(servers)
    if old == new:
        return ManifestChange(conn.name, path, old, new)
    matches = list(_ETCD_FLAG.finditer(text))
    if len(matches) != 1:
        raise PreconditionFailed(f"--etcd-servers appears {len(matches)} times as a list item in {path}; edit by hand")
    new_text = _ETCD_FLAG.sub(lambda m: f"{m.group('lead')}{','.join(new)}{m.group('trail')}", text, count=1)
    if etcd_servers_in(new_text) != new:
        raise PreconditionFailed(f"editing {path} did not give the expected flag; edit by hand")
    ssh.write_text(conn, path, new_text, sudo=sudo, timeout=timeout)
    stamp = ssh.run(conn, ["stat", "-c", "%Y", "--", path], timeout=timeout, sudo=sudo).stdout.strip()
    return ManifestChange(conn.name, path, old, new, float(stamp) if stamp.isdigit() else None)


def _flag_values(pod: Mapping[str, Any], flag: str) -> tuple[str, ...] | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for arg in list(container.get("command") or []) + list(container.get("args") or []):
            if isinstance(arg, str) and arg.startswith(f"{flag}="):
                return tuple(u for u in arg.split("=", 1)[1].split(",") if u)
    return None


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def apiserver_pending(api: kubernetes.client.ApiClient, change: ManifestChange, *, node: str | None = None,
                      timeout: float = api_.REQUEST_TIMEOUT) -> list[str]:
    """Probe: what still keeps the API server on ``change.host`` from serving with ``change.new``; [] when done.

    Checks what is equally true on a kubeadm control plane and on the lab:
    the mirror pod kube-system/kube-apiserver-NODE (which kubelet keeps in step
    with the static pod) has ``--etcd-servers`` = ``change.new`` in its command,
    its container is running, Ready, and started at or after the manifest's
    mtime ``change.modified`` (so the process read the new file), and /readyz
    of ``api`` answers 200. ``api`` must point at that control plane
    (``kube.client_from_kubeconfig(path, server="https://IP:6443")``). Read-only.
    """
    name = f"kube-apiserver-{node or change.host}"
    pod = api_.get(api, f"/api/v1/namespaces/kube-system/pods/{quote(name)}", timeout=timeout)
    pending: list[str] = []
    if pod is None:
        pending.append(f"mirror pod kube-system/{name} absent")
    else:
        servers = _flag_values(pod, "--etcd-servers")
        if servers != tuple(change.new):
            pending.append(f"{name} runs with --etcd-servers={','.join(servers or ())}")
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        running = ((statuses[0].get("state") or {}).get("running") or {}) if statuses else {}
        started = _epoch(running.get("startedAt"))
        if started is None:
            pending.append(f"{name} is not running")
        elif change.modified is not None and started < change.modified:
            pending.append(f"{name} started at {running['startedAt']}, before the manifest changed")
        if not any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (pod.get("status") or {}).get("conditions") or []):
            pending.append(f"{name} not Ready")
    status, doc = api_.call(api, "GET", "/readyz", timeout=timeout)
    if status != 200:
        pending.append(f"/readyz answers HTTP {status}: {str(doc.get('message', ''))[:200]}")
    return pending


def wait_for_apiserver(api: kubernetes.client.ApiClient, change: ManifestChange, *, node: str | None = None,
                       timeout: float = 180.0, interval: float = 2.0) -> runbook.Waited:
    """Probe: wait until the API server on ``change.host`` serves with the new flags (see :func:`apiserver_pending`).

    Replaces any manual restart: kubelet restarts the static pod after the
    manifest changed (within fileCheckFrequency, 20 s by default). An API
    server that does not answer while it restarts counts as pending. Raises
    WaitTimedOut naming what is still pending (e.g. the old --etcd-servers,
    a start before the change); then look at kubelet's log on that host
    (journalctl -u kubelet) and the manifest.
    """
    return runbook.wait_for(
        lambda: (lambda p: (not p, p))(apiserver_pending(api, change, node=node)),
        timeout=timeout, interval=interval, retry_on=(HostUnreachable, CommandFailed),
        what=f"the API server on {change.host} to serve with --etcd-servers={','.join(change.new)}",
        fix=f"check kubelet on {change.host} (journalctl -u kubelet): it restarts the static pod when "
            f"{change.path} changes; check the manifest is valid YAML",
    )
