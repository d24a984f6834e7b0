"""The kubelet stand-in's own API (port 10250): health, pods and container logs.

As kube-apiserver does for ``kubectl logs``, the API stand-in fetches
``GET http://NODE_IP:10250/containerLogs/NS/POD/CONTAINER`` (the port is the
node's status.daemonEndpoints.kubeletEndpoint.Port) with the query parameters
tailLines, limitBytes, previous and follow. Plain HTTP by default, which is
what the API stand-in speaks; with tlsCertFile and tlsPrivateKeyFile in the
KubeletConfiguration it serves HTTPS instead, and with
authentication.x509.clientCAFile it also requires a client certificate. The
endpoints are read-only (logs and the pod list).
"""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

FOLLOW_POLL = 0.3
FOLLOW_LIMIT = 3600.0


def _tail(data: bytes, lines: int | None, limit: int | None) -> bytes:
    if lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""
    if limit is not None:
        data = data[:limit]
    return data


def make_app(kubelet) -> web.Application:
    """The aiohttp application serving ``kubelet`` (an agent.Kubelet)."""
    app = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def pods(request: web.Request) -> web.Response:
        items = [w.pod for w in kubelet.workers.values()]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    async def container_logs(request: web.Request) -> web.StreamResponse:
        ns, pod = request.match_info["namespace"], request.match_info["pod"]
        cname = request.match_info.get("container")
        container = kubelet.find_container(ns, pod, cname)
        if container is None:
            raise web.HTTPNotFound(text=f"container {cname!r} in pod {ns}/{pod} is not running on this node\n")
        q = request.query
        previous = q.get("previous", "false").lower() in ("true", "1")
        try:
            lines = int(q["tailLines"]) if "tailLines" in q else None
            limit = int(q["limitBytes"]) if "limitBytes" in q else None
        except ValueError:
            raise web.HTTPBadRequest(text="tailLines and limitBytes must be integers\n") from None
        path = container.log_file(previous)
        if path is None:
            if previous:
                raise web.HTTPBadRequest(text=f"previous terminated container {cname!r} in pod {pod!r} not found\n")
            return web.Response(text="", content_type="text/plain")
        data = _tail(path.read_bytes(), lines, limit)
        if q.get("follow", "false").lower() not in ("true", "1"):
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(data)
        offset = path.stat().st_size
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FOLLOW_LIMIT
        # Follow the file the container writes now; end when the container is restarted or after an hour.
        while loop.time() < deadline and container.log_file(False) == path:
            await asyncio.sleep(FOLLOW_POLL)
            size = path.stat().st_size
            if size > offset:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(size - offset)
                offset = size
                await resp.write(chunk)
        await resp.write_eof()
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/pods", pods)
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    return app


async def serve(kubelet, address: str, port: int, tls_cert_file: str | None = None,
                tls_key_file: str | None = None, client_ca_file: str | None = None) -> web.AppRunner:
    """Start the server; returns the runner (call ``await runner.cleanup()`` to stop).

    Raises OSError if the port is taken, ssl.SSLError/OSError for unusable TLS files.
    """
    ctx = None
    if tls_cert_file and tls_key_file:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls_cert_file, tls_key_file)
        if client_ca_file:
            ctx.load_verify_locations(client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
    runner = web.AppRunner(make_app(kubelet), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address, port, ssl_context=ctx, reuse_address=True)
    await site.start()
    return runner
