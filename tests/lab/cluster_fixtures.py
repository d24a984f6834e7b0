"""A Kubernetes cluster installed on the lab by the install-cluster runbook, once per test session.

``kubespray_cluster`` runs ``runbooks run install-cluster -p dry_run False -p
confirm lab`` (runbooks_lib.runner, as the command line does) against the
session's lab (2 control planes node1/node2, 3 etcd node1..node3, workers
node3/node4; node5 spare): the runbook writes the inventory and group_vars,
runs the Kubespray stand-in's cluster.yml, fixes the CoreDNS crash loop
(kubelet resolvConf, recorded as kube_resolv_conf in group_vars/all/all.yml),
deploys the test app and checks it on every node's ingress and in the lab's
DNS (served by the fixture, as an operator's DNS provider would). Then a
lab-wide snapshot is taken. Tests that change the cluster ask for ``restored_cluster``:
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

from runbooks_lib import kubespray, local, runner
from runbooks_lib.lab import cluster, dns
from runbooks_lib.lab.machines import Lab

SNAPSHOT = "kubespray-installed"
KUBECTL_TIMEOUT = 60
APP_HOST = "uuid.awesome.lab"
LAYOUT = cluster.Layout()
INSTALL_CELL_TIMEOUT = 1800.0


@dataclass(frozen=True)
class LabCluster:
    """The installed cluster: the lab, an inventory directory and how to reach it."""

    lab: Lab
    inventory_dir: Path
    description: dict
    install: runner.RunResult | None = None  # the session's install run (kubespray_cluster only)
    params: Path | None = None  # the install's parameter file

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
                 log_path: Path | None = None, kubespray_dir: Path = cluster.KUBESPRAY_DIR,
                 quick_unreachable: bool = True) -> kubespray.PlaybookRun:
        """Run a playbook exactly as an operator would; a failure is returned, not raised.

        The stand-in's own tests put dead hosts in plays on purpose, so by default a dead
        host is declared unreachable in ~5 s (cluster.quick_unreachable_env) instead of
        after upstream's ConnectionAttempts=100; ``quick_unreachable=False`` keeps
        upstream's settings (runbook tests, through the runner, always have them).
        ``kubespray_dir`` picks the era (cluster.kubespray_dir("v2.31")).
        """
        return cluster.run_playbook(playbook, self.hosts, known_hosts=self.description["known_hosts"],
                                    extra_vars=extra_vars, limit=limit, kubespray_dir=kubespray_dir,
                                    timeout=timeout, check=False, answer_prompts=False, log_path=log_path,
                                    env=cluster.quick_unreachable_env() if quick_unreachable else None)

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


def install_params(path: Path, inventory_dir: Path, description: Mapping, **extra: object) -> Path:
    """Write a parameter file for the install runbook against this lab (its addresses, key and DNS)."""
    ips = {m["name"]: m["ip"] for m in description["machines"]}
    values = {
        "cluster_name": "lab",
        "inventory": str(inventory_dir / "hosts.yaml"),
        "kubespray_dir": str(cluster.KUBESPRAY_DIR),
        # No ansible_playbook: the runbook finds the checkout's own (venv/, the era's Ansible), as an operator's.
        "kubeconfig": str(inventory_dir / "artifacts" / "admin.conf"),
        "ssh_user": description.get("ssh_user", "root"),
        "ssh_key": description["ssh_key"],
        "known_hosts": description["known_hosts"],
        "hosts": {name: ips[name] for name in LAYOUT.hosts()},
        "control_planes": list(LAYOUT.control_planes),
        "etcd_members": list(LAYOUT.etcd),
        "workers": list(LAYOUT.workers),
        "app_host": APP_HOST,
        "dns_server": description["host_ip"],
        # This lab's own fact cache and SSH connections (several labs share the host).
        "ansible_env": cluster.playbook_env(),
        **extra,
    }
    cluster.era_venv(cluster.era_of(Path(str(values["kubespray_dir"]))))  # the checkout's venv/ is there
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def serve_app_name(description: Mapping) -> dns.DnsServer:
    """The lab's DNS answers APP_HOST with every Kubernetes node (the operator's DNS provider's job)."""
    ips = {m["name"]: m["ip"] for m in description["machines"]}
    server = dns.DnsServer()
    server.start()
    server.set_records(APP_HOST, [ips[n] for n in LAYOUT.hosts()])
    return server


def run_install(params: Path, runs: Path, **overrides: object) -> runner.RunResult:
    """``runbooks run install-cluster -f PARAMS -p KEY VALUE...`` through the runner's Python entry point."""
    return runner.run(runner.find("install-cluster"), files=[params], overrides=overrides, runs=runs,
                      progress_bar=False, cell_timeout=INSTALL_CELL_TIMEOUT)


def install_afresh(lab: Lab, workdir: Path, checkout: Path = cluster.KUBESPRAY_DIR) -> Path:
    """For benchmarks: every machine fresh, the install runbook with ``checkout``, the lab-wide snapshot SNAPSHOT.

    Returns the installed cluster's inventory directory (``workdir/installed``). Raises RuntimeError
    naming the run record when the install fails. Side effects: every disk is replaced.
    """
    cluster.fresh_machines(lab)
    inventory_dir = workdir / "installed"
    inventory_dir.mkdir()
    params = install_params(inventory_dir / "install.yaml", inventory_dir, lab.description(),
                            kubespray_dir=str(checkout))
    result = run_install(params, workdir / "install-runs", dry_run=False, confirm="lab")
    if result.exit_code != 0:
        raise RuntimeError(f"install failed: {result.line()}")
    lab.snapshot_all(SNAPSHOT)
    return inventory_dir


@pytest.fixture(scope="session")
def kubespray_cluster(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    """The install runbook on fresh disks of the session lab, then a lab-wide snapshot (reused by restored_cluster)."""
    # The session may reuse a running lab: an earlier install left on its disks would hide install steps.
    for row in lab.status():
        lab.reimage(row.name)
    for row in lab.status():
        if row.state != "running":
            lab.poweron(row.name)
    cluster.close_ssh_masters()
    description = lab.description()
    inventory_dir = tmp_path_factory.mktemp("kubespray-inventory")
    params = install_params(inventory_dir / "install.yaml", inventory_dir, description)
    runs = tmp_path_factory.mktemp("install-runs")
    server = serve_app_name(description)
    try:
        result = run_install(params, runs, dry_run=False, confirm="lab")
        if result.exit_code != 0:
            log = next(iter(runs.glob("lab/*.cluster.yml.log")), None)
            tail = log.read_text()[-3000:] if log else "(no cluster.yml log)"
            pytest.fail(f"install runbook failed: {result.line()}\nsummary {result.summary_path}\n{tail}")
        lab.snapshot_all(SNAPSHOT)
        yield LabCluster(lab, inventory_dir, description, install=result, params=params)
    finally:
        server.stop()


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


def replace_params(c: LabCluster, path: Path, **extra: object) -> Path:
    """A parameter file for the replace runbook against this lab cluster."""
    d = c.description
    values = {
        "cluster_name": "lab",
        "inventory": str(c.hosts),
        "kubespray_dir": str(cluster.KUBESPRAY_DIR),
        "kubeconfig": str(c.kubeconfig),
        "ssh_user": d.get("ssh_user", "root"),
        "ssh_key": d["ssh_key"],
        "known_hosts": d["known_hosts"],
        "dead_node": "node1",
        "replacement": "node5",
        "replacement_ip": c.ip("node5"),
        "upstream_dns_servers": [d["host_ip"]],
        "app_host": APP_HOST,
        "backup_dir": str(path.parent / "etcd-backups"),
        "ansible_env": cluster.playbook_env(),
        **extra,
    }
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path
