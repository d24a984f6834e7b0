"""PrepareParams (the prepare-nodes runbook's schema) and check_prepare."""

from __future__ import annotations

import pytest

from runbooks_lib import errors, params, schemas

KNOWN = ["node1", "node2", "node3", "node4"]


def test_defaults_and_limit_in_inventory_order() -> None:
    p = params.validate(schemas.PrepareParams, {"upstream_dns_servers": ["10.213.7.1"]})
    assert isinstance(p, schemas.Target) and p.dry_run is True and p.confirm == ""
    assert schemas.check_prepare(p, KNOWN) == KNOWN
    limited = params.validate(schemas.PrepareParams, {"limit": ["node3", "node1"], "upstream_dns_servers": ["9.9.9.9"]})
    assert limited.limit == ("node3", "node1")
    assert schemas.check_prepare(limited, KNOWN) == ["node1", "node3"]


@pytest.mark.parametrize(("values", "message"), [
    ({"limit": ["node1", "node9"]}, "not in the inventory: node9"),
    ({"limit": ["node1", "node1"]}, "named twice"),
    ({"upstream_dns_servers": []}, "at least one DNS server"),
    ({"upstream_dns_servers": ["127.0.0.53"]}, "loopback"),
    ({"upstream_dns_servers": ["dns.example"]}, "not an IP address"),
    ({"timeout_s": 0}, "must be positive"),
])
def test_check_prepare_refuses(values: dict, message: str) -> None:
    p = params.validate(schemas.PrepareParams, {"upstream_dns_servers": ["9.9.9.9"], **values})
    with pytest.raises(errors.BadParameters) as exc:
        schemas.check_prepare(p, KNOWN)
    assert message in str(exc.value).splitlines()[0]


def test_types_and_unknown_keys_fail_validation() -> None:
    with pytest.raises(errors.BadParameters, match="colour: unknown parameter"):
        params.validate(schemas.PrepareParams, {"colour": "blue"})
    with pytest.raises(errors.BadParameters, match="dry_run"):
        params.validate(schemas.PrepareParams, {"dry_run": "maybe"})
