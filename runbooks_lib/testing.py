"""Test doubles for code that drives machines: a scripted connection in the manner of invoke's MockContext.

Not for runbooks: a :class:`MockConnection` answers only the commands it was
given and fails loudly on any other, so unit tests of SSH-driving helpers run
without a machine. The real thing is tested against the lab.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from runbooks_lib.ssh.base import BaseConnection
from runbooks_lib.ssh.host import Host
from runbooks_lib.ssh.result import Result


@dataclass(frozen=True)
class Reply:
    """A scripted answer for :class:`MockConnection`."""

    stdout: str = ""
    stderr: str = ""
    exited: int = 0


MockValue = Union[Result, Reply, str, BaseException, Callable[[list[str], "bytes | None"], Any]]


@dataclass(frozen=True)
class Call:
    """One command a :class:`MockConnection` received."""

    argv: tuple[str, ...]
    command: str
    input: bytes | None


class MockConnection(BaseConnection):
    """A scripted connection for tests, in the spirit of invoke's MockContext.

    ``commands`` maps an expected argv (tuple or list) or command string to a
    value: a :class:`Reply` (or Result), a str (stdout, exit 0), an exception
    to raise, or a callable ``(argv, input) -> value``. A list of values is
    answered in order and then exhausted; a single value answers every time.
    Any command not listed raises AssertionError naming it. ``files`` is an
    in-memory remote file system for put/get; ``calls`` records every command.
    """

    def __init__(
        self,
        name: str = "mock",
        commands: Mapping[Any, Any] | None = None,
        *,
        user: str = "root",
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        self.host = Host(name=name, address="192.0.2.1", user=user)
        self._expected: dict[Any, list[Any]] = {}
        self._repeat: dict[Any, Any] = {}
        self._used: set[Any] = set()
        self.calls: list[Call] = []
        self.files: dict[str, bytes] = dict(files or {})
        for key, value in (commands or {}).items():
            self.expect(key, value)

    @staticmethod
    def _key(argv_or_command: Sequence[str] | str) -> Any:
        return argv_or_command if isinstance(argv_or_command, str) else tuple(map(str, argv_or_command))

    def expect(self, argv_or_command: Sequence[str] | str, value: Any) -> MockConnection:
        """Add an expected command; a list value is answered in order."""
        key = self._key(argv_or_command)
        if isinstance(value, list):
            self._expected.setdefault(key, []).extend(value)
        else:
            self._repeat[key] = value
        return self

    def execute(
        self, argv: list[str], command: str, *, timeout: float, input: bytes | None
    ) -> tuple[int, str, str]:
        self.calls.append(Call(tuple(argv), command, input))
        for key in (tuple(argv), command):
            if self._expected.get(key):
                self._used.add(key)
                value = self._expected[key].pop(0)
                break
            if key in self._repeat:
                self._used.add(key)
                value = self._repeat[key]
                break
        else:
            known = sorted(map(str, [*self._repeat, *(k for k, v in self._expected.items() if v)]))
            raise AssertionError(
                f"unexpected command on {self.host.name}: {command}\n"
                + ("still expected:\n  " + "\n  ".join(known) if known else "no commands left")
            )
        if callable(value) and not isinstance(value, BaseException):
            value = value(list(argv), input)
        if isinstance(value, BaseException):
            raise value
        if isinstance(value, str):
            return 0, value, ""
        if isinstance(value, (Reply, Result)):
            return value.exited, value.stdout, value.stderr
        raise TypeError(f"MockConnection cannot answer with {value!r}")

    def assert_all_used(self) -> None:
        """Fail if an expected command was never run or a scripted sequence was not consumed."""
        unused = [k for k in self._repeat if k not in self._used]
        unused += [k for k, v in self._expected.items() if v]
        if unused:
            raise AssertionError(f"expected commands not run on {self.host.name}: {unused}")

    def put(self, local_path: str | os.PathLike, remote_path: str, *, timeout: float) -> None:
        with open(local_path, "rb") as f:
            self.files[remote_path] = f.read()

    def get(self, remote_path: str, local_path: str | os.PathLike, *, timeout: float) -> None:
        if remote_path not in self.files:
            raise AssertionError(f"unexpected download of {remote_path} from {self.host.name}")
        with open(local_path, "wb") as f:
            f.write(self.files[remote_path])
