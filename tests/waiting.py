"""The tests' one bounded wait: runbooks_lib.waits.wait_for with defaults for tests.

``wait_until(check, timeout=..., what=...)`` polls ``check`` (a bool, or
``(done, detail)`` where detail says what is still pending) and fails the
test with WaitTimedOut naming ``what`` and the pending detail. Use it instead
of a hand-written deadline loop.
"""

from __future__ import annotations

from collections.abc import Callable

from runbooks_lib.waits import CheckOutcome, Waited, wait_for


def wait_until(
    check: Callable[[], CheckOutcome],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Waited:
    """Poll ``check`` every ``interval`` seconds for at most ``timeout`` seconds; raise WaitTimedOut."""
    return wait_for(check, timeout=timeout, interval=interval, what=what, retry_on=retry_on,
                    fix="the test waited for this; see what is still pending")
