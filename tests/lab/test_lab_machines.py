"""The lab's machines for real: SSH, systemd, faults, disks, partitions, teardown."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from runbooks_lib.errors import HostUnreachable
from runbooks_lib.lab import net
from runbooks_lib.lab.machines import Lab

pytestmark = pytest.mark.lab


def connect_outcome(ip: str, port: int, timeout: float) -> tuple[str, float]:
    """Classify a TCP connect from the host: ok, timeout, refused or unreachable."""
    started = time.monotonic()
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return "ok", time.monotonic() - started
    except TimeoutError:
        return "timeout", time.monotonic() - started
    except ConnectionRefusedError:
        return "refused", time.monotonic() - started
    except OSError as exc:
        return f"unreachable ({exc.strerror})", time.monotonic() - started


def remote_connect(lab: Lab, src: str, ip: str, seconds: int = 3) -> int:
    """Exit code of a TCP connect from machine ``src``: 0 ok, 124 hung until the timeout, else refused/unreachable."""
    cmd = f'timeout {seconds} bash -c "</dev/tcp/{ip}/22"; echo $?'
    return int(lab.ssh(src, cmd, timeout=seconds + 15).stdout.strip().splitlines()[-1])


def test_every_machine_answers_with_its_identity_and_services(running_lab: Lab) -> None:
    description = running_lab.description()
    assert [m["name"] for m in description["machines"]] == [f"node{i}" for i in range(1, 6)]
    machine_ids = set()
    for machine in description["machines"]:
        out = running_lab.ssh(machine["name"], [
            "sh", "-c", "hostname; hostname -I; cat /etc/machine-id; "
            "systemctl is-active systemd-journald ssh systemd-networkd systemd-resolved; "
            "systemctl is-system-running --wait; readlink /etc/resolv.conf; "
            "loginctl show-user root --property=Linger; systemctl is-active user@0"], timeout=60).stdout.split()
        assert out[0] == machine["name"]
        assert out[1] == machine["ip"]
        machine_ids.add(out[2])
        assert out[3:7] == ["active"] * 4
        assert out[7] in ("running", "degraded")
        assert out[8].endswith("systemd/resolve/stub-resolv.conf")
        # root's user manager stays up between SSH logins (no stop/start race per login).
        assert out[9:11] == ["Linger=yes", "active"]
    assert len(machine_ids) == 5, "machine-ids must be unique"


def test_description_file_matches_status(running_lab: Lab) -> None:
    data = json.loads(running_lab.config.description_path.read_text())
    assert data["ssh_user"] == "root"
    assert Path(data["ssh_key"]).exists() and Path(data["known_hosts"]).exists()
    assert {m["name"]: m["ip"] for m in data["machines"]} == {r.name: r.ip for r in running_lab.status()}
    # The lab's "Kubespray checkout" (params/lab.yaml's kubespray_dir) is a link to this checkout's stand-in.
    link = running_lab.config.state_dir / "kubespray"
    assert link.is_symlink() and link.resolve() == (Path(__file__).resolve().parents[2] / "runbooks_lib/lab/kubespray")
    assert (link / "cluster.yml").is_file()


def test_host_keys_are_verified_against_the_pinned_file(running_lab: Lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = running_lab.ssh_argv("node1", "true")
    argv = [a.replace(str(running_lab.config.known_hosts), str(empty)) for a in argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_second_up_changes_nothing_running(running_lab: Lab) -> None:
    before = {r.name: r.init_pid for r in running_lab.status()}
    running_lab.up(nodes=5)
    assert {r.name: r.init_pid for r in running_lab.status()} == before


def test_hard_poweroff_makes_the_ip_silent_and_poweron_restores_disk(running_lab: Lab) -> None:
    lab = running_lab
    bridge_mac = Path(f"/sys/class/net/{lab.config.bridge}/address")
    assert bridge_mac.read_text().strip() == net.bridge_mac(lab.config)
    lab.ssh("node3", "echo kept-across-power-cycle > /root/marker", timeout=30)
    # A connection open when the power goes: a dead VPS sends nothing more, no reset.
    open_conn = socket.create_connection((lab.config.ip_of("node3"), 22), timeout=5)
    open_conn.recv(64)  # sshd's banner
    lab.poweroff("node3", mode="hard")
    try:
        open_conn.settimeout(2)
        open_conn.sendall(b"SSH-2.0-probe\r\n")
        with pytest.raises(TimeoutError):
            open_conn.recv(64)
        open_conn.close()
        assert {r.name: r.state for r in lab.status()}["node3"] == "off"
        outcome, elapsed = connect_outcome(lab.config.ip_of("node3"), 22, timeout=3)
        assert outcome == "timeout", f"a dead VPS must make connects hang, got {outcome} after {elapsed:.1f}s"
        assert elapsed >= 2.9
        # Other machines see the same silence, and still answer themselves.
        assert remote_connect(lab, "node1", lab.config.ip_of("node3")) == 124
        assert connect_outcome(lab.config.ip_of("node2"), 22, timeout=3)[0] == "ok"
        with pytest.raises(HostUnreachable):
            lab.ssh("node3", "true", timeout=4)
    finally:
        lab.poweron("node3")
    assert lab.ssh("node3", "cat /root/marker", timeout=30).stdout.strip() == "kept-across-power-cycle"
    assert remote_connect(lab, "node1", lab.config.ip_of("node3")) == 0
    # The bridge kept its MAC through a veth leaving and a new one joining, so the other
    # machines' ARP entries for the host stay right (else they go silent until they expire).
    assert bridge_mac.read_text().strip() == net.bridge_mac(lab.config)
    neigh = lab.ssh("node2", ["ip", "neigh", "show", lab.config.host_ip], timeout=10).stdout
    assert net.bridge_mac(lab.config) in neigh or not neigh.strip(), neigh


def test_graceful_poweroff_and_freeze(running_lab: Lab) -> None:
    lab = running_lab
    lab.poweroff("node5", mode="graceful")
    try:
        assert {r.name: r.state for r in lab.status()}["node5"] == "off"
        assert connect_outcome(lab.config.ip_of("node5"), 22, timeout=2)[0] == "timeout"
    finally:
        lab.poweron("node5")
    lab.ssh("node4", "sleep 600 >/dev/null 2>&1 & echo $! > /root/sleeper", timeout=30)
    lab.poweroff("node4", mode="freeze")
    try:
        assert {r.name: r.state for r in lab.status()}["node4"] == "frozen"
        assert connect_outcome(lab.config.ip_of("node4"), 22, timeout=2)[0] == "timeout"
        assert remote_connect(lab, "node2", lab.config.ip_of("node4"), seconds=2) == 124
    finally:
        lab.poweron("node4")
    # Resumed, not rebooted: the process started before the freeze is still there.
    assert lab.ssh("node4", "kill -0 $(cat /root/sleeper) && echo alive", timeout=30).stdout.strip() == "alive"


def test_reimage_gives_empty_disk_and_new_pinned_host_key(running_lab: Lab, tmp_path: Path) -> None:
    lab = running_lab
    old_known = tmp_path / "known_hosts.before"
    old_known.write_text(lab.config.known_hosts.read_text())
    lab.ssh("node2", "echo old > /root/data", timeout=30)
    change = lab.reimage("node2")
    assert change.old_fingerprint != change.new_fingerprint
    assert lab.ssh("node2", "test -e /root/data && echo present || echo absent", timeout=30).stdout.strip() == "absent"
    assert lab.ssh("node2", "hostname", timeout=30).stdout.strip() == "node2"
    # A client holding the old key refuses to talk to the reinstalled machine.
    argv = [a.replace(str(lab.config.known_hosts), str(old_known)) for a in lab.ssh_argv("node2", "true")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr


def test_snapshot_restore_round_trips_a_file(running_lab: Lab) -> None:
    lab = running_lab
    lab.ssh("node4", "echo before > /root/state", timeout=30)
    lab.snapshot("node4", "rehearsal")
    lab.ssh("node4", "echo after > /root/state; echo extra > /root/extra", timeout=30)
    lab.restore("node4", "rehearsal")
    assert lab.ssh("node4", "cat /root/state", timeout=30).stdout.strip() == "before"
    assert lab.ssh("node4", "test -e /root/extra && echo present || echo absent", timeout=30).stdout.strip() == "absent"
    assert "rehearsal" in lab.snapshots("node4")


def test_partition_blocks_only_the_pair(running_lab: Lab) -> None:
    lab = running_lab
    ip = lab.config.ip_of
    lab.partition("node1", "node2")
    try:
        assert remote_connect(lab, "node1", ip("node2")) == 124
        assert remote_connect(lab, "node2", ip("node1")) == 124
        assert remote_connect(lab, "node1", ip("node3")) == 0
        assert remote_connect(lab, "node3", ip("node2")) == 0
        assert connect_outcome(ip("node1"), 22, 3)[0] == "ok"
    finally:
        lab.heal()
    assert remote_connect(lab, "node1", ip("node2")) == 0


def test_down_leaves_nothing_behind_and_up_comes_back(lab: Lab) -> None:
    try:
        lab.down()
        config = lab.config
        assert not Path(f"/sys/class/net/{config.bridge}").exists()
        ours = {config.veth_of(name) for name in config.node_names(9)}
        assert not ours & {p.name for p in Path("/sys/class/net").iterdir()}
        assert not Path(f"/run/netns/{config.bridge}-gy").exists()
        # Mount points below this lab's directory (another lab may live at a longer path).
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        assert not [m for m in mounts if m == str(config.state_dir) or m.startswith(f"{config.state_dir}/")]
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=20).stdout.split()
        assert f"{config.bridge}_lab" not in tables
        procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=20).stdout
        assert f"--machine {config.bridge}-node" not in procs
        assert all(r.state == "off" for r in lab.status())
        lab.down()  # idempotent
    finally:
        lab.up(nodes=5)  # later tests share this lab, even when an assertion above failed
    assert all(r.state == "running" for r in lab.status())
