"""runbooks_lib.inventory on real Kubespray-shaped files (tests/data)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import runbooks_lib.inventory
from runbooks_lib import errors, inventory
from runbooks_lib.inventory import Inventory, build, diff

DATA = Path(__file__).resolve().parent.parent / "data"
BUILDER = DATA / "hosts.v2.19-builder.yaml"
CURRENT_INI = DATA / "inventory.current.ini"
COMMENTED = DATA / "hosts.commented.yaml"


@pytest.mark.parametrize("path", [BUILDER, CURRENT_INI, COMMENTED])
def test_unchanged_files_are_written_back_byte_for_byte(path: Path) -> None:
    assert Inventory.load(path).dumps() == path.read_text()


def test_package_reads_as_a_namespace_and_its_init_only_re_exports() -> None:
    inv = inventory.load(CURRENT_INI)
    assert isinstance(inv, inventory.Inventory) and inv.format == "ini"
    assert isinstance(inv.host("node1"), inventory.Host)
    assert inventory.diff(inv, inv.copy()).empty and inventory.build(["10.0.0.1"]).format == "yaml"
    with pytest.raises(errors.BadParameters, match="does not exist"):
        inventory.load(DATA / "absent.yaml")
    tree = ast.parse(Path(runbooks_lib.inventory.__file__).read_text())
    for i, node in enumerate(tree.body):
        docstring = i == 0 and isinstance(node, ast.Expr)
        exports = isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"]  # type: ignore[attr-defined]
        assert docstring or exports or isinstance(node, ast.ImportFrom), f"logic in the package __init__: {ast.dump(node)[:80]}"


def test_builder_yaml_model() -> None:
    inv = Inventory.load(BUILDER)
    assert inv.format == "yaml"
    assert list(inv.hosts) == ["node1", "node2", "node3", "node4", "node5"]
    node3 = inv.host("node3")
    assert (node3.ansible_host, node3.ip, node3.access_ip, node3.etcd_member_name) == (
        "10.10.1.5", "10.10.1.5", "10.10.1.5", None)
    assert inv.control_planes == ["node1", "node2"]
    assert inv.etcd_members == ["node1", "node2", "node3"]
    assert inv.workers == ["node1", "node2", "node3", "node4", "node5"]
    assert [g for g in inv.groups if g != "all"] == ["kube_control_plane", "kube_node", "etcd", "k8s_cluster",
                                                     "calico_rr"]
    assert inv.groups["k8s_cluster"].children == ("kube_control_plane", "kube_node")
    assert inv.members("calico_rr") == []
    assert inv.groups_of("node1") == ["kube_control_plane", "kube_node", "etcd", "k8s_cluster"]


def test_current_ini_resolves_etcd_children_and_vars_on_host_lines() -> None:
    inv = Inventory.load(CURRENT_INI)
    assert inv.format == "ini"
    assert inv.groups["etcd"].children == ("kube_control_plane",) and inv.groups["etcd"].hosts == ()
    assert inv.etcd_members == ["node1", "node2", "node3"] == inv.control_planes
    assert inv.workers == ["node4", "node5"]
    assert inv.members("k8s_cluster") == ["node1", "node2", "node3", "node4", "node5"]
    assert inv.host("node3").etcd_member_name == "etcd3"  # inline comment not part of the vars
    assert inv.host("node3").vars == {"ansible_host": "10.10.1.5", "ip": "10.10.1.5", "access_ip": "10.10.1.5",
                                      "etcd_member_name": "etcd3"}
    assert inv.groups["k8s_cluster"].vars == {"kube_resolv_conf": "/run/systemd/resolve/resolv.conf"}
    # commented-out example hosts are not hosts
    assert "node6" not in inv.hosts
    assert inv.problems() == []


def test_ini_value_types_follow_ansible() -> None:
    inv = Inventory.parse('[kube_node]\nw1 ansible_host=10.0.0.1 ansible_port=2222 label="a b"  ; note\n', "ini")
    assert inv.host("w1").vars == {"ansible_host": "10.0.0.1", "ansible_port": 2222, "label": "a b"}


# --------------------------------------------------------------------------- build


def test_build_matches_the_builder_shape_with_explicit_etcd_names() -> None:
    ips = ["10.10.1.3", "10.10.1.4", "10.10.1.5", "10.10.1.6", "10.10.1.7"]
    inv = build(ips)
    old = Inventory.load(BUILDER)
    changes = diff(old, inv)
    assert changes.hosts_added == () and changes.hosts_removed == ()
    # The only differences to v2.19's builder: etcd_member_name and calico_rr under k8s_cluster.
    assert {(v.host, v.key, v.new) for v in changes.vars} == {
        ("node1", "etcd_member_name", "etcd1"), ("node2", "etcd_member_name", "etcd2"),
        ("node3", "etcd_member_name", "etcd3")}
    assert [g.group for g in changes.groups] == []
    assert inv.groups["k8s_cluster"].children == ("kube_control_plane", "kube_node", "calico_rr")
    text = inv.dumps()
    assert text.startswith("all:\n  hosts:\n    node1:\n      ansible_host: 10.10.1.3\n      ip: 10.10.1.3\n")
    assert "    calico_rr:\n      hosts: {}\n" in text
    assert "    etcd:\n      hosts:\n        node1:\n        node2:\n        node3:\n" in text
    assert inv.problems() == []


def test_build_with_few_nodes_and_explicit_roles() -> None:
    two = build(["10.0.0.1", "10.0.0.2"])
    assert two.etcd_members == ["node1"] and two.control_planes == ["node1", "node2"]
    inv = build(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], control_planes=["node1"],
                etcd=["10.0.0.1", "10.0.0.2", "10.0.0.3"], workers=["node3", "10.0.0.4"])
    assert inv.control_planes == ["node1"]
    assert inv.workers == ["node3", "node4"]
    assert inv.host("node2").etcd_member_name == "etcd2"
    assert inv.host("node4").etcd_member_name is None


@pytest.mark.parametrize(
    ("ips", "kwargs", "message"),
    [
        ([], {}, "no IPs"),
        (["10.0.0.1", "10.0.0.1"], {}, "duplicate IPs"),
        (["10.0.0.300"], {}, "not an IP address"),
        (["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], {"etcd": 4}, "odd number"),
        (["10.0.0.1", "10.0.0.2"], {"etcd": ["node1", "node2"]}, "odd number"),
        (["10.0.0.1"], {"workers": ["node9"]}, "not among the nodes"),
    ],
)
def test_build_rejects_bad_input(ips: list[str], kwargs: dict, message: str) -> None:
    with pytest.raises(errors.BadParameters, match=message):
        build(ips, **kwargs)


# --------------------------------------------------------------------------- edits


def test_add_worker_to_ini_appends_with_vars_on_the_host_line() -> None:
    inv = Inventory.load(CURRENT_INI)
    host = inv.add_host("node6", ip="10.10.1.8", groups=["kube_node"])
    assert host.vars == {"ansible_host": "10.10.1.8", "ip": "10.10.1.8", "access_ip": "10.10.1.8"}
    text = inv.dumps()
    assert ("node5 ansible_host=10.10.1.7 ip=10.10.1.7 access_ip=10.10.1.7\n"
            "node6 ansible_host=10.10.1.8 ip=10.10.1.8 access_ip=10.10.1.8\n\n[k8s_cluster:children]") in text
    # Everything else is untouched: comments, the commented examples, the inline comment.
    original = CURRENT_INI.read_text().splitlines()
    assert [ln for ln in text.splitlines() if not ln.startswith("node6")] == original
    assert inv.workers == ["node4", "node5", "node6"]
    reread = Inventory.parse(text, "ini")
    assert reread.host("node6").ip == "10.10.1.8"


def test_add_control_plane_appends_at_end_and_names_the_etcd_member() -> None:
    inv = Inventory.load(CURRENT_INI)
    inv.add_host("node7", ip="10.10.1.9", groups=["kube_control_plane"])
    assert inv.control_planes[0] == "node1" and inv.control_planes[-1] == "node7"
    assert inv.etcd_members[-1] == "node7"  # through [etcd:children]
    assert inv.host("node7").etcd_member_name == "etcd4"
    # four etcd members now: validation says so
    assert any("even number" in p for p in inv.problems())


def test_add_to_yaml_appends_to_group_end_and_all_hosts() -> None:
    inv = Inventory.load(COMMENTED)
    inv.add_host("cp3", ip="10.0.0.15", ansible_host="203.0.113.15", groups=["kube_control_plane", "etcd"],
                 vars={"ansible_user": "debian"})
    assert inv.control_planes == ["cp1", "cp2", "cp3"]
    assert inv.etcd_members == ["cp1", "cp2", "w1", "cp3"]
    assert inv.host("cp3").vars == {"ansible_host": "203.0.113.15", "ip": "10.0.0.15", "access_ip": "10.0.0.15",
                                    "etcd_member_name": "etcd4", "ansible_user": "debian"}
    text = inv.dumps()
    assert "w1:  # third member on a worker keeps quorum\n        cp3:\n" in text
    assert "# Production cluster: 2 control planes" in text and 'ansible_user: "debian"   # image default user' in text
    assert list(inv.hosts)[-1] == "cp3"


def test_add_to_empty_flow_mapping_becomes_block_style() -> None:
    inv = Inventory.load(BUILDER)
    inv.add_host("rr1", ip="10.10.1.20", groups=["calico_rr"])
    assert "    calico_rr:\n      hosts:\n        rr1:\n" in inv.dumps()
    assert inv.members("calico_rr") == ["rr1"]


def test_add_host_rejects_duplicates_and_children_groups() -> None:
    inv = Inventory.load(CURRENT_INI)
    with pytest.raises(errors.BadParameters, match="already in the inventory"):
        inv.add_host("node1", ip="10.10.1.99", groups=["kube_node"])
    with pytest.raises(errors.BadParameters, match="already used by host 'node2'"):
        inv.add_host("node9", ip="10.10.1.4", groups=["kube_node"])
    with pytest.raises(errors.BadParameters, match="expand_children"):
        inv.add_host("node9", ip="10.10.1.99", groups=["etcd"])
    with pytest.raises(errors.BadParameters, match="legacy"):
        inv.add_host("node9", ip="10.10.1.99", groups=["kube-node"])


def test_remove_dead_control_plane_keeping_it_in_all_ini() -> None:
    inv = Inventory.load(CURRENT_INI)
    removed = inv.remove_host("node1", keep_in_all=True)
    assert removed == ["kube_control_plane"]
    assert inv.control_planes == ["node2", "node3"] == inv.etcd_members
    assert inv.host("node1").vars["etcd_member_name"] == "etcd1"  # kept, vars intact
    assert inv.groups_of("node1") == []
    text = inv.dumps()
    assert "[all]\nnode1 ansible_host=10.10.1.3" in text
    assert text.index("[all]") < text.index("[kube_control_plane]")
    assert inv.problems(allow_even_etcd=True, parked=["node1"]) == []
    assert any("in no group" in p for p in inv.problems(allow_even_etcd=True))


def test_remove_worker_entirely_yaml() -> None:
    inv = Inventory.load(BUILDER)
    assert inv.remove_host("node5") == ["kube_node"]
    assert "node5" not in inv.hosts and "node5" not in inv.dumps()


def test_remove_from_some_groups_keeps_definition() -> None:
    inv = Inventory.load(COMMENTED)
    inv.remove_host("w1", groups=["etcd"])
    assert inv.etcd_members == ["cp1", "cp2"]
    assert inv.workers == ["w1", "w2", "w3"]
    assert inv.host("w1").ip == "10.0.0.12"


def test_remove_from_children_group_explains_the_fix_and_expand_children_works() -> None:
    inv = Inventory.load(CURRENT_INI)
    with pytest.raises(errors.BadParameters) as info:
        inv.remove_host("node3", groups=["etcd"])
    assert "gets its hosts from its children" in str(info.value) and "expand_children" in str(info.value)
    inv.expand_children("etcd")
    assert inv.groups["etcd"].children == () and inv.groups["etcd"].hosts == ("node1", "node2", "node3")
    inv.remove_host("node3", groups=["etcd"])
    assert inv.etcd_members == ["node1", "node2"]
    assert inv.control_planes == ["node1", "node2", "node3"]
    assert "[etcd]\nnode1\nnode2\n" in inv.dumps()


def test_move_host_out_of_first_position_both_formats() -> None:
    for path, group in ((CURRENT_INI, "kube_control_plane"), (BUILDER, "etcd")):
        inv = Inventory.load(path)
        inv.move_to_end(group, "node1")
        assert inv.members(group) == ["node2", "node3", "node1"]
        inv.move_to_front(group, "node3")
        assert inv.members(group) == ["node3", "node2", "node1"]
        again = Inventory.parse(inv.dumps(), inv.format)
        assert again.members(group) == ["node3", "node2", "node1"]
        assert again.hosts == inv.hosts
    inv = Inventory.load(CURRENT_INI)
    with pytest.raises(errors.BadParameters, match="not listed in group"):
        inv.move_to_end("kube_control_plane", "node4")


def test_update_host_vars_keeps_order_and_comment() -> None:
    inv = Inventory.load(CURRENT_INI)
    inv.update_host_vars("node3", {"ip": "10.10.1.50"}, remove=["access_ip"])
    assert ("node3 ansible_host=10.10.1.5 ip=10.10.1.50 etcd_member_name=etcd3  # third member keeps quorum"
            in inv.dumps())


def test_save_and_reload(tmp_path: Path) -> None:
    inv = Inventory.load(COMMENTED)
    inv.add_host("w4", ip="10.0.0.16", groups=["kube_node"])
    target = inv.save(tmp_path / "inv" / "hosts.yaml")
    assert Inventory.load(target).workers == ["w1", "w2", "w3", "w4"]
    with pytest.raises(errors.BadParameters, match="does not exist"):
        Inventory.load(tmp_path / "missing.yaml")


def test_convert_between_formats_keeps_the_model() -> None:
    for path in (BUILDER, CURRENT_INI, COMMENTED):
        inv = Inventory.load(path)
        for fmt in ("ini", "yaml"):
            other = inv.convert(fmt)  # type: ignore[arg-type]
            assert other.format == fmt
            assert other.hosts == inv.hosts
            assert other.groups["all"].vars == inv.groups.get("all", other.groups["all"]).vars
            assert other.groups["k8s_cluster"].vars == inv.groups["k8s_cluster"].vars
            for group in ("kube_control_plane", "etcd", "kube_node", "k8s_cluster", "calico_rr"):
                assert other.members(group) == inv.members(group), (path, fmt, group)


# --------------------------------------------------------------------------- validation


def _problems(text: str, fmt: str = "ini", **kw: object) -> str:
    return "\n".join(Inventory.parse(text, fmt).problems(**kw))  # type: ignore[arg-type]


GOOD_INI = """\
[kube_control_plane]
n1 ansible_host=10.0.0.1 ip=10.0.0.1 etcd_member_name=etcd1
[etcd:children]
kube_control_plane
[kube_node]
n2 ansible_host=10.0.0.2 ip=10.0.0.2
[k8s_cluster:children]
kube_control_plane
kube_node
"""


def test_good_minimal_inventory_is_valid() -> None:
    assert _problems(GOOD_INI) == ""
    Inventory.parse(GOOD_INI, "ini").validate()


def test_validation_finds_every_problem_with_its_fix() -> None:
    text = """\
[kube-master]
n1 ansible_host=10.0.0.1 ip=10.0.0.1
[etcd]
n1
n2
[kube_node]
n2 ansible_host=10.0.0.1 ip=10.0.0.1
n3
n2
[monitoring]
n4 ansible_host=10.0.0.4
[all]
n5 ansible_host=10.0.0.5
"""
    found = _problems(text)
    assert "legacy dashed/old name: rename it to 'kube_control_plane'" in found
    assert "unknown group 'monitoring'" in found
    assert "'n2' is listed twice in [kube_node]: list it once" in found
    assert "IP 10.0.0.1 is used by several hosts (n1, n2)" in found
    assert "kube_control_plane is empty" in found
    assert "etcd has 2 members (n1, n2), an even number" in found and "ignore_assert_errors=yes" in found
    assert "etcd member 'n1' has no etcd_member_name" in found
    assert "host 'n3' is listed in kube_node but not defined (no ansible_host/ip): add 'n3 ansible_host=IP" in found
    assert "host 'n5' is in no group" in found
    assert "k8s_cluster must list the children kube_control_plane, kube_node" in found
    assert "unknown group 'monitoring'" not in _problems(text, extra_groups=["monitoring"])
    with pytest.raises(errors.BadParameters) as info:
        Inventory.parse(text, "ini").validate()
    assert "problem(s)" in str(info.value) and "next step" in str(info.value)


def test_validation_empty_etcd_and_duplicate_member_names_yaml() -> None:
    text = """\
all:
  hosts:
    a: {ansible_host: 10.0.0.1, etcd_member_name: etcd1}
    b: {ansible_host: 10.0.0.2, etcd_member_name: etcd1}
  children:
    kube_control_plane: {hosts: {a: }}
    etcd: {hosts: {}}
    kube_node: {hosts: {b: }}
    k8s_cluster: {children: {kube_control_plane: , kube_node: }}
"""
    found = _problems(text, "yaml")
    assert "etcd is empty" in found
    text2 = text.replace("etcd: {hosts: {}}", "etcd: {hosts: {a: , b: , c: }}")
    found2 = _problems(text2, "yaml")
    assert "etcd_member_name 'etcd1' is set on a, b" in found2
    assert "host 'c' is listed in etcd but not defined" in found2 and "all.hosts.c" in found2


def test_duplicate_yaml_keys_and_syntax_errors_are_bad_parameters() -> None:
    with pytest.raises(errors.BadParameters, match="defined twice"):
        Inventory.parse("all:\n  hosts:\n    n1: {ip: 10.0.0.1}\n    n1: {ip: 10.0.0.2}\n", "yaml")
    with pytest.raises(errors.BadParameters, match="not valid YAML"):
        Inventory.parse("all: [\n", "yaml")
    with pytest.raises(errors.BadParameters, match="bad section header"):
        Inventory.parse("[kube_node\nn1\n", "ini")
    with pytest.raises(errors.BadParameters, match="not key=value"):
        Inventory.parse("[kube_node]\nn1 ansible_host\n", "ini")


# --------------------------------------------------------------------------- diff


def test_diff_for_a_replacement_plan() -> None:
    old = Inventory.load(CURRENT_INI)
    new = old.copy()
    new.remove_host("node1", keep_in_all=True)
    new.add_host("node8", ip="10.10.1.10", groups=["kube_control_plane"])
    new.update_host_vars("node4", {"ip": "10.10.1.60"})
    changes = diff(old, new)
    assert changes.hosts_added == ("node8",) and changes.hosts_removed == ()
    by_group = {g.group: g for g in changes.groups}
    cp = by_group["kube_control_plane"]
    assert cp.added == ("node8",) and cp.removed == ("node1",)
    assert (cp.first_before, cp.first_after) == ("node1", "node2")
    assert by_group["etcd"].removed == ("node1",)
    assert "kube_node" not in by_group
    assert [(v.host, v.key, v.old, v.new) for v in changes.vars] == [("node4", "ip", "10.10.1.6", "10.10.1.60")]
    lines = changes.lines()
    assert "+ host node8" in lines
    assert "  kube_control_plane: +node8 -node1 (first host node1 -> node2)" in lines
    assert "  node4.ip: '10.10.1.6' -> '10.10.1.60'" in lines
    assert diff(old, old.copy()).empty and diff(old, old.copy()).lines() == ["no changes"]


def test_diff_reports_pure_reordering() -> None:
    old = Inventory.load(BUILDER)
    new = old.copy()
    new.move_to_end("kube_node", "node3")
    change = {g.group: g for g in diff(old, new).groups}["kube_node"]
    assert change.reordered and change.added == () and change.first_before == change.first_after


def test_a_stale_hosts_list_would_drop_or_move_hosts_of_the_inventory() -> None:
    """After add-worker or replace the inventory has hosts a parameter file's hosts lacks: named, not dropped."""
    from runbooks_lib import inventory

    installed = inventory.build(["203.0.113.11", "203.0.113.12", "203.0.113.13"], names=["node1", "node2", "node3"],
                                control_planes=["node1"], etcd=["node1", "node2", "node3"], workers=["node3"])
    grown = installed.copy()
    grown.add_host("node5", ansible_host="203.0.113.15", ip="203.0.113.15", groups=["kube_node"])
    stale = inventory.build(["203.0.113.11", "203.0.113.12", "203.0.113.99"], names=["node1", "node2", "node3"],
                            control_planes=["node1"], etcd=["node1", "node2", "node3"], workers=["node3"])
    assert inventory.diff(grown, stale).dropped_or_moved() == ["node5 (dropped)", "node3 (address changed)"]
    assert inventory.diff(installed, installed.copy()).dropped_or_moved() == []
    assert inventory.diff(installed, grown).dropped_or_moved() == []  # adding is not losing
