"""The lab's machines: Debian systems booted with systemd-nspawn on this host.

Each machine has its own disk (an overlay on the cached base image), hostname,
machine-id, IP on the lab bridge and sshd with root login by the lab's key.
Faults mimic a VPS provider's panel: hard power-off (the IP goes silent),
graceful shutdown, freeze, power-on, reimage, disk snapshots, and partitions.

Every method that changes something needs root and holds the lab's lock, so
two lab commands never interleave. The machines' processes are handled in
:mod:`runbooks_lib.lab.nspawn`, their disks' identity in
:mod:`runbooks_lib.lab.disks`; :class:`Lab` is the facade over both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from runbooks_lib import local
from runbooks_lib.errors import CommandFailed, HostUnreachable, LabError
from runbooks_lib.lab import access, disks, image, net, nspawn, sh
from runbooks_lib.lab.access import SSH_OPTIONS  # noqa: F401 - kept importable
from runbooks_lib.lab.config import LabConfig
from runbooks_lib.waits import wait_for

POWER_MODES = ("hard", "graceful", "freeze")


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
            def locked() -> tuple[bool, str]:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True, ""
                except BlockingIOError:
                    return False, f"another lab command holds {self.config.lock_path}"

            wait_for(locked, timeout=120, interval=0.2, what="the lab's lock",
                     fix=f"wait for the other lab command, or check who holds {self.config.lock_path}")
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

    def _init_pid(self, name: str) -> int | None:
        """The PID of the machine's systemd if it is alive."""
        return nspawn.init_pid(self._mdir(name))

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
            self._link_kubespray()
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
        for mount in disks.lab_mounts(self.config):
            sh.run(["umount", "-l", mount], timeout=30, check=False)

    # ---------------------------------------------------------------- machine life cycle
    def _link_kubespray(self) -> None:
        """STATE_DIR/kubespray -> this checkout's Kubespray stand-in: the lab's "Kubespray checkout".

        params/lab.yaml names it as an operator names theirs (a directory of
        their own with its venv), so run records show a lab path rather than
        the repository's. Side effect: (re)creates the symbolic link.
        """
        link = self.config.state_dir / "kubespray"
        target = Path(__file__).resolve().parent / "kubespray"
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)

    def _ensure_ssh_key(self) -> None:
        c = self.config
        c.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not c.ssh_key.exists():
            sh.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runbooks-lab", "-f", c.ssh_key], timeout=30)
        c.known_hosts.touch(mode=0o600, exist_ok=True)

    def _provision(self, name: str, base: Path) -> None:
        """Give a machine a disk with its identity if it has none yet."""
        disks.provision(self.config, name, self._mdir(name))

    def _pin_host_key(self, name: str) -> None:
        disks.pin_host_key(self.config, name, self._mdir(name))

    def fingerprint(self, name: str) -> str:
        """SHA256 fingerprint of the machine's pinned host key."""
        return disks.fingerprint(self._mdir(name))

    def _umount(self, name: str) -> None:
        disks.umount(self.config, self._mdir(name))

    def _boot(self, name: str, base: Path) -> None:
        mdir = self._mdir(name)
        root = disks.mount(mdir, base)
        ip = self.config.ip_of(name)
        net.unsilence(self.config, ip)
        (mdir / "frozen").unlink(missing_ok=True)
        argv = ["systemd-nspawn", "--boot", "--keep-unit", "--register=no", "--quiet",
                "--directory", str(root), "--machine", self.config.nspawn_name(name), f"--hostname={name}",
                f"--network-bridge={self.config.bridge}",
                "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=read-only"]
        nspawn.boot(mdir, argv, name)
        net.forget_neighbour(ip, self._running_pids(exclude=name))
        self.log(f"{name}: booting at {ip}")

    def _wait_ssh(self, names: Sequence[str]) -> None:
        """Wait until every machine answers over SSH and has finished booting.

        A machine whose sshd answers may still be starting units (and refusing
        non-root logins through pam_nologin); connections made then can be cut,
        so "up" means systemd reports the boot as finished. Raises WaitTimedOut
        naming the machines still pending.
        """
        pending = set(names)
        deadline = time.monotonic() + self.config.boot_timeout

        def booted() -> tuple[bool, list[str]]:
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
            return not pending, sorted(pending)

        wait_for(booted, timeout=self.config.boot_timeout, interval=0.3, what="lab machines to boot and answer SSH",
                 fix="look at console.log in their state directories, then `runbooks lab down`")

    @staticmethod
    def _port_open(ip: str, port: int, timeout: float) -> bool:
        try:
            with socket.create_connection((ip, port), timeout=timeout):
                return True
        except OSError:
            return False

    def _kill(self, name: str) -> None:
        """Stop the machine at once and unmount its disk."""
        nspawn.kill(self._mdir(name))
        self._umount(name)
        if net.bridge_exists(self.config):
            net.unblock_port(self.config, self.config.veth_of(name))

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
                    nspawn.signal_namespace(init, signal.SIGSTOP)
                    net.silence(self.config, ip)
                    net.forget_neighbour(ip, self._running_pids(exclude=name))
                return
            if mode == "graceful" and not self._frozen(name):
                sh.run(["nsenter", "-t", str(init), "-m", "-u", "-i", "-n", "-p", "systemctl", "poweroff"],
                       timeout=30, check=False)
                nspawn_pid = nspawn.read_int(self._mdir(name) / "nspawn.pid")
                if nspawn_pid:
                    nspawn.wait_exit(nspawn_pid, 60)
            if mode == "hard":
                # Silent first, as a power cut: killing the machine's processes would otherwise reset its
                # open connections and refuse new ones until the kill completes (~0.2 s).
                net.block_port(self.config, self.config.veth_of(name))
            self._kill(name)
            net.silence(self.config, ip)
            net.forget_neighbour(ip, self._running_pids(exclude=name))
            self._write_description()

    def poweron(self, name: str) -> None:
        """Boot a powered-off machine with its disk as it was, or resume a frozen one."""
        self.require_machine(name)
        with self._locked():
            ip = self.config.ip_of(name)
            init = self._init_pid(name)
            if init and self._frozen(name):
                net.unsilence(self.config, ip)
                net.unblock_port(self.config, self.config.veth_of(name))
                nspawn.signal_namespace(init, signal.SIGCONT)
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
        disks.check_snap_name(snap)
        with self._locked():
            mdir = self._mdir(name)
            init = self._init_pid(name)
            paused = bool(init) and not self._frozen(name)
            if paused:
                nspawn.signal_namespace(init, signal.SIGSTOP)
            try:
                os.sync()
                disks.copy_to_snapshot(mdir, snap)
            finally:
                if paused:
                    nspawn.signal_namespace(init, signal.SIGCONT)
            return disks.commit_snapshot(mdir, snap)

    def restore(self, name: str, snap: str) -> None:
        """Put snapshot ``snap`` back as the machine's disk; a running machine is restarted."""
        self.require_machine(name)
        disks.check_snap_name(snap)
        with self._locked():
            mdir = self._mdir(name)
            if not (mdir / "snapshots" / snap).exists():
                have = ", ".join(disks.snapshots(mdir)) or "none"
                raise LabError(f"{name} has no snapshot {snap!r} (snapshots: {have})",
                               fix=f"take one with `runbooks lab snapshot {name} {snap}`")
            was_running = self._init_pid(name) is not None
            self._kill(name)
            disks.restore_snapshot(self.config, name, mdir, snap)
            if was_running:
                self._boot(name, image.ensure_image(self.config, log=self.log))
                self._wait_ssh([name])
            self._write_description()

    def snapshot_all(self, snap: str) -> None:
        """Snapshot every machine at one instant: all are paused, copied, then resumed.

        Pausing them together keeps their disks consistent with each other, which
        etcd members need (a member restored ahead of its peers breaks raft).
        """
        disks.check_snap_name(snap)
        names = self.machine_names()
        with self._locked():
            paused = [pid for pid in (self._init_pid(n) for n in names if not self._frozen(n)) if pid]
            for pid in paused:
                nspawn.signal_namespace(pid, signal.SIGSTOP)
            try:
                os.sync()
                for name in names:
                    disks.copy_to_snapshot(self._mdir(name), snap)
            finally:
                for pid in paused:
                    nspawn.signal_namespace(pid, signal.SIGCONT)
            for name in names:
                disks.commit_snapshot(self._mdir(name), snap)

    def restore_all(self, snap: str) -> None:
        """Put every machine back to lab-wide snapshot ``snap`` and boot them all."""
        disks.check_snap_name(snap)
        names = self.machine_names()
        missing = [n for n in names if not (self._mdir(n) / "snapshots" / snap).exists()]
        if missing:
            raise LabError(f"no snapshot {snap!r} for {', '.join(missing)}",
                           fix=f"take one with `runbooks lab snapshot --all {snap}`")
        with self._locked():
            for name in names:
                self._kill(name)
            for name in names:
                disks.restore_snapshot(self.config, name, self._mdir(name), snap)
            base = image.ensure_image(self.config, log=self.log)
            for name in names:
                self._boot(name, base)
            self._wait_ssh(names)
            self._write_description()

    def snapshots(self, name: str) -> list[str]:
        self.require_machine(name)
        return disks.snapshots(self._mdir(name))

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
        return access.ssh_argv(self.config, name, command, connect_timeout=connect_timeout, tty=tty)

    def ssh(self, name: str, command: Sequence[str] | str, *, timeout: float = 30,
            check: bool = True, input: str | None = None) -> local.Result:
        """Run a command on a machine over SSH; see :func:`runbooks_lib.lab.access.ssh`."""
        return access.ssh(self.config, name, command, timeout=timeout, check=check, input=input)


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
