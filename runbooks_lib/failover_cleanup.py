"""Undo what a failover drill left behind when it died before its teardown.

The drill lists in its ledger (:mod:`runbooks_lib.leftovers`) each thing it
starts, before starting it: ``fault`` (a node it broke), ``keepalived`` (the
VIP's configuration on the nodes) and ``haproxy`` (the front door on this
machine). :func:`undo` restores the node first (keepalived on it can only be
removed once it answers), then removes keepalived, then stops HAProxy; each
entry leaves the ledger only once undone. Side effects: powers nodes on or
heals them, stops keepalived and removes the drill's files on the nodes,
kills a leftover HAProxy of this machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runbooks_lib import errors, faults, kube, ssh
from runbooks_lib.frontdoors.keepalived import KeepalivedVip, VrrpNode
from runbooks_lib.frontdoors.runner import SshRunner
from runbooks_lib.leftovers import Leftover, Ledger

RUNBOOK = "failover-test"
ORDER = ("fault", "keepalived", "haproxy")


def ledger(inventory: str | os.PathLike[str]) -> Ledger:
    """The failover drill's ledger for ``inventory``."""
    return Ledger.for_runbook(inventory, RUNBOOK)


def cleanup(p: Any) -> list[str]:
    """``runbooks run failover-test --cleanup``: undo what the ledger of ``p.inventory`` lists; return what was said."""
    book = ledger(p.inventory)
    if not book.entries():
        return [f"nothing to undo: no leftovers listed ({book.path} does not exist)"]
    return undo(book, p, say=lambda _: None)


def undo(book: Ledger, p: Any, *, say: Callable[[str], None] = print) -> list[str]:
    """Undo every entry of ``book`` with the drill's parameters ``p`` (FailoverParams); return what was undone.

    Every entry is tried, also after one failed; then ONE RunbookError names
    each entry that could not be undone (they stay in the ledger, so the next
    run or ``--cleanup`` tries again).
    """
    entries = sorted(book.entries(), key=lambda e: ORDER.index(e.kind) if e.kind in ORDER else len(ORDER))
    undone: list[str] = []
    failed: list[str] = []
    for entry in entries:
        how = _UNDO.get(entry.kind)
        try:
            if how is None:
                raise errors.RunbookError(f"unknown kind {entry.kind!r}")
            text = how(entry, p)
        except errors.RunbookError as exc:
            failed.append(f"{entry.line()}: {(str(exc).splitlines() or [''])[0]}")
            continue
        book.done(entry.kind, entry.target)
        undone.append(f"undid {entry.kind} on {entry.target}: {text}")
        say(undone[-1])
    if failed:
        raise errors.RunbookError("leftovers of an earlier drill could not be undone: " + "; ".join(failed),
                                  fix=f"undo them by hand (they stay listed in {book.path}) or fix the cause "
                                      "and run `runbooks run failover-test --cleanup` again")
    return undone


def _undo_fault(entry: Leftover, p: Any) -> str:
    kind = str(entry.detail.get("injector", ""))
    injector = faults.injector(kind, fault_command=p.fault_command, power_on_command=p.power_on_command,
                               timeout=p.timeout_s)
    if kind == "command" and not p.power_on_command:
        raise errors.PreconditionFailed(f"{entry.target} was faulted by a command and power_on_command is empty",
                                        fix="give power_on_command, or bring the node back by hand and remove "
                                            "the entry")
    injector.restore(entry.target, str(entry.detail["address"]), str(entry.detail["mode"]))
    api = kube.client_from_kubeconfig(str(p.kubeconfig))
    kube.wait_for_nodes(api, [entry.target], "Ready", timeout=p.ready_timeout_s)
    return f"{entry.detail['mode']} fault restored ({kind}), node Ready"


def _undo_keepalived(entry: Leftover, p: Any) -> str:
    nodes = [(str(name), str(addr)) for name, addr in entry.detail["nodes"]]
    conns = [ssh.Connection(ssh.Host(name, addr, user=p.ssh_user, key_path=str(p.ssh_key),
                                     known_hosts=str(p.known_hosts)), connect_timeout=min(5.0, p.timeout_s))
             for name, addr in nodes]
    try:
        door = KeepalivedVip(str(entry.detail["vip"]),
                             tuple(VrrpNode(name, addr, SshRunner(c, name)) for (name, addr), c in zip(nodes, conns)),
                             prefix=int(entry.detail.get("prefix", 24)), timeout=p.timeout_s)
        door.interfaces.update({str(k): str(v) for k, v in (entry.detail.get("interfaces") or {}).items()})
        door.teardown()
    finally:
        for c in conns:
            c.close()
    return f"keepalived stopped, its configuration and VIP {entry.detail['vip']} removed on " \
           f"{', '.join(n for n, _ in nodes)}"


def _undo_haproxy(entry: Leftover, p: Any) -> str:
    pid, workdir = int(entry.detail["pid"]), str(entry.detail.get("workdir", ""))
    ours = bool(workdir) and Path(workdir).name.startswith("runbooks-haproxy-")
    said = "already gone"
    if ours and _cmdline_has(pid, workdir):
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _cmdline_has(pid, workdir):
                time.sleep(0.05)
            if not _cmdline_has(pid, workdir):
                break
        if _cmdline_has(pid, workdir):
            raise errors.CommandFailed(f"HAProxy pid {pid} still runs after SIGKILL", fix=f"look at process {pid}")
        said = f"stopped pid {pid}"
    if ours and Path(workdir).parent == Path(tempfile.gettempdir()):
        shutil.rmtree(workdir, ignore_errors=True)
    return said


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


_UNDO: dict[str, Callable[[Leftover, Any], str]] = {
    "fault": _undo_fault, "keepalived": _undo_keepalived, "haproxy": _undo_haproxy,
}
