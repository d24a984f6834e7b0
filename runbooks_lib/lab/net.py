"""The lab's network on the host: bridge, firewall table, and the "graveyard".

A powered-off VPS does not refuse connections: its IP just goes silent. The
graveyard is a network namespace on the lab bridge that takes over the IPs of
stopped machines; it answers ARP (so neighbours resolve the address) and drops
every IP packet (so TCP SYNs hang until the client's timeout), exactly what a
client of a dead VPS sees. Partitions are bridge-level drop rules.

Side effects: creates and deletes links, addresses, a network namespace and an
nftables table. Everything is named after the bridge so ``teardown`` finds it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from pathlib import Path

from runbooks_lib.errors import LabError
from runbooks_lib.lab import sh
from runbooks_lib.lab.config import LabConfig

T = 20  # seconds allowed for one ip/nft command


def names(config: LabConfig) -> dict[str, str]:
    b = config.bridge
    return {"netns": f"{b}-gy", "gy_host": f"{b}gyh", "gy_ns": "gy0", "table": f"{b}_lab"}


def bridge_exists(config: LabConfig) -> bool:
    return Path(f"/sys/class/net/{config.bridge}").exists()


def bridge_owner(config: LabConfig) -> str | None:
    """The state directory recorded on the bridge (its alias), if the bridge exists."""
    alias = Path(f"/sys/class/net/{config.bridge}/ifalias")
    if not alias.exists():
        return None
    text = alias.read_text().strip()
    return text.removeprefix("runbooks-lab:") if text.startswith("runbooks-lab:") else text or ""


def check_range_free(config: LabConfig) -> None:
    """Raise LabError if another interface or route already uses the lab's subnet."""
    net = config.network
    addrs = json.loads(sh.run(["ip", "-j", "-4", "addr", "show"], timeout=T).stdout or "[]")
    for link in addrs:
        if link.get("ifname") == config.bridge:
            continue
        for info in link.get("addr_info", []):
            iface = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            if iface.network.overlaps(net):
                raise LabError(f"the lab's address range {net} is already in use by {link['ifname']} ({iface})",
                               fix="set RUNBOOKS_LAB_SUBNET to a free private range, e.g. 10.214.7.0/24")
    routes = json.loads(sh.run(["ip", "-j", "-4", "route", "show"], timeout=T).stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("dev") == config.bridge:
            continue
        if ipaddress.ip_network(dst, strict=False).overlaps(net):
            raise LabError(f"the lab's address range {net} overlaps route {dst} via {route.get('dev')}",
                           fix="set RUNBOOKS_LAB_SUBNET to a free private range, e.g. 10.214.7.0/24")


def bridge_mac(config: LabConfig) -> str:
    """A fixed, locally administered unicast MAC for the lab bridge, derived from its name (pure)."""
    digest = hashlib.sha256(config.bridge.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def setup(config: LabConfig) -> None:
    """Create the bridge, host address, firewall table and graveyard (idempotent)."""
    n = names(config)
    prefix = config.network.prefixlen
    if not bridge_exists(config):
        sh.run(["ip", "link", "add", config.bridge, "type", "bridge"], timeout=T)
        sh.run(["ip", "link", "set", config.bridge, "alias", f"runbooks-lab:{config.state_dir}"], timeout=T)
    # A bridge takes the lowest MAC of its ports unless one is set: a machine booting with a
    # new veth (or powered off) would change it, and every other machine would keep sending
    # to the old MAC of the host's address until its ARP entry expires (tens of seconds of
    # silence). A MAC set by hand never changes.
    if Path(f"/sys/class/net/{config.bridge}/addr_assign_type").read_text().strip() != "3":
        sh.run(["ip", "link", "set", config.bridge, "address", bridge_mac(config)], timeout=T)
    have = sh.run(["ip", "-4", "-o", "addr", "show", "dev", config.bridge], timeout=T).stdout
    if f" {config.host_ip}/" not in have:
        sh.run(["ip", "addr", "add", f"{config.host_ip}/{prefix}", "dev", config.bridge], timeout=T)
    sh.run(["ip", "link", "set", config.bridge, "up"], timeout=T)
    _setup_firewall(config)
    if not Path(f"/run/netns/{n['netns']}").exists():
        sh.run(["ip", "netns", "add", n["netns"]], timeout=T)
    if not Path(f"/sys/class/net/{n['gy_host']}").exists():
        sh.run(["ip", "link", "add", n["gy_host"], "type", "veth", "peer", "name", n["gy_ns"],
                "netns", n["netns"]], timeout=T)
        sh.run(["ip", "link", "set", n["gy_host"], "master", config.bridge, "up"], timeout=T)
    ns = ["ip", "-n", n["netns"]]
    sh.run([*ns, "link", "set", "lo", "up"], timeout=T)
    sh.run([*ns, "link", "set", n["gy_ns"], "up"], timeout=T)
    # Drop every IP packet reaching the graveyard; ARP is not IP and is still answered.
    sh.run(["ip", "netns", "exec", n["netns"], "nft", "-f", "-"], timeout=T, input=(
        "table inet graveyard\ndelete table inet graveyard\n"
        "table inet graveyard {\n"
        "  chain input { type filter hook input priority -300; policy drop; }\n"
        "  chain output { type filter hook output priority -300; policy drop; }\n"
        "}\n"))


def _setup_firewall(config: LabConfig) -> None:
    table = names(config)["table"]
    existing = sh.run(["nft", "list", "tables"], timeout=T).stdout
    if f"table bridge {table}" in existing and f"table inet {table}" in existing:
        return
    # bridge family: partitions and frozen machines (traffic between machines never leaves the bridge).
    # inet family: the lab never routes to the outside world through the host.
    sh.run(["nft", "-f", "-"], timeout=T, input=(
        f"table bridge {table} {{\n"
        "  chain forward { type filter hook forward priority 0; policy accept; }\n"
        "  chain input { type filter hook input priority 0; policy accept; }\n"
        "  chain output { type filter hook output priority 0; policy accept; }\n"
        "}\n"
        f"table inet {table} {{\n"
        "  chain forward { type filter hook forward priority 0; policy accept;\n"
        f"    iifname \"{config.bridge}\" oifname != \"{config.bridge}\" drop\n"
        "  }\n"
        "}\n"))


def teardown(config: LabConfig) -> None:
    """Remove the graveyard, firewall tables and bridge (idempotent)."""
    n = names(config)
    if Path(f"/run/netns/{n['netns']}").exists():
        sh.run(["ip", "netns", "del", n["netns"]], timeout=T, check=False)
    if Path(f"/sys/class/net/{n['gy_host']}").exists():
        sh.run(["ip", "link", "del", n["gy_host"]], timeout=T, check=False)
    existing = sh.run(["nft", "list", "tables"], timeout=T, check=False).stdout
    for family in ("bridge", "inet"):
        if f"table {family} {n['table']}" in existing:
            sh.run(["nft", "delete", "table", family, n["table"]], timeout=T)
    for link in Path("/sys/class/net").iterdir():
        # Machine veths (vb-*) that outlived their machine are enslaved to our bridge.
        master = link / "master"
        if link.name.startswith("vb-") and master.exists() and master.resolve().name == config.bridge:
            sh.run(["ip", "link", "del", link.name], timeout=T, check=False)
    if bridge_exists(config):
        sh.run(["ip", "link", "del", config.bridge], timeout=T)


def silence(config: LabConfig, ip: str) -> None:
    """Make ``ip`` answer ARP but drop everything (a dead VPS)."""
    n = names(config)
    have = sh.run(["ip", "-n", n["netns"], "-4", "-o", "addr", "show", "dev", n["gy_ns"]], timeout=T).stdout
    if f" {ip}/" not in have:
        sh.run(["ip", "-n", n["netns"], "addr", "add", f"{ip}/{config.network.prefixlen}",
                "dev", n["gy_ns"], "noprefixroute"], timeout=T)


def unsilence(config: LabConfig, ip: str) -> None:
    n = names(config)
    if not Path(f"/run/netns/{n['netns']}").exists():
        return
    have = sh.run(["ip", "-n", n["netns"], "-4", "-o", "addr", "show", "dev", n["gy_ns"]], timeout=T).stdout
    if f" {ip}/" in have:
        sh.run(["ip", "-n", n["netns"], "addr", "del", f"{ip}/{config.network.prefixlen}", "dev", n["gy_ns"]],
               timeout=T)


def silenced(config: LabConfig) -> set[str]:
    n = names(config)
    if not Path(f"/run/netns/{n['netns']}").exists():
        return set()
    out = sh.run(["ip", "-n", n["netns"], "-4", "-o", "addr", "show", "dev", n["gy_ns"]], timeout=T,
                 check=False).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if " inet " in line}


def forget_neighbour(ip: str, netns_pids: list[int]) -> None:
    """Flush ``ip`` from the host's and the given machines' neighbour caches."""
    sh.run(["ip", "neigh", "flush", "to", ip], timeout=T, check=False)
    for pid in netns_pids:
        sh.run(["nsenter", "-t", str(pid), "-n", "ip", "neigh", "flush", "to", ip], timeout=T, check=False)


def _rules(config: LabConfig, chain: str = "forward") -> list[str]:
    table = names(config)["table"]
    out = sh.run(["nft", "-a", "list", "chain", "bridge", table, chain], timeout=T, check=False).stdout
    return out.splitlines()


def add_partition(config: LabConfig, ip_a: str, ip_b: str) -> None:
    """Drop IP traffic between two machines in both directions (ARP still flows)."""
    table = names(config)["table"]
    existing = "\n".join(_rules(config))
    for src, dst in ((ip_a, ip_b), (ip_b, ip_a)):
        if f"ip saddr {src} ip daddr {dst} " in existing:
            continue
        sh.run(["nft", "add", "rule", "bridge", table, "forward", "ip", "saddr", src, "ip", "daddr", dst,
                "counter", "drop", "comment", "partition"], timeout=T)


def block_port(config: LabConfig, port: str) -> None:
    """Drop every frame to or from a machine's bridge port (a frozen machine).

    Frames between machines pass the bridge's forward hook; frames between the
    host and a machine pass its input and output hooks.
    """
    table = names(config)["table"]
    if f'"{port}"' in "\n".join(_rules(config)):
        return
    for chain, direction in (("forward", "iifname"), ("forward", "oifname"), ("input", "iifname"),
                             ("output", "oifname")):
        sh.run(["nft", "add", "rule", "bridge", table, chain, direction, port, "drop",
                "comment", f"frozen-{port}"], timeout=T)


def _delete_rules(config: LabConfig, marker: str) -> None:
    table = names(config)["table"]
    for chain in ("forward", "input", "output"):
        for line in _rules(config, chain):
            if marker in line and "# handle " in line:
                handle = line.rsplit("# handle ", 1)[1].strip()
                sh.run(["nft", "delete", "rule", "bridge", table, chain, "handle", handle], timeout=T)


def heal(config: LabConfig) -> None:
    _delete_rules(config, 'comment "partition"')


def unblock_port(config: LabConfig, port: str) -> None:
    _delete_rules(config, f'comment "frozen-{port}"')


def partitions(config: LabConfig) -> list[tuple[str, str]]:
    pairs = []
    for line in _rules(config):
        words = line.split()
        if "partition" in line and "saddr" in words and "daddr" in words:
            pairs.append((words[words.index("saddr") + 1], words[words.index("daddr") + 1]))
    return pairs
