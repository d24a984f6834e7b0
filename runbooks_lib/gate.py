"""The confirmation gate: the one place a runbook asks a human before it changes a cluster.

Under papermill or nbval (no stdin) it falls back to the ``confirm`` parameter.
Once confirmed it takes the cluster lock (:mod:`runbooks_lib.cluster_lock`) for
the rest of the session, so a notebook run by hand in JupyterLab excludes other
runs on the same inventory as ``runbooks run`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from runbooks_lib import cluster_lock, errors


def _is_no_stdin(exc: BaseException) -> bool:
    # IPython raises StdinNotImplementedError when the frontend has no stdin
    # (papermill, nbval); plain Python raises EOFError when stdin is closed.
    if isinstance(exc, EOFError):
        return True
    return any(cls.__name__ == "StdinNotImplementedError" for cls in type(exc).__mro__)


def confirm(
    action: str,
    *,
    cluster: str,
    dry_run: bool,
    confirm: str | None = None,
    plan: str | Iterable[str] | None = None,
    lock: str | os.PathLike[str] | None = None,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
) -> bool:
    """Gate a destructive step; return True to proceed, False for a dry run.

    Three paths: ``dry_run`` says what would be done and returns False;
    a non-empty ``confirm`` parameter passes only if it equals ``cluster``
    (headless, papermill); otherwise a human is asked to type the cluster
    name. When there is no stdin (papermill/nbval raise
    StdinNotImplementedError) the headless rule applies. Raises
    PreconditionFailed when not confirmed; nothing has been changed then.

    ``lock``: the inventory whose cluster lock is taken once confirmed and held
    until the process (the notebook's kernel) ends; under ``runbooks run`` the
    runner holds it already. Raises RunRefused naming the holder when another
    run has it. Side effect: the lock file.
    """
    steps = [plan] if isinstance(plan, str) else list(plan or [])
    if dry_run:
        lines = [f"DRY RUN: would {action} on cluster {cluster!r}."]
        lines += [f"  {line}" for line in steps]
        lines.append(f"To run it: set dry_run=False and confirm={cluster!r} (or answer the prompt).")
        say("\n".join(lines))
        return False
    headless_fix = (
        f"rerun with the parameters dry_run=False and confirm={cluster!r} "
        f"(papermill: -p dry_run False -p confirm {cluster})"
    )
    if confirm:
        if confirm == cluster:
            _lock(lock, action)
            say(f"Confirmed by parameter: {action} on cluster {cluster!r}.")
            return True
        raise errors.PreconditionFailed(
            f"confirmation {confirm!r} does not match the cluster name {cluster!r}; "
            f"refusing to {action}. Nothing was changed.",
            fix=headless_fix,
        )
    try:
        answer = ask(f"Type the cluster name ({cluster}) to {action}: ")
    except BaseException as exc:  # noqa: BLE001 - only the no-stdin case is handled
        if not _is_no_stdin(exc):
            raise
        raise errors.PreconditionFailed(
            f"no confirmation for: {action} on cluster {cluster!r} "
            "(no interactive input available and the confirm parameter is empty). "
            "Nothing was changed.",
            fix=headless_fix,
        ) from None
    if answer.strip() != cluster:
        raise errors.PreconditionFailed(
            f"typed {answer.strip()!r}, expected {cluster!r}; refusing to {action}. Nothing was changed.",
            fix=f"run the cell again and type {cluster} exactly, or keep dry_run=True",
        )
    _lock(lock, action)
    say(f"Confirmed: {action} on cluster {cluster!r}.")
    return True


def _lock(inventory: str | os.PathLike[str] | None, action: str) -> None:
    """Hold the cluster lock of ``inventory`` for the session (nothing without an inventory)."""
    if inventory is not None and os.fspath(inventory) not in ("", "."):
        cluster_lock.hold_for_session(inventory, f"gate: {action}")
