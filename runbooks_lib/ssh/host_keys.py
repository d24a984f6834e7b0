"""Host key checks: fingerprints, known_hosts names, and the policy that refuses unknown keys.

Keys are checked against one known_hosts file only (never the user's or the
system's, never auto-added); the errors say how to pin the right key safely.
"""

from __future__ import annotations

import base64
import hashlib

import paramiko

from runbooks_lib.errors import HostKeyError
from runbooks_lib.ssh.host import Host
from runbooks_lib.ssh.result import error


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key, e.g. ``SHA256:abc...``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(host: Host) -> str:
    """The name ``host``'s key is filed under in known_hosts (``[address]:port`` off port 22)."""
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


class RejectUnknownKey(paramiko.MissingHostKeyPolicy):
    """Refuse keys absent from the known_hosts file, explaining how to pin one safely."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        h = self.host
        raise error(
            HostKeyError,
            f"the host key of {h.name} ({hostname}) is not in {h.known_hosts}; "
            f"the machine offered {key.get_name()} {fingerprint(key)}",
            host=h.name,
            fix=(
                "compare that fingerprint with the one shown on the machine's own console "
                "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there, or the provider's "
                "console log); only when they match, append the key to "
                f"{h.known_hosts}. `ssh-keyscan` alone is not a verification: it fetches the key "
                "over the same unverified network."
            ),
        )
