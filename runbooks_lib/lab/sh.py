"""Run host commands for the lab through runbooks_lib.local, adding the lab's next-step hints."""

from __future__ import annotations

from collections.abc import Sequence

from runbooks_lib import local
from runbooks_lib.errors import CommandFailed


def run(
    argv: Sequence[object],
    *,
    timeout: float,
    check: bool = True,
    input: str | None = None,
    cwd: str | None = None,
    fix: str | None = None,
) -> local.Result:
    """Run ``argv`` on the host and return its Result.

    Raises CommandFailed when it exits non-zero (unless ``check=False``), when
    the program is missing, or when it outlives ``timeout`` seconds (it is killed).
    """
    try:
        result = local.run([str(a) for a in argv], timeout=timeout, check=False, input=input, cwd=cwd)
    except CommandFailed as exc:  # could not be started, e.g. not installed
        raise CommandFailed(exc.what, command=exc.command,
                            fix=fix or "run `make setup` (installs the lab's Debian packages)") from None
    if result.timed_out:
        raise CommandFailed(f"command did not finish within {timeout:.0f} s", command=list(result.command),
                            stderr=result.stderr, fix=fix)
    if check and result.exited != 0:
        raise CommandFailed("command failed", command=list(result.command), exit_code=result.exited,
                            stderr=result.stderr or result.stdout, fix=fix)
    return result


