"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every candidate reads the Lease every ``retry_period``. The holder renews
renewTime with a resourceVersion precondition (PUT, 409 on a lost race). A
candidate takes the Lease over only when it has seen the same record for
longer than leaseDurationSeconds on its own clock (so clock skew between
machines does not matter). The holder stops leading when it could not renew
for ``renew_deadline``. Side effects: creates/updates the Lease; :meth:`release`
clears holderIdentity so another candidate can take over at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from runbooks_lib.errors import RunbookError
from runbooks_lib.lab.kubeapi import client as kc
from runbooks_lib.lab.kubeapi.controllers.util import now_micro


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str = "kube-system"
    name: str = "kube-controller-manager"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    """One candidate's view of the election (``identity`` must be unique per candidate)."""

    def __init__(self, api: kc.KubeClient, identity: str, config: ElectionConfig = ElectionConfig(),
                 clock=time.monotonic) -> None:
        self.api = api
        self.identity = identity
        self.config = config
        self.clock = clock
        self._observed: tuple | None = None
        self._observed_at = 0.0
        self.last_renew: float | None = None

    @property
    def is_leader(self) -> bool:
        """True while the last successful renewal is within renew_deadline."""
        return self.last_renew is not None and self.clock() - self.last_renew < self.config.renew_deadline

    def _spec(self, previous: dict | None) -> dict:
        now = now_micro()
        prev = previous or {}
        same_holder = prev.get("holderIdentity") == self.identity
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.config.lease_duration),
            "acquireTime": prev.get("acquireTime") if same_holder and prev.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": int(prev.get("leaseTransitions") or 0) + (0 if same_holder else 1),
        }

    async def try_acquire_or_renew(self) -> bool:
        """One round: create, renew or take over the Lease. Returns True if this candidate holds it now.

        API failures return False (they are what makes a holder lose the lease).
        """
        cfg = self.config
        try:
            try:
                lease = await self.api.get(kc.LEASES, cfg.name, cfg.namespace)
            except kc.ApiError as exc:
                if not exc.not_found:
                    return False
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": cfg.name, "namespace": cfg.namespace}, "spec": self._spec(None)}
                body["spec"]["leaseTransitions"] = 0
                await self.api.create(kc.LEASES, body)
                self._renewed()
                return True
            spec = lease.get("spec") or {}
            record = (spec.get("holderIdentity"), spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
            now = self.clock()
            if record != self._observed:
                self._observed, self._observed_at = record, now
            holder = spec.get("holderIdentity")
            duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
            if holder and holder != self.identity and now < self._observed_at + duration:
                return False
            lease["spec"] = self._spec(spec)
            updated = await self.api.update(kc.LEASES, lease)
            new_spec = updated.get("spec") or {}
            self._observed = (new_spec.get("holderIdentity"), new_spec.get("renewTime"),
                              updated["metadata"].get("resourceVersion"))
            self._observed_at = self.clock()
            self._renewed()
            return True
        except RunbookError:
            return False

    def _renewed(self) -> None:
        self.last_renew = self.clock()

    async def release(self) -> None:
        """Give the Lease up (holderIdentity cleared) if this candidate holds it; errors are ignored."""
        if not self.is_leader:
            return
        self.last_renew = None
        try:
            lease = await self.api.get(kc.LEASES, self.config.name, self.config.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["leaseDurationSeconds"] = 1
            lease["spec"]["renewTime"] = now_micro()
            await self.api.update(kc.LEASES, lease)
        except RunbookError:
            pass
