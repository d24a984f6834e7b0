"""A small async Kubernetes REST client for code running inside the lab machines.

The kubelet stand-in and the controllers talk to the API stand-in through it,
over HTTPS with a client certificate, exactly as kubelet and
kube-controller-manager talk to kube-apiserver. It depends only on the stdlib,
aiohttp and PyYAML (the packages available inside the lab machines).

Every request has a bounded timeout. API errors raise :class:`ApiError`
(with the HTTP status and the Status reason); a server that cannot be reached
raises :class:`~runbooks_lib.errors.HostUnreachable`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import yaml

from runbooks_lib.errors import BadParameters, HostUnreachable, RunbookError

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Resource:
    """One REST resource: where it lives and whether it is namespaced."""

    api_version: str
    plural: str
    kind: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """Return the URL path, e.g. /apis/apps/v1/namespaces/ns/deployments/web/status."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


NAMESPACES = Resource("v1", "namespaces", "Namespace", False)
NODES = Resource("v1", "nodes", "Node", False)
PODS = Resource("v1", "pods", "Pod", True)
SERVICES = Resource("v1", "services", "Service", True)
ENDPOINTS = Resource("v1", "endpoints", "Endpoints", True)
EVENTS = Resource("v1", "events", "Event", True)
CONFIGMAPS = Resource("v1", "configmaps", "ConfigMap", True)
DEPLOYMENTS = Resource("apps/v1", "deployments", "Deployment", True)
REPLICASETS = Resource("apps/v1", "replicasets", "ReplicaSet", True)
DAEMONSETS = Resource("apps/v1", "daemonsets", "DaemonSet", True)
LEASES = Resource("coordination.k8s.io/v1", "leases", "Lease", True)
PODDISRUPTIONBUDGETS = Resource("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True)
ENDPOINTSLICES = Resource("discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True)


class ApiError(RunbookError):
    """The API server answered with an error Status (``status`` is the HTTP code)."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(
            f"API request {method} {path} failed: {status} {reason}: {message}",
            fix="check the object and the API server's log",
        )

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: resourceVersion precondition failed or the object already exists."""
        return self.status == 409


@dataclass(frozen=True)
class Credentials:
    """Where the API is and the files that authenticate to it."""

    server: str
    ca_file: str
    cert_file: str
    key_file: str


def _write_private(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return str(path)


def ssl_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """Return a TLS client context that verifies the server against ``ca_file`` and presents the client cert."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise BadParameters(
            f"cannot load the API CA or client certificate ({exc})",
            fix=f"check {ca_file}, {cert_file} and {key_file}",
        ) from None
    return ctx


def _kubeconfig_context(path: str | os.PathLike[str]) -> tuple[str, ssl.SSLContext]:
    """Read the current context of a kubeconfig (embedded data or file references) into a TLS context."""
    kc_path = Path(path)
    try:
        doc = yaml.safe_load(kc_path.read_text())
        ctx_name = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        server = cluster["server"]
    except (OSError, KeyError, StopIteration, TypeError, yaml.YAMLError) as exc:
        raise BadParameters(
            f"kubeconfig {path} is unreadable ({type(exc).__name__}: {exc})",
            fix="pass a kubeconfig with a current-context, its cluster and its user",
        ) from None

    def rel(p: str) -> str:
        return str(p if os.path.isabs(p) else kc_path.parent / p)

    # ssl can only load a client key pair from files: embedded data goes to a
    # private temporary directory that is removed as soon as it is loaded.
    with tempfile.TemporaryDirectory(prefix="kubeclient-") as tmp:
        tmpdir = Path(tmp)
        try:
            if "certificate-authority-data" in cluster:
                ca = _write_private(tmpdir, "ca.crt", base64.b64decode(cluster["certificate-authority-data"]))
            else:
                ca = rel(cluster["certificate-authority"])
            if "client-certificate-data" in user:
                cert = _write_private(tmpdir, "client.crt", base64.b64decode(user["client-certificate-data"]))
            else:
                cert = rel(user["client-certificate"])
            if "client-key-data" in user:
                key = _write_private(tmpdir, "client.key", base64.b64decode(user["client-key-data"]))
            else:
                key = rel(user["client-key"])
        except (KeyError, ValueError, TypeError) as exc:
            raise BadParameters(
                f"kubeconfig {path} lacks client certificate credentials ({exc})",
                fix="use a kubeconfig with a CA and a client certificate and key",
            ) from None
        return server, ssl_context(ca, cert, key)


def selector_string(labels: Mapping[str, str]) -> str:
    """Return an equality label selector for ``labels`` (``a=1,b=2``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class KubeClient:
    """Async client for one API server URL.

    Use as ``async with KubeClient(...) as api:`` or call :meth:`close`.
    ``timeout`` bounds every request except watches, which are bounded by
    their own ``timeout_seconds``.
    """

    def __init__(self, server: str, ssl_ctx: ssl.SSLContext | None, timeout: float = DEFAULT_TIMEOUT,
                 user_agent: str = "runbooks-lab") -> None:
        self.server = server.rstrip("/")
        self._ssl = ssl_ctx
        self.timeout = timeout
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_files(cls, server: str, ca_file: str, cert_file: str, key_file: str, timeout: float = DEFAULT_TIMEOUT,
                   user_agent: str = "runbooks-lab") -> KubeClient:
        """Client authenticating with a client certificate read from files."""
        return cls(server, ssl_context(ca_file, cert_file, key_file), timeout, user_agent)

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT,
                        user_agent: str = "runbooks-lab") -> KubeClient:
        """Client for the current context of a kubeconfig (raises BadParameters if unusable)."""
        server, ctx = _kubeconfig_context(path)
        return cls(server, ctx, timeout, user_agent)

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=20)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.user_agent})
        return self._session

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      timeout: float | None = None) -> dict:
        """Send one request and return the decoded JSON answer.

        Raises ApiError for an error status, HostUnreachable when the server
        cannot be reached or does not answer within the timeout.
        """
        url = self.server + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        limit = aiohttp.ClientTimeout(total=timeout or self.timeout)
        try:
            async with self._get_session().request(method, url, data=data, headers=headers, timeout=limit) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise HostUnreachable(
                f"API server {self.server} did not answer {method} {path}: {type(exc).__name__}: {exc}",
                fix="check that the API server is running and reachable",
            ) from None
        return _decode(status, text, method, path)

    async def get(self, res: Resource, name: str, namespace: str | None = None,
                  subresource: str | None = None) -> dict:
        return await self.request("GET", res.path(namespace, name, subresource))

    async def list(self, res: Resource, namespace: str | None = None, label_selector: str | None = None,
                   field_selector: str | None = None) -> dict:
        """List objects (all namespaces when ``namespace`` is None); returns the List object."""
        params = {"labelSelector": label_selector, "fieldSelector": field_selector}
        return await self.request("GET", res.path(namespace), params=params)

    async def create(self, res: Resource, body: dict, namespace: str | None = None,
                     subresource: str | None = None, name: str | None = None) -> dict:
        """POST ``body``; the namespace defaults to the body's. ``name`` is for subresources (binding, eviction)."""
        ns = namespace or body.get("metadata", {}).get("namespace")
        return await self.request("POST", res.path(ns, name, subresource), body=body)

    async def update(self, res: Resource, body: dict, subresource: str | None = None) -> dict:
        """PUT ``body`` (its metadata.resourceVersion is the precondition: 409 if stale)."""
        meta = body["metadata"]
        return await self.request("PUT", res.path(meta.get("namespace"), meta["name"], subresource), body=body)

    async def patch(self, res: Resource, name: str, patch: Any, namespace: str | None = None,
                    subresource: str | None = None, patch_type: str = "merge") -> dict:
        """PATCH with ``patch_type`` merge (RFC 7386), json (RFC 6902) or strategic."""
        types = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }
        return await self.request("PATCH", res.path(namespace, name, subresource), body=patch,
                                  content_type=types[patch_type])

    async def delete(self, res: Resource, name: str, namespace: str | None = None,
                     grace_period_seconds: int | None = None, uid: str | None = None,
                     propagation_policy: str | None = None) -> dict:
        """DELETE an object; ``uid`` makes it a precondition (409 if the object was replaced)."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        if propagation_policy is not None:
            body["propagationPolicy"] = propagation_policy
        return await self.request("DELETE", res.path(namespace, name), body=body)

    async def watch(self, res: Resource, namespace: str | None = None, resource_version: str | None = None,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int = 60) -> AsyncIterator[dict]:
        """Yield watch events ({type, object}) until the server ends the watch.

        The server closes it after ``timeout_seconds``; the client gives up 10 s
        later. An ERROR event (e.g. 410 Gone) is raised as ApiError.
        """
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "false",
        }
        path = res.path(namespace)
        url = self.server + path + "?" + urlencode({k: v for k, v in params.items() if v is not None})
        limit = aiohttp.ClientTimeout(total=timeout_seconds + 10, sock_connect=self.timeout)
        try:
            async with self._get_session().get(url, timeout=limit, headers={"Accept": "application/json"}) as resp:
                if resp.status >= 400:
                    _decode(resp.status, await resp.text(), "GET", path)
                async for raw in _lines(resp.content):
                    event = json.loads(raw)
                    if event.get("type") == "ERROR":
                        obj = event.get("object") or {}
                        raise ApiError(int(obj.get("code") or 500), obj.get("reason", ""), obj.get("message", ""),
                                       "WATCH", path)
                    yield event
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise HostUnreachable(
                f"watch of {path} on {self.server} broke: {type(exc).__name__}: {exc}",
                fix="check that the API server is running and reachable",
            ) from None


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Yield the non-empty newline-delimited lines of a streaming body (no line length limit)."""
    buf = b""
    async for chunk in stream.iter_any():
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line
    if buf.strip():
        yield buf


def _decode(status: int, text: str, method: str, path: str) -> dict:
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        doc = {"message": text[:500]}
    if status >= 400:
        if not isinstance(doc, dict):
            doc = {}
        raise ApiError(status, str(doc.get("reason", "")), str(doc.get("message", "")), method, path)
    return doc if isinstance(doc, dict) else {"items": doc}
