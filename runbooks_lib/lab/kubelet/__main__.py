"""Command line of the kubelet stand-in (kubelet's flag names).

Exit status 0 after SIGTERM/SIGINT, 2 for bad flags or files.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

SANDBOX_DIR = Path("/run/lab-kubelet/sandboxes")

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi.client import KubeClient
from runbooks_lib.lab.kubelet import node as nodeobj
from runbooks_lib.lab.kubelet import server
from runbooks_lib.lab.kubelet.agent import Kubelet
from runbooks_lib.lab.kubelet.config import load_config

log = logging.getLogger("kubelet")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m runbooks_lib.lab.kubelet", description="kubelet stand-in")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--config", default=None, help="KubeletConfiguration file")
    p.add_argument("--hostname-override", required=True)
    p.add_argument("--node-ip", required=True)
    p.add_argument("--node-labels", default="")
    p.add_argument("--register-with-taints", default="")
    p.add_argument("--root-dir", default="/var/lib/kubelet")
    p.add_argument("--sandbox-dir", default=None,
                   help="where pod sandboxes keep their resolv.conf (default: /run/lab-kubelet/sandboxes with the "
                        "default root dir, else ROOT/sandboxes): runtime state a reboot clears, as containerd's")
    p.add_argument("-v", "--v", type=int, default=2)
    # Kubespray's kubelet.env passes many more flags; they are accepted and ignored.
    return p.parse_known_args(argv)


async def amain(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    root = Path(args.root_dir)
    root.mkdir(parents=True, exist_ok=True)
    facts = nodeobj.read_facts(args.hostname_override, args.node_ip, str(root), config.max_pods, config.port)
    taints = [*config.register_with_taints, *nodeobj.parse_taints(args.register_with_taints)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api = KubeClient.from_kubeconfig(args.kubeconfig, user_agent=f"kubelet/{nodeobj.KUBELET_VERSION} (stand-in)")
    sandboxes = Path(args.sandbox_dir) if args.sandbox_dir else (
        SANDBOX_DIR if args.root_dir == "/var/lib/kubelet" else root / "sandboxes")
    kubelet = Kubelet(api, config, facts, nodeobj.parse_labels(args.node_labels), taints, root,
                      sandbox_dir=sandboxes)
    runner = None
    try:
        try:
            runner = await server.serve(kubelet, config.address or args.node_ip, config.port,
                                        config.tls_cert_file, config.tls_private_key_file, config.client_ca_file)
        except OSError as exc:
            log.error("cannot serve the kubelet API on port %s (container logs unavailable): %s", config.port, exc)
        log.info("kubelet %s starting (node IP %s, resolvConf %s)", facts.name, facts.ip, config.resolv_conf)
        await kubelet.run(stop)
    finally:
        if runner is not None:
            await runner.cleanup()
        await api.close()
    log.info("kubelet %s stopped", facts.name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.v >= 4 else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    if unknown:
        log.info("ignoring flags: %s", " ".join(unknown))
    try:
        return asyncio.run(amain(args))
    except RunbookError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
