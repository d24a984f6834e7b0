"""SSH to the lab's machines: the lab's key, the pinned host key, never unchecked.

Commands run through :func:`runbooks_lib.local.run` (required timeout,
process-group kill) and return its :class:`runbooks_lib.local.Result`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from runbooks_lib import local
from runbooks_lib.errors import CommandFailed, HostUnreachable
from runbooks_lib.lab.config import LabConfig

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR")
_POWER_ON_FIX = "check `runbooks lab status`; power it on with `runbooks lab poweron`"


def ssh_argv(config: LabConfig, name: str, command: Sequence[str] | str | None = None, *,
             connect_timeout: float = 5, tty: bool = False) -> list[str]:
    """The ssh command line for machine ``name`` (``command`` None: an interactive login)."""
    c = config
    argv = ["ssh", "-i", str(c.ssh_key), "-o", f"UserKnownHostsFile={c.known_hosts}", *SSH_OPTIONS,
            "-o", f"ConnectTimeout={max(1, int(connect_timeout))}", "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=2"]
    argv += ["-t"] if tty else ["-T"]
    argv.append(f"{c.ssh_user}@{c.ip_of(name)}")
    if command is not None:
        argv += ["--", command if isinstance(command, str) else shlex.join(str(a) for a in command)]
    return argv


def ssh(config: LabConfig, name: str, command: Sequence[str] | str, *, timeout: float = 30,
        check: bool = True, input: str | None = None) -> local.Result:  # noqa: A002 - as local.run
    """Run ``command`` on machine ``name`` over SSH and return its Result.

    Raises HostUnreachable when it does not answer within ``timeout`` (ssh's
    process group is killed) or cannot be reached, CommandFailed when the
    command exits non-zero (unless ``check=False``).
    """
    argv = ssh_argv(config, name, command, connect_timeout=min(timeout, 5))
    shown = command if isinstance(command, str) else " ".join(str(a) for a in command)
    result = local.run(argv, timeout=timeout, check=False, input=input)
    if result.timed_out:
        raise HostUnreachable(f"{name} did not answer within {timeout:.0f} s", host=name, command=shown,
                              fix=_POWER_ON_FIX)
    if result.exited == 255 and ("timed out" in result.stderr or "No route" in result.stderr
                                 or "Connection refused" in result.stderr):
        raise HostUnreachable(f"{name} is unreachable over SSH", host=name, stderr=result.stderr, fix=_POWER_ON_FIX)
    if check and result.exited != 0:
        raise CommandFailed(f"command failed on {name}", host=name, exit_code=result.exited, command=shown,
                            stderr=result.stderr or result.stdout)
    return result
