"""Deployments: rollout state and a bounded wait for it (``kubectl rollout status``)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import kubernetes

from runbooks_lib import runbook
from runbooks_lib.errors import PreconditionFailed
from runbooks_lib.kube import api as api_
from runbooks_lib.kube.api import REQUEST_TIMEOUT


@dataclass(frozen=True)
class Rollout:
    """A Deployment's rollout: wanted replicas against updated, ready and available ones."""

    name: str
    namespace: str
    replicas: int
    updated: int
    ready: int
    available: int
    generation: int
    observed_generation: int

    @property
    def complete(self) -> bool:
        return (self.observed_generation >= self.generation and self.updated == self.replicas
                and self.ready == self.replicas and self.available == self.replicas)

    def line(self) -> str:
        return (f"{self.namespace}/{self.name}: {self.updated}/{self.replicas} updated, {self.ready} ready, "
                f"{self.available} available (generation {self.observed_generation}/{self.generation})")


def rollout(api: kubernetes.client.ApiClient, name: str, namespace: str = "default", *,
            timeout: float = REQUEST_TIMEOUT) -> Rollout | None:
    """Probe: the rollout state of Deployment ``namespace/name``, or None when it does not exist."""
    obj = api_.get(api, f"/apis/apps/v1/namespaces/{quote(namespace)}/deployments/{quote(name)}", timeout=timeout)
    if obj is None:
        return None
    status, meta = obj.get("status") or {}, obj.get("metadata") or {}
    return Rollout(name, namespace, int((obj.get("spec") or {}).get("replicas", 1)),
                   int(status.get("updatedReplicas") or 0), int(status.get("readyReplicas") or 0),
                   int(status.get("availableReplicas") or 0), int(meta.get("generation") or 0),
                   int(status.get("observedGeneration") or 0))


def wait_for_rollout(api: kubernetes.client.ApiClient, name: str, namespace: str = "default", *,
                     timeout: float = 300.0, interval: float = 2.0) -> Rollout:
    """Probe: wait until the Deployment's every replica is updated, ready and available.

    kubectl equivalent: ``kubectl rollout status deployment/NAME --timeout=...``.
    Raises PreconditionFailed when the Deployment does not exist, WaitTimedOut
    naming the replicas still missing.
    """
    last: list[Rollout] = []

    def done() -> tuple[bool, str]:
        state = rollout(api, name, namespace, timeout=min(REQUEST_TIMEOUT, timeout))
        if state is None:
            raise PreconditionFailed(f"Deployment {namespace}/{name} does not exist",
                                     fix="deploy it first (the install runbook deploys the test app)")
        last[:] = [state]
        return state.complete, state.line()

    runbook.wait_for(done, timeout=timeout, interval=interval, what=f"the rollout of {namespace}/{name}",
                     fix=f"kubectl -n {namespace} describe deployment {name}; look at its pods' events")
    return last[0]
