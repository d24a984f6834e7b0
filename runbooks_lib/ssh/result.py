"""What a command on a host returns, and the errors built from a failed one.

Every error message built here passes through
:func:`runbooks_lib.runbook.redact`: a failing command's output may hold a
private key, a token or a kubeconfig's client-key-data, and a notebook
traceback must not show it.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar, Union

from runbooks_lib.errors import CommandFailed, HostUnreachable, RunbookError, tail as _tail
from runbooks_lib.runbook import redact

E = TypeVar("E", bound=RunbookError)


@dataclass(frozen=True)
class Result:
    """How one command ended on one host (modelled on invoke's Result)."""

    host: str
    command: str
    exited: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def failed(self) -> bool:
        return not self.ok

    def tail(self, stream: str = "stderr", count: int = 10) -> str:
        """The last ``count`` lines of ``stream`` ("stdout" or "stderr")."""
        return _tail(getattr(self, stream), count)


class GroupResult(Mapping[str, Union[Result, BaseException]]):
    """Per-host outcome of :func:`run_group`: host name -> Result or the exception raised."""

    def __init__(self, outcomes: Mapping[str, Result | BaseException]) -> None:
        self._outcomes = types.MappingProxyType(dict(outcomes))

    def __getitem__(self, name: str) -> Result | BaseException:
        return self._outcomes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outcomes)

    def __len__(self) -> int:
        return len(self._outcomes)

    def __repr__(self) -> str:
        return f"GroupResult({dict(self._outcomes)!r})"

    @property
    def succeeded(self) -> dict[str, Result]:
        return {n: r for n, r in self._outcomes.items() if isinstance(r, Result) and r.ok}

    @property
    def failed(self) -> dict[str, Result | BaseException]:
        return {n: r for n, r in self._outcomes.items() if not (isinstance(r, Result) and r.ok)}


def error(
    cls: type[E],
    what: str,
    *,
    host: str | None = None,
    command: str | None = None,
    exit_code: int | None = None,
    stderr: str | None = None,
    fix: str | None = None,
) -> E:
    """An error of class ``cls`` whose every text part is redacted (the one way this package builds one)."""
    return cls(
        redact(what),
        host=host,
        command=redact(command) if command else command,
        exit_code=exit_code,
        # Redact the whole output before the error keeps its tail: a key block cut in half
        # by the tail would no longer be recognised.
        stderr=redact(stderr) if stderr else stderr,
        fix=redact(fix) if fix else fix,
    )


def failure(result: Result, fix: str | None = None) -> CommandFailed:
    """The CommandFailed for a failed Result (with ``.result`` attached; the message is redacted).

    The error output shown is stderr, or stdout when stderr is empty.
    """
    exc = error(
        CommandFailed,
        f"command failed on {result.host}",
        host=result.host,
        command=result.command,
        exit_code=result.exited,
        stderr=result.stderr or result.stdout,
        fix=fix or "read the error output above; fix the cause on that host and rerun this step",
    )
    exc.result = result  # type: ignore[attr-defined]
    return exc


def group_failure(group: GroupResult, command: str) -> RunbookError:
    """One combined error describing every failed host of ``group`` (redacted)."""
    lines = []
    for name, outcome in group.failed.items():
        if isinstance(outcome, Result):
            output = redact(outcome.stderr or outcome.stdout)
            lines.append(f"{name}: exit {outcome.exited}: {_tail(output, 3)}")
        else:
            lines.append(f"{name}: {type(outcome).__name__}: {str(outcome).splitlines()[0] if str(outcome) else ''}")
    unreachable = all(isinstance(o, HostUnreachable) for o in group.failed.values())
    cls: type[RunbookError] = HostUnreachable if unreachable else CommandFailed
    exc = error(
        cls,
        f"{len(group.failed)} of {len(group)} hosts failed:\n  " + "\n  ".join(lines),
        command=command,
        fix="fix or exclude the failed hosts, then rerun; the other hosts succeeded",
    )
    exc.result = group  # type: ignore[attr-defined]
    return exc
