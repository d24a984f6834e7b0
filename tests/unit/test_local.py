"""runbooks_lib.local: tiny real commands, no network."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from runbooks_lib import errors, local

PY = sys.executable


def test_result_of_a_successful_command() -> None:
    res = local.run(["sh", "-c", "echo out; echo err >&2"], timeout=10)
    assert res.ok and not res.failed
    assert res.exited == 0
    assert res.stdout == "out\n"
    assert res.stderr == "err\n"
    assert res.command == ("sh", "-c", "echo out; echo err >&2")
    assert res.duration >= 0
    with pytest.raises(AttributeError):
        res.exited = 1  # type: ignore[misc]  # frozen


def test_failure_raises_with_command_exit_code_and_stderr_tail() -> None:
    script = "for i in $(seq 1 40); do echo line$i >&2; done; exit 3"
    with pytest.raises(errors.CommandFailed) as info:
        local.run(["sh", "-c", script], timeout=10)
    exc = info.value
    assert exc.exit_code == 3
    assert "line40" in str(exc) and "line1\n" not in exc.stderr  # only the tail
    assert "sh -c" in str(exc)
    assert exc.result.exited == 3  # type: ignore[attr-defined]


def test_check_false_returns_the_failed_result() -> None:
    res = local.run(["sh", "-c", "echo a; echo b; exit 5"], timeout=10, check=False)
    assert res.exited == 5 and res.failed
    assert res.tail(1, stream="stdout") == "b"


def test_missing_program_says_how_to_fix() -> None:
    with pytest.raises(errors.CommandFailed) as info:
        local.run(["/nonexistent/ansible-playbook", "--version"], timeout=5)
    assert "cannot start" in str(info.value)
    assert "full path" in str(info.value)


def test_timeout_is_required_and_positive() -> None:
    with pytest.raises(errors.BadParameters):
        local.run(["true"], timeout=0)
    with pytest.raises(TypeError):
        local.run(["true"])  # type: ignore[call-arg]


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The shell starts a grandchild and waits; both must die.
    script = f"sleep 30 & echo $! > {pid_file}; wait"
    start = time.monotonic()
    with pytest.raises(errors.WaitTimedOut) as info:
        local.run(["sh", "-c", script], timeout=1)
    assert time.monotonic() - start < 10
    assert "did not finish within 1s" in str(info.value)
    assert info.value.result.timed_out  # type: ignore[attr-defined]
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"grandchild {child} survived the timeout")


def test_timeout_with_check_false_returns_timed_out_result() -> None:
    res = local.run(["sleep", "30"], timeout=0.5, check=False)
    assert res.timed_out and not res.ok
    assert res.exited < 0  # killed by a signal


def test_streaming_delivers_lines_while_running_and_logs_them(tmp_path: Path) -> None:
    seen: list[tuple[float, str]] = []
    log = tmp_path / "logs" / "run.log"
    code = "import time\nprint('first', flush=True)\ntime.sleep(1.0)\nprint('second', flush=True)\n"
    start = time.monotonic()
    res = local.run([PY, "-c", code], timeout=20, on_line=lambda line: seen.append((time.monotonic(), line)),
                    log_path=log)
    end = time.monotonic()
    lines = [line for _t, line in seen]
    assert lines == ["first", "second"]
    assert seen[0][0] - start < end - start - 0.5  # "first" arrived well before the end
    text = log.read_text()
    assert "first\nsecond\n" in text
    assert text.startswith("# ") and "exit 0 after" in text
    assert res.stdout == "first\nsecond\n"


def test_streamed_and_logged_output_is_redacted(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    seen: list[str] = []
    begin = "-----BEGIN OPENSSH " + "PRIVATE KEY-----"  # a fake key block; no key marker sits in the source
    script = (
        f"echo 'before'; echo '{begin}'; echo 'b3BlbnNzaC1rZXktdjEAAAAA';"
        " echo '-----END OPENSSH PRIVATE KEY-----'; echo 'password=hunter2'; echo after"
    )
    res = local.run(["sh", "-c", script], timeout=10, on_line=seen.append, log_path=log)
    shown = "\n".join(seen)
    for text in (shown, log.read_text()):
        assert "b3BlbnNzaC1rZXktdjEAAAAA" not in text
        assert "hunter2" not in text
        assert "before" in text and "after" in text
    assert "hunter2" in res.stdout  # the raw result is the caller's to handle


def test_callback_errors_do_not_break_the_run() -> None:
    def broken(_line: str) -> None:
        raise RuntimeError("display gone")

    res = local.run(["echo", "x"], timeout=10, on_line=broken)
    assert res.ok and res.stdout == "x\n"


def test_input_env_and_cwd(tmp_path: Path) -> None:
    res = local.run(["sh", "-c", "read v; echo $v-$RB_TEST-$(pwd)"], timeout=10, input="hello\n",
                    env={"RB_TEST": "set"}, cwd=tmp_path)
    assert res.stdout.strip() == f"hello-set-{tmp_path}"


def test_str_shows_a_copyable_command() -> None:
    res = local.run(["echo", "a b"], timeout=10)
    assert str(res).startswith("echo 'a b' -> exit 0")
