"""The two eras of the Kubespray stand-in where a runbook can tell them apart.

The source article's "member count is unequal", for its real reason: its control planes were
185.186.142.5 and 185.186.142.53, and v2.19 decides whether a node is already an etcd member
with `etcdctl member list | grep -q IP` (no -w), so re-adding .5 "finds" .53, skips `member
add`, and etcd refuses to start. The lab gives node1/node2 the same pair of host numbers
(cluster.article_addresses). The sequence is kept at the etcd level (`cluster.yml --tags
etcd`), on fresh disks of node1..node3: an etcd cluster, the first member removed, its node
reimaged, then `cluster.yml --limit=etcd,kube_control_plane` with it appended at the end of
the groups, once with each era's checkout. The machines are restored afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbooks_lib import etcd, kubespray, ssh
from runbooks_lib.lab import cluster
from runbooks_lib.lab.config import LabConfig
from runbooks_lib.lab.machines import Lab
from tests.lab.cluster_fixtures import LabCluster

pytestmark = pytest.mark.lab

ETCD_NODES = ("node1", "node2", "node3")
LAYOUT = cluster.Layout(control_planes=("node1", "node2"), etcd=ETCD_NODES, workers=())
READD_LAYOUT = cluster.Layout(control_planes=("node2", "node1"), etcd=("node2", "node3", "node1"), workers=())


def _fresh(lab: Lab, names: tuple[str, ...], addresses: dict[str, str]) -> None:
    """Reimage machines (a reinstalled VPS) and give them back their provider-assigned addresses."""
    for name in names:
        lab.reimage(name)
    cluster.close_ssh_masters()
    cluster.add_addresses(lab, {n: ip for n, ip in addresses.items() if n in names})


def _etcd_play(inventory_dir: Path, description: dict, layout: cluster.Layout, addresses: dict[str, str],
               checkout: Path, limit: str | None = None) -> kubespray.PlaybookRun:
    hosts = cluster.write_inventory(inventory_dir, description, layout, kubespray_dir=checkout, addresses=addresses)
    cmd_vars = {"etcd_retries": "2"}
    return cluster.run_playbook("cluster.yml", hosts, known_hosts=description["known_hosts"], kubespray_dir=checkout,
                                extra_vars=cmd_vars, limit=limit, check=False, answer_prompts=False,
                                timeout=900, log_path=inventory_dir / "cluster.yml.log",
                                tags="etcd")


def _members(lab: Lab, node: str) -> list[dict]:
    command = "set -a; . /etc/etcd.env; set +a; exec etcdctl member list -w json"
    return json.loads(lab.ssh(node, ["bash", "-c", command]).stdout)["members"]


def readd_first_member_with_its_old_ip(lab: Lab, description: dict, workdir: Path, era: str) -> kubespray.PlaybookRun:
    """The article's sequence on node1..node3; returns the re-adding run of ``era``'s checkout."""
    addresses = cluster.article_addresses()
    checkout = cluster.kubespray_dir(era, LabConfig())
    _fresh(lab, ETCD_NODES, addresses)
    run = _etcd_play(workdir / "install", description, LAYOUT, addresses, cluster.KUBESPRAY_DIR)
    assert run.ok, run.output_tail
    members = _members(lab, "node2")
    assert sorted(m["peerURLs"][0] for m in members) == sorted(
        f"https://{ip}:2380" for ip in (addresses["node1"], addresses["node2"], description_ip(description, "node3")))
    # node1 dies: its member is removed on a survivor, the VPS is reinstalled with the same IP.
    host = ssh.Host("node2", description_ip(description, "node2"), user=description["ssh_user"],
                    key_path=description["ssh_key"], known_hosts=description["known_hosts"])
    with ssh.Connection(host, connect_timeout=5) as conn:  # the library's remove: quorum guard, retried refusal
        etcd.member_remove(etcd.Etcdctl(conn, member="node2"), name="etcd1")
    _fresh(lab, ("node1",), addresses)
    # Re-added at the end of the groups (never first), then the article's command.
    return _etcd_play(workdir / "readd", description, READD_LAYOUT, addresses, checkout,
                      limit="etcd,kube_control_plane")


def description_ip(description: dict, name: str) -> str:
    return next(m["ip"] for m in description["machines"] if m["name"] == name)


@pytest.mark.timeout(1500)
def test_readding_the_first_member_with_its_old_ip_fails_in_v2_19_and_works_in_v2_31(
        restored_cluster: LabCluster, tmp_path: Path) -> None:
    c = restored_cluster
    addresses = cluster.article_addresses()
    assert addresses["node2"].startswith(addresses["node1"])  # .5 is a prefix of .53, as the article's pair

    run = readd_first_member_with_its_old_ip(c.lab, c.description, tmp_path / "v2.19", "v2.19")
    assert not run.ok
    log = (tmp_path / "v2.19" / "readd" / "cluster.yml.log").read_text()
    # grep without -w "found" 10.213.x.5 in 10.213.x.53's line: the join (member add) was skipped ...
    check = log.split("TASK [etcd : Configure | Check if member is in etcd cluster]")[1].split("TASK [")[0]
    assert "ok: [node1]" in check and "Join Member | Add member to etcd cluster" not in log
    # ... so etcd was started with the full member list, state existing, and refused: the article's error.
    journal = c.lab.ssh("node1", ["journalctl", "-u", "etcd", "--no-pager"]).stdout
    assert "member count is unequal" in journal
    assert sorted(m["name"] for m in _members(c.lab, "node2")) == ["etcd2", "etcd3"]

    # The same re-add with v2.31's checkout (grep -w): the member is added and joins.
    _fresh(c.lab, ("node1",), addresses)
    run = _etcd_play(tmp_path / "v2.31", c.description, READD_LAYOUT, addresses, cluster.kubespray_dir("v2.31"),
                     limit="etcd,kube_control_plane")
    assert run.ok, run.output_tail
    members = {m["name"]: m["peerURLs"] for m in _members(c.lab, "node2")}
    assert members == {"etcd1": [f"https://{addresses['node1']}:2380"], "etcd2": [f"https://{addresses['node2']}:2380"],
                       "etcd3": [f"https://{c.ip('node3')}:2380"]}


@pytest.mark.timeout(1500)
def test_v2_19_reset_prompt_and_joins_through_cluster_info(restored_cluster: LabCluster) -> None:
    """v2.19's reset prompt, and a join that finds the API server through kube-public/cluster-info.

    The v2.31 checkout's fresh install (and its admin.conf) is proven by the replace runbook's
    new-machine test, which installs a cluster with it.
    """
    c = restored_cluster
    # v2.19's reset.yml reads reset_confirmation only: skip_confirmation does not get past its prompt.
    run = c.playbook("reset.yml", limit="node4", extra_vars={"skip_confirmation": "yes"})
    assert not run.ok and "Reset confirmation failed" in run.output_tail, run.output_tail
    assert c.lab.ssh("node4", ["systemctl", "is-active", "kubelet"], check=False).stdout.strip() == "active"

    # A join discovers the API server through kube-public/cluster-info: pointed at an address
    # where nothing answers, scale.yml cannot add node5 (kubeadm join's discovery fails).
    silent = str(LabConfig().network.network_address + 99)
    info = json.loads(c.kubectl("-n", "kube-public", "get", "configmap", "cluster-info", "-o", "json").stdout)
    stale = info["data"]["kubeconfig"].replace(f"https://{c.ip('node1')}:6443", f"https://{silent}:6443")
    c.kubectl("-n", "kube-public", "patch", "configmap", "cluster-info", "--type=merge",
              "-p", json.dumps({"data": {"kubeconfig": stale}}))
    c.add_host("node5")
    c.set_group("kube_node", ["node3", "node4", "node5"])
    assert c.playbook("facts.yml").ok
    run = c.playbook("scale.yml", limit="node5")
    assert not run.ok
    assert any(t.host == "node5" and t.task.endswith("Join | Reach the API server named in cluster-info")
               for t in run.failed_tasks), run.failed_tasks
    assert c.lab.ssh("node5", ["test", "-e", "/etc/kubernetes/kubelet.conf"], check=False).exited != 0
    c.set_group("kube_node", ["node3", "node4"])
