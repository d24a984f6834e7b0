"""Runbook parameters: typed, validated before anything runs.

Each runbook declares its parameters as a frozen dataclass (type hints and
literal defaults). :func:`load` merges YAML files (in order, top-level keys, as
papermill's ``-f`` does) and then explicit values (papermill's ``-p``), and
rejects unknown keys, wrong types and values outside a Literal or Enum, naming
the key, the expected type and the allowed values. :func:`check_notebook`
keeps a notebook's ``parameters`` cell and its schema from drifting apart.

Secrets are never parameters (papermill stores parameters in the output
notebook): keys named like a password, token or secret are refused; pass the
path of a file holding it instead.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from runbooks_lib import errors

T = TypeVar("T")

# Injected by papermill itself (--inject-paths); not runbook parameters.
PAPERMILL_KEYS = frozenset({"PAPERMILL_INPUT_PATH", "PAPERMILL_OUTPUT_PATH"})
_SECRET_WORDS = re.compile(r"(?i)password|passwd|passphrase|token|secret")
_PATH_SUFFIXES = ("_file", "_path", "_dir")


def secret_like(name: str) -> bool:
    """True for names such as ``ssh_password`` or ``api_token`` (but not ``token_file``)."""
    return bool(_SECRET_WORDS.search(name)) and not name.lower().endswith(_PATH_SUFFIXES)


class _Invalid(Exception):
    """One type mismatch inside a value (collected into BadParameters)."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"{tp.__name__} (one of {', '.join(repr(m.value) for m in tp)})"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else _type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, base_dir: Path | None, where: str) -> Any:
    """Check ``value`` against ``tp``; convert only where it is lossless (str -> Path, list -> tuple)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Invalid(f"{where}: expected None, got {value!r}")
    if origin in (Union, types.UnionType):
        # Try None first so "x: Path | None = None" keeps None.
        for option in sorted(args, key=lambda a: a is not type(None)):
            try:
                return _coerce(value, option, base_dir, where)
            except _Invalid:
                continue
        raise _Invalid(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if value in args and any(type(value) is type(a) for a in args if a == value):
            return value
        raise _Invalid(f"{where}: {value!r} is not allowed; allowed values: {', '.join(repr(a) for a in args)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if value == member.value or value == member.name:
                return member
        raise _Invalid(f"{where}: {value!r} is not allowed; allowed values: "
                       f"{', '.join(repr(m.value) for m in tp)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Invalid(f"{where}: expected bool (True/False), got {value!r} ({type(value).__name__})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Invalid(f"{where}: expected int, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Invalid(f"{where}: expected float, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Invalid(f"{where}: expected str, got {value!r} ({type(value).__name__}); quote it in YAML")
    if tp is Path or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
        if value == "":
            return Path()  # not given: a schema's REQUIRED check names it, an optional path stays unset
        if isinstance(value, (str, os.PathLike)) and str(value):
            path = Path(value).expanduser()
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            return path
        raise _Invalid(f"{where}: expected a path (str), got {value!r}")
    if origin in (list, Sequence, typing.Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"{where}: expected a list, got {value!r} ({type(value).__name__})")
        item = args[0] if args else Any
        return [_coerce(v, item, base_dir, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"{where}: expected a list, got {value!r} ({type(value).__name__})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], base_dir, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise _Invalid(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, base_dir, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _Invalid(f"{where}: expected a mapping, got {value!r} ({type(value).__name__})")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, base_dir, f"{where} key"): _coerce(v, vt, base_dir, f"{where}[{k!r}]")
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Invalid(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        problems = _check_keys(tp, value, prefix=f"{where}.")
        if problems:
            raise _Invalid("; ".join(problems))
        return _build(tp, value, base_dir, prefix=f"{where}.")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Invalid(f"{where}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    raise _Invalid(f"{where}: unsupported parameter type {tp!r}")


def _fields(schema: type) -> dict[str, Any]:
    if not (dataclasses.is_dataclass(schema) and isinstance(schema, type)):
        raise TypeError(f"{schema!r} is not a dataclass")
    hints = get_type_hints(schema, include_extras=False)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema) if f.init}


def _check_keys(schema: type, values: Mapping[str, Any], prefix: str = "") -> list[str]:
    known = _fields(schema)
    problems = []
    for key in values:
        if key in PAPERMILL_KEYS:
            continue
        if not isinstance(key, str):
            problems.append(f"{prefix}{key!r}: parameter names must be strings")
        elif secret_like(key):
            problems.append(f"{prefix}{key} looks like a secret; parameters are stored in the output notebook. "
                            f"Put the secret in a file only you can read and pass its path as {key}_file")
        elif key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{prefix}{key}: unknown parameter{hint}; known: {', '.join(known)}")
    return problems


def _build(schema: type[T], values: Mapping[str, Any], base_dir: Path | None, prefix: str = "") -> T:
    known = _fields(schema)
    kwargs: dict[str, Any] = {}
    problems: list[str] = []
    missing = []
    for f in dataclasses.fields(schema):  # type: ignore[arg-type]
        if not f.init:
            continue
        if f.name in values:
            raw = values[f.name]
        elif f.default is not dataclasses.MISSING:
            raw = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            raw = f.default_factory()  # type: ignore[misc]
        else:
            missing.append(f.name)
            continue
        try:
            kwargs[f.name] = _coerce(raw, known[f.name], base_dir, f"{prefix}{f.name}")
        except _Invalid as exc:
            problems.append(str(exc))
    problems += [f"{prefix}{name}: required, expected {_type_name(known[name])}" for name in missing]
    if problems:
        raise _Invalid("\n".join(problems))
    return schema(**kwargs)


def validate(schema: type[T], values: Mapping[str, Any], *, base_dir: str | Path | None = None) -> T:
    """Build ``schema`` from ``values``; every problem is reported at once.

    Relative paths are taken relative to ``base_dir``. Raises BadParameters
    naming each bad key, its expected type and the allowed values. Pure.
    """
    for name in _fields(schema):
        if secret_like(name):
            raise errors.BadParameters(f"{schema.__name__}.{name} looks like a secret parameter",
                                       fix=f"declare {name}_file: Path and read the secret from that file")
    base = Path(base_dir).expanduser() if base_dir is not None else None
    problems = _check_keys(schema, values)
    if not problems:
        try:
            return _build(schema, values, base)
        except _Invalid as exc:
            problems = str(exc).splitlines()
    else:
        try:
            _build(schema, {k: v for k, v in values.items() if k in _fields(schema)}, base)
        except _Invalid as exc:
            problems += str(exc).splitlines()
    raise errors.BadParameters(
        f"invalid parameters for {schema.__name__}:\n" + "\n".join(f"  - {p}" for p in problems),
        fix="correct the listed parameters (papermill -p/-f, or the parameters cell) and run again; "
            "nothing was run",
    )


def read_files(files: Sequence[str | Path]) -> dict[str, Any]:
    """Merge YAML parameter files in order (later files win, top-level keys). Raises BadParameters."""
    merged: dict[str, Any] = {}
    for name in files:
        path = Path(name).expanduser()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise errors.BadParameters(f"parameter file {path} does not exist",
                                       fix="check the -f path (relative to where you run the command)") from None
        except yaml.YAMLError as exc:
            raise errors.BadParameters(f"parameter file {path} is not valid YAML: {exc}",
                                       fix="fix the YAML syntax") from None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise errors.BadParameters(f"parameter file {path} must be a mapping of name: value",
                                       fix="write one 'name: value' per line")
        merged.update(data)
    return merged


def load(
    schema: type[T],
    *,
    files: Sequence[str | Path] = (),
    values: Mapping[str, Any] | None = None,
    base_dir: str | Path | None = None,
) -> T:
    """Parameter files merged in order, then ``values`` (papermill's dict / -p), validated.

    Raises BadParameters before anything runs. Pure apart from reading the files.
    """
    merged = read_files(files)
    merged.update(values or {})
    return validate(schema, merged, base_dir=base_dir)


def from_namespace(schema: type[T], namespace: Mapping[str, Any], *, base_dir: str | Path | None = None) -> T:
    """Validate the schema's fields as found in a notebook's namespace (``globals()``).

    Fields missing from the namespace take the schema default. Unknown keys
    cannot be seen here: check files and ``-p`` values with :func:`load` and
    the notebook with :func:`check_notebook`.
    """
    return validate(schema, {k: namespace[k] for k in _fields(schema) if k in namespace}, base_dir=base_dir)


# --------------------------------------------------------------------------- notebooks


def notebook_parameters(notebook: str | Path) -> dict[str, Any]:
    """``{name: default}`` from the cell tagged ``parameters``. Raises BadParameters."""
    import nbformat  # imported late: only needed when a notebook is inspected

    path = Path(notebook)
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise errors.BadParameters(f"{path} has {len(cells)} cells tagged 'parameters'",
                                   fix="tag exactly one code cell 'parameters' (View > Cell Toolbar > Tags)")
    source = cells[0].source
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise errors.BadParameters(f"{path}: the parameters cell is not valid Python: {exc}",
                                   fix="fix the parameters cell") from None
    found: dict[str, Any] = {}
    problems = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        else:
            problems.append(f"line {node.lineno}: only 'name: type = literal' lines belong in the parameters cell")
            continue
        try:
            found[name] = ast.literal_eval(value) if value is not None else None
        except ValueError:
            problems.append(f"{name} (line {node.lineno}): the default must be a literal; derive values in the "
                            "next cell (papermill does not recompute derived defaults)")
    if problems:
        raise errors.BadParameters(f"{path}: bad parameters cell:\n" + "\n".join(f"  - {p}" for p in problems),
                                   fix="write one 'name: type = literal  # help' per line")
    return found


def check_notebook(notebook: str | Path, schema: type, *, base_dir: str | Path | None = None) -> dict[str, Any]:
    """Check that the notebook's parameters cell and ``schema`` declare the same parameters.

    Every parameter in the cell must be in the schema, every schema field in
    the cell, and each default must have the declared type. Returns the
    cell's defaults. Raises BadParameters listing every mismatch.
    """
    cell = notebook_parameters(notebook)
    fields = _fields(schema)
    problems = [f"{k}: in the parameters cell but not in {schema.__name__}" for k in cell if k not in fields]
    problems += [f"{k}: in {schema.__name__} but missing from the parameters cell" for k in fields if k not in cell]
    problems += [f"{k} looks like a secret; pass a path ({k}_file) instead" for k in cell if secret_like(k)]
    defaults = {f.name: f.default for f in dataclasses.fields(schema) if f.default is not dataclasses.MISSING}
    base = Path(base_dir) if base_dir else None
    for key in cell:
        if key not in fields:
            continue
        try:
            value = _coerce(cell[key], fields[key], base, key)
        except _Invalid as exc:
            problems.append(f"default of {exc}")
            continue
        if key in defaults:
            try:
                expected = _coerce(defaults[key], fields[key], base, key)
            except _Invalid:
                continue
            if value != expected:
                problems.append(f"{key}: default {cell[key]!r} in the notebook, {defaults[key]!r} in {schema.__name__}")
    if problems:
        raise errors.BadParameters(
            f"{notebook} and {schema.__name__} disagree:\n" + "\n".join(f"  - {p}" for p in problems),
            fix=f"make the parameters cell and {schema.__name__} declare the same names, types and defaults",
        )
    return cell


# --------------------------------------------------------------------------- environment references

# The innermost reference: its default holds no further ${...} (nested defaults expand inside out).
_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^${}]*))?\}")


def expand_env(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in strings (also inside lists and mappings).

    Lets one parameter file point at whichever lab is in use, e.g.
    ``${RUNBOOKS_LAB_DIR:-/var/lib/runbooks-lab}/inventory/hosts.yaml``. Defaults
    may nest (``${A:-${B:-/x}/y}``). An unset variable without a default raises
    BadParameters. Pure.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name, default = match.group("name"), match.group("default")
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise errors.BadParameters(f"{value!r} refers to the environment variable {name}, which is not set",
                                       fix=f"export {name}, or write ${{{name}:-DEFAULT}} in the parameter")
        text = value
        for _ in range(16):  # bounded: a variable whose value holds ${...} cannot loop forever
            expanded = _ENV_REF.sub(replace, text)
            if expanded == text:
                break
            text = expanded
        return text
    if isinstance(value, Mapping):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(expand_env(v, env) for v in value)
    return value
