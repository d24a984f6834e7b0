"""The lab's machines: Debian systems booted with systemd-nspawn on this host.

Each machine has its own disk (an overlay on the cached base image), hostname,
machine-id, IP on the lab bridge and sshd with root login by the lab's key.
Faults mimic a VPS provider's panel: hard power-off (the IP goes silent),
graceful shutdown, freeze, power-on, reimage, disk snapshots, and partitions.

Every method that changes something needs root and holds the lab's lock, so
two lab commands never interleave. Process IDs are recorded when a machine
starts; nothing is found by matching command lines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from runbooks_lib.errors import CommandFailed, HostUnreachable, LabError
from runbooks_lib.lab import image, net, sh
from runbooks_lib.lab.config import LabConfig

POWER_MODES = ("hard", "graceful", "freeze")
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR")


@dataclass(frozen=True)
class MachineStatus:
    """One row of ``runbooks lab status``."""

    name: str
    ip: str
    state: str  # running | frozen | off | absent
    uptime_s: float | None
    init_pid: int | None


@dataclass(frozen=True)
class HostKeyChange:
    """What ``reimage`` did to the lab's known_hosts."""

    name: str
    ip: str
    old_fingerprint: str | None
    new_fingerprint: str


class Lab:
    """The lab on this host. Cheap to construct; reads state from disk on each call."""

    def __init__(self, config: LabConfig | None = None, *, log: Callable[[str], None] | None = None) -> None:
        self.config = config or LabConfig()
        self.log = log or (lambda message: None)

    # ---------------------------------------------------------------- helpers
    def _require_root(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (it creates a bridge, mounts disks and boots machines)",
                           fix="run it as root, e.g. `sudo runbooks lab up`")

    def _require_tools(self) -> None:
        missing = [tool for tool in ("systemd-nspawn", "ip", "nft", "nsenter", "ssh", "ssh-keygen", "mount")
                   if shutil.which(tool) is None]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)}",
                           fix="apt-get install systemd-container iproute2 nftables openssh-client "
                               "(or run `make setup`)")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._require_root()
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.config.lock_path, "a+") as handle:
            deadline = time.monotonic() + 120
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError("another lab command has held the lab's lock for 2 minutes",
                                       fix=f"wait for it, or check who holds {self.config.lock_path}") from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _mdir(self, name: str) -> Path:
        self.config.ip_of(name)  # validates the name
        return self.config.machine_dir(name)

    def require_machine(self, name: str) -> None:
        """Raise LabError unless ``name`` is one of the lab's machines."""
        if not (self._mdir(name) / "upper").exists():
            existing = ", ".join(self.machine_names()) or "none"
            raise LabError(f"unknown machine {name!r} (lab machines: {existing})",
                           fix="use a name from `runbooks lab status`, or `runbooks lab up --nodes N`")

    def machine_names(self) -> list[str]:
        root = self.config.state_dir / "machines"
        if not root.exists():
            return []
        names = [p.name for p in root.iterdir() if (p / "upper").exists()]
        return sorted(names, key=lambda n: int(n.removeprefix("node")))

    @staticmethod
    def _read_int(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _init_pid(self, name: str) -> int | None:
        """The PID of the machine's systemd if it is alive (it is the leader of its PID namespace)."""
        pid = self._read_int(self._mdir(name) / "init.pid")
        if pid is None:
            return None
        start = (self._mdir(name) / "init.start").read_text().strip() if (self._mdir(name) / "init.start").exists() else ""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" or fields[19] != start:  # zombie, or the PID was reused
            return None
        return pid

    def _frozen(self, name: str) -> bool:
        return (self._mdir(name) / "frozen").exists()

    def _running_pids(self, exclude: str | None = None) -> list[int]:
        pids = []
        for other in self.machine_names():
            if other != exclude and not self._frozen(other):
                pid = self._init_pid(other)
                if pid:
                    pids.append(pid)
        return pids

    # ---------------------------------------------------------------- status
    def status(self) -> list[MachineStatus]:
        rows = []
        clock_ticks = os.sysconf("SC_CLK_TCK")
        uptime_host = float(Path("/proc/uptime").read_text().split()[0])
        for name in self.machine_names():
            pid = self._init_pid(name)
            state, uptime = "off", None
            if pid:
                state = "frozen" if self._frozen(name) else "running"
                start_ticks = int((self._mdir(name) / "init.start").read_text())
                uptime = max(0.0, uptime_host - start_ticks / clock_ticks)
            rows.append(MachineStatus(name, self.config.ip_of(name), state, uptime, pid))
        return rows

    def description(self) -> dict:
        """The machine-readable description later layers read (also written to lab.json)."""
        c = self.config
        return {
            "bridge": c.bridge,
            "subnet": c.subnet,
            "host_ip": c.host_ip,
            "ssh_user": c.ssh_user,
            "ssh_key": str(c.ssh_key),
            "known_hosts": str(c.known_hosts),
            "state_dir": str(c.state_dir),
            "machines": [{"name": s.name, "ip": s.ip, "state": s.state} for s in self.status()],
        }

    def _write_description(self) -> None:
        path = self.config.description_path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.description(), indent=2) + "\n")
        tmp.rename(path)

    # ---------------------------------------------------------------- up/down
    def up(self, nodes: int = 5) -> list[MachineStatus]:
        """Boot node1..nodeN (building the image and network first if needed).

        Idempotent: running machines are left alone. Rollback: ``down``.
        Raises LabError for a missing tool, a used address range or another lab.
        """
        names = self.config.node_names(nodes)
        self._require_root()
        self._require_tools()
        with self._locked():
            owner = net.bridge_owner(self.config)
            if owner is not None and owner != str(self.config.state_dir):
                raise LabError(f"another lab already runs on bridge {self.config.bridge} (state in {owner or 'unknown'})",
                               fix="stop it with `runbooks lab down` using its state directory, or choose "
                                   "RUNBOOKS_LAB_BRIDGE and RUNBOOKS_LAB_SUBNET for a second lab")
            if owner is None:
                net.check_range_free(self.config)
            base = image.ensure_image(self.config, log=self.log)
            self._ensure_ssh_key()
            created_network = owner is None
            try:
                net.setup(self.config)
                started = []
                for name in names:
                    if self._init_pid(name):
                        continue
                    self._provision(name, base)
                    self._boot(name, base)
                    started.append(name)
                self._wait_ssh(started)
            except BaseException:
                if created_network:
                    self._stop_all()
                    net.teardown(self.config)
                raise
            self._write_description()
        return self.status()

    def down(self, *, purge: bool = False) -> None:
        """Stop every machine and remove the lab's mounts, links and rules (idempotent).

        ``purge`` also deletes the machines' disks and snapshots (the base image stays cached).
        """
        self._require_root()
        with self._locked():
            self._stop_all()
            net.teardown(self.config)
            if purge:
                shutil.rmtree(self.config.state_dir / "machines", ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    self.config.known_hosts.unlink()
            if self.config.description_path.exists():
                self._write_description()

    def _stop_all(self) -> None:
        for name in self.machine_names():
            self._kill(name)
        for mount in self._lab_mounts():
            sh.run(["umount", "-l", mount], timeout=30, check=False)

    def _lab_mounts(self) -> list[str]:
        root = str(self.config.state_dir / "machines") + "/"
        mounts = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(root):
                mounts.append(target)
        return sorted(mounts, key=len, reverse=True)

    # ---------------------------------------------------------------- machine life cycle
    def _ensure_ssh_key(self) -> None:
        c = self.config
        c.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not c.ssh_key.exists():
            sh.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runbooks-lab", "-f", c.ssh_key], timeout=30)
        c.known_hosts.touch(mode=0o600, exist_ok=True)

    def _provision(self, name: str, base: Path) -> None:
        """Give a machine a disk with its identity if it has none yet."""
        mdir = self._mdir(name)
        upper = mdir / "upper"
        if upper.exists():
            return
        fresh = mdir / "upper.new"
        shutil.rmtree(fresh, ignore_errors=True)
        etc = fresh / "etc"
        (etc / "ssh").mkdir(parents=True)
        (etc / "systemd/network").mkdir(parents=True)
        (fresh / "root/.ssh").mkdir(parents=True, mode=0o700)
        ip = self.config.ip_of(name)
        prefix = self.config.network.prefixlen
        (etc / "hostname").write_text(f"{name}\n")
        (etc / "machine-id").write_text(os.urandom(16).hex() + "\n")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{ip}\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        # Sorts before the shipped 80-container-host0.network (DHCP), so the static address wins.
        (etc / "systemd/network/10-host0.network").write_text(
            f"[Match]\nName=host0\n\n[Network]\nAddress={ip}/{prefix}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
        sh.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
                "-f", etc / "ssh/ssh_host_ed25519_key"], timeout=30)
        pub = self.config.ssh_key.with_suffix(".pub").read_text()
        auth = fresh / "root/.ssh/authorized_keys"
        auth.write_text(pub)
        auth.chmod(0o600)
        # root's systemd user manager runs from boot (loginctl enable-linger root). Without it
        # every SSH login starts user@0.service and the last logout stops it; a login that
        # arrives while it is stopping waits for the stop job, which froze logins for tens of
        # seconds right after another machine was powered off and on.
        (fresh / "var/lib/systemd/linger").mkdir(parents=True)
        (fresh / "var/lib/systemd/linger/root").write_text("")
        fresh.rename(upper)
        self._pin_host_key(name)

    def _host_pubkey(self, name: str) -> str:
        return (self._mdir(name) / "upper/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]

    def _pin_host_key(self, name: str) -> None:
        """Replace the known_hosts lines of this machine with its current host key."""
        ip = self.config.ip_of(name)
        kh = self.config.known_hosts
        lines = [ln for ln in kh.read_text().splitlines() if ln and ln.split()[0] not in (ip, name, f"{ip},{name}")]
        lines.append(f"{ip},{name} ssh-ed25519 {self._host_pubkey(name)}")
        kh.write_text("\n".join(lines) + "\n")

    def fingerprint(self, name: str) -> str:
        """SHA256 fingerprint of the machine's pinned host key."""
        pub = self._mdir(name) / "upper/etc/ssh/ssh_host_ed25519_key.pub"
        out = sh.run(["ssh-keygen", "-l", "-f", pub], timeout=30).stdout
        return out.split()[1]

    def _mount(self, name: str, base: Path) -> Path:
        mdir = self._mdir(name)
        root, work = mdir / "root", mdir / "work"
        root.mkdir(exist_ok=True)
        if os.path.ismount(root):
            return root
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        sh.run(["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={base},upperdir={mdir / 'upper'},workdir={work}", root], timeout=30)
        return root

    def _umount(self, name: str) -> None:
        root = self._mdir(name) / "root"
        for mount in self._lab_mounts():
            if mount == str(root) or mount.startswith(str(root) + "/"):
                sh.run(["umount", "-l", mount], timeout=30, check=False)

    def _boot(self, name: str, base: Path) -> None:
        mdir = self._mdir(name)
        root = self._mount(name, base)
        ip = self.config.ip_of(name)
        net.unsilence(self.config, ip)
        (mdir / "frozen").unlink(missing_ok=True)
        console = open(mdir / "console.log", "ab")
        argv = ["systemd-nspawn", "--boot", "--keep-unit", "--register=no", "--quiet",
                "--directory", str(root), "--machine", self.config.nspawn_name(name), f"--hostname={name}",
                f"--network-bridge={self.config.bridge}",
                "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=read-only"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                                start_new_session=True, close_fds=True)
        console.close()
        (mdir / "nspawn.pid").write_text(f"{proc.pid}\n")
        init = self._wait_child(proc, name)
        (mdir / "init.pid").write_text(f"{init}\n")
        stat = Path(f"/proc/{init}/stat").read_text().rsplit(")", 1)[1].split()
        (mdir / "init.start").write_text(stat[19])
        net.forget_neighbour(ip, self._running_pids(exclude=name))
        self.log(f"{name}: booting at {ip}")

    def _wait_child(self, proc: subprocess.Popen, name: str) -> int:
        """The machine's init: the child of nspawn that lives in a new PID namespace.

        nspawn first forks a helper in the host's PID namespace, which exits once
        it has started init; that helper must not be mistaken for the machine.
        """
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self._mdir(name) / "console.log").read_text(errors="replace")[-2000:]
                raise LabError(f"{name}: systemd-nspawn exited with {proc.returncode}", stderr=tail,
                               fix="see the console log in the machine's state directory")
            init = _namespaced_child(proc.pid)
            if init:
                return init
            time.sleep(0.05)
        _kill_tree(proc.pid)
        raise LabError(f"{name}: systemd-nspawn started no init within 60 s", fix="retry `runbooks lab up`")

    def _wait_ssh(self, names: Sequence[str]) -> None:
        """Wait until every machine answers over SSH and has finished booting.

        A machine whose sshd answers may still be starting units (and refusing
        non-root logins through pam_nologin); connections made then can be cut,
        so "up" means systemd reports the boot as finished.
        """
        pending = set(names)
        deadline = time.monotonic() + self.config.boot_timeout
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                if self._port_open(self.config.ip_of(name), 22, 0.5):
                    try:
                        left = max(5.0, deadline - time.monotonic())
                        state = self.ssh(name, ["systemctl", "is-system-running", "--wait"], timeout=left,
                                         check=False).stdout.strip()
                        if state in ("running", "degraded"):
                            pending.discard(name)
                            self.log(f"{name}: booted ({state}), SSH ready")
                    except (CommandFailed, HostUnreachable):
                        pass
            if pending:
                time.sleep(0.3)
        if pending:
            raise LabError(f"machines not reachable over SSH within {self.config.boot_timeout:.0f} s: "
                           f"{', '.join(sorted(pending))}",
                           fix="look at console.log in their state directories, then `runbooks lab down`")

    @staticmethod
    def _port_open(ip: str, port: int, timeout: float) -> bool:
        try:
            with socket.create_connection((ip, port), timeout=timeout):
                return True
        except OSError:
            return False

    def _kill(self, name: str) -> None:
        """Stop the machine at once: SIGKILL of its init takes its whole PID namespace down."""
        mdir = self._mdir(name)
        init = self._init_pid(name)
        nspawn = self._read_int(mdir / "nspawn.pid")
        if init is None and nspawn and _is_nspawn(nspawn):
            init = _namespaced_child(nspawn)  # booted, but its init was never recorded
        if init:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGCONT)
                os.kill(init, signal.SIGKILL)
        if nspawn:
            self._wait_exit(nspawn, 10)
        (mdir / "frozen").unlink(missing_ok=True)
        (mdir / "init.pid").unlink(missing_ok=True)
        self._umount(name)
        if net.bridge_exists(self.config):
            net.unblock_port(self.config, self.config.veth_of(name))

    @staticmethod
    def _wait_exit(pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
            except ChildProcessError:
                if not Path(f"/proc/{pid}").exists():
                    return
                stat = Path(f"/proc/{pid}/stat").read_text(errors="replace") if Path(f"/proc/{pid}/stat").exists() else ""
                if not stat or stat.rsplit(")", 1)[1].split()[0] == "Z":
                    return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # ---------------------------------------------------------------- faults
    def poweroff(self, name: str, mode: str = "hard") -> None:
        """Power a machine off like a VPS panel does.

        hard: stops at once; its IP goes silent (SYNs dropped, clients hang).
        graceful: ``systemctl poweroff`` inside, then silent. freeze: every
        process stopped and every frame dropped, memory kept (resume with ``poweron``).
        Rollback: ``poweron``.
        """
        if mode not in POWER_MODES:
            raise LabError(f"unknown power-off mode {mode!r}", fix=f"use one of {', '.join(POWER_MODES)}")
        self.require_machine(name)
        with self._locked():
            ip = self.config.ip_of(name)
            init = self._init_pid(name)
            if init is None:
                self.log(f"{name}: already off")
                return
            if mode == "freeze":
                if not self._frozen(name):
                    (self._mdir(name) / "frozen").write_text("")
                    net.block_port(self.config, self.config.veth_of(name))
                    self._signal_namespace(init, signal.SIGSTOP)
                    net.silence(self.config, ip)
                    net.forget_neighbour(ip, self._running_pids(exclude=name))
                return
            if mode == "graceful" and not self._frozen(name):
                sh.run(["nsenter", "-t", str(init), "-m", "-u", "-i", "-n", "-p", "systemctl", "poweroff"],
                       timeout=30, check=False)
                nspawn = self._read_int(self._mdir(name) / "nspawn.pid")
                if nspawn:
                    self._wait_exit(nspawn, 60)
            self._kill(name)
            net.silence(self.config, ip)
            net.forget_neighbour(ip, self._running_pids(exclude=name))
            self._write_description()

    def _signal_namespace(self, init: int, sig: signal.Signals) -> None:
        """Send ``sig`` to every process in the PID namespace led by ``init``."""
        target = os.readlink(f"/proc/{init}/ns/pid")
        for _ in range(3):  # repeat: processes may fork while we go
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns/pid") == target:
                        os.kill(int(entry.name), sig)

    def poweron(self, name: str) -> None:
        """Boot a powered-off machine with its disk as it was, or resume a frozen one."""
        self.require_machine(name)
        with self._locked():
            ip = self.config.ip_of(name)
            init = self._init_pid(name)
            if init and self._frozen(name):
                net.unsilence(self.config, ip)
                net.unblock_port(self.config, self.config.veth_of(name))
                self._signal_namespace(init, signal.SIGCONT)
                (self._mdir(name) / "frozen").unlink(missing_ok=True)
                net.forget_neighbour(ip, self._running_pids(exclude=name))
                return
            if init:
                self.log(f"{name}: already running")
                return
            self._boot(name, image.ensure_image(self.config, log=self.log))
            self._wait_ssh([name])
            self._write_description()

    def reimage(self, name: str) -> HostKeyChange:
        """Give a machine a fresh disk with the same IP and a NEW host key (like reinstalling a VPS).

        The lab's known_hosts is updated and the change returned. Irreversible
        unless a snapshot exists (``restore``).
        """
        self.require_machine(name)
        with self._locked():
            old = self.fingerprint(name)
            was_running = self._init_pid(name) is not None
            self._kill(name)
            mdir = self._mdir(name)
            shutil.rmtree(mdir / "upper")
            base = image.ensure_image(self.config, log=self.log)
            self._provision(name, base)
            change = HostKeyChange(name, self.config.ip_of(name), old, self.fingerprint(name))
            if was_running:
                self._boot(name, base)
                self._wait_ssh([name])
            else:
                net.silence(self.config, self.config.ip_of(name))
            self._write_description()
            self.log(f"{name}: reimaged; host key changed {old} -> {change.new_fingerprint}; known_hosts updated")
            return change

    def snapshot(self, name: str, snap: str) -> Path:
        """Save the machine's disk as snapshot ``snap`` (a running machine is paused while copying)."""
        self.require_machine(name)
        self._check_snap_name(snap)
        with self._locked():
            mdir = self._mdir(name)
            target = mdir / "snapshots" / snap
            tmp = mdir / "snapshots" / f".{snap}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(exist_ok=True)
            init = self._init_pid(name)
            paused = bool(init) and not self._frozen(name)
            if paused:
                self._signal_namespace(init, signal.SIGSTOP)
            try:
                os.sync()
                sh.run(["cp", "-a", "--reflink=auto", mdir / "upper", tmp], timeout=600)
            finally:
                if paused:
                    self._signal_namespace(init, signal.SIGCONT)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            return target

    def restore(self, name: str, snap: str) -> None:
        """Put snapshot ``snap`` back as the machine's disk; a running machine is restarted."""
        self.require_machine(name)
        self._check_snap_name(snap)
        with self._locked():
            mdir = self._mdir(name)
            source = mdir / "snapshots" / snap
            if not source.exists():
                have = ", ".join(sorted(p.name for p in (mdir / "snapshots").glob("[!.]*"))) or "none"
                raise LabError(f"{name} has no snapshot {snap!r} (snapshots: {have})",
                               fix=f"take one with `runbooks lab snapshot {name} {snap}`")
            was_running = self._init_pid(name) is not None
            self._kill(name)
            tmp = mdir / "upper.restore"
            shutil.rmtree(tmp, ignore_errors=True)
            sh.run(["cp", "-a", "--reflink=auto", source, tmp], timeout=600)
            shutil.rmtree(mdir / "upper")
            tmp.rename(mdir / "upper")
            self._pin_host_key(name)
            if was_running:
                self._boot(name, image.ensure_image(self.config, log=self.log))
                self._wait_ssh([name])
            self._write_description()

    def snapshot_all(self, snap: str) -> None:
        """Snapshot every machine at one instant: all are paused, copied, then resumed.

        Pausing them together keeps their disks consistent with each other, which
        etcd members need (a member restored ahead of its peers breaks raft).
        """
        self._check_snap_name(snap)
        names = self.machine_names()
        with self._locked():
            paused = [pid for pid in (self._init_pid(n) for n in names if not self._frozen(n)) if pid]
            for pid in paused:
                self._signal_namespace(pid, signal.SIGSTOP)
            try:
                os.sync()
                for name in names:
                    mdir = self._mdir(name)
                    tmp = mdir / "snapshots" / f".{snap}.tmp"
                    shutil.rmtree(tmp, ignore_errors=True)
                    tmp.parent.mkdir(exist_ok=True)
                    sh.run(["cp", "-a", "--reflink=auto", mdir / "upper", tmp], timeout=600)
            finally:
                for pid in paused:
                    self._signal_namespace(pid, signal.SIGCONT)
            for name in names:
                mdir = self._mdir(name)
                shutil.rmtree(mdir / "snapshots" / snap, ignore_errors=True)
                (mdir / "snapshots" / f".{snap}.tmp").rename(mdir / "snapshots" / snap)

    def restore_all(self, snap: str) -> None:
        """Put every machine back to lab-wide snapshot ``snap`` and boot them all."""
        self._check_snap_name(snap)
        names = self.machine_names()
        missing = [n for n in names if not (self._mdir(n) / "snapshots" / snap).exists()]
        if missing:
            raise LabError(f"no snapshot {snap!r} for {', '.join(missing)}",
                           fix=f"take one with `runbooks lab snapshot --all {snap}`")
        with self._locked():
            for name in names:
                self._kill(name)
            for name in names:
                mdir = self._mdir(name)
                tmp = mdir / "upper.restore"
                shutil.rmtree(tmp, ignore_errors=True)
                sh.run(["cp", "-a", "--reflink=auto", mdir / "snapshots" / snap, tmp], timeout=600)
                shutil.rmtree(mdir / "upper")
                tmp.rename(mdir / "upper")
                self._pin_host_key(name)
            base = image.ensure_image(self.config, log=self.log)
            for name in names:
                self._boot(name, base)
            self._wait_ssh(names)
            self._write_description()

    def snapshots(self, name: str) -> list[str]:
        self.require_machine(name)
        return sorted(p.name for p in (self._mdir(name) / "snapshots").glob("[!.]*"))

    @staticmethod
    def _check_snap_name(snap: str) -> None:
        if not snap or not all(ch.isalnum() or ch in "-_." for ch in snap) or snap.startswith("."):
            raise LabError(f"invalid snapshot name {snap!r}", fix="use letters, digits, '-', '_' and '.'")

    def partition(self, a: str, b: str) -> None:
        """Drop traffic between two machines (both directions). Rollback: ``heal``."""
        self.require_machine(a)
        self.require_machine(b)
        if a == b:
            raise LabError("a partition needs two different machines")
        with self._locked():
            net.add_partition(self.config, self.config.ip_of(a), self.config.ip_of(b))

    def heal(self) -> None:
        """Remove every partition."""
        with self._locked():
            if net.bridge_exists(self.config):
                net.heal(self.config)

    # ---------------------------------------------------------------- access
    def ssh_argv(self, name: str, command: Sequence[str] | str | None = None, *, connect_timeout: float = 5,
                 tty: bool = False) -> list[str]:
        """The ssh command line for a machine: lab key, pinned host key, never unchecked."""
        c = self.config
        argv = ["ssh", "-i", str(c.ssh_key), "-o", f"UserKnownHostsFile={c.known_hosts}", *SSH_OPTIONS,
                "-o", f"ConnectTimeout={max(1, int(connect_timeout))}", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=2"]
        argv += ["-t"] if tty else ["-T"]
        argv.append(f"{c.ssh_user}@{c.ip_of(name)}")
        if command is not None:
            argv += ["--", command if isinstance(command, str) else shlex.join(str(a) for a in command)]
        return argv

    def ssh(self, name: str, command: Sequence[str] | str, *, timeout: float = 30,
            check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command on a machine over SSH. Raises HostUnreachable or CommandFailed."""
        argv = self.ssh_argv(name, command, connect_timeout=min(timeout, 5))
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise HostUnreachable(f"{name} did not answer within {timeout:.0f} s", host=name,
                                  command=command if isinstance(command, str) else " ".join(command),
                                  fix="check `runbooks lab status`; power it on with `runbooks lab poweron`") from None
        if proc.returncode == 255 and ("timed out" in proc.stderr or "No route" in proc.stderr
                                       or "Connection refused" in proc.stderr):
            raise HostUnreachable(f"{name} is unreachable over SSH", host=name, stderr=proc.stderr,
                                  fix="check `runbooks lab status`; power it on with `runbooks lab poweron`")
        if check and proc.returncode != 0:
            raise CommandFailed(f"command failed on {name}", host=name, exit_code=proc.returncode,
                                command=command if isinstance(command, str) else " ".join(command),
                                stderr=proc.stderr or proc.stdout)
        return proc


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(c) for c in task.read_text().split()]
    return children


def _namespaced_child(pid: int) -> int | None:
    """A child of ``pid`` in another PID namespace (the machine's init), if there is one."""
    try:
        own = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
    for child in _children(pid):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{child}/ns/pid") != own:
                return child
    return None


def _is_nspawn(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn"
    except OSError:
        return False


def _kill_tree(pid: int) -> None:
    for child in _children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def status_table(rows: Sequence[MachineStatus]) -> str:
    """Format status rows as the table ``runbooks lab status`` prints."""
    lines = [f"{'MACHINE':<8} {'IP':<15} {'STATE':<8} UPTIME"]
    for row in rows:
        up = "-" if row.uptime_s is None else _duration(row.uptime_s)
        lines.append(f"{row.name:<8} {row.ip:<15} {row.state:<8} {up}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def as_dict(row: MachineStatus) -> dict:
    return asdict(row)
