"""``runbooks lab ...``: drive the lab's machines from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from runbooks_lib.errors import LabError
from runbooks_lib.lab.machines import POWER_MODES, Lab, status_table


def _lab(args: argparse.Namespace) -> Lab:
    return Lab(log=lambda message: print(message, file=sys.stderr, flush=True))


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rows = _lab(args).up(nodes=args.nodes)
    print(status_table(rows))
    print(f"lab up in {time.monotonic() - started:.1f} s; description: {_lab(args).config.description_path}",
          file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    lab = _lab(args)
    if args.json:
        print(json.dumps(lab.description(), indent=2))
    else:
        print(status_table(lab.status()))
    return 0


def _describe(args: argparse.Namespace) -> int:
    print(json.dumps(_lab(args).description(), indent=2))
    return 0


def _ssh(args: argparse.Namespace) -> int:
    lab = _lab(args)
    lab.require_machine(args.node)
    command = " ".join(args.cmd) if args.cmd else None
    argv = lab.ssh_argv(args.node, command, tty=command is None and sys.stdin.isatty())
    os.execvp(argv[0], argv)
    return 0  # not reached


def _down(args: argparse.Namespace) -> int:
    _lab(args).down(purge=args.purge)
    print("lab down" + (" (disks purged)" if args.purge else ""))
    return 0


def _poweroff(args: argparse.Namespace) -> int:
    _lab(args).poweroff(args.node, mode=args.mode)
    print(f"{args.node}: powered off ({args.mode})")
    return 0


def _poweron(args: argparse.Namespace) -> int:
    _lab(args).poweron(args.node)
    print(f"{args.node}: on")
    return 0


def _partition(args: argparse.Namespace) -> int:
    _lab(args).partition(args.node_a, args.node_b)
    print(f"partitioned {args.node_a} <-> {args.node_b}")
    return 0


def _heal(args: argparse.Namespace) -> int:
    _lab(args).heal()
    print("partitions healed")
    return 0


def _reimage(args: argparse.Namespace) -> int:
    change = _lab(args).reimage(args.node)
    print(f"{change.name} ({change.ip}) reimaged: fresh disk, same IP, NEW host key\n"
          f"  old: {change.old_fingerprint}\n  new: {change.new_fingerprint}\n"
          f"  the lab's known_hosts was updated; other known_hosts files still hold the old key")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    node, name = _snapshot_target(args)
    if node is None:
        _lab(args).snapshot_all(name)
        print(f"every machine: snapshot {name} saved (taken at one instant)")
    else:
        path = _lab(args).snapshot(node, name)
        print(f"{node}: snapshot {name} saved ({path})")
    return 0


def _restore(args: argparse.Namespace) -> int:
    node, name = _snapshot_target(args)
    if node is None:
        _lab(args).restore_all(name)
        print(f"every machine: restored snapshot {name}")
    else:
        _lab(args).restore(node, name)
        print(f"{node}: restored snapshot {name}")
    return 0


def _snapshot_target(args: argparse.Namespace) -> tuple[str | None, str]:
    """``NODE NAME`` for one machine, ``--all NAME`` for every machine at once."""
    if args.all:
        if len(args.words) != 1:
            raise LabError("with --all give only the snapshot name", fix="e.g. `runbooks lab snapshot --all installed`")
        return None, args.words[0]
    if len(args.words) != 2:
        raise LabError("give a machine and a snapshot name", fix="e.g. `runbooks lab snapshot node1 before-upgrade`")
    return args.words[0], args.words[1]


def _demo(args: argparse.Namespace) -> int:
    from runbooks_lib.lab import demo

    return demo.run(nodes=args.nodes)


def register(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("lab", help="the embedded lab: machines, faults, stand-ins")
    cmds = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")

    p = cmds.add_parser("up", help="build the image (once) and boot node1..nodeN")
    p.add_argument("--nodes", type=int, default=5, help="number of machines (default 5)")
    p.set_defaults(func=_up)

    p = cmds.add_parser("status", help="table of machines: name, IP, state, uptime")
    p.add_argument("--json", action="store_true", help="print the machine-readable description instead")
    p.set_defaults(func=_status)

    p = cmds.add_parser("describe", help="print the lab's description (JSON) used to write inventories")
    p.set_defaults(func=_describe)

    p = cmds.add_parser("ssh", help="ssh to a machine (host key verified against the lab's known_hosts)")
    p.add_argument("node")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run (default: a login shell)")
    p.set_defaults(func=_ssh)

    p = cmds.add_parser("down", help="stop every machine, remove the lab's mounts, links and rules")
    p.add_argument("--purge", action="store_true", help="also delete the machines' disks and snapshots")
    p.set_defaults(func=_down)

    p = cmds.add_parser("poweroff", help="power a machine off like a VPS panel")
    p.add_argument("node")
    p.add_argument("--mode", choices=POWER_MODES, default="hard",
                   help="hard: stop at once, IP silent; graceful: shutdown; freeze: pause")
    p.set_defaults(func=_poweroff)

    p = cmds.add_parser("poweron", help="boot a machine with its disk as it was (or resume a frozen one)")
    p.add_argument("node")
    p.set_defaults(func=_poweron)

    p = cmds.add_parser("partition", help="drop traffic between two machines")
    p.add_argument("node_a")
    p.add_argument("node_b")
    p.set_defaults(func=_partition)

    p = cmds.add_parser("heal", help="remove every partition")
    p.set_defaults(func=_heal)

    p = cmds.add_parser("reimage", help="fresh disk, same IP, new host key (known_hosts updated)")
    p.add_argument("node")
    p.set_defaults(func=_reimage)

    p = cmds.add_parser("snapshot", help="save a machine's disk: NODE NAME, or --all NAME")
    p.add_argument("--all", action="store_true", help="every machine at one instant (consistent etcd)")
    p.add_argument("words", nargs="+", metavar="NODE NAME")
    p.set_defaults(func=_snapshot)

    p = cmds.add_parser("restore", help="put a saved disk back (restarts a running machine): NODE NAME, or --all NAME")
    p.add_argument("--all", action="store_true", help="every machine")
    p.add_argument("words", nargs="+", metavar="NODE NAME")
    p.set_defaults(func=_restore)

    p = cmds.add_parser("demo", help="bring the lab up and run prepare-nodes, install-cluster, diagnostics and failover-test on it")
    p.add_argument("--nodes", type=int, default=5)
    p.set_defaults(func=_demo)

    from runbooks_lib.lab import cluster, dns

    cluster.register(cmds)
    dns.register(cmds)
