"""Query parameters of the API stand-in, read as kube-apiserver 1.30 reads them (helper and HTTP layer)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient
from multidict import MultiDict

from runbooks_lib.lab.kubeapi import params
from runbooks_lib.lab.kubeapi.api import Api
from runbooks_lib.lab.kubeapi.status import ApiError

from .test_kubeapi_server import call, pod, run


def q(**kw: str) -> MultiDict:
    return MultiDict(kw)


@pytest.mark.parametrize("value, expected", [
    ("true", True), ("True", True), ("TRUE", True), ("1", True), ("t", True), ("", True), ("yes", True),
    ("false", False), ("False", False), ("FALSE", False), ("fAlSe", False), ("0", False),
])
def test_booleans_follow_apimachinery_not_parsebool(value: str, expected: bool) -> None:
    assert params.flag(q(watch=value), "watch") is expected
    assert params.optional_flag(q(watch=value), "watch") is expected


def test_absent_booleans() -> None:
    assert params.flag(q(), "watch") is False
    assert params.optional_flag(q(), "sendInitialEvents") is None


@pytest.mark.parametrize("value, expected", [("5", 5), ("+5", 5), ("-3", -3), ("0", 0), ("9223372036854775807", 2**63 - 1)])
def test_integers_parse_like_go(value: str, expected: int) -> None:
    assert params.integer(q(limit=value), "limit") == expected


@pytest.mark.parametrize("value, why", [("0.1s", "invalid syntax"), ("", "invalid syntax"), (" 5", "invalid syntax"),
                                        ("1_000", "invalid syntax"), ("9223372036854775808", "value out of range")])
def test_bad_integers_are_400_with_go_message(value: str, why: str) -> None:
    with pytest.raises(ApiError) as err:
        params.integer(q(timeoutSeconds=value), "timeoutSeconds")
    assert err.value.code == 400 and err.value.reason == "BadRequest"
    assert err.value.message == f'strconv.ParseInt: parsing "{value}": {why}'


def test_resource_version_parse_is_upstream_500() -> None:
    assert params.resource_version(None) is None and params.resource_version("0") is None
    assert params.resource_version("42") == 42
    with pytest.raises(ApiError) as err:
        params.resource_version("abc")
    assert err.value.code == 500 and "reason" not in err.value.status()
    assert err.value.message == 'resourceVersion: Invalid value: "abc": strconv.ParseUint: parsing "abc": invalid syntax'


def test_watch_list_is_refused_as_upstream_1_30() -> None:
    with pytest.raises(ApiError) as err:
        params.list_options(q(watch="1", sendInitialEvents="true", resourceVersionMatch="NotOlderThan",
                              allowWatchBookmarks="true"))
    doc = err.value.status()
    assert doc["code"] == 422 and doc["reason"] == "Invalid"
    assert doc["message"] == ('ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: sendInitialEvents '
                              "is forbidden for watch unless the WatchList feature gate is enabled")
    assert doc["details"] == {"group": "meta.k8s.io", "kind": "ListOptions", "causes": [{
        "reason": "FieldValueForbidden", "field": "sendInitialEvents",
        "message": "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"}]}
    # Without resourceVersionMatch both errors are listed.
    with pytest.raises(ApiError) as err:
        params.list_options(q(watch="true", sendInitialEvents="true"))
    assert err.value.message.startswith('ListOptions.meta.k8s.io "" is invalid: [resourceVersionMatch: Forbidden: '
                                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, ")


@pytest.mark.parametrize("query, message", [
    ({"sendInitialEvents": "true"}, "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"),
    ({"resourceVersionMatch": "NotOlderThan"},
     "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"),
    ({"resourceVersion": "5", "resourceVersionMatch": "Newest"},
     'resourceVersionMatch: Unsupported value: "Newest": supported values: "Exact", "NotOlderThan", ""'),
    ({"watch": "true", "resourceVersionMatch": "NotOlderThan"},
     "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"),
])
def test_list_options_validation(query: dict, message: str) -> None:
    with pytest.raises(ApiError) as err:
        params.list_options(MultiDict(query))
    assert err.value.code == 422 and err.value.message == f'ListOptions.meta.k8s.io "" is invalid: {message}'


def test_watch_timeout_defaults_like_min_request_timeout() -> None:
    assert params.list_options(q(watch="true", timeoutSeconds="7")).watch_timeout() == 7
    for value in ("0", None):
        opts = params.list_options(q(watch="true", **({"timeoutSeconds": value} if value else {})))
        assert 1800 <= opts.watch_timeout() <= 3600
    assert params.list_options(q(watch="true", timeoutSeconds="-1")).watch_timeout() == -1


def test_write_options() -> None:
    assert params.write_options(MultiDict([("dryRun", "All")]), "CreateOptions").dry_run is True
    assert params.write_options(q(fieldManager="kubectl-edit", fieldValidation="Strict"), "UpdateOptions").dry_run is False
    with pytest.raises(ApiError) as err:
        params.write_options(q(dryRun="true"), "CreateOptions")
    assert err.value.message == ('CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"true"}: '
                                 'supported values: "All"')
    with pytest.raises(ApiError) as err:
        params.write_options(q(), "PatchOptions", apply_patch=True)
    assert err.value.message == 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    with pytest.raises(ApiError) as err:
        params.write_options(q(force="true"), "PatchOptions")
    assert "force: Forbidden: may not be specified for non-apply patch" in err.value.message
    with pytest.raises(ApiError) as err:
        params.write_options(q(fieldValidation="strict"), "CreateOptions")
    assert 'fieldValidation: Unsupported value: "strict": supported values: "", "Ignore", "Strict", "Warn"' in err.value.message
    with pytest.raises(ApiError) as err:
        params.write_options(q(fieldManager="a" * 129), "CreateOptions")
    assert "fieldManager: Too long: must have at most 128 bytes" in err.value.message


def test_delete_options_body_wins_over_query() -> None:
    options, dry = params.delete_options(q(gracePeriodSeconds="0", orphanDependents="True", dryRun="All"), {})
    assert options == {"gracePeriodSeconds": 0, "orphanDependents": True} and dry is True
    options, dry = params.delete_options(q(gracePeriodSeconds="x"), {"propagationPolicy": "Foreground"})
    assert options == {"propagationPolicy": "Foreground"} and dry is False
    with pytest.raises(ApiError) as err:
        params.delete_options(q(propagationPolicy="Cascade"), None)
    assert err.value.code == 422 and err.value.message == (
        'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "Cascade": '
        'supported values: "Foreground", "Background", "Orphan", "nil"')
    with pytest.raises(ApiError) as err:
        params.delete_options(q(propagationPolicy="Orphan", orphanDependents="false"), None)
    assert "orphanDependents and deletionPropagation cannot be both set" in err.value.message
    with pytest.raises(ApiError) as err:
        params.delete_options(q(gracePeriodSeconds="soon"), None)
    assert err.value.code == 400


def test_log_options() -> None:
    opts = params.log_options(q(follow="True", tailLines="3", container="app"), "p")
    assert (opts.follow, opts.tail_lines, opts.container) == (True, 3, "app")
    assert opts.kubelet_query() == {"tailLines": "3", "follow": "true"}
    with pytest.raises(ApiError) as err:
        params.log_options(q(tailLines="-1"), "p")
    assert err.value.code == 422 and err.value.message == (
        'PodLogOptions "p" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0')
    assert err.value.status()["details"]["name"] == "p"
    with pytest.raises(ApiError) as err:
        params.log_options(q(limitBytes="0", sinceSeconds="0"), "p")
    assert err.value.message.startswith('PodLogOptions "p" is invalid: [limitBytes: Invalid value: 0: must be greater than 0, ')


# -- through the HTTP layer ------------------------------------------------------------------------------


async def _lines(resp, count: int) -> list[dict]:
    out = []
    while len(out) < count:
        out.append(json.loads(await asyncio.wait_for(resp.content.readline(), 5)))
    return out


def test_watch_true_capitalised_streams_events_and_watch_list_is_422() -> None:
    async def t(c: TestClient, api: Api) -> None:
        _, cm = await call(c, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "a"}})
        # The Python client 36.x sends watch=True.
        resp = await c.get("/api/v1/namespaces/default/configmaps?watch=True&timeoutSeconds=5")
        assert resp.status == 200
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in await _lines(resp, 1)] == [("ADDED", "a")]
        resp.close()
        # A watch list (kubectl 1.37's rollout status) is refused, so clients fall back to list-then-watch.
        code, doc = await call(c, "GET", "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true"
                               "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
        assert code == 422 and doc["details"]["causes"][0]["field"] == "sendInitialEvents"
        code, doc = await call(c, "GET", "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=5s")
        assert code == 400 and doc["message"] == 'strconv.ParseInt: parsing "5s": invalid syntax'
        code, doc = await call(c, "GET", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=-1")
        assert code == 500 and "strconv.ParseUint" in doc["message"]
        code, doc = await call(c, "GET", "/api/v1/namespaces/default/configmaps?watch=false&limit=1")
        assert code == 200 and doc["kind"] == "ConfigMapList" and "continue" not in doc["metadata"]
        code, doc = await call(c, "GET", "/api/v1/namespaces/default/configmaps?continue=abc")
        assert code == 400 and doc["message"].startswith("invalid continue token")
        code, doc = await call(c, "GET", "/api/v1/namespaces/default/configmaps/a?resourceVersion=x")
        assert code == 500
        resp = await c.get("/api/v1/namespaces/default/configmaps/a?pretty=True")
        assert (await resp.text()).startswith('{\n  "')
        resp = await c.get("/api/v1/namespaces/default/configmaps/a?pretty=false")
        assert (await resp.text()).startswith('{"')

    run(t)


def test_watch_of_one_object_and_deprecated_watch_path() -> None:
    async def t(c: TestClient, api: Api) -> None:
        for name in ("a", "b"):
            await call(c, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": name}})
        resp = await c.get("/api/v1/namespaces/default/configmaps/b?watch=true&timeoutSeconds=5")
        assert [e["object"]["metadata"]["name"] for e in await _lines(resp, 1)] == ["b"]
        resp.close()
        resp = await c.get("/api/v1/watch/namespaces/default/configmaps?timeoutSeconds=5&fieldSelector=metadata.name%3Da")
        first = (await _lines(resp, 1))[0]
        resp.close()
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
        code, doc = await call(c, "GET", "/api/v1/namespaces/default/configmaps/b?watch=1&fieldSelector=metadata.name%3Da")
        assert code == 400 and doc["message"] == "fieldSelector metadata.name doesn't match requested name"
        # An immediate timeout (a negative timeoutSeconds) ends the watch with no events.
        resp = await c.get("/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=-1")
        assert resp.status == 200 and await asyncio.wait_for(resp.read(), 5) == b""

    run(t)


def test_write_parameters_over_http() -> None:
    async def t(c: TestClient, api: Api) -> None:
        code, doc = await call(c, "POST", "/api/v1/namespaces/default/configmaps?dryRun=All", {"metadata": {"name": "d"}})
        assert code == 201
        code, _ = await call(c, "GET", "/api/v1/namespaces/default/configmaps/d")
        assert code == 404
        code, doc = await call(c, "POST", "/api/v1/namespaces/default/configmaps?dryRun=yes", {"metadata": {"name": "d"}})
        assert code == 422 and doc["details"]["kind"] == "CreateOptions"
        await call(c, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "d"}})
        code, doc = await call(c, "DELETE", "/api/v1/namespaces/default/configmaps/d?propagationPolicy=foreground")
        assert code == 422 and doc["details"]["kind"] == "DeleteOptions"
        code, doc = await call(c, "DELETE", "/api/v1/namespaces/default/configmaps/d?gracePeriodSeconds=now")
        assert code == 400
        code, _ = await call(c, "DELETE", "/api/v1/namespaces/default/configmaps/d?dryRun=All")
        assert code == 200 and (await call(c, "GET", "/api/v1/namespaces/default/configmaps/d"))[0] == 200
        # A server-side dry-run eviction (kubectl drain --dry-run=server) leaves the pod alone.
        await call(c, "POST", "/api/v1/namespaces/default/pods", pod("p"))
        code, _ = await call(c, "POST", "/api/v1/namespaces/default/pods/p/eviction",
                             {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"},
                              "deleteOptions": {"dryRun": ["All"]}})
        assert code == 201 and (await call(c, "GET", "/api/v1/namespaces/default/pods/p"))[0] == 200
        code, doc = await call(c, "GET", "/api/v1/namespaces/default/pods/p/log?tailLines=-2")
        assert code == 422 and doc["message"].startswith('PodLogOptions "p" is invalid: tailLines')
        code, doc = await call(c, "PATCH", "/api/v1/namespaces/default/pods/p", {"metadata": {"name": "p"}},
                               "application/apply-patch+yaml")
        assert code == 422 and doc["details"]["causes"][0]["field"] == "fieldManager"

    run(t)
