"""/etc/etcd.env: read it and set one key, keeping comments and order.

Part of :mod:`runbooks_lib.etcd` (import the names from there:
``etcd.set_env(conn, ...)``). Probe: read_env. Action: set_env.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runbooks_lib import ssh
from runbooks_lib.errors import BadParameters

ENV_FILE = "/etc/etcd.env"

_KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
_PLAIN = re.compile(r"^[A-Za-z0-9_./:,=@+%-]*$")


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


@dataclass(frozen=True)
class EnvFile:
    """An environment file as lines (comments and order kept) with KEY=VALUE lookup."""

    lines: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> EnvFile:
        return cls(tuple(text.splitlines()))

    def as_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.lines:
            m = _KEY.match(line)
            if m and not line.lstrip().startswith("#"):
                out[m.group(1)] = _unquote(m.group(2))
        return out

    def __getitem__(self, key: str) -> str:
        return self.as_dict()[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.as_dict().get(key, default)

    def set(self, key: str, value: str) -> EnvFile:
        """A copy with ``key`` set (its last assignment replaced, or appended)."""
        if "\n" in value:
            raise BadParameters(f"value for {key} contains a newline")
        rendered = value if _PLAIN.match(value) else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines = list(self.lines)
        for i in range(len(lines) - 1, -1, -1):
            m = _KEY.match(lines[i])
            if m and m.group(1) == key and not lines[i].lstrip().startswith("#"):
                lines[i] = f"{key}={rendered}"
                break
        else:
            lines.append(f"{key}={rendered}")
        return EnvFile(tuple(lines))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass(frozen=True)
class EnvChange:
    host: str
    path: str
    key: str
    old: str | None
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new


def read_env(conn: ssh.BaseConnection, path: str = ENV_FILE, *, sudo: bool = False, timeout: float = 30.0) -> EnvFile:
    """Probe: parse /etc/etcd.env (or ``path``). Raises CommandFailed if unreadable."""
    text = ssh.read_text(conn, path, sudo=sudo, timeout=timeout)
    return EnvFile.parse(text or "")


def set_env(
    conn: ssh.BaseConnection, key: str, value: str, *, path: str = ENV_FILE, sudo: bool = False,
    timeout: float = 30.0,
) -> EnvChange:
    """Action: set KEY=VALUE in /etc/etcd.env, written atomically; no-op when already set.

    etcd reads the file only when it (re)starts, and ETCD_INITIAL_* only at a
    member's first start; Kubespray rewrites the file on every run. Raises
    CommandFailed. Rollback: ``set_env(conn, key, change.old)``.
    """
    env = read_env(conn, path, sudo=sudo, timeout=timeout)
    old = env.get(key)
    if old != value:
        ssh.write_text(conn, path, env.set(key, value).text(), sudo=sudo, timeout=timeout)
    return EnvChange(conn.name, path, key, old, value)
