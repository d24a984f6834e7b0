"""Query parameters read the way kube-apiserver 1.30 reads them.

kube-apiserver decodes query parameters into option structs (ListOptions,
DeleteOptions, CreateOptions, PodLogOptions...) with apimachinery's string
conversions, then validates the struct. This module does the same, so every
client sees the same answers:

- Booleans (``watch``, ``allowWatchBookmarks``, ``follow``, ``pretty``...):
  absent is false; ``0`` or any case of ``false`` is false; any other value,
  even an empty one (``?watch``) or ``True`` (what the Python client 36.x
  sends), is true. This is apimachinery's ``Convert_Slice_string_To_bool``,
  not Go's ``strconv.ParseBool``: a boolean never gives 400.
- Integers (``timeoutSeconds``, ``limit``, ``gracePeriodSeconds``,
  ``tailLines``...): Go's ``strconv.ParseInt(s, 10, 64)``; anything else
  answers ``400 BadRequest`` with Go's message, as the parameter decoder does.
- Only the first value of a repeated parameter counts (Go takes ``values[0]``),
  except ``dryRun``, which is a list.
- Decoded options are validated as upstream does, and failures answer
  ``422 Invalid`` naming ``ListOptions.meta.k8s.io`` (or DeleteOptions,
  CreateOptions, UpdateOptions, PatchOptions, PodLogOptions) with one cause per
  field.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .status import ApiError

UINT64_MAX = 2**64 - 1
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
MIN_REQUEST_TIMEOUT = 1800  # kube-apiserver --min-request-timeout default (seconds)
FIELD_MANAGER_MAX_LENGTH = 128
PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")
# kube-apiserver 1.30 ships the WatchList feature gate alpha and off; /version reports 1.30 (see discovery),
# so a watch with sendInitialEvents is refused (422) and client-go falls back to list-then-watch.
WATCH_LIST_ENABLED = False


class Query(Protocol):
    """A multi-valued query (aiohttp's ``request.query``, or a plain mapping in tests)."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def __contains__(self, key: object) -> bool: ...


def _all(query: Query | Mapping[str, str], name: str) -> list[str]:
    getall = getattr(query, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    return [query[name]] if name in query else []


# -- scalar conversions ----------------------------------------------------------------------------------


def flag(query: Query, name: str) -> bool:
    """A boolean parameter (apimachinery's Convert_Slice_string_To_bool); never an error."""
    value = query.get(name)
    if value is None:
        return False
    return not (value == "0" or value.lower() == "false")


def optional_flag(query: Query, name: str) -> bool | None:
    """A ``*bool`` parameter: None when absent, else as :func:`flag`."""
    return flag(query, name) if name in query else None


def go_int(text: str, bits: int = 64) -> int:
    """Go's strconv.ParseInt(text, 10, bits); ValueError carries Go's message."""
    if not _INT_RE.match(text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    limit = 2 ** (bits - 1)
    if not -limit <= value < limit:
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return value


def integer(query: Query, name: str) -> int | None:
    """An ``*int64`` parameter: None when absent; 400 BadRequest when not an integer."""
    value = query.get(name)
    if value is None:
        return None
    try:
        return go_int(value)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from None


def resource_version(value: str | None) -> int | None:
    """A resourceVersion as etcd storage parses it: None for unset or "0", else a uint64.

    kube-apiserver 1.30 answers an unparsable resourceVersion with 500 and no
    reason (the storage layer's InvalidError is not an API status); this does the same.
    """
    if not value or value == "0":
        return None
    if re.fullmatch(r"[0-9]+", value) and int(value) <= UINT64_MAX:
        return int(value)
    why = "value out of range" if re.fullmatch(r"[0-9]+", value) else "invalid syntax"
    raise ApiError(500, "", f'resourceVersion: Invalid value: "{value}": strconv.ParseUint: parsing "{value}": {why}')


# -- field errors and 422 --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """One validation error, formatted as apimachinery's field.Error."""

    kind: str  # Go's ErrorType text: Forbidden, Required value, Invalid value, Unsupported value, Too long
    field: str
    detail: str = ""
    value: str | None = None  # already in Go's %q / %v form

    @property
    def cause(self) -> str:
        return {"Forbidden": "FieldValueForbidden", "Required value": "FieldValueRequired", "Invalid value": "FieldValueInvalid",
                "Unsupported value": "FieldValueNotSupported", "Too long": "FieldValueTooLong"}[self.kind]

    def body(self) -> str:
        text = self.kind if self.value is None else f"{self.kind}: {self.value}"
        return f"{text}: {self.detail}" if self.detail else text


def quote(value: str) -> str:
    """Go's %q for plain strings."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unsupported(fld: str, value: str, allowed: list[str]) -> FieldError:
    return FieldError("Unsupported value", fld, "supported values: " + ", ".join(quote(a) for a in allowed), value)


def invalid(kind: str, errors: list[FieldError], name: str = "", group: str = "meta.k8s.io") -> ApiError:
    """422 Invalid for an options struct, as errors.NewInvalid builds it."""
    qualified = f"{kind}.{group}" if group else kind
    body = [f"{e.field}: {e.body()}" for e in errors]
    message = f'{qualified} "{name}" is invalid: ' + (body[0] if len(body) == 1 else "[" + ", ".join(body) + "]")
    details: dict = {"kind": kind, "causes": [{"reason": e.cause, "message": e.body(), "field": e.field} for e in errors]}
    if group:
        details["group"] = group
    if name:
        details["name"] = name
    return ApiError(422, "Invalid", message, details)


# -- list and watch --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListOptions:
    """metav1.ListOptions of a GET on a collection (or a watch of one object)."""

    watch: bool
    allow_watch_bookmarks: bool
    resource_version: str
    resource_version_match: str
    timeout_seconds: int | None
    limit: int
    continue_token: str
    send_initial_events: bool | None
    label_selector: str
    field_selector: str

    def watch_timeout(self) -> float:
        """Seconds a watch lasts: timeoutSeconds, or a random 1-2x --min-request-timeout when 0 or unset."""
        if self.timeout_seconds:
            return float(self.timeout_seconds)
        return MIN_REQUEST_TIMEOUT * (1.0 + random.random())


def list_options(query: Query, force_watch: bool = False) -> ListOptions:
    """Decode (400) and validate (422) ListOptions; ``force_watch`` for the /watch/ paths."""
    limit = integer(query, "limit")
    opts = ListOptions(
        watch=force_watch or flag(query, "watch"),
        allow_watch_bookmarks=flag(query, "allowWatchBookmarks"),
        resource_version=query.get("resourceVersion") or "",
        resource_version_match=query.get("resourceVersionMatch") or "",
        timeout_seconds=integer(query, "timeoutSeconds"),
        limit=limit or 0,
        continue_token=query.get("continue") or "",
        send_initial_events=optional_flag(query, "sendInitialEvents"),
        label_selector=query.get("labelSelector") or "",
        field_selector=query.get("fieldSelector") or "",
    )
    errors = _validate_watch(opts) if opts.watch else _validate_list(opts)
    if errors:
        raise invalid("ListOptions", errors)
    return opts


def _validate_list(o: ListOptions) -> list[FieldError]:
    errors = []
    match = o.resource_version_match
    if match:
        if not o.resource_version:
            errors.append(FieldError("Forbidden", "resourceVersionMatch",
                                     "resourceVersionMatch is forbidden unless resourceVersion is provided"))
        if o.continue_token:
            errors.append(FieldError("Forbidden", "resourceVersionMatch",
                                     "resourceVersionMatch is forbidden when continue is provided"))
        if match not in ("Exact", "NotOlderThan"):
            errors.append(unsupported("resourceVersionMatch", quote(match), ["Exact", "NotOlderThan", ""]))
        if match == "Exact" and o.resource_version == "0":
            errors.append(FieldError("Forbidden", "resourceVersionMatch",
                                     'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'))
    if o.send_initial_events is not None:
        errors.append(FieldError("Forbidden", "sendInitialEvents", "sendInitialEvents is forbidden for list"))
    return errors


def _validate_watch(o: ListOptions) -> list[FieldError]:
    errors = []
    match = o.resource_version_match
    if o.send_initial_events is not None:
        if match != "NotOlderThan":
            errors.append(FieldError("Forbidden", "resourceVersionMatch",
                                     "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
        if not WATCH_LIST_ENABLED:
            errors.append(FieldError("Forbidden", "sendInitialEvents",
                                     "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"))
    if match:
        if o.send_initial_events is None:
            errors.append(FieldError("Forbidden", "resourceVersionMatch",
                                     "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"))
        if match != "NotOlderThan":
            errors.append(unsupported("resourceVersionMatch", quote(match), ["NotOlderThan"]))
        if o.continue_token:
            errors.append(FieldError("Forbidden", "resourceVersionMatch",
                                     "resourceVersionMatch is forbidden when continue is provided"))
    return errors


# -- writes ----------------------------------------------------------------------------------------------


def _go_strings(values: list[str]) -> str:
    return "[]string{" + ", ".join(quote(v) for v in values) + "}"


def _dry_run(values: list[str]) -> list[FieldError]:
    if any(v != "All" for v in values):
        return [unsupported("dryRun", _go_strings(values), ["All"])]
    return []


def _field_manager(manager: str) -> list[FieldError]:
    errors = []
    if len(manager) > FIELD_MANAGER_MAX_LENGTH:
        errors.append(FieldError("Too long", "fieldManager", f"must have at most {FIELD_MANAGER_MAX_LENGTH} bytes"))
    for i, ch in enumerate(manager):
        if not ch.isprintable():
            errors.append(FieldError("Invalid value", "fieldManager",
                                     f"invalid character U+{ord(ch):04X} (at position {i})", quote(manager)))
    return errors


@dataclass(frozen=True)
class WriteOptions:
    """CreateOptions / UpdateOptions / PatchOptions from the query."""

    dry_run: bool
    field_manager: str
    field_validation: str
    force: bool | None


def write_options(query: Query, kind: str, apply_patch: bool = False) -> WriteOptions:
    """Decode and validate the options of a POST (CreateOptions), PUT (UpdateOptions) or PATCH (PatchOptions)."""
    dry = _all(query, "dryRun")
    opts = WriteOptions(bool(dry), query.get("fieldManager") or "", query.get("fieldValidation") or "",
                        optional_flag(query, "force"))
    errors = []
    if kind == "PatchOptions":
        if not apply_patch and opts.force is not None:
            errors.append(FieldError("Forbidden", "force", "may not be specified for non-apply patch"))
        if apply_patch and not opts.field_manager:
            errors.append(FieldError("Required value", "fieldManager", "is required for apply patch"))
    errors += _field_manager(opts.field_manager)
    errors += _dry_run(dry)
    if opts.field_validation not in ("", "Ignore", "Strict", "Warn"):
        errors.append(unsupported("fieldValidation", quote(opts.field_validation), ["", "Ignore", "Strict", "Warn"]))
    if errors:
        raise invalid(kind, errors)
    return opts


def delete_options(query: Query, body: Any) -> tuple[dict, bool]:
    """DeleteOptions and whether it is a dry run.

    As kube-apiserver does, a non-empty body is the DeleteOptions and the query
    is then not read; without a body the query is decoded.
    """
    if isinstance(body, dict) and body:
        options = dict(body)
        dry = options.get("dryRun") or []
        if not isinstance(dry, list):
            raise ApiError(400, "BadRequest", "json: cannot unmarshal string into Go struct field DeleteOptions.dryRun of type []string")
    else:
        options = {}
        grace = integer(query, "gracePeriodSeconds")
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query.get("propagationPolicy")
        orphan = optional_flag(query, "orphanDependents")
        if orphan is not None:
            options["orphanDependents"] = orphan
        dry = _all(query, "dryRun")
    errors = []
    policy = options.get("propagationPolicy")
    if options.get("orphanDependents") is not None and policy is not None:
        errors.append(FieldError("Invalid value", "propagationPolicy",
                                 "orphanDependents and deletionPropagation cannot be both set", quote(str(policy))))
    if policy is not None and policy not in PROPAGATION_POLICIES:
        errors.append(unsupported("propagationPolicy", quote(str(policy)), [*PROPAGATION_POLICIES, "nil"]))
    errors += _dry_run([str(d) for d in dry])
    if errors:
        raise invalid("DeleteOptions", errors)
    return options, bool(dry)


# -- pod logs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogOptions:
    """PodLogOptions from the query."""

    container: str | None
    follow: bool
    previous: bool
    timestamps: bool
    tail_lines: int | None
    limit_bytes: int | None
    since_seconds: int | None
    since_time: str | None

    def kubelet_query(self) -> dict[str, str]:
        """The query kube-apiserver passes on to the kubelet's containerLogs endpoint."""
        out = {}
        for key, value in (("tailLines", self.tail_lines), ("limitBytes", self.limit_bytes),
                           ("sinceSeconds", self.since_seconds), ("sinceTime", self.since_time)):
            if value is not None:
                out[key] = str(value)
        for key, on in (("follow", self.follow), ("previous", self.previous), ("timestamps", self.timestamps)):
            if on:
                out[key] = "true"
        return out


def log_options(query: Query, pod: str) -> LogOptions:
    """Decode (400) and validate (422, PodLogOptions "POD" is invalid) the options of GET pods/NAME/log."""
    opts = LogOptions(query.get("container") or None, flag(query, "follow"), flag(query, "previous"),
                      flag(query, "timestamps"), integer(query, "tailLines"), integer(query, "limitBytes"),
                      integer(query, "sinceSeconds"), query.get("sinceTime") or None)
    errors = []
    if opts.tail_lines is not None and opts.tail_lines < 0:
        errors.append(FieldError("Invalid value", "tailLines", "must be greater than or equal to 0", str(opts.tail_lines)))
    if opts.limit_bytes is not None and opts.limit_bytes < 1:
        errors.append(FieldError("Invalid value", "limitBytes", "must be greater than 0", str(opts.limit_bytes)))
    if opts.since_seconds is not None and opts.since_time is not None:
        errors.append(FieldError("Forbidden", "", "at most one of `sinceTime` or `sinceSeconds` may be specified"))
    elif opts.since_seconds is not None and opts.since_seconds < 1:
        errors.append(FieldError("Invalid value", "sinceSeconds", "must be greater than 0", str(opts.since_seconds)))
    if errors:
        raise invalid("PodLogOptions", errors, name=pod, group="")
    return opts
