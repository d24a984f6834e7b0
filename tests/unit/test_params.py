"""runbooks_lib.params: typed, validated runbook parameters."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nbformat
import pytest

from runbooks_lib import errors, params


class Strategy(enum.Enum):
    DNS = "dns"
    NODE_IP = "node-ip"


@dataclass(frozen=True)
class Probe:
    rate: float = 20.0
    path: str = "/"


@dataclass(frozen=True)
class ReplaceParams:
    cluster: str = "lab"
    inventory: Path = Path("inventory/hosts.yaml")
    ansible_playbook: str = "ansible-playbook"
    node: str = "node1"
    mode: Literal["alive", "dead"] = "alive"
    strategy: Strategy = Strategy.DNS
    dry_run: bool = True
    confirm: str = ""
    timeout_s: float = 1800
    retries: int = 3
    ssh_key_file: Path | None = None
    ips: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    probe: Probe = field(default_factory=Probe)


def test_defaults_and_paths_relative_to_base(tmp_path: Path) -> None:
    p = params.validate(ReplaceParams, {}, base_dir=tmp_path)
    assert p.inventory == tmp_path / "inventory/hosts.yaml"
    assert p.dry_run is True and p.strategy is Strategy.DNS and p.ssh_key_file is None
    home = params.validate(ReplaceParams, {"ssh_key_file": "~/.ssh/id_ed25519"}, base_dir=tmp_path)
    assert home.ssh_key_file == Path.home() / ".ssh/id_ed25519"
    absolute = params.validate(ReplaceParams, {"inventory": "/etc/kubespray/hosts.yaml"}, base_dir=tmp_path)
    assert absolute.inventory == Path("/etc/kubespray/hosts.yaml")


def test_typed_values_are_accepted() -> None:
    p = params.validate(ReplaceParams, {"mode": "dead", "strategy": "node-ip", "timeout_s": 60, "retries": 5,
                                        "ips": ["10.0.0.1"], "labels": {"a": "b"}, "probe": {"rate": 5}})
    assert p.mode == "dead" and p.strategy is Strategy.NODE_IP
    assert p.timeout_s == 60.0 and isinstance(p.timeout_s, float)
    assert p.probe == Probe(rate=5.0)
    with pytest.raises(AttributeError):
        p.mode = "alive"  # type: ignore[misc]


def test_every_problem_is_reported_with_type_and_allowed_values() -> None:
    with pytest.raises(errors.BadParameters) as info:
        params.validate(ReplaceParams, {
            "mode": "zombie", "strategy": "vip", "dry_run": "false", "retries": 2.5, "timeout_s": True,
            "ips": "10.0.0.1", "nodee": "x", "probe": {"rate": "fast", "colour": 1},
        })
    message = str(info.value)
    assert "mode: 'zombie' is not allowed; allowed values: 'alive', 'dead'" in message
    assert "strategy: 'vip' is not allowed; allowed values: 'dns', 'node-ip'" in message
    assert "dry_run: expected bool (True/False), got 'false'" in message
    assert "retries: expected int, got 2.5" in message
    assert "timeout_s: expected float, got True" in message
    assert "ips: expected a list" in message
    assert "nodee: unknown parameter (did you mean 'node'?)" in message
    assert "probe.colour: unknown parameter" in message
    assert "nothing was run" in message


def test_secrets_are_refused_with_a_path_hint() -> None:
    for key in ("ssh_password", "api_token", "client_secret", "become_passwd"):
        with pytest.raises(errors.BadParameters) as info:
            params.validate(ReplaceParams, {key: "x"})
        assert f"{key} looks like a secret" in str(info.value)
        assert f"{key}_file" in str(info.value)
    assert not params.secret_like("token_file") and not params.secret_like("vault_password_file")

    @dataclass(frozen=True)
    class Leaky:
        ssh_password: str = ""

    with pytest.raises(errors.BadParameters, match="declare ssh_password_file"):
        params.validate(Leaky, {})


def test_papermill_injected_paths_are_ignored() -> None:
    p = params.validate(ReplaceParams, {"PAPERMILL_OUTPUT_PATH": "/runs/x.ipynb", "node": "node3"})
    assert p.node == "node3"


def test_files_merge_in_order_then_values_override(tmp_path: Path) -> None:
    base = tmp_path / "lab.yaml"
    base.write_text("cluster: lab\nnode: node2\nmode: dead\n")
    site = tmp_path / "site.yaml"
    site.write_text("# site overrides\nnode: node4\ntimeout_s: 600\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    p = params.load(ReplaceParams, files=[base, site, empty], values={"dry_run": False, "confirm": "lab"},
                    base_dir=tmp_path)
    assert (p.cluster, p.node, p.mode, p.timeout_s, p.dry_run, p.confirm) == ("lab", "node4", "dead", 600.0,
                                                                               False, "lab")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.BadParameters, match="does not exist"):
        params.load(ReplaceParams, files=[tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [\n")
    with pytest.raises(errors.BadParameters, match="not valid YAML"):
        params.load(ReplaceParams, files=[bad])
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n")
    with pytest.raises(errors.BadParameters, match="must be a mapping"):
        params.load(ReplaceParams, files=[listy])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("kubespray_version: v2.19\n")
    with pytest.raises(errors.BadParameters, match="kubespray_version: unknown parameter"):
        params.load(ReplaceParams, files=[unknown])


def test_from_namespace_uses_schema_fields_only() -> None:
    namespace = {"node": "node5", "dry_run": False, "get_ipython": object(), "np": object()}
    p = params.from_namespace(ReplaceParams, namespace)
    assert p.node == "node5" and p.dry_run is False and p.mode == "alive"


# --------------------------------------------------------------------------- notebooks

CELL = '''\
cluster: str = "lab"  # which cluster
inventory: str = "inventory/hosts.yaml"  # path to hosts.yaml or inventory.ini
ansible_playbook: str = "ansible-playbook"
node: str = "node1"
mode: str = "alive"  # alive | dead
strategy: str = "dns"
dry_run: bool = True
confirm: str = ""
timeout_s: float = 1800
retries: int = 3
ssh_key_file = None
ips: list = []
labels: dict = {}
probe: dict = {"rate": 20.0, "path": "/"}
'''


def _notebook(tmp_path: Path, source: str, tag: bool = True) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    if tag:
        cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Replace a node"), cell, nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "replace.ipynb"
    nbformat.write(nb, path)
    return path


def test_notebook_in_sync_with_schema(tmp_path: Path) -> None:
    defaults = params.check_notebook(_notebook(tmp_path, CELL), ReplaceParams)
    assert defaults["node"] == "node1" and defaults["dry_run"] is True


def test_notebook_drift_is_reported(tmp_path: Path) -> None:
    drifted = (CELL.replace('node: str = "node1"\n', 'node_name: str = "node1"\n')
               .replace("retries: int = 3", "retries: int = 5")
               .replace('mode: str = "alive"', 'mode: str = "maybe"')
               + 'api_token: str = ""\n')
    with pytest.raises(errors.BadParameters) as info:
        params.check_notebook(_notebook(tmp_path, drifted), ReplaceParams)
    message = str(info.value)
    assert "node_name: in the parameters cell but not in ReplaceParams" in message
    assert "node: in ReplaceParams but missing from the parameters cell" in message
    assert "retries: default 5 in the notebook, 3 in ReplaceParams" in message
    assert "default of mode: 'maybe' is not allowed" in message
    assert "api_token looks like a secret" in message


def test_notebook_parameters_cell_rules(tmp_path: Path) -> None:
    with pytest.raises(errors.BadParameters, match="0 cells tagged 'parameters'"):
        params.notebook_parameters(_notebook(tmp_path, CELL, tag=False))
    with pytest.raises(errors.BadParameters, match="the default must be a literal"):
        params.notebook_parameters(_notebook(tmp_path, 'base = "/x"\ninventory = base + "/hosts.yaml"\n'))
    with pytest.raises(errors.BadParameters, match="only 'name: type = literal' lines"):
        params.notebook_parameters(_notebook(tmp_path, "import os\n"))
