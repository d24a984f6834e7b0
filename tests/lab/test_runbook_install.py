"""The install-cluster runbook against the lab: the session's install proves itself, a re-run changes
nothing, bad parameters and a missing confirmation are refused before anything changes, and no run
record holds a secret.

The install itself is the session fixture ``kubespray_cluster`` (tests/lab/cluster_fixtures.py): the
suite installs once, through this runbook. Everything here is quick except the re-run (one idempotent
cluster.yml).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.lab.cluster_fixtures import LabCluster, install_params, run_install

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
K8S_NODES = ["node1", "node2", "node3", "node4"]
SECRETS = re.compile(r"PRIVATE KEY-----|client-key-data|token:\s*\S{20,}|Bearer\s+[A-Za-z0-9._-]{20,}")


def _summary(result) -> dict:
    return json.loads(Path(result.summary_path).read_text())


def _tree_digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_the_install_summary_proves_the_cluster(kubespray_cluster: LabCluster) -> None:
    result = kubespray_cluster.install
    assert result is not None and result.exit_code == 0 and result.status == "ok", result.line()
    summary = _summary(result)
    assert summary["installed"] is True and summary["verdict"].startswith("lab: INSTALLED: 4/4 nodes Ready")
    assert summary["nodes_ready"] == K8S_NODES
    assert summary["etcd"] == {"members": 3, "member_names": ["etcd1", "etcd2", "etcd3"], "healthy_endpoints": 3}
    assert summary["app_answering_on"] == K8S_NODES
    assert all(a["status"] == 200 and a["pod"].startswith("sticky-session-") for a in summary["ingress"].values())
    ips = sorted(kubespray_cluster.ip(n) for n in K8S_NODES)
    assert summary["dns"]["resolved"] == ips
    # The lab's install hits the 127.0.0.53 pitfall; the runbook saw the crash loop (CoreDNS or nodelocaldns,
    # whichever crash-looped first) and fixed it on every node.
    assert any(name.startswith(("coredns-", "nodelocaldns-")) for name in summary["crash_looping_seen"]), summary

    fixes = summary["changes"]["dns_fix"]
    assert [line.split(":")[0] for line in fixes[:-1]] == K8S_NODES
    # The kubelet restart alone leaves the pods in their old sandboxes: the DNS pods were recreated.
    assert fixes[-1].startswith("recreated ") and ("coredns-" in fixes[-1] or "nodelocaldns-" in fixes[-1]), fixes
    assert summary["playbook"]["rc"] == 0 and Path(summary["playbook"]["log"]).is_file()
    assert Path(summary["playbook"]["log"]).parent == Path(result.output).parent  # kept beside the run record
    assert stat.S_IMODE(kubespray_cluster.kubeconfig.stat().st_mode) == 0o600
    server = yaml.safe_load(kubespray_cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    assert server == f"https://{kubespray_cluster.ip('node1')}:6443"
    addons = yaml.safe_load((kubespray_cluster.inventory_dir / "group_vars/k8s_cluster/addons.yml").read_text())
    assert addons["ingress_nginx_enabled"] is True and addons["ingress_nginx_host_network"] is True


@pytest.fixture
def bad_run(kubespray_cluster: LabCluster, tmp_path: Path):
    """Run the CLI against a private copy of the installed inventory; report exit, output and whether anything changed."""
    inventory_dir = tmp_path / "inventory"
    shutil.copytree(kubespray_cluster.inventory_dir, inventory_dir)
    before = _tree_digest(inventory_dir)
    runs = tmp_path / "runs"
    params = install_params(tmp_path / "install.yaml", inventory_dir, kubespray_cluster.description)

    def run(*args: str, params_text: str | None = None) -> tuple[subprocess.CompletedProcess[str], bool]:
        if params_text is not None:
            params.write_text(params_text)
        proc = subprocess.run([sys.executable, "-m", "runbooks_lib.cli", "run", "install-cluster", "-f", str(params),
                               "--runs-dir", str(runs), "--no-progress", "--html", "--cell-timeout", "300", *args],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                              timeout=600)
        unchanged = _tree_digest(inventory_dir) == before and not list(runs.rglob("*.cluster.yml.log"))
        return proc, unchanged

    run.params = params  # type: ignore[attr-defined]
    run.runs = runs  # type: ignore[attr-defined]
    return run


def test_bad_parameters_fail_at_validation_and_change_nothing(bad_run) -> None:
    good = bad_run.params.read_text()
    doc = yaml.safe_load(good)
    cases = {
        "unknown key": (("-p", "bogus_key", "1"), None, "bogus_key"),
        "wrong type": (("-p", "playbook_timeout_s", "soon"), None, "playbook_timeout_s"),
        "duplicate IP": ((), {**doc, "hosts": {**doc["hosts"], "node2": doc["hosts"]["node1"]}}, "same address"),
        "even etcd count": ((), {**doc, "etcd_members": ["node1", "node2"]}, "odd number"),
        "missing Kubespray directory": (("-p", "kubespray_dir", "/nonexistent/kubespray"), None, "kubespray_dir"),
        "unreadable SSH key": (("-p", "ssh_key", "/nonexistent/id_ed25519"), None, "ssh_key"),
    }
    for what, (args, params, needle) in cases.items():
        proc, unchanged = bad_run(*args, "-p", "dry_run", "False", "-p", "confirm", "lab",
                                  params_text=yaml.safe_dump(params) if params else good)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2, (what, out[-2000:])
        assert "REFUSED" in out and needle in out, (what, out[-2000:])
        assert unchanged, f"{what}: the inventory changed or a playbook started"


def test_without_confirmation_the_gate_refuses_headless(bad_run) -> None:
    proc, unchanged = bad_run("-p", "dry_run", "False")
    assert proc.returncode == 2, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.startswith("REFUSED: install-cluster on lab") and "no confirmation" in proc.stdout
    assert unchanged
    summary = json.loads(next(bad_run.runs.glob("lab/*.summary.json")).read_text())
    assert summary["run"]["error"]["ename"] == "PreconditionFailed"
    assert list(bad_run.runs.glob("lab/*.html")), "the --html copy was written"


def test_a_rerun_right_after_success_changes_nothing(kubespray_cluster: LabCluster, tmp_path: Path) -> None:
    c = kubespray_cluster
    inventory_before = c.hosts.read_bytes()
    group_vars_before = _tree_digest(c.inventory_dir / "group_vars")
    result = run_install(c.params, tmp_path / "runs", dry_run=False, confirm="lab")
    assert result.exit_code == 0, result.line()
    summary = _summary(result)
    assert summary["installed"] is True and summary["app_answering_on"] == K8S_NODES
    assert summary["changes"] == {"inventory": False, "inventory_backup": None, "group_vars": [], "dns_fix": [],
                                  "kubeconfig": False, "app": []}
    assert summary["crash_looping_seen"] == []
    assert c.hosts.read_bytes() == inventory_before
    assert _tree_digest(c.inventory_dir / "group_vars") == group_vars_before


def test_no_run_record_holds_a_secret(kubespray_cluster: LabCluster) -> None:
    """Every record the install runs wrote (notebooks, HTML copies, summaries, playbook logs) is scanned."""
    runs_root = Path(kubespray_cluster.install.output).parents[2]  # pytest's base temp: every test's runs dir
    records = [p for p in runs_root.rglob("*") if p.is_file() and "runs" in str(p.parent.relative_to(runs_root))
               and p.suffix in (".ipynb", ".html", ".json", ".log")]
    assert any(p.suffix == ".ipynb" for p in records) and any(p.suffix == ".json" for p in records)
    for path in records:
        found = SECRETS.search(path.read_text(errors="replace"))
        assert found is None, f"{path} holds {found.group(0)[:30]!r}"
