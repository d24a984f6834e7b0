"""The tests' one bounded wait, built on the library's: runbooks_lib.waits.wait_for.

``wait_until(check, timeout, what)`` polls ``check`` (a bool, or
``(done, detail)`` where detail says what is still pending);
``wait_value(get, timeout, what)`` returns the first truthy value of ``get``.
Both raise WaitTimedOut naming ``what`` and what is still pending, which
fails the test. Use them instead of a hand-written deadline loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from runbooks_lib.waits import CheckOutcome, Waited, wait_for

T = TypeVar("T")

_FIX = "the test waited for this; see what is still pending"


def wait_until(
    check: Callable[[], CheckOutcome],
    timeout: float,
    what: str,
    interval: float = 0.1,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Waited:
    """Poll ``check`` every ``interval`` seconds for at most ``timeout`` seconds; raise WaitTimedOut."""
    return wait_for(check, timeout=timeout, interval=interval, what=what, retry_on=retry_on, fix=_FIX)


def wait_value(
    get: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.1,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``get`` until it returns a truthy value and return that value; raise WaitTimedOut."""
    last: list[T] = []

    def check() -> tuple[bool, str]:
        value = get()
        last[:] = [value]
        return bool(value), f"last value {value!r}"[:300]

    wait_for(check, timeout=timeout, interval=interval, what=what, retry_on=retry_on, fix=_FIX)
    return last[0]
