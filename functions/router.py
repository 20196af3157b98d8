"""The application's entry point when the fleet plan has several placement groups: an MLRun
serving graph that passes each request on to the group function hosting its task.

Graph (flow topology, async engine)::

    parse       RouteParser: method, path, query, headers and body; the task from the V2 path
                or the OpenAI body's ``model``; 400 naming the served tasks, 404 for other routes
      -> <task> GroupProxy (MLRun's RemoteStep), one per task: the request, as it came, to the
                group's URL; the group's status, headers and body back, 4xx/5xx included
      -> respond
    parse
      -> models ModelsFanout (MLRun's BatchHttpRequests): ``GET /v1/models`` to every group at
                once, their cards merged (a group that does not answer: its tasks unavailable)
      -> respond
    parse -> respond (the router's own 400/404)

One proxy step per task, not per group: a remote step hands its responses on in the order its
requests came (storey's concurrent-job queue), so a long generation would hold back the short
answers of the other tasks of its group behind it. A task the plan split by prompt length
across groups (mixed device types) has one proxy per part, and the parser picks the part by the
request's longest input (``rightsizer.routing.route_of``).

Streams: MLRun's remote steps read a response whole (``await response.read()``), and storey
streams only a generator step's output, so a ``stream: true`` request is passed on and its
server-sent events come back all at once when the group's stream ends (same events, same
``data: [DONE]``; no earlier first token). ``set_routes(fn, {task: group URL or function})``
builds the graph.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import mlrun
from mlrun.serving.remote import BatchHttpRequests, RemoteStep
from mlrun.serving.server import Response

from rightsizer.routing import (RouteError, api_keys, check_api_key, forward_headers, json_body, merge_models,
                                merge_ready, route_kind, route_of, task_of)

ROLE_LABEL = "rightsizer/role"  # "router" or "group": deploy_plan tells its functions apart by it
# a group's answer, scale-from-zero and model load included: longer than the group's own request
# deadline (rightsizer.serving.contract.DEADLINE_S), so the group's 504 comes back, not the router's
TIMEOUT_S = 300
MAX_IN_FLIGHT = 256  # requests in flight per task (storey's default, 8, would cap the group's batch)
MODELS_TIMEOUT_S = 30
RESERVED = {"parse", "models", "respond"}
GROUP_HEADER = "X-Rightsizer-Group"  # on every routed answer: the placement group that gave it
RESPONSE_OWN = {"content-type", "content-encoding", "date", "server"}


def configure_router(fn) -> None:
    """Flow topology, async engine; no API handler config (the parser routes every path) and no
    streaming handler (a remote step answers once)."""
    fn.set_topology("flow", engine="async", exist_ok=True)
    fn.set_streaming(False)
    fn.spec.api_handler_config = None
    fn.set_label(ROLE_LABEL, "router")


def set_routes(fn, routes: dict[str, str], groups: dict[str, str] | None = None,
               timeout_s: float = TIMEOUT_S, max_in_flight: int = MAX_IN_FLIGHT,
               parts: dict[str, list] | None = None) -> None:
    """Build the router graph on serving function ``fn``: ``routes`` maps each task to its group
    function's URL (``http(s)://...``) or MLRun name (``[project/]name``, resolved by MLRun from
    the function's Nuclio status at the task's first request: ``GraphContext.get_remote_endpoint``).
    ``groups``: task -> its group's name (in error messages; ``deploy_plan`` finds the group
    functions by it); default: the route. ``parts``: a task split by prompt length, its routes
    (``rightsizer.routing.plan_routes``); ``routes`` then holds each part's route, not the task."""
    if not routes:
        raise ValueError("routes: expected at least one task -> group URL")
    bad = sorted(t for t, url in routes.items() if not isinstance(url, str) or not url)
    if bad:
        raise ValueError(f"routes: task(s) {bad} have no group URL or function name")
    clash = sorted(set(routes) & RESERVED)
    if clash:
        raise ValueError(f"routes: task name(s) {clash} are the router's own step names")
    parts = {t: [list(p) for p in ps] for t, ps in (parts or {}).items()}
    task_of_route = {route: task for task, ps in parts.items() for _, route in ps}
    lost = sorted(set(task_of_route) - set(routes))
    if lost:
        raise ValueError(f"parts: route(s) {lost} have no group URL in routes")
    configure_router(fn)
    graph = fn.spec.graph
    graph.clear_children(list(graph.steps))
    tasks = sorted({task_of_route.get(r, r) for r in routes})
    parse = graph.to(class_name="RouteParser", name="parse", full_event=True, tasks=tasks, parts=parts)
    groups = groups or {}
    for route, url in routes.items():
        parse.to(class_name="GroupProxy", name=route, url=url, task=task_of_route.get(route, route),
                 group=groups.get(route) or url, timeout=timeout_s, max_in_flight=max_in_flight)
    hosted: dict[str, list[str]] = {}
    for route, url in routes.items():
        if task_of_route.get(route, route) not in hosted.setdefault(url, []):
            hosted[url].append(task_of_route.get(route, route))
    graph.add_step(class_name="ModelsFanout", name="models", after="parse", groups=hosted,
                   timeout=MODELS_TIMEOUT_S)
    graph.add_step(class_name="RouterResponder", name="respond",
                   after=["parse", "models", *routes]).respond()


def routes_of(fn, key: str = "url") -> dict[str, str]:
    """A router function's routes, from its graph spec: route (a task, or a split task's part)
    -> group URL or function name (``key="group"``: -> group name)."""
    steps = fn.spec.graph.steps
    return {name: s.class_args[key] for name, s in steps.items() if s.class_name == "GroupProxy"}


def _answer(status: int, body: Any, headers: dict | None = None,
            content_type: str = "application/json") -> dict:
    return {"status": status, "headers": headers or {}, "content_type": content_type,
            "body": body if isinstance(body, (bytes, str)) else json.dumps(body)}


def _failure(e: RouteError, path: str | None) -> dict:
    """The router's own error, in the route's shape (one log line, as a group logs its own)."""
    e.log(mlrun.utils.logger, path)
    return {"answer": _answer(e.status, e.to_dict(path), e.response_headers())}


class RouteParser:
    """The request as it came, and the task it is for; the router's own 400/401/404/405
    otherwise, and its own liveness (``/health``, ``/v2/health/live``). The API key
    (``$RIGHTSIZER_API_KEYS``) is checked here and again by the group, which gets the header."""

    def __init__(self, tasks: list[str] | None = None, parts: dict[str, list] | None = None, context=None,
                 name=None, **kwargs):
        self.tasks = sorted(tasks or [])
        self.parts = dict(parts or {})
        self.keys = api_keys()

    def do(self, event):
        body = event.body  # MLRun decoded a JSON body already; other bodies are bytes
        try:
            check_api_key(event.path, event.headers, self.keys)
            task = task_of(event.method, event.path, body, self.tasks)
            if task is None and route_kind(event.method, event.path) == "health":
                event.body = {"answer": _answer(200, {"status": "ok"})}
                return event
        except RouteError as e:
            event.body = _failure(e, event.path)
            return event
        route = (route_of(task, self.parts, input_chars(event.method, event.path, body, task)) if task in self.parts
                 else task)
        event.body = {"task": task, "route": route, "request": {
            "method": (event.method or "GET").upper(), "path": event.path or "/",
            "query": dict(getattr(event, "fields", None) or {}),  # Nuclio's query parameters
            "headers": forward_headers(event.headers), "body": body}}
        return event

    def select_outlets(self, body) -> list[str]:
        if "answer" in body:
            return ["respond"]
        return ["models"] if body["task"] is None else [body.get("route") or body["task"]]


def input_chars(method: str | None, path: str | None, body: Any, task: str) -> int | None:
    """The longest input of a request for ``task`` (``task_of``'s), in characters (a split task's
    part is picked by it); None when the body cannot be read: the group it goes to answers its
    own 400."""
    from rightsizer.serving.api import parse_request

    kind = route_kind(method, path)
    try:
        req = parse_request(kind, json_body(body), [task], path_task=task if kind == "v2" else None)
    except RouteError:  # the serving API's 400s too (ServingError): the group answers its own
        return None
    return max((len(x) for x in req.inputs), default=0)


async def _resolve(step, url: str) -> str:
    """An http(s) URL as is; a function name through MLRun (the Nuclio status of the function)."""
    if "://" in url or step.context is None:
        return url.rstrip("/")
    return (await asyncio.to_thread(step.context.get_remote_endpoint, url)).rstrip("/")


class GroupProxy(RemoteStep):
    """MLRun's remote step, passing one task's requests to its group as they came (method, path,
    query, headers, body) and the group's answer back as it is: MLRun's own turns a status >= 400
    into an exception (and retries a 5xx), which would lose the group's status and error body.
    A group that cannot be reached answers 502 (504 past ``timeout``) naming the group."""

    def __init__(self, url: str, task: str = "", group: str = "", timeout: float | None = TIMEOUT_S,
                 **kwargs):
        super().__init__(url=url, method=None, return_json=False, retries=0, timeout=timeout, **kwargs)
        self.task, self.group = task, group or url

    def post_init(self, mode="sync", **kwargs):
        # resolved at the first request: a group function deployed after the router, or not
        # resolvable here (offline, no Nuclio), must not stop the graph or the other tasks
        self._endpoint = ""

    async def _process_event(self, event):
        req = event.body["request"]
        try:
            if not self._endpoint:
                self._endpoint = await _resolve(self, self.url)
        except Exception as e:
            return _answer(503, RouteError(503, f"task {self.task!r}: its group {self.group} ({self.url}) has "
                                                f"no URL: {type(e).__name__}: {e}").to_dict(req["path"]),
                           {"Retry-After": "30"})
        url = self._endpoint + req["path"]
        return await _send(self, req["method"], url, req["query"], req["headers"], req["body"],
                           f"task {self.task!r}: its group {self.group} at {self._endpoint}")

    async def _handle_completed(self, event, response):
        # which group answered (a split task has several): for the client's logs and the tests
        response = {**response, "headers": {**(response.get("headers") or {}), GROUP_HEADER: self.group}}
        event.body = {"answer": response}
        await self._do_downstream(event)


async def _send(step, method: str, url: str, query: dict, headers: dict, body: Any, who: str) -> dict:
    # the client's Accept-Encoding is not passed on: aiohttp asks for and undoes its own
    headers = {k: v for k, v in headers.items() if k.lower() != "accept-encoding"}
    if method == "GET" or body is None:
        data = None
    elif isinstance(body, (bytes, str)):
        data = body  # passed on with the client's Content-Type
    else:  # decoded from JSON by MLRun: JSON again
        data = json.dumps(body)
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        headers["Content-Type"] = "application/json"
    timeout = aiohttp.ClientTimeout(total=step.timeout) if step.timeout else None
    try:
        async with step._client_session.request(method, url, params=query or None, headers=headers,
                                                data=data, timeout=timeout) as resp:
            payload = await resp.read()
            # the body is decoded already; the listener sets its own framing, date and server
            back = {k: v for k, v in resp.headers.items() if k.lower() not in RESPONSE_OWN}
            return _answer(resp.status, payload, forward_headers(back),
                           resp.headers.get("Content-Type", "application/octet-stream"))
    except asyncio.TimeoutError:
        return _answer(504, RouteError(504, f"{who}: no answer within {step.timeout} s").to_dict(url))
    except aiohttp.ClientError as e:
        return _answer(502, RouteError(502, f"{who} cannot be reached: {type(e).__name__}: {e}").to_dict(url))


class ModelsFanout(BatchHttpRequests):
    """MLRun's batch of HTTP requests: ``GET /v1/models`` (or readiness, ``/v2/health/ready``) to
    every group at once, the answers merged. ``groups``: group URL or function name -> the tasks
    it hosts."""

    def __init__(self, groups: dict[str, list[str]] | None = None, timeout: float | None = MODELS_TIMEOUT_S,
                 **kwargs):
        super().__init__(method="GET", return_json=False, timeout=timeout, **kwargs)
        self.groups = dict(groups or {})
        self._endpoints: dict[str, str] = {}

    async def _process_event(self, event):
        req = event.body["request"]

        async def ask(url: str) -> tuple[int, Any]:
            try:
                if url not in self._endpoints:
                    self._endpoints[url] = await _resolve(self, url)
            except Exception as e:
                return 503, f"no URL ({type(e).__name__}: {e})"
            answer = await _send(self, "GET", self._endpoints[url] + req["path"], req["query"], req["headers"],
                                 None, f"the group at {self._endpoints[url]}")
            body = answer["body"]
            try:
                return answer["status"], json.loads(body)
            except ValueError:
                return answer["status"], body.decode(errors="replace") if isinstance(body, bytes) else body

        return dict(zip(self.groups, await asyncio.gather(*(ask(u) for u in self.groups))))

    async def _handle_completed(self, event, response):
        if route_kind("GET", event.body["request"]["path"]) == "ready":
            status, body = merge_ready(response, self.groups)
            event.body = {"answer": _answer(status, body, {"Retry-After": "30"} if status != 200 else None)}
        else:
            event.body = {"answer": _answer(200, merge_models(response, self.groups))}
        await self._do_downstream(event)


class RouterResponder:
    """A group's answer (or the router's own) -> the HTTP response."""

    def __init__(self, context=None, name=None, **kwargs):
        pass

    def do(self, body):
        a = body["answer"]
        return Response(headers=a["headers"], body=a["body"], content_type=a["content_type"],
                        status_code=a["status"])

