"""Where the lab lives and how it is addressed: one frozen configuration.

Nothing here touches the system; the values come from defaults, overridable
through environment variables (RUNBOOKS_LAB_DIR, RUNBOOKS_LAB_CACHE,
RUNBOOKS_LAB_SUBNET, RUNBOOKS_LAB_BRIDGE) so tests and operators can move it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from runbooks_lib.errors import BadParameters

MAX_NODES = 9
NODE_NAME = re.compile(r"^node([1-9])$")

# Debian packages every lab machine gets. What later layers need is here too:
# etcd and nginx (with its stream module, for nginx-proxy) for the Kubespray stand-in, keepalived for the VIP front door,
# python3-venv for the API and kubelet stand-ins.
IMAGE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-resolved",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "iproute2",
    "iputils-ping",
    "nftables",
    "iptables",
    "procps",
    "psmisc",
    "curl",
    "ca-certificates",
    "openssl",
    "netcat-openbsd",
    "python3",
    "python3-venv",
    "python3-apt",
    "sudo",
    "less",
    "etcd-server",
    "etcd-client",
    "nginx",
    "libnginx-mod-stream",
    "keepalived",
)

# Python packages for code that runs inside the machines (API and kubelet
# stand-ins, test app). Kept small on purpose: stdlib + these only.
IMAGE_PYTHON_PACKAGES = (
    "aiohttp>=3.10,<4",
    "etcd3aio>=0.3,<0.4",
    "pyyaml>=6,<7",
    "jsonpatch>=1.33,<2",
    "cryptography>=42,<51",
)

IMAGE_FORMAT = 1  # bump when the build steps change, so caches are rebuilt


def _default_mirror() -> str:
    """The Debian mirror this host already uses (deb822 or one-line sources)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    return "http://deb.debian.org/debian"


DEFAULT_BRIDGE = "rblab0"


@dataclass(frozen=True)
class LabConfig:
    """Addresses and paths of one lab. ``nodeN`` gets host number 10+N."""

    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("RUNBOOKS_LAB_DIR", "/var/lib/runbooks-lab")))
    cache_dir: Path = field(default_factory=lambda: Path(os.environ.get("RUNBOOKS_LAB_CACHE", "/var/cache/runbooks-lab")))
    subnet: str = field(default_factory=lambda: os.environ.get("RUNBOOKS_LAB_SUBNET", "10.213.7.0/24"))
    bridge: str = field(default_factory=lambda: os.environ.get("RUNBOOKS_LAB_BRIDGE", DEFAULT_BRIDGE))
    suite: str = "bookworm"
    mirror: str = field(default_factory=_default_mirror)
    ssh_user: str = "root"
    boot_timeout: float = 60.0

    def __post_init__(self) -> None:
        try:
            net = ipaddress.ip_network(self.subnet)
        except ValueError as exc:
            raise BadParameters(f"lab subnet {self.subnet!r} is not a network: {exc}",
                                fix="set RUNBOOKS_LAB_SUBNET to something like 10.213.7.0/24") from None
        if net.version != 4 or net.prefixlen > 24 or not net.is_private:
            raise BadParameters(f"lab subnet {self.subnet} must be a private IPv4 /24 or larger",
                                fix="set RUNBOOKS_LAB_SUBNET to an unused private range such as 10.213.7.0/24")
        # The bridge name prefixes the machines' nspawn names, so two labs never
        # share a veth or nspawn name; "vb-" + bridge + "-node9" must fit in 15 characters.
        if not re.fullmatch(r"[a-z][a-z0-9]{1,5}", self.bridge):
            raise BadParameters(f"bridge name {self.bridge!r} is invalid",
                                fix="use 2-6 lowercase letters/digits, e.g. rblab0")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.subnet)  # type: ignore[return-value]

    @property
    def host_ip(self) -> str:
        """The host's address on the lab bridge (the lab's DNS and HAProxy live here)."""
        return str(self.network.network_address + 1)

    @property
    def graveyard_ip(self) -> str:
        """Address of the namespace that answers ARP for powered-off machines."""
        return str(self.network.network_address + 254)

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def ssh_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def description_path(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "lab.lock"

    def machine_dir(self, name: str) -> Path:
        return self.state_dir / "machines" / name

    def node_names(self, count: int) -> list[str]:
        if not 1 <= count <= MAX_NODES:
            raise BadParameters(f"--nodes must be between 1 and {MAX_NODES}, got {count}",
                                fix="the lab has node1..node9; pick a smaller count")
        return [f"node{i}" for i in range(1, count + 1)]

    def ip_of(self, name: str) -> str:
        match = NODE_NAME.match(name)
        if not match:
            raise BadParameters(f"unknown machine {name!r}", fix="lab machines are named node1..node9")
        return str(self.network.network_address + 10 + int(match.group(1)))

    def nspawn_name(self, name: str) -> str:
        """The machine's name for systemd-nspawn: unique per lab (its hostname stays ``name``)."""
        self.ip_of(name)
        return f"{self.bridge}-{name}"

    def veth_of(self, name: str) -> str:
        """The host side of the machine's network link, enslaved to the lab bridge."""
        return f"vb-{self.nspawn_name(name)}"

    def mac_of(self, name: str) -> str:
        """A stable, locally administered MAC for the machine's interface."""
        octets = [int(x) for x in self.ip_of(name).split(".")]
        return "02:72:62:%02x:%02x:%02x" % (octets[1], octets[2], octets[3])
