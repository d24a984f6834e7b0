"""Redaction of secrets from text shown to people: errors, logs, summaries.

Hides private keys (PEM, PGP, PuTTY; also base64-encoded, alone, wrapped over
lines or inside a base64 kubeconfig or cert+key bundle), JWTs, bearer, basic and
kubeadm tokens, vendor tokens (GitHub, Slack, AWS...), cookies, credentials in
URLs, ``password=``/``token:``-style values and password options of common
commands. Certificates, public keys, digests and fingerprints are kept.
Pure functions, linear-time patterns. Imports nothing from runbooks_lib, so
errors.py can use it.
"""

from __future__ import annotations

import base64
import re
import string
from collections.abc import Mapping

REDACTED = "[redacted]"

# ------------------------------------------------------------------ key blocks

# PEM and PGP armoured private keys: "RSA PRIVATE KEY", "PRIVATE KEY", "PGP PRIVATE KEY BLOCK"...
_KEY_LABEL = r"[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?"
_PEM_BLOCK = re.compile(rf"-----BEGIN ({_KEY_LABEL})-----.*?-----END \1-----", re.DOTALL)
# What a redacted key block shows (spelled in two parts so no key marker sits in the source).
_PEM_MARK = "-----BEGIN " + "PRIVATE KEY-----"
# A private key whose END line never arrived (truncated output): hide the rest.
_PEM_OPEN = re.compile(rf"-----BEGIN {_KEY_LABEL}-----(?!\[redacted\]).*\Z", re.DOTALL)
_PEM_BEGIN_LINE = re.compile(rf"-----BEGIN {_KEY_LABEL}-----")
_PEM_END_LINE = re.compile(rf"-----END {_KEY_LABEL}-----")
# Base64 body lines of a key just before its END line (when the BEGIN line was cut off).
_PEM_BODY_TAIL = re.compile(r"(?:^[ \t]*[A-Za-z0-9+/=]{16,}[ \t]*\r?\n)*(?:^[ \t]*[A-Za-z0-9+/=]+[ \t]*\r?\n)?[ \t]*\Z",
                            re.MULTILINE)
# PuTTY .ppk files: the base64 lines after "Private-Lines: N" are the private key
# (its "Private-MAC:" is hidden by the key=value rule below).
_PUTTY_PRIVATE = re.compile(r"^([ \t]*Private-Lines:[ \t]*\d+[ \t]*\r?$)(?:\n[ \t]*[A-Za-z0-9+/=]+[ \t]*\r?$)+",
                            re.MULTILINE)
_PUTTY_PRIVATE_LINE = re.compile(r"[ \t]*Private-Lines:[ \t]*\d+[ \t]*\r?")

# ------------------------------------------------------------------ base64 blobs

# A base64 run long enough to be worth decoding (shorter ones cannot hold a key).
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
# A line that is nothing but base64 (one line of a blob wrapped at 64 or 76 columns).
_B64_LINE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# Consecutive lines of nothing but base64, the first long: one or more wrapped blobs.
_B64_LINES = re.compile(r"^[ \t]*[A-Za-z0-9+/]{40,}={0,2}[ \t]*\r?$(?:\n[ \t]*[A-Za-z0-9+/]+={0,2}[ \t]*\r?$)+",
                        re.MULTILINE)
# Decoded text holding one of these (lower-cased) is a secret: a key, a kubeconfig with
# client-key-data or a token, a docker config or Secret with a password.
_MARKERS = ("private key", "client-key-data", "token:", '"token"', "password")
_MARKER_LEN = max(map(len, _MARKERS))


def _decoded(chunk: str) -> str:
    """``chunk`` (base64 alphabet only, no padding) decoded as lower-case latin-1, its ragged tail dropped."""
    return base64.b64decode(chunk[: len(chunk) // 4 * 4]).decode("latin-1").lower()


def _b64_secret(run: str) -> bool:
    """True if the base64 ``run`` decodes to a secret, trying all four alignments (a glued prefix).

    Hex (sha256 digests, commit ids) is skipped: the base64 of text is never all hex digits.
    """
    body = run.rstrip("=")
    if not body.strip(string.hexdigits):
        return False
    return any(marker in _decoded(body[start:]) for start in range(4) for marker in _MARKERS)


def _hide_run(match: re.Match[str]) -> str:
    return REDACTED if _b64_secret(match.group(0)) else match.group(0)


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


class _Blob:
    """Base64 wrapped over lines (all as long as the first, the last maybe shorter), decoded line by line.

    ``secret`` turns true once the decoded text so far holds a marker; ``hidden``
    records that the one marker line standing for it was shown.
    """

    def __init__(self, secret: bool = False) -> None:
        self.width: int | None = None
        self.last = 0
        self.open = True  # no padding seen yet
        self.carry = ""  # undecoded tail (under 4 characters)
        self.recent = ""  # last decoded characters, for a marker split over two lines
        self.secret = secret
        self.hidden = False

    def continues(self, bare: str) -> bool:
        if not self.open or _B64_LINE.fullmatch(bare) is None:
            return False
        return self.width is None or (self.last == self.width and len(bare) <= self.width)

    def add(self, bare: str) -> None:
        if self.width is None:
            self.width = len(bare)
        self.last, self.open = len(bare), not bare.endswith("=")
        data = self.carry + bare.rstrip("=")
        cut = len(data) // 4 * 4
        self.carry = data[cut:]
        text = self.recent + _decoded(data[:cut])
        self.secret = self.secret or any(marker in text for marker in _MARKERS)
        self.recent = text[-_MARKER_LEN:]


def _hide_wrapped(match: re.Match[str]) -> str:
    """In lines of nothing but base64, hide each wrapped blob holding a secret (all its lines)."""
    lines = match.group(0).split("\n")
    bare = [line.strip() for line in lines]
    out: list[str] = []
    i = 0
    while i < len(lines):
        blob, end = _Blob(), i + 1
        blob.add(bare[i])
        while end < len(lines) and blob.continues(bare[end]):
            blob.add(bare[end])
            end += 1
        # A line found secret on its own (misaligned blob) also makes the whole blob one, as in LineRedactor.
        if end - i > 1 and (blob.secret or any(len(b) >= 40 and _b64_secret(b) for b in bare[i:end])):
            out.append(_indent(lines[i]) + REDACTED)
        else:
            out.extend(lines[i:end])
        i = end
    return "\n".join(out)


def _hide_b64(text: str) -> str:
    """Hide base64 that decodes to a secret: a blob wrapped over lines whole, else each run."""
    if not _B64_RUN.search(text):
        return text
    return _B64_RUN.sub(_hide_run, _B64_LINES.sub(_hide_wrapped, text))


# ------------------------------------------------------------------ values in text

# A key whose value is a secret ends with one of these words: key=value, key: value,
# "key": "value" (whatever precedes the word is kept). token_file, secret_path, kube_token_dir
# (keys ending in _file/_path/_dir) do not, so their values stay.
_SECRET_KEY = (
    r"(?:password|passwd|passphrase|secret|token|_pass|key-data|key_data"
    r"|(?:api|access|secret|private)[-_]?key|certificate[-_ ]?key|private-mac|dockerconfigjson)"
)
_SECRET_KEY_START = "(?=[pstk_acd])"  # the words' first letters: lets the search skip other positions fast
_VENDOR_TOKENS = "|".join([
    r"gh[pousr]_[A-Za-z0-9]{20,}",  # GitHub personal, OAuth, server, user, refresh tokens
    r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained personal access token
    r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack bot, user, app tokens
    r"glpat-[A-Za-z0-9_-]{20,}",  # GitLab personal access token
    r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe secret and restricted keys
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",  # OpenAI and Anthropic API keys
    r"AIza[A-Za-z0-9_-]{35}",  # Google API key
    r"npm_[A-Za-z0-9]{36}",  # npm access token
    r"pypi-[A-Za-z0-9_-]{40,}",  # PyPI upload token
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face token
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",  # AWS access key id (long-lived, temporary)
])
_CMD_REST = r"[^\n;&|]{0,300}?"  # more of the same shell command, shortest first (bounded: stays linear)
# kubeadm prints "[upload-certs] Using certificate key:" and the hex key on the next line
# (redact() sees both lines at once; LineRedactor remembers the label).
_CERT_KEY_LABEL = re.compile(r"(?i)certificate[-_ ]?key[\"']?[ \t]*:[ \t]*$")
_HEX_KEY = re.compile(r"[0-9A-Fa-f]{16,}")

# Each rule's group "val" is the secret and is replaced; the rest of the match stays. Most rules
# start with a literal ("eyJ", "://", "--", "mysql"...), which the regex engine finds fast.
_RULES = [
    # A JWT (ServiceAccount token, OIDC id token): base64url JSON header "eyJ...", payload, signature.
    re.compile(r"(?P<val>eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"),
    # Tokens recognisable by their vendor prefix.
    re.compile(rf"\b(?P<val>{_VENDOR_TOKENS})(?![A-Za-z0-9])"),
    # HTTP bearer tokens, anywhere.
    re.compile(r"(?i)bearer\s+(?P<val>[A-Za-z0-9._~+/=-]+)"),
    # Authorization and Proxy-Authorization headers, any scheme: Basic user:password, token, Digest...
    re.compile(r"(?i)authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
               r"(?:(?:basic|bearer|token|digest|negotiate)[ \t]+)?(?P<val>[^\s\"',]+)"),
    # Cookie and Set-Cookie headers: session ids, all of the value.
    re.compile(r"(?i)cookie[\"']?[ \t]*:[ \t]*[\"']?(?P<val>[^\r\n\"']+)"),
    # A password in a URL (scheme://user:password@host), which may itself hold '@': up to the last '@'.
    re.compile(r"://[^/\s:@]*:(?P<val>[^\s/?#]+)@"),
    # key: "value" (quoted, may hold spaces).
    re.compile(rf"(?i){_SECRET_KEY_START}{_SECRET_KEY}[\"']?\s*[:=]\s*(?P<q>[\"'])(?P<val>.*?)(?P=q)"),
    # key=value, key: value (also "Using certificate key:" with kubeadm's key on the next line).
    re.compile(rf"(?i){_SECRET_KEY_START}{_SECRET_KEY}[\"']?\s*[:=]\s*(?P<val>[^\s\"',;}}\]\[]+)"),
    # A secret option's next word: --token VALUE, --password VALUE, kubeadm --certificate-key VALUE
    # ("--" starting a word: the look-behind keeps a line of dashes linear).
    re.compile(r"(?i)--(?<![A-Za-z0-9-]--)[A-Za-z0-9-]{0,60}(?:password|passwd|passphrase|secret|token"
               r"|certificate-key|api-?key|access-key|secret-key)\s+(?P<val>[^\s-][^\s\"',;]*)"),
    # mysql -pPASS (glued; "mysql -p" alone prompts, "-P 3306" is the port).
    re.compile(rf"mysql(?:dump|admin|import|sh)?\b{_CMD_REST}[ \t]-p(?P<val>[^\s;&|]+)"),
    # sshpass -p PASS, given before the command it runs (whose own -p is a port).
    re.compile(r"sshpass(?:[ \t]+-[^p\s]\S*)*[ \t]+-p[ \t]*(?P<val>[^\s;&|]+)"),
    # Registry logins: docker/podman/helm registry... login -p PASS (--password is an option above).
    re.compile(rf"\b(?:docker|podman|nerdctl|buildah|skopeo|oras|crane|oc|helm registry)[ \t]+login\b"
               rf"{_CMD_REST}[ \t]-p[ \t]*(?P<val>[^\s;&|]+)"),
    # etcdctl --user root:PASS (not docker's --user 1000:1000, a uid:gid).
    re.compile(r"--user[= \t]+(?!\d+:\d+\b)[^\s:'\"]+:(?P<val>[^\s'\"]+)"),
    # curl -u user:PASS.
    re.compile(rf"curl\b{_CMD_REST}[ \t]-u[ \t]*[^\s:'\"]+:(?P<val>[^\s'\"]+)"),
    # kubeadm bootstrap tokens (abcdef.0123456789abcdef) grant cluster join rights.
    re.compile(r"\b(?P<val>[a-z0-9]{6}\.[a-z0-9]{16})\b"),
]


def _hide_value(match: re.Match[str]) -> str:
    """The match with its ``val`` group replaced, unless a placeholder ({{ var }}, null, a boolean, [redacted])."""
    val = match.group("val")
    if val.startswith(("{{", "[redacted")) or val in ("", "null", "None", "true", "false"):
        return match.group(0)
    whole, base = match.group(0), match.start()
    return whole[: match.start("val") - base] + REDACTED + whole[match.end("val") - base:]


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
    """Return ``text`` with private keys, tokens, passwords and other credentials scrubbed.

    Each secret becomes ``[redacted]``; the words around it (the key, the
    command, the header name) stay. Pure function; never raises.
    """
    if not text:
        return text
    text = _hide_orphan_end(text)
    text = _PEM_BLOCK.sub(lambda m: f"-----BEGIN {m.group(1)}-----{REDACTED}-----END {m.group(1)}-----", text)
    text = _PEM_OPEN.sub(f"{_PEM_MARK}{REDACTED}", text)
    text = _PUTTY_PRIVATE.sub(lambda m: f"{m.group(1)}\n{REDACTED}", text)
    text = _hide_b64(text)
    for rule in _RULES:
        text = rule.sub(_hide_value, text)
    return text


class LineRedactor:
    """Redact a stream line by line, also hiding secrets that span lines.

    ``feed(line)`` returns the line to show, or ``None`` for a hidden line: the
    body of a PEM/PGP private key, of a PuTTY key's private lines or of a
    wrapped base64 blob once it is known to be a secret (one ``[redacted]``
    line stands for each), and kubeadm's certificate key on the line after
    "Using certificate key:".
    """

    def __init__(self) -> None:
        self._in_key = False  # inside a PEM/PGP private key block
        self._blob: _Blob | None = None  # the base64 blob the coming lines may continue
        self._value_next = False  # the previous line was "...certificate key:" with no value

    def feed(self, line: str) -> str | None:
        if self._in_key:
            end = _PEM_END_LINE.search(line)
            if end is None:
                return None
            self._in_key = False
            rest = line[end.end():]
            return redact(rest) if rest.strip() else None
        bare = line.strip()
        blob, self._blob = self._blob, None
        if blob is not None and blob.continues(bare):
            self._blob = blob
            return self._blob_line(blob, line, bare)
        value_next, self._value_next = self._value_next, False
        if value_next and _HEX_KEY.fullmatch(bare):
            return _indent(line) + REDACTED
        begin = _PEM_BEGIN_LINE.search(line)
        if begin and not _PEM_END_LINE.search(line, begin.end()):
            self._in_key = True
            return redact(line[: begin.start()]) + f"{_PEM_MARK}{REDACTED}"
        if _PUTTY_PRIVATE_LINE.fullmatch(line):
            self._blob = _Blob(secret=True)
            return line
        if len(bare) >= 40 and _B64_LINE.fullmatch(bare):
            self._blob = _Blob()
            return self._blob_line(self._blob, line, bare)
        self._value_next = _CERT_KEY_LABEL.search(line) is not None
        return redact(line)

    @staticmethod
    def _blob_line(blob: _Blob, line: str, bare: str) -> str | None:
        blob.add(bare)
        shown = redact(line) if not blob.secret else line
        if shown != line:  # a secret found in this line alone: the blob is one from here on
            blob.secret = True
        if not blob.secret:
            return shown
        if blob.hidden:
            return None
        blob.hidden = True
        return _indent(line) + REDACTED


def redact_data(value: object) -> object:
    """Return a copy of a JSON-like structure with every string passed through :func:`redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value
