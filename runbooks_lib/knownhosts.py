"""SSH host keys for OpenSSH clients (Ansible): ssh options that pin one known_hosts file,
fingerprints of the keys it pins, and OpenSSH's host-key failures read from its output.

The ssh module verifies keys itself (paramiko); this module is for programs that
run OpenSSH, i.e. ansible-playbook. Pure functions over text and files, except
:func:`scan` (runs ``ssh-keyscan``: one connection to the host, read-only).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from runbooks_lib import errors, local

# ssh options that decide which host keys are trusted: replaced, never kept from a checkout's ansible.cfg.
HOST_KEY_OPTIONS = frozenset({"userknownhostsfile", "globalknownhostsfile", "stricthostkeychecking",
                              "updatehostkeys", "hostkeyalias", "knownhostscommand", "verifyhostkeydns",
                              "checkhostip"})
# Ansible's ssh_args default (used when ansible.cfg sets none).
ANSIBLE_DEFAULT_SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=60s"


def fingerprint(key_base64: str) -> str:
    """OpenSSH SHA256 fingerprint (``SHA256:...``) of a public key blob as written in known_hosts."""
    try:
        blob = base64.b64decode(key_base64, validate=True)
    except (binascii.Error, ValueError):
        raise errors.BadParameters(f"not a base64 public key: {key_base64[:20]}...",
                                   fix="check the known_hosts line") from None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _host_patterns(address: str, port: int = 22) -> set[str]:
    return {address if port == 22 else f"[{address}]:{port}"}


def _matches(field: str, names: set[str]) -> bool:
    for pattern in field.split(","):
        if pattern.startswith("|1|"):  # HashKnownHosts: |1|salt|HMAC-SHA1(salt, name)
            try:
                _, _, salt, digest = pattern.split("|")
                key = base64.b64decode(salt)
                if any(hmac.compare_digest(base64.b64encode(hmac.new(key, n.encode(), "sha1").digest()).decode(),
                                           digest) for n in names):
                    return True
            except (ValueError, binascii.Error):
                continue
        elif pattern in names:
            return True
    return False


@dataclass(frozen=True)
class PinnedKey:
    """One key a known_hosts file pins for a host."""

    key_type: str
    fingerprint: str
    line: int

    def __str__(self) -> str:
        return f"{self.key_type} {self.fingerprint}"


def pinned(known_hosts: str | Path, address: str, *, port: int = 22) -> tuple[PinnedKey, ...]:
    """The keys ``known_hosts`` pins for ``address`` (plain or hashed entries); () if none or no file."""
    try:
        text = Path(known_hosts).read_text()
    except OSError:
        return ()
    names = _host_patterns(address, port)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) < 3 or line.lstrip().startswith("#"):
            continue
        if parts[0].startswith("@"):  # @cert-authority / @revoked markers: not a plain pin
            continue
        if _matches(parts[0], names):
            try:
                found.append(PinnedKey(parts[1], fingerprint(parts[2]), number))
            except errors.BadParameters:
                continue
    return tuple(found)


def scan(address: str, *, port: int = 22, timeout: float = 15.0) -> tuple[PinnedKey, ...]:
    """The host keys ``address`` offers now (``ssh-keyscan``), with fingerprints; () if it does not answer.

    Not a verification: the answer comes over the same unverified network. Use it
    to show an operator what to compare with the machine's console, never to pin.
    """
    try:
        res = local.run(["ssh-keyscan", "-T", str(max(1, int(timeout) - 1)), "-p", str(port), address],
                        timeout=timeout, check=False)
    except errors.RunbookError:
        return ()
    keys = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            try:
                keys.append(PinnedKey(parts[1], fingerprint(parts[2]), 0))
            except errors.BadParameters:
                continue
    return tuple(keys)


@functools.lru_cache(maxsize=None)
def knownhostscommand_supported(ssh: str = "ssh") -> bool:
    """Whether the local OpenSSH knows ``KnownHostsCommand`` (8.5+). Asked once: ``ssh -G`` connects nowhere.

    False only when ssh ran and rejected the option; a missing or hanging ssh
    counts as True (the option stays, and an ssh that cannot run fails anyway).
    """
    try:
        res = local.run([ssh, "-G", "-F", "/dev/null", "-o", "KnownHostsCommand=none", "127.0.0.1"],
                        timeout=5, check=False)
    except errors.RunbookError:
        return True
    return res.ok or res.timed_out or "knownhostscommand" not in res.stderr.lower()


def ssh_args(base: str | None, known_hosts: str | Path) -> str:
    """``base`` ssh options with every host-key option replaced by strict checking against ``known_hosts``.

    Keeps everything else (Kubespray's ControlMaster, ControlPersist,
    ConnectionAttempts...). OpenSSH takes the first value of an option, and
    Ansible puts ssh_args first on the command line, so these win over any
    UserKnownHostsFile in the inventory's ansible_ssh_common_args. Forced:
    UserKnownHostsFile=KNOWN_HOSTS, GlobalKnownHostsFile=/dev/null,
    StrictHostKeyChecking=yes, UpdateHostKeys=no, KnownHostsCommand=none (left
    out for an OpenSSH older than 8.5, which cannot run one:
    :func:`knownhostscommand_supported`), VerifyHostKeyDNS=no. Raises
    BadParameters for a known_hosts path with whitespace (ssh would split it).
    """
    path = str(Path(known_hosts).expanduser().resolve())
    if re.search(r"\s", path):
        raise errors.BadParameters(f"known_hosts path {path!r} contains whitespace",
                                   fix="move the known_hosts file to a path without spaces")
    words = shlex.split(base if base is not None else ANSIBLE_DEFAULT_SSH_ARGS)
    kept: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-o" and i + 1 < len(words):
            option, i = words[i + 1], i + 2
        elif word.startswith("-o") and len(word) > 2:
            option, i = word[2:], i + 1
        else:
            kept.append(word)
            i += 1
            continue
        name = re.split(r"[=\s]", option, maxsplit=1)[0].lower()
        if name not in HOST_KEY_OPTIONS:
            kept += ["-o", option]
    kept += ["-o", f"UserKnownHostsFile={path}", "-o", "GlobalKnownHostsFile=/dev/null",
             "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no"]
    if knownhostscommand_supported():
        kept += ["-o", "KnownHostsCommand=none"]
    kept += ["-o", "VerifyHostKeyDNS=no"]
    return shlex.join(kept)


# --------------------------------------------------------------------------- OpenSSH's failure output

@dataclass(frozen=True)
class HostKeyFailure:
    """An OpenSSH connection refused because of the host key."""

    host: str  # the inventory name Ansible reported
    address: str | None  # the address ssh connected to, when the output names it
    changed: bool  # True: the pinned key differs; False: no key pinned for this address
    presented: str | None  # fingerprint the host offered, when ssh printed it
    known_hosts: str | None = None  # the file ssh named, when it named one


_UNREACHABLE = re.compile(r"^(?:fatal|failed): \[(?P<host>[^\]]+?)(?: -> [^\]]+)?\]: UNREACHABLE! => (?P<body>.*)$")
_CHANGED = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for (?P<addr>\S+) has changed")
_UNKNOWN = re.compile(r"No \S+ host key is known for (?P<addr>\S+) and you have requested strict checking")
_PRESENTED = re.compile(r"key sent by the remote host is\s+(?P<fp>SHA256:[A-Za-z0-9+/]+)")
_REMOVE = re.compile(r"ssh-keygen -f ['\"]?(?P<file>[^'\"\s]+)['\"]? -R ['\"]?(?P<addr>[^'\"\s]+?)['\"]?\s*$", re.M)
_OFFENDING = re.compile(r"Offending \S+ key in (?P<file>\S+?):\d+")


def parse_failure(host: str, text: str) -> HostKeyFailure | None:
    """The host-key failure described by ssh's output ``text`` for ``host``, or None if it is another failure."""
    if "Host key verification failed" not in text and not _CHANGED.search(text) and not _UNKNOWN.search(text):
        return None
    changed = _CHANGED.search(text)
    unknown = _UNKNOWN.search(text)
    remove = _REMOVE.search(text)
    address = (changed["addr"] if changed and changed["addr"] else None) or (unknown["addr"] if unknown else None) \
        or (remove["addr"] if remove else None)
    if address:
        address = address.strip("[]").split("]:")[0] if address.startswith("[") else address.rstrip(".")
    presented = _PRESENTED.search(text)
    offending = _OFFENDING.search(text)
    known = (remove["file"] if remove else None) or (offending["file"] if offending else None)
    return HostKeyFailure(host, address, bool(changed) and not unknown, presented["fp"] if presented else None, known)


def failures_in_ansible_output(output: str) -> list[HostKeyFailure]:
    """Host-key failures in ansible-playbook output: one per host, from its UNREACHABLE results."""
    found: dict[str, HostKeyFailure] = {}
    for line in output.splitlines():
        match = _UNREACHABLE.match(line.strip())
        if not match:
            continue
        try:
            body = json.loads(match["body"])
            text = str(body.get("msg", "")) if isinstance(body, dict) else str(body)
        except ValueError:
            text = match["body"].replace("\\r\\n", "\n").replace("\\n", "\n")
        failure = parse_failure(match["host"], text)
        if failure and match["host"] not in found:
            found[match["host"]] = failure
    return list(found.values())
