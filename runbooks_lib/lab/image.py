"""The lab's cached Debian base image, built once per machine with debootstrap.

Side effects: writes under the cache directory (about 500 MB) and downloads
Debian and Python packages from the configured mirrors. A build happens in a
temporary directory that is renamed only when complete, so an interrupted
build leaves nothing that looks usable.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from runbooks_lib.errors import LabError
from runbooks_lib.lab import sh
from runbooks_lib.lab.config import IMAGE_FORMAT, IMAGE_PACKAGES, IMAGE_PYTHON_PACKAGES, LabConfig

VENV = "opt/runbooks/venv"

SSHD_CONFIG = """\
# The lab: root logs in with the lab's key only.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def image_key(config: LabConfig) -> str:
    """A short hash of everything that decides the image's content."""
    spec = repr((IMAGE_FORMAT, config.suite, IMAGE_PACKAGES, IMAGE_PYTHON_PACKAGES, sys.version_info[:2]))
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def image_path(config: LabConfig) -> Path:
    return config.cache_dir / f"base-{config.suite}-{image_key(config)}"


def is_built(config: LabConfig) -> bool:
    return (image_path(config) / ".complete").exists()


def ensure_image(config: LabConfig, *, log=print) -> Path:
    """Return the base image's root directory, building it first if needed."""
    final = image_path(config)
    if (final / ".complete").exists():
        return final / "rootfs"
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed", fix="apt-get install debootstrap (or run `make setup`)")
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = config.cache_dir / f".building-{final.name}-{os.getpid()}"
    _remove_tree(tmp)
    started = time.monotonic()
    try:
        rootfs = tmp / "rootfs"
        rootfs.mkdir(parents=True)
        log(f"building the lab's base image ({config.suite}) with debootstrap; this happens once per machine")
        sh.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(IMAGE_PACKAGES),
                config.suite, rootfs, config.mirror], timeout=1800,
               fix="check that the Debian mirror in /etc/apt/sources.list.d is reachable")
        _configure(rootfs)
        log("installing the stand-ins' Python packages into the image")
        _install_python_packages(rootfs)
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        _remove_tree(final)
        tmp.rename(final)
        (final / ".complete").write_text(f"built in {time.monotonic() - started:.0f} s\n")
    except BaseException:
        _remove_tree(tmp)
        raise
    log(f"base image ready in {time.monotonic() - started:.0f} s: {final}")
    return final / "rootfs"


def _configure(rootfs: Path) -> None:
    """Make the debootstrapped tree boot as a lab machine (no per-machine identity yet)."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (rootfs / "etc/ssh/sshd_config.d/10-lab.conf").write_text(SSHD_CONFIG)
    # Identity is written per machine; an empty machine-id here keeps clones distinct.
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "etc/hostname").write_text("localhost\n")
    # As on Ubuntu: /etc/resolv.conf is the systemd-resolved stub (127.0.0.53), no upstream servers.
    resolv = rootfs / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    enable = ["systemd-networkd.service", "systemd-resolved.service", "ssh.service"]
    # The Kubespray stand-in configures and starts these; a fresh VPS would not run them either.
    disable = ["etcd.service", "nginx.service", "keepalived.service"]
    sh.run(["chroot", rootfs, "systemctl", "enable", *enable], timeout=60)
    sh.run(["chroot", rootfs, "systemctl", "disable", *disable], timeout=60)
    sh.run(["chroot", rootfs, "systemctl", "mask", "systemd-networkd-wait-online.service",
            "getty@tty1.service", "apt-daily.timer", "apt-daily-upgrade.timer"], timeout=60)
    sh.run(["chroot", rootfs, "python3", "-m", "venv", "--without-pip", "/" + VENV], timeout=120)


def _install_python_packages(rootfs: Path) -> None:
    # The host's pip installs into the image's venv: same CPython minor version and glibc
    # family, and it uses the host's configured package index.
    site = next((rootfs / VENV / "lib").glob("python3.*")) / "site-packages"
    image_py = site.parent.name
    host_py = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    if image_py != host_py:
        raise LabError(f"the image has {image_py} but the host runs {host_py}",
                       fix="run the lab from a Python of the image's version (Debian bookworm: 3.11)")
    sh.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", site,
            *IMAGE_PYTHON_PACKAGES], timeout=900)


def _remove_tree(path: Path) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
