"""The MLRun serving graph: one flow, every task model behind it, V2 and OpenAI routes.

Graph (flow topology, async engine)::

    api-handler (MLRun, from the function's API handler config: routes, url info)
      -> parse      RequestParser: route + body -> {kind, task, inputs, max_tokens, stream, stop,
                    cache_salt}; 400 naming the field; answers /health itself; sends a streamed
                    request to ``stream``, the others to ``batch``
      -> batch      storey.Batch keyed by task: concurrent requests to one task, gathered for
                    ``batch_window_s`` or up to ``batch_max_events``, reach the model together
      -> models     ModelRunnerStep, one TaskRunner per task (asyncio), TaskSelector picks by task;
      -> unbatch    storey.FlatMap: each request of the batch goes on alone
      -> respond    Responder: V2 / OpenAI response bodies; 503 (with Retry-After) and other
                    engine errors as HTTP responses; a stream's chunks as server-sent events
    parse
      -> stream     StreamStep (storey.ConcurrentExecution): each streamed request's deltas from the
                    task's engine (the same as ``models``'s runner), emitted concurrently
      -> respond

A stream cannot go through ``batch``: storey streams only the output of a single runnable for
an unbatched event. The function runs in MLRun's streaming mode (``fn.set_streaming``): its
handler yields what reaches the responder, once for an answer, once per chunk for a stream;
the HTTP listener (``functions/serving_http.py``, Nuclio on a cluster) writes chunks as they come.

Routes (``rightsizer.routing.ROUTES``, in the ``APIHandlerConfig`` with "/" and "/*" for every
method, so the parser answers every other path too: 404, or 405 with ``Allow``):
``POST /v2/models/<task>/infer`` (the V2 shape existing clients use), ``POST /v1/chat/completions``,
``POST /v1/completions``, ``GET /v1/models``, ``GET /health``, ``GET /v2/health/live`` and
``GET /v2/health/ready``. With ``$RIGHTSIZER_API_KEYS`` set, every route but the health ones
needs ``Authorization: Bearer <key>``; every error is the route's shape. The engines (continuous batching, micro-batched
scoring, cache, limits) are the core library's ``rightsizer.serving``; this module only adapts
them to MLRun. ``set_task_models(fn, {task: bundle})`` builds the graph on a serving function.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from http import HTTPMethod
from typing import Any

import mlrun
import storey
from mlrun.serving.endpoint_mapping import APIHandlerConfig
from mlrun.serving.server import Response
from mlrun.serving.states import Model, ModelRunnerSelector, ModelRunnerStep

from functions.mlrun_io import localize_dir
from rightsizer.routing import ROUTES, V2_PREFIX, RouteError, api_keys, check_api_key, route_kind
from rightsizer.serving import api
from rightsizer.serving.contract import Answer, EngineConfig
from rightsizer.serving.cascade import CascadeEngine, engine_for
from rightsizer.serving.engine import TaskEngine
from rightsizer.serving.traffic_log import TRAFFIC_LOG_ENV, TRAFFIC_SAMPLE_ENV, TrafficLog
from rightsizer.errors import ConfigError
from rightsizer.serving.errors import ServingError

REQUEST_KEYS = ("kind", "task", "inputs", "max_tokens", "stream", "stop", "cache_salt", "ignore_eos", "logprobs")
RESULT = "rightsizer_result"  # marks a TaskRunner's output (the runner wraps several by model name)
SSE = "rightsizer_sse"  # a responder output that is server-sent-event text, one chunk of a stream
BATCH_MAX_EVENTS = 64  # requests per graph batch (the engine's default max_queue)
BATCH_WINDOW_S = 0.005  # how long the first request of a batch waits for others
MALLOC_ENV, MALLOC_MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_", "1048576"


DESCRIPTIONS = {"v2": "V2 inference, one task", "completions": "OpenAI completions: model = task, prompt = input",
                "chat": "OpenAI chat completions: model = task, one user message = input",
                "models": "OpenAI models: the tasks", "health": "liveness: the server answers",
                "ready": "V2 readiness: 200 when every task model is loaded, else 503"}


def api_config() -> APIHandlerConfig:
    """The routes the graph answers, and every other path and method too (``/*``): the parser
    answers those with 404, or 405 with ``Allow``, in the route's error shape, where MLRun's API
    handler would answer text/plain without ``Allow`` and log a traceback."""
    config = APIHandlerConfig(include_url_info=True)  # the parser dispatches on path and method
    for (method, path), kind in ROUTES.items():
        config.add_endpoint_handler(path, HTTPMethod(method), description=DESCRIPTIONS[kind])
    for method in HTTPMethod:  # "/*" covers every path below the root, not the root itself
        for path in ("/", "/*"):
            config.add_endpoint_handler(path, method, description="not served: 404 or 405 from the parser")
    return config


def configure_serving(fn) -> None:
    """Flow topology, async engine, streaming mode, the routes; the task models come with
    ``set_task_models``."""
    fn.set_topology("flow", engine="async", exist_ok=True)
    fn.set_streaming(True)
    # chat completions as the other routes, not MLRun's OpenAI frontend: its check of `model`
    # answers 422 in its own shape where every other missing field gets the parser's 400
    fn.set_api_handler_config(api_config())
    fn.set_label("rightsizer/role", "group")  # the router's is "router" (functions/router.py)
    # glibc raises its mmap threshold after freeing a large block and then keeps the memory of
    # each later large request body; a fixed threshold gives it back (as scripts/serve.sh does)
    fn.set_env(MALLOC_ENV, MALLOC_MMAP_THRESHOLD)


def set_task_models(fn, models: dict[str, str] | list[dict], engine: dict | None = None,
                    batch_max_events: int = BATCH_MAX_EVENTS, batch_window_s: float = BATCH_WINDOW_S,
                    engines: dict[str, dict] | None = None) -> None:
    """Build the graph on serving function ``fn`` for ``models`` (task -> bundle folder or
    store:// URI; or the pipeline's ``[{"key", "model_path"}]``). ``engine``: ``EngineConfig``
    fields for every task's engine (KV-cache blocks, batch sizes, queue bound, cache size);
    ``engines``: per task, fields over those (a fleet plan's sizes: ``deploy_plan``).

    A storey flow step takes one event at a time and awaits its downstream, so without the
    ``batch`` step the model runner would see one request at a time and the continuous batch
    would never hold two; ``batch_max_events`` / ``batch_window_s`` bound how many requests
    to one task enter the runner together and how long the first of them waits.
    """
    if isinstance(models, list):
        models = {m["key"]: m["model_path"] for m in models}
    if not models:
        raise ValueError("models: expected at least one task model")
    unknown = sorted(set(engines or {}) - set(models))
    if unknown:
        raise ValueError(f"engines: {unknown} are not among the served tasks {sorted(models)}")
    engines = {t: {**(engine or {}), **((engines or {}).get(t) or {})} for t in models}
    for task, settings in engines.items():  # a bad setting fails here, not in the pod
        try:
            EngineConfig.from_dict(settings)
        except ConfigError as e:
            raise ConfigError(f"task {task!r}: {e}") from None
    if isinstance(batch_max_events, bool) or not isinstance(batch_max_events, int) or batch_max_events < 1:
        raise ValueError(f"batch_max_events: {batch_max_events!r}; expected a positive integer")
    if isinstance(batch_window_s, bool) or not isinstance(batch_window_s, (int, float)) or batch_window_s < 0:
        raise ValueError(f"batch_window_s: {batch_window_s!r}; expected seconds >= 0")
    configure_serving(fn)
    graph = fn.spec.graph
    graph.clear_children(list(graph.steps))
    parse = graph.to(class_name="RequestParser", name="parse", full_event=True, tasks=list(models))
    batch = parse.to(class_name="storey.Batch", name="batch", max_events=batch_max_events,
                     flush_after_seconds=batch_window_s, key_field="task", full_event=True)
    runner = ModelRunnerStep(name="models", model_runner_selector="TaskSelector")
    for task, path in models.items():
        runner.add_model(endpoint_name=task, model_class="TaskRunner", execution_mechanism="asyncio",
                         bundle_path=str(path), engine=engines[task])
    # the runner's output is the batch again; each request goes on alone (as MLRun's own
    # unpacker does it), so the responder and the flow's completion see one request each
    unbatch = batch.to(runner).to(class_name="storey.FlatMap", name="unbatch", _fn="(event.body)",
                                  full_event=True)
    # a step of its own for streams: storey's model runner step emits one stream at a time
    stream = graph.add_step(class_name="StreamStep", name="stream", after="parse",
                            models={t: {"bundle_path": str(p), "engine": engines[t]} for t, p in models.items()},
                            max_in_flight=batch_max_events)
    graph.add_step(class_name="Responder", name="respond", after=[unbatch.name, stream.name, parse.name]).respond()


def configure_group(fn, spec: dict, tracking_percentage: float = 0.0) -> None:
    """Give serving function ``fn`` one placement group's deployment (a fleet plan's
    ``function_specs`` entry): its device resource (``nvidia.com/gpu`` or a MIG resource such
    as ``nvidia.com/mig-1g.10gb``; none for a CPU group), CPU/memory requests, the node
    selector for the device product or instance type, and the replica bounds (min 0: the
    group scales to zero). ``tracking_percentage`` > 0: MLRun model monitoring on that share of
    the requests (``set_tracking``), so each task model is a model endpoint on a cluster."""
    limits = {k: str(v) for k, v in (spec.get("resources", {}).get("limits") or {}).items()}
    requests = {k: str(v) for k, v in (spec.get("resources", {}).get("requests") or {}).items()}
    resources = fn.spec.resources
    for key in ("limits", "requests"):  # the project-wide `gpus` limit does not apply to a group
        resources[key] = {k: v for k, v in (resources.get(key) or {}).items()
                          if not k.startswith(("nvidia.com/", "amd.com/"))}
    resources["limits"].update(limits)
    resources["requests"].update(requests)
    if "memory" in requests:  # a CPU group: its memory is a limit too (no overcommit)
        resources["limits"].setdefault("memory", requests["memory"])
    fn.spec.node_selector = dict(spec.get("node_selector") or {})
    fn.spec.max_replicas = int(spec.get("max_replicas", 1))
    fn.spec.min_replicas = int(spec.get("min_replicas", 0))  # after max: Nuclio reads both
    fn.set_label("rightsizer/group", spec.get("group", ""))
    if tracking_percentage:
        if not 0 < float(tracking_percentage) <= 100:
            raise ValueError(f"tracking_percentage: {tracking_percentage}; expected a percentage in (0, 100]")
        fn.set_tracking(sampling_percentage=float(tracking_percentage))


def end_mock_deploy(fn) -> None:
    """End the async flow of a mock deploy (``deploy_function(mock=True)``, the local engine).

    The mock deploy builds the graph in this process, which loads every task model (so a
    model that cannot load shows in the workflow), and leaves the flow's event loop waiting
    on its queue in a thread-pool worker; Python joins those workers when it exits, so the
    process (the demo, a test session) would never end. Query the router afterwards with
    ``fn.to_mock_server()`` or ``bash scripts/serve.sh``.
    """
    server = getattr(fn, "_mock_server", None)  # where MLRun keeps the mock deploy's server
    if server is not None:
        server.wait_for_completion()
        fn._mock_server = None


def _json_body(body: Any) -> Any:
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ServingError(400, f"body: not valid JSON ({e})", param="body") from None
    return body


class RequestParser:
    """Route, API key and body -> the engine's request; 400 naming the field, 401 without a
    valid key (``$RIGHTSIZER_API_KEYS``), 404/405 for a route not served, otherwise."""

    def __init__(self, tasks: list[str] | None = None, context=None, name=None, **kwargs):
        self.tasks = list(tasks or [])
        # read where the graph starts (the pod's env, from a project secret on a cluster):
        # never a step argument, so never in the function spec
        self.keys = api_keys()

    def do(self, event):
        # the full event, for its headers (the API key); MLRun's API handler left the body and
        # the URL info (path, method, the V2 path's task) in a request context
        ctx = event.body
        body = getattr(ctx, "original_body", ctx)
        info = dict(ctx) if hasattr(ctx, "original_body") else {}
        path = (info.get("mlrun_request_path") or event.path or "/").rstrip("/") or "/"
        method = (info.get("mlrun_request_method") or event.method or "GET").upper()
        # errors are answered, not raised: MLRun's streaming handler (this function's) does not
        # turn a raised error into its HTTP status; the responder does it for every step
        try:
            check_api_key(path, event.headers, self.keys)
            event.body = self._parse(body, path, method, info.get("task"))
        except RouteError as e:
            event.body = {RESULT: True, "request": {"kind": "error", "task": None, "inputs": [], "max_tokens": None},
                          **_failure(e, path)}
        return event

    def _parse(self, body, path: str, method: str, task: str | None) -> dict:
        kind = route_kind(method, path)
        if kind == "health":  # liveness: the graph answers; readiness asks the task models
            return {RESULT: True, "request": {"kind": "health", "task": None, "inputs": []}}
        req = api.parse_request(kind, _json_body(body) if kind not in ("models", "ready") else None,
                                self.tasks, path_task=task)
        return {k: getattr(req, k) for k in REQUEST_KEYS}

    def select_outlets(self, body) -> list[str]:
        if "failure" in body or body.get("kind") == "health" or body.get("request", {}).get("kind") == "health":
            return ["respond"]
        return ["stream"] if body.get("stream") else ["batch"]


class TaskSelector(ModelRunnerSelector):
    """The request's task runs; ``/v1/models`` asks every task model for its card. A batch
    (the ``batch`` step's, keyed by task) holds one task's requests, or only model-list ones."""

    def select_models(self, event, available_models):
        bodies = event.body if isinstance(event.body, list) else [event.body]
        if any(b.get("kind") in ("models", "ready") for b in bodies):
            return None
        return sorted({b["task"] for b in bodies})


def _failure(e: RouteError, path: str | None = None) -> dict:
    """A step's error as a result field: the responder turns it back into the HTTP error, in the
    shape of the request's route (``path``) (a raised error would reach no request after the
    batch step, nor through the streaming handler)."""
    return {"failure": {"status": e.status, "message": e.message, "retry_after": e.retry_after, "param": e.param,
                        "headers": e.headers, "path": path}}


def _route_of(request: dict) -> str:
    """The route a parsed request came by (its error shape): V2's or OpenAI's."""
    return V2_PREFIX if request.get("kind") in ("v2", "ready") else "/v1"


def _not_loaded(task: str, reason: str | None) -> ServingError:
    return ServingError(503, f"task {task!r} is not available: its model did not load ({reason})", retry_after=60)


_ENGINES: dict[tuple[str, str], TaskEngine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(bundle_path: str, engine: dict) -> TaskEngine | CascadeEngine:
    """One engine per task model and settings in this process: the answering and the streaming
    runner of a task share it (one copy of the weights, one KV cache, one continuous batch);
    ``engine["cascade"]``: the bundle's cascade (``rightsizer.serving.cascade``)."""
    key = (str(bundle_path), json.dumps(engine, sort_keys=True))
    with _ENGINES_LOCK:
        found = _ENGINES.get(key)
        if found is None or found.stopped:
            found = _ENGINES[key] = engine_for(localize_dir(bundle_path), config=EngineConfig.from_dict(engine))
        return found


_TRAFFIC: dict[tuple, TrafficLog | None] = {}  # the served-traffic record, per environment setting


def record_traffic(task: str, engine, inputs: list[str], answers: list[Answer], seconds: float) -> None:
    """Each answer in the served-traffic record (``$RIGHTSIZER_TRAFFIC_LOG``; nothing when unset):
    the model that answered (a cascade's ``answered_by``), its input and answer, never a header."""
    key = (os.environ.get(TRAFFIC_LOG_ENV, ""), os.environ.get(TRAFFIC_SAMPLE_ENV, ""))
    if key not in _TRAFFIC:  # the environment decides, read once per setting
        try:
            _TRAFFIC[key] = TrafficLog.from_env()
        except ConfigError as e:  # a bad setting loses the record, never the answers
            mlrun.utils.logger.error("served-traffic record off", reason=str(e))
            _TRAFFIC[key] = None
    log = _TRAFFIC[key]
    if log is None:
        return
    base = (engine.card() or {}).get("base_model") or task
    for text, a in zip(inputs, answers):
        log.record(task=task, model=str(a.response.get("answered_by") or base), input=text,
                   answer=api.answer_text(a.response), latency_ms=seconds * 1e3, prompt_tokens=a.prompt_tokens,
                   completion_tokens=a.completion_tokens, deferred=a.response.get("deferred"))


class TaskRunner(Model):
    """One task's engine inside the ModelRunnerStep (asyncio: it awaits the engine's batchers).

    A bundle that fails to load does not stop the graph: this task then answers 503 with the
    reason, and the others serve.
    """

    def __init__(self, name: str, bundle_path: str = "", engine: dict | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.bundle_path, self.engine = bundle_path, engine or {}
        self.task_engine: TaskEngine | None = None
        self.failure: str | None = None

    def load(self) -> None:
        super().load()
        try:  # the stream step gets the same engine
            self.task_engine = shared_engine(self.bundle_path, self.engine)
        except Exception as e:  # keep serving the other tasks; this one says why it cannot
            self.failure = f"{type(e).__name__}: {e}"
            mlrun.utils.logger.error("task model failed to load", task=self.name, reason=self.failure)

    def _card(self) -> dict:
        if self.task_engine is not None:
            return self.task_engine.card()
        return {"id": self.name, "object": "model", "owned_by": "rightsizer",
                "status": f"unavailable: {self.failure}"}

    async def predict_async(self, body: Any, **kwargs) -> dict | list[dict]:
        """One request's result, or (a batch from the ``batch`` step) one per request, in order;
        the batch's requests are answered concurrently, so they share the continuous batch."""
        if isinstance(body, list):
            return list(await asyncio.gather(*(self._answer(b) for b in body)))
        return await self._answer(body)

    async def _answer(self, body: dict) -> dict:
        out = {RESULT: True, "request": {k: body.get(k) for k in REQUEST_KEYS}}
        if body["kind"] in ("models", "ready"):
            return {**out, "card": self._card()}
        if body["task"] != self.name:  # never selected for another task's batch; say so if it is
            return {**out, **_failure(ServingError(500, f"task {body['task']!r} reached the runner of {self.name!r}"))}
        try:
            if self.task_engine is None:
                raise _not_loaded(self.name, self.failure)
            started = time.perf_counter()
            answers = await self.task_engine.answer_async(body["inputs"], body["max_tokens"], body.get("stop"),
                                                          body.get("cache_salt"), bool(body.get("ignore_eos")),
                                                          body.get("logprobs"))
            record_traffic(self.name, self.task_engine, body["inputs"], answers, time.perf_counter() - started)
        except ServingError as e:
            return {**out, **_failure(e)}
        except Exception as e:  # a bug or a lost batcher: a 500 naming it, not a hung request
            return {**out, **_failure(ServingError(500, f"task {self.name!r}: {type(e).__name__}: {e}"))}
        return {**out, "answers": [vars(a) for a in answers]}


class StreamStep(storey.ConcurrentExecution):
    """Streamed requests: each one's text deltas, then its answer, as chunks downstream.

    A storey step emits one event's stream to the end before it takes the next event (the model
    runner step does; so does ``ConcurrentExecution``, which at least runs the generators
    concurrently), so the second of two concurrent streams would see its first token only when
    the first stream ends. This step hands each stream's emission to a task of its own: the
    streams of concurrent requests reach the responder interleaved, each chunk on its own
    request's event. The engines are the tasks' shared ones (``shared_engine``). A request that
    cannot stream (not a generation task, a prompt too long, the task at capacity) gets one
    failure instead.
    """

    def __init__(self, models: dict[str, dict] | None = None, max_in_flight: int = BATCH_MAX_EVENTS,
                 context=None, name=None, **kwargs):
        super().__init__(event_processor=self._stream, concurrency_mechanism="asyncio",
                         max_in_flight=max_in_flight, name=name, context=context, **kwargs)
        self._engines: dict[str, TaskEngine] = {}
        self._failures: dict[str, str] = {}
        for task, m in (models or {}).items():
            try:
                self._engines[task] = shared_engine(m["bundle_path"], m.get("engine") or {})
            except Exception as e:  # the task answers 503 with the reason; the others stream
                self._failures[task] = f"{type(e).__name__}: {e}"
        self._emitting: set[asyncio.Task] = set()

    async def _stream(self, body: dict):
        out = {RESULT: True, "request": {k: body.get(k) for k in REQUEST_KEYS}}
        stream_id = f"{'chatcmpl' if body['kind'] == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        task = body["task"]
        try:
            engine = self._engines.get(task)
            if engine is None:
                raise _not_loaded(task, self._failures.get(task, "not served here"))
            started = time.perf_counter()
            async for item in engine.stream_async(body["inputs"][0], body.get("max_tokens"), body.get("stop"),
                                                  bool(body.get("ignore_eos"))):
                if isinstance(item, Answer):
                    record_traffic(task, engine, body["inputs"][:1], [item], time.perf_counter() - started)
                    yield {**out, "stream_id": stream_id, "created": created, "answer": vars(item)}
                else:
                    yield {**out, "stream_id": stream_id, "created": created, "delta": item}
        except ServingError as e:
            yield {**out, **_failure(e)}
        except Exception as e:  # a bug or a lost batcher: a 500 naming it, not a hung stream
            yield {**out, **_failure(ServingError(500, f"task {task!r}: {type(e).__name__}: {e}"))}

    # Overrides storey's internals (ConcurrentExecution._handle_completed, _StreamingQueue; storey
    # is pinned in constraints.txt): the test named in docs/serving.md fails if they change.
    async def _handle_completed(self, event, response):
        body = response.body
        if isinstance(body, storey.flow._StreamingQueue):
            job = asyncio.get_running_loop().create_task(self._emit(response, body))
            self._emitting.add(job)
            job.add_done_callback(self._emitting.discard)
            return
        await super()._handle_completed(event, response)

    async def _emit(self, response, body) -> None:
        await self._emit_streaming_from_queue(response, body.queue)
        await body.task

    async def _cleanup(self):
        if self._emitting:  # the flow is ending: let the streams in progress finish
            await asyncio.gather(*self._emitting, return_exceptions=True)
        await super()._cleanup()


class Responder:
    """The runner's result -> the route's response body, or an HTTP error response; a stream's
    chunks -> server-sent events (``data: {...}``, the last one followed by ``data: [DONE]``)."""

    def __init__(self, context=None, name=None, **kwargs):
        pass

    def do(self, body):
        try:
            return self._respond(body)
        except Exception as e:  # after the batch step a raised error reaches no request: it would hang
            mlrun.utils.logger.error("serving: response failed", error=f"{type(e).__name__}: {e}")
            return _error_response(ServingError(500, f"response: {type(e).__name__}: {e}"), "/v1")

    def _respond(self, body):
        results = [body] if RESULT in body else [r for r in body.values() if isinstance(r, dict)]
        first = results[0]
        kind = first["request"]["kind"]
        if kind == "health":
            return {"status": "ok"}
        if kind == "models":
            return api.models_list(sorted((r["card"] for r in results), key=lambda c: c["id"]))
        if kind == "ready":
            waiting = sorted(r["card"]["id"] for r in results if r["card"].get("status") != "ready")
            if waiting:
                return _error_response(ServingError(503, f"not ready: task model(s) {waiting} did not load "
                                                         "(GET /v1/models says why)", retry_after=30),
                                       "/v2/health/ready")
            return {"ready": True, "tasks": sorted(r["card"]["id"] for r in results)}
        if "failure" in first:
            failure = dict(first["failure"])
            path = failure.pop("path", None) or _route_of(first["request"])
            return _error_response(ServingError(**failure), path)
        req = api.ParsedRequest(**first["request"])
        if "delta" in first or "answer" in first:  # one chunk of a stream
            answer = Answer(**first["answer"]) if "answer" in first else None
            chunk = api.sse(api.stream_chunk(req, first["stream_id"], first["created"], first.get("delta"), answer))
            return {SSE: chunk + (api.sse("[DONE]") if answer else "")}
        return api.shape_response(req, [Answer(**a) for a in first["answers"]])


def _error_response(e: RouteError, path: str) -> Response:
    """The HTTP error of a request, in its route's shape, with one log line (a traceback only
    where the server itself failed, logged where it did)."""
    e.log(mlrun.utils.logger, path)
    return Response(headers=e.response_headers() or None, body=json.dumps(e.to_dict(path)),
                    content_type="application/json", status_code=e.status)
