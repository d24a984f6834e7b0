"""The lab's DNS server: Debian's dnsmasq answering lab names in rotating order.

Why dnsmasq: tested on this host (dnsmasq 2.90), it rotates the order of a
name's A records on every answer, serves them with a short TTL
(``--local-ttl``), runs as a foreground process with no configuration file of
the host's (``--conf-file=/dev/null --no-resolv --no-hosts``), its own pid
file, and binds only the address it is given (``--bind-interfaces``), so the
host's resolver is never touched. Its ``--hostsdir`` is watched with inotify
and re-read on SIGHUP, so records change at run time without a restart. No
small home-grown server is needed.

Two limits of dnsmasq shape this module:

* the TTL applies to every local record (``--local-ttl``): a new TTL restarts
  the server (a few milliseconds without answers), records are kept;
* a hosts file *deleted* from the watched directory keeps its records, so the
  records file is only ever replaced atomically (rename), never removed.

State lives in one directory (default ``/var/lib/runbooks-lab/dns``):
``hosts/records`` (hosts-file format, ``IP NAME`` per line, one line per A
record, editable by hand: dnsmasq picks up changes), ``server.json``
(address, port, TTL, pid and its start time) and ``dnsmasq.log``.

``register(subparsers)`` adds ``dns start|stop|set|show`` to ``runbooks lab``.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from runbooks_lib import local
from runbooks_lib.errors import BadParameters, LabError, WaitTimedOut
from runbooks_lib.waits import wait_for

DNSMASQ = "/usr/sbin/dnsmasq"
DEFAULT_TTL = 5
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True)
class ServerState:
    """A running (or last started) server as recorded in ``server.json``."""

    listen: str
    port: int
    ttl: int
    pid: int
    started: str  # /proc/PID/stat start time, guards against PID reuse


def default_state_dir() -> Path:
    from runbooks_lib.lab.config import LabConfig

    return LabConfig().state_dir / "dns"


def default_listen() -> str:
    from runbooks_lib.lab.config import LabConfig

    return LabConfig().host_ip


def _check_name(name: str) -> str:
    name = name.strip().rstrip(".").lower()
    if not name or set(name) - _NAME_CHARS or ".." in name or name.startswith((".", "-")):
        raise BadParameters(f"{name!r} is not a DNS name", fix="use letters, digits, '-' and '.', e.g. uuid.awesome.lab")
    return name


def _check_ips(ips: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise BadParameters(f"{ip!r} is not an IP address") from None
        if addr.version != 4:
            raise BadParameters(f"{ip} is not IPv4; the lab serves A records only")
        out.append(str(addr))
    return tuple(out)


def _proc_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


class DnsServer:
    """One dnsmasq instance and its records directory.

    ``start()`` spawns dnsmasq (a new session, so it outlives the caller if
    not stopped); ``stop()`` ends it; both are idempotent. Records are read
    and written through the records file, so several processes (the CLI, a
    notebook) can share one server through its state directory.
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        listen: str | None = None,
        port: int = 53,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.listen = listen or default_listen()
        self.port = port
        self.ttl = ttl
        self._proc: local.Background | None = None

    # paths
    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def records_file(self) -> Path:
        return self.hosts_dir / "records"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "server.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "dnsmasq.log"

    # state
    def state(self) -> ServerState | None:
        """The running server's state, or None when none is running."""
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        st = ServerState(**data)
        if _proc_start(st.pid) != st.started:
            return None
        return st

    def records(self) -> dict[str, tuple[str, ...]]:
        """Name -> IPs as in the records file (file order)."""
        out: dict[str, list[str]] = {}
        try:
            text = self.records_file.read_text()
        except FileNotFoundError:
            return {}
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 2:
                for name in parts[1:]:
                    out.setdefault(name.lower(), []).append(parts[0])
        return {name: tuple(ips) for name, ips in out.items()}

    def _write_records(self, records: dict[str, tuple[str, ...]]) -> None:
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{ip} {name}" for name in sorted(records) for ip in records[name]]
        tmp = self.state_dir / ".records.tmp"
        tmp.write_text("".join(line + "\n" for line in lines))
        # Written outside the watched directory and renamed in: dnsmasq never
        # reads a half-written file.
        os.replace(tmp, self.records_file)

    # lifecycle
    def start(self, timeout: float = 10.0) -> ServerState:
        """Start dnsmasq (no-op when this state directory's server runs with the same settings).

        Raises :class:`LabError` when dnsmasq is missing or exits (address not
        on this host, port in use: the message carries its log), and
        :class:`WaitTimedOut` when it does not answer within ``timeout``.
        Rollback: :meth:`stop`.
        """
        current = self.state()
        if current is not None:
            if (current.listen, current.port, current.ttl) == (self.listen, self.port, self.ttl):
                return current
            self.stop()
        if not Path(DNSMASQ).exists():
            raise LabError(f"{DNSMASQ} not found", fix="apt-get install dnsmasq-base")
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        if not self.records_file.exists():
            self._write_records({})
        argv = [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            f"--listen-address={self.listen}",
            f"--port={self.port}",
            f"--hostsdir={self.hosts_dir}",
            f"--local-ttl={self.ttl}",
            f"--pid-file={self.state_dir / 'dnsmasq.pid'}",
            # root: the state directory may sit under a 0700 parent that the
            # usual 'nobody' could not traverse; dnsmasq still drops capabilities.
            "--user=root",
            "--log-facility=-",
            "--log-queries",
        ]
        proc = local.start(argv, log_path=self.log_file, outlives_run=True)
        self._proc = proc
        started: list[str] = []

        def serving() -> tuple[bool, str]:
            code = proc.poll()
            if code is not None:
                self._proc = None
                raise LabError(
                    f"dnsmasq exited with code {code} while starting on {self.listen}:{self.port}",
                    command=argv,
                    exit_code=code,
                    stderr=proc.log_tail(),
                    fix="check that the address is on this host (lab bridge up) and the port is free",
                )
            if not started:
                started.extend(filter(None, [_proc_start(proc.pid)]))
            return bool(started) and self._answers(), f"dnsmasq on {self.listen}:{self.port} not answering"

        try:
            wait_for(serving, timeout=timeout, interval=0.02, what=f"dnsmasq to answer on {self.listen}:{self.port}",
                     fix=f"read {self.log_file}")
        except WaitTimedOut:
            self._kill(proc.pid)
            raise
        st = ServerState(self.listen, self.port, self.ttl, proc.pid, started[0])
        self.state_file.write_text(json.dumps(st.__dict__))
        return st

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server of this state directory (no-op when none runs). Records are kept."""
        st = self.state()
        if st is not None:
            self._kill(st.pid, timeout)
        self.state_file.unlink(missing_ok=True)

    def _kill(self, pid: int, timeout: float = 5.0) -> None:
        """Stop dnsmasq's process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self._proc is not None and self._proc.pid == pid:
            proc, self._proc = self._proc, None
            proc.stop(timeout)
            return
        # Started by another process (the CLI): only its PID and start time are known.
        started = _proc_start(pid)
        if started is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            wait_for(lambda: _proc_start(pid) != started, timeout=timeout, interval=0.05,
                     what=f"dnsmasq (pid {pid}) to exit")
        except WaitTimedOut:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            wait_for(lambda: _proc_start(pid) != started, timeout=5.0, interval=0.05,
                     what=f"dnsmasq (pid {pid}) to exit after SIGKILL")

    def _answers(self, name: str = "runbooks-dns-probe.invalid") -> bool:
        import dns.exception
        import dns.message
        import dns.query

        try:
            dns.query.udp(dns.message.make_query(name, "A"), self.listen, timeout=0.2, port=self.port)
            return True
        except (dns.exception.DNSException, OSError):
            return False

    # records
    def set_records(self, name: str, ips: list[str] | tuple[str, ...], ttl: int | None = None, *, timeout: float = 5.0) -> None:
        """Make ``name`` answer with ``ips`` (empty: remove the name), and wait until it does.

        A ``ttl`` different from the running server's restarts it with that
        TTL (it applies to every name). Raises :class:`BadParameters` for a
        bad name or address, :class:`WaitTimedOut` when the server does not
        serve the new records within ``timeout``. Rollback: call again with
        the previous IPs.
        """
        name = _check_name(name)
        addrs = _check_ips(ips)
        records = self.records()
        if addrs:
            records[name] = addrs
        else:
            records.pop(name, None)
        self._write_records(records)
        st = self.state()
        if st is None:
            if ttl is not None:
                self.ttl = ttl
            return
        self.listen, self.port, self.ttl = st.listen, st.port, st.ttl
        if ttl is not None and ttl != st.ttl:
            self.ttl = ttl
            self.start()
        else:
            os.kill(st.pid, signal.SIGHUP)
        self._wait_served(name, addrs, timeout)

    def _wait_served(self, name: str, ips: tuple[str, ...], timeout: float) -> None:
        def served() -> tuple[bool, str]:
            seen = self.query(name)
            return sorted(seen) == sorted(ips), f"{name} answers {list(seen)} instead of {list(ips)}"

        wait_for(served, timeout=timeout, interval=0.02, what=f"dnsmasq to serve {name} -> {list(ips)}",
                 fix=f"read {self.log_file}")

    def query(self, name: str, timeout: float = 1.0) -> tuple[str, ...]:
        """Ask the running server for ``name``'s A records (empty when it has none)."""
        import dns.message
        import dns.query
        import dns.rdatatype

        resp = dns.query.udp(dns.message.make_query(_check_name(name), "A"), self.listen, timeout=timeout, port=self.port)
        return tuple(r.address for rrset in resp.answer if rrset.rdtype == dns.rdatatype.A for r in rrset)

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- module-level API


def server(state_dir: str | Path | None = None) -> DnsServer:
    """A handle on the server of ``state_dir`` with its recorded address, port and TTL."""
    srv = DnsServer(state_dir)
    st = srv.state()
    if st is not None:
        srv.listen, srv.port, srv.ttl = st.listen, st.port, st.ttl
    return srv


def set_records(name: str, ips: list[str] | tuple[str, ...], ttl: int | None = None, *, state_dir: str | Path | None = None) -> None:
    """Set ``name``'s A records on the lab DNS server (see :meth:`DnsServer.set_records`)."""
    server(state_dir).set_records(name, ips, ttl)


def records(state_dir: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """Name -> IPs currently in the records file."""
    return server(state_dir).records()


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``dns start|stop|set|show`` to a command group (``runbooks lab dns ...``)."""
    p = subparsers.add_parser("dns", help="the lab's DNS server (dnsmasq)", description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dir", type=Path, default=None, help="default: LAB_DIR/dns")
    sub = p.add_subparsers(dest="dns_command", required=True, metavar="ACTION")

    s = sub.add_parser("start", help="start the server (idempotent)")
    s.add_argument("--listen", default=None, help="address to bind (default: the lab bridge's host IP)")
    s.add_argument("--port", type=int, default=53)
    s.add_argument("--ttl", type=int, default=DEFAULT_TTL)
    s.set_defaults(func=_cmd_start)

    s = sub.add_parser("stop", help="stop the server (records are kept)")
    s.set_defaults(func=_cmd_stop)

    s = sub.add_parser("set", help="set a name's A records (no IP: remove the name)")
    s.add_argument("name")
    s.add_argument("ips", nargs="*", metavar="IP")
    s.add_argument("--ttl", type=int, default=None, help="new TTL for every name (restarts the server)")
    s.set_defaults(func=_cmd_set)

    s = sub.add_parser("show", help="show the server and its records")
    s.set_defaults(func=_cmd_show)


def _cmd_start(args: argparse.Namespace) -> int:
    st = DnsServer(args.state_dir, listen=args.listen, port=args.port, ttl=args.ttl).start()
    print(f"dnsmasq running on {st.listen}:{st.port} (pid {st.pid}, ttl {st.ttl}s)")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    server(args.state_dir).stop()
    print("dnsmasq stopped")
    return 0


def _cmd_set(args: argparse.Namespace) -> int:
    set_records(args.name, args.ips, args.ttl, state_dir=args.state_dir)
    print(f"{_check_name(args.name)} -> {' '.join(args.ips) or '(removed)'}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    srv = server(args.state_dir)
    st = srv.state()
    if st is None:
        print(f"dnsmasq: not running (state in {srv.state_dir})")
    else:
        print(f"dnsmasq: running on {st.listen}:{st.port}, pid {st.pid}, ttl {st.ttl}s")
    for name, ips in sorted(srv.records().items()):
        print(f"{name}\t{' '.join(ips)}")
    return 0


def available() -> bool:
    """True when dnsmasq is installed on this host."""
    return shutil.which(DNSMASQ) is not None or Path(DNSMASQ).exists()
