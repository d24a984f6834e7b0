"""``runbooks lab cluster``: the lab's inventory and parameter file, then Kubespray's cluster.yml.

The lab's Kubespray stand-in (``runbooks_lib/lab/kubespray``) is driven exactly
like Kubespray: an inventory directory (hosts.yaml plus group_vars copied from
inventory/sample, as ``cp -r inventory/sample inventory/mycluster`` does) and
``ansible-playbook -i INVENTORY -b cluster.yml`` run with the Kubespray
directory as working directory. The parameter file written beside the
inventory points the runbooks at this cluster (inventory, Kubespray directory,
kubeconfig, SSH user/key/known_hosts).

Side effects: files in the inventory directory; the playbook changes the lab
machines. Rollback: ``reset.yml -e reset_confirmation=yes`` or
``runbooks lab reimage NODE``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from runbooks_lib import kubespray, local
from runbooks_lib.errors import BadParameters, LabError
from runbooks_lib.lab.config import DEFAULT_BRIDGE, LabConfig
from runbooks_lib.lab.machines import Lab

KUBESPRAY_DIR = Path(__file__).resolve().parent / "kubespray"  # the stand-in checkout, v2.19 era (the default)
ERAS = ("v2.19", "v2.31")
DEFAULT_ERA = "v2.19"  # the source article's
APP_HOST = "uuid.awesome.lab"  # the test app's name in the lab's DNS (params/lab.yaml's app_host)
QUICK_UNREACHABLE_SSH = Path(__file__).resolve().parent / "ssh-quick-unreachable"
PLAYBOOK_TIMEOUT = 1800.0
DEFAULT_FACT_CACHE = "/tmp/runbooks-kubespray-facts"  # fact_caching_connection in the stand-in's ansible.cfg


def playbook_env(config: LabConfig | None = None) -> dict[str, str]:
    """Environment for ansible-playbook against this lab (pure function).

    Every lab names its machines node1..nodeN, and Ansible keys its jsonfile
    fact cache by host name, so a second lab on the same host (another
    RUNBOOKS_LAB_BRIDGE) gets its own cache directory; otherwise one lab's
    cached addresses would be used for the other lab's machines. It also gets
    its own directory of persisted SSH connections, so closing one lab's
    connections (``close_ssh_masters``) never cuts the other's. The default lab
    keeps ansible.cfg's settings, so plain ``ansible-playbook`` runs share them.
    """
    config = config or LabConfig()
    if config.bridge == DEFAULT_BRIDGE:
        return {}
    return {"ANSIBLE_CACHE_PLUGIN_CONNECTION": f"{DEFAULT_FACT_CACHE}-{config.bridge}",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(ssh_control_dir(config))}


def ssh_control_dir(config: LabConfig | None = None) -> Path:
    """Where Ansible keeps this lab's persisted SSH connections (ControlPersist sockets)."""
    config = config or LabConfig()
    base = Path.home() / ".ansible"
    return base / "cp" if config.bridge == DEFAULT_BRIDGE else base / f"cp-{config.bridge}"


def kubespray_dir(era: str = DEFAULT_ERA, config: LabConfig | None = None) -> Path:
    """The stand-in checkout laid out as Kubespray ``era`` (``v2.19`` or ``v2.31``).

    v2.19 is ``runbooks_lib/lab/kubespray`` itself (root facts.yml, no playbooks/,
    no remove_node.yml/upgrade_cluster.yml). v2.31 is materialised into
    LAB_DIR/kubespray-v2.31: the same roles, inventory and library, the shared
    plays as playbooks/, and ``eras/v2.31`` laid over them (root entry files that
    import playbooks/*.yml, both remove-node.yml and remove_node.yml, galaxy.yml
    2.31.0, ansible.cfg, the era's defaults); roles/download is a link to this
    checkout's. Side effect: that directory is
    rebuilt on every call (it is never edited by hand). Raises BadParameters for
    another era.
    """
    if era not in ERAS:
        raise BadParameters(f"unknown Kubespray era {era!r}", fix=f"use one of {', '.join(ERAS)}")
    if era == DEFAULT_ERA:
        return KUBESPRAY_DIR
    target = (config or LabConfig()).state_dir / f"kubespray-{era}"
    building = target.with_name(target.name + ".new")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    for name in ("roles", "inventory", "library"):
        shutil.copytree(KUBESPRAY_DIR / name, building / name)
    # The download role packs the runbooks_lib package it sits in (the stand-ins' "binaries",
    # found from its own path): linked, not copied, so that it still finds it from here.
    shutil.rmtree(building / "roles" / "download")
    (building / "roles" / "download").symlink_to(KUBESPRAY_DIR / "roles" / "download", target_is_directory=True)
    shutil.copytree(KUBESPRAY_DIR / "plays", building / "playbooks")
    shutil.copytree(KUBESPRAY_DIR / "eras" / era, building, dirs_exist_ok=True)
    (building / "venv").symlink_to(era_venv(era, config), target_is_directory=True)  # the era's own Ansible
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    return target


def era_of(path: Path) -> str:
    """``v2.19``/``v2.31`` for a stand-in checkout, from its galaxy.yml (as kubespray.detect reads it)."""
    release = kubespray.detect(path).release
    return f"v{release[0]}.{release[1]}" if release else "unknown"


def quick_unreachable_env() -> dict[str, str]:
    """Environment that makes a dead host unreachable in ~5 s instead of upstream's many minutes.

    For tests that put a dead host in a play on purpose: ssh through a wrapper that
    turns ansible.cfg's ConnectionAttempts=100 into 1, with a 5 s connection
    timeout (ANSIBLE_TIMEOUT). Host-key options are untouched.
    """
    return {"ANSIBLE_SSH_EXECUTABLE": str(QUICK_UNREACHABLE_SSH), "ANSIBLE_TIMEOUT": "5"}


# The source article's control planes were 185.186.142.5 and 185.186.142.53: the first address
# is a prefix of the second, which v2.19's `etcdctl member list | grep IP` (no -w) confuses.
ARTICLE_HOST_NUMBERS = {"node1": 5, "node2": 53}


def article_addresses(config: LabConfig | None = None) -> dict[str, str]:
    """node1/node2's extra lab addresses that collide as substrings, as the article's (pure function)."""
    network = (config or LabConfig()).network
    return {name: str(network.network_address + number) for name, number in ARTICLE_HOST_NUMBERS.items()}


def add_addresses(lab: Lab, addresses: Mapping[str, str], config: LabConfig | None = None) -> None:
    """Give machines extra addresses on the lab bridge (``ip addr replace``), as a provider assigns IPs.

    Idempotent; a reimaged machine loses them (call again, as the provider's
    network configuration would). Rollback: ``ip addr del`` or reimage.
    """
    prefix = (config or LabConfig()).network.prefixlen
    for name, ip in addresses.items():
        lab.ssh(name, ["ip", "addr", "replace", f"{ip}/{prefix}", "dev", "host0"], timeout=30)


@dataclass(frozen=True)
class Layout:
    """Which lab machines play which Kubespray role (the source article's shape by default)."""

    control_planes: tuple[str, ...] = ("node1", "node2")
    etcd: tuple[str, ...] = ("node1", "node2", "node3")
    workers: tuple[str, ...] = ("node3", "node4")
    extra_hosts: tuple[str, ...] = ()  # in all.hosts only (e.g. a spare machine)

    def hosts(self) -> list[str]:
        return list(dict.fromkeys((*self.control_planes, *self.etcd, *self.workers, *self.extra_hosts)))


def read_description(path: Path | None = None) -> dict:
    """The lab's description (lab.json). Raises LabError when the lab was never brought up."""
    path = path or LabConfig().description_path
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read the lab's description {path}: {exc}",
                       fix="bring the lab up with `runbooks lab up`") from None


def inventory_doc(description: Mapping, layout: Layout = Layout(), addresses: Mapping[str, str] | None = None) -> dict:
    """hosts.yaml content for ``layout`` on the lab described by ``description`` (pure function).

    Every host gets ansible_host, ip and access_ip (its lab IP; ip and access_ip
    from ``addresses`` where given, e.g. :func:`article_addresses`) and etcd members an
    explicit etcd_member_name (etcdN after the machine's number, so reordering the
    group never renames a member). k8s_cluster is written explicitly.
    """
    ips = {m["name"]: m["ip"] for m in description.get("machines", [])}
    missing = [h for h in layout.hosts() if h not in ips]
    if missing:
        raise BadParameters(f"the lab has no machine {', '.join(missing)} (machines: {', '.join(ips) or 'none'})",
                            fix="bring the lab up with enough machines: `runbooks lab up --nodes 5`")
    hosts: dict[str, dict] = {}
    for name in layout.hosts():
        own = (addresses or {}).get(name, ips[name])
        entry = {"ansible_host": ips[name], "ip": own, "access_ip": own}
        if name in layout.etcd:
            entry["etcd_member_name"] = "etcd" + re.sub(r"\D", "", name)
        hosts[name] = entry

    def group(names: Sequence[str]) -> dict:
        return {"hosts": {n: None for n in names}}

    return {"all": {
        "hosts": hosts,
        "children": {
            "kube_control_plane": group(layout.control_planes),
            "kube_node": group(layout.workers),
            "etcd": group(layout.etcd),
            "k8s_cluster": {"children": {"kube_control_plane": None, "kube_node": None, "calico_rr": None}},
            "calico_rr": {"hosts": {}},
        },
    }}


def write_inventory(inventory_dir: Path, description: Mapping, layout: Layout = Layout(), *,
                    kubespray_dir: Path = KUBESPRAY_DIR, group_vars: Mapping | None = None,
                    addresses: Mapping[str, str] | None = None) -> Path:
    """Write hosts.yaml and group_vars (sample defaults + the lab's SSH settings); return hosts.yaml.

    The SSH settings go to group_vars/all/lab.yml; ``group_vars`` (e.g.
    kube_resolv_conf) to group_vars/k8s_cluster/lab.yml, where they win over the
    sample's k8s_cluster files. Other group_vars files are left as they are (the
    operator may have edited them).
    """
    inventory_dir.mkdir(parents=True, exist_ok=True)
    sample = kubespray_dir / "inventory" / "sample" / "group_vars"
    for source in sample.rglob("*.yml"):
        target = inventory_dir / "group_vars" / source.relative_to(sample)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    lab_vars = {
        "ansible_user": description.get("ssh_user", "root"),
        "ansible_ssh_private_key_file": description["ssh_key"],
        # Host keys are pinned in the lab's known_hosts; checking stays on.
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={description['known_hosts']} -o StrictHostKeyChecking=yes",
    }
    lab_file = inventory_dir / "group_vars" / "all" / "lab.yml"
    lab_file.write_text("# The lab's connection settings, written by `runbooks lab cluster`.\n"
                        + yaml.safe_dump(lab_vars, sort_keys=False, width=1000))
    cluster_vars = {"kubeconfig_localhost": True, **dict(group_vars or {})}
    (inventory_dir / "group_vars" / "k8s_cluster" / "lab.yml").write_text(
        "# Cluster settings of the lab, written by `runbooks lab cluster`.\n"
        + yaml.safe_dump(cluster_vars, sort_keys=False, width=1000))
    hosts = inventory_dir / "hosts.yaml"
    hosts.write_text("# The lab's inventory, written by `runbooks lab cluster`.\n"
                     + yaml.safe_dump(inventory_doc(description, layout, addresses), sort_keys=False).replace(": null", ":"))
    return hosts


def write_params(inventory_dir: Path, description: Mapping, *, kubespray_dir: Path = KUBESPRAY_DIR,
                 name: str = "lab.yaml") -> Path:
    """Write the runbooks' parameter file for this cluster into the inventory directory.

    The same keys as params/lab.yaml, with this lab's addresses: shared values at
    the top, the values of one runbook under its name.
    """
    ips = {m["name"]: m["ip"] for m in description["machines"]}
    dns = description["host_ip"]
    subnet = ipaddress.ip_network(description.get("subnet") or f"{dns}/24", strict=False)
    spare = next((n for n in ips if n not in Layout().hosts()), None)
    params: dict[str, object] = {
        "cluster_name": "lab",
        "inventory": str(inventory_dir / "hosts.yaml"),
        "kubespray_dir": str(kubespray_dir),
        "ansible_playbook": str(ansible_playbook_path(kubespray_dir)),
        "kubeconfig": str(inventory_dir / "artifacts" / "admin.conf"),
        "ssh_user": description.get("ssh_user", "root"),
        "ssh_key": description["ssh_key"],
        "known_hosts": description["known_hosts"],
        "app_host": APP_HOST,
        "backup_dir": str(LabConfig().state_dir / "etcd-backups"),
        "prepare-nodes": {"upstream_dns_servers": [dns]},
        "install-cluster": {"dns_server": dns},
        "failover-test": {"dns_server": dns, "vip": str(subnet.network_address + 100), "vip_prefix": subnet.prefixlen,
                          "fault_injector": "lab"},
    }
    if spare:
        params["add-worker"] = {"new_workers": {spare: ips[spare]}, "upstream_dns_servers": [dns]}
        params["replace-control-plane"] = {"dead_node": Layout().control_planes[0], "replacement": spare,
                                           "replacement_ip": ips[spare], "upstream_dns_servers": [dns]}
    path = inventory_dir / name
    path.write_text("# Parameters for the runbooks against the lab, written by `runbooks lab cluster`.\n"
                    + yaml.safe_dump(params, sort_keys=False))
    return path


def era_requirements(era: str) -> Path:
    """The stand-in era's requirements.txt: its Ansible, as upstream's release pins it."""
    if era not in ERAS:
        raise BadParameters(f"unknown Kubespray era {era!r}", fix=f"use one of {', '.join(ERAS)}")
    return KUBESPRAY_DIR / "requirements.txt" if era == DEFAULT_ERA else KUBESPRAY_DIR / "eras" / era / "requirements.txt"


def era_venv(era: str = DEFAULT_ERA, config: LabConfig | None = None, *, timeout: float = 900.0) -> Path:
    """The virtualenv of the era's own Ansible, built from its requirements.txt in the lab cache.

    Built once and rebuilt when the requirements change (a stamp holds their
    sha256); the era's checkout links it as ``venv``, where Kubespray's docs
    put it, so a runbook's default ``ansible_playbook`` finds it as it finds an
    operator's. Side effects: creates LAB_CACHE/venvs/kubespray-ERA (pip
    install from PyPI, about 40 s) and the ``venv`` link of the v2.19
    checkout. Raises LabError when pip fails.
    """
    import hashlib

    requirements = era_requirements(era)
    venv = (config or LabConfig()).cache_dir / "venvs" / f"kubespray-{era}"
    stamp = venv / ".requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not (stamp.is_file() and stamp.read_text() == digest and (venv / "bin" / "ansible-playbook").exists()):
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        # In place, not renamed afterwards: a virtualenv's scripts name its path.
        for argv in ([sys.executable, "-m", "venv", str(venv)],
                     [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                      "-r", str(requirements)]):
            result = local.run(argv, timeout=timeout, check=False)
            if not result.ok:
                raise LabError(f"building the {era} Ansible virtualenv failed: {result.tail(5)}",
                               fix=f"check {requirements} and that PyPI is reachable, then run again")
        stamp.write_text(digest)
    if era == DEFAULT_ERA:
        _link(KUBESPRAY_DIR / "venv", venv)
    return venv


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target, target_is_directory=True)


def ansible_playbook_path(checkout: Path = KUBESPRAY_DIR) -> Path:
    """The ansible-playbook of the stand-in checkout's era (its own venv, built if missing: :func:`era_venv`)."""
    return era_venv(era_of(checkout)) / "bin" / "ansible-playbook"


def fresh_machines(lab: Lab) -> None:
    """Every machine reimaged and running, and this lab's persisted SSH connections closed.

    Side effects: every disk is blank again (a fresh Debian), each machine has a
    new host key (pinned in the lab's known_hosts), a powered-off machine is
    booted. Rollback: ``lab.restore_all(NAME)`` of a snapshot taken before.
    """
    for name in lab.machine_names():
        lab.reimage(name)
    for row in lab.status():
        if row.state != "running":
            lab.poweron(row.name)
    close_ssh_masters()


def close_ssh_masters(control_dir: Path | None = None) -> None:
    """Close Ansible's persisted SSH connections (ControlPersist).

    After machines were restarted, restored or reimaged those connections point
    at processes that no longer exist and fail the next task. Only this lab's
    connections are closed (``ssh_control_dir``). Side effect: the next
    playbook opens fresh connections.
    """
    for sock in (control_dir or ssh_control_dir()).glob("*"):
        local.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "lab-machine"], timeout=10, check=False)


def run_playbook(playbook: str, inventory: Path, *, known_hosts: str | Path, kubespray_dir: Path = KUBESPRAY_DIR,
                 extra_vars: Mapping[str, object] | None = None, limit: str | None = None,
                 timeout: float = PLAYBOOK_TIMEOUT, echo: Callable[[str], None] | None = None,
                 check: bool = True, answer_prompts: bool = True,
                 log_path: Path | None = None, env: Mapping[str, str] | None = None,
                 tags: str | None = None) -> kubespray.PlaybookRun:
    """Run ``ansible-playbook -i INVENTORY -b PLAYBOOK`` in the Kubespray directory (runbooks_lib.kubespray).

    Host keys are verified against ``known_hosts`` (the lab's: ``read_description()["known_hosts"]``),
    whatever the stand-in's ansible.cfg says, exactly as against a real checkout.
    Output lines go to ``echo`` as they come (and are appended to ``log_path``); the run is killed after
    ``timeout`` seconds. Raises HostKeyError, PlaybookFailed or WaitTimedOut unless ``check``
    is False. ``answer_prompts=False`` leaves out skip_confirmation/reset_confirmation.
    ``env`` is added to the run's environment (e.g. :func:`quick_unreachable_env`).
    """
    checkout = kubespray.detect(kubespray_dir)
    cmd = kubespray.command(checkout, playbook, inventory=inventory, known_hosts=known_hosts,
                            ansible_playbook=ansible_playbook_path(kubespray_dir),
                            limit=limit, extra_vars=extra_vars, answer_prompts=answer_prompts, tags=tags)
    return kubespray.run(cmd, timeout=timeout, on_line=echo, check=check, log_path=log_path,
                         env={**playbook_env(), **dict(env or {})}, trusted_ssh=(str(QUICK_UNREACHABLE_SSH),))


def summary(run: kubespray.PlaybookRun, inventory: Path, params: Path) -> str:
    """A short human summary of an install."""
    lines = [f"cluster.yml: {'ok' if run.ok else 'FAILED'} in {run.duration:.0f} s (exit {run.rc})"]
    for row in run.recap.values():
        lines.append(f"  {row.host:<10} ok={row.ok} changed={row.changed} unreachable={row.unreachable} "
                     f"failed={row.failed}")
    for task in run.failed_tasks:
        lines.append(f"  {task.status}: {task.host}: {task.task}: {task.message[:300]}")
    if run.log_path:
        lines.append(f"log:        {run.log_path}")
    lines += [f"inventory:  {inventory}", f"parameters: {params}",
              f"kubeconfig: {inventory.parent / 'artifacts' / 'admin.conf'}"]
    return "\n".join(lines)


def _cluster(args: argparse.Namespace) -> int:
    description = read_description(Path(args.description) if args.description else None)
    inventory_dir = Path(args.inventory_dir) if args.inventory_dir else LabConfig().state_dir / "inventory"
    group_vars = {}
    if args.kube_resolv_conf:
        group_vars["kube_resolv_conf"] = args.kube_resolv_conf
    if args.ingress:
        group_vars.update(ingress_nginx_enabled=True, ingress_nginx_host_network=True)
    checkout = kubespray_dir(args.kubespray)
    addresses = None
    if args.article_addresses:
        addresses = article_addresses()
        add_addresses(Lab(), addresses)
    inventory = write_inventory(inventory_dir, description, kubespray_dir=checkout, group_vars=group_vars,
                                addresses=addresses)
    params = write_params(inventory_dir, description, kubespray_dir=checkout)
    print(f"Kubespray {args.kubespray} stand-in {checkout}, inventory {inventory}, parameters {params}",
          file=sys.stderr)
    if args.no_install:
        return 0
    run = run_playbook("cluster.yml", inventory, known_hosts=description["known_hosts"], echo=print, check=False,
                       kubespray_dir=checkout,
                       log_path=inventory_dir / "cluster.yml.log",
                       extra_vars={k: v for k, v in (e.split("=", 1) for e in args.extra_vars)})
    print(summary(run, inventory, params))
    return 0 if run.ok else 1


def _venvs(args: argparse.Namespace) -> int:
    for era in args.era or ERAS:
        venv = era_venv(era)
        version = local.run([str(venv / "bin" / "ansible-playbook"), "--version"], timeout=60).stdout.splitlines()[0]
        print(f"{era}: {venv} ({version})")
    return 0


def register(cmds: argparse._SubParsersAction) -> None:
    """Add ``runbooks lab cluster`` and ``runbooks lab venvs`` to the lab's subcommands."""
    p = cmds.add_parser("venvs", help="build each Kubespray era's own Ansible virtualenv (its requirements.txt)")
    p.add_argument("era", nargs="*", help=f"{', '.join(ERAS)} (default: every era)")
    p.set_defaults(func=_venvs)
    p = cmds.add_parser("cluster", help="write the lab's inventory and parameter file, run Kubespray's cluster.yml")
    p.add_argument("--inventory-dir", default=None,
                   help="where hosts.yaml, group_vars, artifacts/ and lab.yaml go (default: LAB_DIR/inventory)")
    p.add_argument("--description", default=None, help="the lab's lab.json (default: LAB_DIR/lab.json)")
    p.add_argument("--kube-resolv-conf", default=None,
                   help="set kube_resolv_conf (e.g. /run/systemd/resolve/resolv.conf) to avoid the DNS crash loop")
    p.add_argument("--ingress", action="store_true", help="ingress-nginx with host network on every node")
    p.add_argument("--kubespray", choices=ERAS, default=DEFAULT_ERA,
                   help="which Kubespray release the stand-in plays (default v2.19, the article's; "
                        "v2.31 is laid out in LAB_DIR/kubespray-v2.31)")
    p.add_argument("--article-addresses", action="store_true",
                   help="node1/node2 get extra addresses .5 and .53 of the lab subnet as their ip/access_ip "
                        "(the source article's pair, one a prefix of the other)")
    p.add_argument("--no-install", action="store_true", help="only write the inventory and parameter file")
    p.add_argument("-e", "--extra-vars", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to ansible-playbook -e")
    p.set_defaults(func=_cluster)
