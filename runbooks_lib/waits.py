"""The one bounded wait: poll a check until it is done, or fail naming what is still pending."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from runbooks_lib import errors

CheckOutcome = bool | tuple[bool, str] | tuple[bool, Iterable[str]]


@dataclass(frozen=True)
class Waited:
    """How a successful :func:`wait_for` went."""

    what: str
    attempts: int
    elapsed: float
    detail: str


def _outcome(value: CheckOutcome) -> tuple[bool, str]:
    if isinstance(value, tuple):
        done, detail = value
        if not isinstance(detail, str):
            detail = ", ".join(map(str, detail))
        return bool(done), detail
    return bool(value), ""


def wait_for(
    check: Callable[[], CheckOutcome],
    *,
    timeout: float,
    interval: float,
    what: str,
    retry_on: tuple[type[BaseException], ...] = (),
    fix: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Waited:
    """Call ``check`` until it reports done, at most ``timeout`` seconds.

    ``check`` returns a bool, or ``(done, detail)`` where detail is a string
    or the items still pending. Exceptions listed in ``retry_on`` count as
    "not yet" (their message becomes the pending detail); others propagate.
    Raises WaitTimedOut naming ``what`` and what is still pending. No side
    effects beyond those of ``check``.
    """
    if timeout <= 0 or interval <= 0:
        raise errors.BadParameters(f"wait for {what}: timeout and interval must be positive",
                                   fix="pass timeout > 0 and interval > 0")
    start = clock()
    deadline = start + timeout
    attempts = 0
    detail = ""
    while True:
        attempts += 1
        try:
            done, detail = _outcome(check())
        except retry_on as exc:
            done, detail = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        now = clock()
        if done:
            return Waited(what=what, attempts=attempts, elapsed=now - start, detail=detail)
        if now >= deadline:
            pending = f"; still pending: {detail}" if detail else ""
            raise errors.WaitTimedOut(
                f"timed out after {timeout:g}s waiting for {what} ({attempts} checks){pending}",
                fix=fix or f"look at what is still pending, fix it, or rerun with a longer timeout than {timeout:g}s",
            )
        sleep(max(0.0, min(interval, deadline - now)))
