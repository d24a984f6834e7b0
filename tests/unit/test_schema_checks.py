"""The shared checks behind every runbook's schema check, and each check refusing bad values before anything runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from runbooks_lib import errors, schemas


def _target(tmp_path: Path, **files: bool) -> schemas.Target:
    """A target whose files exist (or not) under tmp_path."""
    (tmp_path / "ks").mkdir()
    paths = {"inventory": tmp_path / "hosts.yaml", "kubespray_dir": tmp_path / "ks",
             "known_hosts": tmp_path / "known_hosts", "ssh_key": tmp_path / "id", "kubeconfig": tmp_path / "admin.conf"}
    for name, present in files.items():
        if present:
            target = paths[name] / "cluster.yml" if name == "kubespray_dir" else paths[name]
            target.write_text("x")
    return schemas.Target(**paths)


def test_not_ip_addresses_names_each_bad_value() -> None:
    assert schemas.not_ip_addresses("dns", ["10.0.0.1", "::1"]) == []
    assert schemas.not_ip_addresses("dns", ["10.0.0.300", "dns.example"]) == [
        "dns: '10.0.0.300' is not an IP address", "dns: 'dns.example' is not an IP address"]


def test_missing_files_names_only_the_missing_ones(tmp_path: Path) -> None:
    t = _target(tmp_path, inventory=True, kubespray_dir=False, known_hosts=True, ssh_key=False, kubeconfig=True)
    problems = schemas.missing_files(t, "inventory", "kubespray_dir", "known_hosts", "ssh_key", "kubeconfig")
    assert len(problems) == 2
    assert "not a Kubespray checkout (no cluster.yml)" in problems[0] and "ssh_key" in problems[1]
    assert schemas.missing_files(t, "inventory", "known_hosts", "kubeconfig") == []


def test_not_positive_and_refuse() -> None:
    p = schemas.ReplaceParams(timeout_s=0, drain_timeout_s=-1)
    assert schemas.not_positive(p, "timeout_s", "drain_timeout_s", "ready_timeout_s") == [
        "timeouts must be positive and finite: timeout_s, drain_timeout_s"]
    schemas.refuse([], "replace")  # nothing to refuse: no error
    with pytest.raises(errors.BadParameters, match=r"invalid replace parameters: a; b") as info:
        schemas.refuse(["a", "b"], "replace")
    assert "nothing was changed" in str(info.value)


@pytest.mark.parametrize(("check", "schema", "values", "expected"), [
    (schemas.check_replace, schemas.ReplaceParams, {"replacement_ip": "x.y"}, "replacement_ip"),
    (schemas.check_replace, schemas.ReplaceParams, {"kubeconfig_server_after": "http://a"}, "https://"),
    (schemas.check_add_worker, schemas.AddWorkerParams, {"new_workers": {"n5": "10.0.0.5", "n6": "10.0.0.5"}},
     "have the same IP"),
    (schemas.check_add_worker, schemas.AddWorkerParams, {"dns_command": ("set", "{name}")}, "{ips}"),
    (schemas.check_remove_worker, schemas.RemoveWorkerParams, {"node_state": "zombie"}, "auto, alive or dead"),
    (schemas.check_restore, schemas.RestoreParams, {"snapshot": "../x.db"}, ".db file name"),
    (schemas.check_install, schemas.InstallParams, {"dns_server": "resolver"}, "is not an IP address"),
])
def test_each_runbook_check_refuses_with_every_problem_named(tmp_path: Path, check, schema, values, expected) -> None:
    t = _target(tmp_path, inventory=True, kubespray_dir=True, known_hosts=True, ssh_key=True, kubeconfig=True)
    # The site values a real parameter file gives (no default is a site value).
    expanded = {k: v for k, v in (("replacement_ip", "10.0.0.15"), ("upstream_dns_servers", ("10.0.0.1",)),
                                  ("dead_node", "node1"), ("replacement", "node5"), ("app_host", "app.example.com"),
                                  ("new_workers", {"node5": "10.0.0.15"}), ("remove", ("node4",)))
                if hasattr(schema(), k)}
    good = replace(schema(), **{f: getattr(t, f) for f in ("inventory", "kubespray_dir", "known_hosts", "ssh_key",
                                                           "kubeconfig")}, **expanded)
    assert check(good) is good
    with pytest.raises(errors.BadParameters, match=expected.replace("{", r"\{").replace("}", r"\}")):
        check(replace(good, **values))
