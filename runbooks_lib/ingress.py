"""The front door after an install: the test app's manifests, each node's ingress, and DNS.

Probes, apart from :func:`app_manifests` (pure), :func:`delete_app`,
:func:`update_dns` and :func:`converge_dns` (actions). :func:`ask_node` sends one
HTTP request to a node's port 80 with the app's Host header (ingress-nginx
with host network answers on every node); :func:`ask_every_node` does it for
each node and says which pod answered; :func:`resolve` asks one DNS server for
a name's A records. Every request has a timeout.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from runbooks_lib import local

APP_IMAGE = "mopckou/sticky-session:latest"


def app_manifests(
    name: str, host: str, *, replicas: int, namespace: str = "default", image: str = APP_IMAGE, port: int = 8080,
    ready_path: str = "/healthz", ingress_class: str = "nginx",
) -> list[dict]:
    """Deployment (pods spread over nodes), Service and Ingress for ``host``. Pure.

    ``image`` listens on ``port`` (also given to it as $PORT) and answers
    ``ready_path`` with a 2xx when ready (its readinessProbe).

    kubectl equivalent: ``kubectl apply -f`` of these three objects; rollback:
    ``kubectl -n NAMESPACE delete deployment,service,ingress NAME``.
    """
    labels = {"app": name}
    container = {"name": name, "image": image, "ports": [{"name": "http", "containerPort": port}],
                 "env": [{"name": "PORT", "value": str(port)}],
                 "readinessProbe": {"httpGet": {"path": ready_path, "port": port}, "periodSeconds": 2}}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                     "whenUnsatisfiable": "ScheduleAnyway",
                                                     "labelSelector": {"matchLabels": labels}}],
                      "containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": port}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "namespace": namespace},
         "spec": {"ingressClassName": ingress_class, "rules": [{"host": host, "http": {"paths": [
             {"path": "/", "pathType": "Prefix",
              "backend": {"service": {"name": name, "port": {"number": 80}}}}]}}]}},
    ]


@dataclass(frozen=True)
class IngressAnswer:
    """One node's answer for the app's host name: HTTP status and, when the app says so, the pod/node that served it.

    ``ok`` is any 2xx: the ingress reached a ready pod of the app. The pod and
    node are shown when the app reports them (a JSON body with ``pod`` and
    ``node``, or X-Pod/X-Node headers, as the lab's test app does); any other
    app is proven by its status alone.
    """

    node: str
    address: str
    status: int | None  # None: no HTTP answer
    pod: str = ""
    served_by: str = ""  # the node the answering pod runs on
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def ask_node(node: str, address: str, host: str, *, port: int = 80, path: str = "/", timeout: float = 5.0) -> IngressAnswer:
    """Probe: ``GET http://ADDRESS:PORT/PATH`` with ``Host: host``; never raises for network errors."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read(65536)
    except (OSError, http.client.HTTPException) as exc:
        return IngressAnswer(node, address, None, error=f"{type(exc).__name__}: {exc}"[:200])
    finally:
        conn.close()
    pod = served_by = ""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            pod, served_by = str(doc.get("pod") or ""), str(doc.get("node") or "")
    except ValueError:
        pass
    pod = pod or resp.getheader("X-Pod") or ""
    served_by = served_by or resp.getheader("X-Node") or ""
    error = "" if 200 <= resp.status < 300 else f"HTTP {resp.status} {resp.reason}"
    return IngressAnswer(node, address, resp.status, pod, served_by, error)


def ask_every_node(nodes: Mapping[str, str], host: str, *, port: int = 80, path: str = "/",
                   timeout: float = 5.0) -> list[IngressAnswer]:
    """Probe: :func:`ask_node` for every node (name -> address), in order."""
    return [ask_node(name, address, host, port=port, path=path, timeout=timeout) for name, address in nodes.items()]


def resolve(name: str, server: str, *, port: int = 53, timeout: float = 3.0) -> tuple[str, ...]:
    """Probe: the A records of ``name`` as DNS server ``server`` answers them (sorted; empty when none).

    Raises HostUnreachable when the server does not answer within ``timeout``.
    """
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    from runbooks_lib.errors import HostUnreachable

    try:
        resp = dns.query.udp(dns.message.make_query(name, "A"), server, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError) as exc:
        raise HostUnreachable(f"DNS server {server}:{port} did not answer for {name} within {timeout:g}s: {exc}",
                              fix="check dns_server (the operator's DNS provider's resolver or the lab's DNS)") from None
    return tuple(sorted(r.address for rrset in resp.answer if rrset.rdtype == dns.rdatatype.A for r in rrset))


def delete_app(api, name: str, *, namespace: str = "default", timeout: float = 30.0) -> list:
    """Action: delete the test app's Deployment, Service and Ingress (their pods go with the Deployment).

    kubectl equivalent: ``kubectl -n NAMESPACE delete deployment,service,ingress NAME``.
    Returns kube.Applied records ("deleted" or "absent"). Rollback: apply
    :func:`app_manifests` again (the install runbook does).
    """
    from runbooks_lib import kube

    return kube.delete(api, app_manifests(name, "unused.invalid", replicas=1, namespace=namespace),
                       namespace=namespace, timeout=timeout)


def dns_command(template: Sequence[str], name: str, ips: Sequence[str]) -> list[str]:
    """The DNS hook's argument list: ``{name}`` replaced in every word, a word ``{ips}`` replaced by the IPs. Pure.

    E.g. ``["my-dns-tool", "set", "{name}", "{ips}"]`` -> ``my-dns-tool set app.example.com 1.2.3.4 1.2.3.5``.
    """
    if not template:
        raise ValueError("the DNS hook is empty")
    argv: list[str] = []
    for word in template:
        if word == "{ips}":
            argv.extend(ips)
        else:
            argv.append(word.replace("{name}", name))
    return argv


def update_dns(template: Sequence[str], name: str, ips: Sequence[str], *, timeout: float = 60.0) -> local.Result:
    """Action: run the operator's DNS hook to set ``name``'s A records to exactly ``ips``.

    The hook is whatever talks to the DNS provider (on the lab: ``runbooks lab
    dns set {name} {ips}``). Raises CommandFailed when it fails. Rollback: run
    it again with the previous list.
    """
    return local.run(dns_command(template, name, ips), timeout=timeout)


@dataclass(frozen=True)
class DnsOutcome:
    """Where a name's A records stand after :func:`converge_dns`: set by the hook, right already, or a manual step."""

    name: str
    wanted: tuple[str, ...]
    set_by_hook: bool
    resolved: tuple[str, ...]  # what ``server`` answered last (empty without a server)
    manual_step: str  # what the operator must still do at the DNS provider; empty: nothing

    def line(self) -> str:
        """One line for a step's detail."""
        state = "set by the hook" if self.set_by_hook else "manual" if self.manual_step else "already right"
        return f"DNS {self.name}: {state}" + (f"\nMANUAL STEP: {self.manual_step}" if self.manual_step else "")


def converge_dns(name: str, want: Sequence[str], *, command: Sequence[str] = (), server: str = "",
                 gone: Sequence[str] = (), timeout: float = 30.0, settle_timeout: float = 60.0) -> DnsOutcome:
    """Action: make ``name`` resolve to exactly ``want`` (every ingress node), never to an address in ``gone``.

    With the operator's hook (``command``, see :func:`dns_command`) the records
    are set, unless ``server`` already answers exactly ``want``; with a
    ``server`` the answer is then awaited (at most ``settle_timeout``:
    WaitTimedOut names what it still answers). Without a hook a wrong answer,
    or no server to ask, becomes a manual step. Raises CommandFailed when the
    hook fails. Rollback: the same call with the previous addresses.
    """
    from runbooks_lib import waits

    want = sorted(want)
    resolved: list[str] = []
    set_by_hook = False
    if command and (not server or sorted(resolve(name, server, timeout=min(5.0, timeout))) != want):
        update_dns(command, name, want, timeout=timeout)
        set_by_hook = True
    manual = ""
    if server:
        def matches() -> tuple[bool, str]:
            resolved[:] = resolve(name, server, timeout=min(5.0, timeout))
            extra, missing = sorted(set(resolved) - set(want)), sorted(set(want) - set(resolved))
            done = not extra and not set(resolved) & set(gone) and (not command or not missing)
            return done, f"{name} resolves to {resolved} on {server}, want {want}"

        if command:
            waits.wait_for(matches, timeout=settle_timeout, interval=2,
                           what=f"{name} to resolve to {', '.join(want)} on {server}")
        elif not matches()[0]:
            extra, missing = sorted(set(resolved) - set(want)), sorted(set(want) - set(resolved))
            manual = (f"remove {', '.join(extra)} from the A records of {name}" if not missing
                      else f"make {name} resolve to {', '.join(want)} (add {', '.join(missing)}"
                           + (f", remove {', '.join(extra)})" if extra else ")"))
    elif not command:
        manual = f"make {name} resolve to {', '.join(want)} only" + (f" (drop {', '.join(gone)})" if gone else "")
    return DnsOutcome(name, tuple(want), set_by_hook, tuple(resolved), manual)
