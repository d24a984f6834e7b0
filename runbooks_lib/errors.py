"""The one error hierarchy of runbooks_lib.

Every error carries an actionable message: what was run, where, how it ended,
the tail of its error output and the next step for the operator. Raise by
default; callers opt out with the keyword ``check=False`` where a function
offers it (the same spelling everywhere).

Every rendered message passes through :func:`runbooks_lib.redaction.redact`,
so a private key, token or password in a command's output never reaches a
traceback, whoever raised the error.
"""

from __future__ import annotations

from runbooks_lib.redaction import redact


def tail(text: str | bytes | None, lines: int = 15) -> str:
    """Return the last ``lines`` lines of ``text`` (bytes are decoded leniently)."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


class RunbookError(Exception):
    """Base class of every error raised by runbooks_lib.

    ``what`` says what went wrong, ``fix`` the next step for the operator.
    Optional context (command, host, exit code, stderr) is rendered into the
    message so that a failing notebook cell explains itself.
    """

    def __init__(
        self,
        what: str,
        *,
        fix: str | None = None,
        command: str | list[str] | tuple[str, ...] | None = None,
        host: str | None = None,
        exit_code: int | None = None,
        stderr: str | bytes | None = None,
    ) -> None:
        self.what = redact(what)
        self.fix = fix
        self.command = command
        self.host = host
        self.exit_code = exit_code
        # Redacted before the tail is cut, so a key whose BEGIN line falls outside it is still found.
        if isinstance(stderr, bytes):
            stderr = stderr.decode("utf-8", "replace")
        self.stderr = tail(redact(stderr or ""))
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.what]
        if self.host:
            parts.append(f"host: {self.host}")
        if self.command:
            cmd = self.command if isinstance(self.command, str) else " ".join(map(str, self.command))
            parts.append(f"command: {cmd}")
        if self.exit_code is not None:
            parts.append(f"exit code: {self.exit_code}")
        if self.stderr:
            parts.append("stderr (last lines):\n  " + self.stderr.replace("\n", "\n  "))
        if self.fix:
            parts.append(f"next step: {self.fix}")
        return redact("\n".join(parts))

    def __str__(self) -> str:
        # args may have been replaced after construction; what is shown is always redacted.
        return redact(super().__str__())


class CommandFailed(RunbookError):
    """A local or remote command exited non-zero (or could not be started)."""


class HostUnreachable(RunbookError):
    """A host did not answer within the allowed time (powered off, network down)."""


class HostKeyError(RunbookError):
    """An SSH host key is unknown or differs from the pinned one."""


class PreconditionFailed(RunbookError):
    """The system is not in the state a step needs; nothing was changed."""


class WaitTimedOut(RunbookError):
    """A bounded wait ran out; the message lists what is still pending."""


class PlaybookFailed(RunbookError):
    """An ansible-playbook run failed; the message names the failed task and host."""


class BadParameters(RunbookError):
    """Parameters or input files are invalid; nothing was run."""


class RunRefused(RunbookError):
    """A run was refused before anything ran (lock held, bad parameters); nothing was changed."""


class LabError(RunbookError):
    """The embedded lab cannot do what was asked (not root, tool missing, range in use...)."""
