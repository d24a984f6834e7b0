"""pyproject.toml and environment.yml must list the same dependencies with the same ranges."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def normalise(requirement: str) -> str:
    return requirement.replace(" ", "").lower()


def test_environment_yml_mirrors_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    from_env = {normalise(r) for r in pip_section if not r.startswith("-e")}
    from_pyproject = {normalise(r) for r in project["dependencies"]}
    assert from_env == from_pyproject, (
        f"only in environment.yml: {sorted(from_env - from_pyproject)}; "
        f"only in pyproject.toml: {sorted(from_pyproject - from_env)}")
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert normalise(python).removeprefix("python") == normalise(project["requires-python"])


def test_every_dependency_has_an_upper_bound() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    unbounded = [r for r in project["dependencies"] if "<" not in r]
    assert not unbounded, f"pin a tested range for: {unbounded}"
