"""Run host commands for the lab: argument lists, a required timeout, clear errors."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from runbooks_lib.errors import CommandFailed


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    input: str | None = None,
    cwd: str | None = None,
    fix: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` on the host and return the completed process.

    Raises CommandFailed when it exits non-zero (unless ``check=False``), when
    the program is missing, or when it outlives ``timeout`` seconds (it is killed).
    """
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              input=input, cwd=cwd, stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise CommandFailed(f"{argv[0]} is not installed", command=shlex.join(argv),
                            fix=fix or "run `make setup` (installs the lab's Debian packages)") from None
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"command did not finish within {timeout:.0f} s", command=shlex.join(argv),
                            stderr=exc.stderr, fix=fix) from None
    if check and proc.returncode != 0:
        raise CommandFailed("command failed", command=shlex.join(argv), exit_code=proc.returncode,
                            stderr=proc.stderr or proc.stdout, fix=fix)
    return proc
