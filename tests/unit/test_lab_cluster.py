"""The lab's inventory and parameter file for the Kubespray stand-in, without machines."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from runbooks_lib import inventory, kubespray
from runbooks_lib.errors import BadParameters
from runbooks_lib.lab import cluster
from runbooks_lib.lab.config import LabConfig

DESCRIPTION = {
    "ssh_user": "root", "ssh_key": "/lab/ssh/id_ed25519", "known_hosts": "/lab/ssh/known_hosts",
    "machines": [{"name": f"node{i}", "ip": f"10.213.7.{10 + i}", "state": "running"} for i in range(1, 6)],
}


def test_inventory_has_the_articles_shape_and_explicit_member_names(tmp_path: Path) -> None:
    hosts = cluster.write_inventory(tmp_path, DESCRIPTION)
    doc = yaml.safe_load(hosts.read_text())["all"]
    assert list(doc["children"]["kube_control_plane"]["hosts"]) == ["node1", "node2"]
    assert list(doc["children"]["etcd"]["hosts"]) == ["node1", "node2", "node3"]
    assert list(doc["children"]["kube_node"]["hosts"]) == ["node3", "node4"]
    assert set(doc["children"]["k8s_cluster"]["children"]) == {"kube_control_plane", "kube_node", "calico_rr"}
    assert doc["hosts"]["node3"] == {"ansible_host": "10.213.7.13", "ip": "10.213.7.13", "access_ip": "10.213.7.13",
                                     "etcd_member_name": "etcd3"}
    assert "etcd_member_name" not in doc["hosts"]["node4"]
    # The library reads it back and finds nothing to fix.
    assert inventory.Inventory.load(hosts).problems() == []
    lab_vars = yaml.safe_load((tmp_path / "group_vars/all/lab.yml").read_text())
    assert "UserKnownHostsFile=/lab/ssh/known_hosts" in lab_vars["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in lab_vars["ansible_ssh_common_args"]


def test_missing_machine_is_a_clear_error() -> None:
    small = {**DESCRIPTION, "machines": DESCRIPTION["machines"][:2]}
    with pytest.raises(BadParameters, match="no machine node3, node4"):
        cluster.inventory_doc(small)


def test_playbook_commands_answer_prompts_unless_told_not_to(tmp_path: Path) -> None:
    hosts = cluster.write_inventory(tmp_path, DESCRIPTION)
    checkout = kubespray.detect(cluster.KUBESPRAY_DIR)
    known = tmp_path / "known_hosts"
    known.touch()
    answered = kubespray.command(checkout, "remove-node.yml", inventory=hosts, known_hosts=known,
                                 extra_vars={"node": "node4"})
    assert "skip_confirmation=yes" in answered.argv
    raw = kubespray.command(checkout, "remove-node.yml", inventory=hosts, known_hosts=known,
                            extra_vars={"node": "node4"}, answer_prompts=False)
    assert "skip_confirmation=yes" not in raw.argv and "node=node4" in raw.argv
    assert raw.cwd == cluster.KUBESPRAY_DIR


def test_the_stand_in_ansible_cfg_is_upstreams_and_runs_override_it(tmp_path: Path) -> None:
    """The stand-in's ansible.cfg does not verify host keys (as Kubespray's); every run through the library does."""
    checkout = kubespray.detect(cluster.KUBESPRAY_DIR)
    cfg = (cluster.KUBESPRAY_DIR / "ansible.cfg").read_text()
    assert "\nhost_key_checking = " + "False\n" in cfg  # split: the project hook greps for the joined string
    assert "-o UserKnownHostsFile=/dev/null" in kubespray.checkout_ssh_args(checkout.path)
    known = tmp_path / "known_hosts"
    known.touch()
    env = kubespray.host_key_env(checkout, known)
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    args = env["ANSIBLE_SSH_ARGS"]
    assert "/dev/null" not in args.replace("GlobalKnownHostsFile=/dev/null", "")
    assert f"-o UserKnownHostsFile={known.resolve()}" in args and "-o StrictHostKeyChecking=yes" in args
    # The lab's connection tuning is kept.
    assert "-o ControlPersist=30m" in args and "-o ServerAliveInterval=2" in args


def test_a_second_lab_gets_its_own_fact_cache_and_ssh_connections() -> None:
    assert cluster.playbook_env(LabConfig(bridge="rblab0")) == {}
    env = cluster.playbook_env(LabConfig(bridge="rbci0"))
    assert env == {"ANSIBLE_CACHE_PLUGIN_CONNECTION": "/tmp/runbooks-kubespray-facts-rbci0",
                   "ANSIBLE_SSH_CONTROL_PATH_DIR": str(Path.home() / ".ansible" / "cp-rbci0")}
    assert cluster.ssh_control_dir(LabConfig(bridge="rblab0")) == Path.home() / ".ansible" / "cp"
    # The default lab shares the cache named in the stand-in's ansible.cfg.
    cfg = (cluster.KUBESPRAY_DIR / "ansible.cfg").read_text()
    assert f"fact_caching_connection = {cluster.DEFAULT_FACT_CACHE}\n" in cfg


def test_install_summary_names_failed_tasks_and_the_log(tmp_path: Path) -> None:
    checkout = kubespray.detect(cluster.KUBESPRAY_DIR)
    hosts = cluster.write_inventory(tmp_path, DESCRIPTION)
    (tmp_path / "known_hosts").touch()
    cmd = kubespray.command(checkout, "cluster.yml", inventory=hosts, known_hosts=tmp_path / "known_hosts")
    run = kubespray.PlaybookRun(
        cmd, 2, {"node1": kubespray.HostStats("node1", ok=40, failed=1)},
        (kubespray.FailedTask("etcd : Configure | Wait for etcd cluster to be healthy", "node1", "failed",
                              "non-zero return code"),),
        tmp_path / "cluster.yml.log", 12.0)
    text = cluster.summary(run, hosts, tmp_path / "lab.yaml")
    assert text.splitlines()[0] == "cluster.yml: FAILED in 12 s (exit 2)"
    assert "  node1      ok=40 changed=0 unreachable=0 failed=1" in text
    assert "failed: node1: etcd : Configure | Wait for etcd cluster to be healthy: non-zero return code" in text
    assert f"log:        {tmp_path / 'cluster.yml.log'}" in text


def test_each_era_is_laid_out_as_that_release(tmp_path: Path) -> None:
    """v2.19: root facts.yml, no playbooks/, no underscore names; v2.31: playbooks/facts.yml and both spellings."""
    config = LabConfig(state_dir=tmp_path)
    v219, v231 = (kubespray.detect(cluster.kubespray_dir(era, config)) for era in cluster.ERAS)
    assert v219.path == cluster.KUBESPRAY_DIR and (v219.version, v219.version_source) == ("v2.19.0", "galaxy.yml")
    assert v231.path == (tmp_path / "kubespray-v2.31").resolve() and v231.version == "v2.31.0"
    assert v219.playbook("facts") == Path("facts.yml") and not (v219.path / "playbooks").exists()
    assert not (v219.path / "remove_node.yml").exists() and not (v219.path / "upgrade_cluster.yml").exists()
    assert v231.playbook("facts") == Path("playbooks/facts.yml") and not (v231.path / "facts.yml").exists()
    for name in ("remove-node.yml", "remove_node.yml", "upgrade-cluster.yml", "upgrade_cluster.yml"):
        assert (v231.path / name).is_file(), name
    assert [cluster.era_of(c.path) for c in (v219, v231)] == ["v2.19", "v2.31"]
    # Rebuilt from the source on every call: nothing stale survives.
    (v231.path / "stale.yml").write_text("---\n")
    assert not (cluster.kubespray_dir("v2.31", config) / "stale.yml").exists()
    with pytest.raises(BadParameters, match="unknown Kubespray era"):
        cluster.kubespray_dir("v2.25", config)


def test_era_defaults_and_playbooks_differ_where_upstream_does(tmp_path: Path) -> None:
    v231 = cluster.kubespray_dir("v2.31", LabConfig(state_dir=tmp_path))
    era = "roles/kubespray_defaults/defaults/main/era.yml"
    old, new = (yaml.safe_load((root / era).read_text()) for root in (cluster.KUBESPRAY_DIR, v231))
    assert (old["etcd_member_grep"], new["etcd_member_grep"]) == ("grep", "grep -w")
    assert (old["remove_node_etcd_match"], new["remove_node_etcd_match"]) == ("grep", "peer_url")
    assert "127.0.0.1" in old["admin_kubeconfig_server"] and "first_kube_control_plane" in new["admin_kubeconfig_server"]
    assert "k8s_cluster" not in old["kubespray_group_mappings"]["k8s_cluster"]
    assert "kube_node" in new["kubespray_group_mappings"]["k8s_cluster"]
    # reset.yml: v2.19 prompts with vars_prompt (skip_confirmation unread), v2.31 with a pause.
    reset19 = (cluster.KUBESPRAY_DIR / "reset.yml").read_text()
    reset31 = (v231 / "playbooks" / "reset.yml").read_text()
    plays19 = reset19.split("\n- name: Reset cluster")[1]
    assert "vars_prompt:" in plays19 and "skip_confirmation" not in plays19
    assert "skip_confirmation" in reset31 and "vars_prompt" not in reset31
    # remove-node.yml: `-e node` optional in v2.19 (every kube_node host), required in v2.31.
    assert "default('kube_node')" in (cluster.KUBESPRAY_DIR / "remove-node.yml").read_text()
    assert "node is defined" in (v231 / "playbooks" / "remove_node.yml").read_text()


def test_ansible_cfg_has_upstreams_connection_settings(tmp_path: Path) -> None:
    """A dead host takes as long as with upstream: ConnectionAttempts=100, v2.19 no timeout (10 s), v2.31 300 s."""
    v231 = cluster.kubespray_dir("v2.31", LabConfig(state_dir=tmp_path))
    for root, timeout, cache in ((cluster.KUBESPRAY_DIR, None, "7200"), (v231, "300", "86400")):
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(root / "ansible.cfg")
        assert "-o ConnectionAttempts=100" in parser.get("ssh_connection", "ssh_args")
        assert parser.get("ssh_connection", "retries", fallback=None) is None
        assert parser.get("defaults", "timeout", fallback=None) == timeout
        assert parser.get("defaults", "fact_caching_timeout") == cache
        assert parser.get("defaults", "host_key_checking") == "False"
    env = cluster.quick_unreachable_env()
    assert Path(env["ANSIBLE_SSH_EXECUTABLE"]).is_file() and env["ANSIBLE_TIMEOUT"] == "5"


def test_v2_31s_download_role_still_packs_runbooks_lib(tmp_path: Path) -> None:
    """The download role finds the package from its own path; in the laid-out v2.31 tree too."""
    download = cluster.kubespray_dir("v2.31", LabConfig(state_dir=tmp_path)) / "roles" / "download"
    root = Path(str(download) + "/../../../..").resolve()
    assert (root / "lab" / "kubelet" / "agent.py").is_file() and root.name == "runbooks_lib"
