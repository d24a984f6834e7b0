"""Command-line flags of the API stand-in, named as kube-apiserver's, and the static-pod manifest reader.

``--manifest /etc/kubernetes/manifests/kube-apiserver.yaml`` reads the flags
from ``spec.containers[0].command`` of a kube-apiserver static pod manifest;
flags given on the command line win. Flags the stand-in does not know
(kube-apiserver has many) are ignored when they come from the manifest.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

from runbooks_lib.errors import BadParameters


@dataclass(frozen=True)
class ServerConfig:
    """Everything `serve` needs; built by :func:`parse_serve_args`."""

    etcd_servers: tuple[str, ...]
    etcd_cafile: str | None
    etcd_certfile: str | None
    etcd_keyfile: str | None
    etcd_request_timeout: float
    etcd_tls_server_name: str
    storage: str
    secure_port: int
    bind_address: str
    advertise_address: str | None
    tls_cert_file: str | None
    tls_private_key_file: str | None
    client_ca_file: str | None
    service_cluster_ip_range: str
    service_node_port_range: tuple[int, int]
    node_monitor_grace_period: float
    controllers: bool
    controllers_kubeconfig: str | None
    controllers_ca_key: str | None
    manifest: str | None
    watch_cache: bool = False


def parse_duration(text: str) -> float:
    """Seconds from a Go duration ("40s", "1m30s", "500ms") or a plain number."""
    import re

    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    return total


def _bool(text: str) -> bool:
    return str(text).lower() in ("1", "true", "yes", "on")


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the serve flags to ``parser``."""
    a = parser.add_argument
    a("--manifest", help="read flags from a kube-apiserver static pod manifest (command-line flags win)")
    a("--etcd-servers", help="comma-separated etcd URLs, e.g. https://10.0.0.1:2379,https://10.0.0.2:2379")
    a("--etcd-cafile")
    a("--etcd-certfile")
    a("--etcd-keyfile")
    a("--etcd-request-timeout", type=parse_duration, default=3.0,
      help="bound on every etcd request (stand-in flag; default 3s)")
    a("--etcd-tls-server-name", default="localhost",
      help="name verified in etcd server certificates (stand-in flag; Kubespray's carry 'localhost')")
    a("--storage", choices=("etcd", "memory"), default="etcd", help="memory: no etcd, for tests")
    a("--watch-cache", action="store_true",
      help="serve reads and watches from a watch cache fed by one etcd watch, as kube-apiserver "
           "(stand-in flag; off by default in the lab: see docs/kube-api-stand-in.md)")
    a("--secure-port", type=int, default=6443)
    a("--bind-address", default="0.0.0.0")
    a("--advertise-address")
    a("--tls-cert-file")
    a("--tls-private-key-file")
    a("--client-ca-file")
    a("--service-cluster-ip-range", default="10.233.0.0/18")
    a("--service-node-port-range", default="30000-32767")
    a("--node-monitor-grace-period", type=parse_duration, default=40.0)
    a("--controllers", dest="controllers", action="store_true", default=True,
      help="run the controllers in this process (default)")
    a("--no-controllers", dest="controllers", action="store_false")
    a("--controllers-kubeconfig", help="kubeconfig (embedded client cert) the controllers use")
    a("--controllers-ca-key", help="CA key (of --client-ca-file) to issue the controllers' client cert at start")
    return parser


def manifest_args(path: str) -> list[str]:
    """The ``--flag=value`` items of spec.containers[0].command in a static pod manifest."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
        command = doc["spec"]["containers"][0]["command"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise BadParameters(
            f"cannot read kube-apiserver flags from {path}: {type(exc).__name__}: {exc}",
            fix="check that the manifest has spec.containers[0].command with --flag=value items",
        ) from None
    return [str(item) for item in command if str(item).startswith("--")]


def parse_serve_args(argv: list[str]) -> ServerConfig:
    """Parse serve flags (manifest first, then the command line). Raises BadParameters."""
    parser = build_parser(argparse.ArgumentParser(prog="python -m runbooks_lib.lab.kubeapi serve"))
    first, _ = parser.parse_known_args(argv)
    namespace = argparse.Namespace()
    if first.manifest:
        known = {opt for action in parser._actions for opt in action.option_strings}
        from_manifest = [arg for arg in manifest_args(first.manifest) if arg.split("=", 1)[0] in known]
        namespace, _ = parser.parse_known_args(from_manifest)
    ns = parser.parse_args(argv, namespace=namespace)
    if ns.storage == "etcd" and not ns.etcd_servers:
        raise BadParameters("--etcd-servers is required with --storage etcd",
                            fix="pass --etcd-servers=https://IP:2379,... or --manifest, or --storage memory")
    try:
        low, high = (int(x) for x in ns.service_node_port_range.split("-"))
    except ValueError:
        raise BadParameters(f"bad --service-node-port-range {ns.service_node_port_range!r}", fix="use LOW-HIGH") from None
    if bool(ns.tls_cert_file) != bool(ns.tls_private_key_file):
        raise BadParameters("--tls-cert-file and --tls-private-key-file go together", fix="pass both or neither")
    return ServerConfig(
        etcd_servers=tuple(s.strip() for s in (ns.etcd_servers or "").split(",") if s.strip()),
        etcd_cafile=ns.etcd_cafile,
        etcd_certfile=ns.etcd_certfile,
        etcd_keyfile=ns.etcd_keyfile,
        etcd_request_timeout=ns.etcd_request_timeout,
        etcd_tls_server_name=ns.etcd_tls_server_name,
        storage=ns.storage,
        secure_port=ns.secure_port,
        bind_address=ns.bind_address,
        advertise_address=ns.advertise_address,
        tls_cert_file=ns.tls_cert_file,
        tls_private_key_file=ns.tls_private_key_file,
        client_ca_file=ns.client_ca_file,
        service_cluster_ip_range=ns.service_cluster_ip_range,
        service_node_port_range=(low, high),
        node_monitor_grace_period=ns.node_monitor_grace_period,
        controllers=ns.controllers,
        controllers_kubeconfig=ns.controllers_kubeconfig,
        controllers_ca_key=ns.controllers_ca_key,
        manifest=ns.manifest,
        watch_cache=ns.watch_cache,
    )
