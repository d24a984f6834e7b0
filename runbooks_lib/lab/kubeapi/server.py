"""HTTP layer of the API stand-in: routing, content negotiation, authentication, watch streaming.

Clients authenticate with a certificate signed by ``--client-ca-file`` (CN =
user, O = groups); every authenticated user may do everything (no RBAC).
/healthz, /livez, /readyz and /version answer without a certificate, as
kube-apiserver's public-info-viewer role allows. Errors are metav1.Status
documents; an etcd that does not answer gives 503 ServiceUnavailable naming
etcd within the store's timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yaml
from aiohttp import web

from . import discovery, params, status, subresources, tables, watch
from .api import Api
from .eviction import evict
from .patch import PATCH_TYPES
from .resources import Resource, lookup
from .selectors import Requirement, SelectorError, field_matcher, parse_field_selector, parse_label_selector
from .status import ApiError
from .storage import StorageUnavailable

log = logging.getLogger(__name__)

PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
API_KEY = web.AppKey("api", Api)
ADDRESS_KEY = web.AppKey("advertise", str)
AUTH_KEY = web.AppKey("client_cert_required", bool)


def json_response(doc: Any, code: int = 200) -> web.Response:
    return web.Response(status=code, text=json.dumps(doc), content_type="application/json")


def _status_response(err: ApiError) -> web.Response:
    return json_response(err.status(), err.code)


def _user(request: web.Request) -> tuple[str, list[str]] | None:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    cn, orgs = "", []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return cn, orgs


@web.middleware
async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    started = time.monotonic()
    user = _user(request)
    if request.app[AUTH_KEY] and user is None and not request.path.startswith(PUBLIC_PATHS):
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": "Unauthorized", "reason": "Unauthorized", "code": 401}, 401)
    try:
        resp = await handler(request)
    except ApiError as err:
        resp = _status_response(err)
    except StorageUnavailable as exc:
        resp = _status_response(status.unavailable(exc.what))
    except SelectorError as exc:
        resp = _status_response(status.bad_request(exc.what))
    except web.HTTPException:
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - the API answers every failure with a Status
        log.exception("internal error on %s %s", request.method, request.path_qs)
        resp = _status_response(status.internal(f"{type(exc).__name__}: {exc}"))
    if params.flag(request.query, "pretty") and isinstance(resp, web.Response) and resp.content_type == "application/json":
        resp.text = json.dumps(json.loads(resp.text), indent=2) + "\n"  # as kube-apiserver indents with ?pretty
    log.debug("%s %s %s user=%s %.0fms", request.method, request.path_qs, getattr(resp, "status", "?"),
              user[0] if user else "-", (time.monotonic() - started) * 1000)
    return resp


# -- discovery and health --------------------------------------------------------------------------------


async def h_version(request: web.Request) -> web.Response:
    return json_response(discovery.version())


async def h_api(request: web.Request) -> web.Response:
    return json_response(discovery.core_versions(request.app[ADDRESS_KEY]))


async def h_apis(request: web.Request) -> web.Response:
    return json_response(discovery.group_list())


async def h_health(request: web.Request) -> web.Response:
    api = request.app[API_KEY]
    name = request.path.strip("/").split("/")[0]
    try:
        await api.store.health()
        ok, detail = True, "ok"
    except StorageUnavailable as exc:
        ok, detail = False, exc.what
        log.warning("%s: etcd check failed: %s", name, detail)
    if request.path.rstrip("/").endswith("/etcd") or "verbose" in request.query:
        lines = ["[+]ping ok", "[+]log ok", f"[{'+' if ok else '-'}]etcd {'ok' if ok else 'failed: reason withheld'}"]
        lines.append(f"{name} check passed" if ok else f"{name} check failed")
        return web.Response(status=200 if ok else 500, text="\n".join(lines) + "\n")
    if ok:
        return web.Response(text="ok")
    return web.Response(status=500, text=f"[-]etcd failed: reason withheld\n{name} check failed\n")


async def h_openapi_v3(request: web.Request) -> web.Response:
    tail = request.match_info.get("tail", "")
    if not tail:
        return json_response(discovery.openapi_v3_root())
    gv = "v1" if tail == "api/v1" else tail[len("apis/"):] if tail.startswith("apis/") else ""
    doc = discovery.openapi_v3_gv(gv)
    if doc is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return json_response(doc)


async def h_openapi_v2(request: web.Request) -> web.Response:
    return web.Response(body=discovery.openapi_v2_protobuf(),
                        content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf")


# -- resource requests -----------------------------------------------------------------------------------


def _parse_path(request: web.Request) -> tuple[str, str, list[str]]:
    parts = [p for p in request.path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        return "", "v1", parts[2:]
    if parts and parts[0] == "apis" and len(parts) >= 3:
        return parts[1], parts[2], parts[3:]
    raise ApiError(404, "NotFound", "the server could not find the requested resource")


def _route(group: str, version: str, rest: list[str]) -> tuple[Resource, str | None, str | None, str | None]:
    """(resource, namespace, name, subresource) for the path segments after the group/version."""
    if len(rest) >= 3 and rest[0] == "namespaces":
        res = lookup(group, version, rest[2])
        if res is not None and res.namespaced:
            if len(rest) > 5:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return res, rest[1], rest[3] if len(rest) > 3 else None, rest[4] if len(rest) > 4 else None
    if not rest:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    res = lookup(group, version, rest[0])
    if res is None or len(rest) > 3:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return res, None, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None


def _accept(request: web.Request) -> str:
    accept = request.headers.get("Accept", "")
    if "as=Table" in accept:
        return "Table"
    if "as=PartialObjectMetadata" in accept:
        return "Partial"
    return "json"


async def _body(request: web.Request, allow_yaml: bool = False) -> Any:
    ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
    raw = await request.read()
    if "protobuf" in ctype:
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ctype})")
    if not raw:
        return {}
    try:
        if allow_yaml or ctype in ("application/yaml", "application/apply-patch+yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise status.bad_request(f"the body of the request could not be decoded: {exc}") from None


def _selectors(opts: params.ListOptions, res: Resource,
               name: str | None = None) -> tuple[list | None, Callable[[dict], bool] | None]:
    """Label and field selectors; a request for one object selects metadata.name (a watch of one object)."""
    labels = parse_label_selector(opts.label_selector)
    fields = parse_field_selector(opts.field_selector, res.field_selectors)
    if name is not None:
        named = [f for f in fields if f.key == "metadata.name"]
        if fields and not (len(named) == 1 and named[0].op == "=" and named[0].values[0] == name):
            raise status.bad_request("fieldSelector metadata.name doesn't match requested name")
        fields = fields or [Requirement("metadata.name", "=", (name,))]
    return labels or None, field_matcher(fields) if fields else None


def _render(request: web.Request, res: Resource, obj: dict, code: int = 200) -> web.Response:
    mode = _accept(request)
    if mode == "Table":
        return json_response(tables.table(res.kind, [obj], include_object=request.query.get("includeObject", "Metadata")), code)
    if mode == "Partial":
        return json_response({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                              "metadata": obj.get("metadata", {})}, code)
    return json_response(obj, code)


def _render_list(request: web.Request, res: Resource, items: list[dict], rev: int) -> web.Response:
    mode = _accept(request)
    if mode == "Table":
        return json_response(tables.table(res.kind, items, str(rev), request.query.get("includeObject", "Metadata")))
    if mode == "Partial":
        return json_response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                              "metadata": {"resourceVersion": str(rev)},
                              "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                         "metadata": i.get("metadata", {})} for i in items]})
    api = request.app[API_KEY]
    return json_response(api.list_object(res, items, rev))


async def h_resource(request: web.Request) -> web.StreamResponse:
    api = request.app[API_KEY]
    group, version, rest = _parse_path(request)
    if not rest:
        doc = discovery.resource_list(group, version)
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return json_response(doc)
    force_watch = rest[0] == "watch"  # the deprecated /watch/ paths
    res, ns, name, sub = _route(group, version, rest[1:] if force_watch else rest)
    method = request.method
    query = request.query
    if sub is not None and sub not in res.subresources:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if force_watch and (method != "GET" or sub is not None):
        raise status.method_not_allowed()

    if method == "GET" and sub is None and (name is None or force_watch or params.flag(query, "watch")):
        return await _list_or_watch(request, api, res, ns, name, force_watch)
    if name is None:
        if method == "POST":
            opts = params.write_options(query, "CreateOptions")
            obj = await api.create(res, ns, await _body(request), opts.dry_run)
            if res.kind == "PodDisruptionBudget" and not opts.dry_run:
                obj = await _refresh_pdb(api, obj)
            return _render(request, res, obj, 201)
        if method == "DELETE":
            list_opts = params.list_options(query)
            labels, fields = _selectors(list_opts, res)
            options, dry_run = params.delete_options(query, await _body(request))
            return json_response(await api.delete_collection(res, ns, labels, fields, options, dry_run))
        raise status.method_not_allowed()

    if sub is None:
        if method == "GET":
            params.resource_version(query.get("resourceVersion"))
            return _render(request, res, await api.get(res, ns, name))
        if method == "PUT":
            opts = params.write_options(query, "UpdateOptions")
            return _render(request, res, await api.update(res, ns, name, await _body(request), None, opts.dry_run))
        if method == "PATCH":
            return _render(request, res, await _patch(request, api, res, ns, name, None))
        if method == "DELETE":
            options, dry_run = params.delete_options(query, await _body(request))
            return _render(request, res, await api.delete(res, ns, name, options, dry_run))
        raise status.method_not_allowed()

    if sub == "status":
        if method == "GET":
            params.resource_version(query.get("resourceVersion"))
            return _render(request, res, await api.get(res, ns, name))
        if method == "PUT":
            opts = params.write_options(query, "UpdateOptions")
            return _render(request, res, await api.update(res, ns, name, await _body(request), "status", opts.dry_run))
        if method == "PATCH":
            return _render(request, res, await _patch(request, api, res, ns, name, "status"))
    elif sub == "scale":
        if method == "GET":
            return json_response(subresources.scale_of(await api.get(res, ns, name)))
        if method in ("PUT", "PATCH"):
            kind = None if method == "PUT" else _patch_kind(request)
            params.write_options(query, "UpdateOptions" if method == "PUT" else "PatchOptions", kind == "apply")
            return json_response(await subresources.update_scale(api, res, ns or "", name, kind, await _body(request)))
    elif sub == "eviction" and method == "POST":
        opts = params.write_options(query, "CreateOptions")
        return json_response(await evict(api, ns or "", name, await _body(request), opts.dry_run), 201)
    elif sub == "binding" and method == "POST":
        params.write_options(query, "CreateOptions")
        return json_response(await subresources.bind(api, ns or "", name, await _body(request)), 201)
    elif sub == "log":
        if method == "GET":
            return await _get_log(request, api, ns or "", name)
        if method == "PUT":
            pod, container = await subresources.pick_container(api, ns or "", name, query.get("container"))
            await subresources.store_log(api, ns or "", name, container, (await request.read()).decode("utf-8", "replace"))
            return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200})
    raise status.method_not_allowed()


async def _list_or_watch(request: web.Request, api: Api, res: Resource, ns: str | None, name: str | None,
                         force_watch: bool) -> web.StreamResponse:
    """GET on a collection (list or watch), or a watch of one object (?watch on its path, or /watch/)."""
    opts = params.list_options(request.query, force_watch)
    start = params.resource_version(opts.resource_version)
    labels, fields = _selectors(opts, res, name)
    if opts.watch:
        return await watch.serve(request, api, res, ns, opts, start, labels, fields, _accept(request) == "Table")
    if opts.continue_token:
        # Lists are never split (limit is ignored, as the API allows), so no token can be continued.
        raise status.bad_request("invalid continue token: continue key is not valid: this server never splits lists")
    items, rev = await api.list(res, ns, labels, fields)
    return _render_list(request, res, items, rev)


def _patch_kind(request: web.Request) -> str:
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
    kind = PATCH_TYPES.get(ctype)
    if kind is None:
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: {', '.join(PATCH_TYPES)}")
    return kind


async def _patch(request: web.Request, api: Api, res: Resource, ns: str | None, name: str, sub: str | None) -> dict:
    kind = _patch_kind(request)
    dry_run = params.write_options(request.query, "PatchOptions", kind == "apply").dry_run
    body = await _body(request, allow_yaml=kind == "apply")
    obj = await api.patch(res, ns, name, kind, body, sub, dry_run)
    if res.kind == "PodDisruptionBudget" and sub is None and not dry_run:
        obj = await _refresh_pdb(api, obj)
    return obj


async def _refresh_pdb(api: Api, pdb: dict) -> dict:
    """Fill a PDB's status from the live pods after it is created or its spec changes."""
    from .eviction import pdb_status

    meta = pdb["metadata"]
    st = await pdb_status(api, pdb)
    try:
        return await api.patch(api.resource_for("policy/v1", "PodDisruptionBudget"), meta["namespace"], meta["name"],
                               "merge", {"status": st}, "status")
    except ApiError:
        return pdb


async def _get_log(request: web.Request, api: Api, ns: str, name: str) -> web.StreamResponse:
    opts = params.log_options(request.query, name)
    pod, container = await subresources.pick_container(api, ns, name, opts.container)
    text = await subresources.stored_log(api, ns, name, container)
    if text is not None:
        return web.Response(text=subresources.tail(text, opts.tail_lines, opts.limit_bytes), content_type="text/plain")
    endpoint = await subresources.kubelet_endpoint(api, pod)
    if endpoint is None:
        return web.Response(text="", content_type="text/plain")
    ip, port = endpoint
    upstream_query = opts.kubelet_query()
    host = f"[{ip}]" if ":" in ip else ip
    url = (f"http://{host}:{port}/containerLogs/{ns}/{name}/{container}"
           + ("?" + urlencode(upstream_query) if upstream_query else ""))
    timeout = aiohttp.ClientTimeout(total=None if opts.follow else 30, sock_connect=5)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as upstream:
            if upstream.status >= 400:
                text = (await upstream.text())[:500].strip()
                if upstream.status in (400, 404):
                    # e.g. "previous terminated container ... not found": the kubelet's words reach kubectl.
                    raise ApiError(upstream.status, "BadRequest" if upstream.status == 400 else "NotFound", text)
                raise status.internal(f"kubelet {ip}:{port} answered {upstream.status}: {text}")
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise status.internal(f'Get "{url}": {type(exc).__name__}: {exc}') from None


# -- application -----------------------------------------------------------------------------------------


def build_app(api: Api, advertise_address: str = "127.0.0.1:6443", client_cert_required: bool = True) -> web.Application:
    """The aiohttp application serving the API over ``api``.

    ``client_cert_required`` False (no --client-ca-file) serves everyone: only for tests on loopback.
    """
    app = web.Application(middlewares=[middleware], client_max_size=16 * 1024 * 1024)
    app[API_KEY] = api
    app[ADDRESS_KEY] = advertise_address
    app[AUTH_KEY] = client_cert_required
    r = app.router
    r.add_get("/version", h_version)
    r.add_get("/version/", h_version)
    r.add_get("/api", h_api)
    r.add_get("/api/", h_api)
    r.add_get("/apis", h_apis)
    r.add_get("/apis/", h_apis)
    for name in ("healthz", "livez", "readyz"):
        r.add_get(f"/{name}", h_health)
        r.add_get(f"/{name}/{{check:.*}}", h_health)
    r.add_get("/openapi/v3", h_openapi_v3)
    r.add_get("/openapi/v3/{tail:.*}", h_openapi_v3)
    r.add_get("/openapi/v2", h_openapi_v2)

    async def h_group(request: web.Request) -> web.Response:
        doc = discovery.group(request.match_info["group"])
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return json_response(doc)

    r.add_get("/apis/{group}", h_group)
    r.add_get("/apis/{group}/", h_group)
    r.add_route("*", "/api/v1{tail:.*}", h_resource)
    r.add_route("*", "/apis/{group}/{version}{tail:.*}", h_resource)
    return app


def server_ssl_context(cert_file: str, key_file: str, client_ca_file: str | None) -> ssl.SSLContext:
    """TLS for the API: client certificates are verified against ``client_ca_file`` when presented."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        ctx.load_verify_locations(client_ca_file)
        # Optional at the TLS layer so that /healthz and /version answer anonymous probes;
        # every other path answers 401 without a verified certificate (see middleware).
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
