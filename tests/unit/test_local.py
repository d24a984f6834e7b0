"""runbooks_lib.local: tiny real commands, no network."""

from __future__ import annotations

import base64
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import pytest

from runbooks_lib import errors, local
from tests.waiting import wait_until

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
    wait_until(lambda: not _alive(child), timeout=5, interval=0.05, what=f"grandchild {child} to die with its group")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


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


# ---------------------------------------------------------------- secrets never shown


def _fake_secrets() -> dict[str, str]:
    # Key markers are assembled at run time: no private key marker sits in the repository.
    begin, end = "-----BEGIN " + "RSA PRIVATE KEY-----", "-----END " + "RSA PRIVATE KEY-----"
    body = ["MIIEpAIBAAKCAQEAq" + "Z" * 47, *("Fake" + "K3y" * 20 for _ in range(20)), "QUJDRA=="]
    pem = "\n".join([begin, *body, end])
    key_data = base64.b64encode(pem.encode()).decode()
    return {"pem_line": body[5], "pem_last": body[-1], "token": "s3cr3tT0kenValue.abcdefXYZ", "key_data": key_data,
            "output": f"{pem}\nAuthorization: Bearer s3cr3tT0kenValue.abcdefXYZ\n"
                      f"users:\n- name: admin\n  user:\n    client-key-data: {key_data}\n"}


def test_a_failing_command_leaks_no_secret_into_error_traceback_log_or_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = _fake_secrets()
    out = tmp_path / "output.txt"
    out.write_text(secrets["output"])
    log = tmp_path / "run.log"
    lines: list[str] = []
    caplog.set_level(logging.DEBUG)
    with pytest.raises(errors.CommandFailed) as info:
        local.run(["sh", "-c", 'cat "$1"; cat "$1" >&2; exit 3', "show", out], timeout=10,
                  on_line=lines.append, log_path=log)
    shown = {
        "str(error)": str(info.value),
        "traceback": "".join(traceback.format_exception(info.value)),
        "log file": log.read_text(),
        "on_line": "\n".join(lines),
        "logging": caplog.text,
        "error.stderr": info.value.stderr,
    }
    assert "exit code: 3" in shown["str(error)"] and "[redacted]" in shown["str(error)"]
    for where, text in shown.items():
        for name in ("pem_line", "pem_last", "token", "key_data"):
            assert secrets[name] not in text, f"{name} shown in {where}"
            assert secrets["key_data"][:40] not in text, f"client-key-data shown in {where}"
        assert "PRIVATE KEY-----\nMII" not in text, where


def test_an_error_raised_anywhere_is_redacted_even_when_the_key_begins_outside_the_tail() -> None:
    secrets = _fake_secrets()
    exc = errors.CommandFailed("failed", stderr=secrets["output"])
    assert secrets["pem_last"] not in str(exc) and secrets["token"] not in str(exc)
    # The key's BEGIN line is cut off (a tail of the output): its body must still be hidden.
    cut = "\n".join(secrets["output"].splitlines()[10:])
    exc = errors.RunbookError("failed", stderr=cut)
    assert secrets["pem_last"] not in str(exc) and secrets["pem_line"] not in str(exc)
    assert secrets["pem_last"] not in str(errors.WaitTimedOut(f"pending: token={secrets['token']}"))


# ---------------------------------------------------------------- background processes


def test_start_runs_in_the_background_and_stop_kills_its_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    log = tmp_path / "logs" / "daemon.log"
    # A daemon that ignores SIGTERM and has a child of its own: stop must still end both, in bounded time.
    script = f"trap '' TERM; sleep 60 & echo $! > {pid_file}; echo started; echo oops >&2; wait"
    proc = local.start(["sh", "-c", script], log_path=log)
    assert proc.running and proc.poll() is None
    assert os.getpgid(proc.pid) == proc.pid  # leader of its own group
    wait_until(lambda: pid_file.exists() and "oops" in log.read_text(), timeout=5, what="the daemon to start")
    assert "started" in proc.log_tail() and "oops" in proc.log_tail()
    child = int(pid_file.read_text())
    start = time.monotonic()
    code = proc.stop(timeout=0.5)
    assert time.monotonic() - start < 10
    assert code < 0 and not proc.running
    wait_until(lambda: not _alive(child), timeout=5, interval=0.05, what=f"child {child} to die with its group")
    assert proc.stop() == code  # idempotent


def test_start_of_a_missing_program_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(errors.CommandFailed, match="install no-such-daemon"):
        local.start(["no-such-daemon"], log_path=tmp_path / "x.log")


def test_a_background_process_that_outlives_the_run_does_not_carry_its_marker(tmp_path, monkeypatch) -> None:
    """A lab machine booted by a run (a power-on in the failover drill) must not be swept with the run."""
    import time as _time

    from runbooks_lib import local as _local
    from runbooks_lib.run_lifetime import MARKER_ENV

    monkeypatch.setenv(MARKER_ENV, "run-123")
    out = {}
    for outlives in (False, True):
        log = tmp_path / f"env-{outlives}.log"
        proc = _local.start(["sh", "-c", f'echo "${{{MARKER_ENV}:-none}}"'], log_path=log, outlives_run=outlives)
        deadline = _time.monotonic() + 10
        while not log.read_text().strip() and _time.monotonic() < deadline:
            _time.sleep(0.05)
        proc.stop()
        out[outlives] = log.read_text().strip()
    assert out == {False: "run-123", True: "none"}
