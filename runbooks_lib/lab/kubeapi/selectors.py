"""Label selectors (equality- and set-based) and field selectors, as kube-apiserver parses them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from runbooks_lib.errors import BadParameters


class SelectorError(BadParameters):
    """A selector string cannot be parsed or uses an unsupported field (HTTP 400)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        raise SelectorError(f"unknown operator {self.op}")


_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\)|(==|=|!=)\s*([A-Za-z0-9_.-]*))?\s*$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (x.strip() for x in parts) if p]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``app=web,tier in (a,b),!legacy``; raises SelectorError on bad syntax."""
    if not text:
        return []
    reqs = []
    for part in _split_top_level(text):
        m = _SET_RE.match(part)
        if not m:
            raise SelectorError(f"unable to parse requirement: {part!r}")
        neg, key, setop, setvals, eqop, eqval = m.groups()
        if neg:
            if setop or eqop:
                raise SelectorError(f"unable to parse requirement: {part!r}")
            reqs.append(Requirement(key, "!"))
        elif setop:
            vals = tuple(v.strip() for v in setvals.split(",") if v.strip())
            reqs.append(Requirement(key, setop, vals))
        elif eqop:
            reqs.append(Requirement(key, "!=" if eqop == "!=" else "=", (eqval,)))
        else:
            reqs.append(Requirement(key, "exists"))
    return reqs


def selector_from_label_selector(selector: Mapping | None) -> list[Requirement] | None:
    """Convert a metav1.LabelSelector (matchLabels/matchExpressions) to requirements.

    Returns None for a null selector (matches nothing, as in PDBs); an empty one matches everything.
    """
    if selector is None:
        return None
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid label selector operator")
        reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return reqs


def label_selector_string(selector: Mapping | None) -> str:
    """Render a metav1.LabelSelector as a selector string (for Scale.status.selector)."""
    parts = [f"{k}={v}" for k, v in sorted((selector or {}).get("matchLabels", {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        op, vals = expr.get("operator"), ",".join(expr.get("values") or ())
        parts.append({"In": f"{expr['key']} in ({vals})", "NotIn": f"{expr['key']} notin ({vals})",
                      "Exists": expr["key"], "DoesNotExist": f"!{expr['key']}"}.get(op, ""))
    return ",".join(p for p in parts if p)


def matches(reqs: list[Requirement] | None, labels: Mapping[str, str] | None) -> bool:
    """True if every requirement holds (None = a null selector, which matches nothing)."""
    if reqs is None:
        return False
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def parse_field_selector(text: str | None, allowed: tuple[str, ...]) -> list[Requirement]:
    """Parse ``spec.nodeName=n1,status.phase!=Failed`` and reject fields the resource does not support."""
    if not text:
        return []
    reqs = []
    for part in _split_top_level(text):
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if field not in allowed:
            # kubectl prefixes this with 'Unable to find "/v1, Resource=pods" that match ...'.
            raise SelectorError(f"field label not supported: {field}")
        reqs.append(Requirement(field, "!=" if op == "!=" else "=", (value,)))
    return reqs


# Boolean fields the real server reports as "false" when unset.
_FIELD_DEFAULTS = {"spec.unschedulable": "false", "spec.hostNetwork": "false"}


def field_value(obj: Mapping, path: str) -> str:
    """Value of a dotted field path as a string ("" when absent; booleans as true/false)."""
    cur: object = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return _FIELD_DEFAULTS.get(path, "")
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def field_matcher(reqs: list[Requirement]) -> Callable[[Mapping], bool]:
    """Return a predicate applying field requirements to an object."""

    def match(obj: Mapping) -> bool:
        values = {r.key: field_value(obj, r.key) for r in reqs}
        return all(r.matches(values) for r in reqs)

    return match
