"""params/*.yaml validate against the runbooks' schemas; the target checks catch bad layouts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from runbooks_lib import schemas
from runbooks_lib.errors import BadParameters
from runbooks_lib.lab import cluster

PARAMS = Path(__file__).resolve().parents[2] / "params"
REPO = PARAMS.parent


@pytest.mark.parametrize("schema", [schemas.Target, schemas.DiagnosticsParams])
def test_lab_yaml_points_at_the_lab_in_use(schema: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKS_LAB_DIR", "/srv/lab-7")
    target = schemas.load(schema, [PARAMS / "lab.yaml"])
    assert target.cluster_name == "lab"
    assert target.inventory == Path("/srv/lab-7/inventory/hosts.yaml")
    assert target.kubeconfig == Path("/srv/lab-7/inventory/artifacts/admin.conf")
    assert target.known_hosts == Path("/srv/lab-7/ssh/known_hosts")
    assert target.kubespray_dir.resolve() == (REPO / "runbooks_lib" / "lab" / "kubespray").resolve()
    assert target.kubespray_dir.resolve().is_dir()
    monkeypatch.delenv("RUNBOOKS_LAB_DIR")
    assert schemas.load(schema, [PARAMS / "lab.yaml"]).ssh_key == Path("/var/lib/runbooks-lab/ssh/id_ed25519")


@pytest.mark.parametrize("schema", [schemas.Target, schemas.DiagnosticsParams])
def test_example_vps_is_the_articles_four_machines(schema: type) -> None:
    target = schemas.load(schema, [PARAMS / "example-vps.yaml"])
    assert len(target.hosts) == 4 and all(ip.startswith("203.0.113.") for ip in target.hosts.values())
    assert (len(target.control_planes), len(target.etcd_members), len(target.workers)) == (2, 3, 4)
    assert target.inventory == (REPO / "inventory" / "vps" / "hosts.yaml").resolve()
    assert target.ssh_key == Path("~/.ssh/id_ed25519_vps").expanduser()


def test_the_file_the_lab_writes_is_a_valid_target(tmp_path: Path) -> None:
    description = {"ssh_key": "/l/ssh/id_ed25519", "known_hosts": "/l/ssh/known_hosts", "machines": []}
    written = cluster.write_params(tmp_path, description)
    target = schemas.load(schemas.DiagnosticsParams, [written])
    assert target.inventory == tmp_path / "hosts.yaml"


def test_schema_defaults_match_params_lab_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no parameter file a runbook targets the lab, exactly as params/lab.yaml says."""
    monkeypatch.setenv("RUNBOOKS_LAB_DIR", "/srv/lab-7")
    from_file = schemas.load(schemas.DiagnosticsParams, [PARAMS / "lab.yaml"])
    defaults = schemas.from_namespace(schemas.DiagnosticsParams, {})
    for f in dataclasses.fields(schemas.Target):
        left, right = getattr(from_file, f.name), getattr(defaults, f.name)
        if isinstance(left, Path):
            left, right = left.resolve(), right.resolve()
        assert left == right, f.name


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
    bad.write_text("cluster_name: lab\nkubeconfg: /x\njournal_lines: many\n")
    with pytest.raises(BadParameters) as exc:
        schemas.load(schemas.DiagnosticsParams, [bad])
    assert "kubeconfg: unknown parameter (did you mean 'kubeconfig'?)" in str(exc.value)
    assert "journal_lines: expected int, got 'many'" in str(exc.value)


def test_inventory_dir_variable_overrides_the_lab_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKS_LAB_DIR", "/srv/lab-7")
    monkeypatch.setenv("RUNBOOKS_LAB_INVENTORY_DIR", "/tmp/inv-1")
    for target in (schemas.load(schemas.Target, [PARAMS / "lab.yaml"]), schemas.from_namespace(schemas.Target, {})):
        assert target.inventory == Path("/tmp/inv-1/hosts.yaml")
        assert target.kubeconfig == Path("/tmp/inv-1/artifacts/admin.conf")
        assert target.ssh_key == Path("/srv/lab-7/ssh/id_ed25519")


@pytest.mark.parametrize("runbook", ["prepare-nodes", "install-cluster"])
def test_example_vps_per_runbook_files_validate_and_never_point_at_the_lab(runbook: str) -> None:
    from runbooks_lib import runner

    book = runner.find(runbook)
    values, given = runner.resolve_parameters(
        book, [PARAMS / "example-vps.yaml", PARAMS / f"example-vps.{runbook}.yaml"])
    assert values.cluster_name == "vps"
    assert list(values.upstream_dns_servers) == ["192.0.2.53", "198.51.100.53"]
    assert "10.213." not in repr(given)  # nothing of the lab leaks into a real cluster's parameters
