"""group_vars editing: sample seeding, comments kept, idempotent plans, nothing written by a plan."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runbooks_lib import inventory
from runbooks_lib.errors import BadParameters, PreconditionFailed
from runbooks_lib.inventory import group_vars

KUBESPRAY = Path(__file__).resolve().parents[2] / "runbooks_lib" / "lab" / "kubespray"
ADDONS = """---
# Helm deployment
helm_enabled: false

# Nginx ingress controller deployment
ingress_nginx_enabled: false  # keep this comment
# ingress_nginx_host_network: false
"""


def _inventory(tmp_path: Path) -> Path:
    (tmp_path / "group_vars" / "k8s_cluster").mkdir(parents=True)
    (tmp_path / "group_vars" / "k8s_cluster" / "addons.yml").write_text(ADDONS)
    return tmp_path


def test_the_package_exposes_the_module() -> None:
    assert inventory.group_vars is group_vars


def test_plan_sets_values_keeping_comments_and_writes_nothing(tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    wanted = {"k8s_cluster/addons.yml": {"helm_enabled": True, "ingress_nginx_enabled": True,
                                         "ingress_nginx_host_network": True},
              "all/all.yml": {"upstream_dns_servers": ["10.0.0.53"]}}
    planned = group_vars.plan(inv, wanted)
    assert [c.line() for c in planned.changes] == [
        "group_vars/k8s_cluster/addons.yml: helm_enabled: False -> True",
        "group_vars/k8s_cluster/addons.yml: ingress_nginx_enabled: False -> True",
        "group_vars/k8s_cluster/addons.yml: ingress_nginx_host_network: None -> True",
        "group_vars/all/all.yml: upstream_dns_servers: None -> ['10.0.0.53']",
    ]
    assert (inv / "group_vars" / "k8s_cluster" / "addons.yml").read_text() == ADDONS
    assert not (inv / "group_vars" / "all").exists()
    written = group_vars.apply(planned)
    assert len(written) == 2
    text = (inv / "group_vars" / "k8s_cluster" / "addons.yml").read_text()
    assert text.startswith("---\n# Helm deployment\nhelm_enabled: true\n")
    assert re.search(r"\ningress_nginx_enabled: true +# keep this comment\n", text)
    assert "# ingress_nginx_host_network: false\n" in text and text.endswith("ingress_nginx_host_network: true\n")
    assert group_vars.read(inv, "all/all.yml") == {"upstream_dns_servers": ["10.0.0.53"]}
    again = group_vars.plan(inv, wanted)
    assert again.empty and again.lines() == ["no changes"] and group_vars.apply(again) == []


def test_seed_copies_only_missing_sample_files(tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    would = group_vars.seed_from_sample(KUBESPRAY, inv, dry_run=True)
    assert "k8s_cluster/addons.yml" not in would and "all/all.yml" in would
    assert not (inv / "group_vars" / "all").exists()
    assert group_vars.seed_from_sample(KUBESPRAY, inv) == would
    assert (inv / "group_vars" / "k8s_cluster" / "addons.yml").read_text() == ADDONS
    assert group_vars.seed_from_sample(KUBESPRAY, inv) == []
    with pytest.raises(PreconditionFailed, match="does not exist"):
        group_vars.seed_from_sample(tmp_path / "nowhere", inv)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "all.yml").write_text("- a\n- b\n")
    with pytest.raises(BadParameters, match="not a mapping"):
        group_vars.plan(tmp_path, {"all/all.yml": {"x": 1}})


def test_build_takes_the_operators_host_names() -> None:
    inv = inventory.build(["10.0.0.5", "10.0.0.6", "10.0.0.7"], names=["cp-a", "cp-b", "wk-c"],
                          control_planes=["cp-a", "cp-b"], etcd=["cp-a", "cp-b", "wk-c"], workers=["wk-c"])
    assert inv.control_planes == ["cp-a", "cp-b"] and inv.workers == ["wk-c"]
    assert inv.host("wk-c").vars == {"ansible_host": "10.0.0.7", "ip": "10.0.0.7", "access_ip": "10.0.0.7",
                                     "etcd_member_name": "etcd3"}
    with pytest.raises(BadParameters, match="duplicate host names"):
        inventory.build(["10.0.0.5", "10.0.0.6"], names=["a", "a"], control_planes=1, etcd=1)


def test_kubelet_dns_loops_only_on_loopback_nameservers() -> None:
    from runbooks_lib import kubelet_dns

    stub = kubelet_dns.KubeletDns("n", "/etc/resolv.conf", kubelet_dns.nameservers("nameserver 127.0.0.53\nsearch .\n"))
    assert stub.loops
    assert not kubelet_dns.KubeletDns("n", "/run/systemd/resolve/resolv.conf", ()).loops
    upstream = kubelet_dns.nameservers("# x\nnameserver 10.0.0.53  # upstream\nnameserver 127.0.0.53\n")
    assert upstream == ("10.0.0.53", "127.0.0.53") and not kubelet_dns.KubeletDns("n", "f", upstream).loops
