"""The Kubernetes API client and raw requests used by every kube module.

The official ``kubernetes`` client supplies configuration, authentication,
TLS and transport (an ``ApiClient`` passed into every function); bodies are
read as plain JSON so that results do not depend on the client's model
classes. Every request has a timeout.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import kubernetes
import urllib3

from runbooks_lib.errors import CommandFailed, HostUnreachable, PreconditionFailed

REQUEST_TIMEOUT = 15.0

def client_from_kubeconfig(
    path: str, server: str | None = None, *, context: str | None = None
) -> kubernetes.client.ApiClient:
    """An ApiClient for a kubeconfig file, optionally pointed at another API server.

    ``server`` (e.g. ``https://10.0.0.12:6443``) switches away from a dead
    control plane while keeping TLS verification: the server's certificate
    must list that address in its SANs (Kubespray adds every control-plane
    IP). Connection errors are not retried; each call has its own timeout.
    """
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(path), context=context, client_configuration=cfg, persist_config=False
    )
    if server:
        cfg.host = server.rstrip("/")
    cfg.retries = 0
    return kubernetes.client.ApiClient(cfg)


def server_of(api: kubernetes.client.ApiClient) -> str:
    return str(api.configuration.host)


def call(
    api: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, Any] | None = None,
    body: Any = None,
    content_type: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> tuple[int, dict]:
    """One API request; returns (HTTP status, JSON body). Raises HostUnreachable."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type or "application/json"
    params = api.param_serialize(
        method=method, resource_path=path, query_params=list((query or {}).items()) or None,
        header_params=headers, body=body, auth_settings=["BearerToken"],
    )
    m, url, hdrs, data, post = params
    try:
        resp = api.call_api(m, url, header_params=hdrs, body=data, post_params=post, _request_timeout=timeout)
        raw = resp.read()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (urllib3.exceptions.SSLError, ssl.SSLError)):
            raise PreconditionFailed(
                f"TLS verification of the Kubernetes API at {server_of(api)} failed: {reason}",
                fix="use an address listed in the API server certificate's SANs, "
                "or add it there (Kubespray: supplementary_addresses_in_ssl_keys); never disable verification",
            ) from None
        raise HostUnreachable(
            f"the Kubernetes API at {server_of(api)} did not answer {method} {path} within {timeout:g}s: {exc}",
            fix="check that this control plane is up, or pass server= another control plane's URL",
        ) from None
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {"message": raw.decode("utf-8", "replace")[:500]}
    return resp.status, doc if isinstance(doc, dict) else {"items": doc}


def expect(status: int, doc: dict, method: str, path: str, ok: Iterable[int] = (200, 201)) -> dict:
    if status in ok:
        return doc
    raise CommandFailed(
        f"Kubernetes API refused {method} {path}: HTTP {status} {doc.get('reason', '')}: {doc.get('message', '')}",
        fix="read the message; check RBAC, the object's name and namespace",
    )


def get(api, path: str, *, query=None, timeout: float = REQUEST_TIMEOUT) -> dict | None:
    """GET returning None on 404."""
    status, doc = call(api, "GET", path, query=query, timeout=timeout)
    if status == 404:
        return None
    return expect(status, doc, "GET", path)


def merge_patch(api, path: str, patch: dict, *, timeout: float = REQUEST_TIMEOUT) -> dict:
    status, doc = call(api, "PATCH", path, body=patch, content_type="application/merge-patch+json", timeout=timeout)
    return expect(status, doc, "PATCH", path)
