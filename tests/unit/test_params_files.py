"""params/*.yaml validate against the runbooks' schemas; no lab value is a default; the target checks catch bad layouts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from runbooks_lib import params, runner, schemas
from runbooks_lib.errors import BadParameters
from runbooks_lib.lab import cluster

PARAMS = Path(__file__).resolve().parents[2] / "params"
REPO = PARAMS.parent
RUNBOOKS = sorted(schemas.RUNBOOK_SCHEMAS)
# What a lab value looks like: its subnet, its variables, its directories, its app name, its stand-in.
LAB_VALUE = re.compile(r"10\.213\.|RUNBOOKS_LAB|runbooks-lab|awesome\.lab|runbooks_lib/lab")


@pytest.mark.parametrize("schema", [schemas.Target, schemas.DiagnosticsParams])
def test_lab_yaml_points_at_the_lab_in_use(schema: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKS_LAB_DIR", "/srv/lab-7")
    target = schemas.load(schema, [PARAMS / "lab.yaml"])
    assert target.cluster_name == "lab"
    assert target.inventory == Path("/srv/lab-7/inventory/hosts.yaml")
    assert target.kubeconfig == Path("/srv/lab-7/inventory/artifacts/admin.conf")
    assert target.known_hosts == Path("/srv/lab-7/ssh/known_hosts")
    assert target.kubespray_dir == Path("/srv/lab-7/kubespray")  # `runbooks lab up` links it to the stand-in
    monkeypatch.delenv("RUNBOOKS_LAB_DIR")
    assert schemas.load(schema, [PARAMS / "lab.yaml"]).ssh_key == Path("/var/lib/runbooks-lab/ssh/id_ed25519")


@pytest.mark.parametrize("runbook", RUNBOOKS)
def test_every_runbook_has_lab_values_in_params_lab_yaml(runbook: str) -> None:
    values, _ = runner.resolve_parameters(runner.find(runbook), [PARAMS / "lab.yaml"])
    assert values.cluster_name == "lab"


@pytest.mark.parametrize("runbook", RUNBOOKS)
def test_example_vps_serves_every_runbook_with_no_lab_value(runbook: str) -> None:
    values, given = runner.resolve_parameters(runner.find(runbook), [PARAMS / "example-vps.yaml"])
    assert values.cluster_name == "vps"
    assert not LAB_VALUE.search(repr(given)), given  # nothing of the lab leaks into a real cluster's parameters
    assert not LAB_VALUE.search(repr(values)), values  # nor from a default
    for key in schemas.RUNBOOK_SCHEMAS[runbook].REQUIRED:
        assert key in given, f"{runbook}: example-vps.yaml has no {key}"


@pytest.mark.parametrize("runbook", RUNBOOKS)
def test_no_default_is_a_lab_value_and_every_site_value_is_required(runbook: str, tmp_path: Path) -> None:
    """Without a parameter file a run is refused before anything is contacted, naming every missing site value."""
    schema = schemas.RUNBOOK_SCHEMAS[runbook]
    book = runner.find(runbook)
    defaults = params.notebook_parameters(book.path)
    assert not LAB_VALUE.search(repr(defaults)), defaults
    assert not LAB_VALUE.search(repr([f.default for f in dataclasses.fields(schema)]))
    with pytest.raises(BadParameters) as info:
        runner.resolve_parameters(book, [], cwd=tmp_path)
    message = str(info.value)
    assert f"no value for {', '.join(schema.REQUIRED)} " in message, message
    assert "nothing was contacted" in message and "params/lab.yaml" in message


@pytest.mark.parametrize("runbook", RUNBOOKS)
def test_required_parameters_say_so_in_the_cell_and_in_runbooks_params(runbook: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    book = runner.find(runbook)
    required = set(schemas.RUNBOOK_SCHEMAS[runbook].REQUIRED)
    for line in runner.parameter_lines(book):
        assert line.help.startswith("required: ") == (line.name in required), line.render()
    from runbooks_lib import cli

    assert cli.main(["params", runbook]) == 0
    out = capsys.readouterr().out
    for name in required:
        assert re.search(rf"^  {name}: .*\[required\]$", out, re.M), out


def test_a_file_shares_top_level_keys_and_keeps_sections_to_their_runbook(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"cluster_name": "c", "app_host": "a.example", "journal_lines": 5,
                                 "add-worker": {"new_workers": {"n5": "192.0.2.5"}},
                                 "diagnostics": {"journal_lines": 7}}))
    raw = params.read_files([f])
    diag, left = schemas.file_values(schemas.DiagnosticsParams, raw)
    assert diag == {"cluster_name": "c", "journal_lines": 7} and left == ["app_host"]
    add, left = schemas.file_values(schemas.AddWorkerParams, raw)
    assert add["new_workers"] == {"n5": "192.0.2.5"} and "journal_lines" in left and "new_workers" not in left
    f.write_text("cluster_name: c\nadd-worker: [n5]\n")
    with pytest.raises(BadParameters, match="must be a mapping"):
        schemas.file_values(schemas.AddWorkerParams, params.read_files([f]))


def test_runbooks_params_env_fills_only_untouched_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """JupyterLab and nbval: $RUNBOOKS_PARAMS stands in for the defaults; a value set in the cell wins."""
    monkeypatch.setenv("RUNBOOKS_LAB_DIR", "/srv/lab-7")
    monkeypatch.setenv("RUNBOOKS_PARAMS", "params/lab.yaml")
    cell = params.notebook_parameters(runner.find("diagnostics").path)
    p = schemas.from_namespace(schemas.DiagnosticsParams, {**cell, "journal_lines": 3})
    assert p.inventory == Path("/srv/lab-7/inventory/hosts.yaml") and p.cluster_name == "lab"
    assert p.journal_lines == 3
    p = schemas.from_namespace(schemas.DiagnosticsParams, {**cell, "cluster_name": "mine"})
    assert p.cluster_name == "mine"
    monkeypatch.delenv("RUNBOOKS_PARAMS")
    with pytest.raises(BadParameters, match="no value for cluster_name, inventory, ssh_key, known_hosts, kubeconfig"):
        schemas.from_namespace(schemas.DiagnosticsParams, cell)


def test_the_file_the_lab_writes_serves_every_runbook(tmp_path: Path) -> None:
    description = {"ssh_key": "/l/ssh/id_ed25519", "known_hosts": "/l/ssh/known_hosts", "host_ip": "10.9.0.1",
                   "machines": [{"name": f"node{i}", "ip": f"10.9.0.1{i}"} for i in range(1, 6)]}
    written = cluster.write_params(tmp_path, description)
    target = schemas.load(schemas.DiagnosticsParams, [written])
    assert target.inventory == tmp_path / "hosts.yaml"
    replace = schemas.load(schemas.ReplaceParams, [written])
    assert (replace.dead_node, replace.replacement, replace.replacement_ip) == ("node1", "node5", "10.9.0.15")
    assert schemas.load(schemas.FailoverParams, [written]).vip == "10.9.0.100"


@pytest.mark.parametrize("change, message", [
    ({"etcd_members": ("node1", "node2")}, "etcd needs an odd number"),
    ({"hosts": {"node1": "203.0.113.11", "node2": "203.0.113.11", "node3": "203.0.113.13", "node4": "203.0.113.14"}},
     "node2 and node1 have the same address"),
    ({"workers": ("node1", "node9")}, "'node9' is not in hosts"),
    ({"hosts": {"Node_1": "203.0.113.11"}, "control_planes": ("Node_1",), "etcd_members": ("Node_1",),
      "workers": ()}, "'Node_1' is not a valid host name"),
    ({"hosts": {"node1": "203.0.113.300"}, "control_planes": ("node1",), "etcd_members": ("node1",),
      "workers": ()}, "is not an IP address"),
])
def test_bad_layouts_are_refused(change: dict, message: str) -> None:
    good = schemas.load(schemas.Target, [PARAMS / "example-vps.yaml"])
    with pytest.raises(BadParameters, match=message):
        schemas.check_target(dataclasses.replace(good, **change))


def test_unknown_key_and_wrong_type_in_a_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: lab\ninventory: /i\nssh_key: /k\nknown_hosts: /h\nkubeconfig: /c\n"
                   "kubeconfg: /x\njournal_lines: many\n")
    with pytest.raises(BadParameters) as exc:
        schemas.load(schemas.DiagnosticsParams, [bad])
    assert "kubeconfg: unknown parameter (did you mean 'kubeconfig'?)" in str(exc.value)
    assert "journal_lines: expected int, got 'many'" in str(exc.value)


def test_inventory_dir_variable_overrides_the_lab_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKS_LAB_DIR", "/srv/lab-7")
    monkeypatch.setenv("RUNBOOKS_LAB_INVENTORY_DIR", "/tmp/inv-1")
    monkeypatch.setenv("RUNBOOKS_PARAMS", "params/lab.yaml")
    for target in (schemas.load(schemas.Target, [PARAMS / "lab.yaml"]), schemas.from_namespace(schemas.Target, {})):
        assert target.inventory == Path("/tmp/inv-1/hosts.yaml")
        assert target.kubeconfig == Path("/tmp/inv-1/artifacts/admin.conf")
        assert target.ssh_key == Path("/srv/lab-7/ssh/id_ed25519")


def test_example_paths_keep_credentials_out_of_the_repository() -> None:
    """The example's inventory, kubeconfig, known_hosts and backups live outside the checkout (or ignored)."""
    import subprocess

    values = schemas.load(schemas.RestoreParams, [PARAMS / "example-vps.yaml"])
    for key in ("inventory", "kubeconfig", "known_hosts", "backup_dir", "ssh_key"):
        path = getattr(values, key).resolve()
        inside = REPO in path.parents
        if inside:
            ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(path)], check=False)
            assert ignored.returncode == 0, f"{key} {path} is inside the repository and not ignored"
    for where in ("runs/vps/x.ipynb", "inventory/vps/hosts.yaml", "inventory/vps/artifacts/admin.conf",
                  "inventory/vps/credentials/kubeadm_certificate_key.creds", "clusters/vps/known_hosts"):
        ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", where], check=False)
        assert ignored.returncode == 0, f"{where} is not ignored by .gitignore"
