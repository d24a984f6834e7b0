"""One HTTP/1.1 exchange over a raw asyncio connection, and the failure classes it can end with.

A minimal client on purpose: the probe must control each connection attempt
(which IP, which timeout) and classify every failure, which a general HTTP
client hides.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import time
from dataclasses import dataclass

from runbooks_lib.probe.lanes import Target

MAX_RESPONSE = 1 << 20


class Failure(Exception):
    """A request ended in error class ``cls`` (see ERROR_CLASSES) with ``detail``."""

    def __init__(self, cls: str, detail: str) -> None:
        super().__init__(detail)
        self.cls = cls
        self.detail = detail


def classify_os_error(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "connect_timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        return "unreachable"
    return "other"


async def connect(ip: str, port: int, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.wait_for(asyncio.open_connection(ip, port, limit=MAX_RESPONSE), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise Failure(classify_os_error(exc), f"{ip}:{port}: {exc!r}") from None


def abort(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        try:
            writer.transport.abort()
        except Exception:  # the transport may already be gone; closing is best effort
            pass


@dataclass
class Response:
    status: int
    body: bytes
    first_byte: float
    keep_open: bool


async def exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: Target,
    keep_alive: bool,
) -> Response:
    """Send one GET and read the whole response (no timeout here)."""
    conn = "keep-alive" if keep_alive else "close"
    writer.write(
        f"GET {target.path} HTTP/1.1\r\nHost: {target.host}\r\nUser-Agent: runbooks-probe\r\n"
        f"Accept: */*\r\nConnection: {conn}\r\n\r\n".encode("latin-1")
    )
    status_line = await reader.readline()
    first_byte = time.monotonic()
    if not status_line:
        raise ConnectionResetError("connection closed before the status line")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise Failure("other", f"bad status line {status_line[:80]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    close = not keep_alive or parts[0] == b"HTTP/1.0"
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionResetError("connection closed inside the headers")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif key == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size + 2)
            del body[-2:]
        data = bytes(body)
    elif length is not None:
        data = await reader.readexactly(length)
    else:
        data = await reader.read(MAX_RESPONSE)
        close = True
    return Response(status, data, first_byte, keep_open=not close)


_TEXT_KEYS = {k: re.compile(rf"\b{k}\b[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9_.:-]+)") for k in ("node", "pod", "uuid")}


def parse_identity(body: bytes) -> dict[str, str | None]:
    """Extract ``node``, ``pod`` and ``uuid`` from the test app's answer (JSON or text)."""
    out: dict[str, str | None] = {"node": None, "pod": None, "uuid": None}
    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in out:
            if doc.get(key) is not None:
                out[key] = str(doc[key])
        return out
    for key, pattern in _TEXT_KEYS.items():
        m = pattern.search(text)
        if m:
            out[key] = m.group(1)
    return out
