"""Durable, private file writes: the remote write script, the local copy, Inventory.save, inventory backups.

The remote write script is run for real by the local shells (it is an argv a shell runs; no SSH needed),
with its stdin held open so the temp file can be inspected while the content is still arriving.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from runbooks_lib import errors, inventory, ssh
from runbooks_lib.inventory import backups
from runbooks_lib.inventory.document import Inventory

DATA = Path(__file__).resolve().parent.parent / "data"
SECRET = b"apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user: {client-key-data: c2VjcmV0}\n"

# /bin/sh and bash: the write runs under the remote user's sh (dash on Debian/Ubuntu, bash elsewhere).
SHELLS = sorted({os.path.realpath(p) for p in map(shutil.which, ("sh", "dash", "bash")) if p})


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _wait(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _start_write(shell: str, target: Path, mode: str = "", umask: int = 0o022) -> tuple[subprocess.Popen, Path]:
    argv = ssh.write_text_argv(str(target), mode)
    tmp = Path(argv[5])
    proc = subprocess.Popen([shell, *argv[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, umask=umask)
    return proc, tmp


def _write_watching_the_temp(shell: str, target: Path, mode: str = "", umask: int = 0o022) -> list[int]:
    """Run the write, returning the temp file's modes seen before any content and with half of it."""
    proc, tmp = _start_write(shell, target, mode, umask)
    seen = []
    try:
        assert proc.stdin is not None
        # The shell has opened the temp file for cat, which waits for its stdin: no content yet (a stale
        # temp file is not empty, so an empty one is the script's, created or truncated by it).
        _wait(lambda: tmp.exists() and tmp.stat().st_size == 0 or proc.poll() is not None, f"{tmp} to be created")
        assert proc.poll() is None, proc.communicate()
        seen.append(_mode(tmp))
        proc.stdin.write(SECRET[:20])
        proc.stdin.flush()
        _wait(lambda: tmp.stat().st_size == 20, "the first bytes to reach the temp file")
        seen.append(_mode(tmp))
        proc.stdin.write(SECRET[20:])
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0, proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)
    return seen


# ---------------------------------------------------------------------------- remote write script


@pytest.mark.parametrize("shell", SHELLS)
def test_remote_write_temp_is_0600_from_creation_then_takes_the_targets_mode(tmp_path: Path, shell: str) -> None:
    target = tmp_path / "admin.conf"
    target.write_bytes(b"old\n")
    target.chmod(0o644)
    stale = tmp_path / ".admin.conf.runbooks-tmp"  # left by an interrupted write, readable by all
    stale.write_bytes(b"stale")
    stale.chmod(0o666)
    seen = _write_watching_the_temp(shell, target)
    assert seen == [0o600, 0o600], "the stale temp file is replaced, never reused with its mode"
    assert target.read_bytes() == SECRET and _mode(target) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["admin.conf"]


@pytest.mark.parametrize("shell", SHELLS)
def test_remote_write_requested_mode_and_new_file_default(tmp_path: Path, shell: str) -> None:
    secret = tmp_path / "admin.conf"
    assert _write_watching_the_temp(shell, secret, mode="0600") == [0o600, 0o600]
    assert _mode(secret) == 0o600 and secret.read_bytes() == SECRET
    existing = tmp_path / "etcd.env"
    existing.write_text("OLD=1\n")
    existing.chmod(0o640)
    _write_watching_the_temp(shell, existing, mode="0600")
    assert _mode(existing) == 0o600, "the requested mode wins over the target's"
    # No mode and no target: what `cat > file` under the caller's umask gave before (resolved drop-ins
    # must stay readable by systemd-resolve), although the temp file was 0600 meanwhile.
    for umask, want in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        fresh = tmp_path / f"new-{umask:o}.conf"
        assert _write_watching_the_temp(shell, fresh, umask=umask) == [0o600, 0o600]
        assert _mode(fresh) == want, (oct(umask), oct(_mode(fresh)))


@pytest.mark.parametrize("shell", SHELLS)
def test_remote_write_interrupted_leaves_the_target_and_no_temp(tmp_path: Path, shell: str) -> None:
    target = tmp_path / "kube-apiserver.yaml"
    target.write_bytes(b"old\n")
    proc, tmp = _start_write(shell, target)
    try:
        assert proc.stdin is not None
        _wait(lambda: tmp.exists(), f"{tmp} to be created")
        proc.stdin.write(b"half of it")
        proc.stdin.flush()
        proc.terminate()  # the SSH session ends: the shell runs its trap once cat returns
        proc.stdin.close()
        assert proc.wait(timeout=20) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)
    assert target.read_bytes() == b"old\n"
    assert sorted(os.listdir(tmp_path)) == ["kube-apiserver.yaml"]


def test_remote_write_script_takes_paths_as_parameters_only() -> None:
    argv = ssh.write_text_argv("/etc/kubernetes/admin.conf", "0600")
    assert argv[:2] == ["sh", "-c"] and argv[3:] == [
        "sh", "/etc/kubernetes/admin.conf", "/etc/kubernetes/.admin.conf.runbooks-tmp", "0600", "/etc/kubernetes"]
    script = argv[2]
    assert "admin.conf" not in script
    assert script.index("umask 077") < script.index('cat > "$2"') < script.index('mv -f -- "$2" "$1"')
    assert ssh.write_text_argv("relative.conf")[-1] == "."


# ---------------------------------------------------------------------------- local copy (LocalConnection)


def test_local_copy_temp_is_0600_while_copying_then_final_mode(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fifo, dst = tmp_path / "fifo", tmp_path / "admin.conf"
    os.mkfifo(fifo)
    dst.write_text("old")
    dst.chmod(0o640)
    tmp = tmp_path / ".admin.conf.runbooks-tmp"
    tmp.write_text("stale")
    tmp.chmod(0o666)
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    seen: list[int] = []
    go_on = threading.Event()

    def writer() -> None:
        with open(fifo, "wb") as w:
            w.write(SECRET[:20])
            w.flush()
            go_on.wait(20)
            w.write(SECRET[20:])

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    copier = threading.Thread(target=ssh.get, args=(ssh.LocalConnection(), str(fifo), dst), kwargs={"timeout": 20})
    copier.start()
    try:
        _wait(lambda: tmp.exists() and tmp.stat().st_size == 20, "the first bytes in the temp file")
        seen.append(_mode(tmp))
    finally:
        go_on.set()
        copier.join(20)
        thread.join(20)
    assert seen == [0o600] and dst.read_bytes() == SECRET and _mode(dst) == 0o640
    assert str(tmp) in synced and str(tmp_path) in synced, synced
    assert sorted(os.listdir(tmp_path)) == ["admin.conf", "fifo"]


def test_local_copy_new_file_gets_the_umask_mode(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"x")
    old = os.umask(0o027)
    try:
        ssh.put(ssh.LocalConnection(), src, str(dst), timeout=10)
    finally:
        os.umask(old)
    assert _mode(dst) == 0o640


# ---------------------------------------------------------------------------- Inventory.save


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append((kind, os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_inventory_save_fsyncs_the_file_then_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = Inventory.load(DATA / "hosts.commented.yaml")
    inv.add_host("w4", ip="10.0.0.16", groups=["kube_node"])
    target = tmp_path / "hosts.yaml"
    target.write_text("old")
    target.chmod(0o600)
    calls = _record_fsyncs(monkeypatch)
    assert inv.save(target) == target
    assert [kind for kind, _ in calls] == ["file", "dir"], calls
    synced_file = Path(calls[0][1])
    assert synced_file.parent == tmp_path and synced_file.name.startswith(".hosts.yaml.")  # a temp, then renamed
    assert calls[1][1] == str(tmp_path)
    assert target.read_text() == inv.dumps() and _mode(target) == 0o600, "an existing file keeps its mode"
    assert sorted(os.listdir(tmp_path)) == ["hosts.yaml"]
    fresh = tmp_path / "sub" / "inventory.ini"
    old = os.umask(0o022)
    try:
        Inventory.load(DATA / "inventory.current.ini").save(fresh)
    finally:
        os.umask(old)
    assert _mode(fresh) == 0o644, "a new file gets what the umask gives, as before"


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_inventory_save_failing_midway_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           fail_at: str) -> None:
    target = tmp_path / "hosts.yaml"
    shutil.copyfile(DATA / "hosts.commented.yaml", target)
    before = target.read_bytes()
    inv = Inventory.load(target)
    inv.add_host("w4", ip="10.0.0.16", groups=["kube_node"])
    real_write = os.write

    def write(fd: int, data) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            real_write(fd, bytes(data[: len(data) // 2]))  # half of it reaches the disk, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def fail(*_args) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, {"write": "write", "fsync": "fsync", "replace": "replace"}[fail_at],
                        write if fail_at == "write" else fail)
    with pytest.raises(OSError):
        inv.save()
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["hosts.yaml"], "no temp file left behind"


# ---------------------------------------------------------------------------- backups


def _inventory_file(tmp_path: Path, name: str = "hosts.yaml") -> Path:
    path = tmp_path / "inv" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    source = DATA / ("hosts.commented.yaml" if name.endswith(".yaml") else "inventory.current.ini")
    shutil.copyfile(source, path)
    return path


def test_save_backup_names_a_private_timestamped_file_per_runbook(tmp_path: Path) -> None:
    path = _inventory_file(tmp_path)
    saved = backups.save_backup(path, "add-worker", stamp="20250301T101500Z")
    assert saved == path.parent / ".inventory-backups" / "hosts.yaml.20250301T101500Z.add-worker.bak"
    assert saved.read_bytes() == path.read_bytes()
    assert _mode(saved) == 0o600 and _mode(saved.parent) == 0o700
    assert sorted(os.listdir(saved.parent)) == [saved.name], "no temp file left behind"
    assert backups.planned_path(path, "remove-worker", "20250301T101501Z") == \
        saved.parent / "hosts.yaml.20250301T101501Z.remove-worker.bak"
    # A second backup within the same second gets its own name, and sorts as the newer one.
    assert backups.planned_path(path, "remove-worker", "20250301T101500Z").name == \
        "hosts.yaml.20250301T101500Z-2.remove-worker.bak"
    again = backups.save_backup(path, "remove-worker", stamp="20250301T101500Z")
    assert again.name == "hosts.yaml.20250301T101500Z-2.remove-worker.bak" and saved.exists()
    assert [b.path for b in backups.backups(path)] == [again, saved]
    now = backups.save_backup(path, "install")
    assert backups.latest(path) == backups.Backup(now, now.name.split(".")[2], "install")
    assert backups.latest(path, "add-worker").path == saved
    for bad in ({"runbook": "Remove Worker"}, {"runbook": "a.b"}, {"stamp": "2025-03-01"}):
        with pytest.raises(errors.BadParameters):
            backups.save_backup(path, bad.get("runbook", "install"), stamp=bad.get("stamp"))
    with pytest.raises(errors.BadParameters, match="nothing to back up"):
        backups.save_backup(path.with_name("absent.yaml"), "install")


def test_backups_newest_first_filtered_and_pruned_per_runbook(tmp_path: Path) -> None:
    path = _inventory_file(tmp_path)
    other = _inventory_file(tmp_path, "inventory.ini")  # another inventory in the same directory
    backups.save_backup(other, "install", stamp="20250101T000000Z")
    removes = [backups.save_backup(path, "remove-worker", stamp=f"202501{d:02d}T120000Z", keep=3) for d in (1, 2)]
    adds = [backups.save_backup(path, "add-worker", stamp=f"202502{d:02d}T120000Z", keep=3) for d in range(1, 7)]
    assert [b.path for b in backups.backups(path, "add-worker")] == adds[::-1][:3], "the newest 3 kept"
    assert [b.path for b in backups.backups(path, "remove-worker")] == removes[::-1], "other runbooks untouched"
    listed = backups.backups(path)
    assert [b.runbook for b in listed] == ["add-worker"] * 3 + ["remove-worker"] * 2
    assert [b.stamp for b in listed] == sorted((b.stamp for b in listed), reverse=True)
    assert all(b.inventory_name == "hosts.yaml" for b in listed)
    assert [b.runbook for b in backups.backups(other)] == ["install"]
    assert [i.workers for i in backups.load_backups(other)] == [Inventory.load(other).workers]
    # A backup with an older stamp than `keep` others is still kept (it is the one this run names).
    late = backups.save_backup(path, "add-worker", stamp="20240101T000000Z", keep=3)
    assert late.exists() and len(backups.backups(path, "add-worker")) == 4
    assert backups.backups(tmp_path / "nowhere" / "hosts.yaml") == []


def test_ansible_never_reads_a_backup_as_an_inventory_source(tmp_path: Path) -> None:
    manager = pytest.importorskip("ansible.inventory.manager")
    from ansible.parsing.dataloader import DataLoader

    path = _inventory_file(tmp_path)
    before = Inventory.load(path)
    backups.save_backup(path, "add-worker")
    grown = before.copy()
    grown.add_host("w9", ip="10.0.0.99", groups=["kube_node"])
    grown.save(path)
    assert manager.IGNORED.search(backups.BACKUP_DIR.encode()), "hidden entries are skipped by -i DIR"
    loaded = manager.InventoryManager(loader=DataLoader(), sources=[str(path.parent)])
    assert sorted(h.name for h in loaded.get_hosts()) == sorted(grown.hosts)
    # The backups, had they been read, would have brought nothing new here; a host only in a backup:
    backups.save_backup(path, "remove-worker")
    before.save(path)  # w9 now only in the newest backup
    loaded = manager.InventoryManager(loader=DataLoader(), sources=[str(path.parent)])
    assert "w9" not in {h.name for h in loaded.get_hosts()}


def test_remove_worker_recheck_finds_a_host_in_an_older_remove_worker_backup(tmp_path: Path) -> None:
    path = _inventory_file(tmp_path, "inventory.ini")
    workers = inventory.workers
    # remove-worker: backs up, then saves the inventory without node5 ... and is interrupted.
    assert "node5" in Inventory.load(path).workers
    backups.save_backup(path, "remove-worker", stamp="20250301T100000Z")
    workers.without_hosts(Inventory.load(path), ["node5"]).save(path)
    # Then add-worker runs: its backup (the inventory without node5) is now the newest one.
    backups.save_backup(path, "add-worker", stamp="20250301T110000Z")
    workers.with_workers(Inventory.load(path), {"node9": "10.10.1.99"}).save(path)
    current = Inventory.load(path)
    newest_of_any = backups.latest(path).load()
    assert workers.already_removed(["node5"], current, newest_of_any, set()) == [], "the shared .bak's defect"
    found = workers.load_backups(path)
    assert [b.path.name for b in found] == ["inventory.ini.20250301T100000Z.remove-worker.bak"]
    assert workers.already_removed(["node5", "node7"], current, found, {"node1"}) == ["node5"]
    assert workers.already_removed(["node5"], current, workers.load_backups(path, None), set()) == ["node5"]
    assert workers.already_removed(["node5"], current, [], set()) == []
    assert workers.already_removed(["node5"], current, None, set()) == []
    assert workers.already_removed(["node5"], current, found, {"node5"}) == [], "still in the API"
    assert workers.host_in_backups(found, "node5").address == found[0].host("node5").address
    with pytest.raises(errors.BadParameters):
        workers.host_in_backups(found, "node7")
    assert workers.load_backup(path).path == found[0].path


def test_legacy_bak_is_still_read_last(tmp_path: Path) -> None:
    path = _inventory_file(tmp_path)
    workers = inventory.workers
    assert workers.load_backups(path) == [] and workers.load_backup(path) is None
    workers.backup_path(path).write_bytes(path.read_bytes())
    assert workers.load_backup(path).path == workers.backup_path(path)
    saved = backups.save_backup(path, "remove-worker")
    assert [b.path for b in workers.load_backups(path)] == [saved, workers.backup_path(path)]
    assert workers.load_backup(path).path == saved
