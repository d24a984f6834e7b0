"""The add-worker and remove-worker runbooks against the lab's installed cluster, through ``runbooks run``.

One destructive test walks the whole life of a worker: add node5 and kill the run while scale.yml runs;
run it again (it converges to a Ready worker serving the app); add it again (nothing happens, no
playbook); remove node5 alive, then again (as after a kill once the inventory was saved: found in the
inventory's .bak, only proved gone); hard power-off node4 and remove it dead. One proves bad input and dry runs change nothing (no playbook, same
inventory bytes, same nodes). The lab is put back with the lab-wide snapshot (restored_cluster) between
destructive tests. These runs also cover Kubespray's scale.yml and remove-node.yml paths that
test_kubespray_nodes.py used to test at the playbook level.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runbooks_lib import ingress, kube, runner
from runbooks_lib.lab import cluster, dns
from tests.lab.cluster_fixtures import APP_HOST, LAYOUT, LabCluster, _copy_inventory
from tests.lab.processes import kill_run
from tests.waiting import wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CELL_TIMEOUT = 900.0
DEAD_DRAIN_S = 20  # remove-node's drain_timeout for the dead node (the runbook's default is 60)


@pytest.fixture
def workers_cluster(restored_cluster: LabCluster) -> Iterator[LabCluster]:
    """restored_cluster, and the app's DNS name put back to every installed node afterwards (the runbooks change it)."""
    try:
        yield restored_cluster
    finally:
        dns.set_records(APP_HOST, [restored_cluster.ip(n) for n in LAYOUT.hosts()])


def _params(c: LabCluster, path: Path, *, add: bool, **extra: object) -> Path:
    """A parameter file for the worker runbooks against this cluster; DNS through the lab's DNS server."""
    values = {
        "cluster_name": "lab",
        "inventory": str(c.hosts),
        "kubespray_dir": str(cluster.KUBESPRAY_DIR),
        "kubeconfig": str(c.kubeconfig),
        "ssh_key": c.description["ssh_key"],
        "known_hosts": c.description["known_hosts"],
        "app_host": APP_HOST,
        "dns_server": c.description["host_ip"],
        # The operator's DNS hook; on the lab it is the lab's DNS server (the session fixture's dnsmasq).
        "dns_command": [sys.executable, "-m", "runbooks_lib.cli", "lab", "dns", "set", "{name}", "{ips}"],
        "ansible_env": cluster.playbook_env(),
        **({"upstream_dns_servers": [c.description["host_ip"]]} if add else {}),
        **extra,
    }
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def _run(name: str, params: Path, runs: Path, **overrides: object) -> runner.RunResult:
    return runner.run(runner.find(name), files=[params], overrides=overrides, runs=runs, progress_bar=False,
                      cell_timeout=CELL_TIMEOUT)


def _summary(result: runner.RunResult) -> dict:
    return json.loads(Path(result.summary_path).read_text())


def _nodes(c: LabCluster) -> list[str]:
    return sorted(c.kubectl("get", "nodes", "-o", "name").stdout.split())


def _killed_during_scale(add: Path, runs: Path) -> None:
    """``runbooks run add-worker`` in its own process group, killed (SIGKILL, with all it started) once scale.yml runs."""
    proc = subprocess.Popen([sys.executable, "-m", "runbooks_lib.cli", "run", "add-worker", "-f", str(add),
                             "-p", "dry_run", "False", "-p", "confirm", "lab", "--runs-dir", str(runs), "--no-progress"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def scale_running() -> tuple[bool, str]:
            logs = list(runs.glob("lab/*.scale.yml.log"))
            return bool(logs) and "TASK [" in logs[0].read_text(), "scale.yml has not started a task"

        wait_until(scale_running, 300, "scale.yml to run", 0.5)
    finally:
        kill_run(proc)  # scale.yml too: left running, it would race the re-run
    assert "PLAY RECAP" not in next(runs.glob("lab/*.scale.yml.log")).read_text()


@pytest.mark.timeout(2100)  # the session's install when this runs first, then six runbook runs
def test_a_worker_added_killed_rerun_again_then_removed_alive_and_a_dead_worker_removed(
        workers_cluster: LabCluster, tmp_path: Path) -> None:
    c = workers_cluster
    runs = tmp_path / "runs"
    add = _params(c, tmp_path / "add.yaml", add=True, new_workers={"node5": c.ip("node5")})
    remove = _params(c, tmp_path / "remove.yaml", add=False, dead_drain_timeout_s=DEAD_DRAIN_S)
    timings = {}

    # Interrupted while scale.yml runs: the inventory already lists node5, the node is not Ready.
    _killed_during_scale(add, runs)
    assert "node/node5" not in _nodes(c) or not _node_ready(c, "node5")
    assert list(c.inventory()["all"]["children"]["kube_node"]["hosts"]) == ["node3", "node4", "node5"]

    # Run again: it converges (facts and scale again) to a Ready worker that serves the app.
    started = time.monotonic()
    result = _run("add-worker", add, runs, dry_run=False, confirm="lab")
    timings["add"] = time.monotonic() - started
    assert result.exit_code == 0, result.line()
    s = _summary(result)
    assert s["added"] is True and s["ready"] == ["node5"] and s["app_pods_on_new_workers"]["node5"], s
    assert [s["playbooks"][k]["rc"] for k in ("facts", "scale")] == [0, 0]
    assert s["ingress"]["node5"]["status"] == 200 and s["dns"]["resolved"] == sorted(
        c.ip(n) for n in ("node1", "node2", "node3", "node4", "node5"))
    assert c.inventory()["all"]["children"]["kube_node"]["hosts"] == {"node3": None, "node4": None, "node5": None}
    # What scale.yml set up on the new worker: kubelet through the local API proxy, and that proxy.
    assert "server: https://localhost:6443" in c.lab.ssh("node5", ["cat", "/etc/kubernetes/kubelet.conf"]).stdout
    c.kubectl("-n", "kube-system", "get", "pod", "nginx-proxy-node5")
    added_inventory = c.hosts.read_bytes()

    result = _run("add-worker", add, runs, dry_run=False, confirm="lab")
    assert result.exit_code == 0, result.line()
    s = _summary(result)
    assert s["already_in_cluster"] == ["node5"] and s["playbooks"] == {} and s["added"] is True
    assert "no playbook ran" in s["verdict"] and c.hosts.read_bytes() == added_inventory
    assert len(list(runs.glob("lab/*.scale.yml.log"))) == 2  # the killed run's and the re-run's

    started = time.monotonic()
    result = _run("remove-worker", remove, runs, remove=["node5"], dry_run=False, confirm="lab")
    timings["remove alive"] = time.monotonic() - started
    assert result.exit_code == 0, result.line()
    s = _summary(result)
    assert s["removed"] is True and s["state"] == {"node5": "alive"} and s["changes"]["drained"]["node5"], s
    assert s["extra_vars"]["alive"]["node"] == "node5" and "reset_nodes" not in s["extra_vars"]["alive"]
    assert "node/node5" not in _nodes(c) and "node5" not in c.inventory()["all"]["hosts"]
    assert c.lab.ssh("node5", ["systemctl", "is-active", "kubelet"], check=False).stdout.strip() != "active"
    assert c.lab.ssh("node5", ["test", "-e", "/etc/kubernetes/kubelet.conf"], check=False).exited != 0
    assert c.ip("node5") not in s["dns"]["resolved"]

    # Again, as after a run killed once the inventory was saved: node5 is only in the inventory's .bak and not
    # in the API, so it is not refused; no drain, no playbook, no inventory edit; DNS checked, removal proved.
    removed_inventory = c.hosts.read_bytes()
    remove_logs = sorted(runs.glob("lab/*.remove-node-*.log"))
    started = time.monotonic()
    result = _run("remove-worker", remove, runs, remove=["node5"], dry_run=False, confirm="lab")
    timings["remove again"] = time.monotonic() - started
    assert result.exit_code == 0, result.line()
    s = _summary(result)
    assert s["removed"] is True and s["already_removed"] == ["node5"] and s["state"] == {}, s
    assert s["playbooks"] == {} and s["changes"]["drained"] == {} and not s["changes"]["inventory"]
    assert "node5 already removed by an earlier run" in s["verdict"]
    assert sorted(runs.glob("lab/*.remove-node-*.log")) == remove_logs and c.hosts.read_bytes() == removed_inventory
    assert s["dns"]["resolved"] and c.ip("node5") not in s["dns"]["resolved"]
    assert c.ip("node5") not in ingress.resolve(APP_HOST, c.description["host_ip"], timeout=5)

    c.lab.poweroff("node4", mode="hard")
    # Dead means no SSH answer AND the Node NotReady: right after the power cut its Node is still Ready,
    # and the runbook refuses (a silent node whose kubelet still reports is not dead).
    early = _run("remove-worker", remove, runs, remove=["node4"])  # a dry run: nothing changes either way
    if _node_ready(c, "node4"):  # Ready from the power cut to the end of that run (NotReady comes after ~35 s)
        assert early.exit_code == 2 and "Node is still Ready" in early.message, early.line()
    wait_until(lambda: (not _node_ready(c, "node4"), "node4 still Ready"), 120, "node4's Node to go NotReady", 2)
    started = time.monotonic()
    result = _run("remove-worker", remove, runs, remove=["node4"], dry_run=False, confirm="lab")
    timings["remove dead"] = time.monotonic() - started
    assert result.exit_code == 0, result.line()
    s = _summary(result)
    assert s["removed"] is True and s["state"] == {"node4": "dead"}, s
    assert s["extra_vars"]["dead"] == {"node": "node4", "reset_nodes": "false", "allow_ungraceful_removal": "true",
                                       "drain_timeout": f"{DEAD_DRAIN_S}s", "drain_grace_period": "10"}
    # Bounded: the drain gave up after drain_timeout; no play waited for the dead host to answer.
    assert s["playbooks"]["dead"]["rc"] == 0 and s["playbooks"]["dead"]["duration_s"] < DEAD_DRAIN_S + 150
    assert _nodes(c) == ["node/node1", "node/node2", "node/node3"]
    assert s["app_pod_nodes"] == ["node3"] and sorted(s["ingress"]) == ["node1", "node2", "node3"]
    assert list(c.inventory()["all"]["hosts"]) == ["node1", "node2", "node3"]
    assert s["dns"]["resolved"] == sorted(c.ip(n) for n in ("node1", "node2", "node3"))

    # The test app's resources can be deleted (the add-worker runbook's rollback): nothing answers any more.
    api = kube.client_from_kubeconfig(str(c.kubeconfig))
    assert {a.action for a in ingress.delete_app(api, "sticky-session")} == {"deleted"}
    assert c.kubectl("get", "deployment", "sticky-session", check=False).returncode != 0
    print(f"\nworker runbook timings: {', '.join(f'{k} {v:.0f}s' for k, v in timings.items())}; remove-node dead "
          f"{s['playbooks']['dead']['duration_s']}s")


def _node_ready(c: LabCluster, name: str) -> bool:
    doc = json.loads(c.kubectl("get", "node", name, "-o", "json").stdout)
    return any(k["type"] == "Ready" and k["status"] == "True" for k in doc["status"]["conditions"])


@pytest.mark.timeout(1200)
def test_bad_input_is_refused_and_dry_runs_change_nothing(kubespray_cluster: LabCluster, tmp_path: Path) -> None:
    inv_dir = _copy_inventory(kubespray_cluster.inventory_dir, tmp_path / "inventory")
    c = LabCluster(kubespray_cluster.lab, inv_dir, kubespray_cluster.description)
    runs = tmp_path / "runs"
    unpinned = tmp_path / "known_hosts"
    shutil.copyfile(c.description["known_hosts"], unpinned)
    subprocess.run(["ssh-keygen", "-R", c.ip("node5"), "-f", str(unpinned)], check=True, capture_output=True)
    # node4 alive, but the pinned key is another's (as after a reinstall, or with someone in between).
    changed = tmp_path / "known_hosts.changed"
    shutil.copyfile(c.description["known_hosts"], changed)
    subprocess.run(["ssh-keygen", "-R", c.ip("node4"), "-f", str(changed)], check=True, capture_output=True)
    node3_key = next(ln.split()[1:3] for ln in Path(c.description["known_hosts"]).read_text().splitlines()
                     if ln.split() and c.ip("node3") in ln.split()[0].split(","))
    with changed.open("a") as f:
        f.write(f"{c.ip('node4')} {' '.join(node3_key)}\n")
    before = (c.hosts.read_bytes(), _nodes(c))
    node5 = {"node5": c.ip("node5")}
    cases = [
        ("add dry run", "add-worker", {"new_workers": node5}, 0, "DRY RUN"),
        ("remove dry run", "remove-worker", {"remove": ["node4"]}, 0, "DRY RUN"),
        ("unknown node", "remove-worker", {"remove": ["node9"], "dry_run": False, "confirm": "lab"}, 2,
         "unknown hosts: node9"),
        ("control plane", "remove-worker", {"remove": ["node2"], "dry_run": False, "confirm": "lab"}, 2,
         "control-plane and etcd hosts are not workers"),
        ("duplicate IP", "add-worker", {"new_workers": {"node5": c.ip("node4")}, "dry_run": False, "confirm": "lab"},
         2, "already used by host 'node4'"),
        ("host key not pinned", "add-worker", {"new_workers": node5, "known_hosts": str(unpinned), "dry_run": False,
                                               "confirm": "lab"}, 2, "node5"),
        ("live worker, changed host key: not dead", "remove-worker",
         {"remove": ["node4"], "known_hosts": str(changed), "dry_run": False, "confirm": "lab"}, 2,
         "node4: its SSH host key is not the pinned one"),
    ]
    for what, book, overrides, code, needle in cases:
        params = _params(c, tmp_path / f"{book}.yaml", add=book == "add-worker")
        result = _run(book, params, runs, **overrides)
        assert result.exit_code == code and needle in result.message, (what, result.line())
        assert (c.hosts.read_bytes(), _nodes(c)) == before, f"{what}: the inventory or the nodes changed"
        assert not list(runs.glob("lab/*.log")), f"{what}: a playbook ran"
    assert _summary(result)["run"]["error"]["ename"] == "PreconditionFailed"
