"""Killing a ``runbooks run`` the hard way, as a crash or ``kill -9`` would: the run and everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, found through /proc's parent links (children before grandchildren)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, pp in parents.items() if pp == current]
        found += children
        frontier += children
    return found


def kill_run(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group and every process below it, then reap it.

    The kernel runs in a session of its own and ansible-playbook in a process
    group of its own (so that a timeout kills all of it): killing the run's
    group alone would leave the playbook running beside the re-run.
    """
    victims = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended by itself: the caller's assertions say why
        pass
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
