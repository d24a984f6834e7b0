"""Probe lanes: a target and the client model that probes it.

How a client reacts to a dead address decides what a user sees, so each lane
emulates one client model:

``naive``           one IP per request, round-robin over the resolved set, a
                    browser-like long connect timeout.
``fallback``        tries the resolved IPs in turn with a short connect timeout.
``happy_eyeballs``  RFC 8305: next address after a 250 ms stagger (or at once
                    when an attempt fails); first connection wins, the others
                    are closed.
``direct``          one fixed IP, no DNS (one lane per node IP).
``keepalive``       one persistent connection reused for every request; a
                    connection to a powered-off node fails only by read timeout.

The resolved set is rotated per request (request ``k`` starts at index
``k mod n``), as a population of clients that each got the server's rotated
answer would see it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from runbooks_lib.errors import BadParameters


Model = Literal["naive", "fallback", "happy_eyeballs", "direct", "keepalive"]
MODELS: tuple[str, ...] = ("naive", "fallback", "happy_eyeballs", "direct", "keepalive")


def is_ip(text: str) -> bool:
    """True when ``text`` is an IPv4 or IPv6 literal."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    """Where a lane sends its requests.

    ``address`` is a DNS name (resolved by the probe) or an IP literal;
    ``host_header`` defaults to ``address`` (set it when the address is an
    IP but the server routes by name, as an ingress does).
    """

    address: str
    port: int = 80
    path: str = "/"
    host_header: str | None = None

    @property
    def host(self) -> str:
        return self.host_header or self.address

    @property
    def is_ip(self) -> bool:
        return is_ip(self.address)


@dataclass(frozen=True)
class Lane:
    """One client model probing one target at the probe's rate.

    Timeouts are seconds. ``connect_timeout`` bounds each connection attempt,
    ``read_timeout`` the wait for the complete response once the request is
    written. ``stagger`` is the happy-eyeballs delay between attempts.
    """

    name: str
    model: Model
    target: Target
    connect_timeout: float
    read_timeout: float = 10.0
    stagger: float = 0.25

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise BadParameters(f"unknown client model {self.model!r}", fix=f"use one of {', '.join(MODELS)}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0 or self.stagger <= 0:
            raise BadParameters(f"lane {self.name!r}: timeouts and stagger must be positive")
        if self.model == "direct" and not self.target.is_ip:
            raise BadParameters(f"lane {self.name!r}: a direct lane needs an IP address, got {self.target.address!r}")

    @property
    def longest_request(self) -> float:
        """Upper bound of one request's duration under this model (seconds)."""
        if self.model in ("fallback", "happy_eyeballs"):
            # The number of addresses is unknown until resolution; 8 is generous
            # for a handful of nodes and only sizes limits, never behaviour.
            return 8 * self.connect_timeout + self.read_timeout
        return self.connect_timeout + self.read_timeout


def naive(target: Target, *, connect_timeout: float = 30.0, read_timeout: float = 10.0, name: str = "naive") -> Lane:
    """A browser-like client: one IP per request, round-robin, long connect timeout."""
    return Lane(name, "naive", target, connect_timeout, read_timeout)


def fallback(target: Target, *, connect_timeout: float = 0.3, read_timeout: float = 10.0, name: str = "fallback") -> Lane:
    """A client that tries each resolved IP in turn with a short connect timeout."""
    return Lane(name, "fallback", target, connect_timeout, read_timeout)


def happy_eyeballs(
    target: Target,
    *,
    stagger: float = 0.25,
    connect_timeout: float = 10.0,
    read_timeout: float = 10.0,
    name: str = "happy_eyeballs",
) -> Lane:
    """An RFC 8305 client: a new attempt every ``stagger`` seconds, first connection wins."""
    return Lane(name, "happy_eyeballs", target, connect_timeout, read_timeout, stagger)


def direct(
    ip: str,
    *,
    port: int = 80,
    path: str = "/",
    host_header: str | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 10.0,
    name: str | None = None,
) -> Lane:
    """A lane pinned to one node IP (no DNS)."""
    return Lane(name or f"direct {ip}", "direct", Target(ip, port, path, host_header), connect_timeout, read_timeout)


def keepalive(target: Target, *, connect_timeout: float = 10.0, read_timeout: float = 10.0, name: str = "keepalive") -> Lane:
    """One persistent connection reused for every request (requests queue on it)."""
    return Lane(name, "keepalive", target, connect_timeout, read_timeout)
