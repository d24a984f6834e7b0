"""Lab configuration, argument handling and the bad inputs, without touching the system."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runbooks_lib import cli
from runbooks_lib.errors import BadParameters, LabError
from runbooks_lib.lab import image, net
from runbooks_lib.lab.config import LabConfig
from runbooks_lib.lab.machines import Lab, MachineStatus, status_table


@pytest.fixture
def config(tmp_path: Path) -> LabConfig:
    return LabConfig(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", subnet="10.213.7.0/24",
                     bridge="rbtst0")


def test_addresses_follow_the_node_number(config: LabConfig) -> None:
    assert config.host_ip == "10.213.7.1"
    assert config.ip_of("node1") == "10.213.7.11"
    assert config.ip_of("node5") == "10.213.7.15"
    assert config.node_names(3) == ["node1", "node2", "node3"]
    assert config.mac_of("node1") != config.mac_of("node2")
    assert config.nspawn_name("node1") == "rbtst0-node1"


def test_interface_names_fit_the_kernel_limit(tmp_path: Path) -> None:
    config = LabConfig(state_dir=tmp_path, cache_dir=tmp_path, bridge="abcdef")
    assert max(len(config.veth_of(n)) for n in config.node_names(9)) <= 15
    with pytest.raises(BadParameters, match="bridge name"):
        LabConfig(state_dir=tmp_path, cache_dir=tmp_path, bridge="abcdefg")


@pytest.mark.parametrize("name", ["node0", "node10", "master1", "node-1", "", "NODE1"])
def test_unknown_machine_names_are_rejected(config: LabConfig, name: str) -> None:
    with pytest.raises(BadParameters, match="unknown machine"):
        config.ip_of(name)


@pytest.mark.parametrize("count", [0, -1, 10])
def test_node_count_is_bounded(config: LabConfig, count: int) -> None:
    with pytest.raises(BadParameters, match="--nodes"):
        config.node_names(count)


@pytest.mark.parametrize("subnet", ["8.8.8.0/24", "not-a-net", "10.0.0.0/28", "fd00::/64"])
def test_bad_subnets_are_rejected(tmp_path: Path, subnet: str) -> None:
    with pytest.raises(BadParameters):
        LabConfig(state_dir=tmp_path, cache_dir=tmp_path, subnet=subnet)


def test_bad_bridge_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BadParameters, match="bridge"):
        LabConfig(state_dir=tmp_path, cache_dir=tmp_path, bridge="Bad-Name!")


def test_image_key_changes_with_the_package_list(config: LabConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    key = image.image_key(config)
    monkeypatch.setattr(image, "IMAGE_PACKAGES", image.IMAGE_PACKAGES + ("vim",))
    assert image.image_key(config) != key
    assert not image.is_built(config)


def test_not_root_is_a_clear_error(config: LabConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root") as info:
        Lab(config).up(nodes=1)
    assert "sudo" in str(info.value)
    assert not config.state_dir.exists(), "nothing may be created before the checks pass"


def test_missing_tools_are_named(config: LabConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda tool: None if tool == "systemd-nspawn" else f"/usr/bin/{tool}")
    with pytest.raises(LabError, match="systemd-nspawn") as info:
        Lab(config).up(nodes=1)
    assert "apt-get install" in str(info.value)


def test_missing_debootstrap_is_named(config: LabConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda tool: None)
    with pytest.raises(LabError, match="debootstrap"):
        image.ensure_image(config, log=lambda m: None)
    assert not any(config.cache_dir.glob(".building-*")) if config.cache_dir.exists() else True


def fake_ip(addrs: list[dict], routes: list[dict]):
    def run(argv, **kwargs):
        out = json.dumps(addrs if "addr" in argv else routes)
        return subprocess.CompletedProcess(argv, 0, out, "")
    return run


def test_address_range_in_use_is_refused(config: LabConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    addrs = [{"ifname": "eth1", "addr_info": [{"local": "10.213.7.40", "prefixlen": 16}]}]
    monkeypatch.setattr(net.sh, "run", fake_ip(addrs, []))
    with pytest.raises(LabError, match="already in use by eth1"):
        net.check_range_free(config)


def test_overlapping_route_is_refused(config: LabConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    routes = [{"dst": "10.213.0.0/16", "dev": "tun0"}, {"dst": "default", "dev": "eth0"}]
    monkeypatch.setattr(net.sh, "run", fake_ip([], routes))
    with pytest.raises(LabError, match="overlaps route 10.213.0.0/16"):
        net.check_range_free(config)


def test_free_range_passes(config: LabConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    addrs = [{"ifname": "eth0", "addr_info": [{"local": "192.0.2.2", "prefixlen": 24}]},
             {"ifname": "rbtst0", "addr_info": [{"local": "10.213.7.1", "prefixlen": 24}]}]
    monkeypatch.setattr(net.sh, "run", fake_ip(addrs, [{"dst": "192.0.2.0/24", "dev": "eth0"}]))
    net.check_range_free(config)


def test_a_second_lab_on_the_same_bridge_is_refused(config: LabConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(net, "bridge_owner", lambda c: "/var/lib/some-other-lab")
    with pytest.raises(LabError, match="another lab already runs"):
        Lab(config).up(nodes=1)
    assert not (config.state_dir / "machines").exists()


def test_unknown_machine_in_fault_commands(config: LabConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    (config.machine_dir("node1") / "upper").mkdir(parents=True)
    lab = Lab(config)
    with pytest.raises(LabError, match=r"unknown machine 'node4' \(lab machines: node1\)"):
        lab.poweroff("node4")
    with pytest.raises(BadParameters):
        lab.poweron("server1")
    with pytest.raises(LabError, match="unknown power-off mode"):
        lab.poweroff("node1", mode="yank")
    with pytest.raises(LabError, match="invalid snapshot name"):
        lab.snapshot("node1", "../escape")
    with pytest.raises(LabError, match="two different machines"):
        lab.partition("node1", "node1")


def test_status_table_format() -> None:
    rows = [MachineStatus("node1", "10.213.7.11", "running", 75.0, 123),
            MachineStatus("node2", "10.213.7.12", "off", None, None)]
    table = status_table(rows).splitlines()
    assert table[0].split() == ["MACHINE", "IP", "STATE", "UPTIME"]
    assert table[1].split() == ["node1", "10.213.7.11", "running", "75s"]
    assert table[2].split() == ["node2", "10.213.7.12", "off", "-"]


def test_cli_parses_lab_commands() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["lab", "up"])
    assert args.nodes == 5
    args = parser.parse_args(["lab", "poweroff", "node2", "--mode", "freeze"])
    assert (args.node, args.mode) == ("node2", "freeze")
    args = parser.parse_args(["lab", "ssh", "node1", "uname", "-a"])
    assert args.cmd == ["uname", "-a"]
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "poweroff", "node2", "--mode", "yank"])
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "up", "--nodes", "many"])


def test_cli_reports_errors_without_traceback(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNBOOKS_LAB_DIR", str(tmp_path))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert cli.main(["lab", "up", "--nodes", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the lab needs root") and "Traceback" not in err


def test_snapshot_cli_takes_node_and_name_or_all(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    calls = []
    monkeypatch.setattr(Lab, "snapshot", lambda self, node, name: calls.append(("one", node, name)) or Path("/x"))
    monkeypatch.setattr(Lab, "snapshot_all", lambda self, name: calls.append(("all", name)))
    assert cli.main(["lab", "snapshot", "node2", "before"]) == 0
    assert cli.main(["lab", "snapshot", "--all", "installed"]) == 0
    assert calls == [("one", "node2", "before"), ("all", "installed")]
    assert cli.main(["lab", "snapshot", "node2"]) == 1
    assert cli.main(["lab", "snapshot", "--all", "node2", "x"]) == 1
    assert "give only the snapshot name" in capsys.readouterr().err


def test_bridge_mac_is_fixed_unicast_and_locally_administered() -> None:
    mac = net.bridge_mac(LabConfig(bridge="rblab0"))
    assert mac == net.bridge_mac(LabConfig(bridge="rblab0"))
    assert mac != net.bridge_mac(LabConfig(bridge="rbci0"))
    first = int(mac.split(":")[0], 16)
    assert len(mac.split(":")) == 6 and first & 0x01 == 0 and first & 0x02
