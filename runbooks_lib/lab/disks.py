"""A lab machine's disk: its identity, its overlay mount and its snapshots.

Each machine's disk is an overlay on the cached base image; its upper
directory (``MDIR/upper``) holds what makes it this machine (hostname,
machine-id, static IP, SSH host key, root's authorized key). The lab's
known_hosts pins each machine's host key. A snapshot is a copy of the upper
directory in ``MDIR/snapshots/NAME``. Everything here needs root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runbooks_lib.lab import sh
from runbooks_lib.errors import LabError
from runbooks_lib.lab.config import LabConfig


def provision(config: LabConfig, name: str, mdir: Path) -> None:
    """Give machine ``name`` a disk with its identity if it has none yet, and pin its host key."""
    upper = mdir / "upper"
    if upper.exists():
        return
    fresh = mdir / "upper.new"
    shutil.rmtree(fresh, ignore_errors=True)
    etc = fresh / "etc"
    (etc / "ssh").mkdir(parents=True)
    (etc / "systemd/network").mkdir(parents=True)
    (fresh / "root/.ssh").mkdir(parents=True, mode=0o700)
    ip = config.ip_of(name)
    prefix = config.network.prefixlen
    (etc / "hostname").write_text(f"{name}\n")
    (etc / "machine-id").write_text(os.urandom(16).hex() + "\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{ip}\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    # Sorts before the shipped 80-container-host0.network (DHCP), so the static address wins.
    (etc / "systemd/network/10-host0.network").write_text(
        f"[Match]\nName=host0\n\n[Network]\nAddress={ip}/{prefix}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
    sh.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
            "-f", etc / "ssh/ssh_host_ed25519_key"], timeout=30)
    pub = config.ssh_key.with_suffix(".pub").read_text()
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
    pin_host_key(config, name, mdir)


def host_pubkey(mdir: Path) -> str:
    """The base64 part of the machine's ed25519 host key."""
    return (mdir / "upper/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]


def pin_host_key(config: LabConfig, name: str, mdir: Path) -> None:
    """Replace the known_hosts lines of this machine with its current host key."""
    ip = config.ip_of(name)
    kh = config.known_hosts
    lines = [ln for ln in kh.read_text().splitlines() if ln and ln.split()[0] not in (ip, name, f"{ip},{name}")]
    lines.append(f"{ip},{name} ssh-ed25519 {host_pubkey(mdir)}")
    kh.write_text("\n".join(lines) + "\n")


def fingerprint(mdir: Path) -> str:
    """SHA256 fingerprint of the machine's host key."""
    out = sh.run(["ssh-keygen", "-l", "-f", mdir / "upper/etc/ssh/ssh_host_ed25519_key.pub"], timeout=30).stdout
    return out.split()[1]


# ---------------------------------------------------------------- overlay mount


def lab_mounts(config: LabConfig) -> list[str]:
    """Mount points under the lab's machines directory, deepest first."""
    root = str(config.state_dir / "machines") + "/"
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(root):
            mounts.append(target)
    return sorted(mounts, key=len, reverse=True)


def mount(mdir: Path, base: Path) -> Path:
    """Mount the machine's overlay (base image + upper) on ``MDIR/root`` unless mounted; return it."""
    root, work = mdir / "root", mdir / "work"
    root.mkdir(exist_ok=True)
    if os.path.ismount(root):
        return root
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    sh.run(["mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={base},upperdir={mdir / 'upper'},workdir={work}", root], timeout=30)
    return root


def umount(config: LabConfig, mdir: Path) -> None:
    """Lazily unmount the machine's root and everything below it."""
    root = mdir / "root"
    for target in lab_mounts(config):
        if target == str(root) or target.startswith(str(root) + "/"):
            sh.run(["umount", "-l", target], timeout=30, check=False)


# ---------------------------------------------------------------- snapshots


def check_snap_name(snap: str) -> None:
    if not snap or not all(ch.isalnum() or ch in "-_." for ch in snap) or snap.startswith("."):
        raise LabError(f"invalid snapshot name {snap!r}", fix="use letters, digits, '-', '_' and '.'")


def snapshots(mdir: Path) -> list[str]:
    return sorted(p.name for p in (mdir / "snapshots").glob("[!.]*"))


def copy_to_snapshot(mdir: Path, snap: str) -> None:
    """Copy the upper directory to a temporary snapshot; :func:`commit_snapshot` names it."""
    tmp = mdir / "snapshots" / f".{snap}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(exist_ok=True)
    sh.run(["cp", "-a", "--reflink=auto", mdir / "upper", tmp], timeout=600)


def commit_snapshot(mdir: Path, snap: str) -> Path:
    """Replace snapshot ``snap`` with the copy :func:`copy_to_snapshot` made."""
    target = mdir / "snapshots" / snap
    shutil.rmtree(target, ignore_errors=True)
    (mdir / "snapshots" / f".{snap}.tmp").rename(target)
    return target


def restore_snapshot(config: LabConfig, name: str, mdir: Path, snap: str) -> None:
    """Put snapshot ``snap`` back as the (stopped) machine's upper directory and pin its host key."""
    tmp = mdir / "upper.restore"
    shutil.rmtree(tmp, ignore_errors=True)
    sh.run(["cp", "-a", "--reflink=auto", mdir / "snapshots" / snap, tmp], timeout=600)
    shutil.rmtree(mdir / "upper")
    tmp.rename(mdir / "upper")
    pin_host_key(config, name, mdir)
