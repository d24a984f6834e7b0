"""The API stand-in process: storage, bootstrap objects, HTTPS listener, controllers, shutdown.

Side effects: listens on ``--bind-address:--secure-port``, follows etcd with
one watch for the watch cache (:mod:`.watchcache`), writes the initial
objects (namespaces default, kube-system, kube-public, kube-node-lease; the
``kubernetes`` Service and Endpoints) when they are missing, and writes the
controllers' client certificate to a private temporary directory that is
removed at exit. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import ipaddress
import logging
import shutil
import signal
import socket
import tempfile
import uuid
from pathlib import Path

from aiohttp import web

from . import pki
from .api import Api
from .config import ServerConfig
from .etcdstore import EtcdStore
from .resources import get as resource
from .server import build_app, server_ssl_context
from .status import ApiError
from .storage import MemoryStore, StorageUnavailable, Store
from .watchcache import CachedStore

log = logging.getLogger(__name__)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CONTROLLERS_MODULE = "runbooks_lib.lab.kubeapi.controllers"


def advertise_ip(config: ServerConfig) -> str:
    if config.advertise_address:
        return config.advertise_address
    if config.bind_address not in ("0.0.0.0", "::", ""):
        return config.bind_address
    return "127.0.0.1"


def local_url(config: ServerConfig) -> str:
    """URL at which this process reaches itself."""
    scheme = "https" if config.tls_cert_file else "http"
    host = config.bind_address
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{config.secure_port}"


async def ensure_initial_objects(api: Api, config: ServerConfig) -> None:
    """Create the objects every cluster starts with (idempotent, safe with several API servers)."""
    ns_res = resource("namespaces")
    for name in INITIAL_NAMESPACES:
        try:
            await api.create(ns_res, None, {"metadata": {"name": name}})
        except ApiError as exc:
            if exc.code != 409:
                raise
    svc_res = resource("services")
    first_ip = str(api.service_net.network_address + 1)
    try:
        await api.create(svc_res, "default", {
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": first_ip, "type": "ClusterIP", "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": config.secure_port}]},
        })
    except ApiError as exc:
        if exc.code != 409:
            raise
    ep_res = resource("endpoints")
    ip = advertise_ip(config)
    port = {"name": "https", "port": config.secure_port, "protocol": "TCP"}
    for _ in range(5):
        try:
            current = await api.get(ep_res, "default", "kubernetes")
        except ApiError as exc:
            if exc.code != 404:
                raise
            try:
                await api.create(ep_res, "default", {
                    "metadata": {"name": "kubernetes", "namespace": "default",
                                 "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                    "subsets": [{"addresses": [{"ip": ip}], "ports": [port]}],
                })
                return
            except ApiError as exc2:
                if exc2.code != 409:
                    raise
                continue
        subsets = current.get("subsets") or [{"addresses": [], "ports": [port]}]
        addresses = subsets[0].setdefault("addresses", [])
        if any(a.get("ip") == ip for a in addresses):
            return
        addresses.append({"ip": ip})
        addresses.sort(key=lambda a: a.get("ip", ""))
        current["subsets"] = subsets
        try:
            await api.update(ep_res, "default", "kubernetes", current)
            return
        except ApiError as exc:
            if exc.code != 409:
                raise


async def _bootstrap(api: Api, config: ServerConfig, stop: asyncio.Event) -> None:
    """Retry creating the initial objects until etcd answers (etcd may start after the API server)."""
    delay = 1.0
    while not stop.is_set():
        try:
            await ensure_initial_objects(api, config)
            log.info("initial objects present")
            return
        except StorageUnavailable as exc:
            log.warning("waiting for etcd to create the initial objects: %s", exc.what)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            delay = min(delay * 2, 10.0)


def controllers_credentials(config: ServerConfig, workdir: Path) -> tuple[str, str, str, str] | None:
    """(api_url, ca_file, cert_file, key_file) for the controllers, or None when not configured.

    ``--controllers-kubeconfig`` wins (its server URL is used, like kube-controller-manager's
    --kubeconfig); otherwise ``--controllers-ca-key`` with ``--client-ca-file`` issues a
    certificate for system:kube-controller-manager and the controllers use this server's local URL.
    """
    if config.controllers_kubeconfig:
        server, ca_pem, pair = pki.read_kubeconfig_credentials(config.controllers_kubeconfig)
        ca_file = pki.write_file(workdir / "ca.crt", ca_pem)
        pki.write_pair(pair, workdir / "controllers.crt", workdir / "controllers.key")
        return server, str(ca_file), str(workdir / "controllers.crt"), str(workdir / "controllers.key")
    if config.controllers_ca_key and config.client_ca_file:
        ca = pki.load_pair(config.client_ca_file, config.controllers_ca_key)
        pair = pki.issue_client_cert(ca, "system:kube-controller-manager", days=365)
        pki.write_pair(pair, workdir / "controllers.crt", workdir / "controllers.key")
        return local_url(config), config.client_ca_file, str(workdir / "controllers.crt"), str(workdir / "controllers.key")
    return None


def _controllers_entry():
    if importlib.util.find_spec(CONTROLLERS_MODULE) is None:
        return None
    module = importlib.import_module(CONTROLLERS_MODULE)
    return getattr(module, "run", None)


def make_store(config: ServerConfig) -> Store:
    """Memory storage, etcd read directly, or (``--watch-cache``) etcd behind a watch cache as kube-apiserver."""
    if config.storage == "memory":
        return MemoryStore()
    store = EtcdStore(config.etcd_servers, config.etcd_cafile, config.etcd_certfile, config.etcd_keyfile,
                      timeout=config.etcd_request_timeout, tls_server_name=config.etcd_tls_server_name)
    return CachedStore(store) if config.watch_cache else store


async def serve(config: ServerConfig, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT). Raises OSError if the port is taken."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    store = make_store(config)
    if isinstance(store, (CachedStore, EtcdStore)):
        await store.connect()
    api = Api(store, config.service_cluster_ip_range, config.service_node_port_range)
    ip = advertise_ip(config)
    host_port = f"[{ip}]:{config.secure_port}" if ":" in ip else f"{ip}:{config.secure_port}"
    app = build_app(api, host_port, client_cert_required=bool(config.client_ca_file))
    ssl_ctx = None
    if config.tls_cert_file and config.tls_private_key_file:
        ssl_ctx = server_ssl_context(config.tls_cert_file, config.tls_private_key_file, config.client_ca_file)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    bind = config.bind_address or "0.0.0.0"
    try:
        ipaddress.ip_address(bind)
    except ValueError:
        bind = socket.gethostbyname(bind)
    site = web.TCPSite(runner, bind, config.secure_port, ssl_context=ssl_ctx, reuse_address=True)
    await site.start()
    log.info("API stand-in serving on %s (storage: %s)", local_url(config), store.describe())
    workdir = Path(tempfile.mkdtemp(prefix="kubeapi-controllers-"))
    tasks = [loop.create_task(_bootstrap(api, config, stop))]
    if config.controllers:
        run = _controllers_entry()
        creds = controllers_credentials(config, workdir) if run else None
        if run is None:
            log.info("controllers are not available in this build; serving the API only")
        elif creds is None:
            log.warning("controllers not started: pass --controllers-kubeconfig or --controllers-ca-key")
        else:
            identity = f"{socket.gethostname()}_{uuid.uuid4()}"
            tasks.append(loop.create_task(run(creds[0], creds[1], creds[2], creds[3], identity,
                                              config.node_monitor_grace_period, stop)))
            log.info("controllers started as %s", identity)
    try:
        await stop.wait()
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=10)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                log.warning("background task ended with %r", t.exception())
        await runner.cleanup()
        await api.close()
        await store.close()
        shutil.rmtree(workdir, ignore_errors=True)
