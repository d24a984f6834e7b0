"""ansible_check: the checkout's own Ansible, found and version-checked before any change (tiny real commands)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from runbooks_lib import ansible_check, errors
from runbooks_lib.lab import cluster

# The shape of Kubespray's version gates: v2.19 at the root (a localhost play), v2.22+ in playbooks/.
GATE_V219 = """---
- hosts: localhost
  gather_facts: false
  vars:
    minimal_ansible_version: 2.9.0
    minimal_ansible_version_2_10: 2.10.11
    maximal_ansible_version: 2.13.0
  tasks:
    - name: "Check {{ minimal_ansible_version }} <= Ansible version < {{ maximal_ansible_version }}"
      assert:
        that:
          - ansible_version.string is version(minimal_ansible_version, ">=")
"""
GATE_V231 = """---
- name: Check Ansible version
  hosts: all
  gather_facts: false
  vars:
    minimal_ansible_version: 2.18.0
    maximal_ansible_version: 2.19.0
  tasks: []
"""


def _checkout(tmp_path: Path, era: str) -> Path:
    root = tmp_path / f"kubespray-{era}"
    (root / "playbooks").mkdir(parents=True)
    (root / "cluster.yml").write_text("---\n")
    if era == "v2.19":
        (root / "ansible_version.yml").write_text(GATE_V219)
    else:
        (root / "playbooks" / "ansible_version.yml").write_text(GATE_V231)
    return root


def _ansible(path: Path, first_line: str, rc: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{first_line}'\necho '  config file = None'\nexit {rc}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize("era, gate", [("v2.19", ("2.9.0", "2.13.0")), ("v2.31", ("2.18.0", "2.19.0"))])
def test_gate_is_read_from_either_era_s_file(tmp_path: Path, era: str, gate: tuple[str, str]) -> None:
    found = ansible_check.gate(_checkout(tmp_path, era))
    assert found is not None and (found.minimum, found.maximum) == gate


def test_inside_the_gate_passes_with_core_and_classic_version_lines(tmp_path: Path) -> None:
    v219 = _checkout(tmp_path, "v2.19")
    core = _ansible(v219 / "venv" / "bin" / "ansible-playbook", "ansible-playbook [core 2.12.10]")
    result = ansible_check.check("", v219)  # empty: the checkout's own venv
    assert (result.path, result.version) == (str(core), "2.12.10")
    assert "2.9.0 <= version < 2.13.0 (ansible_version.yml)" in result.line()
    classic = _ansible(tmp_path / "old" / "ansible-playbook", "ansible-playbook 2.9.27")
    assert ansible_check.check(classic, v219).version == "2.9.27"


@pytest.mark.parametrize("era, line", [("v2.19", "ansible-playbook [core 2.19.15]"),
                                       ("v2.31", "ansible-playbook [core 2.17.5]"),
                                       ("v2.31", "ansible-playbook [core 2.19.0]")])
def test_outside_the_gate_is_refused_naming_the_range_and_the_fix(tmp_path: Path, era: str, line: str) -> None:
    checkout = _checkout(tmp_path, era)
    binary = _ansible(tmp_path / "bin" / "ansible-playbook", line)
    with pytest.raises(errors.PreconditionFailed) as info:
        ansible_check.check(binary, checkout)
    text = str(info.value)
    assert "accepts" in text and "nothing was changed" in text
    assert "pip install -r requirements.txt" in text and f"{checkout}/venv/bin/ansible-playbook" in text


def test_an_ansible_playbook_that_does_not_run_is_refused(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path, "v2.31")
    with pytest.raises(errors.PreconditionFailed, match="not found or not executable"):
        ansible_check.check(tmp_path / "nowhere" / "ansible-playbook", checkout)
    broken = _ansible(tmp_path / "bin" / "ansible-playbook", "Traceback: no module named ansible", rc=1)
    with pytest.raises(errors.PreconditionFailed, match=r"--version failed \(exit 1\)"):
        ansible_check.check(broken, checkout)
    plain = tmp_path / "bin" / "not-executable"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(errors.PreconditionFailed, match="not executable"):
        ansible_check.check(plain, checkout)


def test_home_relative_path_and_bare_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = _checkout(tmp_path, "v2.31")
    home = tmp_path / "home"
    _ansible(home / "kubespray" / "venv" / "bin" / "ansible-playbook", "ansible-playbook [core 2.18.12]")
    monkeypatch.setenv("HOME", str(home))
    assert ansible_check.check("~/kubespray/venv/bin/ansible-playbook", checkout).version == "2.18.12"
    bindir = _ansible(tmp_path / "path" / "my-ansible-playbook", "ansible-playbook [core 2.18.1]").parent
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert ansible_check.check("my-ansible-playbook", checkout).version == "2.18.1"


def test_no_gate_in_the_checkout_is_said_not_refused(tmp_path: Path) -> None:
    checkout = tmp_path / "plain"
    checkout.mkdir()
    binary = _ansible(tmp_path / "bin" / "ansible-playbook", "ansible-playbook [core 2.18.1]")
    result = ansible_check.check(binary, checkout)
    assert result.gate is None and "no version gate" in result.line()


def test_the_lab_stand_in_declares_its_gate_where_each_era_does(tmp_path: Path) -> None:
    """v2.19's layout has the root file; v2.31 playbooks/ (materialised by the lab, here read from plays/)."""
    root = ansible_check.gate(cluster.KUBESPRAY_DIR)
    assert root is not None and root.file.name == "ansible_version.yml"
    assert (cluster.KUBESPRAY_DIR / "plays" / "ansible_version.yml").read_text() == root.file.read_text()
