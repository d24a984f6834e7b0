"""DNS round-robin: one name answering with every node IP (the setup the runbooks start from).

Records are set on the lab's DNS server (:mod:`runbooks_lib.lab.dns`), the
server the probe resolves against. On a real cluster the same records live at
the DNS provider; pass any object with ``set_records(name, ips, ttl)`` as
``dns``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runbooks_lib.probe import Target


@dataclass
class DnsRoundRobin:
    """A name whose A records are ``ips``, with a short ``ttl``.

    ``dns`` is a :class:`runbooks_lib.lab.dns.DnsServer` (or anything with the
    same ``set_records``). ``setup`` writes the records and waits until they
    are served; ``teardown`` removes the name. Both are idempotent.
    """

    name: str
    ips: tuple[str, ...]
    dns: Any
    ttl: int | None = None
    port: int = 80
    path: str = "/"
    label: str = "dns-rr"

    def setup(self) -> None:
        """Publish the records. Rollback: :meth:`teardown`."""
        self.dns.set_records(self.name, list(self.ips), self.ttl)

    def teardown(self) -> None:
        """Remove the name from the DNS server."""
        self.dns.set_records(self.name, [])

    def set_ips(self, ips: tuple[str, ...] | list[str]) -> None:
        """Change the answer at run time (e.g. drop a dead node as a health-checked DNS would)."""
        self.ips = tuple(ips)
        self.dns.set_records(self.name, list(self.ips))

    def target(self) -> Target:
        return Target(self.name, self.port, self.path, self.name)
