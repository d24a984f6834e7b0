"""The prepare-nodes runbook against the session lab (no installed cluster needed).

One machine (node2) is put into the pitfall state first: /etc/resolv.conf linked to the
systemd-resolved stub while resolved has no upstream server, and net.ipv4.ip_forward=0 with
no sysctl.d file. The refusals run first and prove that nothing changed on it; then a real run
fixes it and a second run changes nothing. Every inventory machine's DNS/forwarding state is
put back as it was found afterwards.

nbval: ``RUNBOOKS_LAB_DIR`` (key, known_hosts), ``RUNBOOKS_LAB_INVENTORY_DIR`` (the inventory this
module writes) and ``RUNBOOKS_LAB_DNS`` (the lab's DNS server, the bridge address) point the
notebook's defaults at this lab; see ``lab_env``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from runbooks_lib import nodes
from runbooks_lib.lab import cluster
from runbooks_lib.lab.config import LabConfig
from runbooks_lib.lab.machines import Lab

pytestmark = [pytest.mark.lab]

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("node1", "node2", "node3", "node4")
BROKEN = "node2"
STATE = ("readlink /etc/resolv.conf; echo '|'; sysctl -n net.ipv4.ip_forward; echo '|'; "
         f"cat {nodes.RESOLVED_DROPIN} 2>/dev/null; echo '|'; cat {nodes.IP_FORWARD_CONF} 2>/dev/null; echo '|'; "
         "grep -v '^#' /run/systemd/resolve/resolv.conf | grep nameserver || true")


@dataclass(frozen=True)
class Prepared:
    lab: Lab
    inventory_dir: Path
    params: Path
    runs: Path
    dns: str


def lab_env(inventory_dir: Path, runs: Path, dns: str) -> dict[str, str]:
    """The environment that points the runbook's defaults (and nbval) at this lab."""
    return {**os.environ, "PYTHONPATH": str(REPO), "RUNBOOKS_RUNS_DIR": str(runs),
            "RUNBOOKS_PARAMS": "params/lab.yaml", "RUNBOOKS_LAB_DIR": str(LabConfig().state_dir),
            "RUNBOOKS_LAB_INVENTORY_DIR": str(inventory_dir),
            "RUNBOOKS_LAB_DNS": dns}


def state(lab: Lab, name: str) -> str:
    """A marker of the machine state this runbook changes (read-only)."""
    return lab.ssh(name, ["bash", "-c", STATE]).stdout


def break_node(lab: Lab, name: str) -> None:
    """The pitfall: resolv.conf -> stub without upstream servers, ip_forward=0, nothing persisted."""
    lab.ssh(name, ["bash", "-c",
                   f"rm -f {nodes.RESOLVED_DROPIN} {nodes.IP_FORWARD_CONF} && "
                   f"ln -sfn ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf && "
                   "systemctl restart systemd-resolved && sysctl -qw net.ipv4.ip_forward=0"])


def _saved(lab: Lab, name: str) -> str:
    """A shell script that puts back what this runbook may change on ``name``."""
    out = lab.ssh(name, ["bash", "-c", f"readlink /etc/resolv.conf; sysctl -n net.ipv4.ip_forward; "
                                       f"base64 -w0 {nodes.RESOLVED_DROPIN} 2>/dev/null; echo; "
                                       f"base64 -w0 {nodes.IP_FORWARD_CONF} 2>/dev/null; echo"]).stdout.split("\n")
    link, forward, dropin, conf = (out + ["", "", "", ""])[:4]
    script = [f"rm -f {nodes.RESOLVED_DROPIN} {nodes.IP_FORWARD_CONF}"]
    if dropin:
        script.append(f"mkdir -p {os.path.dirname(nodes.RESOLVED_DROPIN)} && "
                      f"echo {dropin} | base64 -d > {nodes.RESOLVED_DROPIN}")
    if conf:
        script.append(f"echo {conf} | base64 -d > {nodes.IP_FORWARD_CONF}")
    if link:
        script.append(f"ln -sfn {link} /etc/resolv.conf")
    script += ["systemctl restart systemd-resolved", f"sysctl -qw net.ipv4.ip_forward={forward.strip() or 0}"]
    return " && ".join(script)


@pytest.fixture(scope="module")
def prepared(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prepared]:
    """An inventory of node1..node4 (no install), a parameter file, node2 broken; restored afterwards."""
    for row in lab.status():  # as running_lab does, once for the module
        if row.state != "running":
            lab.poweron(row.name)
    lab.heal()
    base = tmp_path_factory.mktemp("prepare")
    description = lab.description()
    inventory_dir = base / "inventory"
    cluster.write_inventory(inventory_dir, description)
    params = cluster.write_params(inventory_dir, description)
    dns = description["host_ip"]
    params.write_text(params.read_text() + yaml.safe_dump({"upstream_dns_servers": [dns]}))
    restore = {name: _saved(lab, name) for name in HOSTS}
    break_node(lab, BROKEN)
    try:
        yield Prepared(lab, inventory_dir, params, base / "runs", dns)
    finally:
        for name, script in restore.items():
            lab.ssh(name, ["bash", "-c", script], timeout=60)


def run(p: Prepared, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], dict | None]:
    before = {f: f.read_bytes() for f in p.runs.glob("lab/*.summary.json")} if p.runs.exists() else {}
    proc = subprocess.run([sys.executable, "-m", "runbooks_lib.cli", "run", "prepare-nodes", "-f", str(p.params),
                           "--no-progress", "--cell-timeout", "180", *args],
                          cwd=REPO, env=lab_env(p.inventory_dir, p.runs, p.dns), capture_output=True, text=True,
                          timeout=timeout)
    new = sorted(f for f in p.runs.glob("lab/*.summary.json") if f not in before)
    return proc, (json.loads(new[-1].read_text()) if new else None)


def _bad_key(p: Prepared) -> list[str]:
    key = p.params.parent / "not-a-key"
    key.write_text("this is not a private key\n")
    return ["-p", "ssh_key", str(key)]


def _unpinned_host(p: Prepared) -> list[str]:
    ip = next(m["ip"] for m in p.lab.description()["machines"] if m["name"] == BROKEN)
    known = Path(p.lab.description()["known_hosts"]).read_text().splitlines()
    partial = p.params.parent / "known_hosts_without_node2"
    partial.write_text("".join(f"{line}\n" for line in known if not line.startswith(f"{ip},")))
    return ["-p", "known_hosts", str(partial)]


REFUSALS = {
    "unknown key": (lambda p: ["-p", "colour", "blue"], "colour: unknown parameter"),
    "wrong type": (lambda p: ["-p", "timeout_s", "soon"], "timeout_s: expected float"),
    "unknown node in limit": (lambda p: ["-p", "limit", "[node1, node9]"], "not in the inventory: node9"),
    "unreadable SSH key": (_bad_key, "is not a readable private key"),
    "host key not in known_hosts": (_unpinned_host, "is not in"),
    "no confirmation": (lambda p: ["-p", "dry_run", "False", "-p", "confirm", ""], "no confirmation"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_before_any_change(prepared: Prepared, case: str) -> None:
    args, message = REFUSALS[case]
    inventory = (prepared.inventory_dir / "hosts.yaml").read_bytes()
    marker = state(prepared.lab, BROKEN)
    proc, _ = run(prepared, "-p", "dry_run", "False", "-p", "confirm", "lab", *args(prepared))
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.lstrip().startswith("REFUSED") or "REFUSED: prepare-nodes" in out, out[-2000:]
    if case in ("unknown key", "wrong type", "unknown node in limit", "no confirmation"):
        assert message in out, out[-2000:]
    else:  # the full error is in the output notebook; the one-line result names its first line
        record = sorted(prepared.runs.glob("lab/*-prepare-nodes.ipynb"))[-1].read_text()
        assert message in record and "nothing was changed" in record, out[-2000:]
    assert (prepared.inventory_dir / "hosts.yaml").read_bytes() == inventory
    assert state(prepared.lab, BROKEN) == marker


def test_fixes_the_broken_machine_then_changes_nothing(prepared: Prepared) -> None:
    proc, summary = run(prepared, "-p", "dry_run", "False", "-p", "confirm", "lab")
    assert proc.returncode == 0 and summary, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.startswith("OK: prepare-nodes on lab"), proc.stdout
    assert summary["status"] == "ok" and summary["dry_run"] is False
    assert summary["prepared"] == list(HOSTS) and summary["not_prepared"] == []
    fixed = {c["step"] for c in summary["changes"] if c["host"] == BROKEN and c["changed"]}
    assert {"ip_forward", "resolv.conf"} <= fixed, summary["changes"]
    assert summary["changed"] >= 2
    assert summary["resolv_conf"][BROKEN] == {"link": nodes.STUB_RESOLV_CONF, "upstream": [prepared.dns], "ok": True}
    marker = state(prepared.lab, BROKEN)
    assert f"DNS={prepared.dns}" in marker and f"nameserver {prepared.dns}" in marker
    assert marker.split("|")[1].strip() == "1" and "net.ipv4.ip_forward = 1" in marker

    again, second = run(prepared, "-p", "dry_run", "False", "-p", "confirm", "lab")
    assert again.returncode == 0 and second, again.stdout + again.stderr[-3000:]
    assert second["changed"] == 0 and not any(c["changed"] for c in second["changes"])
    assert "(nothing to change)" in again.stdout
    assert state(prepared.lab, BROKEN) == marker


def test_run_records_hold_no_secrets(prepared: Prepared) -> None:
    records = list(prepared.runs.glob("lab/*.ipynb")) + list(prepared.runs.glob("lab/*.summary.json"))
    assert len(records) >= 4
    key = Path(prepared.lab.description()["ssh_key"]).read_text().splitlines()[1]
    for record in records:
        text = record.read_text()
        for secret in ("PRIVATE KEY", "client-key-data", "token:", "Bearer ", key):
            assert secret not in text, f"{record.name} holds {secret[:20]!r}"
