"""Which task a request is for, as the application's entry point reads it (no MLRun, no web
framework, no torch: the router imports only this).

A fleet plan places the task models in several serving functions (placement groups); the
entry point reads the task a request names (the V2 path's, the OpenAI body's ``model``) and
passes the request on to the group that hosts it. A request no group could answer gets the
same 400 a group's own parser gives (``rightsizer.serving.api``), naming every served task.
"""

from __future__ import annotations

import json
import time
from typing import Any

V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"
OPENAI = {("POST", "/v1/completions"), ("POST", "/v1/chat/completions")}
MODELS = ("GET", "/v1/models")
ROUTES = sorted(["POST /v2/models/{task}/infer", "POST /v1/completions", "POST /v1/chat/completions",
                 "GET /v1/models"])
# the header names a proxy must not pass on (RFC 9110 7.6.1 hop-by-hop fields, and the framing
# the next hop sets itself)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host", "content-length"})


class RouteError(Exception):
    """A request the entry point answers itself: ``status`` and the OpenAI-style error body of
    ``rightsizer.serving.errors.ServingError`` (which imports the engine, hence not reused)."""

    KINDS = {400: "invalid_request_error", 404: "not_found_error", 502: "server_error",
             503: "unavailable_error", 504: "timeout_error"}

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.KINDS.get(self.status, "server_error"),
                          "param": self.param, "code": self.status}}


def task_of(method: str, path: str, body: Any, tasks: list[str]) -> str | None:
    """The served task a request is for; None for the model list (every group answers it).
    RouteError: 404 for a route no group serves, 400 naming the field and the served tasks."""
    method, path = (method or "GET").upper(), (path or "/").rstrip("/") or "/"
    if (method, path) == MODELS:
        return None
    if method == "POST" and path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
        task = path[len(V2_PREFIX):-len(V2_SUFFIX)]
        if task not in tasks:
            raise RouteError(400, f"model: {task!r} is not a served task; expected one of {tasks}", "model")
        return task
    if (method, path) not in OPENAI:
        raise RouteError(404, f"{method} {path}: not served here; routes: {ROUTES}")
    body = json_body(body)
    if not isinstance(body, dict):
        raise RouteError(400, f"body: expected a JSON object, got {type(body).__name__}", "body")
    task = body.get("model")
    if not isinstance(task, str) or not task:
        raise RouteError(400, f"model: expected a task name, one of {tasks}", "model")
    if task not in tasks:
        raise RouteError(400, f"model: {task!r} is not a served task; expected one of {tasks}", "model")
    return task


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
