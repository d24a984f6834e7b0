"""The lab's ingress-nginx controller: Ingress objects -> nginx server blocks on this node.

Runs inside a lab machine (stdlib, aiohttp and PyYAML only, plus the API
stand-in's client). Every second it lists Ingresses, Services and Endpoints
through the API, renders one nginx configuration routing each Ingress host and
path to the READY endpoint addresses of its backend Service, and when the text
changed writes it atomically and reloads nginx. Upstream failures are retried
on the next endpoint as ingress-nginx does (proxy_next_upstream error timeout,
3 tries, 5 s connect timeout). A host with no ready endpoint answers 503.

Usage: python ingress_nginx_controller.py --kubeconfig PATH --out FILE
       [--ingress-class nginx] [--reload-command 'systemctl reload ingress-nginx']
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shlex
import signal
import sys

from runbooks_lib import local
from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi.client import ENDPOINTS, SERVICES, KubeClient, Resource

INGRESSES = Resource("networking.k8s.io/v1", "ingresses", "Ingress", True)
POLL_SECONDS = 1.0
RELOAD_TIMEOUT = 20.0
log = logging.getLogger("ingress-nginx")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _ingress_class(ing: dict) -> str | None:
    spec = ing.get("spec") or {}
    return spec.get("ingressClassName") or (ing.get("metadata", {}).get("annotations") or {}).get(
        "kubernetes.io/ingress.class")


def _endpoint_port(service: dict | None, endpoints: dict | None, backend_port: dict) -> tuple[str | None, list[str]]:
    """Return (port name, ready 'ip:port' list) for a Service backend port."""
    if service is None or endpoints is None:
        return None, []
    wanted = None
    for port in (service.get("spec") or {}).get("ports") or ():
        if ("number" in backend_port and port.get("port") == backend_port["number"]) or (
                "name" in backend_port and port.get("name") == backend_port["name"]):
            wanted = port
            break
    if wanted is None:
        return None, []
    servers = []
    for subset in endpoints.get("subsets") or ():
        ports = subset.get("ports") or ()
        match = [p for p in ports if p.get("name", "") == wanted.get("name", "")] or (ports[:1] if len(ports) == 1 else [])
        if not match:
            continue
        for address in subset.get("addresses") or ():  # ready addresses only (notReadyAddresses are skipped)
            servers.append(f"{address['ip']}:{match[0]['port']}")
    return wanted.get("name") or str(wanted.get("port")), sorted(set(servers))


def render(ingresses: list[dict], services: list[dict], endpoints: list[dict], ingress_class: str) -> str:
    """The nginx configuration (http context) for the Ingresses of ``ingress_class``. Pure function."""
    svc = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services}
    eps = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
    upstreams: dict[str, list[str]] = {}
    hosts: dict[str, list[tuple[str, str, str]]] = {}
    for ing in sorted(ingresses, key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"])):
        if _ingress_class(ing) not in (ingress_class, None):
            continue
        ns = ing["metadata"]["namespace"]
        for rule in (ing.get("spec") or {}).get("rules") or ():
            host = rule.get("host") or "_"
            for path in ((rule.get("http") or {}).get("paths")) or ():
                backend = (path.get("backend") or {}).get("service") or {}
                name = backend.get("name")
                if not name:
                    continue
                port_name, servers = _endpoint_port(svc.get((ns, name)), eps.get((ns, name)), backend.get("port") or {})
                upstream = _safe(f"{ns}-{name}-{port_name}")
                upstreams[upstream] = servers
                hosts.setdefault(host, []).append((path.get("path") or "/", path.get("pathType", "Prefix"), upstream))
    lines = ["# Written by the lab's ingress-nginx controller; do not edit.", ""]
    for upstream, servers in sorted(upstreams.items()):
        if not servers:
            continue
        lines.append(f"upstream {upstream} {{")
        lines += [f"    server {server} max_fails=0;" for server in servers]
        lines += ["    keepalive 32;", "}", ""]
    for host, paths in sorted(hosts.items()):
        lines += ["server {", "    listen 80;", f"    server_name {host};", ""]
        for path, path_type, upstream in sorted(paths, key=lambda p: -len(p[0])):
            modifier = "= " if path_type == "Exact" else ""
            lines.append(f"    location {modifier}{path} {{")
            if upstreams.get(upstream):
                lines += [
                    f"        proxy_pass http://{upstream};",
                    "        proxy_http_version 1.1;",
                    '        proxy_set_header Connection "";',
                    "        proxy_set_header Host $host;",
                    "        proxy_set_header X-Real-IP $remote_addr;",
                    "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                    "        proxy_connect_timeout 5s;",
                    "        proxy_send_timeout 60s;",
                    "        proxy_read_timeout 60s;",
                    "        proxy_next_upstream error timeout;",
                    "        proxy_next_upstream_tries 3;",
                ]
            else:
                lines.append("        return 503;")
            lines.append("    }")
        lines += ["}", ""]
    return "\n".join(lines)


def write_if_changed(path: str, text: str) -> bool:
    """Atomically replace ``path`` with ``text`` when it differs. Returns True if written."""
    try:
        with open(path) as fh:
            if fh.read() == text:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return True


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    api = KubeClient.from_kubeconfig(args.kubeconfig, user_agent="ingress-nginx-controller (lab)")
    try:
        while not stop.is_set():
            try:
                ingresses = (await api.list(INGRESSES)).get("items", [])
                services = (await api.list(SERVICES)).get("items", [])
                endpoints = (await api.list(ENDPOINTS)).get("items", [])
                text = render(ingresses, services, endpoints, args.ingress_class)
                if write_if_changed(args.out, text):
                    # The whole runbooks_lib package is unpacked on the machine; local needs the stdlib only.
                    proc = local.run(shlex.split(args.reload_command), timeout=RELOAD_TIMEOUT, check=False)
                    if proc.failed:
                        log.error("nginx reload failed (%s): %s", "timed out" if proc.timed_out else proc.exited,
                                  proc.tail())
                    else:
                        log.info("configuration updated: %d ingresses", len(ingresses))
            except (RunbookError, OSError) as exc:
                log.warning("sync failed: %s", exc)
            try:
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
    finally:
        await api.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--out", required=True, help="nginx configuration file to write")
    p.add_argument("--ingress-class", default="nginx")
    p.add_argument("--reload-command", default="systemctl reload ingress-nginx")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s", stream=sys.stderr)
    stop = asyncio.Event()

    async def amain() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(args, stop)

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
