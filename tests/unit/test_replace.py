"""runbooks_lib.replace: the membership-grep hazard, the stale member, resuming, the inventory edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbooks_lib import etcd, kubespray, replace
from runbooks_lib.inventory import build
from runbooks_lib.testing import MockConnection

ARTICLE_MEMBERS = ["185.186.142.53", "185.186.142.6"]  # the source article's survivors


def _checkout(path: Path, galaxy: str, files: list[str]) -> kubespray.Checkout:
    path.mkdir()
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("---\n")
    (path / "galaxy.yml").write_text(f"version: {galaxy}\n")
    return kubespray.detect(path)


@pytest.fixture
def v219(tmp_path: Path) -> kubespray.Checkout:
    return _checkout(tmp_path / "v219", "2.19.0", ["cluster.yml", "facts.yml", "upgrade-cluster.yml"])


@pytest.fixture
def v231(tmp_path: Path) -> kubespray.Checkout:
    return _checkout(tmp_path / "v231", "2.31.0", ["cluster.yml", "playbooks/facts.yml", "upgrade-cluster.yml",
                                                   "upgrade_cluster.yml"])


def test_the_article_pair_is_a_hazard_on_v219_only(v219: kubespray.Checkout, v231: kubespray.Checkout) -> None:
    assert replace.grep_matches("185.186.142.5", ARTICLE_MEMBERS) == ["185.186.142.53"]
    old = replace.member_add_first(v219.release, "185.186.142.5", ARTICLE_MEMBERS, same_ip=False)
    assert old.needed and "v2.19" in old.reason and "185.186.142.53" in old.reason and "unequal" in old.reason
    new = replace.member_add_first(v231.release, "185.186.142.5", ARTICLE_MEMBERS, same_ip=False)
    assert not new.needed and "grep -w" in new.reason
    assert replace.member_add_first((2, 22), "185.186.142.5", ARTICLE_MEMBERS, same_ip=False).needed
    assert not replace.member_add_first((2, 23), "185.186.142.5", ARTICLE_MEMBERS, same_ip=False).needed


def test_same_ip_is_added_first_on_every_version(v219: kubespray.Checkout, v231: kubespray.Checkout) -> None:
    for checkout in (v219, v231):
        decision = replace.member_add_first(checkout.release, "10.0.0.1", ["10.0.0.2", "10.0.0.3"], same_ip=True)
        assert decision.needed and "same IP" in decision.reason and "grep" not in decision.reason
    # The article's same-IP re-add on v2.19: both hazards, named in plain words.
    both = replace.member_add_first(v219.release, "185.186.142.5", ARTICLE_MEMBERS, same_ip=True)
    assert both.needed and "same IP" in both.reason and "`grep 185.186.142.5`" in both.reason
    assert "185.186.142.53" in both.reason
    assert "grep" not in replace.member_add_first(v231.release, "185.186.142.5", ARTICLE_MEMBERS, same_ip=True).reason


def test_no_substring_no_workaround_and_unknown_versions_count_as_old() -> None:
    assert not replace.member_add_first((2, 19), "10.0.0.15", ["10.0.0.12", "10.0.0.13"], same_ip=False).needed
    assert replace.grep_matches("10.0.0.1", ["10.0.0.1", "10.0.0.12"]) == ["10.0.0.12"]
    unknown = replace.member_add_first(None, "10.0.0.1", ["10.0.0.12"], same_ip=False)
    assert unknown.needed and "unknown Kubespray version" in unknown.reason


def _member(mid: int, name: str, ip: str) -> etcd.Member:
    return etcd.Member(mid, name, (f"https://{ip}:2380",), (f"https://{ip}:2379",) if name else ())


def test_stale_member_is_the_started_unhealthy_one_with_the_dead_peer_url() -> None:
    dead = _member(1, "etcd1", "10.0.0.1")
    others = [_member(2, "etcd2", "10.0.0.12"), _member(3, "etcd3", "10.0.0.13")]
    healthy = ["https://10.0.0.12:2379", "https://10.0.0.13:2379"]
    assert replace.stale_member([dead, *others], healthy, "10.0.0.1") == dead
    assert replace.stale_member(others, healthy, "10.0.0.1") is None  # already removed
    added = etcd.Member(9, "", ("https://10.0.0.1:2380",), ())
    assert replace.stale_member([added, *others], healthy, "10.0.0.1") is None  # added by hand, never started
    joined = _member(9, "etcd1", "10.0.0.1")
    assert replace.stale_member([joined, *others], [*healthy, "https://10.0.0.1:2379"], "10.0.0.1") is None
    # 10.0.0.1 is never taken for 10.0.0.12's member (peer URLs compare whole)
    assert replace.stale_member(others, ["https://10.0.0.13:2379"], "10.0.0.1") is None


def _inv():
    return build(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], names=["node1", "node2", "node3", "node4"],
                 control_planes=["node1", "node2"], etcd=["node1", "node2", "node3"], workers=["node3", "node4"])


def test_new_machine_inventory_edits_and_resuming() -> None:
    inv = _inv()
    assert not replace.resuming(inv, "node1", "node5")
    assert set(replace.without_dead(inv, "node1", keep_in_all=False)) == {"kube_control_plane", "etcd"}
    assert "node1" not in inv.hosts and inv.etcd_members == ["node2", "node3"]
    assert replace.without_dead(inv, "node1", keep_in_all=False) == []  # a re-run finds it done
    assert not replace.resuming(inv, "node1", "node5")
    assert replace.with_replacement(inv, "node5", "10.0.0.5", etcd_member_name="etcd4") == ["kube_control_plane", "etcd"]
    assert inv.control_planes == ["node2", "node5"] and inv.etcd_members == ["node2", "node3", "node5"]
    assert inv.host("node5").vars["etcd_member_name"] == "etcd4" and inv.host("node5").ip == "10.0.0.5"
    assert replace.with_replacement(inv, "node5", "10.0.0.5", etcd_member_name="etcd4") == []
    assert replace.resuming(inv, "node1", "node5")


def test_same_ip_inventory_edits_keep_the_host_and_its_member_name() -> None:
    inv = _inv()
    name = inv.host("node1").vars["etcd_member_name"]
    replace.without_dead(inv, "node1", keep_in_all=True)
    assert "node1" in inv.hosts and "node1" not in inv.etcd_members
    assert not replace.resuming(inv, "node1", "node1")
    replace.with_replacement(inv, "node1", "10.0.0.1", etcd_member_name=name)
    assert inv.etcd_members == ["node2", "node3", "node1"] and inv.control_planes == ["node2", "node1"]
    assert inv.host("node1").vars["etcd_member_name"] == name
    assert replace.resuming(inv, "node1", "node1")
    assert not replace.resuming(_inv(), "node1", "node1")  # first in the groups: the original, not appended


def test_nginx_upstreams_reads_the_kube_apiserver_block() -> None:
    conf = ("stream {\n  upstream kube_apiserver {\n    least_conn;\n    server 10.0.0.2:6443;\n"
            "    server 10.0.0.5:6443;\n  }\n  server {\n    listen 127.0.0.1:6443;\n  }\n}\n")
    conn = MockConnection("node3", {("cat", "--", "/etc/nginx/nginx.conf"): conf})
    assert replace.nginx_upstreams(conn) == ("10.0.0.2", "10.0.0.5")
