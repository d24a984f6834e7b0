"""etcd: parsing real etcdctl 3.4.23 output, command lines, selection, snapshots, env file, quorum."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from runbooks_lib import errors, etcd, etcd_snapshot, ssh, testing

DATA = Path(__file__).resolve().parent.parent / "data" / "etcd"


def data(name: str) -> str:
    return (DATA / name).read_text()


def ctl_for(conn: testing.MockConnection, **kw) -> etcd.Etcdctl:
    return etcd.Etcdctl(conn, "node1", **kw)


def test_argv_uses_kubespray_cert_paths() -> None:
    ctl = etcd.Etcdctl(testing.MockConnection("node1"), "node1", endpoints=("https://10.0.0.1:2379", "https://10.0.0.2:2379"))
    assert ctl.argv("member", "list") == [
        "env", "ETCDCTL_API=3", "etcdctl", "--endpoints=https://10.0.0.1:2379,https://10.0.0.2:2379",
        "--cacert=/etc/ssl/etcd/ssl/ca.pem", "--cert=/etc/ssl/etcd/ssl/admin-node1.pem",
        "--key=/etc/ssl/etcd/ssl/admin-node1-key.pem", "member", "list",
    ]
    assert etcd.peer_url("10.0.0.11") == "https://10.0.0.11:2380"
    assert etcd.peer_url("fd00::1") == "https://[fd00::1]:2380"


def test_parse_real_member_list() -> None:
    members = etcd.parse_member_list(data("member_list.json"))
    assert [m.name for m in members] == ["node1", "node3", "node2"]
    node1, node3 = members[0], members[1]
    # etcdctl itself printed node3's id in hex when removing it
    assert node3.id_hex == data("member_remove.txt").split()[1] == "5f0584138edc8812"
    assert node1.peer_urls == ("https://127.0.0.11:42659",) and node1.started
    unstarted = etcd.parse_member_list(data("member_list_unstarted.json"))
    new = [m for m in unstarted if not m.started]
    assert len(new) == 1 and new[0].name == "" and new[0].client_urls == ()
    assert new[0].id_hex == data("member_add.txt").split()[1]


def test_parse_real_health_and_status() -> None:
    health = etcd.parse_endpoint_health(data("endpoint_health_one_down.json"))
    down = [h for h in health if not h.healthy]
    assert len(health) == 3 and len(down) == 1
    assert down[0].endpoint == "https://127.0.0.13:49715" and down[0].error == "context deadline exceeded"
    statuses = etcd.parse_endpoint_status(data("endpoint_status_cluster.json"))
    assert len(statuses) == 3
    assert sum(s.is_leader for s in statuses) == 1
    s = statuses[0]
    assert (s.version, s.db_size, s.raft_term, s.revision) == ("3.4.23", 20480, 2, 1)
    assert s.leader_hex == etcd.parse_member_list(data("member_list.json"))[0].id_hex  # node1 led


def test_member_list_and_health_through_connection() -> None:
    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    conn.expect(ctl.argv("member", "list", "-w", "json"), data("member_list.json"))
    conn.expect(
        ctl.argv("endpoint", "health", "-w", "json", "--cluster"),
        testing.Reply(data("endpoint_health_one_down.json"), data("endpoint_health_one_down.stderr"), 1),
    )
    assert len(etcd.member_list(ctl)) == 3
    health = etcd.endpoint_health(ctl, cluster=True)  # exit 1 is a result, not an error
    assert [h.healthy for h in health] == [True, True, False]
    conn.assert_all_used()


def test_endpoint_status_reports_unanswered_endpoints() -> None:
    conn = testing.MockConnection("node1")
    eps = ["https://127.0.0.11:33751", "https://127.0.0.12:51779", "https://127.0.0.13:49715"]
    ctl = ctl_for(conn)
    conn.expect(
        ctl.argv("endpoint", "status", "-w", "json", endpoints=eps),
        testing.Reply(data("endpoint_status_one_down.json"), data("endpoint_status_one_down.stderr"), 1),
    )
    report = etcd.endpoint_status(ctl, endpoints=eps)
    assert len(report) == 2 and report.leaders == {etcd.parse_member_list(data("member_list.json"))[0].id_hex}
    assert any("Failed to get the status of endpoint https://127.0.0.13:49715" in e for e in report.errors)


def test_endpoint_status_raises_when_nothing_answers() -> None:
    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    conn.expect(ctl.argv("endpoint", "status", "-w", "json"), testing.Reply("", "Error: context deadline exceeded\n", 1))
    with pytest.raises(errors.CommandFailed, match="deadline"):
        etcd.endpoint_status(ctl)


def _members(*specs: tuple[int, str, str]) -> str:
    return json.dumps({"header": {}, "members": [
        {"ID": i, "name": n, "peerURLs": [p], "clientURLs": [p.replace("2380", "2379")]} for i, n, p in specs
    ]})


def test_remove_by_peer_url_is_exact_never_substring() -> None:
    listing = _members((0x11, "etcd1", "https://10.0.0.1:2380"), (0x22, "etcd11", "https://10.0.0.11:2380"))
    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    conn.expect(ctl.argv("member", "list", "-w", "json"), listing)
    conn.expect(ctl.argv("endpoint", "health", "-w", "json", "--cluster"), json.dumps(
        [{"endpoint": "https://10.0.0.1:2379", "health": True}, {"endpoint": "https://10.0.0.11:2379", "health": True}]))
    conn.expect(ctl.argv("member", "remove", "22"), "Member 22 removed from cluster 1\n")
    removed = etcd.member_remove(ctl, peer_url="https://10.0.0.11:2380")
    assert removed.name == "etcd11"
    members = etcd.parse_member_list(listing)
    assert etcd.find_member(members, peer_url="https://10.0.0.1:2380/").name == "etcd1"
    assert etcd.find_member(members, member_id="11").name == "etcd1"
    assert etcd.find_member(members, member_id=0x22).name == "etcd11"
    with pytest.raises(errors.PreconditionFailed, match="no etcd member with peer URL https://10.0.0.1:2379"):
        etcd.find_member(members, peer_url="https://10.0.0.1:2379")
    with pytest.raises(errors.BadParameters):
        etcd.find_member(members, name="etcd1", member_id=1)
    # only "remove 22" ran: a substring match would also have hit 10.0.0.1
    assert [c.argv[-1] for c in conn.calls] == ["json", "--cluster", "22"]


def test_member_remove_refuses_to_lose_quorum_unless_check_is_false() -> None:
    # node3 is down (real etcdctl output): removing node2 would leave node1 alone with dead node3.
    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    conn.expect(ctl.argv("member", "list", "-w", "json"), data("member_list.json"))
    conn.expect(ctl.argv("endpoint", "health", "-w", "json", "--cluster"),
                testing.Reply(data("endpoint_health_one_down.json"), data("endpoint_health_one_down.stderr"), 1))
    with pytest.raises(errors.PreconditionFailed) as info:
        etcd.member_remove(ctl, name="node2")
    message = str(info.value)
    assert "refusing to remove etcd member node2" in message and "below quorum 2" in message
    assert "check=False" in message
    assert not any("remove" in c.argv for c in conn.calls)

    # Removing the dead member keeps quorum: allowed.
    conn.expect(ctl.argv("member", "remove", "5f0584138edc8812"), "Member 5f0584138edc8812 removed\n")
    assert etcd.member_remove(ctl, name="node3").name == "node3"

    # The opt-out: the caller knows the cluster must shrink anyway.
    conn.expect(ctl.argv("member", "remove", "a29854aacca35121"), "Member a29854aacca35121 removed\n")
    assert etcd.member_remove(ctl, name="node2", check=False).name == "node2"
    assert [c.argv[-1] for c in conn.calls][-1] == "a29854aacca35121"


def test_member_remove_retries_the_unhealthy_cluster_refusal_then_reports_it() -> None:
    # etcd refuses while the survivors have been connected for less than 5 s (strict reconfig check).
    listing = _members((0x11, "etcd1", "https://10.0.0.1:2380"), (0x22, "etcd2", "https://10.0.0.2:2380"),
                       (0x33, "etcd3", "https://10.0.0.3:2380"))
    refusal = testing.Reply("", "Error: etcdserver: unhealthy cluster\n", 1)
    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    conn.expect(ctl.argv("member", "list", "-w", "json"), listing)
    conn.expect(ctl.argv("member", "remove", "33"), [refusal, "Member 33 removed from cluster 1\n"])
    assert etcd.member_remove(ctl, name="etcd3", check=False, retry_for=5).name == "etcd3"
    assert [c.argv[-1] for c in conn.calls].count("33") == 2

    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    conn.expect(ctl.argv("member", "list", "-w", "json"), listing)
    conn.expect(ctl.argv("member", "remove", "33"), [refusal] * 10)
    with pytest.raises(errors.CommandFailed, match="unhealthy cluster"):
        etcd.member_remove(ctl, name="etcd3", check=False, retry_for=1.5)


def test_member_add_parses_initial_cluster_and_retries_unhealthy() -> None:
    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    peer = "https://127.0.0.13:49283"
    conn.expect(ctl.argv("member", "list", "-w", "json"), _members((1, "node1", "https://127.0.0.11:42659")))
    conn.expect(ctl.argv("member", "add", "node3", f"--peer-urls={peer}"), [
        testing.Reply("", "Error: etcdserver: unhealthy cluster\n", 1),
        data("member_add.txt"),
    ])
    added = etcd.member_add(ctl, "node3", peer, retry_for=5)
    assert added.id_hex == "9c1ed8131aafeac9" and added.name == "node3"
    assert added.initial_cluster.split(",") == [
        "node1=https://127.0.0.11:42659", "node3=https://127.0.0.13:49283", "node2=https://127.0.0.12:48811"
    ]
    assert added.initial_cluster_state == "existing" and added.peer_url == peer


def test_member_add_refuses_existing_peer_url() -> None:
    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    conn.expect(ctl.argv("member", "list", "-w", "json"), data("member_list.json"))
    with pytest.raises(errors.PreconditionFailed, match="already belongs"):
        etcd.member_add(ctl, "node3", "https://127.0.0.13:49283")


def test_snapshot_save_verify_download(tmp_path: Path) -> None:
    content = b"fake snapshot bytes"
    sha = hashlib.sha256(content).hexdigest()
    conn = testing.MockConnection("node2", files={"/var/backups/s.db": content})
    ctl = etcd.Etcdctl(conn, "node2", endpoints=("https://10.0.0.2:2379",))
    argv = etcd_snapshot.save_and_verify_argv(ctl, "/var/backups/s.db", "https://10.0.0.2:2379")
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["etcd-snapshot", "/var/backups/s.db", *ctl.argv()]
    status = json.dumps(json.loads(data("snapshot_status.json")))
    conn.expect(argv, f'{status}\n{sha}  /var/backups/s.db\n{{"header":{{"revision":9}},"count":42}}\n')
    snap = etcd.snapshot(ctl, "/var/backups/s.db", tmp_path / "out" / "s.db")
    assert snap.status == etcd.SnapshotStatus(hash=823926600, revision=0, total_keys=5, total_size=20480)
    assert snap.local_sha256 == snap.remote_sha256 == sha and snap.size == len(content) and snap.keys == 42
    assert oct((tmp_path / "out" / "s.db").stat().st_mode & 0o777) == "0o600"
    conn.assert_all_used()


def test_snapshot_checksum_mismatch_removes_local_copy(tmp_path: Path) -> None:
    conn = testing.MockConnection("node2", files={"/s.db": b"corrupted in transit"})
    ctl = etcd.Etcdctl(conn, "node2", endpoints=("https://10.0.0.2:2379",))
    status = json.dumps(json.loads(data("snapshot_status.json")))
    conn.expect(etcd_snapshot.save_and_verify_argv(ctl, "/s.db", "https://10.0.0.2:2379"),
                f'{status}\n{"0" * 64}  /s.db\n{{"count":1}}\n')
    with pytest.raises(errors.CommandFailed, match="differs"):
        etcd.snapshot(ctl, "/s.db", tmp_path / "s.db")
    assert not (tmp_path / "s.db").exists()


def test_snapshot_unexpected_output_is_a_failure(tmp_path: Path) -> None:
    conn = testing.MockConnection("node2")
    ctl = etcd.Etcdctl(conn, "node2", endpoints=("https://10.0.0.2:2379",))
    conn.expect(etcd_snapshot.save_and_verify_argv(ctl, "/s.db", "https://10.0.0.2:2379"), "Error: no\n")
    with pytest.raises(errors.CommandFailed, match="unexpected"):
        etcd.snapshot(ctl, "/s.db", tmp_path / "s.db")


def test_snapshot_requires_one_endpoint() -> None:
    ctl = etcd.Etcdctl(testing.MockConnection("n"), "n", endpoints=("https://a:2379", "https://b:2379"))
    with pytest.raises(errors.BadParameters, match="one endpoint"):
        etcd.snapshot_save(ctl, "/s.db")


ENV = """# etcd.env written by Kubespray
ETCD_DATA_DIR=/var/lib/etcd
ETCD_NAME=etcd1
ETCD_INITIAL_CLUSTER=etcd1=https://10.0.0.1:2380,etcd2=https://10.0.0.2:2380

# TLS
ETCD_CLIENT_CERT_AUTH="true"
"""


def test_env_file_parse_and_set_preserves_order_and_comments() -> None:
    env = etcd.EnvFile.parse(ENV)
    assert env["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_INITIAL_CLUSTER"].endswith("etcd2=https://10.0.0.2:2380")
    new = env.set("ETCD_INITIAL_CLUSTER_STATE", "existing").set("ETCD_NAME", "etcd 3")
    text = new.text()
    assert text.startswith("# etcd.env written by Kubespray\nETCD_DATA_DIR=/var/lib/etcd\nETCD_NAME=\"etcd 3\"\n")
    assert "# TLS\n" in text and text.endswith("ETCD_INITIAL_CLUSTER_STATE=existing\n")
    assert etcd.EnvFile.parse(text)["ETCD_NAME"] == "etcd 3"


def test_set_env_writes_atomically_and_only_when_needed() -> None:
    conn = testing.MockConnection("node1")
    conn.expect(["cat", "--", "/etc/etcd.env"], ENV)
    conn.expect(ssh.write_text_argv("/etc/etcd.env"), "")
    change = etcd.set_env(conn, "ETCD_NAME", "etcd4")
    assert (change.old, change.new, change.changed) == ("etcd1", "etcd4", True)
    written = conn.calls[-1].input.decode()
    assert "ETCD_NAME=etcd4\n" in written and written.count("\n") == ENV.count("\n")
    again = etcd.set_env(conn, "ETCD_NAME", "etcd1")
    assert not again.changed and len(conn.calls) == 3  # read only, no write


@pytest.mark.parametrize("n,q,ft", [(1, 1, 0), (2, 2, 0), (3, 2, 1), (4, 3, 1), (5, 3, 2), (0, 1, 0)])
def test_quorum_arithmetic(n: int, q: int, ft: int) -> None:
    assert etcd.quorum(n) == q and etcd.fault_tolerance(n) == ft


def test_removal_and_loss_verdicts() -> None:
    three = ["etcd1", "etcd2", "etcd3"]
    ok = etcd.check_removal(three, {"etcd1", "etcd2"}, "etcd3")
    assert ok.ok and ok.members == 2 and ok.quorum == 2 and "even" in ok.message
    bad = etcd.check_removal(three, {"etcd1", "etcd2"}, "etcd2")
    assert not bad.ok and "below quorum 2" in bad.message
    lost = etcd.check_removal(three, {"etcd1"}, "etcd3")
    assert not lost.ok and "lost quorum" in lost.message
    assert not etcd.check_removal(three, set(three), "etcd9").ok
    assert etcd.check_removal(["a", "b", "c", "d", "e"], {"a", "b", "c", "d"}, "e").ok
    assert etcd.check_loss(three, set(three), "etcd1").ok
    no = etcd.check_loss(three, {"etcd1", "etcd2"}, "etcd1")
    assert not no.ok and "would stop" in no.message
    assert not etcd.check_loss(["a", "b"], {"a", "b"}, "a").ok


@pytest.mark.parametrize("version", ["3.4", "3.5"])
def test_endpoint_health_simple_output_of_3_4_and_3_5(version: str) -> None:
    """3.4 prints every result on stderr, 3.5 healthy ones on stdout: the parser reads both (real output)."""
    stdout = data(f"endpoint_health_one_down.{version}.simple.stdout")
    stderr = data(f"endpoint_health_one_down.{version}.simple.stderr")
    assert ("is healthy" in stdout) == (version == "3.5")  # where the healthy line went
    health = etcd.parse_endpoint_health_text(stdout, stderr)
    assert [(h.endpoint, h.healthy) for h in health] == [("http://127.0.0.1:23791", True),
                                                         ("http://127.0.0.1:23799", False)]
    assert health[0].took.endswith("ms") and health[1].error == "failed to commit proposal: context deadline exceeded"


def test_endpoint_health_json_of_3_5_parses_as_3_4s() -> None:
    health = etcd.parse_endpoint_health(data("endpoint_health_one_down.3.5.json"))
    assert [(h.endpoint, h.healthy, h.error) for h in health] == [
        ("http://127.0.0.1:23791", True, ""), ("http://127.0.0.1:23799", False, "context deadline exceeded")]
    assert "Error: unhealthy cluster" in data("endpoint_health_one_down.3.5.stderr")


def test_endpoint_health_settled_asks_again_during_an_election_then_returns_the_last_answer() -> None:
    electing = json.dumps([{"endpoint": "https://10.0.0.1:2379", "health": False, "error": "context deadline exceeded"},
                           {"endpoint": "https://10.0.0.2:2379", "health": False, "error": "context deadline exceeded"}])
    elected = json.dumps([{"endpoint": "https://10.0.0.1:2379", "health": True},
                          {"endpoint": "https://10.0.0.2:2379", "health": True}])
    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    conn.expect(ctl.argv("endpoint", "health", "-w", "json", "--cluster"), [electing, electing, elected])
    health = etcd.endpoint_health_settled(ctl, needed=2, within=10, interval=0.05)
    assert [h.healthy for h in health] == [True, True] and len(conn.calls) == 3

    conn = testing.MockConnection("node1")
    ctl = ctl_for(conn)
    conn.expect(ctl.argv("endpoint", "health", "-w", "json", "--cluster"), [electing] * 100)
    health = etcd.endpoint_health_settled(ctl, needed=2, within=0.3, interval=0.05)
    assert not any(h.healthy for h in health)  # the last answer, for the caller to refuse with
