"""kubeconfig: the operator's admin kubeconfig fetched with mode 0600, and a control plane's own
admin.conf moved off a dead API server (MockConnection), never showing the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from runbooks_lib import errors, kubeconfig, ssh, testing

REMOTE = kubeconfig.REMOTE_ADMIN_CONF


def _admin_conf(server: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "cluster.local", "cluster": {"certificate-authority-data": "Q0E=", "server": server}}],
        "users": [{"name": "kubernetes-admin", "user": {"client-certificate-data": "Q0VSVA==",
                                                       "client-key-data": "S0VZLXNlY3JldA=="}}],
        "contexts": [], "current-context": "",
    }, sort_keys=False)


def test_fetch_sets_the_server_and_mode_0600_and_rewrites_only_on_change(tmp_path: Path) -> None:
    artifact = tmp_path / "artifacts" / "admin.conf"
    artifact.parent.mkdir()
    artifact.write_text(_admin_conf("https://127.0.0.1:6443"))
    target = tmp_path / "kube" / "config"
    first = kubeconfig.fetch(target, server="https://10.0.0.1:6443", artifact=artifact)
    assert first.changed and first.source == "artifacts/admin.conf" and os.stat(target).st_mode & 0o777 == 0o600
    assert kubeconfig.servers_in(target.read_text()) == ("https://10.0.0.1:6443",)
    assert "S0VZLXNlY3JldA==" not in repr(first)
    assert not kubeconfig.fetch(target, server="https://10.0.0.1:6443", artifact=artifact).changed
    with pytest.raises(errors.PreconditionFailed, match="no admin kubeconfig"):
        kubeconfig.fetch(tmp_path / "other", server="https://10.0.0.1:6443", artifact=tmp_path / "missing")


def test_repoint_remote_moves_only_an_admin_conf_that_names_a_dead_server() -> None:
    # v2.31: node2's admin.conf names the first control plane, node1 (dead).
    conn = testing.MockConnection("node2")
    conn.expect(["cat", "--", REMOTE], _admin_conf("https://10.0.0.1:6443"))
    conn.expect(ssh.write_text_argv(REMOTE, "0600"), "")
    moved = kubeconfig.repoint_remote(conn, "https://127.0.0.1:6443", away_from=["https://10.0.0.1:6443/"])
    assert moved.changed and moved.old == ("https://10.0.0.1:6443",) and moved.new == ("https://127.0.0.1:6443",)
    written = yaml.safe_load(next(c for c in conn.calls if c.input).input.decode())
    assert written["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert written["users"][0]["user"]["client-key-data"] == "S0VZLXNlY3JldA=="  # the rest is kept
    assert "S0VZLXNlY3JldA==" not in repr(moved)

    # v2.19: admin.conf names 127.0.0.1: nothing is written.
    conn = testing.MockConnection("node2")
    conn.expect(["cat", "--", REMOTE], _admin_conf("https://127.0.0.1:6443"))
    kept = kubeconfig.repoint_remote(conn, "https://127.0.0.1:6443", away_from=["https://10.0.0.1:6443"])
    assert not kept.changed and not any(c.input for c in conn.calls)

    conn = testing.MockConnection("node2")
    conn.expect(["cat", "--", REMOTE], "not: a kubeconfig\n")
    with pytest.raises(errors.PreconditionFailed, match="not a kubeconfig"):
        kubeconfig.repoint_remote(conn, "https://127.0.0.1:6443", away_from=["https://10.0.0.1:6443"])
