"""Redaction of secrets from text shown to people: errors, logs, summaries.

Private keys (PEM, also base64 as in kubeconfig ``client-key-data``), bearer
and kubeadm tokens, credentials in URLs and ``password=``/``token:``-style
values. Pure functions. Imports nothing from runbooks_lib, so errors.py can
use it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

REDACTED = "[redacted]"

_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL
)
# A PEM private key whose END line never arrived (truncated output): hide the rest.
# What a redacted key block shows (spelled in two parts so no key marker sits in the source).
_PEM_MARK = "-----BEGIN " + "PRIVATE KEY-----"
_PEM_OPEN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?!\[redacted\]).*\Z", re.DOTALL)
_PEM_BEGIN_LINE = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END_LINE = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
# Base64 body lines of a key just before its END line (when the BEGIN line was cut off).
_PEM_BODY_TAIL = re.compile(r"(?:^[ \t]*[A-Za-z0-9+/=]{16,}[ \t]*\r?\n)*(?:^[ \t]*[A-Za-z0-9+/=]+[ \t]*\r?\n)?[ \t]*\Z",
                            re.MULTILINE)
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]+")
# kubeadm bootstrap tokens (abcdef.0123456789abcdef) grant cluster join rights.
_KUBEADM_TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):([^@\s/]+)@")
# key=value / key: value / "key": "value" where the key ends with a secret-ish word.
_SECRET_KEY = r"[A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret|token|_pass|key-data|key_data)"
_QUOTED_VALUE = re.compile(
    rf"(?i)(?P<key>\b{_SECRET_KEY})(?P<sep>[\"']?\s*[:=]\s*)(?P<q>[\"'])(?P<val>.*?)(?P=q)"
)
_BARE_VALUE = re.compile(
    rf"(?i)(?P<key>\b{_SECRET_KEY})(?P<sep>[\"']?\s*[:=]\s*)(?P<val>[^\s\"',;}}\]\[]+)"
)
# A secret passed as a command-line option's next word: kubectl --token VALUE, --password VALUE.
_OPTION_VALUE = re.compile(
    r"(?i)(?P<key>--[A-Za-z0-9-]*(?:password|passwd|passphrase|secret|token))(?P<sep>\s+)(?P<val>[^\s-][^\s\"',;]*)"
)
# Base64 of "-----BEGIN": a PEM blob embedded in YAML/JSON (kubeconfig client-key-data).
_B64_PEM = re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/=]{8,}")


def _b64_private(match: re.Match[str]) -> str:
    blob = match.group(0)
    head = blob[: (min(len(blob), 64) // 4) * 4]
    try:
        decoded = base64.b64decode(head).decode("ascii", "replace")
    except (binascii.Error, ValueError):
        return blob
    return REDACTED if "PRIVATE KEY" in decoded else blob


def _keep_placeholder(match: re.Match[str]) -> str:
    val = match.group("val")
    if val == REDACTED or val.startswith(("{{", "[redacted")) or val in ("", "null", "None"):
        return match.group(0)
    quote = match.groupdict().get("q") or ""
    return f"{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"


def _hide_orphan_end(text: str) -> str:
    """Hide the key body before an END line whose BEGIN line is missing (a cut-off tail)."""
    end = _PEM_END_LINE.search(text)
    if end is None or _PEM_BEGIN_LINE.search(text, 0, end.start()):
        return text
    head = text[: end.start()]
    body = _PEM_BODY_TAIL.search(head)
    cut = body.start() if body else len(head)
    return f"{head[:cut]}{REDACTED}{text[end.start():]}"


def redact(text: str) -> str:
    """Return ``text`` with private keys, bootstrap/bearer tokens and passwords scrubbed.

    Covers PEM private keys (any kind, also base64-encoded as in kubeconfig
    ``client-key-data``), ``Bearer ...``, kubeadm join tokens, credentials in
    URLs, ``password=...``/``token: ...``-style assignments and options such as
    ``--token VALUE``. Certificates
    (public parts) are kept. Pure function; never raises.
    """
    if not text:
        return text
    text = _hide_orphan_end(text)
    text = _PEM_BLOCK.sub(lambda m: f"-----BEGIN {m.group(1)}-----{REDACTED}-----END {m.group(1)}-----", text)
    text = _PEM_OPEN.sub(f"{_PEM_MARK}{REDACTED}", text)
    text = _B64_PEM.sub(_b64_private, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    text = _QUOTED_VALUE.sub(_keep_placeholder, text)
    text = _BARE_VALUE.sub(_keep_placeholder, text)
    text = _OPTION_VALUE.sub(_keep_placeholder, text)
    text = _KUBEADM_TOKEN.sub(REDACTED, text)
    return text


class LineRedactor:
    """Redact a stream line by line, hiding multi-line PEM private key blocks.

    ``feed(line)`` returns the line to show, or ``None`` while inside a private
    key block (the BEGIN line is replaced by one marker line).
    """

    def __init__(self) -> None:
        self._in_key = False

    def feed(self, line: str) -> str | None:
        if self._in_key:
            if _PEM_END_LINE.search(line):
                self._in_key = False
                rest = line[_PEM_END_LINE.search(line).end():]  # type: ignore[union-attr]
                return redact(rest) if rest.strip() else None
            return None
        begin = _PEM_BEGIN_LINE.search(line)
        if begin and not _PEM_END_LINE.search(line, begin.end()):
            self._in_key = True
            return redact(line[: begin.start()]) + f"{_PEM_MARK}{REDACTED}"
        return redact(line)


def redact_data(value: object) -> object:
    """Return a copy of a JSON-like structure with every string passed through :func:`redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value
