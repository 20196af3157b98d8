"""Which task a request is for, as the application's entry point reads it (no MLRun, no web
framework, no torch: the router imports only this).

A fleet plan places the task models in several serving functions (placement groups); the
entry point reads the task a request names (the V2 path's, the OpenAI body's ``model``) and
passes the request on to the group that hosts it. A request no group could answer gets the
same 400 a group's own parser gives (``rightsizer.serving.api``), naming every served task.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from typing import Any

V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"
# every route the served API answers (a group function and the entry point alike): (method, path) -> kind
ROUTES = {("POST", "/v2/models/{task}/infer"): "v2", ("POST", "/v1/completions"): "completions",
          ("POST", "/v1/chat/completions"): "chat", ("GET", "/v1/models"): "models",
          ("GET", "/health"): "health", ("GET", "/v2/health/live"): "health",
          ("GET", "/v2/health/ready"): "ready"}
KINDS = tuple(dict.fromkeys(ROUTES.values()))  # every kind of request, in route order
# the header names a proxy must not pass on (RFC 9110 7.6.1 hop-by-hop fields, and the framing
# the next hop sets itself)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host", "content-length"})


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "method_not_allowed", 408: "timeout_error", 413: "request_too_large",
               502: "server_error", 503: "unavailable_error", 504: "timeout_error"}
HEALTH_PATHS = frozenset({"/health", "/v2/health/live", "/v2/health/ready"})  # open without an API key
# A task split by prompt length across groups (the fleet plan's mixed device types) is routed by
# its input's length in characters: the plan's cut is in prompt tokens (template included), which
# the entry point cannot count without the model's tokenizer; about four characters a token
# (English text, byte-level BPE) turns the one into the other.
CHARS_PER_TOKEN = 4.0
API_KEYS_ENV = "RIGHTSIZER_API_KEYS"  # comma-separated keys; unset or empty: no key is required


def error_body(path: str | None, status: int, message: str, param: str | None = None) -> dict:
    """The error body of a route: the V2 protocol's ``{"error": message}`` under ``/v2/``, the
    OpenAI error object everywhere else (``/v1``, and a path no route serves)."""
    if (path or "").startswith("/v2/"):
        return {"error": message}
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": status}}


class RouteError(Exception):
    """A request answered with an error: ``status``, the message naming the field or the limit,
    ``retry_after`` (seconds, on overload), extra response ``headers`` (``Allow`` on a 405,
    ``WWW-Authenticate`` on a 401). Its body is the route's shape (``error_body``)."""

    def __init__(self, status: int, message: str, param: str | None = None, retry_after: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.retry_after, self.headers = retry_after, dict(headers or {})

    def to_dict(self, path: str | None = None) -> dict:
        return error_body(path, self.status, self.message, self.param)

    def log(self, logger, route: str | None) -> None:
        """The one log line of a request answered with this error (``logger``: MLRun's, or any
        with ``info``/``warning`` taking keyword fields): refused below 500, failed from 500;
        never a header value or a key."""
        write = logger.warning if self.status >= 500 else logger.info
        write("request refused" if self.status < 500 else "request failed", status=self.status, route=route,
              reason=self.message[:300])

    def response_headers(self) -> dict[str, str]:
        extra = {"Retry-After": str(self.retry_after)} if self.retry_after else {}
        return {**extra, **self.headers}


def _matches(template: str, path: str) -> bool:
    if "{" not in template:
        return template == path
    prefix, _, rest = template.partition("{")
    suffix = rest.partition("}")[2]
    middle = path[len(prefix):len(path) - len(suffix)]
    return path.startswith(prefix) and path.endswith(suffix) and bool(middle) and "/" not in middle


def unrouted(method: str, path: str, routes: list[tuple[str, str]]) -> RouteError:
    """The error for a request no route takes: 405 with ``Allow`` where the path is served with
    other methods, else 404 listing the routes."""
    allowed = sorted({m for m, t in routes if _matches(t, path)})
    if allowed:
        return RouteError(405, f"{method} {path}: method not allowed; this route takes {', '.join(allowed)}",
                          headers={"Allow": ", ".join(allowed)})
    return RouteError(404, f"{method} {path}: not served here; routes: {sorted(f'{m} {p}' for m, p in routes)}")


def api_keys(environ: dict | None = None) -> frozenset[str]:
    """The API keys a server requires (``$RIGHTSIZER_API_KEYS``, comma-separated; on a cluster set
    from a project secret), or none."""
    raw = (os.environ if environ is None else environ).get(API_KEYS_ENV, "")
    return frozenset(k.strip() for k in raw.split(",") if k.strip())


def check_api_key(path: str | None, headers: dict | None, keys: frozenset[str]) -> None:
    """RouteError 401 unless ``keys`` is empty, the path is a health route, or the request carries
    one of the keys as ``Authorization: Bearer <key>`` (what the OpenAI client sends)."""
    if not keys or (path or "").rstrip("/") in HEALTH_PATHS:
        return
    auth = next((str(v) for k, v in (headers or {}).items() if k.lower() == "authorization"), "")
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    # compared in constant time; every key is tried, so the time does not tell which one is near
    ok = scheme.lower() == "bearer" and token and sum(hmac.compare_digest(token, k) for k in keys) > 0
    if not ok:
        why = "no API key" if not auth else "an API key this server does not accept"
        raise RouteError(401, f"{why}: send 'Authorization: Bearer <key>' (every route but the health ones "
                              "needs a key on this server)", headers={"WWW-Authenticate": "Bearer"})


def route_kind(method: str | None, path: str | None) -> str:
    """The kind of a request's route (``ROUTES``); RouteError 405 (with ``Allow``) or 404 otherwise."""
    method, path = (method or "GET").upper(), (path or "/").rstrip("/") or "/"
    for (m, template), kind in ROUTES.items():
        if m == method and _matches(template, path):
            return kind
    raise unrouted(method, path, list(ROUTES))


def task_of(method: str, path: str, body: Any, tasks: list[str]) -> str | None:
    """The served task a request is for; None for the routes every group answers (the model
    list, readiness). RouteError: 404/405 for a route no group serves, 400 naming the field and
    the served tasks."""
    path = (path or "/").rstrip("/") or "/"
    kind = route_kind(method, path)
    if kind in ("models", "ready", "health"):
        return None
    if kind == "v2":
        task = path[len(V2_PREFIX):-len(V2_SUFFIX)]
        if task not in tasks:
            raise RouteError(400, f"model: {task!r} is not a served task; expected one of {tasks}", "model")
        return task
    body = json_body(body)
    if not isinstance(body, dict):
        raise RouteError(400, f"body: expected a JSON object, got {type(body).__name__}", "body")
    task = body.get("model")
    if not isinstance(task, str) or not task:
        raise RouteError(400, f"model: expected a task name, one of {tasks}", "model")
    if task not in tasks:
        raise RouteError(400, f"model: {task!r} is not a served task; expected one of {tasks}", "model")
    return task


def plan_routes(specs: list[dict], urls: list[str]) -> tuple[dict[str, str], dict[str, str], dict[str, list]]:
    """The entry point's routes from a fleet plan's function specs and each group's URL (or
    function name): ``routes`` (route -> URL: a task's name, or for a task split by prompt length
    one route per part), ``groups`` (route -> its group's name) and ``parts`` (task -> its parts,
    shortest first: ``[most input characters or None for the rest, route]``)."""
    routes: dict[str, str] = {}
    groups: dict[str, str] = {}
    ranges: dict[str, list[tuple[list[int], str]]] = {}
    for spec, url in zip(specs, urls):
        for m in spec["models"]:
            rng = m.get("prompt_range")
            for task in m["tasks"]:
                route = task if rng is None else f"{task}--prompt-{rng[0]}-{rng[1]}"
                if rng is not None:
                    ranges.setdefault(task, []).append((list(rng), route))
                routes[route], groups[route] = url, spec["name"]
    parts = {task: [[None if i == len(rs) - 1 else int(r[1] * CHARS_PER_TOKEN), route]
                    for i, (r, route) in enumerate(sorted(rs))] for task, rs in ranges.items()}
    return routes, groups, parts


def route_of(task: str, parts: dict[str, list], text_chars: int | None) -> str:
    """The route of a request for ``task``: the task itself, or for a split task the first part
    whose input-length bound holds ``text_chars`` (its longest input; the last part otherwise)."""
    if task not in parts:
        return task
    for bound, route in parts[task]:
        if bound is None or (text_chars is not None and text_chars <= bound):
            return route
    return parts[task][-1][1]


def json_body(body: Any) -> Any:
    """A body the serving runtime left undecoded (not sent as JSON) -> its JSON value."""
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise RouteError(400, f"body: not valid JSON ({e})", "body") from None
    return body


def forward_headers(headers: dict | None) -> dict[str, str]:
    """The request or response headers a proxy passes on."""
    return {k: str(v) for k, v in (headers or {}).items() if k.lower() not in HOP_BY_HOP}


def merge_models(answers: dict[str, tuple[int, Any]], tasks_at: dict[str, list[str]]) -> dict:
    """One ``/v1/models`` body from each group's (``answers``: group -> (status, body)); a group
    that did not answer lists its tasks (``tasks_at``: group -> tasks) as unavailable, saying why,
    as a group lists a task whose model did not load."""
    cards: dict[str, dict] = {}
    for group, (status, body) in answers.items():
        data = body.get("data") if status == 200 and isinstance(body, dict) else None
        if isinstance(data, list):
            cards.update({c["id"]: c for c in data if isinstance(c, dict) and "id" in c})
            continue
        why = body if isinstance(body, str) else json.dumps(body)
        for task in tasks_at.get(group, []):
            cards[task] = {"id": task, "object": "model", "owned_by": "rightsizer", "created": int(time.time()),
                           "status": f"unavailable: its group {group} answered {status}: {why[:500]}"}
    return {"object": "list", "data": [cards[t] for t in sorted(cards)]}


def merge_ready(answers: dict[str, tuple[int, Any]], tasks_at: dict[str, list[str]]) -> tuple[int, dict]:
    """The entry point's readiness from each group's (``answers``: group -> (status, body)): 200
    with every task when each group is ready, else 503 naming the groups that are not and why."""
    waiting = {g: a for g, a in answers.items() if a[0] != 200}
    if not waiting:
        return 200, {"ready": True, "tasks": sorted({t for ts in tasks_at.values() for t in ts})}
    why = "; ".join(f"{g} ({', '.join(tasks_at.get(g, []))}) answered {s}: "
                    f"{(b if isinstance(b, str) else json.dumps(b))[:300]}" for g, (s, b) in sorted(waiting.items()))
    return 503, error_body("/v2/health/ready", 503, f"not ready: {why}")
