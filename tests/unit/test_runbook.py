"""runbooks_lib.runbook: confirmation gate, bounded wait, steps, summary, redaction."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from IPython.core.error import StdinNotImplementedError

from runbooks_lib import cluster_lock, errors, runbook

# --------------------------------------------------------------------------- confirm


def _no_ask(_prompt: str) -> str:
    raise AssertionError("must not ask")


def test_dry_run_says_what_would_be_done_and_returns_false() -> None:
    said: list[str] = []
    ok = runbook.confirm("remove worker node4", cluster="prod", dry_run=True, confirm="prod",
                         plan=["remove-node.yml -e node=node4"], ask=_no_ask, say=said.append)
    assert ok is False
    assert "DRY RUN" in said[0] and "remove-node.yml -e node=node4" in said[0]
    assert "confirm='prod'" in said[0]


def test_headless_confirm_parameter_must_equal_cluster_name() -> None:
    assert runbook.confirm("x", cluster="prod", dry_run=False, confirm="prod", ask=_no_ask, say=lambda _: None)
    with pytest.raises(errors.PreconditionFailed) as info:
        runbook.confirm("x", cluster="prod", dry_run=False, confirm="lab", ask=_no_ask, say=lambda _: None)
    assert "does not match" in str(info.value) and "-p confirm prod" in str(info.value)


def test_interactive_answer_is_checked() -> None:
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return " prod \n"

    assert runbook.confirm("replace node1", cluster="prod", dry_run=False, ask=ask, say=lambda _: None)
    assert "prod" in prompts[0]
    with pytest.raises(errors.PreconditionFailed, match="typed 'lab', expected 'prod'"):
        runbook.confirm("replace node1", cluster="prod", dry_run=False, ask=lambda _: "lab", say=lambda _: None)


@pytest.mark.parametrize("exc", [StdinNotImplementedError("no stdin"), EOFError()])
def test_no_stdin_falls_back_to_headless_rule(exc: BaseException) -> None:
    def ask(_prompt: str) -> str:
        raise exc

    with pytest.raises(errors.PreconditionFailed) as info:
        runbook.confirm("reset", cluster="lab", dry_run=False, ask=ask, say=lambda _: None)
    assert "confirm parameter is empty" in str(info.value)
    assert "confirm='lab'" in str(info.value)


def test_other_errors_from_input_propagate() -> None:
    def ask(_prompt: str) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runbook.confirm("reset", cluster="lab", dry_run=False, ask=ask, say=lambda _: None)


# --------------------------------------------------------------------------- wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_for_returns_when_done() -> None:
    clock = FakeClock()
    answers = iter([(False, ["node2", "node3"]), (False, ["node3"]), (True, "all Ready")])
    waited = runbook.wait_for(lambda: next(answers), timeout=60, interval=5, what="nodes Ready",
                              clock=clock, sleep=clock.sleep)
    assert waited.attempts == 3 and waited.elapsed == 10 and waited.detail == "all Ready"


def test_wait_for_timeout_lists_what_is_pending() -> None:
    clock = FakeClock()
    with pytest.raises(errors.WaitTimedOut) as info:
        runbook.wait_for(lambda: (False, ["node2", "node3"]), timeout=30, interval=10, what="nodes Ready",
                         clock=clock, sleep=clock.sleep)
    message = str(info.value)
    assert "nodes Ready" in message and "still pending: node2, node3" in message
    assert "30s" in message
    assert clock.now == 30  # never slept past the deadline


def test_wait_for_accepts_plain_bool_and_retries_listed_exceptions() -> None:
    clock = FakeClock()
    calls = {"n": 0}

    def check() -> bool:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("connection refused")
        return True

    waited = runbook.wait_for(check, timeout=10, interval=1, what="API", retry_on=(ConnectionError,),
                              clock=clock, sleep=clock.sleep)
    assert waited.attempts == 3
    with pytest.raises(errors.WaitTimedOut, match="ConnectionError: connection refused"):
        runbook.wait_for(lambda: (_ for _ in ()).throw(ConnectionError("connection refused")), timeout=2,
                         interval=1, what="API", retry_on=(ConnectionError,), clock=clock, sleep=clock.sleep)
    with pytest.raises(ValueError):
        runbook.wait_for(lambda: (_ for _ in ()).throw(ValueError("bug")), timeout=2, interval=1, what="API",
                         retry_on=(ConnectionError,), clock=clock, sleep=clock.sleep)


def test_wait_for_rejects_unbounded_waits() -> None:
    with pytest.raises(errors.BadParameters):
        runbook.wait_for(lambda: True, timeout=0, interval=1, what="x")


# --------------------------------------------------------------------------- steps and summary


def test_steps_record_ok_failed_and_skipped() -> None:
    steps = runbook.Steps()
    with steps.step("preflight") as s:
        s.detail = "3 control planes healthy"
    with pytest.raises(RuntimeError):
        with steps.step("drain node3"):
            raise RuntimeError("eviction blocked by PodDisruptionBudget\nmore text")
    steps.skip("delete node3", "dry run")
    statuses = [(r.name, r.status) for r in steps.records]
    assert statuses == [("preflight", "ok"), ("drain node3", "failed"), ("delete node3", "skipped")]
    assert steps.records[0].detail == "3 control planes healthy"
    assert steps.records[1].detail == "RuntimeError: eviction blocked by PodDisruptionBudget"
    assert steps.records[1].end >= steps.records[1].start
    assert steps.failed == [steps.records[1]]
    assert steps.as_list()[0]["status"] == "ok"


def test_summary_written_beside_output_notebook(tmp_path: Path) -> None:
    steps = runbook.Steps()
    with steps.step("snapshot"):
        pass
    out = tmp_path / "runs" / "lab" / "20240101T000000Z-etcd-snapshot.ipynb"
    summary = runbook.write_summary("etcd-snapshot", "lab", {"snapshot": "/backups/x.db", "revision": 42,
                                                              "note": "token=abc123"},
                                    steps=steps, output_notebook=out)
    path = tmp_path / "runs" / "lab" / "20240101T000000Z-etcd-snapshot.summary.json"
    assert summary["summary_path"] == str(path)
    on_disk = json.loads(path.read_text())
    assert on_disk == summary
    assert on_disk["status"] == "ok" and on_disk["revision"] == 42
    assert on_disk["steps"][0]["name"] == "snapshot"
    assert "abc123" not in path.read_text()


def test_summary_path_from_papermill_env_or_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAPERMILL_OUTPUT_PATH", raising=False)
    assert runbook.write_summary("x", "lab", {})["summary_path"] is None
    monkeypatch.setenv("PAPERMILL_OUTPUT_PATH", str(tmp_path / "out.ipynb"))
    steps = runbook.Steps()
    with pytest.raises(ValueError):
        with steps.step("boom"):
            raise ValueError("x")
    summary = runbook.write_summary("x", "lab", {}, steps=steps)
    assert summary["status"] == "failed"
    assert (tmp_path / "out.summary.json").is_file()


# --------------------------------------------------------------------------- redaction

# A fake key block (no real key), its marker split so no key marker sits in the source.
PEM_KEY = "-----BEGIN RSA " "PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretsecret\nabcdef\n-----END RSA " "PRIVATE KEY-----"
CERT = "-----BEGIN CERTIFICATE-----\nMIIDpublicpart\n-----END CERTIFICATE-----"


def test_redact_private_keys_but_keep_certificates() -> None:
    text = f"key:\n{PEM_KEY}\ncert:\n{CERT}\n"
    out = runbook.redact(text)
    assert "secretsecret" not in out and "abcdef" not in out
    assert "MIIDpublicpart" in out
    assert "[redacted]" in out


def test_redact_json_escaped_and_base64_keys() -> None:
    escaped = json.dumps({"content": PEM_KEY})
    assert "secretsecret" not in runbook.redact(escaped)
    b64_key = base64.b64encode(PEM_KEY.encode()).decode()
    b64_cert = base64.b64encode(CERT.encode()).decode()
    kubeconfig = f"    client-certificate-data: {b64_cert}\n    client-key-data: {b64_key}\n"
    out = runbook.redact(kubeconfig)
    assert b64_key not in out and b64_cert in out


def test_redact_tokens_and_passwords() -> None:
    cases = {
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig": "eyJhbGciOiJSUzI1NiJ9",
        "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef": "0123456789abcdef",
        "ansible_ssh_pass=s3cr3t other=1": "s3cr3t",
        'password: "two words"': "two words",
        '{"ansible_become_password": "pw1"}': "pw1",
        "    token: 9f8e7d6c5b4a": "9f8e7d6c5b4a",
        "https://admin:pa55@registry.example/v2": "pa55",
        "kubectl --token eyJhbGciOi.secretpart get nodes": "secretpart",
        "etcdctl --password hunter22 member list": "hunter22",
    }
    for text, secret in cases.items():
        out = runbook.redact(text)
        assert secret not in out, (text, out)
        assert "[redacted]" in out
    assert runbook.redact("other=1 ok=3 changed=0") == "other=1 ok=3 changed=0"
    assert runbook.redact("kube_token_dir: /etc/kubernetes/tokens") == "kube_token_dir: /etc/kubernetes/tokens"
    assert runbook.redact('password: "{{ vault_pw }}"') == 'password: "{{ vault_pw }}"'
    assert runbook.redact("kubectl --token-file /etc/k --dry-run") == "kubectl --token-file /etc/k --dry-run"


def test_line_redactor_hides_multiline_key_blocks() -> None:
    redactor = runbook.LineRedactor()
    shown = [redactor.feed(line) for line in f"before\n{PEM_KEY}\nafter".splitlines()]
    visible = [s for s in shown if s is not None]
    assert visible[0] == "before" and visible[-1] == "after"
    assert not any("secretsecret" in s or "abcdef" in s for s in visible)
    assert sum("[redacted]" in s for s in visible) == 1


def test_redact_truncated_key() -> None:
    out = runbook.redact("-----BEGIN EC " "PRIVATE KEY-----\nMHcCAQEEIsecret")
    assert "MHcCAQEEIsecret" not in out


def test_a_confirmed_gate_holds_the_cluster_lock_and_a_dry_run_does_not(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cluster_lock.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv(cluster_lock.HELD_LOCK_ENV, raising=False)
    monkeypatch.setattr(cluster_lock, "_SESSION", {})
    inventory = tmp_path / "hosts.yaml"
    assert runbook.confirm("wipe", cluster="c", dry_run=True, lock=inventory, say=lambda _: None) is False
    with cluster_lock.hold(inventory, "pid 1 probe"):
        pass  # free after a dry run
    assert runbook.confirm("wipe", cluster="c", dry_run=False, confirm="c", lock=inventory, say=lambda _: None)
    with pytest.raises(errors.RunRefused, match="gate: wipe"):
        cluster_lock.hold(inventory, "pid 2 another run")
    # Without an inventory there is nothing to lock; another cluster's lock is unaffected.
    assert runbook.confirm("wipe", cluster="c", dry_run=False, confirm="c", lock=Path(""), say=lambda _: None)
    with cluster_lock.hold(tmp_path / "other.yaml", "pid 3 elsewhere"):
        pass
    for handle in cluster_lock._SESSION.values():
        handle.release()


def test_a_gate_whose_cluster_is_locked_is_refused_before_saying_confirmed(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cluster_lock.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv(cluster_lock.HELD_LOCK_ENV, raising=False)
    monkeypatch.setattr(cluster_lock, "_SESSION", {})
    said: list[str] = []
    inventory = tmp_path / "hosts.yaml"
    with cluster_lock.hold(inventory, "pid 9 runbook add-worker"):
        with pytest.raises(errors.RunRefused, match="pid 9 runbook add-worker"):
            runbook.confirm("wipe", cluster="c", dry_run=False, ask=lambda _: "c", lock=inventory, say=said.append)
    assert said == []
