"""Running commands and moving files through any connection; remote text files.

Every command is an argument list, shell-quoted here with :func:`shlex.join`
(nothing builds shell strings from parameters), and every call has a timeout.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from runbooks_lib.errors import BadParameters
from runbooks_lib.ssh.base import BaseConnection
from runbooks_lib.ssh.result import GroupResult, Result, failure, group_failure


def _argv(argv: Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(argv, (str, bytes)):
        raise BadParameters(
            f"commands are argument lists, got the string {argv!r}",
            fix="pass e.g. ['systemctl', 'is-active', 'etcd']",
        )
    if not argv:
        raise BadParameters("empty command")
    return [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]


def run(
    conn: BaseConnection,
    argv: Sequence[str | os.PathLike],
    *,
    timeout: float,
    check: bool = True,
    sudo: bool = False,
    input: str | bytes | None = None,
) -> Result:
    """Run ``argv`` on ``conn``'s host and return its :class:`Result`.

    ``sudo=True`` prefixes ``sudo -n --`` unless already root. Raises
    CommandFailed on a non-zero exit (unless ``check=False``) and on timeout;
    HostUnreachable when the host cannot be reached or stops answering
    (whatever ``check`` says: there is no exit status to report then).
    """
    args = _argv(argv)
    if sudo and conn.needs_sudo:
        args = ["sudo", "-n", "--", *args]
    command = shlex.join(args)
    data = input.encode() if isinstance(input, str) else input
    start = time.monotonic()
    exited, stdout, stderr = conn.execute(args, command, timeout=timeout, input=data)
    result = Result(conn.name, command, exited, stdout, stderr, time.monotonic() - start)
    if check and result.failed:
        raise failure(result)
    return result


def run_group(
    conns: Sequence[BaseConnection],
    argv: Sequence[str | os.PathLike],
    *,
    timeout: float,
    check: bool = True,
    sudo: bool = False,
    input: str | bytes | None = None,
) -> GroupResult:
    """Run ``argv`` on every connection in parallel threads; return a :class:`GroupResult`.

    Waits for every host (each bounded by its connect timeout and ``timeout``).
    With ``check=True`` raises ONE error after all answered: HostUnreachable
    when every failure is an unreachable host, otherwise CommandFailed; the
    error lists each failed host and carries the GroupResult as ``.result``.
    """
    names = [c.name for c in conns]
    if len(set(names)) != len(names):
        raise BadParameters(f"duplicate host names in run_group: {names}")
    args = _argv(argv)

    def one(conn: BaseConnection) -> Result | BaseException:
        try:
            return run(conn, args, timeout=timeout, check=False, sudo=sudo, input=input)
        except Exception as exc:  # reported per host, never lost
            return exc

    outcomes: dict[str, Result | BaseException] = {}
    if conns:
        with ThreadPoolExecutor(max_workers=min(32, len(conns))) as pool:
            for conn, outcome in zip(conns, pool.map(one, conns)):
                outcomes[conn.name] = outcome
    group = GroupResult(outcomes)
    if check and group.failed:
        raise group_failure(group, shlex.join(args))
    return group


def put(conn: BaseConnection, local_path: str | os.PathLike, remote_path: str, *, timeout: float = 60.0) -> None:
    """Upload ``local_path`` to ``remote_path`` (overwrites). Rollback: remove the remote file."""
    conn.put(local_path, remote_path, timeout=timeout)


def get(conn: BaseConnection, remote_path: str, local_path: str | os.PathLike, *, timeout: float = 60.0) -> None:
    """Download ``remote_path`` to ``local_path`` (overwrites the local file)."""
    conn.get(remote_path, local_path, timeout=timeout)


# --------------------------------------------------------------------------
# Remote text files
# --------------------------------------------------------------------------


def read_text(
    conn: BaseConnection, path: str, *, timeout: float = 30.0, sudo: bool = False, missing_ok: bool = False
) -> str | None:
    """Content of a remote text file; None if absent and ``missing_ok``. Raises CommandFailed."""
    result = run(conn, ["cat", "--", path], timeout=timeout, sudo=sudo, check=False)
    if result.ok:
        return result.stdout
    if missing_ok and "No such file" in result.stderr:
        return None
    raise failure(result, fix=f"check that {path} exists and is readable")


# Writes a temp file beside the target (same file system, so mv is atomic) and renames it over the
# target. The temp file is CREATED under umask 077 (noclobber, after removing a stale one), so it is
# 0600 before the first byte of content arrives: a secret such as admin.conf is never readable by
# others, not even for a moment. Then it gets its final owner and mode: the target's when it exists
# (chown first, as chown may clear set-id bits), else the mode the caller's umask gives a new file
# (0666 & ~umask, as `cat > file` would have), then ``$3`` when given. It is fsynced before the
# rename and the directory after it (``sync FILE``, GNU coreutils >= 8.24; best effort: an older
# sync that ignores its arguments syncs everything, a failing one is ignored), so a power cut leaves
# the old content or the new one, never an empty file. A failed or interrupted write removes the temp
# file and leaves the target as it was. The temp name starts with a dot so that kubelet ignores it in
# a static-pod directory. Parameters: $1 target, $2 temp file, $3 mode ("" = keep), $4 directory.
_WRITE_SCRIPT = (
    'set -e; u=$(umask); umask 077; '
    'trap \'rm -f -- "$2"\' EXIT; trap \'exit 1\' HUP INT TERM; '
    'rm -f -- "$2"; set -C; cat > "$2"; set +C; '
    'if [ -e "$1" ]; then chown --reference="$1" -- "$2"; chmod --reference="$1" -- "$2"; '
    'elif [ -z "$3" ]; then chmod -- "$(printf %o "$((0666 & ~0$u))")" "$2"; fi; '
    'if [ -n "$3" ]; then chmod -- "$3" "$2"; fi; '
    'sync -- "$2" 2>/dev/null || :; '
    'mv -f -- "$2" "$1"; trap - EXIT; '
    'sync -- "$4" 2>/dev/null || :'
)


def write_text_argv(path: str, mode: str = "") -> list[str]:
    """The argv :func:`write_text` runs (stdin carries the content); the paths are positional parameters."""
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".{base}.runbooks-tmp")
    return ["sh", "-c", _WRITE_SCRIPT, "sh", path, tmp, mode, directory or "."]


def write_text(
    conn: BaseConnection, path: str, text: str, *, timeout: float = 30.0, sudo: bool = False, mode: str = ""
) -> Result:
    """Replace a remote file atomically (temp file beside it + mv), keeping its mode and owner.

    The temp file is 0600 from its creation (umask 077) until the content is complete and fsynced;
    then it takes the target's mode and owner (a new file: the mode the umask gives, 0644 under
    sudo's usual 022), then ``mode`` (e.g. "0644") when given, and replaces the target. Raises CommandFailed.
    Rollback: write the previous content back the same way.
    """
    return run(conn, write_text_argv(path, mode), timeout=timeout, sudo=sudo, input=text)
