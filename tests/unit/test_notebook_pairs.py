"""Every runbook notebook and its jupytext percent-format .py pair say the same thing.

Reviewers read the .py; nbval and JupyterLab use the .ipynb with its outputs. The .ipynb is
rendered as its pair in a scratch copy and compared with the committed .py, and the .py's cells
(sources and tags) are compared with the .ipynb's. Fix drift with
``jupytext --sync notebooks/NAME.ipynb`` (or edit the stale side) and commit both.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest

from runbooks_lib import params, runner, schemas

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PAIRS = sorted(NOTEBOOKS.glob("*.ipynb"))


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_there_are_runbooks() -> None:
    assert [p.name for p in PAIRS] == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert "30-diagnostics.ipynb" in [p.name for p in PAIRS]


def _comparable(text: str) -> str:
    return re.sub(r"(?m)^#\s+jupytext_version: .*\n", "", text)


def drift(notebook: Path, script: Path, scratch: Path) -> str | None:
    """Why ``script`` is not ``notebook``'s pair (None when in sync), worked out in a scratch copy."""
    copy = scratch / notebook.name
    shutil.copy(notebook, copy)
    rendered = jupytext.writes(jupytext.read(copy), fmt="py:percent")
    if _comparable(rendered) != _comparable(script.read_text()):
        diff = difflib.unified_diff(script.read_text().splitlines(), rendered.splitlines(), lineterm="", n=1)
        return "\n".join(list(diff)[:20])
    if _cells(jupytext.read(script)) != _cells(nbformat.read(copy, as_version=4)):
        return "cell sources or tags differ"
    return None


@pytest.mark.parametrize("notebook", PAIRS, ids=lambda p: p.stem)
def test_pair_is_in_sync(notebook: Path, tmp_path: Path) -> None:
    script = notebook.with_suffix(".py")
    assert script.is_file(), f"{notebook.name} has no .py pair: jupytext --set-formats ipynb,py:percent {notebook}"
    problem = drift(notebook, script, tmp_path)
    assert problem is None, f"{script.name} is out of sync with {notebook.name} (jupytext --sync {notebook}):\n{problem}"


def test_drift_is_detected(tmp_path: Path) -> None:
    notebook = NOTEBOOKS / "30-diagnostics.ipynb"
    edited = tmp_path / "edited.py"
    edited.write_text(notebook.with_suffix(".py").read_text().replace("journal_lines: int = 20", "journal_lines: int = 21"))
    (tmp_path / "scratch").mkdir()
    assert "journal_lines: int = 21" in drift(notebook, edited, tmp_path / "scratch")


@pytest.mark.parametrize("notebook", PAIRS, ids=lambda p: p.stem)
def test_runbook_shape(notebook: Path) -> None:
    """Parameters cell matches the schema; no shell escapes, no input(); a checked summary; committed outputs."""
    book = runner.find(str(notebook))
    schema = runner.schema_of(book)
    params.check_notebook(notebook, schema)
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        lines = cell.source.splitlines()
        assert not any(line.lstrip().startswith(("!", "%%bash", "%sx", "%system")) for line in lines), cell.source
        assert "input(" not in cell.source and "getpass" not in cell.source
    checked = [c for c in code if "# NBVAL_CHECK_OUTPUT" in c.source]
    assert checked and all(c.outputs and c.execution_count for c in checked), "summary cell must be committed run"
    assert "write_summary" in checked[-1].source
    assert nb.cells[0].cell_type == "markdown" and "Blast radius" in nb.cells[0].source
    assert issubclass(schema, schemas.Target), "one parameter file serves every runbook: extend schemas.Target"


@pytest.mark.parametrize("notebook", PAIRS, ids=lambda p: p.stem)
def test_papermill_sees_every_parameter(notebook: Path) -> None:
    """papermill's typed help (and its unknown-parameter warning) parse the cell as the schema declares it."""
    from papermill.inspection import inspect_notebook

    found = inspect_notebook(str(notebook))
    schema = runner.schema_of(runner.find(str(notebook)))
    assert list(found) == [f.name for f in dataclasses.fields(schema)]
    assert all(p["help"] for p in found.values()), "every parameter line needs a '# help' comment"
