"""nodes: each preparation step checks then acts, and a second run changes nothing."""

from __future__ import annotations

import os

import pytest

from runbooks_lib import errors, nodes, ssh, testing


class FakeMachine:
    """A tiny model of a Debian machine behind MockConnection: files, sysctl, units."""

    def __init__(self, files: dict[str, str] | None = None, *, ip_forward="0", swaps="", link: str | None = None) -> None:
        self.files = dict(files or {})
        self.ip_forward = ip_forward
        self.swaps = swaps
        self.link = link
        self.units = {"systemd-resolved": ["enabled", "active"], "dev-sda2.swap": ["enabled", "inactive"]}
        self.swap_units = ["dev-sda2.swap"]
        self.restarts: list[str] = []
        self.conn = testing.MockConnection("node1")
        self.conn.execute = self.execute  # type: ignore[method-assign]

    def execute(self, argv, command, *, timeout, input):
        self.conn.calls.append(testing.Call(tuple(argv), command, input))
        a = list(argv)
        if a[:2] == ["cat", "--"]:
            path = a[2]
            if path == "/etc/resolv.conf" and self.link:
                path = os.path.normpath(os.path.join("/etc", self.link))
            if path == "/proc/swaps":
                return 0, "Filename\tType\tSize\tUsed\tPriority\n" + self.swaps, ""
            if path in self.files:
                return 0, self.files[path], ""
            return 1, "", f"cat: {path}: No such file or directory\n"
        if a[:2] == ["sh", "-c"]:  # ssh.write_text
            self.files[a[4]] = input.decode()
            return 0, "", ""
        if a == ["sysctl", "-n", "net.ipv4.ip_forward"]:
            return 0, self.ip_forward + "\n", ""
        if a == ["sysctl", "-w", "net.ipv4.ip_forward=1"]:
            self.ip_forward = "1"
            return 0, "net.ipv4.ip_forward = 1\n", ""
        if a == ["swapoff", "-a"]:
            self.swaps = ""
            return 0, "", ""
        if a[:2] == ["systemctl", "list-units"]:
            return 0, "".join(f"{u} loaded inactive dead Swap\n" for u in self.swap_units), ""
        if a[:2] == ["systemctl", "is-enabled"]:
            return 0, self.units.get(a[2], ["not-found"])[0] + "\n", ""
        if a[:2] == ["systemctl", "is-active"]:
            state = self.units.get(a[2], ["", "inactive"])[1]
            return (0 if state == "active" else 3), state + "\n", ""
        if a[:2] == ["systemctl", "mask"]:
            self.units[a[2]][0] = "masked"
            return 0, "", ""
        if a[:2] == ["systemctl", "restart"]:
            self.restarts.append(a[2])
            if a[2] == "systemd-resolved":
                self.files["/run/systemd/resolve/resolv.conf"] = "nameserver 9.9.9.9\n"
            return 0, "", ""
        if a[:3] == ["systemctl", "enable", "--now"]:
            self.units[a[3]] = ["enabled", "active"]
            return 0, "", ""
        if a == ["readlink", "/etc/resolv.conf"]:
            return (0, self.link + "\n", "") if self.link else (1, "", "")
        if a[0] == "test":
            return (0 if a[2] in self.files else 1), "", ""
        if a[0] == "cp":
            self.files[a[3]] = self.files[a[2]]
            return 0, "", ""
        if a[:2] == ["ln", "-sfn"]:
            self.link = a[2]
            self.files.pop("/etc/resolv.conf", None)
            return 0, "", ""
        if a[0] == "mkdir":
            return 0, "", ""
        if a == ["python3", "--version"]:
            return 0, "Python 3.11.2\n", ""
        raise AssertionError(f"unexpected command: {command}")


def test_ip_forward_set_now_and_persisted_then_idempotent() -> None:
    m = FakeMachine()
    first = nodes.ensure_ip_forward(m.conn)
    assert first.changed and "set to 1 now (was 0)" in first.detail
    assert m.files[nodes.IP_FORWARD_CONF] == "net.ipv4.ip_forward = 1\n"
    second = nodes.ensure_ip_forward(m.conn)
    assert not second.changed and second.step == "ip_forward" and second.host == "node1"


def test_swap_off_comments_fstab_and_masks_units() -> None:
    fstab = "# <file system> <mount point> <type>\nUUID=a / ext4 defaults 0 1\n/dev/sda2 none swap sw 0 0\n#/swapfile none swap sw 0 0\n"
    m = FakeMachine({"/etc/fstab": fstab}, swaps="/dev/sda2 partition 1048572 0 -2\n")
    first = nodes.ensure_swap_off(m.conn)
    assert first.changed and "swapoff -a" in first.detail and "masked dev-sda2.swap" in first.detail
    assert m.files["/etc/fstab"].splitlines() == [
        "# <file system> <mount point> <type>", "UUID=a / ext4 defaults 0 1",
        "#swap-off# /dev/sda2 none swap sw 0 0", "#/swapfile none swap sw 0 0",
    ]
    assert not nodes.ensure_swap_off(m.conn).changed


def test_python_present() -> None:
    m = FakeMachine()
    change = nodes.ensure_python(m.conn)
    assert not change.changed and "3.11.2" in change.detail
    conn = testing.MockConnection("bare", {("python3", "--version"): testing.Reply(exited=127)})
    with pytest.raises(errors.PreconditionFailed):
        nodes.ensure_python(conn, install=False)


def test_resolv_conf_pitfall_detected() -> None:
    stub = {"/run/systemd/resolve/stub-resolv.conf": "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
            "/run/systemd/resolve/resolv.conf": "# no servers\n"}
    state = nodes.resolv_conf_state(FakeMachine(stub, link="../run/systemd/resolve/stub-resolv.conf").conn)
    assert state.link_target == nodes.STUB_RESOLV_CONF and state.nameservers == ("127.0.0.53",)
    assert not state.ok and any("no upstream DNS servers" in p for p in state.problems)
    plain = nodes.resolv_conf_state(FakeMachine({"/etc/resolv.conf": "nameserver 1.1.1.1\n",
                                                "/run/systemd/resolve/resolv.conf": "nameserver 1.1.1.1\n"}).conn)
    assert plain.link_target is None and plain.problems == (
        "/etc/resolv.conf is a regular file, not a link to systemd-resolved's file",)


def test_fix_resolv_conf_then_idempotent() -> None:
    m = FakeMachine({"/etc/resolv.conf": "nameserver 127.0.0.53\n", "/run/systemd/resolve/resolv.conf": "",
                     "/run/systemd/resolve/stub-resolv.conf": "nameserver 127.0.0.53\n"})
    first = nodes.fix_resolv_conf(m.conn, ["9.9.9.9", "1.1.1.1"])
    assert first.changed and m.restarts == ["systemd-resolved"]
    assert "DNS=9.9.9.9 1.1.1.1\n" in m.files[nodes.RESOLVED_DROPIN]
    assert m.link == nodes.STUB_RESOLV_CONF and m.files[nodes.RESOLV_CONF_BACKUP] == "nameserver 127.0.0.53\n"
    second = nodes.fix_resolv_conf(m.conn, ["9.9.9.9", "1.1.1.1"])
    assert not second.changed and m.restarts == ["systemd-resolved"]
    with pytest.raises(errors.BadParameters):
        nodes.fix_resolv_conf(m.conn, ["127.0.0.53"])
    with pytest.raises(errors.BadParameters):
        nodes.fix_resolv_conf(m.conn, ["dns.example"])


def test_ensure_resolved() -> None:
    m = FakeMachine()
    assert not nodes.ensure_resolved(m.conn).changed
    m.units["systemd-resolved"] = ["disabled", "inactive"]
    change = nodes.ensure_resolved(m.conn)
    assert change.changed and m.units["systemd-resolved"] == ["enabled", "active"]


KUBELET_CONFIG = """apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Kubespray template
clusterDNS:
- 169.254.25.10
resolvConf: "/etc/resolv.conf"
rotateCertificates: true
"""


def test_kubelet_resolv_conf_fix_needs_restart_once() -> None:
    m = FakeMachine({nodes.KUBELET_CONFIG: KUBELET_CONFIG})
    change = nodes.set_kubelet_resolv_conf(m.conn)
    assert change.changed and change.restart == ("kubelet",) and "/etc/resolv.conf ->" in change.detail
    text = m.files[nodes.KUBELET_CONFIG]
    assert "resolvConf: /run/systemd/resolve/resolv.conf\n" in text and "# Kubespray template\n" in text
    assert len(text.splitlines()) == len(KUBELET_CONFIG.splitlines())
    again = nodes.set_kubelet_resolv_conf(m.conn)
    assert not again.changed and again.restart == ()


def test_kubelet_resolv_conf_added_when_absent() -> None:
    m = FakeMachine({nodes.KUBELET_CONFIG: "kind: KubeletConfiguration\nclusterDNS: [169.254.25.10]"})
    assert nodes.set_kubelet_resolv_conf(m.conn).changed
    assert m.files[nodes.KUBELET_CONFIG].endswith("\nresolvConf: /run/systemd/resolve/resolv.conf\n")


def test_diagnostics_commands() -> None:
    conn = testing.MockConnection("node1", {
        ("journalctl", "-u", "etcd", "-n", "50", "--no-pager"): "-- Logs --\nstarted\n",
        ("systemctl", "status", "etcd", "--no-pager", "--lines=10"): testing.Reply("inactive (dead)", exited=3),
        ("systemctl", "is-active", "kubelet"): ["activating\n", "active\n"],
        ("systemctl", "restart", "kubelet"): "",
    })
    assert "started" in nodes.journal(conn, "etcd", lines=50)
    assert nodes.status(conn, "etcd").exited == 3
    change = nodes.restart(conn, "kubelet", timeout=10)
    assert change.changed and change.step == "restart kubelet"
    conn.assert_all_used()


def test_wait_active_times_out_with_journal() -> None:
    conn = testing.MockConnection("node1", {
        ("systemctl", "is-active", "etcd"): testing.Reply("failed\n", exited=3),
        ("journalctl", "-u", "etcd", "-n", "15", "--no-pager"): "etcd: member count is unequal\n",
    })
    with pytest.raises(errors.WaitTimedOut) as info:
        nodes.wait_active(conn, "etcd", timeout=0.3, interval=0.1)
    assert "etcd on node1 is failed" in str(info.value) and "member count is unequal" in str(info.value)


def test_planned_changes_match_the_steps_and_are_empty_after_them() -> None:
    fstab = "UUID=a / ext4 defaults 0 1\n/dev/sda2 none swap sw 0 0\n"
    m = FakeMachine({"/etc/fstab": fstab, "/etc/resolv.conf": "nameserver 127.0.0.53\n",
                     "/run/systemd/resolve/resolv.conf": "", "/run/systemd/resolve/stub-resolv.conf": "x\n"},
                    swaps="/dev/sda2 partition 1048572 0 -2\n")
    plan = nodes.planned_changes(m.conn, ["9.9.9.9"])
    assert [c.step for c in plan] == ["python", "ip_forward", "swap", "systemd-resolved", "resolv.conf"]
    assert [c.changed for c in plan] == [False, True, True, False, True]
    assert "swapoff -a" in plan[2].detail and "mask dev-sda2.swap" in plan[2].detail
    assert "link /etc/resolv.conf" in plan[4].detail and "no upstream DNS servers" in plan[4].detail
    writes = len([c for c in m.conn.calls if c.argv[:2] in (("sh", "-c"), ("sysctl", "-w"))])
    assert writes == 0 and m.restarts == [], "the plan must not change anything"
    nodes.ensure_ip_forward(m.conn)
    nodes.ensure_swap_off(m.conn)
    nodes.ensure_resolved(m.conn)
    nodes.fix_resolv_conf(m.conn, ["9.9.9.9"])
    assert not any(c.changed for c in nodes.planned_changes(m.conn, ["9.9.9.9"]))
    assert nodes.planned_changes(m.conn, ["1.1.1.1"])[4].changed, "other upstream servers: the drop-in changes"


def test_require_reachable_lists_each_host_and_refuses_at_the_first_that_fails() -> None:
    ok = testing.MockConnection("node1", {("true",): "", ("sudo", "-n", "true"): ""})
    rows = nodes.require_reachable({"node1": ok}, sudo=True, timeout=5)
    assert rows == [{"host": "node1", "address": ok.host.address, "ssh": "ok, host key pinned"}]
    assert [c.argv for c in ok.calls] == [("true",), ("sudo", "-n", "true")]

    changed_key = testing.MockConnection("node5", {("true",): errors.HostKeyError("host key changed",
                                                                                  fix="ssh-keygen -R node5")})
    with pytest.raises(errors.PreconditionFailed, match="node5: host key changed; nothing was changed") as info:
        nodes.require_reachable({"node1": ok, "node5": changed_key}, timeout=5)
    assert info.value.fix == "ssh-keygen -R node5"

    down = testing.MockConnection("node4", {("true",): errors.HostUnreachable("connection timed out")})
    with pytest.raises(errors.PreconditionFailed, match=r"node4 \(192\.0\.2\.1\) cannot be used: connection timed out"):
        nodes.require_reachable({"node4": down}, timeout=5)


def test_prepare_works_from_hosts_before_the_first_install_and_from_the_inventory_after(tmp_path) -> None:
    """The README's order: prepare-nodes runs before install-cluster has written any inventory."""
    from runbooks_lib import schemas
    from runbooks_lib.errors import BadParameters, PreconditionFailed

    hosts = {"node1": "203.0.113.11", "node2": "203.0.113.12"}
    p = schemas.PrepareParams(cluster_name="c", inventory=tmp_path / "hosts.yaml", hosts=hosts,
                              upstream_dns_servers=("192.0.2.53",))
    assert nodes.prepare_targets(p) == (hosts, "hosts (no inventory yet: install-cluster writes it from them)")
    limited = schemas.PrepareParams(**{**p.__dict__, "limit": ("node2",)})
    assert nodes.prepare_targets(limited)[0] == {"node2": "203.0.113.12"}
    (tmp_path / "hosts.yaml").write_text("all:\n  hosts:\n    node7:\n      ansible_host: 198.51.100.7\n")
    assert nodes.prepare_targets(p) == ({"node7": "198.51.100.7"}, "the inventory hosts.yaml")
    with pytest.raises(BadParameters, match="not in the inventory: node2"):
        nodes.prepare_targets(limited)
    (tmp_path / "hosts.yaml").unlink()
    with pytest.raises(PreconditionFailed, match="does not exist and hosts is empty"):
        nodes.prepare_targets(schemas.PrepareParams(**{**p.__dict__, "hosts": {}}))
