"""Command line of the API stand-in.

    python -m runbooks_lib.lab.kubeapi serve [kube-apiserver flags | --manifest PATH]
    python -m runbooks_lib.lab.kubeapi pki init DIR [--ip IP]... [--dns NAME]... [--server-url URL]
    python -m runbooks_lib.lab.kubeapi pki etcd DIR [--ip IP]...
    python -m runbooks_lib.lab.kubeapi kubeconfig DIR --user NAME [--group G]... [--server-url URL] --out PATH

See docs/kube-api-stand-in.md for a complete by-hand session.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from runbooks_lib.errors import RunbookError

from . import pki


def _pki_init(ns: argparse.Namespace) -> None:
    paths = pki.init_dir(ns.dir, ips=ns.ip or ["127.0.0.1"], dns_names=ns.dns or [], server_url=ns.server_url)
    print(f"CA: {paths.ca_cert}\nAPI server certificate: {paths.server_cert}\nadmin kubeconfig: {paths.admin_kubeconfig}")


def _pki_etcd(ns: argparse.Namespace) -> None:
    ca = pki.load_pair(f"{ns.dir}/ca.crt", f"{ns.dir}/ca.key")
    member = pki.issue_server_cert(ca, "etcd", ips=ns.ip or ["127.0.0.1"], dns_names=["localhost"], client_auth=True)
    pki.write_pair(member, f"{ns.dir}/etcd-member.crt", f"{ns.dir}/etcd-member.key")
    client = pki.issue_client_cert(ca, "kube-apiserver-etcd-client")
    pki.write_pair(client, f"{ns.dir}/etcd-client.crt", f"{ns.dir}/etcd-client.key")
    print(f"etcd member certificate: {ns.dir}/etcd-member.crt\netcd client certificate: {ns.dir}/etcd-client.crt")


def _kubeconfig(ns: argparse.Namespace) -> None:
    ca = pki.load_pair(f"{ns.dir}/ca.crt", f"{ns.dir}/ca.key")
    pair = pki.issue_client_cert(ca, ns.user, ns.group or [])
    server = ns.server_url or "https://127.0.0.1:6443"
    pki.write_kubeconfig(ns.out, pki.kubeconfig(server, ca.cert_pem, pair, user=ns.user))
    print(f"kubeconfig for {ns.user}: {ns.out}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m runbooks_lib.lab.kubeapi",
                                     description="The lab's Kubernetes API stand-in (not Kubernetes).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the API server (kube-apiserver flags; see --help)", add_help=False)
    p_pki = sub.add_parser("pki", help="certificates").add_subparsers(dest="pki_command", required=True)
    p_init = p_pki.add_parser("init", help="CA, API server cert, admin cert and admin.conf in DIR")
    p_init.add_argument("dir")
    p_init.add_argument("--ip", action="append", help="IP SAN of the API server certificate (repeatable)")
    p_init.add_argument("--dns", action="append", help="extra DNS SAN (repeatable)")
    p_init.add_argument("--server-url", help="server: of admin.conf (default https://FIRST_IP:6443)")
    p_etcd = p_pki.add_parser("etcd", help="etcd member and etcd client certificates from DIR's CA")
    p_etcd.add_argument("dir")
    p_etcd.add_argument("--ip", action="append", help="IP SAN of the etcd member certificate (repeatable)")
    p_kc = sub.add_parser("kubeconfig", help="issue a client certificate and write a kubeconfig")
    p_kc.add_argument("dir", help="directory with ca.crt and ca.key")
    p_kc.add_argument("--user", required=True, help="certificate CN, e.g. system:node:node1")
    p_kc.add_argument("--group", action="append", help="certificate O, e.g. system:nodes (repeatable)")
    p_kc.add_argument("--server-url")
    p_kc.add_argument("--out", required=True)

    if argv[:1] == ["serve"]:
        from .config import parse_serve_args
        from .runner import serve

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        try:
            config = parse_serve_args(argv[1:])
            asyncio.run(serve(config))
        except RunbookError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: cannot serve: {exc}", file=sys.stderr)
            return 1
        return 0
    ns = parser.parse_args(argv)
    try:
        if ns.command == "pki" and ns.pki_command == "init":
            _pki_init(ns)
        elif ns.command == "pki" and ns.pki_command == "etcd":
            _pki_etcd(ns)
        elif ns.command == "kubeconfig":
            _kubeconfig(ns)
    except RunbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
