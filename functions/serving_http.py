"""A real HTTP listener on this machine for the very serving graph Nuclio would run.

Not a second code path: the serving function's spec (``fn._get_serving_spec()``, what a
Nuclio deploy puts in the pod) goes into ``SERVING_SPEC_ENV``, MLRun's own entry point
``mlrun.serving.server.v2_serving_init`` builds the graph from it with a ``nuclio_sdk``
context, and every HTTP request becomes a ``nuclio_sdk.Event`` for the handler it installs
(``context.mlrun_handler``), as Nuclio's async HTTP trigger would pass it. aiohttp only
listens and copies status, headers and body back.

``bash scripts/serve.sh [--port 8080] [--artifacts DIR]`` serves the latest
``size_and_deploy`` run's bundles (``rightsizer.layout.find_bundles``). Where the run's fleet
plan has several placement groups, it serves them as ``deploy_plan`` deploys them: each group's
function on its own port (``--port`` + 1, + 2, ...) and the router (``functions/router.py``)
on ``--port``, in front of them; with one group, each engine as the plan sizes it (a task
the plan serves as a cascade is served by its cascade engine).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import sys
from pathlib import Path

import aiohttp
import mlrun
import nuclio_sdk
from aiohttp import web

import functions.router as router_module
import functions.serving as serving_module
from functions.plan import group_models
from functions.router import set_routes
from functions.serving import SSE, set_task_models
from rightsizer.layout import RunLayout, find_bundles, latest_run
from rightsizer.routing import API_KEYS_ENV, ROUTES, RouteError, plan_routes
from rightsizer.serving.engine import stop_all
from rightsizer.serving.traffic_log import TRAFFIC_LOG_ENV, TRAFFIC_SAMPLE_ENV

ROOT = Path(__file__).resolve().parents[1]
BODY_TIMEOUT_S = 30.0  # a body that has not arrived whole by then (shorter than its Content-Length): 408
MAX_BODY = 8 * 1024 * 1024
DECODE_OFF_LOOP = 64 * 1024  # bytes: a JSON body larger than this is decoded off the event loop


def serving_spec(models: dict[str, str], engine: dict | None = None, project_dir: str | Path = ROOT,
                 engines: dict[str, dict] | None = None) -> str:
    """The serving function's spec with the graph for ``models`` (task -> bundle), as deployed."""
    project = mlrun.load_project(str(project_dir), name="rightsizer", save=False)
    fn = project.get_function("serving")
    set_task_models(fn, models, engine=engine, engines=engines)
    return fn._get_serving_spec()


def router_spec(routes: dict[str, str], groups: dict[str, str] | None = None, parts: dict[str, list] | None = None,
                project_dir: str | Path = ROOT) -> str:
    """The router function's spec for ``routes`` (route -> group URL; ``parts``: a task split by
    prompt length, ``rightsizer.routing.plan_routes``), as deployed."""
    project = mlrun.load_project(str(project_dir), name="rightsizer", save=False)
    fn = project.get_function("router")
    set_routes(fn, routes, groups, parts=parts)
    return fn._get_serving_spec()


def _logger() -> nuclio_sdk.Logger:
    logger = nuclio_sdk.Logger(logging.INFO, name="rightsizer-serving")
    logger.set_handler("stderr", sys.stderr, nuclio_sdk.logger.HumanReadableFormatter())
    return logger


def make_app(spec: str, namespace: dict | None = None, body_timeout: float | None = None) -> web.Application:
    """An aiohttp app that runs ``spec``'s graph through MLRun's serving entry point; the
    graph's classes are looked up in ``namespace`` (default: ``functions.serving``'s, the
    router's are ``vars(functions.router)``), as Nuclio looks them up in the function's code.
    ``body_timeout``: seconds for a request's body to arrive (default ``BODY_TIMEOUT_S``)."""
    app = web.Application(client_max_size=MAX_BODY)
    trigger = nuclio_sdk.TriggerInfo("http", "http")

    async def start(app: web.Application) -> None:
        os.environ["SERVING_SPEC_ENV"] = spec
        context = nuclio_sdk.Context(logger=_logger(), trigger=trigger)
        # inside the running loop: the async flow (storey) is built on it, as in Nuclio
        mlrun.serving.server.v2_serving_init(context, namespace=namespace or vars(serving_module))
        app["context"] = context

    async def stop(app: web.Application) -> None:
        done = app["context"]._server.wait_for_completion()
        if inspect.isawaitable(done):
            await done
        await asyncio.to_thread(stop_all)

    async def handle(request: web.Request) -> web.StreamResponse:
        context = app["context"]
        try:
            body = await asyncio.wait_for(request.read(), body_timeout_s)
        except asyncio.TimeoutError:
            return _error(request, RouteError(408, f"body: not received whole within {body_timeout_s:g} s "
                                                   f"(Content-Length {request.content_length})", param="body"))
        except web.HTTPRequestEntityTooLarge:
            return _error(request, RouteError(413, f"body: larger than {MAX_BODY} bytes", param="body"))
        if len(body) > DECODE_OFF_LOOP and (request.content_type or "") in ("", "application/json"):
            # a large JSON body is decoded in a thread: MLRun would decode it on the event loop,
            # and every other request would wait for it; one that does not decode goes on as it
            # came (MLRun answers it, ``_shaped`` puts its answer in the route's shape)
            try:
                decoded = await asyncio.to_thread(json.loads, body)
            except ValueError:
                decoded = None
            if isinstance(decoded, (dict, list)):  # another JSON value: MLRun decodes it as before
                body = decoded
        event = nuclio_sdk.Event(body=body or None, content_type=request.content_type or None,
                                 headers=dict(request.headers), method=request.method,
                                 path=request.path, fields=dict(request.query), trigger=trigger)
        resp = context.mlrun_handler(context, event)
        if inspect.isasyncgen(resp):  # MLRun's streaming handler: one item per responder output
            try:
                first = await anext(resp, None)
            except Exception as exc:  # raised before the graph answered (MLRun's own steps)
                return _shaped(request, _response(mlrun.serving.server._exception_to_response(
                    context, context._server.context, event, exc)))
            if _is_chunk(first):
                return await _stream(request, first, resp)
            await resp.aclose()
            resp = first
        if inspect.isawaitable(resp):
            resp = await resp
        return _shaped(request, _response(resp))

    def _is_chunk(item) -> bool:
        return isinstance(item, dict) and SSE in item

    async def _stream(request: web.Request, first: dict, rest) -> web.StreamResponse:
        """Server-sent events: each chunk is written as soon as the graph yields it."""
        out = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                      "Cache-Control": "no-cache"})
        await out.prepare(request)
        try:
            await out.write(first[SSE].encode())
            async for item in rest:
                if _is_chunk(item):
                    await out.write(item[SSE].encode())
                elif _is_response(item):  # a failure after the stream began
                    await out.write(f"data: {json.dumps({'error': _text(item.body)})}\n\n".encode())
            await out.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            # the client went away: one line, no traceback; the rest of the stream is drained so
            # the generation ends and its KV blocks are freed
            mlrun.utils.logger.info("stream ended early: the client disconnected", route=request.path)
            async for _ in rest:
                pass
        return out

    def _text(body) -> str:
        return body.decode() if isinstance(body, bytes) else body if isinstance(body, str) else json.dumps(body)

    def _is_response(item) -> bool:
        # nuclio's Response, or MLRun's (the graph's own; the streaming handler yields it as is)
        return isinstance(item, (nuclio_sdk.Response, mlrun.serving.server.Response))

    def _response(resp) -> web.Response:
        if _is_response(resp):
            payload = resp.body
            if not isinstance(payload, (str, bytes)):
                payload = json.dumps(payload)
            return web.Response(body=payload.encode() if isinstance(payload, str) else payload,
                                status=resp.status_code, headers=resp.headers or None,
                                content_type=(resp.content_type or "text/plain").split(";")[0])
        if isinstance(resp, (str, bytes)):
            return web.Response(body=resp if isinstance(resp, bytes) else resp.encode(),
                                content_type="application/json")
        return web.json_response(resp)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    body_timeout_s = BODY_TIMEOUT_S if body_timeout is None else body_timeout
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _error(request: web.Request, e: RouteError) -> web.Response:
    e.log(mlrun.utils.logger, request.path)  # one line, as the graph logs the requests it refuses
    return web.json_response(e.to_dict(request.path), status=e.status, headers=e.response_headers() or None)


def _shaped(request: web.Request, resp: web.Response) -> web.Response:
    """An error the graph did not shape (MLRun's own, before the graph runs: a body sent as JSON
    that does not decode) in the route's error shape; every other response as it is."""
    if resp.status < 400 or resp.content_type == "application/json":
        return resp
    text = (resp.body or b"").decode(errors="replace") if isinstance(resp.body, bytes) else str(resp.body or "")
    message = text.splitlines()[0] if text.strip() else f"HTTP {resp.status}"
    if "json decode" in message:
        message = f"body: not valid JSON ({message})"
    headers = {k: v for k, v in resp.headers.items() if k.lower() in ("retry-after", "allow", "www-authenticate")}
    return web.json_response(RouteError(resp.status, message, param="body" if "JSON" in message else None)
                             .to_dict(request.path), status=resp.status, headers=headers or None)


def _plan_specs(artifacts: Path, bundles: dict[str, Path]) -> list[dict]:
    """The run's fleet plan's function specs (none without a plan), each task with a bundle."""
    plan = RunLayout(artifacts).plan_file()
    specs = json.loads(plan.read_text()).get("function_specs", []) if plan.is_file() else []
    missing = sorted({t for s in specs for m in s["models"] for t in m["tasks"]} - set(bundles))
    if missing:
        raise SystemExit(f"{plan}: the plan hosts task(s) {missing} with no serving bundle under {artifacts}")
    return specs


def plan_engines(artifacts: Path, bundles: dict[str, Path]) -> dict[str, dict]:
    """Each task's engine settings as the run's one-group plan sizes them (a cascade where the
    plan serves one), as ``deploy_plan`` deploys that group; empty without such a plan."""
    specs = _plan_specs(artifacts, bundles)
    if len(specs) != 1:
        return {}
    return group_models(specs[0], {t: str(p) for t, p in bundles.items()})[1]


def plan_apps(artifacts: Path, bundles: dict[str, Path], host: str, port: int,
              engine: dict | None = None, body_timeout: float | None = None,
              ) -> list[tuple[str, int, list[str], web.Application]]:
    """Where the run's fleet plan has several groups: (name, port, tasks, app) of each group's
    function (``port`` + 1, + 2, ...), then of the router on ``port``; else none."""
    specs = _plan_specs(artifacts, bundles)
    if len(specs) < 2:
        return []
    models = {t: str(p) for t, p in bundles.items()}
    apps = []
    for i, spec in enumerate(specs, start=1):
        tasks, engines = group_models(spec, models)
        engines = {t: {**(engine or {}), **e} for t, e in engines.items()}
        apps.append((spec["name"], port + i, list(tasks), make_app(serving_spec(tasks, engines=engines),
                                                                   body_timeout=body_timeout)))
    routes, groups, parts = plan_routes(specs, [f"http://{host}:{port + i}" for i in range(1, len(specs) + 1)])
    router = make_app(router_spec(routes, groups, parts), namespace=vars(router_module), body_timeout=body_timeout)
    return apps + [("serving (router)", port, sorted({t for _, _, ts, _ in apps for t in ts}), router)]


def _with_groups(router: web.Application, groups: list[tuple[str, int, list[str], web.Application]],
                 host: str) -> web.Application:
    """``router``, starting the group apps before it answers and stopping them after it."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> None:
        for _, port, _, group in groups:
            runner = web.AppRunner(group, shutdown_timeout=10)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            runners.append(runner)

    async def stop(app: web.Application) -> None:
        for runner in reversed(runners):
            await runner.cleanup()

    router.on_startup.insert(0, start)
    router.on_cleanup.append(stop)
    return router


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the latest run's task models over HTTP")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--artifacts", default=os.environ.get("RIGHTSIZER_ARTIFACTS", ""),
                        help="artifact path of a size_and_deploy run, or a folder of runs (the latest is "
                             "served; default: the project's artifacts/)")
    parser.add_argument("--engine", default="{}", help="EngineConfig fields as JSON, for every task")
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="require 'Authorization: Bearer KEY' on every route but health (repeat for "
                             f"several keys; or set ${API_KEYS_ENV}, comma-separated)")
    parser.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT_S, metavar="SECONDS",
                        help="a request body not received whole by then is answered 408")
    parser.add_argument("--traffic-log", default=os.environ.get(TRAFFIC_LOG_ENV, ""), metavar="PATH",
                        help="record sampled answers here (JSON lines, rotated at 16 MiB; the served-source "
                             "re-evaluation reads it); default: nothing recorded")
    parser.add_argument("--traffic-sample", type=float, default=1.0, metavar="SHARE",
                        help="the share of answers recorded, in (0, 1] (default 1)")
    args = parser.parse_args(argv)
    if args.traffic_log:  # the graph reads them from its environment, as a pod would
        if not 0 < args.traffic_sample <= 1:
            raise SystemExit(f"--traffic-sample: {args.traffic_sample}; expected a share in (0, 1]")
        os.environ[TRAFFIC_LOG_ENV] = str(Path(args.traffic_log).expanduser().resolve())
        os.environ[TRAFFIC_SAMPLE_ENV] = str(args.traffic_sample)
    if args.body_timeout <= 0:
        raise SystemExit(f"--body-timeout: {args.body_timeout}; expected seconds > 0")
    if args.api_key:  # the graph reads the keys from its environment, as a pod gets them from a secret
        bad = [k for k in args.api_key if not k.strip() or "," in k]
        if bad:
            raise SystemExit("--api-key: expected a non-empty key without commas")
        os.environ[API_KEYS_ENV] = ",".join(args.api_key)
    # the artifact folder of a run, or one that holds runs (<run id>/, where a bare
    # project.run("size_and_deploy") writes): the latest of them is served
    artifacts = latest_run(Path(args.artifacts or ROOT / "artifacts").expanduser())
    bundles = find_bundles(artifacts)
    if not bundles:
        raise SystemExit(f"--artifacts {artifacts}: no serving bundles (rightsizer/<task>/quantize/"
                         "bundle); run the demo first (bash scripts/demo.sh) or point at a run")
    engine = json.loads(args.engine)
    base = f"http://{args.host}:{args.port}"
    apps = plan_apps(artifacts, bundles, args.host, args.port, engine, args.body_timeout)
    if apps:
        print(f"Serving {len(bundles)} task model(s) from {artifacts} as the fleet plan places them: "
              f"{len(apps) - 1} placement groups behind the router at {base}", flush=True)
        for name, port, tasks, _ in apps:
            print(f"  {name}: http://{args.host}:{port} ({', '.join(tasks)})", flush=True)
        app = _with_groups(apps[-1][3], apps[:-1], args.host)
    else:
        print(f"Serving {len(bundles)} task model(s) from {artifacts} at {base}", flush=True)
        engines = plan_engines(artifacts, bundles)
        for task, path in sorted(bundles.items()):
            cascade = " (a cascade: its small model first)" if engines.get(task, {}).get("cascade") else ""
            print(f"  {task}: {path}{cascade}", flush=True)
        app = make_app(serving_spec({t: str(p) for t, p in bundles.items()}, engine=engine, engines=engines or None),
                       body_timeout=args.body_timeout)
    print("Routes:", flush=True)
    for method, path in ROUTES:
        print(f"  {method:4} {base}{path}", flush=True)
    if os.environ.get(API_KEYS_ENV, "").strip():
        print("An API key is required on every route but health (Authorization: Bearer <key>).", flush=True)
    print("Ctrl-C stops.", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=10)


if __name__ == "__main__":
    main()
