"""The ``runbooks`` command (list, params, run) on tiny notebooks made here; real kernels, no network."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import nbformat
import pytest

from runbooks_lib import cli, runner
from runbooks_lib.errors import BadParameters

PARAMS = '''cluster_name: str = "unit"  # which cluster the run is for
count: int = 2  # how many items to count
data_file: Path = "data/input.txt"  # a file read by the runbook
fail: bool = False  # raise in the step cell
refuse: bool = False  # raise PreconditionFailed in the preflight cell
'''

STEP = '''# papermill_description=Count
import os
from pathlib import Path as _P
from runbooks_lib import runbook
if fail:
    raise RuntimeError("the step broke on purpose")
total = sum(range(count))
summary = runbook.write_summary("tiny", cluster_name, {"total": total, "verdict": f"counted to {total}",
                                "cwd": os.getcwd(), "data_file": str(data_file)})
print(total)
'''


def _notebook(directory: Path, stem: str = "10-tiny", *, destructive: bool = False, extra: str = "") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["runbook"] = {"description": "Count to a number (a test runbook)", "destructive": destructive}
    params_cell = nbformat.v4.new_code_cell(PARAMS)
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Tiny runbook\nCounts."),
        nbformat.v4.new_code_cell("from pathlib import Path"),
        params_cell,
        nbformat.v4.new_code_cell("from runbooks_lib import errors\nif refuse:\n"
                                  "    raise errors.PreconditionFailed('refused on purpose', fix='none')"),
        nbformat.v4.new_code_cell(STEP + extra),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository-shaped directory: notebooks/ with the tiny runbook, runs/ empty."""
    _notebook(tmp_path / "notebooks")
    monkeypatch.setenv("RUNBOOKS_NOTEBOOKS_DIR", str(tmp_path / "notebooks"))
    monkeypatch.setenv("RUNBOOKS_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


def _main(*argv: str) -> int:
    return cli.main(list(argv))


def test_list_shows_name_and_description(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _notebook(repo / "notebooks", "20-other", destructive=True)
    assert _main("list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[0] == "tiny" and "Count to a number" in out[0]
    assert out[1].startswith("other") and out[1].endswith("[destructive]")


def test_params_renders_the_parameters_cell(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main("params", "tiny") == 0
    out = capsys.readouterr().out
    assert "  count: int = 2  # how many items to count" in out
    assert '  data_file: Path = "data/input.txt"  # a file read by the runbook' in out


def test_successful_run_writes_notebook_and_summary(repo: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pfile = tmp_path / "conf" / "p.yaml"
    pfile.parent.mkdir()
    pfile.write_text("cluster_name: alpha\ndata_file: rel/input.txt\n")
    rc = _main("run", "tiny", "-f", str(pfile), "-p", "count", "5", "--no-progress", "--html", "--cell-timeout", "60")
    line = capsys.readouterr().out.strip()
    assert rc == 0, line
    assert line.startswith("OK: tiny on alpha") and "counted to 10" in line
    records = sorted((repo / "runs" / "alpha").glob("*-tiny.ipynb"))
    assert len(records) == 1
    summary = json.loads(records[0].with_name(records[0].stem + ".summary.json").read_text())
    assert summary["total"] == 10 and summary["status"] == "ok" and summary["run"]["exit_code"] == 0
    # The kernel ran in the repository root; a relative path in a file is relative to that file.
    assert summary["cwd"] == str(repo)
    assert summary["data_file"] == str(pfile.parent / "rel" / "input.txt")
    assert records[0].with_suffix(".html").exists()


def test_failing_cell_exits_1_and_keeps_the_record(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = _main("run", "tiny", "-p", "fail", "true", "--no-progress")
    line = capsys.readouterr().out.strip()
    assert rc == 1
    assert line.startswith("FAILED: tiny on unit") and "the step broke on purpose" in line
    record = next((repo / "runs" / "unit").glob("*-tiny.ipynb"))
    summary = json.loads(record.with_name(record.stem + ".summary.json").read_text())
    assert summary["status"] == "failed" and summary["run"]["error"]["ename"] == "RuntimeError"


def test_precondition_in_the_notebook_exits_2(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main("run", "tiny", "-p", "refuse", "True", "--no-progress") == 2
    assert capsys.readouterr().out.startswith("REFUSED: tiny on unit")


def test_cell_timeout_fails_the_run(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _notebook(repo / "notebooks", "30-slow", extra="import time\ntime.sleep(30)\n")
    assert _main("run", "slow", "--no-progress", "--cell-timeout", "2") == 1
    assert "FAILED: slow" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    (("-p", "cuont", "3"), "cuont: unknown parameter (did you mean 'count'?)"),
    (("-p", "count", "three"), "count: expected int, got 'three'"),
    (("-p", "api_token", "x"), "looks like a secret"),
])
def test_bad_parameters_exit_2_before_anything_runs(repo: Path, capsys: pytest.CaptureFixture[str],
                                                    argv: tuple[str, ...], expected: str) -> None:
    assert _main("run", "tiny", *argv, "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.startswith("REFUSED: tiny:") and expected in err
    assert not (repo / "runs").exists()


def test_unknown_runbook_exits_2(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main("run", "nosuch", "--no-progress") == 2
    assert "pick one of: tiny" in capsys.readouterr().err


def test_lock_refuses_a_second_destructive_run(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _notebook(repo / "notebooks", "40-wipe", destructive=True)
    lock = repo / "runs" / "unit" / ".lock"
    lock.parent.mkdir(parents=True)
    with lock.open("w") as held:
        held.write("pid 1 runbook wipe\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        assert _main("run", "wipe", "--no-progress") == 2
        assert "another destructive run holds" in capsys.readouterr().err
        assert not list(lock.parent.glob("*.ipynb"))
        # A read-only runbook does not take the lock.
        assert _main("run", "tiny", "--no-progress") == 0
    assert _main("run", "wipe", "--no-progress") == 0


def test_env_references_expand_in_parameter_files(repo: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_LAB_DIR", "/srv/lab-x")
    pfile = tmp_path / "p.yaml"
    pfile.write_text("data_file: ${UNIT_LAB_DIR:-/nowhere}/in.txt\ncluster_name: ${UNSET_UNIT_VAR:-dflt}\n")
    values, given = runner.resolve_parameters(runner.find("tiny"), [pfile])
    assert str(values.data_file) == "/srv/lab-x/in.txt" and values.cluster_name == "dflt"
    assert given == {"data_file": "/srv/lab-x/in.txt", "cluster_name": "dflt"}
    pfile.write_text("cluster_name: ${UNSET_UNIT_VAR}\n")
    with pytest.raises(BadParameters, match="UNSET_UNIT_VAR"):
        runner.resolve_parameters(runner.find("tiny"), [pfile])


def test_nested_env_defaults_expand_inside_out() -> None:
    from runbooks_lib import params

    ref = "${A_UNIT:-${B_UNIT:-/x}/inv}/hosts.yaml"
    assert params.expand_env(ref, {}) == "/x/inv/hosts.yaml"
    assert params.expand_env(ref, {"B_UNIT": "/b"}) == "/b/inv/hosts.yaml"
    assert params.expand_env(ref, {"A_UNIT": "/a"}) == "/a/hosts.yaml"
    assert params.expand_env({"k": ["${A_UNIT}"]}, {"A_UNIT": "${A_UNIT}"}) == {"k": ["${A_UNIT}"]}  # bounded


def test_diagnostics_preflight_refuses_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The real runbook: a missing inventory stops it in the preflight, before any machine is contacted."""
    monkeypatch.delenv("RUNBOOKS_NOTEBOOKS_DIR", raising=False)
    monkeypatch.setenv("RUNBOOKS_RUNS_DIR", str(tmp_path / "runs"))
    rc = _main("run", "diagnostics", "-p", "inventory", str(tmp_path / "none" / "hosts.yaml"), "-p", "cluster_name",
               "unit-x", "-p", "ssh_key", "k", "-p", "known_hosts", "h", "-p", "kubeconfig", "c",
               "--no-progress", "--cell-timeout", "60")
    out = capsys.readouterr().out
    assert rc == 2, out
    assert out.startswith("REFUSED: diagnostics on unit-x") and "PreconditionFailed" in out
    record = next((tmp_path / "runs" / "unit-x").glob("*-diagnostics.summary.json"))
    assert json.loads(record.read_text())["status"] == "refused"


def test_diagnostics_rejects_unknown_parameter_file_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RUNBOOKS_NOTEBOOKS_DIR", raising=False)
    monkeypatch.setenv("RUNBOOKS_RUNS_DIR", str(tmp_path / "runs"))
    bad = tmp_path / "bad.yaml"
    target = "cluster_name: c\ninventory: /i\nssh_key: /k\nknown_hosts: /h\nkubeconfig: /c\n"
    bad.write_text(target + "journal_lines: 5\njournal_line: 5\netcd_members: [a, b]\n"
                   "hosts: {a: 203.0.113.1, b: 203.0.113.2}\ncontrol_planes: [a]\n")
    assert _main("run", "diagnostics", "-f", str(bad), "--no-progress") == 2
    err = capsys.readouterr().err
    assert "journal_line: unknown parameter (did you mean 'journal_lines'?)" in err
    assert not (tmp_path / "runs").exists()
    bad.write_text(target + "etcd_members: [a, b]\nhosts: {a: 203.0.113.1, b: 203.0.113.2}\ncontrol_planes: [a]\n")
    assert _main("run", "diagnostics", "-f", str(bad), "--no-progress") == 2
    assert "etcd needs an odd number" in capsys.readouterr().err
    bad.write_text("journal_lines: 5\n")  # a site value missing: refused naming each, nothing run
    assert _main("run", "diagnostics", "-f", str(bad), "--no-progress") == 2
    assert "no value for cluster_name, inventory, ssh_key, known_hosts, kubeconfig" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_playbook_cell_is_never_cut_off_before_its_playbook_bound() -> None:
    """One playbook per cell: the cell timeout covers playbook_timeout_s, whatever --cell-timeout says."""
    from runbooks_lib import schemas

    install = schemas.InstallParams()
    assert install.playbook_timeout_s >= 5400  # cluster.yml takes 30-90 minutes on real VPSes
    assert runner.cell_timeout_for(install, 1800) == install.playbook_timeout_s + runner.PLAYBOOK_CELL_MARGIN_S
    assert runner.cell_timeout_for(install, 99999) == 99999
    assert runner.cell_timeout_for(schemas.DiagnosticsParams(), 300) == 300
    for name, schema in schemas.RUNBOOK_SCHEMAS.items():
        bound = getattr(schema(), "playbook_timeout_s", None)
        assert bound is None or bound >= 1800, name


def test_no_cell_runs_two_playbooks() -> None:
    """Calls that run a playbook (kubespray.run, or a notebook's playbook helper) outside a def: one per cell."""
    import ast

    def runs_in(tree: ast.AST) -> int:
        count = 0
        for node in ast.iter_child_nodes(tree):
            if isinstance(node, (ast.FunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                count += name in ("kubespray.run", "playbook", "run_playbook")
            inner = runs_in(node)
            count += 2 * inner if isinstance(node, (ast.For, ast.While)) else inner  # a loop runs it again
        return count

    for book in runner.discover():
        for cell in nbformat.read(book.path, as_version=4).cells:
            if cell.cell_type == "code":
                source = "\n".join(ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!")))
                assert runs_in(ast.parse(source)) <= 1, (book.name, cell.source[:200])
