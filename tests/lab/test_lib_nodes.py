"""nodes preparation on a real lab machine: run every step twice; the second run changes nothing."""

from __future__ import annotations

import pytest

from runbooks_lib import nodes, ssh

pytestmark = pytest.mark.lab

MACHINE = "node4"
SNAP = "lib-nodes-before-prepare"
KUBELET_CONFIG = "/root/kubelet-config-test.yaml"


def prepare(conn: ssh.Connection, upstream: str) -> list[nodes.Change]:
    return [
        nodes.ensure_python(conn, install=False),
        nodes.ensure_ip_forward(conn),
        nodes.ensure_swap_off(conn),
        nodes.ensure_resolved(conn),
        nodes.fix_resolv_conf(conn, [upstream]),
        nodes.set_kubelet_resolv_conf(conn, path=KUBELET_CONFIG),
    ]


def test_prepare_twice_second_run_changes_nothing(running_lab) -> None:
    lab = running_lab
    d = lab.description()
    ip = next(m["ip"] for m in d["machines"] if m["name"] == MACHINE)
    host = ssh.Host(MACHINE, ip, d["ssh_user"], key_path=d["ssh_key"], known_hosts=d["known_hosts"])
    lab.snapshot(MACHINE, SNAP)
    try:
        with ssh.Connection(host, connect_timeout=5) as conn:
            ssh.write_text(conn, KUBELET_CONFIG, "kind: KubeletConfiguration\nresolvConf: /etc/resolv.conf\n")
            before = nodes.resolv_conf_state(conn)
            first = prepare(conn, d["host_ip"])
            assert {c.step: c.changed for c in first}["kubelet resolvConf"] is True
            assert first[-1].restart == ("kubelet",)
            if not before.ok:  # the pitfall as the lab ships it: stub without upstream servers
                assert {c.step: c.changed for c in first}["resolv.conf"] is True
            second = prepare(conn, d["host_ip"])
            assert [c.step for c in second if c.changed] == [], [c for c in second if c.changed]

            assert ssh.run(conn, ["sysctl", "-n", "net.ipv4.ip_forward"], timeout=10).stdout.strip() == "1"
            assert "net.ipv4.ip_forward = 1" in ssh.read_text(conn, nodes.IP_FORWARD_CONF)
            state = nodes.resolv_conf_state(conn)
            assert state.ok and d["host_ip"] in state.upstream
            assert state.link_target == nodes.STUB_RESOLV_CONF
            assert nodes.is_active(conn, "systemd-resolved") == "active"
            log = nodes.journal(conn, "systemd-resolved", lines=20)
            assert log.strip()  # journald answers through SSH
            assert nodes.status(conn, "systemd-resolved").exited == 0
            assert nodes.restart(conn, "systemd-resolved", timeout=60).changed
    finally:
        lab.restore(MACHINE, SNAP)
