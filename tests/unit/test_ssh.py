"""ssh: results, quoting, the MockConnection test double, run_group, LocalConnection, remote text files, redaction."""

from __future__ import annotations

import base64
import os
import shlex
import stat
import threading
import time
import traceback
from pathlib import Path

import pytest

from runbooks_lib import errors, inventory, ssh, testing
from runbooks_lib.ssh.connection import remote_bounded
from tests.waiting import wait_until


def test_result_properties_and_tail() -> None:
    r = ssh.Result("node1", "false", 1, "a\nb\nc\n", "x\ny\n", 0.1)
    assert r.failed and not r.ok
    assert r.tail("stdout", 2) == "b\nc"
    assert r.tail() == "x\ny"
    with pytest.raises(Exception):
        r.exited = 0  # frozen


def test_run_quotes_argv_and_never_takes_strings() -> None:
    conn = testing.MockConnection("node1", {("echo", "a b", "$(rm -rf /)", "it's"): "ok\n"})
    result = ssh.run(conn, ["echo", "a b", "$(rm -rf /)", "it's"], timeout=5)
    assert result.stdout == "ok\n" and result.ok and result.host == "node1"
    assert result.command == shlex.join(["echo", "a b", "$(rm -rf /)", "it's"])
    assert shlex.split(result.command) == ["echo", "a b", "$(rm -rf /)", "it's"]
    with pytest.raises(errors.BadParameters):
        ssh.run(conn, "echo hi", timeout=5)  # type: ignore[arg-type]


def test_run_check_raises_with_result_and_opt_out() -> None:
    conn = testing.MockConnection("node2", {("systemctl", "is-active", "etcd"): testing.Reply("inactive\n", "boom\n", 3)})
    with pytest.raises(errors.CommandFailed) as info:
        ssh.run(conn, ["systemctl", "is-active", "etcd"], timeout=5)
    exc = info.value
    assert exc.exit_code == 3 and exc.host == "node2" and "boom" in str(exc)
    assert "systemctl is-active etcd" in str(exc)
    assert exc.result.exited == 3  # type: ignore[attr-defined]
    result = ssh.run(conn, ["systemctl", "is-active", "etcd"], timeout=5, check=False)
    assert result.exited == 3 and result.stdout == "inactive\n"


def test_sudo_prefix_only_when_not_root() -> None:
    user = testing.MockConnection("n", {("sudo", "-n", "--", "swapoff", "-a"): ""}, user="debian")
    ssh.run(user, ["swapoff", "-a"], timeout=5, sudo=True)
    root = testing.MockConnection("n", {("swapoff", "-a"): ""})
    ssh.run(root, ["swapoff", "-a"], timeout=5, sudo=True)
    assert user.calls[0].argv[:3] == ("sudo", "-n", "--") and root.calls[0].argv == ("swapoff", "-a")


def test_mock_fails_loudly_and_supports_sequences_callables_exceptions() -> None:
    conn = testing.MockConnection("m")
    conn.expect(["a"], ["first", testing.Reply(exited=2)])
    conn.expect("b --flag", lambda argv, data: testing.Reply(stdout=(data or b"").decode().upper()))
    conn.expect(["dead"], errors.HostUnreachable("gone", host="m"))
    assert ssh.run(conn, ["a"], timeout=1).stdout == "first"
    assert ssh.run(conn, ["a"], timeout=1, check=False).exited == 2
    with pytest.raises(AssertionError, match="unexpected command on m: a"):
        ssh.run(conn, ["a"], timeout=1)
    assert ssh.run(conn, ["b", "--flag"], timeout=1, input="hi").stdout == "HI"
    with pytest.raises(errors.HostUnreachable):
        ssh.run(conn, ["dead"], timeout=1)
    with pytest.raises(AssertionError, match="unexpected command on m: rm -rf /"):
        ssh.run(conn, ["rm", "-rf", "/"], timeout=1)
    conn.assert_all_used()
    conn.expect(["never"], "x")
    with pytest.raises(AssertionError, match="never"):
        conn.assert_all_used()
    assert [c.argv for c in conn.calls][:2] == [("a",), ("a",)]
    assert conn.calls[3].input == b"hi"


def test_from_inventory_host() -> None:
    h = ssh.from_inventory_host(
        "node1", None, {"ansible_host": "10.0.0.1", "ip": "10.1.0.1", "ansible_user": "debian", "ansible_port": 2222},
        key_path="/k", known_hosts="/kh",
    )
    assert h == ssh.Host("node1", "10.0.0.1", "debian", 2222, "/k", "/kh")
    assert ssh.from_inventory_host("n", "10.9.9.9", {"ansible_host": "x"}).address == "10.9.9.9"  # explicit wins
    with pytest.raises(errors.BadParameters):
        ssh.from_inventory_host("", None, {})


# Ansible connects to ansible_host, else to the inventory hostname; Kubespray's ip/access_ip
# are cluster addresses Ansible never connects to.
ADDRESS_CASES = [
    ({"ansible_host": "10.0.0.1"}, "10.0.0.1"),
    ({"ip": "10.1.0.1"}, "node1"),
    ({"access_ip": "10.2.0.1"}, "node1"),
    ({"ansible_host": "10.0.0.1", "ip": "10.1.0.1", "access_ip": "10.2.0.1"}, "10.0.0.1"),
    ({"ip": "10.1.0.1", "access_ip": "10.2.0.1"}, "node1"),
    ({}, "node1"),
    ({"ansible_host": ""}, "node1"),
    ({"ansible_host": "10.0.0.1", "ansible_ssh_host": "10.0.0.9"}, "10.0.0.9"),  # the old alias wins, as in Ansible
]


@pytest.mark.parametrize(("hostvars", "expected"), ADDRESS_CASES)
def test_inventory_host_and_ssh_host_agree_on_the_address(hostvars: dict, expected: str) -> None:
    assert inventory.ssh_address("node1", hostvars) == expected
    assert inventory.Host("node1", hostvars).address == expected
    assert ssh.from_inventory_host("node1", None, hostvars).address == expected
    inv = inventory.Inventory.parse(
        "all:\n  hosts:\n    node1: " + ("{}" if not hostvars else str(hostvars).replace("'", '"')) + "\n", "yaml"
    )
    assert inv.host("node1").address == expected


def test_connection_requires_known_hosts() -> None:
    with pytest.raises(errors.BadParameters, match="known_hosts"):
        ssh.Connection(ssh.Host("n", "127.0.0.1"))


def test_remote_commands_are_bounded_by_coreutils_timeout_outside_sudo() -> None:
    assert remote_bounded(["systemctl", "is-active", "etcd"], 10) == (
        "timeout --kill-after=10 40 systemctl is-active etcd"
    )
    assert remote_bounded(["sudo", "-n", "--", "swapoff", "-a"], 20) == (
        "sudo -n -- timeout --kill-after=10 50 swapoff -a"
    )  # inside sudo: a timeout run by the SSH user could not signal the root command
    # the bound is the local timeout rounded up, plus 30 s: the local timeout fires first
    assert remote_bounded(["true"], 0.5) == "timeout --kill-after=10 31 true"
    assert remote_bounded(["true"], 30) == "timeout --kill-after=10 60 true"
    assert remote_bounded(["true"], 30.01) == "timeout --kill-after=10 61 true"
    argv = ["sh", "-c", "echo \"it's $HOME\"; ls", "a b"]
    line = remote_bounded(argv, 5)
    assert line == "timeout --kill-after=10 35 sh -c 'echo \"it'\"'\"'s $HOME\"; ls' 'a b'"
    assert shlex.split(line) == ["timeout", "--kill-after=10", "35", *argv]


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan")])
def test_remote_bound_refuses_a_timeout_that_is_not_a_finite_positive_number(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(errors.BadParameters, match="timeout"):
        remote_bounded(["true"], timeout)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    conn = ssh.Connection(ssh.Host("n", "192.0.2.1", known_hosts=str(known_hosts)), connect_timeout=1)
    with pytest.raises(errors.BadParameters, match="timeout"):  # before connecting: nothing answers there
        ssh.run(conn, ["true"], timeout=timeout)


# -- run_group ------------------------------------------------------------------------


def _slow(value, delay: float):
    def answer(argv, data):
        time.sleep(delay)
        return value

    return answer


def test_run_group_parallel_and_per_host_results() -> None:
    conns = [testing.MockConnection(f"node{i}", {("uptime",): _slow(f"up {i}\n", 0.5)}) for i in range(1, 5)]
    start = time.monotonic()
    group = ssh.run_group(conns, ["uptime"], timeout=5)
    assert time.monotonic() - start < 1.5  # four 0.5 s commands in parallel
    assert set(group) == {"node1", "node2", "node3", "node4"}
    assert group["node3"].stdout == "up 3\n"
    assert len(group.succeeded) == 4 and not group.failed


def test_run_group_one_combined_error_after_all_answered() -> None:
    conns = [
        testing.MockConnection("node1", {("true",): ""}),
        testing.MockConnection("node2", {("true",): testing.Reply(stderr="disk full\n", exited=1)}),
        testing.MockConnection("node3", {("true",): errors.HostUnreachable("cannot reach node3", host="node3")}),
        testing.MockConnection("node4", {("true",): _slow("", 0.3)}),
    ]
    with pytest.raises(errors.CommandFailed) as info:
        ssh.run_group(conns, ["true"], timeout=5)
    group = info.value.result  # type: ignore[attr-defined]
    assert set(group.succeeded) == {"node1", "node4"}  # node4 answered even though others failed first
    assert set(group.failed) == {"node2", "node3"}
    assert isinstance(group["node3"], errors.HostUnreachable)
    text = str(info.value)
    assert "2 of 4 hosts failed" in text and "node2: exit 1: disk full" in text and "node3: HostUnreachable" in text

    group = ssh.run_group(conns, ["true"], timeout=5, check=False)
    assert len(group.failed) == 2


def test_run_group_all_unreachable_is_host_unreachable() -> None:
    conns = [testing.MockConnection(n, {("true",): errors.HostUnreachable(f"{n} off")}) for n in ("a", "b")]
    with pytest.raises(errors.HostUnreachable):
        ssh.run_group(conns, ["true"], timeout=5)
    with pytest.raises(errors.BadParameters):
        ssh.run_group([testing.MockConnection("a"), testing.MockConnection("a")], ["true"], timeout=5)


# -- LocalConnection and remote text files ---------------------------------------------------


def test_local_connection_runs_argv_without_a_shell(tmp_path: Path) -> None:
    conn = ssh.LocalConnection()
    r = ssh.run(conn, ["printf", "%s|", "a b", "$HOME", ";", "x"], timeout=10)
    assert r.stdout == "a b|$HOME|;|x|"
    assert ssh.run(conn, ["cat"], timeout=10, input="piped").stdout == "piped"
    missing = ssh.run(conn, ["no-such-program-here"], timeout=10, check=False)
    assert missing.exited == 127
    start = time.monotonic()
    with pytest.raises(errors.CommandFailed, match="did not finish within 0.5s"):
        ssh.run(conn, ["sleep", "5"], timeout=0.5)
    assert time.monotonic() - start < 3


def test_local_connection_timeout_ends_the_whole_process_group(tmp_path: Path) -> None:
    # Commands run through runbooks_lib.local.run: a timeout takes down what the command started too.
    pidfile = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {shlex.quote(str(pidfile))}; wait"
    start = time.monotonic()
    with pytest.raises(errors.CommandFailed, match="did not finish within 1s"):
        ssh.run(ssh.LocalConnection(), ["sh", "-c", script], timeout=1)
    assert time.monotonic() - start < 8  # not held up by the child keeping the output pipe open
    child = int(pidfile.read_text())
    wait_until(lambda: not Path(f"/proc/{child}").exists(), 5,
               f"the background child {child} of the timed-out command to die", 0.05)


def test_local_connection_env_cwd_and_not_executable(tmp_path: Path) -> None:
    conn = ssh.LocalConnection("operator", env={"RUNBOOKS_PROBE": "x y"}, cwd=str(tmp_path))
    r = ssh.run(conn, ["sh", "-c", 'echo "$RUNBOOKS_PROBE"; pwd; echo "$PATH" | grep -c /'], timeout=10)
    assert r.stdout.splitlines() == ["x y", str(tmp_path), "1"]  # added to the environment, not replacing it
    assert r.host == "operator"
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    plain.chmod(0o644)
    assert ssh.run(conn, [str(plain)], timeout=10, check=False).exited == 126


def test_write_text_atomic_keeps_mode_and_read_text(tmp_path: Path) -> None:
    conn = ssh.LocalConnection()
    target = tmp_path / "etcd.env"
    target.write_text("OLD=1\n")
    target.chmod(0o640)
    ssh.write_text(conn, str(target), "NEW=2\n", timeout=10)
    assert target.read_text() == "NEW=2\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["etcd.env"]  # no temp file left behind
    fresh = tmp_path / "new.conf"
    ssh.write_text(conn, str(fresh), "x\n", timeout=10, mode="0600")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert ssh.read_text(conn, str(fresh), timeout=10) == "x\n"
    assert ssh.read_text(conn, str(tmp_path / "absent"), timeout=10, missing_ok=True) is None
    with pytest.raises(errors.CommandFailed):
        ssh.read_text(conn, str(tmp_path / "absent"), timeout=10)


def test_write_text_argv_uses_hidden_temp_beside_target() -> None:
    argv = ssh.write_text_argv("/etc/kubernetes/manifests/kube-apiserver.yaml")
    assert argv[:2] == ["sh", "-c"] and argv[4:6] == [
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/etc/kubernetes/manifests/.kube-apiserver.yaml.runbooks-tmp",
    ]
    # the script takes paths as positional parameters only
    assert "kube-apiserver" not in argv[2]


def test_local_put_and_get_copy_and_keep_the_target_mode(tmp_path: Path) -> None:
    conn = ssh.LocalConnection()
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"x" * 300_000)
    dst.write_text("old")
    dst.chmod(0o600)
    ssh.put(conn, src, str(dst), timeout=10)
    assert dst.read_bytes() == src.read_bytes() and stat.S_IMODE(dst.stat().st_mode) == 0o600
    back = tmp_path / "back"
    ssh.get(conn, str(dst), back, timeout=10)
    assert back.read_bytes() == src.read_bytes()
    with pytest.raises(errors.CommandFailed, match="No such file"):
        ssh.get(conn, str(tmp_path / "absent"), back, timeout=10)
    assert sorted(os.listdir(tmp_path)) == ["back", "dst", "src"]  # no temp file left behind


@pytest.mark.parametrize("how", ["put", "get"])
def test_local_put_and_get_honour_their_timeout(tmp_path: Path, how: str) -> None:
    # A FIFO whose writer sends a little and then stalls: the copy must give up at its timeout,
    # leave the target as it was and no temp file behind.
    fifo, dst = tmp_path / "fifo", tmp_path / "dst"
    os.mkfifo(fifo)
    dst.write_text("previous")
    stop = threading.Event()

    def slow_writer() -> None:
        with open(fifo, "wb") as w:
            w.write(b"partial")
            w.flush()
            stop.wait(30)

    writer = threading.Thread(target=slow_writer, daemon=True)
    writer.start()
    conn = ssh.LocalConnection()
    start = time.monotonic()
    try:
        with pytest.raises(errors.CommandFailed, match="did not finish within 1s"):
            if how == "put":
                ssh.put(conn, fifo, str(dst), timeout=1)
            else:
                ssh.get(conn, str(fifo), dst, timeout=1)
    finally:
        stop.set()
        writer.join(5)
    assert 0.9 < time.monotonic() - start < 3
    assert dst.read_text() == "previous"
    assert sorted(os.listdir(tmp_path)) == ["dst", "fifo"]


def test_local_get_from_a_fifo_nobody_writes_to_times_out(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(errors.CommandFailed, match="did not finish within 0.5s"):
        ssh.get(ssh.LocalConnection(), str(fifo), tmp_path / "out", timeout=0.5)
    assert time.monotonic() - start < 2


# -- no secrets in errors ---------------------------------------------------------------------

# Built at run time: committed private key markers are refused by a repository hook.
_PEM = "-----BEGIN " + "{kind}PRIVATE KEY-----\n{body}\n-----END " + "{kind}PRIVATE KEY-----\n"
KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAAsecretkeymaterialAAAA"
RSA_BODY = "MIIEowIBAAKCAQEAsecretclientkeyQQQQ"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.secretbearertokenpayload.sig"
CLIENT_KEY_DATA = base64.b64encode(_PEM.format(kind="RSA ", body=RSA_BODY).encode()).decode()
LEAKY_OUTPUT = (
    "dumping state before failing\n"
    + _PEM.format(kind="OPENSSH ", body=KEY_BODY)
    + f"Authorization: Bearer {TOKEN}\n"
    + "users:\n- name: admin\n  user:\n"
    + f"    client-key-data: {CLIENT_KEY_DATA}\n"
    + "error: it broke\n"
)
SECRETS = (KEY_BODY, RSA_BODY, TOKEN, CLIENT_KEY_DATA, CLIENT_KEY_DATA[:40])


def _shown(exc: BaseException) -> str:
    return str(exc) + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert "PRIVATE KEY-----\n" + KEY_BODY not in text


def test_failing_command_output_is_redacted_in_the_error() -> None:
    # stderr is empty, so the message falls back to stdout: the path that used to leak.
    argv = ["curl", "-sfH", f"Authorization: Bearer {TOKEN}", "https://127.0.0.1:6443/api"]
    conn = testing.MockConnection("node1", {tuple(argv): testing.Reply(stdout=LEAKY_OUTPUT, exited=1)})
    with pytest.raises(errors.CommandFailed) as info:
        ssh.run(conn, argv, timeout=5)
    text = _shown(info.value)
    _assert_no_secret(text)
    assert "error: it broke" in text and "exit code: 1" in text and "node1" in text  # still says what happened
    assert info.value.result.stdout == LEAKY_OUTPUT  # type: ignore[attr-defined]  # data kept for the caller


def test_failing_local_command_and_group_errors_are_redacted(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky"
    leaky.write_text(LEAKY_OUTPUT)
    argv = ["sh", "-c", 'cat "$1" >&2; exit 3', "sh", str(leaky)]
    with pytest.raises(errors.CommandFailed) as info:
        ssh.run(ssh.LocalConnection(), argv, timeout=10)
    _assert_no_secret(_shown(info.value))
    conns = [
        testing.MockConnection("node1", {("true",): testing.Reply(stdout=LEAKY_OUTPUT, exited=1)}),
        testing.MockConnection("node2", {("true",): testing.Reply(stderr=LEAKY_OUTPUT, exited=1)}),
    ]
    with pytest.raises(errors.CommandFailed) as group_info:
        ssh.run_group(conns, ["true"], timeout=5)
    _assert_no_secret(_shown(group_info.value))
    with pytest.raises(errors.CommandFailed) as timeout_info:
        ssh.run(ssh.LocalConnection(), ["sh", "-c", 'cat "$1" >&2; sleep 5', "sh", str(leaky)], timeout=1)
    _assert_no_secret(_shown(timeout_info.value))


@pytest.mark.parametrize(("hostvars", "expected"), [
    ({"ansible_host": "203.0.113.5", "ip": "10.1.0.1", "access_ip": "10.2.0.1"}, "10.2.0.1"),
    ({"ansible_host": "203.0.113.5", "ip": "10.1.0.1"}, "10.1.0.1"),
    ({"ansible_host": "203.0.113.5"}, "203.0.113.5"),
    ({}, "node1"),
])
def test_the_api_address_is_kubesprays_access_address_not_the_ssh_one(hostvars: dict, expected: str) -> None:
    # access_ip and ip are in every API server certificate; the SSH address is not.
    assert inventory.Host("node1", hostvars).api_address == expected
