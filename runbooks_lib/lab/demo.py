"""``make demo``: the lab up, then the runbooks prepare-nodes -> install-cluster -> diagnostics -> failover-test.

The runbooks run through :func:`runbooks_lib.runner.run`, the code path of
``runbooks run NAME -f params/lab.yaml -p dry_run False -p confirm lab``, so
the demo leaves the same run records (``runs/lab/``) an operator's runs do.
The lab plays the parts an operator's world plays for a real cluster, and
nothing more: the machines (``runbooks lab up``), an inventory naming them
(``runbooks lab cluster --no-install``; kept when it exists) and the DNS
provider's record of the test app's name on every node (the lab's dnsmasq).
The parameters that differ from ``params/lab.yaml`` come from the lab's
description (addresses, its DNS server), so a second lab
(RUNBOOKS_LAB_BRIDGE/SUBNET/DIR) gets a correct demo too.

A runbook whose notebook does not exist is skipped with a line saying so;
after a failed runbook the destructive ones that follow are not run (the
read-only ones still are: they show the state the failure left).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runbooks_lib import errors, runner

PARAMS_FILE = runner.repo_root() / "params" / "lab.yaml"
CLUSTER = "lab"  # params/lab.yaml's cluster_name: the headless confirmation token
APP_HOST = "uuid.awesome.lab"  # the install runbook's test app host name
K8S_NODES = ("node1", "node2", "node3", "node4")  # the install runbook's layout; node5 stays spare


@dataclass(frozen=True)
class DemoRunbook:
    """One runbook of the demo and its parameters beyond params/lab.yaml, made from the lab's description."""

    name: str
    parameters: Callable[[Mapping[str, Any]], dict[str, Any]]


def _node_ips(description: Mapping[str, Any]) -> dict[str, str]:
    ips = {m["name"]: m["ip"] for m in description.get("machines", [])}
    return {name: ips[name] for name in K8S_NODES if name in ips}


def _failover_lab(description: Mapping[str, Any]) -> dict[str, Any]:
    """The failover drill's lab addresses: its DNS server and a free VIP (.100 of the lab's subnet)."""
    import ipaddress

    net = ipaddress.ip_network(description.get("subnet") or f"{description['host_ip']}/24", strict=False)
    return {"dns_server": description["host_ip"], "vip": str(net.network_address + 100),
            "vip_prefix": net.prefixlen}


RUNBOOKS: tuple[DemoRunbook, ...] = (
    DemoRunbook("prepare-nodes", lambda d: {"dry_run": False, "confirm": CLUSTER,
                                            "upstream_dns_servers": [d["host_ip"]]}),
    DemoRunbook("install-cluster", lambda d: {"dry_run": False, "confirm": CLUSTER, "hosts": _node_ips(d),
                                              "dns_server": d["host_ip"]}),
    DemoRunbook("diagnostics", lambda d: {}),
    DemoRunbook("failover-test", lambda d: {"dry_run": False, "confirm": CLUSTER, **_failover_lab(d)}),
)


@dataclass(frozen=True)
class Outcome:
    """How one runbook of the demo ended: ``missing`` (no notebook) and ``not run`` changed nothing."""

    name: str
    status: Literal["ok", "failed", "refused", "missing", "not run"]
    line: str
    exit_code: int = 0
    output: Path | None = None


def run_runbooks(
    description: Mapping[str, Any],
    *,
    runbooks: Sequence[DemoRunbook] = RUNBOOKS,
    files: Sequence[Path] = (PARAMS_FILE,),
    find: Callable[[str], runner.Runbook] = runner.find,
    run: Callable[..., runner.RunResult] = runner.run,
    echo: Callable[[str], None] = print,
) -> list[Outcome]:
    """Run ``runbooks`` in order with ``run`` (``runner.run``'s signature) and return their outcomes.

    Each line is given to ``echo`` as it is known. Side effects: those of the
    runbooks (they change the lab's machines), their run records.
    """
    outcomes: list[Outcome] = []
    failed: str | None = None
    for item in runbooks:
        try:
            book = find(item.name)
        except errors.BadParameters:
            line = (f"SKIPPED: {item.name}: its notebook is not in {runner.notebooks_dir()} yet "
                    f"(`runbooks list` shows the runbooks there are)")
            outcomes.append(Outcome(item.name, "missing", line))
            echo(line)
            continue
        if failed and book.destructive:
            line = f"NOT RUN: {item.name}: {failed} did not succeed, and {item.name} changes the cluster"
            outcomes.append(Outcome(item.name, "not run", line))
            echo(line)
            continue
        overrides = item.parameters(description)
        shown = " ".join(f"-p {k} {v!r}" for k, v in overrides.items())
        echo(f"\n== runbooks run {item.name} " + " ".join(f"-f {f}" for f in files) + (f" {shown}" if shown else ""))
        try:
            result = run(book, files=list(files), overrides=overrides, cwd=runner.repo_root())
        except (errors.BadParameters, runner.RunRefused) as exc:
            outcome = Outcome(item.name, "refused", f"REFUSED: {item.name}: {exc}", runner.EXIT_REFUSED)
        else:
            outcome = Outcome(item.name, result.status, result.line(), result.exit_code, result.output)
        outcomes.append(outcome)
        echo(outcome.line)
        if outcome.status != "ok" and failed is None:
            failed = item.name
    return outcomes


def report(outcomes: Sequence[Outcome], runs: Path) -> str:
    """Where the run records are and each runbook's one-line result."""
    lines = [f"Run records: {runs} (each run's executed notebook UTC-TIMESTAMP-NAME.ipynb, "
             f"NAME.summary.json beside it)"]
    lines += [f"  {o.line}" for o in outcomes]
    return "\n".join(lines)


def failover_report(outcomes: Sequence[Outcome]) -> str:
    """The failover drill's impact table and the path of its plot, read from its summary ("" if it did not run)."""
    import json

    import pandas as pd

    from runbooks_lib import runbook

    drill = next((o for o in outcomes if o.name == "failover-test" and o.output is not None), None)
    if drill is None:
        return ""
    try:
        summary = json.loads(runbook.summary_path_for(drill.output).read_text())
    except (OSError, ValueError):
        return ""
    table = pd.DataFrame.from_dict(summary.get("impact") or {}, orient="index")
    lines = ["Failover drill: impact per front door", table.to_string() if not table.empty else "(no measurements)",
             f"plot: {summary.get('figure')}", str(summary.get("verdict", ""))]
    return "\n".join(lines)


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """The worst exit status of the runbooks that ran (0 when every one that exists succeeded)."""
    return max((o.exit_code for o in outcomes if o.status in ("ok", "failed", "refused")), default=0)


def prepare_lab(lab: Any, description: Mapping[str, Any]) -> Path:
    """The lab's part of an operator's world: an inventory (kept if present) and the app's DNS record.

    Side effects: writes LAB_DIR/inventory (hosts.yaml, group_vars, lab.yaml)
    when hosts.yaml is missing; starts the lab's dnsmasq and points
    :data:`APP_HOST` at the nodes' addresses. Returns hosts.yaml.
    """
    from runbooks_lib.lab import cluster, dns

    inventory_dir = Path(os.environ.get("RUNBOOKS_LAB_INVENTORY_DIR") or lab.config.state_dir / "inventory")
    hosts = inventory_dir / "hosts.yaml"
    if not hosts.is_file():
        cluster.write_inventory(inventory_dir, description)
        cluster.write_params(inventory_dir, description)
    server = dns.server()  # the running one's settings, if it runs: start() is then a no-op
    server.start()
    server.set_records(APP_HOST, list(_node_ips(description).values()))
    return hosts


def run(nodes: int = 5) -> int:
    """Boot the lab (idempotent), run the demo runbooks against it, print the records and results."""
    from runbooks_lib.lab.machines import Lab, status_table

    lab = Lab(log=lambda message: print(message, file=sys.stderr, flush=True))
    rows = lab.up(nodes=nodes)
    print(status_table(rows))
    description = lab.description()
    hosts = prepare_lab(lab, description)
    print(f"inventory {hosts}; DNS {APP_HOST} -> {', '.join(_node_ips(description).values())} "
          f"on {description['host_ip']}", flush=True)
    outcomes = run_runbooks(description)
    print()
    print(report(outcomes, runner.runs_dir() / CLUSTER))
    drill = failover_report(outcomes)
    if drill:
        print()
        print(drill)
    return exit_code(outcomes)
