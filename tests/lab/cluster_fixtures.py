"""A Kubernetes cluster installed on the lab by the Kubespray stand-in, once per test session.

``kubespray_cluster`` runs cluster.yml on the session's lab (2 control planes
node1/node2, 3 etcd node1..node3, workers node3/node4; node5 spare) and takes
a lab-wide snapshot. Tests that change the cluster ask for ``restored_cluster``:
they get their own copy of the inventory and every machine is put back to the
snapshot afterwards, even when the test failed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from runbooks_lib import kubespray, local
from runbooks_lib.lab import cluster
from runbooks_lib.lab.machines import Lab

SNAPSHOT = "kubespray-installed"
KUBECTL_TIMEOUT = 60


@dataclass(frozen=True)
class LabCluster:
    """The installed cluster: the lab, an inventory directory and how to reach it."""

    lab: Lab
    inventory_dir: Path
    description: dict

    @property
    def hosts(self) -> Path:
        return self.inventory_dir / "hosts.yaml"

    @property
    def kubeconfig(self) -> Path:
        return self.inventory_dir / "artifacts" / "admin.conf"

    def ip(self, name: str) -> str:
        return next(m["ip"] for m in self.description["machines"] if m["name"] == name)

    def playbook(self, playbook: str, *, extra_vars: Mapping[str, object] | None = None,
                 limit: str | None = None, timeout: float = 900,
                 log_path: Path | None = None) -> kubespray.PlaybookRun:
        """Run a playbook exactly as an operator would; a failure is returned, not raised."""
        return cluster.run_playbook(playbook, self.hosts, known_hosts=self.description["known_hosts"],
                                    extra_vars=extra_vars, limit=limit,
                                    timeout=timeout, check=False, answer_prompts=False, log_path=log_path)

    def kubectl(self, *args: str, server_node: str | None = None, check: bool = True,
                timeout: float = KUBECTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """kubectl on this host with the operator's kubeconfig (optionally through another control plane)."""
        argv = ["kubectl", "--kubeconfig", str(self.kubeconfig), "--request-timeout=20s"]
        if server_node:
            argv.append(f"--server=https://{self.ip(server_node)}:6443")
        proc = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def etcdctl(self, node: str, *args: str, check: bool = True, timeout: float = 30) -> local.Result:
        """etcdctl on an etcd member with the TLS settings Kubespray writes into /etc/etcd.env."""
        command = ("set -a; . /etc/etcd.env; set +a; exec etcdctl " + " ".join(args))
        return self.lab.ssh(node, ["bash", "-c", command], timeout=timeout, check=check)

    def inventory(self) -> dict:
        return yaml.safe_load(self.hosts.read_text())

    def write_inventory(self, doc: dict) -> None:
        self.hosts.write_text(yaml.safe_dump(doc, sort_keys=False))

    def set_group(self, group: str, hosts: Sequence[str]) -> None:
        """Set a group's hosts (in this order) in hosts.yaml."""
        doc = self.inventory()
        doc["all"]["children"][group] = {"hosts": {h: None for h in hosts}}
        self.write_inventory(doc)

    def add_host(self, name: str, **host_vars: str) -> None:
        doc = self.inventory()
        ip = self.ip(name)
        doc["all"]["hosts"][name] = {"ansible_host": ip, "ip": ip, "access_ip": ip, **host_vars}
        self.write_inventory(doc)


def _copy_inventory(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.retry"))
    return target


@pytest.fixture(scope="session")
def kubespray_cluster(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    """cluster.yml on fresh disks of the session lab, then a lab-wide snapshot (reused by restored_cluster)."""
    # The session may reuse a running lab: an earlier install left on its disks would hide install steps.
    for row in lab.status():
        lab.reimage(row.name)
    for row in lab.status():
        if row.state != "running":
            lab.poweron(row.name)
    cluster.close_ssh_masters()
    description = lab.description()
    inventory_dir = tmp_path_factory.mktemp("kubespray-inventory")
    cluster.write_inventory(inventory_dir, description,
                            group_vars={"ingress_nginx_enabled": True, "ingress_nginx_host_network": True})
    run = cluster.run_playbook("cluster.yml", inventory_dir / "hosts.yaml", known_hosts=description["known_hosts"],
                               check=False, timeout=1200,
                               log_path=inventory_dir / "cluster.yml.log")
    if not run.ok:
        failed = "\n".join(f"{t.status}: {t.host}: {t.task}: {t.message}" for t in run.failed_tasks)
        pytest.fail(f"cluster.yml failed (exit {run.rc}); log {run.log_path}\n{failed}\n{run.output_tail}")
    lab.snapshot_all(SNAPSHOT)
    yield LabCluster(lab, inventory_dir, description)


@pytest.fixture
def restored_cluster(kubespray_cluster: LabCluster, tmp_path: Path) -> Iterator[LabCluster]:
    """The installed cluster with a private inventory; every machine is restored afterwards."""
    own = LabCluster(kubespray_cluster.lab, _copy_inventory(kubespray_cluster.inventory_dir, tmp_path / "inventory"),
                     kubespray_cluster.description)
    try:
        yield own
    finally:
        kubespray_cluster.lab.heal()
        kubespray_cluster.lab.restore_all(SNAPSHOT)
        cluster.close_ssh_masters()
