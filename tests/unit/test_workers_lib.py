"""Library pieces of the add-worker and remove-worker runbooks: remove-node's vars, inventory edits, the
remove-worker preflight's decisions (already removed, last worker, stalling budgets),
deleting the test app, waiting for a rollout, disruption budgets and the DNS hook."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runbooks_lib import errors, ingress, inventory, kube, kubespray
from tests.unit.test_kube_client import FakeApiServer, api, fake  # noqa: F401 - fixtures
from tests.unit.test_kubespray import _checkout, V231  # noqa: F401

DATA = Path(__file__).resolve().parent.parent / "data"


# ---- remove-node's variables


def test_remove_node_vars_alive_and_dead() -> None:
    alive = kubespray.RemoveNodeVars(("node4",), drain_timeout_s=120)
    assert alive.extra_vars() == {"node": "node4", "drain_timeout": "120s", "drain_grace_period": "10"}
    dead = kubespray.RemoveNodeVars(("node4", "node5"), dead=True, drain_timeout_s=60, drain_grace_period_s=5)
    assert dead.extra_vars() == {"node": "node4,node5", "reset_nodes": "false", "allow_ungraceful_removal": "true",
                                 "drain_timeout": "60s", "drain_grace_period": "5"}
    # Never a boolean that means "off" for a var upstream tests without |bool.
    assert "false" not in [v for k, v in dead.extra_vars().items() if k != "reset_nodes"]
    for bad in ((), ("node4", "a b")):
        with pytest.raises(errors.BadParameters):
            kubespray.RemoveNodeVars(bad)
    with pytest.raises(errors.BadParameters):
        kubespray.RemoveNodeVars(("node4",), drain_timeout_s=0)


def test_remove_node_vars_on_the_command_line(tmp_path: Path) -> None:
    checkout = kubespray.detect(_checkout(tmp_path / "kubespray", V231, galaxy="2.31.0"))
    inv = tmp_path / "hosts.yaml"
    inv.write_text("all: {}\n")
    (tmp_path / "known_hosts").write_text("")
    cmd = kubespray.command(checkout, "remove-node", inventory=inv, known_hosts=tmp_path / "known_hosts",
                            extra_vars=kubespray.RemoveNodeVars(("node4",), dead=True).extra_vars())
    pairs = [cmd.argv[i + 1] for i, a in enumerate(cmd.argv) if a == "-e"]
    assert pairs == ["skip_confirmation=yes", "node=node4", "reset_nodes=false", "allow_ungraceful_removal=true",
                     "drain_timeout=60s", "drain_grace_period=10"]


def test_with_workers_appends_at_the_end_keeping_comments() -> None:
    for path in (DATA / "inventory.current.ini", DATA / "hosts.commented.yaml"):
        inv = inventory.load(path)
        before = inv.dumps()
        edited = inventory.workers.with_workers(inv, {"new1": "10.99.0.1", "new2": "10.99.0.2"})
        assert inv.dumps() == before, "the original is left alone"
        assert edited.workers[-2:] == ["new1", "new2"] and edited.workers[:-2] == inv.workers
        assert edited.host("new1").ip == "10.99.0.1" and "new1" in edited.members("k8s_cluster")
        assert edited.dumps().startswith(before.splitlines()[0])  # the leading comment is kept
        again = inventory.workers.with_workers(edited, {"new1": "10.99.0.1"})
        assert again.dumps() == edited.dumps(), "a re-run changes nothing"
        back = inventory.workers.without_hosts(edited, ["new1", "new2"])
        assert back.dumps() == before


def test_with_workers_refuses_duplicates_and_non_workers() -> None:
    inv = inventory.load(DATA / "inventory.current.ini")
    with pytest.raises(errors.BadParameters, match="already used by host 'node4'"):
        inventory.workers.with_workers(inv, {"new1": "10.10.1.6"})
    with pytest.raises(errors.BadParameters, match="with IP 10.10.1.6, not"):
        inventory.workers.with_workers(inv, {"node4": "10.99.0.9"})
    with pytest.raises(errors.BadParameters, match="not a worker"):
        inventory.workers.with_workers(inv, {"node1": "10.10.1.3"})


def test_without_hosts_leaves_every_group_and_all_hosts() -> None:
    inv = inventory.load(DATA / "inventory.current.ini")
    out = inventory.workers.without_hosts(inv, ["node4", "ghost"])
    assert "node4" not in out.hosts and "node4" not in out.members("k8s_cluster")
    assert not any("node4 " in line for line in out.dumps().splitlines() if not line.startswith("#"))
    assert out.workers == ["node5"] and "node4" in inv.hosts


# ---- Kubernetes API: delete, rollout, disruption budgets


def _deployment(fake: FakeApiServer, replicas: int, **status: int) -> None:
    fake.add("/apis/apps/v1/namespaces/default/deployments/sticky-session", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sticky-session", "namespace": "default", "generation": 2},
        "spec": {"replicas": replicas}, "status": {"observedGeneration": 2, **status}})


def test_wait_for_rollout(fake: FakeApiServer, api) -> None:  # noqa: F811
    with pytest.raises(errors.PreconditionFailed, match="does not exist"):
        kube.wait_for_rollout(api, "sticky-session", timeout=1, interval=0.1)
    _deployment(fake, 3, updatedReplicas=3, readyReplicas=2, availableReplicas=2)
    with pytest.raises(errors.WaitTimedOut, match="2 ready"):
        kube.wait_for_rollout(api, "sticky-session", timeout=0.3, interval=0.1)
    _deployment(fake, 3, updatedReplicas=3, readyReplicas=3, availableReplicas=3)
    done = kube.wait_for_rollout(api, "sticky-session", timeout=1, interval=0.1)
    assert done.complete and done.line().startswith("default/sticky-session: 3/3 updated")


def test_delete_app_deletes_its_three_objects_once(fake: FakeApiServer, api) -> None:  # noqa: F811
    created = kube.apply(api, ingress.app_manifests("sticky-session", "uuid.awesome.lab", replicas=2))
    assert [a.action for a in created] == ["created"] * 3
    deleted = ingress.delete_app(api, "sticky-session")
    assert [(a.kind, a.action) for a in deleted] == [("Deployment", "deleted"), ("Service", "deleted"),
                                                     ("Ingress", "deleted")]
    assert not fake.objects
    assert [a.action for a in ingress.delete_app(api, "sticky-session")] == ["absent"] * 3


def test_disruption_budgets_match_pods(fake: FakeApiServer, api) -> None:  # noqa: F811
    fake.add("/apis/policy/v1/poddisruptionbudgets", {"items": [
        {"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"app": "web"}}},
         "status": {"disruptionsAllowed": 1}}]})
    [pdb] = kube.disruption_budgets(api)
    assert pdb.allowed == 1
    assert pdb.matches({"metadata": {"namespace": "default", "labels": {"app": "web", "x": "y"}}})
    assert not pdb.matches({"metadata": {"namespace": "other", "labels": {"app": "web"}}})
    assert not pdb.matches({"metadata": {"namespace": "default", "labels": {}}})


# ---- the DNS hook


def test_dns_command_and_hook(tmp_path: Path) -> None:
    assert ingress.dns_command(["tool", "set", "{name}", "{ips}", "--zone={name}"], "a.example", ["1.2.3.4", "1.2.3.5"]) \
        == ["tool", "set", "a.example", "1.2.3.4", "1.2.3.5", "--zone=a.example"]
    out = tmp_path / "records"
    hook = [sys.executable, "-c", f"import sys; open({str(out)!r}, 'w').write(' '.join(sys.argv[1:]))", "{name}",
            "{ips}"]
    ingress.update_dns(hook, "a.example", ["1.2.3.4"], timeout=30)
    assert out.read_text() == "a.example 1.2.3.4"
    with pytest.raises(errors.CommandFailed):
        ingress.update_dns([sys.executable, "-c", "raise SystemExit(3)", "{ips}"], "a.example", [], timeout=30)


# ---- remove-worker's preflight decisions


def _node(name: str, ready: str = "True", cordoned: bool = False) -> kube.NodeInfo:
    return kube.NodeInfo(name, ready, (), (), cordoned)


def test_already_removed_needs_the_backup_and_no_node_object() -> None:
    backup = inventory.load(DATA / "inventory.current.ini")
    current = inventory.workers.without_hosts(backup, ["node5"])
    names = ["node4", "node5", "node9"]
    assert inventory.workers.already_removed(names, current, backup, {"node1", "node4"}) == ["node5"]
    assert inventory.workers.already_removed(names, current, None, {"node1"}) == [], "no .bak: a typo"
    assert inventory.workers.already_removed(["node5"], current, backup, {"node5"}) == [], "still in the API"
    assert inventory.workers.already_removed(["node5"], backup, backup, set()) == [], "still in the inventory"
    not_worker = inventory.workers.without_hosts(backup, ["node1"])
    assert inventory.workers.already_removed(["node1"], not_worker, backup, set()) == [], "not a worker in the .bak"


def test_last_worker_refusal_counts_ready_schedulable_workers_that_stay() -> None:
    workers = ["node3", "node4"]
    ready = {"node3": _node("node3"), "node4": _node("node4")}
    refuse = inventory.workers.last_worker_refusal
    assert refuse(workers, ["node4"], ready, 3) == ""
    for why, nodes in (("NotReady", {**ready, "node3": _node("node3", "False")}),
                       ("Ready,SchedulingDisabled", {**ready, "node3": _node("node3", cordoned=True)}),
                       ("has no Node object", {"node4": ready["node4"]})):
        text = refuse(workers, ["node4"], nodes, 3)
        assert text.startswith("removing node4 would leave no Ready, schedulable worker") and f"node3 {why}" in text
        assert "3 pods would have nowhere to go" in text
        assert refuse(workers, ["node4"], nodes, 3, allow_last_worker=True) == ""
        assert refuse(workers, ["node4"], nodes, 0) == "", "nothing to evict"
    assert "no Ready, schedulable worker, and 2 pods" in refuse(workers, workers, ready, 2)


def test_stalling_budgets_name_budgets_with_no_disruption_allowed() -> None:
    pod = {"metadata": {"namespace": "default", "name": "web-1", "labels": {"app": "web"}}}
    other = {"metadata": {"namespace": "default", "name": "db-1", "labels": {"app": "db"}}}
    blocked = kube.DisruptionBudget("default", "web", {"app": "web"}, 0)
    free = kube.DisruptionBudget("default", "db", {"app": "db"}, 1)
    assert inventory.workers.stalling_budgets({"node4": [pod, other]}, [blocked, free]) == [
        "PodDisruptionBudget default/web allows 0 disruptions and covers default/web-1 on node4"]
    assert inventory.workers.stalling_budgets({"node4": [other]}, [blocked, free]) == []
    assert inventory.workers.stalling_budgets({}, [blocked]) == []


def test_load_backup_reads_the_bak_in_the_inventory_format(tmp_path: Path) -> None:
    for name in ("inventory.current.ini", "hosts.commented.yaml"):
        path = tmp_path / name
        assert inventory.workers.load_backup(path) is None
        original = inventory.load(DATA / name)
        inventory.workers.backup_path(path).write_text(original.dumps())
        assert inventory.workers.backup_path(path).name == f"{name}.bak"
        backup = inventory.workers.load_backup(path)
        assert backup is not None and backup.workers == original.workers and backup.path.name.endswith(".bak")


def test_converge_dns_sets_waits_or_names_the_manual_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a change of machines the app's name resolves to every ingress node and to no address that is gone."""
    records = {"app.example.com": ["203.0.113.11", "203.0.113.12"]}
    monkeypatch.setattr(ingress, "resolve", lambda name, server, timeout=3.0: tuple(sorted(records[name])))
    hook = tmp_path / "dns-set"
    hook.write_text("#!/bin/sh\necho \"$@\" > \"$0.called\"\n")
    hook.chmod(0o755)
    want = ["203.0.113.12", "203.0.113.15"]  # node1 (.11) replaced by node5 (.15)

    manual = ingress.converge_dns("app.example.com", want, server="192.0.2.53", gone=["203.0.113.11"])
    assert not manual.set_by_hook and manual.manual_step == (
        "make app.example.com resolve to 203.0.113.12, 203.0.113.15 (add 203.0.113.15, remove 203.0.113.11)")
    assert "MANUAL STEP" in manual.line()

    def hook_sets(*_a, **_k):  # the provider applies the change: the next answer has the new records
        records["app.example.com"] = list(want)
    monkeypatch.setattr(ingress, "update_dns", lambda *a, **k: (hook_sets(), ingress.local.run(
        ingress.dns_command([str(hook), "{name}", "{ips}"], a[1], a[2]), timeout=10))[1])
    done = ingress.converge_dns("app.example.com", want, command=[str(hook), "{name}", "{ips}"], server="192.0.2.53",
                                gone=["203.0.113.11"], settle_timeout=5)
    assert done.set_by_hook and done.resolved == tuple(want) and not done.manual_step
    assert (tmp_path / "dns-set.called").read_text().split() == ["app.example.com", *want]
    again = ingress.converge_dns("app.example.com", want, command=[str(hook), "{name}", "{ips}"], server="192.0.2.53")
    assert not again.set_by_hook and again.line() == "DNS app.example.com: already right"
    blind = ingress.converge_dns("app.example.com", want, gone=["203.0.113.11"])
    assert blind.manual_step.endswith("only (drop 203.0.113.11)")


@pytest.mark.parametrize("error, ready, state, words", [
    (None, True, "alive", "answers SSH"),
    (errors.HostUnreachable("cannot reach node4 at 10.0.0.14:22 within 10s: timed out"), False, "dead", "NotReady"),
    (errors.HostUnreachable("cannot reach node4 at 10.0.0.14:22 within 10s: [Errno 113] No route to host"), None,
     "dead", "gone"),
    (errors.HostUnreachable("cannot reach node4 at 10.0.0.14:22 within 10s: timed out"), True, "refused",
     "Node is still Ready"),
    (errors.HostKeyError("REMOTE HOST IDENTIFICATION HAS CHANGED for node4"), False, "refused", "host key"),
    (errors.CommandFailed("SSH authentication as root failed on node4 (10.0.0.14)"), False, "refused",
     "without a timeout"),
    (errors.HostUnreachable("cannot reach node4 at 10.0.0.14:22 within 10s: [Errno None] Unable to connect to port "
                            "22 on 10.0.0.14 (Connection refused)"), False, "refused", "something answers"),
])
def test_dead_means_no_answer_and_not_ready(error, ready, state, words) -> None:
    """A changed host key, a failed login, a refused connection or a Ready node is never taken for a dead one."""
    found = inventory.workers.classify_node("node4", error, ready)
    assert (found.name, found.state) == ("node4", state) and words in found.reason, found
