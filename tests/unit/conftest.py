"""Unit tests never reach the network: only loopback and Unix sockets are allowed.

A test that really needs another address (a network namespace it made itself)
asks for the ``allow_addresses`` fixture and registers the addresses it owns.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

_ALLOWED: set[str] = set()
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check(sock: socket.socket, address: object) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) else str(address)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AssertionError(f"unit test tried to connect to a name: {host!r}") from None
    if ip.is_loopback or str(ip) in _ALLOWED:
        return
    raise AssertionError(f"unit test tried to reach the network: {address!r}")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    yield
    _ALLOWED.clear()


@pytest.fixture
def allow_addresses():
    """Return a function that whitelists addresses the test itself created."""

    def allow(*addresses: str) -> None:
        _ALLOWED.update(addresses)

    return allow
