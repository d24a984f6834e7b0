"""HAProxy on the operator's machine in front of the nodes, with active health checks.

The frontend binds a given address and port; the backend has every node's
``IP:80`` with ``check inter X fall N rise M``, a short ``timeout connect``,
``retries`` and ``option redispatch 1`` (every retry may go to another
server), so a dead node costs one connect timeout per request that hits it
until the checks mark it DOWN. :class:`StatsWatcher` polls ``show stat`` on
the stats socket and records each server's UP/DOWN change as an event.

HAProxy runs as a foreground child of this process (Debian's
``/usr/sbin/haproxy``), its configuration, stats socket and log in a work
directory; the host's haproxy service is not touched.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runbooks_lib import local
from runbooks_lib.errors import BadParameters, CommandFailed, PreconditionFailed, WaitTimedOut
from runbooks_lib.probe import EventLog, Target
from runbooks_lib.waits import wait_for

HAPROXY = "/usr/sbin/haproxy"


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass
class HaproxyFrontDoor:
    """HAProxy listening on ``bind``:``port``, spreading requests over ``servers`` (name -> IP or IP:PORT).

    Timings are seconds. ``setup`` writes the configuration into
    ``workdir`` (a new temporary directory when None), validates it with
    ``haproxy -c``, starts HAProxy and waits until the frontend accepts
    connections. ``teardown`` stops it and removes a temporary workdir.
    Both are idempotent.
    """

    bind: str
    port: int
    servers: dict[str, str]
    server_port: int = 80
    check_inter: float = 0.5
    fall: int = 2
    rise: int = 2
    timeout_connect: float = 0.5
    timeout_server: float = 10.0
    retries: int = 2
    # Layer-7 retries (HAProxy >= 2.0), e.g. "conn-failure empty-response response-timeout": a request in
    # flight on a node that dies (reset, no answer within timeout_server) is resent to another server.
    # Only for idempotent requests such as the probe's GETs. Empty: connection failures only.
    retry_on: str = ""
    check_path: str = "/"
    host_header: str | None = None
    workdir: Path | None = None
    label: str = "haproxy"
    _proc: local.Background | None = field(default=None, init=False, repr=False)
    _own_workdir: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.servers:
            raise BadParameters("HAProxy needs at least one backend server")
        if self.fall < 1 or self.rise < 1 or self.check_inter <= 0 or self.timeout_connect <= 0:
            raise BadParameters("fall, rise, check_inter and timeout_connect must be positive")

    @property
    def stats_socket(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "stats.sock"

    def config(self) -> str:
        """haproxy.cfg (pure function of the parameters)."""
        host = self.host_header or "localhost"
        lines = [
            "global",
            f"    stats socket {self.workdir / 'stats.sock' if self.workdir else 'stats.sock'} mode 600 level admin",
            "    maxconn 4096",
            "",
            "defaults",
            "    mode http",
            f"    timeout connect {_ms(self.timeout_connect)}",
            "    timeout client 60s",
            f"    timeout server {_ms(self.timeout_server)}",
            f"    timeout check {_ms(max(self.timeout_connect, self.check_inter))}",
            f"    retries {self.retries}",
            *([f"    retry-on {self.retry_on}"] if self.retry_on else []),
            "    option redispatch 1",
            "",
            "frontend runbooks_front",
            f"    bind {self.bind}:{self.port}",
            "    default_backend runbooks_nodes",
            "",
            "backend runbooks_nodes",
            "    balance roundrobin",
            "    option httpchk",
            f"    http-check send meth GET uri {self.check_path} ver HTTP/1.1 hdr Host {host}",
            "    http-check expect status 200-399",
        ]
        for name, addr in self.servers.items():
            # "IP" uses server_port; "IP:PORT" names its own port.
            hostport = addr if ":" in addr else f"{addr}:{self.server_port}"
            lines.append(f"    server {name} {hostport} check inter {_ms(self.check_inter)} "
                         f"fall {self.fall} rise {self.rise}")
        return "\n".join(lines) + "\n"

    def setup(self, timeout: float = 10.0) -> None:
        """Start HAProxy (no-op when already running).

        Raises PreconditionFailed when haproxy is not installed,
        CommandFailed when the configuration is rejected or it exits while
        starting (message with its output), WaitTimedOut when the frontend
        does not accept connections within ``timeout`` (it is stopped then).
        Rollback: :meth:`teardown`.
        """
        if self._proc is not None and self._proc.running:
            return
        if not Path(HAPROXY).exists():
            raise PreconditionFailed(f"{HAPROXY} not found", fix="apt-get install haproxy")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="runbooks-haproxy-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(self.config())
        check = local.run([HAPROXY, "-c", "-f", str(cfg)], timeout=30, check=False)
        if check.failed:
            raise CommandFailed("haproxy rejected its configuration", command=[HAPROXY, "-c", "-f", str(cfg)],
                                exit_code=check.exited, stderr=check.stderr + check.stdout,
                                fix="read haproxy's complaint above; check the servers and ports passed")
        proc = local.start([HAPROXY, "-db", "-f", str(cfg)], log_path=self.workdir / "haproxy.log")
        self._proc = proc

        def accepting() -> tuple[bool, str]:
            code = proc.poll()
            if code is not None:
                self._proc = None
                raise CommandFailed(f"haproxy exited with code {code} while starting", command=list(proc.command),
                                    exit_code=code, stderr=proc.log_tail(),
                                    fix=f"is {self.bind}:{self.port} free and on this host?")
            return self.stats_socket.exists() and _accepts(self.bind, self.port), \
                f"haproxy not accepting on {self.bind}:{self.port}"

        try:
            wait_for(accepting, timeout=timeout, interval=0.02, what=f"haproxy to accept on {self.bind}:{self.port}",
                     fix=f"read {proc.log_path}")
        except WaitTimedOut:
            self.teardown()
            raise

    def teardown(self, timeout: float = 10.0) -> None:
        """Stop HAProxy (its process group, within ``timeout``) and remove its temporary work directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop(timeout)
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._own_workdir = False

    @property
    def running(self) -> bool:
        """True while the HAProxy started by :meth:`setup` runs."""
        return self._proc is not None and self._proc.running

    @property
    def pid(self) -> int | None:
        """The pid of the HAProxy started by :meth:`setup` (its process group), None when not started."""
        return self._proc.pid if self._proc is not None else None

    def stat(self) -> list[dict[str, str]]:
        """``show stat`` rows of the backend's servers (pxname, svname, status, check_status...)."""
        rows = show_stat(self.stats_socket)
        return [r for r in rows if r.get("pxname") == "runbooks_nodes" and r.get("svname") not in ("BACKEND", "FRONTEND")]

    def server_status(self) -> dict[str, str]:
        """Server name -> status (UP, DOWN, ``UP 1/2``, ...)."""
        return {r["svname"]: r["status"] for r in self.stat()}

    def target(self) -> Target:
        return Target(self.bind, self.port, "/", self.host_header)

    def watcher(self, events: EventLog, *, interval: float = 0.1) -> StatsWatcher:
        return StatsWatcher(self, events, interval=interval)

    def __enter__(self) -> HaproxyFrontDoor:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def show_stat(path: Path, timeout: float = 2.0) -> list[dict[str, str]]:
    """Query an HAProxy stats socket with ``show stat`` and parse its CSV."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(path))
        s.sendall(b"show stat\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    text = b"".join(chunks).decode("utf-8", "replace")
    if text.startswith("# "):
        text = text[2:]
    return list(csv.DictReader(io.StringIO(text)))


class StatsWatcher:
    """Polls the stats socket and records ``server DOWN`` / ``server UP`` events.

    Only the first word of the status counts (``UP 1/2`` while going down is
    still UP): an event means HAProxy changed where it sends traffic.
    Side effect: one thread until :meth:`stop`.
    """

    def __init__(self, door: HaproxyFrontDoor, events: EventLog, *, interval: float = 0.1) -> None:
        self.door = door
        self.events = events
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, str] = {}

    def poll(self) -> None:
        try:
            status = self.door.server_status()
        except OSError:
            return
        for name, st in status.items():
            word = st.split()[0] if st else st
            before = self._last.get(name)
            if before is not None and word != before:
                self.events.add(f"server {word}", f"{name} {before} -> {word}", source="haproxy")
            self._last[name] = word

    def start(self) -> StatsWatcher:
        self.poll()
        self._thread = threading.Thread(target=self._loop, name="haproxy-watch", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> StatsWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
