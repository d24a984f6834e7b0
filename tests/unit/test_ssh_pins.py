"""runbooks_lib.inventory.ssh_pins: inventory settings and ansible_env keys that would undo the pinned host
keys are found (file, host/group and key named) and make kubespray.run refuse before anything starts; the
ssh options every run forces."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from runbooks_lib import errors, knownhosts, kubespray, local
from runbooks_lib.inventory import ssh_pins
from runbooks_lib.lab import cluster

DATA = Path(__file__).resolve().parent.parent / "data"
LAB_SAMPLE_VARS = Path(cluster.KUBESPRAY_DIR) / "inventory" / "sample" / "group_vars"

HOSTS_YAML = """\
all:
  hosts:
    node1: {{ansible_host: 10.0.0.11, ip: 10.0.0.11{node1}}}
    node2: {{ansible_host: 10.0.0.12, ip: 10.0.0.12}}
  vars:
    ansible_user: ubuntu{all_vars}
  children:
    kube_control_plane: {{hosts: {{node1: }}}}
    kube_node:
      hosts: {{node2: }}{node_vars}
    etcd: {{hosts: {{node1: }}}}
    k8s_cluster: {{children: {{kube_control_plane: , kube_node: }}}}
"""
INVENTORY_INI = """\
[all]
node1 ansible_host=10.0.0.11 ip=10.0.0.11{node1}
node2 ansible_host=10.0.0.12 ip=10.0.0.12

[kube_control_plane]
node1

[etcd]
node1

[kube_node]
node2

[k8s_cluster:children]
kube_control_plane
kube_node

[all:vars]
ansible_user=ubuntu
{all_vars}
"""

# A normal Kubespray group_vars/k8s_cluster file (keys as in upstream's sample).
KUBESPRAY_VARS = """\
---
kube_version: v1.31.4
kube_network_plugin: calico
kube_service_addresses: 10.233.0.0/18
kube_pods_subnet: 10.233.64.0/18
kube_network_node_prefix: 24
kube_apiserver_port: 6443
kube_proxy_mode: ipvs
cluster_name: cluster.local
dns_mode: coredns
enable_nodelocaldns: true
nodelocaldns_ip: 169.254.25.10
container_manager: containerd
kubernetes_audit: false
kubeconfig_localhost: true
supplementary_addresses_in_ssl_keys: [10.0.0.10, lb.example.com]
upstream_dns_servers: [1.1.1.1]
ansible_user: ubuntu
ansible_become: true
ansible_python_interpreter: /usr/bin/python3
ansible_ssh_private_key_file: ~/.ssh/id_ed25519
ansible_ssh_common_args: "-o ProxyJump=ubuntu@bastion -o ServerAliveInterval=30 -o HostKeyAlgorithms=ssh-ed25519"
ansible_connection: ssh
ansible_host_key_checking: true
secret_token: !vault |
  $ANSIBLE_VAULT;1.1;AES256
  6231
loadbalancer_apiserver: {address: 10.0.0.10, port: 6443}
"""


def _yaml_inventory(root: Path, node1: str = "", all_vars: str = "", node_vars: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "hosts.yaml"
    path.write_text(HOSTS_YAML.format(node1=node1, all_vars=all_vars, node_vars=node_vars))
    return path


def _ini_inventory(root: Path, node1: str = "", all_vars: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "inventory.ini"
    path.write_text(INVENTORY_INI.format(node1=node1, all_vars=all_vars))
    return path


def _vars_file(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --------------------------------------------------------------------------- where a setting can sit

# (id, writes the inventory under root and returns its path, the file named, the host/group named, the key)
PLACES = [
    ("yaml-host", lambda r: _yaml_inventory(r, node1=", ansible_ssh_args: '-o StrictHostKeyChecking=no'"),
     "hosts.yaml", "host node1", "ansible_ssh_args"),
    ("yaml-all-vars", lambda r: _yaml_inventory(r, all_vars="\n    ansible_ssh_args: -C"),
     "hosts.yaml", "group all", "ansible_ssh_args"),
    ("yaml-group-vars", lambda r: _yaml_inventory(
        r, node_vars="\n      vars: {ansible_ssh_args: '-o UserKnownHostsFile=/dev/null'}"),
     "hosts.yaml", "group kube_node", "ansible_ssh_args"),
    ("ini-host", lambda r: _ini_inventory(r, node1=' ansible_ssh_args="-o StrictHostKeyChecking=no"'),
     "inventory.ini", "host node1", "ansible_ssh_args"),
    ("ini-all-vars", lambda r: _ini_inventory(r, all_vars="ansible_ssh_args=-C -o ControlMaster=auto"),
     "inventory.ini", "group all", "ansible_ssh_args"),
    ("group_vars/all/all.yml", lambda r: (_vars_file(r, "group_vars/all/all.yml", "ansible_ssh_args: -C\n"),
                                          _yaml_inventory(r))[1],
     "group_vars/all/all.yml", "group all", "ansible_ssh_args"),
    ("group_vars/k8s_cluster.yml", lambda r: (_vars_file(r, "group_vars/k8s_cluster.yml", "ansible_ssh_args: -C\n"),
                                              _ini_inventory(r))[1],
     "group_vars/k8s_cluster.yml", "group k8s_cluster", "ansible_ssh_args"),
    ("group_vars/all (no suffix)", lambda r: (_vars_file(r, "group_vars/all", "ansible_ssh_args: -C\n"),
                                              _ini_inventory(r))[1],
     "group_vars/all", "group all", "ansible_ssh_args"),
    ("group_vars nested dir", lambda r: (_vars_file(r, "group_vars/etcd/sub/ssh.yaml", '{"ansible_ssh_args": "-C"}'),
                                         _yaml_inventory(r))[1],
     "group_vars/etcd/sub/ssh.yaml", "group etcd", "ansible_ssh_args"),
    ("host_vars/node1.yml", lambda r: (_vars_file(r, "host_vars/node1.yml", "ansible_ssh_args: -C\n"),
                                       _yaml_inventory(r))[1],
     "host_vars/node1.yml", "host node1", "ansible_ssh_args"),
    ("host_vars/node2/ssh.json", lambda r: (_vars_file(r, "host_vars/node2/ssh.json", '{"ansible_ssh_args": "-C"}'),
                                            _ini_inventory(r))[1],
     "host_vars/node2/ssh.json", "host node2", "ansible_ssh_args"),
]


@pytest.mark.parametrize(("write", "file", "where", "key"), [p[1:] for p in PLACES], ids=[p[0] for p in PLACES])
def test_ansible_ssh_args_is_refused_wherever_it_is_set(tmp_path: Path, write, file: str, where: str,
                                                        key: str) -> None:
    inventory = write(tmp_path / "inv")
    found = ssh_pins.problems(inventory)
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'inv' / file}: {where} sets {key}, which replaces the pinned "
                               "host-key options (remove it;")


# --------------------------------------------------------------------------- which settings

# (variable, value as YAML, words the problem must contain)
HOSTILE_VARS = [
    ("ansible_ssh_common_args", "'-o StrictHostKeyChecking=no'", "StrictHostKeyChecking=no"),
    ("ansible_ssh_common_args", "'-o UserKnownHostsFile=/dev/null'", "UserKnownHostsFile=/dev/null"),
    ("ansible_ssh_common_args", "'-o KnownHostsCommand=\"/bin/echo %H\"'", "KnownHostsCommand=/bin/echo %H"),
    ("ansible_ssh_common_args", "'-o VerifyHostKeyDNS=yes'", "VerifyHostKeyDNS=yes"),
    ("ansible_ssh_common_args", "'-o HostKeyAlias=x'", "HostKeyAlias=x"),
    ("ansible_ssh_common_args", "'-o ProxyJump=bastion -oStrictHostKeyChecking=accept-new'",
     "StrictHostKeyChecking=accept-new"),
    ("ansible_ssh_common_args", "'-o \"stricthostkeychecking no\"'", "stricthostkeychecking=no"),
    ("ansible_ssh_common_args", "'-o StrictHostKeyChecking={{ strict }}'", "StrictHostKeyChecking={{"),
    ("ansible_ssh_common_args", "'-o GlobalKnownHostsFile=/etc/ssh/ssh_known_hosts'", "GlobalKnownHostsFile="),
    ("ansible_ssh_common_args", "'-o CheckHostIP=yes -o UpdateHostKeys=yes'", "CheckHostIP=yes, UpdateHostKeys=yes"),
    ("ansible_ssh_extra_args", "'-o StrictHostKeyChecking=no'", "StrictHostKeyChecking=no"),
    ("ansible_ssh_extra_args", "'-o UserKnownHostsFile=/dev/null'", "UserKnownHostsFile=/dev/null"),
    ("ansible_ssh_extra_args", "'-o KnownHostsCommand=/usr/local/bin/keys'", "KnownHostsCommand="),
    ("ansible_ssh_extra_args", "'-o VerifyHostKeyDNS=ask'", "VerifyHostKeyDNS=ask"),
    ("ansible_ssh_extra_args", "'-o HostKeyAlias=node2'", "HostKeyAlias=node2"),
    ("ansible_sftp_extra_args", "'-o StrictHostKeyChecking=no'", "StrictHostKeyChecking=no"),
    ("ansible_host_key_checking", "false", "turns host-key checking off"),
    ("ansible_host_key_checking", "'False'", "turns host-key checking off"),
    ("ansible_ssh_host_key_checking", "no", "turns host-key checking off"),
    ("ansible_connection", "paramiko", "'paramiko': only OpenSSH"),
    ("ansible_connection", "community.general.lxd", "'community.general.lxd': only OpenSSH"),
    ("ansible_connection", "'{{ conn }}'", "only OpenSSH"),
    ("ansible_ssh_executable", "/tmp/my-ssh", "runs instead of ssh"),
]


@pytest.mark.parametrize(("key", "value", "words"), HOSTILE_VARS,
                         ids=[f"{k}={v}" for k, v, _ in HOSTILE_VARS])
@pytest.mark.parametrize("place", ["host", "group_vars/all/all.yml", "host_vars/node1.yml"])
def test_settings_that_undo_the_pins_are_refused(tmp_path: Path, key: str, value: str, words: str,
                                                 place: str) -> None:
    root = tmp_path / "inv"
    if place == "host":
        inventory, file, where = _yaml_inventory(root, node1=f", {key}: {value}"), "hosts.yaml", "host node1"
    else:
        _vars_file(root, place, f"ansible_user: ubuntu\n{key}: {value}\nkube_version: v1.31.4\n")
        inventory, file = _yaml_inventory(root), place
        where = {"group_vars/all/all.yml": "group all", "host_vars/node1.yml": "host node1"}[place]
    found = ssh_pins.problems(inventory)
    assert len(found) == 1, found
    assert found[0].startswith(f"{root / file}: {where} sets {key} "), found
    assert words in found[0] and "remove" in found[0]


@pytest.mark.parametrize(("line", "words"), [
    (' ansible_ssh_common_args="-o StrictHostKeyChecking=no"', "StrictHostKeyChecking=no"),
    (" ansible_ssh_extra_args='-o UserKnownHostsFile=/dev/null'", "UserKnownHostsFile=/dev/null"),
    (" ansible_host_key_checking=False", "turns host-key checking off"),
    (" ansible_connection=paramiko", "only OpenSSH"),
    (" ansible_connection=docker", "only OpenSSH"),
])
def test_ini_host_lines_are_checked_too(tmp_path: Path, line: str, words: str) -> None:
    inventory = _ini_inventory(tmp_path / "inv", node1=line)
    found = ssh_pins.problems(inventory)
    assert len(found) == 1 and found[0].startswith(f"{inventory}: host node1 sets ") and words in found[0], found


@pytest.mark.parametrize("key", ["ANSIBLE_SSH_EXECUTABLE", "ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_SSH_ARGS",
                                 "ANSIBLE_SSH_COMMON_ARGS", "ANSIBLE_SSH_EXTRA_ARGS",
                                 "ANSIBLE_PARAMIKO_HOST_KEY_AUTO_ADD", "ANSIBLE_TRANSPORT", "ANSIBLE_CONFIG"])
def test_ansible_env_keys_that_undo_the_pins_are_refused(tmp_path: Path, key: str) -> None:
    inventory = _yaml_inventory(tmp_path / "inv")
    found = ssh_pins.problems(inventory, {"ANSIBLE_TIMEOUT": "5", key: "/tmp/x"})
    assert len(found) == 1 and found[0].startswith(f"ansible_env: {key} ") and f"remove {key}" in found[0], found


def test_files_that_cannot_be_read_are_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    _vars_file(root, "group_vars/all/vault.yml", "$ANSIBLE_VAULT;1.1;AES256\n6231\n")
    _vars_file(root, "group_vars/kube_node.yml", "a: [unclosed\n")
    found = ssh_pins.problems(_yaml_inventory(root))
    assert len(found) == 2
    assert found[0].startswith(f"{root / 'group_vars/all/vault.yml'}: group all: vault-encrypted")
    assert found[1].startswith(f"{root / 'group_vars/kube_node.yml'}: group kube_node: not valid YAML")


def test_every_problem_is_listed(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    _vars_file(root, "group_vars/all/all.yml", "ansible_host_key_checking: false\nansible_connection: paramiko\n")
    inventory = _ini_inventory(root, node1=" ansible_ssh_args=-C",
                               all_vars="ansible_ssh_extra_args='-o HostKeyAlias=a'")
    found = ssh_pins.problems(inventory, {"ANSIBLE_SSH_ARGS": "-C"})
    assert len(found) == 5, found


# --------------------------------------------------------------------------- what stays allowed

BENIGN_VARS = [
    "ansible_ssh_common_args: '-o ProxyJump=bastion'",
    "ansible_ssh_common_args: '-o ServerAliveInterval=30'",
    "ansible_ssh_extra_args: '-o HostKeyAlgorithms=ssh-ed25519 -o ConnectTimeout=5'",
    "ansible_ssh_common_args: '-o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o VerifyHostKeyDNS=no'",
    "ansible_ssh_common_args: '-o KnownHostsCommand=none -o CheckHostIP=no -o GlobalKnownHostsFile=/dev/null'",
    "ansible_connection: ssh",
    "ansible_user: ubuntu",
    "ansible_become: true",
    "ansible_host_key_checking: true",
    "ansible_port: 2222",
]


@pytest.mark.parametrize("line", BENIGN_VARS)
def test_ordinary_connection_settings_are_accepted(tmp_path: Path, line: str) -> None:
    root = tmp_path / "inv"
    key, _, value = line.partition(": ")
    _vars_file(root, "group_vars/all/all.yml", line + "\n")
    _vars_file(root, "host_vars/node2.yml", line + "\n")
    assert ssh_pins.problems(_yaml_inventory(root, node1=f", {key}: {value}")) == []


def test_a_normal_kubespray_inventory_and_environment_are_accepted(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    shutil.copytree(LAB_SAMPLE_VARS, root / "group_vars")
    _vars_file(root, "group_vars/k8s_cluster/k8s-cluster.yml", KUBESPRAY_VARS)
    _vars_file(root, "group_vars/all/notes.txt", "ansible_ssh_args: not read by Ansible (suffix)\n")
    _vars_file(root, "group_vars/all/all.yml~", "ansible_ssh_args: a backup Ansible skips\n")
    _vars_file(root, "host_vars/.node1.yml", "ansible_ssh_args: hidden\n")
    shutil.copy(DATA / "inventory.current.ini", root / "inventory.ini")
    shutil.copy(DATA / "hosts.commented.yaml", root / "hosts.yaml")
    env = {"ANSIBLE_TIMEOUT": "5", "ANSIBLE_CACHE_PLUGIN_CONNECTION": "/tmp/facts",
           **cluster.quick_unreachable_env(), **cluster.playbook_env()}
    trusted = (env["ANSIBLE_SSH_EXECUTABLE"],)  # the lab vouches for its wrapper; the product trusts plain ssh only
    for inventory in ("inventory.ini", "hosts.yaml"):
        assert ssh_pins.problems(root / inventory, env, trusted_ssh=trusted) == []
    assert ssh_pins.problems(root, env, trusted_ssh=trusted) == []  # -i DIR: both files
    assert "ANSIBLE_SSH_EXECUTABLE" in " ".join(ssh_pins.problems(root, env))


def test_the_labs_inventory_may_name_the_pinned_known_hosts_only(tmp_path: Path) -> None:
    description = {"ssh_user": "root", "ssh_key": "/lab/ssh/id_ed25519", "known_hosts": str(tmp_path / "kh"),
                   "machines": [{"name": f"node{i}", "ip": f"10.213.7.{10 + i}", "state": "running"}
                                for i in range(1, 6)]}
    hosts = cluster.write_inventory(tmp_path / "lab", description)
    assert ssh_pins.problems(hosts, cluster.playbook_env(), known_hosts=tmp_path / "kh") == []
    other = ssh_pins.problems(hosts, known_hosts=tmp_path / "other")
    assert len(other) == 1 and f"UserKnownHostsFile={tmp_path / 'kh'}" in other[0]
    assert other[0].startswith(f"{tmp_path / 'lab' / 'group_vars/all/lab.yml'}: group all sets ansible_ssh_common_args")


# --------------------------------------------------------------------------- kubespray refuses to run


def _run_setup(tmp_path: Path, node1: str) -> tuple[kubespray.PlaybookCommand, Path]:
    checkout_dir = tmp_path / "kubespray"
    for name in ("cluster.yml", "playbooks/facts.yml"):
        (checkout_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout_dir / name).write_text("---\n")
    marker = tmp_path / "ran"
    fake = tmp_path / "fake-ansible-playbook"
    fake.write_text(f"#!{sys.executable}\nopen({str(marker)!r}, 'w').close()\n")
    fake.chmod(0o755)
    inventory = _yaml_inventory(tmp_path / "inv", node1=node1)
    known = tmp_path / "inv" / "known_hosts"
    known.write_text("")
    cmd = kubespray.command(kubespray.detect(checkout_dir), "cluster", inventory=inventory, known_hosts=known,
                            ansible_playbook=fake)
    return cmd, marker


@pytest.mark.parametrize("dry_run", [False, True])
def test_run_refuses_a_hostile_inventory_without_starting_the_playbook(tmp_path: Path, dry_run: bool) -> None:
    cmd, marker = _run_setup(tmp_path, ", ansible_ssh_args: '-o StrictHostKeyChecking=no'")
    with pytest.raises(errors.PreconditionFailed) as info:
        kubespray.run(cmd, timeout=30, dry_run=dry_run)
    message = str(info.value)
    assert "would undo the pinned SSH host keys; nothing was run" in message
    assert f"{tmp_path / 'inv' / 'hosts.yaml'}: host node1 sets ansible_ssh_args" in message
    assert "next step: remove each setting named above" in message
    assert not marker.exists()


def test_run_refuses_a_hostile_ansible_env_and_runs_a_clean_one(tmp_path: Path) -> None:
    cmd, marker = _run_setup(tmp_path, "")
    with pytest.raises(errors.PreconditionFailed, match="ansible_env: ANSIBLE_SSH_EXECUTABLE"):
        kubespray.run(cmd, timeout=30, env={"ANSIBLE_SSH_EXECUTABLE": str(tmp_path / "my-ssh")})
    assert not marker.exists()
    run = kubespray.run(cmd, timeout=30, env={"ANSIBLE_TIMEOUT": "5"})
    assert run.ok and marker.exists()


def test_check_ssh_pins_for_preflight(tmp_path: Path) -> None:
    inventory = _yaml_inventory(tmp_path / "inv", node1=", ansible_connection: paramiko")
    with pytest.raises(errors.PreconditionFailed, match="host node1 sets ansible_connection to 'paramiko'"):
        kubespray.check_ssh_pins(inventory, {})
    with pytest.raises(errors.PreconditionFailed, match="ANSIBLE_HOST_KEY_CHECKING"):
        kubespray.check_ssh_pins(_yaml_inventory(tmp_path / "ok"), {"ANSIBLE_HOST_KEY_CHECKING": "False"})
    kubespray.check_ssh_pins(tmp_path / "ok" / "hosts.yaml", {"ANSIBLE_TIMEOUT": "5"})


# --------------------------------------------------------------------------- the forced ssh options


def test_ssh_args_force_no_known_hosts_command_and_no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knownhosts, "knownhostscommand_supported", lambda ssh="ssh": True)
    args = knownhosts.ssh_args("-o ControlPersist=30m -o KnownHostsCommand=/bin/keys -o VerifyHostKeyDNS=yes "
                               "-o HostKeyAlias=x -oCheckHostIP=yes", "/kh/known_hosts")
    assert args.split() == ["-o", "ControlPersist=30m", "-o", "UserKnownHostsFile=/kh/known_hosts",
                            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                            "-o", "UpdateHostKeys=no", "-o", "KnownHostsCommand=none", "-o", "VerifyHostKeyDNS=no"]
    assert "checkhostip" in knownhosts.HOST_KEY_OPTIONS and "verifyhostkeydns" in knownhosts.HOST_KEY_OPTIONS


def test_an_old_openssh_gets_no_known_hosts_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knownhosts, "knownhostscommand_supported", lambda ssh="ssh": False)
    args = knownhosts.ssh_args("-o KnownHostsCommand=/bin/keys", "/kh/known_hosts")
    assert "KnownHostsCommand" not in args and args.endswith("-o UpdateHostKeys=no -o VerifyHostKeyDNS=no")


def test_knownhostscommand_probe(tmp_path: Path) -> None:
    """The probe runs ``ssh -G`` (connects nowhere); only an ssh that rejects the option turns it off."""
    old = tmp_path / "old-ssh"
    old.write_text("#!/bin/sh\necho 'command-line line 0: Bad configuration option: knownhostscommand' >&2\nexit 255\n")
    old.chmod(0o755)
    broken = tmp_path / "broken-ssh"
    broken.write_text("#!/bin/sh\necho 'some other failure' >&2\nexit 255\n")
    broken.chmod(0o755)
    knownhosts.knownhostscommand_supported.cache_clear()
    try:
        assert knownhosts.knownhostscommand_supported(str(old)) is False
        assert knownhosts.knownhostscommand_supported(str(broken)) is True
        assert knownhosts.knownhostscommand_supported(str(tmp_path / "missing")) is True
        if shutil.which("ssh"):
            # This machine's OpenSSH (9.2) accepts both forced options.
            assert knownhosts.knownhostscommand_supported("ssh") is True
            res = local.run(["ssh", "-G", "-F", "/dev/null", "-o", "KnownHostsCommand=none",
                             "-o", "VerifyHostKeyDNS=no", "127.0.0.1"], timeout=10, check=False)
            assert res.ok, res.stderr
    finally:
        knownhosts.knownhostscommand_supported.cache_clear()
