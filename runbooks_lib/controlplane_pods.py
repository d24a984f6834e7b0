"""Stopping and starting a control plane's static pods, the way kubelet is asked to: by moving manifests.

Before an etcd restore every API server must be stopped: a kube-apiserver keeps
a watch cache at etcd's old revision, and after a restore (the revision goes
backwards) it serves objects that no longer exist while its watchers never see
the restored state. kube-controller-manager and kube-scheduler must not act on
that stale view either. On a kubeadm (Kubespray) control plane all three are
static pods: moving their manifests out of kubelet's directory makes kubelet
stop them, moving them back makes it start them afresh (empty caches). This is
the procedure of Kubernetes' documentation for operating etcd ("stop all API
server instances, restore state in all etcd instances, restart all API server
instances") done with the tools a kubeadm cluster has.

Probes: manifest_places, apiserver_listening. Actions: move_aside (rollback:
move_back), move_back.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from runbooks_lib import ssh

MANIFEST_DIR = "/etc/kubernetes/manifests"
# Outside kubelet's directory (kubelet reads every file there): kept until moved back.
ASIDE_DIR = "/etc/kubernetes/manifests.restore-aside"
MANIFESTS = ("kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml")
APISERVER = MANIFESTS[0]


@dataclass(frozen=True)
class ManifestPlaces:
    """Where a control plane's manifests are: in kubelet's directory, moved aside, or both (a newer one in place)."""

    host: str
    in_place: tuple[str, ...]
    aside: tuple[str, ...]

    @property
    def apiserver_known(self) -> bool:
        """The kube-apiserver manifest is in one of the two places: its API server can be stopped and started."""
        return APISERVER in self.in_place or APISERVER in self.aside


_PLACES = ('md=$1; ad=$2; shift 2; for f; do '
           'if [ -f "$md/$f" ]; then echo "in $f"; fi; if [ -f "$ad/$f" ]; then echo "aside $f"; fi; done')
_ASIDE = ('set -e; md=$1; ad=$2; shift 2; mkdir -p -m 700 "$ad"; for f; do '
          'if [ -f "$md/$f" ]; then mv -f "$md/$f" "$ad/$f"; echo "$f"; fi; done')
# Back only where kubelet's directory has no file of that name (Kubespray may have written a newer one).
_BACK = ('md=$1; ad=$2; shift 2; for f; do '
         'if [ -f "$ad/$f" ] && [ ! -e "$md/$f" ]; then mv "$ad/$f" "$md/$f" && echo "$f"; fi; done; '
         'rmdir "$ad" 2>/dev/null || :')


def manifest_places(conn: ssh.BaseConnection, *, sudo: bool = False, timeout: float = 30.0,
                    manifest_dir: str = MANIFEST_DIR, aside_dir: str = ASIDE_DIR) -> ManifestPlaces:
    """Probe: which of :data:`MANIFESTS` are in ``manifest_dir`` and which in ``aside_dir``.

    Raises HostUnreachable or CommandFailed.
    """
    out = ssh.run(conn, ["sh", "-c", _PLACES, "places", manifest_dir, aside_dir, *MANIFESTS],
                  timeout=timeout, sudo=sudo).stdout.split("\n")
    pairs = [line.split(" ", 1) for line in out if " " in line]
    return ManifestPlaces(conn.name, tuple(f for where, f in pairs if where == "in"),
                          tuple(f for where, f in pairs if where == "aside"))


def move_aside(conn: ssh.BaseConnection, *, sudo: bool = False, timeout: float = 30.0,
               manifest_dir: str = MANIFEST_DIR, aside_dir: str = ASIDE_DIR) -> tuple[str, ...]:
    """Action: move the control-plane manifests into ``aside_dir`` (mode 0700); kubelet then stops their pods.

    Returns the files moved (none when already aside). The equivalent by hand:
    ``mkdir -m 700 ASIDE; mv /etc/kubernetes/manifests/kube-{apiserver,controller-manager,scheduler}.yaml
    ASIDE/``. Rollback: :func:`move_back`.
    """
    out = ssh.run(conn, ["sh", "-c", _ASIDE, "aside", manifest_dir, aside_dir, *MANIFESTS],
                  timeout=timeout, sudo=sudo).stdout
    return tuple(line for line in out.splitlines() if line)


def move_back(conn: ssh.BaseConnection, *, sudo: bool = False, timeout: float = 30.0,
              manifest_dir: str = MANIFEST_DIR, aside_dir: str = ASIDE_DIR) -> tuple[str, ...]:
    """Action: move the manifests back into kubelet's directory; kubelet starts their pods afresh.

    A file already in kubelet's directory is never overwritten (its aside copy
    stays, and ``aside_dir`` with it). Returns the files moved back.
    """
    out = ssh.run(conn, ["sh", "-c", _BACK, "back", manifest_dir, aside_dir, *MANIFESTS],
                  timeout=timeout, sudo=sudo).stdout
    return tuple(line for line in out.splitlines() if line)


def apiserver_listening(address: str, port: int = 6443, *, timeout: float = 2.0) -> bool:
    """Probe: whether anything accepts TCP connections on ``address:port`` (an API server still running)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
