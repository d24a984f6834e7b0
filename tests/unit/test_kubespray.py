"""runbooks_lib.kubespray: checkout detection, command lines, output parsing, runs with a fake
ansible-playbook that replays real captured output (tests/data/ansible_output)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from runbooks_lib import errors, knownhosts, kubespray, local

DATA = Path(__file__).resolve().parent.parent / "data"
OUT = DATA / "ansible_output"


def _checkout(root: Path, files: list[str], galaxy: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("---\n")
    if galaxy:
        (root / "galaxy.yml").write_text(f"---\nnamespace: kubernetes_sigs\nname: kubespray\nversion: {galaxy}\n")
    return root


V219 = ["cluster.yml", "facts.yml", "scale.yml", "remove-node.yml", "reset.yml", "upgrade-cluster.yml",
        "recover-control-plane.yml"]
V231 = ["cluster.yml", "playbooks/facts.yml", "scale.yml", "remove-node.yml", "remove_node.yml", "reset.yml",
        "upgrade-cluster.yml", "upgrade_cluster.yml", "recover-control-plane.yml"]


# --------------------------------------------------------------------------- detect


def test_detect_missing_or_wrong_directory(tmp_path: Path) -> None:
    with pytest.raises(errors.BadParameters, match="does not exist") as info:
        kubespray.detect(tmp_path / "nope")
    assert "kubespray_dir" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.BadParameters, match="no cluster.yml"):
        kubespray.detect(tmp_path / "empty")


def test_detect_v219_layout_version_from_galaxy(tmp_path: Path) -> None:
    co = kubespray.detect(_checkout(tmp_path / "ks", V219, galaxy="2.19.0"))
    assert (co.version, co.version_source, co.release) == ("v2.19.0", "galaxy.yml", (2, 19))
    assert co.playbook("facts") == Path("facts.yml")
    assert co.playbook("remove-node") == Path("remove-node.yml")
    assert co.playbook("upgrade-cluster") == Path("upgrade-cluster.yml")


def test_detect_current_layout_and_unknown_version(tmp_path: Path) -> None:
    co = kubespray.detect(_checkout(tmp_path / "ks", V231))
    assert (co.version, co.version_source, co.release) == ("unknown", "unknown", None)
    assert co.playbook("facts") == Path("playbooks/facts.yml")
    only_new = kubespray.detect(_checkout(tmp_path / "ks2", ["cluster.yml", "remove_node.yml", "upgrade_cluster.yml"]))
    assert only_new.playbook("remove-node") == Path("remove_node.yml")
    assert only_new.playbook("upgrade-cluster") == Path("upgrade_cluster.yml")
    with pytest.raises(errors.PreconditionFailed, match="has no playbooks/facts.yml or facts.yml"):
        only_new.playbook("facts")


def test_detect_version_from_git_describe(tmp_path: Path) -> None:
    root = _checkout(tmp_path / "ks", V231, galaxy="2.30.0")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    local.run([*git, "init", "-q"], timeout=30)
    local.run([*git, "add", "."], timeout=30)
    local.run([*git, "commit", "-q", "-m", "x"], timeout=30)
    local.run([*git, "tag", "v2.31.0"], timeout=30)
    co = kubespray.detect(root)
    assert (co.version, co.version_source, co.release) == ("v2.31.0", "git", (2, 31))


def test_detect_git_without_tags_falls_back_to_files(tmp_path: Path) -> None:
    root = _checkout(tmp_path / "ks", V219, galaxy="2.19.1")
    local.run(["git", "-C", str(root), "init", "-q"], timeout=30)
    co = kubespray.detect(root)
    assert (co.version, co.version_source) == ("v2.19.1", "galaxy.yml")


# --------------------------------------------------------------------------- command lines


@pytest.fixture
def checkout(tmp_path: Path) -> kubespray.Checkout:
    return kubespray.detect(_checkout(tmp_path / "kubespray", V231, galaxy="2.31.0"))


def _kh(inventory_file: Path) -> Path:
    """The (empty) known_hosts file beside the test inventory."""
    return inventory_file.parent / "known_hosts"


@pytest.fixture
def inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "inv" / "hosts.yaml"
    path.parent.mkdir()
    path.write_text("all: {}\n")
    (path.parent / "known_hosts").write_text("")
    return path


def test_command_scale_with_limit(checkout: kubespray.Checkout, inventory_file: Path) -> None:
    cmd = kubespray.command(checkout, "scale", inventory=inventory_file, known_hosts=_kh(inventory_file),
                            ansible_playbook="/venv/bin/ansible-playbook",
                            limit="node6")
    assert cmd.argv == ("/venv/bin/ansible-playbook", "-i", str(inventory_file), "-b", "scale.yml", "--limit=node6")
    assert cmd.cwd == checkout.path and cmd.playbook == "scale.yml"
    assert str(cmd).startswith(f"cd {checkout.path} && ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_SSH_ARGS=")
    assert " /venv/bin/ansible-playbook -i " in str(cmd)


def test_command_remove_node_adds_no_prompt_and_encodes_types(checkout: kubespray.Checkout,
                                                              inventory_file: Path) -> None:
    cmd = kubespray.command(checkout, "remove-node", inventory=inventory_file, known_hosts=_kh(inventory_file),
                            extra_vars={"node": "node4,node5", "reset_nodes": False, "allow_ungraceful_removal": True,
                                        "drain_timeout": "60s", "delete_node_retries": 3, "msg": "two words"})
    argv = list(cmd.argv)
    assert argv[4] == "remove-node.yml"
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert pairs == ["skip_confirmation=yes", "node=node4,node5", '{"reset_nodes":false}',
                     '{"allow_ungraceful_removal":true}', "drain_timeout=60s", '{"delete_node_retries":3}',
                     '{"msg":"two words"}']
    assert json.loads(pairs[5]) == {"delete_node_retries": 3}


def test_command_reset_and_facts_and_limits(checkout: kubespray.Checkout, inventory_file: Path) -> None:
    reset = kubespray.command(checkout, "reset", inventory=inventory_file, known_hosts=_kh(inventory_file))
    assert reset.argv[-2:] == ("-e", "reset_confirmation=yes")
    facts = kubespray.command(checkout, "facts", inventory=inventory_file, known_hosts=_kh(inventory_file))
    assert facts.playbook == "playbooks/facts.yml" and "--limit" not in " ".join(facts.argv)
    cluster = kubespray.command(checkout, "cluster", inventory=inventory_file, known_hosts=_kh(inventory_file),
                                limit=["etcd", "kube_control_plane"],
                                extra_vars={"etcd_retries": 10}, become=False, verbosity=2)
    assert "-b" not in cluster.argv and "--limit=etcd,kube_control_plane" in cluster.argv
    assert cluster.argv[-1] == "-vv"
    # the confirmation override can be given explicitly and wins
    explicit = kubespray.command(checkout, "remove-node", inventory=inventory_file, known_hosts=_kh(inventory_file),
                                 extra_vars={"skip_confirmation": "no"})
    assert "skip_confirmation=no" in explicit.argv and "skip_confirmation=yes" not in explicit.argv


def test_command_relative_inventory_is_made_absolute(checkout: kubespray.Checkout, inventory_file: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(inventory_file.parent.parent)
    cmd = kubespray.command(checkout, "cluster", inventory="inv/hosts.yaml", known_hosts=_kh(inventory_file))
    assert cmd.argv[2] == str(inventory_file)


def test_command_errors(checkout: kubespray.Checkout, inventory_file: Path, tmp_path: Path) -> None:
    with pytest.raises(errors.BadParameters, match="does not exist"):
        kubespray.command(checkout, "cluster", inventory=tmp_path / "missing.ini", known_hosts=_kh(inventory_file))
    with pytest.raises(errors.PreconditionFailed, match="no recover_control_plane"):
        kubespray.command(checkout, "recover_control_plane", inventory=inventory_file, known_hosts=_kh(inventory_file))
    with pytest.raises(errors.BadParameters, match="not a valid Ansible variable"):
        kubespray.command(checkout, "cluster", inventory=inventory_file, known_hosts=_kh(inventory_file),
                          extra_vars={"bad-name": "x"})


# --------------------------------------------------------------------------- parsing real output


def test_recap_of_a_failed_run_with_unreachable_host() -> None:
    recap = kubespray.parse_recap((OUT / "failed_unreachable.txt").read_text())
    assert list(recap) == ["node1", "node2", "node3"]
    assert recap["node1"] == kubespray.HostStats("node1", ok=4, changed=0, unreachable=0, failed=0, skipped=0,
                                                 rescued=0, ignored=1)
    assert recap["node2"].unreachable == 1 and not recap["node2"].good
    assert recap["node3"].failed == 1 and recap["node3"].ok == 3


def test_recap_colours_are_ignored() -> None:
    colour = (OUT / "failed_unreachable.color.txt").read_text()
    assert "\x1b[" in colour
    assert kubespray.parse_recap(colour) == kubespray.parse_recap((OUT / "failed_unreachable.txt").read_text())
    assert kubespray.parse_failures(colour) == kubespray.parse_failures((OUT / "failed_unreachable.txt").read_text())


def test_recap_of_a_successful_run() -> None:
    recap = kubespray.parse_recap((OUT / "ok.txt").read_text())
    assert {h: (s.ok, s.changed, s.skipped) for h, s in recap.items()} == {
        "node1": (4, 1, 1), "node2": (4, 1, 1), "node3": (2, 1, 0)}
    assert kubespray.parse_failures((OUT / "ok.txt").read_text()) == []  # ignored failures are not failures
    assert kubespray.parse_recap("no recap here") == {}


def test_failures_name_task_host_and_message() -> None:
    failures = kubespray.parse_failures((OUT / "failed_unreachable.txt").read_text())
    assert [(f.task, f.host, f.status) for f in failures] == [
        ("etcd : Configure | Probe that is allowed to fail", "node2", "unreachable"),
        ("etcd : Configure | Check if etcd cluster is healthy", "node3", "failed"),
    ]
    assert "Connection refused" in failures[0].message
    assert failures[1].message == "non-zero return code | stderr: cluster is unhealthy: context deadline exceeded"


def test_failures_in_older_ansible_format_with_items_and_delegation() -> None:
    text = """\
TASK [remove-node/remove-etcd-node : Remove etcd member from cluster] *********
fatal: [node1 -> node2]: FAILED! => {"changed": true, "cmd": "etcdctl member remove x", "msg": "non-zero return code", "rc": 1, "stderr": "Error: etcdserver: member not found", "password": "hunter2"}

TASK [kubernetes/preinstall : Stop if etcd group is not odd] ******************
failed: [node3] (item=etcd) => {"ansible_loop_var": "item", "changed": false, "item": "etcd", "msg": "etcd group has an even number"}
fatal: [node4]: UNREACHABLE! => {"changed": false, "msg": "Failed to connect to the host via ssh: ssh: connect to host 10.0.0.4 port 22: Connection timed out", "unreachable": true}
"""
    failures = kubespray.parse_failures(text)
    assert [(f.task, f.host, f.status) for f in failures] == [
        ("remove-node/remove-etcd-node : Remove etcd member from cluster", "node1", "failed"),
        ("kubernetes/preinstall : Stop if etcd group is not odd", "node3", "failed"),
        ("kubernetes/preinstall : Stop if etcd group is not odd", "node4", "unreachable"),
    ]
    assert "member not found" in failures[0].message
    assert failures[1].message == "etcd group has an even number"


# --------------------------------------------------------------------------- running (fake ansible-playbook)


def _fake_ansible(tmp_path: Path, output: Path | None, rc: int, sleep: float = 0.0) -> Path:
    """An executable that records argv/cwd, prints a captured output and exits with ``rc``."""
    script = tmp_path / "fake-ansible-playbook"
    record = tmp_path / "invocation.json"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        f"json.dump({{'argv': sys.argv, 'cwd': os.getcwd(), 'env': dict(os.environ)}}, open({str(record)!r}, 'w'))\n"
        f"text = open({str(output)!r}).read() if {output is not None!r} else ''\n"
        "for line in text.splitlines():\n"
        "    print(line, flush=True)\n"
        f"    if 'TASK [' in line and {sleep!r}: time.sleep({sleep!r})\n"
        "print('[WARNING]: a warning on stderr', file=sys.stderr, flush=True)\n"
        f"sys.exit({rc})\n"
    )
    script.chmod(0o755)
    return script


def test_run_success_streams_logs_and_parses(tmp_path: Path, checkout: kubespray.Checkout,
                                             inventory_file: Path) -> None:
    fake = _fake_ansible(tmp_path, OUT / "ok.txt", 0)
    cmd = kubespray.command(checkout, "cluster", inventory=inventory_file, known_hosts=_kh(inventory_file),
                            ansible_playbook=fake)
    seen: list[str] = []
    log = tmp_path / "logs" / "cluster.log"
    run = kubespray.run(cmd, timeout=30, on_line=seen.append, log_path=log)
    assert run.ok and run.rc == 0 and not run.dry_run
    assert run.recap["node3"].changed == 1 and run.failed_tasks == ()
    assert run.cwd == checkout.path and run.log_path == log
    invocation = json.loads((tmp_path / "invocation.json").read_text())
    assert invocation["cwd"] == str(checkout.path)
    assert invocation["argv"][1:] == list(cmd.argv[1:])
    assert invocation["env"]["PYTHONUNBUFFERED"] == "1"
    assert "PLAY RECAP *********************************************************************" in seen
    assert "[WARNING]: a warning on stderr" in seen
    assert "PLAY RECAP" in log.read_text()
    with pytest.raises(AttributeError):
        run.rc = 1  # type: ignore[misc]


def test_run_failure_raises_playbook_failed_with_task_host_and_message(
        tmp_path: Path, checkout: kubespray.Checkout, inventory_file: Path) -> None:
    fake = _fake_ansible(tmp_path, OUT / "failed_unreachable.color.txt", 4)
    cmd = kubespray.command(checkout, "cluster", inventory=inventory_file, known_hosts=_kh(inventory_file),
                            ansible_playbook=fake)
    seen: list[str] = []
    with pytest.raises(errors.PlaybookFailed) as info:
        kubespray.run(cmd, timeout=30, on_line=seen.append, log_path=tmp_path / "c.log")
    message = str(info.value)
    assert "ansible-playbook cluster.yml failed (exit 4)" in message
    assert "task [etcd : Configure | Check if etcd cluster is healthy] failed on node3" in message
    assert "cluster is unhealthy: context deadline exceeded" in message
    assert "task [etcd : Configure | Probe that is allowed to fail] unreachable on node2" in message
    assert "node2 unreachable" in message and "any_errors_fatal" in message and "c.log" in message
    assert info.value.exit_code == 4 and info.value.host == "node3, node2"
    assert not any("\x1b[" in line for line in seen)  # colours stripped for display
    result = kubespray.run(cmd, timeout=30, check=False)
    assert result.rc == 4 and not result.ok
    assert result.failed_hosts == ["node3"] and result.unreachable_hosts == ["node2"]


def test_run_without_tasks_reports_ansible_errors(tmp_path: Path, checkout: kubespray.Checkout,
                                                  inventory_file: Path) -> None:
    output = tmp_path / "syntax.txt"
    output.write_text("ERROR! the role 'nonexistent' was not found in roles\n")
    fake = _fake_ansible(tmp_path, output, 1)
    with pytest.raises(errors.PlaybookFailed, match="role 'nonexistent' was not found"):
        kubespray.run(kubespray.command(checkout, "cluster", inventory=inventory_file, known_hosts=_kh(inventory_file),
                                        ansible_playbook=fake),
                      timeout=30)


def test_dry_run_returns_the_command_without_running(tmp_path: Path, checkout: kubespray.Checkout,
                                                     inventory_file: Path) -> None:
    fake = _fake_ansible(tmp_path, OUT / "ok.txt", 0)
    cmd = kubespray.command(checkout, "remove-node", inventory=inventory_file, known_hosts=_kh(inventory_file),
                            ansible_playbook=fake,
                            extra_vars={"node": "node5"})
    run = kubespray.run(cmd, timeout=30, dry_run=True)
    assert run.dry_run and run.rc is None and run.command == cmd and not run.ok
    assert not (tmp_path / "invocation.json").exists()


def test_timeout_names_playbook_and_the_task_it_was_in(tmp_path: Path, checkout: kubespray.Checkout,
                                                       inventory_file: Path) -> None:
    fake = _fake_ansible(tmp_path, OUT / "ok.txt", 0, sleep=30)
    cmd = kubespray.command(checkout, "upgrade-cluster", inventory=inventory_file, known_hosts=_kh(inventory_file),
                            ansible_playbook=fake)
    with pytest.raises(errors.WaitTimedOut) as info:
        kubespray.run(cmd, timeout=1.5)
    message = str(info.value)
    assert "ansible-playbook upgrade-cluster.yml did not finish" in message
    assert "last task shown: [bootstrap : Bootstrap | Write marker file]" in message
    result = kubespray.run(cmd, timeout=1.5, check=False)
    assert result.timed_out and not result.ok


def test_run_crash_without_error_lines_shows_the_output_tail(tmp_path: Path, checkout: kubespray.Checkout,
                                                             inventory_file: Path) -> None:
    output = tmp_path / "crash.txt"
    output.write_text("Traceback (most recent call last):\nKeyError: 'ansible_host'\n")
    fake = _fake_ansible(tmp_path, output, 250)
    with pytest.raises(errors.PlaybookFailed) as info:
        kubespray.run(kubespray.command(checkout, "scale", inventory=inventory_file, known_hosts=_kh(inventory_file),
                                        ansible_playbook=fake),
                      timeout=30)
    assert "exit 250" in str(info.value) and "KeyError: 'ansible_host'" in str(info.value)


# --------------------------------------------------------------------------- host keys

# Kubespray's ansible.cfg (v2.19 to v2.31), as the stand-in's says it.
UPSTREAM_CFG = (Path(__file__).resolve().parents[2] / "runbooks_lib" / "lab" / "kubespray" / "ansible.cfg")
UPSTREAM_SSH_ARGS = ("-o ControlMaster=auto -o ControlPersist=30m -o ConnectionAttempts=100 "
                     "-o UserKnownHostsFile=/dev/null")
KEY_OLD = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
KEY_NEW = "AAAAC3NzaC1lZDI1NTE5AAAAIHvV2sVQ5xm9zkYw0Hn8QwE0cqg4x2s1wz7yK9Zc6m3a"


def _upstream_checkout(root: Path) -> kubespray.Checkout:
    _checkout(root, V231, galaxy="2.31.0")
    cfg = UPSTREAM_CFG.read_text()
    lines = [f"ssh_args = {UPSTREAM_SSH_ARGS}" if line.startswith("ssh_args") else line for line in cfg.splitlines()]
    (root / "ansible.cfg").write_text("\n".join(lines) + "\n")
    return kubespray.detect(root)


def test_every_command_verifies_host_keys_whatever_ansible_cfg_says(tmp_path: Path, inventory_file: Path) -> None:
    checkout = _upstream_checkout(tmp_path / "upstream")
    assert kubespray.checkout_ssh_args(checkout.path) == UPSTREAM_SSH_ARGS
    known = _kh(inventory_file)
    cmd = kubespray.command(checkout, "cluster", inventory=inventory_file, known_hosts=known)
    assert cmd.env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    args = cmd.env["ANSIBLE_SSH_ARGS"].split()
    # Kubespray's connection options are kept, its host-key options replaced.
    assert args[:6] == ["-o", "ControlMaster=auto", "-o", "ControlPersist=30m", "-o", "ConnectionAttempts=100"]
    assert "UserKnownHostsFile=/dev/null" not in args
    assert f"UserKnownHostsFile={known.resolve()}" in args and "StrictHostKeyChecking=yes" in args
    assert "GlobalKnownHostsFile=/dev/null" in args
    assert "ANSIBLE_SSH_ARGS=" in str(cmd)  # the printed command is the one to run by hand
    with pytest.raises(errors.BadParameters, match="known_hosts file .* does not exist"):
        kubespray.command(checkout, "cluster", inventory=inventory_file, known_hosts=tmp_path / "nope")


def test_ssh_args_replace_every_host_key_option_in_either_spelling() -> None:
    args = knownhosts.ssh_args("-C -oStrictHostKeyChecking=accept-new -o UserKnownHostsFile=/dev/null "
                               "-o GlobalKnownHostsFile=/etc/ssh/x -o ControlPersist=60s", "/kh/known_hosts")
    words = args.split()
    assert words[:4] == ["-C", "-o", "ControlPersist=60s", "-o"]
    assert "accept-new" not in args and "/etc/ssh/x" not in args
    assert words.count("-o") == 7  # ControlPersist + the six forced host-key options
    assert words[-4:] == ["-o", "KnownHostsCommand=none", "-o", "VerifyHostKeyDNS=no"]
    assert knownhosts.ssh_args(None, "/kh/known_hosts").startswith("-C -o ControlMaster=auto -o ControlPersist=60s")
    with pytest.raises(errors.BadParameters, match="whitespace"):
        knownhosts.ssh_args(None, "/a b/known_hosts")


def test_the_run_environment_cannot_switch_checking_off(tmp_path: Path, checkout: kubespray.Checkout,
                                                        inventory_file: Path) -> None:
    fake = _fake_ansible(tmp_path, OUT / "ok.txt", 0)
    cmd = kubespray.command(checkout, "cluster", inventory=inventory_file, known_hosts=_kh(inventory_file),
                            ansible_playbook=fake)
    # Refused before anything starts (runbooks_lib.inventory.ssh_pins); cmd.env would also win over them.
    with pytest.raises(errors.PreconditionFailed, match="ANSIBLE_HOST_KEY_CHECKING .*\n.*ANSIBLE_SSH_ARGS"):
        kubespray.run(cmd, timeout=30, env={"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_SSH_ARGS": "-o X=y"})
    assert not (tmp_path / "invocation.json").exists()
    kubespray.run(cmd, timeout=30, env={"ANSIBLE_TIMEOUT": "5"})
    env = json.loads((tmp_path / "invocation.json").read_text())["env"]
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True" and env["ANSIBLE_TIMEOUT"] == "5"
    assert env["ANSIBLE_SSH_ARGS"] == cmd.env["ANSIBLE_SSH_ARGS"]


def _unreachable(host: str, ssh_output: str) -> str:
    body = {"changed": False, "msg": "Failed to connect to the host via ssh: " + ssh_output, "unreachable": True}
    return f"fatal: [{host}]: UNREACHABLE! => {json.dumps(body)}"


CHANGED_KEY = (
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
    "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n"
    "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\r\n"
    "It is also possible that a host key has just been changed.\r\n"
    "The fingerprint for the ED25519 key sent by the remote host is\r\n"
    "SHA256:Jf4cbmHn1vAgbnd0pZ6Dxx4BG4n+0Ooq2wi0p0nnW8s.\r\n"
    "Please contact your system administrator.\r\n"
    "Add correct host key in /lab/ssh/known_hosts to get rid of this message.\r\n"
    "Offending ED25519 key in /lab/ssh/known_hosts:5\r\n"
    "  remove with:\r\n"
    "  ssh-keygen -f '/lab/ssh/known_hosts' -R '10.0.0.15'\r\n"
    "Host key for 10.0.0.15 has changed and you have requested strict checking.\r\n"
    "Host key verification failed.\r\n"
)
UNKNOWN_KEY = ("No ED25519 host key is known for 10.0.0.16 and you have requested strict checking.\r\n"
               "Host key verification failed.\r\n")


def test_host_key_failures_are_read_from_ansible_output() -> None:
    output = "\n".join([
        "TASK [Gathering Facts] *********************************************************",
        _unreachable("node5", CHANGED_KEY),
        _unreachable("node6", UNKNOWN_KEY),
        _unreachable("node7", "ssh: connect to host 10.0.0.17 port 22: No route to host"),
    ])
    changed, unknown = knownhosts.failures_in_ansible_output(output)
    assert changed == knownhosts.HostKeyFailure("node5", "10.0.0.15", True,
                                                "SHA256:Jf4cbmHn1vAgbnd0pZ6Dxx4BG4n+0Ooq2wi0p0nnW8s",
                                                "/lab/ssh/known_hosts")
    assert unknown == knownhosts.HostKeyFailure("node6", "10.0.0.16", False, None, None)
    assert knownhosts.parse_failure("node7", "Connection timed out during banner exchange") is None


def test_pinned_fingerprints_plain_and_hashed(tmp_path: Path) -> None:
    import base64
    import hashlib
    import hmac
    salt = b"0123456789abcdefghij"
    hashed = "|1|{}|{}".format(base64.b64encode(salt).decode(),
                               base64.b64encode(hmac.new(salt, b"10.0.0.16", "sha1").digest()).decode())
    known = tmp_path / "known_hosts"
    known.write_text(f"10.0.0.15,node5 ssh-ed25519 {KEY_OLD}\n# comment\n{hashed} ssh-ed25519 {KEY_NEW}\n"
                     f"10.0.0.155 ssh-ed25519 {KEY_NEW}\n")
    (pin,) = knownhosts.pinned(known, "10.0.0.15")
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(KEY_OLD)).digest()).decode().rstrip("=")
    assert (pin.key_type, pin.fingerprint, pin.line) == ("ssh-ed25519", expected, 1)
    assert [p.line for p in knownhosts.pinned(known, "10.0.0.16")] == [3]
    assert knownhosts.pinned(known, "10.0.0.1") == () and knownhosts.pinned(tmp_path / "none", "10.0.0.15") == ()


def test_changed_host_key_fails_the_run_with_both_fingerprints_and_the_fix(
        tmp_path: Path, checkout: kubespray.Checkout, inventory_file: Path) -> None:
    known = _kh(inventory_file)
    known.write_text(f"10.0.0.15,node5 ssh-ed25519 {KEY_OLD}\n")
    output = tmp_path / "changed.txt"
    output.write_text("\n".join([
        "PLAY [Gather facts] ************************************************************",
        "TASK [Gathering Facts] *********************************************************",
        _unreachable("node5", CHANGED_KEY),
        "PLAY RECAP *********************************************************************",
        "node5                      : ok=0    changed=0    unreachable=1    failed=0    skipped=0",
    ]) + "\n")
    fake = _fake_ansible(tmp_path, output, 4)
    cmd = kubespray.command(checkout, "facts", inventory=inventory_file, known_hosts=known, ansible_playbook=fake)
    with pytest.raises(errors.HostKeyError) as info:
        kubespray.run(cmd, timeout=30)
    text = str(info.value)
    assert info.value.host == "node5" and "node5 (10.0.0.15)" in text
    assert knownhosts.pinned(known, "10.0.0.15")[0].fingerprint in text  # pinned
    assert "SHA256:Jf4cbmHn1vAgbnd0pZ6Dxx4BG4n+0Ooq2wi0p0nnW8s" in text  # presented
    assert f"ssh-keygen -R 10.0.0.15 -f {known.resolve()}" in text and "console" in text
    run = kubespray.run(cmd, timeout=30, check=False)
    assert [f.host for f in run.host_key_failures] == ["node5"] and run.unreachable_hosts == ["node5"]
