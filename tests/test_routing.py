"""The served API's routing policy, apart from any server: route kinds, 404/405, API keys, the
error shape per route, and the entry point's readiness (``rightsizer.routing``)."""

from __future__ import annotations

import pytest

from rightsizer.routing import (ROUTES, RouteError, api_keys, check_api_key, error_body, merge_ready, route_kind,
                                task_of)


@pytest.mark.parametrize("method, path, kind", [
    ("POST", "/v2/models/ticket_routing/infer", "v2"), ("post", "/v1/completions/", "completions"),
    ("POST", "/v1/chat/completions", "chat"), ("GET", "/v1/models", "models"), ("GET", "/health", "health"),
    ("GET", "/v2/health/live", "health"), ("GET", "/v2/health/ready", "ready")])
def test_each_route_has_its_kind(method, path, kind):
    assert route_kind(method, path) == kind


@pytest.mark.parametrize("method, path, status, allow", [
    ("GET", "/v1/completions", 405, "POST"), ("DELETE", "/v2/models/x/infer", 405, "POST"),
    ("POST", "/v1/models", 405, "GET"), ("GET", "/v2/models/a/b/infer", 404, None),  # a task has no "/"
    ("GET", "/v2/models//infer", 404, None), ("POST", "/v3/x", 404, None)])
def test_an_unserved_route_is_404_or_405_with_allow(method, path, status, allow):
    with pytest.raises(RouteError) as e:
        route_kind(method, path)
    assert e.value.status == status and e.value.headers.get("Allow") == allow
    if status == 404:
        assert "GET /v1/models" in e.value.message  # names the routes


def test_the_error_shape_follows_the_route():
    assert error_body("/v2/models/t/infer", 400, "inputs: bad") == {"error": "inputs: bad"}
    openai = error_body("/v1/completions", 401, "no key", "x")
    assert openai == {"error": {"message": "no key", "type": "authentication_error", "param": "x", "code": 401}}
    assert error_body("/anything", 404, "m")["error"]["type"] == "not_found_error"


def test_api_keys_are_required_on_every_route_but_health():
    keys = api_keys({"RIGHTSIZER_API_KEYS": " k1, ,k2 "})
    assert keys == {"k1", "k2"} and api_keys({}) == frozenset()
    check_api_key("/v1/models", {}, frozenset())  # no keys: nothing required
    for path in ("/health", "/v2/health/live", "/v2/health/ready/"):
        check_api_key(path, {}, keys)
    check_api_key("/v1/models", {"authorization": "Bearer k2"}, keys)
    check_api_key("/v1/models", {"Authorization": "bearer k1"}, keys)
    for headers in ({}, {"Authorization": "Bearer k3"}, {"Authorization": "k1"}, {"Authorization": "Basic k1"},
                    {"Authorization": "Bearer "}, {"X-Api-Key": "k1"}):
        with pytest.raises(RouteError) as e:
            check_api_key("/v2/models/t/infer", headers, keys)
        assert e.value.status == 401 and e.value.headers == {"WWW-Authenticate": "Bearer"}
        assert "k1" not in e.value.message and "k3" not in e.value.message


def test_the_entry_point_is_ready_when_every_group_is():
    tasks_at = {"g1": ["a", "b"], "g2": ["c"]}
    assert merge_ready({"g1": (200, {}), "g2": (200, {})}, tasks_at) == (200, {"ready": True, "tasks": ["a", "b", "c"]})
    status, body = merge_ready({"g1": (200, {}), "g2": (503, {"error": "c did not load"})}, tasks_at)
    assert status == 503 and "g2 (c) answered 503" in body["error"] and "c did not load" in body["error"]


def test_task_of_reads_the_task_or_none_for_the_routes_every_group_answers():
    tasks = ["a", "b"]
    assert task_of("POST", "/v2/models/a/infer", None, tasks) == "a"
    assert task_of("POST", "/v1/completions", {"model": "b"}, tasks) == "b"
    assert task_of("POST", "/v1/chat/completions", b'{"model": "a"}', tasks) == "a"
    for method, path in [(m, p) for (m, p), kind in ROUTES.items() if kind in ("models", "ready", "health")]:
        assert task_of(method, path, None, tasks) is None
    with pytest.raises(RouteError, match="model: 'z' is not a served task"):
        task_of("POST", "/v2/models/z/infer", None, tasks)


def test_an_error_writes_one_line_refused_below_500_failed_from_500():
    lines = []

    class Logger:
        def info(self, msg, **fields):
            lines.append(("info", msg, fields))

        def warning(self, msg, **fields):
            lines.append(("warning", msg, fields))

    RouteError(401, "no API key: send it").log(Logger(), "/v1/models")
    RouteError(503, "x" * 400).log(Logger(), "/v2/health/ready")
    assert lines[0] == ("info", "request refused", {"status": 401, "route": "/v1/models", "reason": "no API key: send it"})
    assert lines[1][:2] == ("warning", "request failed") and len(lines[1][2]["reason"]) == 300
