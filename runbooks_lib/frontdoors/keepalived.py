"""A floating IP moved by keepalived (VRRP) between chosen nodes.

Each node gets ``/etc/keepalived/keepalived.conf`` with one ``vrrp_instance``
using unicast peers (VPS networks rarely pass VRRP multicast), the given
``advert_int`` (VRRPv3 when below one second) and a notify script that
appends every state change, with its wall-clock time, to
``/var/log/runbooks-vrrp.log``. :class:`VrrpWatcher` reads those logs and turns
MASTER transitions into events on the probe's timeline.

The first node gets the highest priority and is MASTER at start. A powered-off
master is replaced after about 3 x advert_int (plus skew); when it comes back
it takes the address back (preemption), which is a second move.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field

from runbooks_lib.errors import BadParameters, CommandFailed, HostUnreachable, PreconditionFailed, RunbookError
from runbooks_lib.frontdoors.runner import Runner, write_file
from runbooks_lib.probe import EventLog, Target
from runbooks_lib.waits import wait_for

CONF = "/etc/keepalived/keepalived.conf"
NOTIFY = "/etc/keepalived/runbooks-notify.sh"
LOG = "/var/log/runbooks-vrrp.log"
MARKER = "# managed by runbooks_lib.frontdoors.keepalived"

_NOTIFY_SCRIPT = f"""#!/bin/sh
{MARKER}
# Called by keepalived as: notify TYPE NAME STATE PRIORITY
echo "$(date +%s.%N) $(hostname) $1 $2 $3" >> {LOG}
"""


@dataclass(frozen=True)
class VrrpNode:
    """A node that can hold the floating IP: its runner and its own address."""

    name: str
    ip: str
    runner: Runner


@dataclass(frozen=True)
class Transition:
    """One line of the notify log."""

    wall: float
    node: str
    instance: str
    state: str


def parse_log(text: str) -> list[Transition]:
    """Parse the notify log (malformed lines are skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5:
            try:
                out.append(Transition(float(parts[0]), parts[1], parts[3], parts[4]))
            except ValueError:
                continue
    return out


def _interface_of(ip_addr_output: str, ip: str) -> str | None:
    # `ip -o -4 addr show` lines: "2: host0    inet 10.213.7.11/24 brd ... scope global host0 ..."
    for line in ip_addr_output.splitlines():
        m = re.match(r"\d+:\s+(\S+)\s+inet\s+([0-9.]+)/(\d+)", line)
        if m and m.group(2) == ip:
            return m.group(1).split("@")[0]
    return None


@dataclass
class KeepalivedVip:
    """A VRRP floating IP (``vip``/``prefix``) across ``nodes``.

    ``setup`` writes the configuration and notify script and restarts
    keepalived on every node, then waits until exactly one node holds the
    address. ``teardown`` stops keepalived, removes what setup wrote and the
    address if still present. Both are idempotent. A node with a keepalived
    configuration not written here is left alone: :class:`PreconditionFailed`.
    """

    vip: str
    nodes: tuple[VrrpNode, ...]
    prefix: int = 24
    virtual_router_id: int = 51
    advert_int: float = 1.0
    interface: str | None = None
    port: int = 80
    path: str = "/"
    host_header: str | None = None
    timeout: float = 30.0
    label: str = "vrrp-vip"
    interfaces: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        try:
            ipaddress.IPv4Address(self.vip)
        except ValueError:
            raise BadParameters(f"VIP {self.vip!r} is not an IPv4 address") from None
        if len(self.nodes) < 2:
            raise BadParameters("a floating IP needs at least two nodes")
        if not 1 <= self.virtual_router_id <= 255:
            raise BadParameters(f"virtual_router_id {self.virtual_router_id} is not in 1..255")
        if not 0.01 <= self.advert_int <= 255:
            raise BadParameters(f"advert_int {self.advert_int} is out of range")

    # configuration
    def config_for(self, node: VrrpNode, interface: str) -> str:
        """keepalived.conf for ``node`` (pure function of the parameters)."""
        index = self.nodes.index(node)
        priority = 150 - 10 * index
        peers = "\n".join(f"        {n.ip}" for n in self.nodes if n is not node)
        version = 3 if self.advert_int < 1 or self.advert_int != int(self.advert_int) else 2
        advert = f"{self.advert_int:g}"
        return f"""{MARKER}
global_defs {{
    router_id {node.name}
    script_user root
    enable_script_security
    vrrp_version {version}
}}

vrrp_instance runbooks_vip {{
    state {"MASTER" if index == 0 else "BACKUP"}
    interface {interface}
    virtual_router_id {self.virtual_router_id}
    priority {priority}
    advert_int {advert}
    unicast_src_ip {node.ip}
    unicast_peer {{
{peers}
    }}
    virtual_ipaddress {{
        {self.vip}/{self.prefix} dev {interface}
    }}
    notify {NOTIFY}
}}
"""

    def _interface(self, node: VrrpNode) -> str:
        if self.interface:
            return self.interface
        out = node.runner.run(["ip", "-o", "-4", "addr", "show"], timeout=10).stdout
        name = _interface_of(out, node.ip)
        if name is None:
            raise PreconditionFailed(f"{node.name} has no interface with address {node.ip}", host=node.name,
                                     command="ip -o -4 addr show", fix="pass the node's real IP or interface=")
        return name

    def _check_not_foreign(self, node: VrrpNode) -> None:
        res = node.runner.run(["sh", "-c", 'test ! -s "$1" || grep -qF "$2" "$1"', "check", CONF, MARKER],
                              timeout=10, check=False)
        if res.exited != 0:
            raise PreconditionFailed(f"{node.name} already has a keepalived configuration not written by the runbooks",
                                     host=node.name, fix=f"move {CONF} aside on {node.name} or use another node")

    # actions
    def setup(self) -> None:
        """Configure and (re)start keepalived on every node; wait for one holder of the VIP.

        Raises PreconditionFailed (foreign configuration, no interface),
        CommandFailed/HostUnreachable from the runners, WaitTimedOut when no
        single node holds the address within ``timeout``. Rollback: :meth:`teardown`.
        """
        for node in self.nodes:
            self._check_not_foreign(node)
            iface = self._interface(node)
            self.interfaces[node.name] = iface
            write_file(node.runner, NOTIFY, _NOTIFY_SCRIPT, mode="0755")
            write_file(node.runner, CONF, self.config_for(node, iface), mode="0644")
        for node in self.nodes:
            self._restart(node)
        self.wait_single_holder(self.timeout)

    def _restart(self, node: VrrpNode) -> None:
        """``systemctl restart keepalived``, tried twice a second apart (a restart right after a stop can
        fail while the old instance lets go of its sockets); CommandFailed carries keepalived's journal."""
        for attempt in range(2):
            res = node.runner.run(["systemctl", "restart", "keepalived"], timeout=30, check=False)
            if res.exited == 0:
                return
            if attempt == 0:
                time.sleep(1.0)
        journal = node.runner.run(["journalctl", "-u", "keepalived", "-n", "20", "--no-pager"], timeout=15,
                                  check=False).stdout
        raise CommandFailed(f"keepalived did not start on {node.name}", host=node.name,
                            command="systemctl restart keepalived", exit_code=res.exited,
                            stderr=f"{res.stderr}\n{journal}", fix="read keepalived's journal above")

    def teardown(self) -> None:
        """Stop keepalived and remove the configuration, notify script and VIP on every node.

        Every node is tried, also after one failed; then ONE error lists each
        node that failed: HostUnreachable when all of them were unreachable
        (powered off), otherwise CommandFailed. Cleaned nodes stay cleaned;
        rerun teardown once the failed nodes are back.
        """
        failed: dict[str, Exception] = {}
        for node in self.nodes:
            try:
                node.runner.run(["systemctl", "stop", "keepalived"], timeout=20, check=False)
                node.runner.run(["sh", "-c", 'if grep -qF "$2" "$1" 2>/dev/null; then rm -f "$1"; fi; rm -f "$3"',
                                 "teardown", CONF, MARKER, NOTIFY], timeout=10)
                iface = self.interfaces.get(node.name) or self.interface
                if iface:
                    node.runner.run(["ip", "addr", "del", f"{self.vip}/{self.prefix}", "dev", iface],
                                    timeout=10, check=False)
            except Exception as exc:  # keep going: every node must be cleaned that can be
                failed[node.name] = exc
        if failed:
            raise teardown_failure(failed, len(self.nodes), self.vip)

    # probes
    def holders(self, timeout: float = 5.0) -> list[str]:
        """Names of the nodes that currently have the VIP (unreachable nodes are skipped)."""
        out = []
        for node in self.nodes:
            try:
                res = node.runner.run(["ip", "-o", "-4", "addr", "show"], timeout=timeout, check=False)
            except Exception:
                continue
            if f" {self.vip}/" in res.stdout:
                out.append(node.name)
        return out

    def wait_single_holder(self, timeout: float) -> str:
        """Wait until exactly one node holds the VIP; return its name. Raises WaitTimedOut naming the holders."""
        holders: list[str] = []

        def single() -> tuple[bool, str]:
            holders[:] = self.holders()
            return len(holders) == 1, f"VIP {self.vip} held by {', '.join(holders) or 'no node'} (expected exactly one)"

        wait_for(single, timeout=timeout, interval=0.5, what=f"one node to hold VIP {self.vip}",
                 fix="check `journalctl -u keepalived` on the nodes")
        return holders[0]

    def target(self) -> Target:
        return Target(self.vip, self.port, self.path, self.host_header)

    def watcher(self, events: EventLog, *, interval: float = 0.5) -> VrrpWatcher:
        return VrrpWatcher(self.nodes, events, interval=interval)


def teardown_failure(failed: dict[str, Exception], total: int, vip: str) -> RunbookError:
    """One error naming every node whose teardown failed (``.failed`` maps node -> exception)."""
    lines = [f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
             for name, exc in failed.items()]
    unreachable = all(isinstance(exc, HostUnreachable) for exc in failed.values())
    cls = HostUnreachable if unreachable else CommandFailed
    exc = cls(f"keepalived teardown of VIP {vip} failed on {len(failed)} of {total} nodes:\n  " + "\n  ".join(lines),
              fix="bring the failed nodes back (or fix the cause) and run teardown again; the other nodes are clean")
    exc.failed = dict(failed)  # type: ignore[attr-defined]
    return exc


class VrrpWatcher:
    """Polls every node's notify log and records each new state change as an event.

    A MASTER transition becomes a ``vip moved`` event at the time the notify
    script ran (the node's clock); other states become ``vrrp STATE``. One
    thread per node, so a powered-off node's SSH timeout never delays the
    others. Side effect: threads until :meth:`stop`.
    """

    def __init__(self, nodes: tuple[VrrpNode, ...], events: EventLog, *, interval: float = 0.5,
                 ssh_timeout: float = 3.0) -> None:
        self.nodes = nodes
        self.events = events
        self.interval = interval
        self.ssh_timeout = ssh_timeout
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seen: dict[str, int] = {}

    def start(self) -> VrrpWatcher:
        # Lines already in the logs happened before the watch: skip them.
        for node in self.nodes:
            self._seen[node.name] = len(self._read(node) or [])
        for node in self.nodes:
            t = threading.Thread(target=self._loop, args=(node,), name=f"vrrp-watch-{node.name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _read(self, node: VrrpNode) -> list[Transition] | None:
        try:
            res = node.runner.run(["cat", LOG], timeout=self.ssh_timeout, check=False)
        except Exception:
            return None
        return parse_log(res.stdout)

    def poll(self, node: VrrpNode) -> None:
        lines = self._read(node)
        if lines is None:
            return
        seen = self._seen.get(node.name, 0)
        if len(lines) < seen:  # log rotated or reimaged node: start over
            seen = 0
        for tr in lines[seen:]:
            kind = "vip moved" if tr.state == "MASTER" else f"vrrp {tr.state}"
            self.events.add_wall(kind, tr.wall, f"{tr.node} {tr.state}", source="keepalived")
        self._seen[node.name] = len(lines)

    def _loop(self, node: VrrpNode) -> None:
        while not self._stop.is_set():
            self.poll(node)
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling (one last poll of every reachable node first)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        for node in self.nodes:
            self.poll(node)

    def __enter__(self) -> VrrpWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
