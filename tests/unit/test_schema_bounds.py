"""Every runbook schema's check refuses each class of bad value it can hold, naming the field.

Numbers: NaN, infinite, zero or negative timeouts, and numbers outside their
stated range (ports, rates, counts); addresses that cannot be a machine's
(unspecified, loopback, multicast, broadcast); remote directories that are
relative, not normalised, ``/`` or a system directory; role lists naming a
host twice; ansible_env keys that would undo the pinned SSH host keys. A good
baseline of every schema passes. No network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from runbooks_lib import errors, schemas
from runbooks_lib.inventory import ssh_pins

KNOWN = ["node1", "node2", "node3", "node4"]
HOSTS = {"node1": "10.0.0.11", "node2": "10.0.0.12", "node3": "10.0.0.13", "node4": "10.0.0.14"}
BAD_ADDRESSES = ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "::"]

# Each runbook's check (check_prepare also takes the inventory's host names).
CHECKS: dict[str, Callable[[Any], Any]] = {
    "prepare-nodes": lambda p: schemas.check_prepare(p, KNOWN),
    "install-cluster": schemas.check_install,
    "diagnostics": schemas.check_diagnostics,
    "add-worker": schemas.check_add_worker,
    "remove-worker": schemas.check_remove_worker,
    "replace-control-plane": schemas.check_replace,
    "etcd-snapshot": schemas.check_snapshot,
    "restore-cluster": schemas.check_restore,
    "failover-test": schemas.check_failover,
}
# The site values a real parameter file gives (no default is a site value).
SITE = {"cluster_name": "lab", "upstream_dns_servers": ("10.0.0.1",), "app_host": "app.example.com",
        "dead_node": "node1", "replacement": "node5", "replacement_ip": "10.0.0.15",
        "new_workers": {"node5": "10.0.0.15"}, "remove": ("node4",), "fault_injector": "lab",
        "dns_server": "10.0.0.1", "vip": "10.0.0.100"}


def _good(tmp_path: Path, runbook: str) -> Any:
    """A baseline of ``runbook``'s schema that its check accepts: files present under tmp_path, site values."""
    schema = schemas.RUNBOOK_SCHEMAS[runbook]
    (tmp_path / "ks").mkdir(exist_ok=True)
    paths = {"inventory": tmp_path / "hosts.yaml", "kubespray_dir": tmp_path / "ks",
             "known_hosts": tmp_path / "known_hosts", "ssh_key": tmp_path / "id", "kubeconfig": tmp_path / "admin.conf"}
    for name, path in paths.items():
        (path / "cluster.yml" if name == "kubespray_dir" else path).write_text("x")
    names = {f.name for f in fields(schema)}
    site = {k: v for k, v in {**SITE, "backup_dir": tmp_path / "backups"}.items() if k in names}
    return replace(schema(), **paths, **site)


def _problems(runbook: str, p: Any) -> str:
    """The refusal's message ("" when the check accepts ``p``)."""
    try:
        CHECKS[runbook](p)
    except errors.BadParameters as exc:
        return str(exc)
    return ""


def _numbers(schema: type) -> list[tuple[str, type]]:
    """(name, int or float) of every number field of ``schema``."""
    out = []
    for f in fields(schema):
        default = getattr(schema(), f.name)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            out.append((f.name, type(default)))
    return out


def _bad_numbers(kind: type, bounds: schemas.Bounds) -> list[float]:
    """Values just outside ``bounds`` (and NaN/±inf for a float field)."""
    low = bounds.low if bounds.above else bounds.low - (1 if kind is int else 0.001)
    values: list[float] = [low, bounds.low - 1, bounds.high + 1]
    if kind is float:
        values += [math.nan, math.inf, -math.inf]
    return [kind(v) if kind is int else v for v in values]


def test_every_number_of_every_runbook_schema_has_a_stated_range() -> None:
    for runbook, schema in schemas.RUNBOOK_SCHEMAS.items():
        for name, _ in _numbers(schema):
            assert schemas.number_bounds(name) is not None, f"{runbook}: {name} has no stated range"


@pytest.mark.parametrize("runbook", list(schemas.RUNBOOK_SCHEMAS))
def test_a_good_baseline_passes(tmp_path: Path, runbook: str) -> None:
    good = _good(tmp_path, runbook)
    assert _problems(runbook, good) == ""
    assert schemas.check_target(replace(good, hosts=HOSTS, control_planes=("node1",),
                                        etcd_members=("node1", "node2", "node3"), workers=("node3", "node4")))


@pytest.mark.parametrize("runbook", list(schemas.RUNBOOK_SCHEMAS))
def test_every_number_out_of_range_or_not_finite_is_refused(tmp_path: Path, runbook: str) -> None:
    good = _good(tmp_path, runbook)
    schema = schemas.RUNBOOK_SCHEMAS[runbook]
    assert any(name == "timeout_s" for name, _ in _numbers(schema))  # every runbook has one
    missed = []
    for name, kind in _numbers(schema):
        bounds = schemas.number_bounds(name)
        assert bounds is not None
        for value in _bad_numbers(kind, bounds):
            text = _problems(runbook, replace(good, **{name: value}))
            if f"{name} must be {bounds}, got {value}" not in text:
                missed.append((name, value, text))
        for value in (bounds.high, bounds.low if not bounds.above else None):  # the ends are fine
            if value is not None and _problems(runbook, replace(good, **{name: kind(value)})):
                missed.append((name, value, "an end of the range was refused"))
    assert missed == []


@pytest.mark.parametrize(("runbook", "field", "value", "expected"), [
    ("diagnostics", "journal_lines", -5, "journal_lines must be 1..10000, got -5"),
    ("diagnostics", "cert_warn_days", 4000, "cert_warn_days must be 0..3650 days, got 4000"),
    ("diagnostics", "timeout_s", math.nan, "timeout_s must be positive and at most 604800 s (7 days), got nan"),
    ("prepare-nodes", "timeout_s", math.inf, "timeout_s must be positive and at most 604800 s (7 days), got inf"),
    ("prepare-nodes", "timeout_s", 0.0, "timeout_s must be positive"),
    ("failover-test", "dns_port", 70000, "dns_port must be 1..65535, got 70000"),
    ("failover-test", "haproxy_port", -1, "haproxy_port must be 0..65535, got -1"),
    ("failover-test", "rate", 1e6, "rate must be positive and at most 1000 requests per second per strategy"),
    ("failover-test", "haproxy_retries", -1, "haproxy_retries must be 0..100, got -1"),
    ("failover-test", "haproxy_fall", 0, "haproxy_fall must be 1..100, got 0"),
    ("failover-test", "vrrp_router_id", 256, "vrrp_router_id must be 1..255, got 256"),
    ("failover-test", "vip_prefix", 33, "vip_prefix must be 8..32, got 33"),
    ("failover-test", "vrrp_advert_s", 0.001, "vrrp_advert_s must be 0.01..255"),
    ("etcd-snapshot", "keep_last", -1, "keep_last must be 0..10000, got -1"),
    ("etcd-snapshot", "keep_days", math.nan, "keep_days must be 0..36500 days, got nan"),
    ("remove-worker", "dead_drain_grace_period_s", -1, "dead_drain_grace_period_s must be 0..604800 s, got -1"),
    ("remove-worker", "drain_timeout_s", 0, "drain_timeout_s must be positive"),
    ("replace-control-plane", "drain_timeout_s", -math.inf, "drain_timeout_s must be positive"),
])
def test_the_reproduced_numbers_are_refused_stating_the_range(tmp_path: Path, runbook: str, field: str,
                                                             value: float, expected: str) -> None:
    assert expected in _problems(runbook, replace(_good(tmp_path, runbook), **{field: value}))


def test_ports_and_counts_in_range_pass(tmp_path: Path) -> None:
    good = _good(tmp_path, "failover-test")
    for values in ({"haproxy_port": 0}, {"haproxy_port": 65535}, {"dns_port": 5353}, {"haproxy_retries": 0},
                   {"warmup_s": 0.0}, {"rate": 1000.0}):
        assert _problems("failover-test", replace(good, **values)) == "", values


# ---------------------------------------------------------------- addresses

# (runbook, what to replace for a bad address, the label naming it)
ADDRESS_FIELDS = [
    ("add-worker", lambda a: {"new_workers": {"node5": a}}, "new_workers: node5: "),
    ("replace-control-plane", lambda a: {"replacement_ip": a}, "replacement_ip (a new machine needs one): "),
    ("failover-test", lambda a: {"vip": a}, "vip: "),
    *((runbook, lambda a: {"upstream_dns_servers": (a,)}, "upstream_dns_servers: ")
      for runbook in ("prepare-nodes", "install-cluster", "add-worker", "replace-control-plane")),
]


@pytest.mark.parametrize(("runbook", "values", "label"), ADDRESS_FIELDS,
                         ids=[f"{r}-{label.split(':')[0].split(' ')[0]}" for r, _, label in ADDRESS_FIELDS])
def test_addresses_that_cannot_be_a_machines_are_refused(tmp_path: Path, runbook: str, values, label: str) -> None:
    good = _good(tmp_path, runbook)
    for address in (*BAD_ADDRESSES, "not-an-ip"):
        text = _problems(runbook, replace(good, **values(address)))
        assert label + (repr(address) if address == "not-an-ip" else address) in text, (address, text)


@pytest.mark.parametrize("runbook", list(schemas.RUNBOOK_SCHEMAS))
def test_target_hosts_must_be_unicast_addresses(tmp_path: Path, runbook: str) -> None:
    good = replace(_good(tmp_path, runbook), hosts=HOSTS, control_planes=("node1",),
                   etcd_members=("node1", "node2", "node3"), workers=("node3", "node4"))
    for address in (*BAD_ADDRESSES, "169.254.0.5", "fe80::1", "240.0.0.1", "::ffff:127.0.0.1"):
        with pytest.raises(errors.BadParameters) as exc:
            schemas.check_target(replace(good, hosts={**HOSTS, "node2": address}))
        assert f"hosts: node2: {address} is " in str(exc.value), address
    assert schemas.check_target(replace(good, hosts={**HOSTS, "node2": "2001:db8::12"}))


def test_a_replacement_reinstalled_in_place_needs_no_address(tmp_path: Path) -> None:
    good = _good(tmp_path, "replace-control-plane")
    assert _problems("replace-control-plane", replace(good, replacement="node1", replacement_ip="0.0.0.0")) == ""


def test_the_vip_is_not_its_networks_broadcast_or_network_address(tmp_path: Path) -> None:
    good = _good(tmp_path, "failover-test")
    assert "vip: 10.0.0.255 is the broadcast address of 10.0.0.0/24" in _problems(
        "failover-test", replace(good, vip="10.0.0.255"))
    assert "vip: 10.0.0.0 is the network address" in _problems("failover-test", replace(good, vip="10.0.0.0"))
    assert _problems("failover-test", replace(good, vip="10.0.0.255", vip_prefix=16)) == ""
    # Without the keepalived-vip strategy the vip is not used, so not checked.
    assert _problems("failover-test", replace(good, vip="", strategies=("haproxy",), recommended="haproxy")) == ""


def test_link_local_dns_servers_are_allowed_but_not_loopback(tmp_path: Path) -> None:
    good = _good(tmp_path, "prepare-nodes")
    assert _problems("prepare-nodes", replace(good, upstream_dns_servers=("169.254.169.253",))) == ""
    assert "systemd-resolved would ask itself" in _problems("prepare-nodes",
                                                            replace(good, upstream_dns_servers=("127.0.0.53",)))


# ---------------------------------------------------------------- remote paths

@pytest.mark.parametrize(("remote_dir", "expected"), [
    ("/", "'/' is the root directory"),
    ("/etc", "/etc is a system directory"),
    ("/var", "/var is a system directory"),
    ("relative", "'relative' must be an absolute path"),
    ("/var/tmp/../etc", "'/var/tmp/../etc' must be a normalised path"),
    ("/var/tmp/", "'/var/tmp/' must be a normalised path"),
    ("//var/tmp", "'//var/tmp' must be a normalised path"),
    ("/var/./tmp", "'/var/./tmp' must be a normalised path"),
])
def test_snapshot_remote_dir_is_refused(tmp_path: Path, remote_dir: str, expected: str) -> None:
    text = _problems("etcd-snapshot", replace(_good(tmp_path, "etcd-snapshot"), remote_dir=remote_dir))
    assert f"remote_dir: {expected}" in text


@pytest.mark.parametrize("remote_dir", ["/var/tmp", "/tmp", "/var/lib/etcd-scratch", "/srv/backups"])
def test_snapshot_remote_dir_below_a_system_directory_passes(tmp_path: Path, remote_dir: str) -> None:
    assert _problems("etcd-snapshot", replace(_good(tmp_path, "etcd-snapshot"), remote_dir=remote_dir)) == ""


# ---------------------------------------------------------------- roles

@pytest.mark.parametrize("role", ["control_planes", "etcd_members", "workers"])
def test_a_host_named_twice_in_a_role_is_refused(role: str) -> None:
    good = schemas.Target(cluster_name="lab", hosts=HOSTS, control_planes=("node1",),
                          etcd_members=("node1", "node2", "node3"), workers=("node3", "node4"))
    assert schemas.check_target(good) is good
    twice = (*getattr(good, role), getattr(good, role)[-1])
    with pytest.raises(errors.BadParameters) as exc:
        schemas.check_target(replace(good, **{role: twice}))
    assert f"{role}: {twice[-1]} is named twice" in str(exc.value)
    assert str(exc.value).startswith("invalid target:\n")
    with pytest.raises(errors.BadParameters, match=f"{role}: {twice[-1]} is named twice"):
        schemas.check_target(replace(good, hosts={}, **{role: twice}))  # also without hosts


def test_diagnostics_inspect_nodes_named_twice_is_refused(tmp_path: Path) -> None:
    good = _good(tmp_path, "diagnostics")
    assert "inspect_nodes: node1 is named twice" in _problems("diagnostics",
                                                              replace(good, inspect_nodes=("node1", "node1")))


# ---------------------------------------------------------------- ansible_env

RUNBOOKS_WITH_ANSIBLE_ENV = [r for r, s in schemas.RUNBOOK_SCHEMAS.items() if "ansible_env" in
                             {f.name for f in fields(s)}]


@pytest.mark.parametrize("runbook", RUNBOOKS_WITH_ANSIBLE_ENV)
def test_ansible_env_keys_that_undo_the_host_key_pins_are_refused(tmp_path: Path, runbook: str) -> None:
    good = _good(tmp_path, runbook)
    for key in ("ANSIBLE_SSH_EXECUTABLE", "ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_SSH_ARGS", "ansible_ssh_common_args"):
        text = _problems(runbook, replace(good, ansible_env={key: "/tmp/my-ssh"}))
        assert f"ansible_env: {key} " in text and f"(remove {key})" in text, (key, text)
    # The lab's own settings (another lab's ssh control directory, fact cache) and plain ssh are fine.
    fine = {"ANSIBLE_SSH_CONTROL_PATH_DIR": "/root/.ansible/cp-x", "ANSIBLE_CACHE_PLUGIN_CONNECTION": "/tmp/f",
            "ANSIBLE_SSH_EXECUTABLE": "ssh"}
    assert _problems(runbook, replace(good, ansible_env=fine)) == ""


def test_the_refused_ansible_env_keys_are_ssh_pins_keys() -> None:
    for key, reason in ssh_pins.ENV_KEYS.items():
        assert schemas.pin_breaking_env("ansible_env", {key: "x"}) == [
            f"ansible_env: {key} {reason}; host keys must stay pinned (remove {key})"]
