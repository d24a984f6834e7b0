"""ssh against the lab's real machines: verified host keys, reimaged keys, powered-off hosts."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import threading
import time
from pathlib import Path

import fabric
import pytest

from runbooks_lib import errors, ssh

pytestmark = pytest.mark.lab

VICTIM = "node5"  # the machine these tests power off and reimage; put back in each teardown


def hosts(lab, known_hosts: str | None = None) -> dict[str, ssh.Host]:
    d = lab.description()
    return {
        m["name"]: ssh.Host(m["name"], m["ip"], d["ssh_user"], key_path=d["ssh_key"],
                            known_hosts=known_hosts or d["known_hosts"])
        for m in d["machines"]
    }


def test_every_machine_with_verified_host_key(running_lab, tmp_path: Path) -> None:
    conns = [ssh.Connection(h, connect_timeout=5) for h in hosts(running_lab).values()]
    try:
        group = ssh.run_group(conns, ["cat", "/etc/hostname"], timeout=20)
        assert len(group) == 5 and len(group.succeeded) == 5
        for conn in conns:
            assert group[conn.name].stdout.strip() == conn.name
            # the key the session was verified with is the machine's pinned key
            key = conn.fabric.transport.get_remote_server_key()
            assert ssh.fingerprint(key) == running_lab.fingerprint(conn.name)
        local = tmp_path / "payload.txt"
        local.write_text("a file with 'quotes' and $dollars\n")
        ssh.put(conns[0], local, "/tmp/payload.txt", timeout=20)
        assert ssh.run(conns[0], ["cat", "/tmp/payload.txt"], timeout=20).stdout == local.read_text()
        ssh.get(conns[0], "/etc/hostname", tmp_path / "hostname", timeout=20)
        assert (tmp_path / "hostname").read_text().strip() == conns[0].name
        # a binary file both ways over fabric's SFTP transfer, checked end to end with sha256
        blob = tmp_path / "blob.bin"
        blob.write_bytes(os.urandom(2 << 20))
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        ssh.put(conns[1], blob, "/tmp/runbooks-blob.bin", timeout=30)
        try:
            remote = ssh.run(conns[1], ["sha256sum", "/tmp/runbooks-blob.bin"], timeout=30).stdout.split()[0]
            assert remote == digest
            ssh.get(conns[1], "/tmp/runbooks-blob.bin", tmp_path / "blob.back", timeout=30)
            assert hashlib.sha256((tmp_path / "blob.back").read_bytes()).hexdigest() == digest
        finally:
            ssh.run(conns[1], ["rm", "-f", "/tmp/runbooks-blob.bin"], timeout=20)
        assert isinstance(conns[1].fabric, fabric.Connection)
    finally:
        for conn in conns:
            conn.close()


def test_unknown_host_key_refused(running_lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = hosts(running_lab, str(empty))["node1"]
    with pytest.raises(errors.HostKeyError) as info:
        ssh.run(ssh.Connection(host, connect_timeout=5), ["true"], timeout=10)
    assert running_lab.fingerprint("node1") in str(info.value)
    assert empty.read_text() == ""


def test_changed_host_key_after_reimage(running_lab, tmp_path: Path) -> None:
    lab = running_lab
    old_pins = tmp_path / "known_hosts.before"
    shutil.copy(lab.description()["known_hosts"], old_pins)
    lab.snapshot(VICTIM, "lib-ssh-before-reimage")
    try:
        change = lab.reimage(VICTIM)
        assert change.old_fingerprint != change.new_fingerprint
        with pytest.raises(errors.HostKeyError) as info:
            ssh.run(ssh.Connection(hosts(lab, str(old_pins))[VICTIM], connect_timeout=5), ["true"], timeout=10)
        text = str(info.value)
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in text
        assert change.old_fingerprint in text and change.new_fingerprint in text
        # with the deliberately updated known_hosts the connection works
        with ssh.Connection(hosts(lab)[VICTIM], connect_timeout=5) as conn:
            assert ssh.run(conn, ["hostname"], timeout=20).stdout.strip() == VICTIM
    finally:
        lab.restore(VICTIM, "lib-ssh-before-reimage")


def test_hard_powered_off_host_is_unreachable_within_timeout(running_lab) -> None:
    lab = running_lab
    all_hosts = hosts(lab)
    lab.poweroff(VICTIM, "hard")
    try:
        start = time.monotonic()
        with pytest.raises(errors.HostUnreachable):
            ssh.run(ssh.Connection(all_hosts[VICTIM], connect_timeout=4), ["true"], timeout=10)
        elapsed = time.monotonic() - start
        assert 3.0 < elapsed < 8.0, elapsed  # the connect hung (SYNs dropped) until the connect timeout

        conns = [ssh.Connection(all_hosts[n], connect_timeout=4) for n in ("node1", "node2", VICTIM)]
        start = time.monotonic()
        with pytest.raises(errors.HostUnreachable) as info:
            ssh.run_group(conns, ["uptime"], timeout=10)
        assert time.monotonic() - start < 8.0
        group = info.value.result  # type: ignore[attr-defined]
        assert set(group.succeeded) == {"node1", "node2"}
        assert isinstance(group[VICTIM], errors.HostUnreachable)
        for conn in conns:
            conn.close()
    finally:
        lab.poweron(VICTIM)


def test_host_powered_off_mid_command(running_lab) -> None:
    lab = running_lab
    conn = ssh.Connection(hosts(lab)[VICTIM], connect_timeout=4)
    ssh.run(conn, ["true"], timeout=10)
    killer = threading.Timer(1.0, lab.poweroff, args=(VICTIM, "hard"))
    killer.start()
    try:
        start = time.monotonic()
        with pytest.raises(errors.HostUnreachable, match="stopped answering|dropped"):
            ssh.run(conn, ["sleep", "60"], timeout=6)
        assert time.monotonic() - start < 6 + 4 + 2  # command timeout + reachability probe + slack
    finally:
        killer.join()
        conn.close()
        lab.poweron(VICTIM)


def test_host_frozen_mid_command_hits_the_command_timeout(running_lab) -> None:
    # A frozen machine keeps its TCP state but answers nothing: only the timeout can end the call.
    lab = running_lab
    conn = ssh.Connection(hosts(lab)[VICTIM], connect_timeout=3)
    ssh.run(conn, ["true"], timeout=10)
    freezer = threading.Timer(1.0, lab.poweroff, args=(VICTIM, "freeze"))
    freezer.start()
    try:
        start = time.monotonic()
        with pytest.raises(errors.HostUnreachable, match="stopped answering"):
            ssh.run(conn, ["sleep", "60"], timeout=5)
        elapsed = time.monotonic() - start
        assert 5 <= elapsed < 5 + 3 + 2, elapsed  # timeout + reachability probe (3 s) + slack
    finally:
        freezer.join()
        conn.close()
        lab.poweron(VICTIM)
    with ssh.Connection(hosts(lab)[VICTIM], connect_timeout=5) as again:
        assert ssh.run(again, ["true"], timeout=20).ok  # thawed, same machine


def test_remote_command_runs_under_coreutils_timeout_in_its_own_process_group(running_lab) -> None:
    # The command's parent on the machine is `timeout`, bounding it there at ceil(5) + 30 s,
    # and the command runs in timeout's process group, which timeout signals as a whole.
    script = "echo $PPID; cut -d' ' -f5 /proc/$$/stat; cat /proc/$PPID/cmdline | tr '\\0' ' '"
    argv = ["sh", "-c", script]
    with ssh.Connection(hosts(running_lab)["node1"], connect_timeout=5) as conn:
        result = ssh.run(conn, argv, timeout=5)
    parent, group, cmdline = result.stdout.splitlines()
    assert cmdline.startswith("timeout --kill-after=10 35 sh -c ")
    assert cmdline.split() == ["timeout", "--kill-after=10", "35", "sh", "-c", *script.split()]
    assert group == parent  # timeout leads the process group the command is in
    assert result.command == shlex.join(argv)  # what errors and results show: the command, not the wrapper
