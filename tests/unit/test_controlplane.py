"""controlplane: the kube-apiserver manifest edited over SSH (MockConnection), and the wait that proves
the API server on that host serves with the new flags (the official client over a fake REST layer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbooks_lib import controlplane, errors, ssh, testing
from tests.unit.test_kube_client import FakeApiServer, _Response, api, fake  # noqa: F401 (fixtures)

DATA = Path(__file__).resolve().parent.parent / "data" / "kube"


# -- the kube-apiserver manifest ------------------------------------------------------------------------


def test_read_and_set_etcd_servers_changes_only_that_flag() -> None:
    manifest = (DATA / "kube-apiserver.yaml").read_text()
    path = controlplane.APISERVER_MANIFEST
    conn = testing.MockConnection("node1")
    conn.expect(["cat", "--", path], manifest)
    conn.expect(ssh.write_text_argv(path), "")
    conn.expect(["stat", "-c", "%Y", "--", path], "1764381600\n")
    assert controlplane.read_etcd_servers(conn) == (
        "https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379")
    new = ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
    change = controlplane.set_etcd_servers(conn, new)
    assert change.changed and change.old[-1] == "https://10.0.0.3:2379" and change.new == new
    assert change.modified == 1764381600.0  # when kubelet will see the new file
    written = next(c for c in conn.calls if c.input).input.decode()
    old_lines, new_lines = manifest.splitlines(), written.splitlines()
    diff = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
    assert len(old_lines) == len(new_lines) and len(diff) == 1
    assert diff[0][1].strip() == "- --etcd-servers=https://10.0.0.1:2379,https://10.0.0.2:2379"
    assert controlplane.etcd_servers_in(written) == new


def test_set_etcd_servers_noop_and_validation() -> None:
    manifest = (DATA / "kube-apiserver.yaml").read_text()
    conn = testing.MockConnection("node1", {("cat", "--", controlplane.APISERVER_MANIFEST): manifest})
    same = controlplane.set_etcd_servers(conn, controlplane.etcd_servers_in(manifest))
    assert not same.changed and len(conn.calls) == 1  # no write
    with pytest.raises(errors.BadParameters):
        controlplane.set_etcd_servers(conn, ["http://10.0.0.1:2379"])
    with pytest.raises(errors.PreconditionFailed):
        controlplane.etcd_servers_in("apiVersion: v1\nkind: Pod\nspec:\n  containers: []\n")


NEW = ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
MIRROR = "/api/v1/namespaces/kube-system/pods/kube-apiserver-node1"


def _mirror(servers, started: str, ready: bool = True) -> dict:
    return {
        "metadata": {"name": "kube-apiserver-node1", "namespace": "kube-system",
                     "annotations": {"kubernetes.io/config.mirror": "h", "kubernetes.io/config.hash": "h"}},
        "spec": {"nodeName": "node1", "containers": [
            {"name": "kube-apiserver", "command": ["kube-apiserver", f"--etcd-servers={','.join(servers)}"]}]},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"name": "kube-apiserver", "ready": ready,
                                          "state": {"running": {"startedAt": started}}}]},
    }


def _readyz(fake: FakeApiServer, status: int = 200) -> None:
    original = fake.request

    def request(method, url, headers=None, body=None, post_params=None, _request_timeout=None):
        if url.endswith("/readyz"):
            fake.requests.append((method, "/readyz", {}, None))
            return _Response(status, {"message": "ok" if status == 200 else "etcd not ready"})
        return original(method, url, headers, body, post_params, _request_timeout)

    fake.request = request  # type: ignore[method-assign]


def test_apiserver_pending_names_old_flags_and_a_start_before_the_change(fake: FakeApiServer, api) -> None:
    _readyz(fake)
    change = controlplane.ManifestChange("node1", controlplane.APISERVER_MANIFEST,
                                         (*NEW, "https://10.0.0.3:2379"), NEW, modified=1764381600.0)
    assert controlplane.apiserver_pending(api, change) == ["mirror pod kube-system/kube-apiserver-node1 absent"]
    fake.add(MIRROR, _mirror(change.old, "2025-11-29T01:00:00Z", ready=False))
    pending = controlplane.apiserver_pending(api, change)
    assert pending[0] == ("kube-apiserver-node1 runs with "
                          "--etcd-servers=https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379")
    assert "started at 2025-11-29T01:00:00Z, before the manifest changed" in pending[1]
    assert pending[2] == "kube-apiserver-node1 not Ready"
    fake.add(MIRROR, _mirror(NEW, "2025-11-29T02:00:05Z"))  # 1764381605: after the write
    assert controlplane.apiserver_pending(api, change) == []


def test_wait_for_apiserver_times_out_naming_what_is_pending(fake: FakeApiServer, api) -> None:
    _readyz(fake, 500)
    change = controlplane.ManifestChange("node1", controlplane.APISERVER_MANIFEST, ("https://10.0.0.3:2379",), NEW,
                                         modified=1764381600.0)
    fake.add(MIRROR, _mirror(NEW, "2025-11-29T02:00:05Z"))
    with pytest.raises(errors.WaitTimedOut) as info:
        controlplane.wait_for_apiserver(api, change, timeout=0.3, interval=0.1)
    text = str(info.value)
    assert "the API server on node1 to serve with --etcd-servers=https://10.0.0.1:2379,https://10.0.0.2:2379" in text
    assert "/readyz answers HTTP 500" in text and "journalctl -u kubelet" in text
    _readyz(fake, 200)
    waited = controlplane.wait_for_apiserver(api, change, timeout=5, interval=0.1)
    assert waited.attempts == 1
