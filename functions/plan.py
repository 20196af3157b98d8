"""MLRun steps ``plan`` and ``deploy_plan``: pack the task models onto devices, then deploy
one serving function per placement group.

``plan`` reads the decision records (``size_gpu``) of the tasks that were sized, plans the
chosen fleet and the one-big-model baseline fleet on one price list (``rightsizer.plan``),
logs both and says whether the application is deployed (``deploy``: not when a task cannot
be sized, unless ``deploy_partial``); ``deploy_plan`` deploys what the plan says: per group a
serving function named after it, with the group's resources, node selector and replicas,
hosting the group's task models; with several groups, the router (``functions.router``) in
front of them as ``serving``. ``require_all_tasks`` fails the workflow, after the report,
when a task cannot be sized and the rest is not deployed (``rightsizer.unsized``).
"""

from __future__ import annotations

import dataclasses
import json

import mlrun

from functions.mlrun_io import (log_results, callable_endpoint, current_project, log_plot, log_table, made_parent,
                                run_layout, serving_engine_param)
from functions.router import ROLE_LABEL, routes_of, set_routes
from functions.serving import configure_group, end_mock_deploy, set_task_models
from rightsizer.plan import DEFAULT_HEADROOM, plan_fleet
from rightsizer.routing import API_KEYS_ENV, plan_routes
from rightsizer.plan.plots import fleet_figure
from rightsizer.serving.contract import EngineConfig
from rightsizer.sizing.calibration import factors_for_engine
from rightsizer.sizing.prices import DEFAULT_PRICE_LIST
from rightsizer.errors import NoFeasibleOption
from rightsizer.records import PLAN_SCHEMA_VERSION, as_record, check_schema_version
from rightsizer.unsized import deploys, load_outcomes, missing_message, parse_flag, split_selections


def plan(context: mlrun.MLClientCtx, selections: list, deploy_partial: str = "auto",
         price_list: str = "", headroom: float = DEFAULT_HEADROOM, mixed_devices: str = "auto",
         deploy_mixed: str = "auto") -> None:
    """The fleet plan of the run's sized tasks (``selections``: the select steps' selection
    paths, one per task of the application).

    A task whose bar no candidate reaches has no decision record: it is left out of the plan
    (``unsized_tasks``). The records of the others are read from the run's layout (on KFP a
    size_gpu step runs under a condition and cannot pass its output on). ``deploy_partial``:
    "true"/"false", or "auto" for the project's ``deploy_partial`` param (default false).
    ``price_list``: a packaged list (``rightsizer/data/prices``) or a file; empty: the
    project's ``price_list`` param, else the default list. ``headroom``: the busy fraction a
    device may reach. ``mixed_devices``: "true"/"false", or "auto" for the project's
    ``plan_mixed_devices`` param (default false): also plan the fleet with tasks split by prompt
    length across device types (``rightsizer.plan.plan_mixed``; in ``fleet_plan``'s
    ``mixed_devices``, result ``mixed_fleet_cost_per_hour``). ``deploy_mixed``: "true"/"false",
    or "auto" for the project's ``deploy_mixed_devices`` param (default false): where the mixed
    fleet costs less, its function specs are the ones the deploy step deploys (the entry point
    routes a split task's requests by their length, ``rightsizer.routing.plan_routes``).

    Logs: ``fleet_plan`` (JSON: groups, models, memory split, busy fractions, the function
    specs, the baseline fleet and the comparison, ``unsized_tasks``), ``fleet_chart``
    (Plotly: how each device's memory and time are shared), ``fleet_groups`` (table); results
    ``plan`` (its path; empty when no task was sized), ``groups``, ``fleet_cost_per_hour``,
    ``baseline_fleet_cost_per_hour``, ``price_list``, ``unsized_tasks``, ``deploy_partial``
    and ``deploy`` (whether the workflow deploys: every task sized, or ``deploy_partial`` and
    at least one).
    """
    project = current_project(context)
    if deploy_partial in ("auto", "", None):
        deploy_partial = project.get_param("deploy_partial", False) if project else False
    partial = parse_flag(deploy_partial, "deploy_partial")
    found, unsized = load_outcomes(selections, run_layout(context))
    records = [as_record(r) for r in found]
    sized = [r.task for r in records]
    deploy = deploys(sized, unsized, partial)
    log_results(context, {"unsized_tasks": [u["task"] for u in unsized], "deploy_partial": partial,
                         "deploy": deploy})
    if unsized:
        context.logger.warning(missing_message(sized, unsized, deployed=deploy))
    if not records:
        log_results(context, {"plan": "", "groups": 0, "fleet_cost_per_hour": None})
        return
    price_list = price_list or (project.get_param("price_list", "") if project else "") or DEFAULT_PRICE_LIST
    if mixed_devices in ("auto", "", None):
        mixed_devices = project.get_param("plan_mixed_devices", False) if project else False
    if deploy_mixed in ("auto", "", None):
        deploy_mixed = project.get_param("deploy_mixed_devices", False) if project else False
    fleet = plan_fleet(records, price_list=price_list, headroom=float(headroom),
                       factors=factors_for_engine(serving_engine_param(project)),
                       mixed_devices=parse_flag(mixed_devices, "mixed_devices"))
    fleet.mixed_deployed = bool(fleet.mixed is not None and parse_flag(deploy_mixed, "deploy_mixed"))
    deployed = fleet.mixed if fleet.mixed_deployed else fleet
    body = {**fleet.to_dict(), "function_specs": deployed.function_specs(),
            "unsized_tasks": [u["task"] for u in unsized]}
    path = made_parent(run_layout(context).plan_file())
    path.write_text(json.dumps(body, indent=2))
    context.log_artifact("fleet_plan", local_path=str(path))
    log_plot(context, "fleet_chart", fleet_figure(fleet))
    log_table(context, "fleet_groups", [
        {"group": g.name, "device": g.label, "replicas": g.replicas,
         "usd_per_hour": round(g.cost_per_hour, 4), "busy_per_replica": round(g.busy_per_replica, 3),
         "memory_used_gib": round(g.memory_used_bytes / 2**30, 3),
         "tasks": ", ".join(t for p in g.placements for t in p.tasks)} for g in fleet.groups])
    log_results(context, {"plan": str(path), "groups": len(fleet.groups),
                         "fleet_cost_per_hour": fleet.cost_per_hour,
                         "baseline_fleet_cost_per_hour": fleet.baseline.cost_per_hour if fleet.baseline else None,
                         "mixed_fleet_cost_per_hour": fleet.mixed.cost_per_hour if fleet.mixed else None,
                         "price_list": fleet.price_list.get("name", price_list)})


def require_all_tasks(context: mlrun.MLClientCtx, selections: list) -> None:
    """Fail when a task of the application cannot be sized (``selections``: the select steps'
    selection paths): the step after the report when the plan step decided not to deploy.
    The error is one line: which tasks, each one's summary with what would be needed, and
    the ``deploy_partial`` switch that deploys the others."""
    sized, unsized = split_selections(selections)
    if unsized:
        raise NoFeasibleOption(missing_message(sized, unsized, deployed=False))
    context.log_result("tasks", sized)


def group_models(spec: dict, models: dict) -> tuple[dict, dict]:
    """A group's task models (task -> bundle, of ``models``) and each engine's settings, sized for
    the load the plan placed there (``EngineConfig.for_load``), from a ``function_specs`` entry."""
    tasks = [t for m in spec["models"] for t in m["tasks"]]
    # a model served as a cascade (its placement's small model answering first): engine.cascade
    engines = {t: {**dataclasses.asdict(EngineConfig.for_load(**m["load"])), "cascade": bool(m.get("cascade"))}
               for m in spec["models"] for t in m["tasks"]}
    return {t: models[t] for t in tasks}, engines


def group_url(fn) -> str:
    """A deployed group function's URL for the router: the in-cluster one (the router runs there),
    else its address; empty for a mock deploy (no Nuclio)."""
    status = fn.status
    if getattr(status, "internal_invocation_urls", None):
        url = status.internal_invocation_urls[0]
    else:
        url = getattr(status, "address", "") or ""
    return url if not url or "://" in url else f"http://{url}"


def deploy_plan(context: mlrun.MLClientCtx, plan: str, models: dict, mock: bool = False) -> None:
    """Deploy one serving function per group of the fleet plan at ``plan`` (a path), and with
    several groups the router in front of them.

    ``models``: task -> bundle folder or ``store://`` model URI. Each group's function is a
    copy of the project's ``serving`` function (its graph, trigger and scale-to-zero config),
    named after the group, with the group's resources (``configure_group``) and its tasks'
    models, each engine sized for its planned load (``EngineConfig.for_load``). With one
    group, that function keeps the name ``serving``: it is the application's entry point.
    With several, the entry point is the project's ``router`` function deployed as ``serving``
    (``functions.router``), each task routed to its group function's URL (``group_url``); a
    mock deploy has no URL, so the route is the group function's MLRun name, which the router
    resolves through Nuclio when it starts (offline, ``bash scripts/serve.sh`` serves the groups
    and the router on local ports). ``mock``: the mock deploy of the local engine (each graph is
    built and its models loaded here, then the flow is ended). Each deployed function is set on
    the project under its name.

    Results: ``endpoint`` (the entry point's URL; offline, its function name), ``url`` (what a
    client calls: that URL; offline, scripts/serve.sh's local address) and ``serve_command``
    (offline: the command that serves this run's models there; empty on a cluster),
    ``functions`` (group -> function name), ``missing_tasks`` (the plan's ``unsized_tasks``:
    the application's tasks deployed without a model, with ``deploy_partial``).
    """
    project = current_project(context)
    if project is None:
        raise RuntimeError("deploy_plan: no project in this run's context; run it with project.run_function")
    body = json.loads(mlrun.get_dataitem(plan).get() if "://" in plan else open(plan).read())
    # only the function specs are read here: a plan of a newer schema might mean them differently
    check_schema_version(body, PLAN_SCHEMA_VERSION, "fleet plan", plan)
    specs = body["function_specs"]
    missing = sorted({t for s in specs for m in s["models"] for t in m["tasks"]} - set(models))
    if missing:
        raise ValueError(f"deploy_plan: the plan hosts task(s) {missing} with no model in 'models' "
                         f"({sorted(models)})")
    template = _group_template(project)
    names, urls, endpoint = {}, [], ""
    for spec in specs:
        fn = template.copy()
        name = "serving" if len(specs) == 1 else spec["name"]
        fn.metadata.name = name
        group, engines = group_models(spec, models)
        set_task_models(fn, group, engines=engines)
        # model monitoring on a cluster (the mock deploy has no monitoring stream to write to;
        # offline, serve.sh --traffic-log records the traffic instead)
        configure_group(fn, spec, tracking_percentage=0.0 if mock else float(
            project.get_param("tracking_percentage", 10)))
        require_api_keys(fn, project)
        project.set_function(fn, name=name)  # project.get_function(name) is what was deployed
        status = project.deploy_function(fn, mock=mock)
        if mock:
            end_mock_deploy(status.function)
        names[spec["group"]] = name
        urls.append(group_url(status.function) or f"{project.name}/{name}")
        endpoint = name if mock else status.outputs.get("endpoint") or name
        context.logger.info("deployed placement group", group=spec["group"], function=name,
                            device=spec["device"], tasks=list(group))
    if len(specs) > 1:
        routes, groups, parts = plan_routes([{**s, "name": names[s["group"]]} for s in specs], urls)
        router = project.get_function("router").copy()
        router.metadata.name = "serving"
        set_routes(router, routes, groups, parts=parts)
        require_api_keys(router, project)
        project.set_function(router, name="serving")
        status = project.deploy_function(router, mock=mock)
        if mock:
            end_mock_deploy(status.function)
        endpoint = "serving" if mock else status.outputs.get("endpoint") or "serving"
        context.logger.info("deployed the entry point", function="serving", routes=routes)
    without = body.get("unsized_tasks") or []
    if without:
        context.logger.warning(f"deployed without {', '.join(without)}: no candidate reaches "
                               "their bar (deploy_partial is true)")
    url, serve = callable_endpoint(context, endpoint)
    if serve:
        context.logger.info(f"offline: serve the deployed models with `{serve}`, then call {url}/v1")
    log_results(context, {"endpoint": endpoint, "url": url, "serve_command": serve, "functions": names,
                         "missing_tasks": without})


def require_api_keys(fn, project) -> None:
    """Where the project param ``api_key_secret`` names a project secret (its value: the API keys,
    comma-separated), the function reads them from it (``$RIGHTSIZER_API_KEYS``, a reference to
    the project's Kubernetes secret: the keys are never in the spec) and then requires one on
    every route but health."""
    key = project.get_param("api_key_secret", "") or ""
    if key:
        secret = mlrun.mlconf.secret_stores.kubernetes.project_secret_name.format(project=project.name)
        fn.set_env_from_secret(API_KEYS_ENV, secret=secret, secret_key=key)


def _group_template(project):
    """The project's serving function, copied per group. After a deploy with several groups,
    ``serving`` names the router: then a group function of that deploy (same code, trigger and
    scaling; ``set_task_models`` and ``configure_group`` set all the rest) is the template."""
    fn = project.get_function("serving")
    if fn.metadata.labels.get(ROLE_LABEL) != "router":
        return fn
    for name in sorted(set(routes_of(fn, "group").values())):
        try:
            return project.get_function(name)
        except Exception:  # noqa: BLE001 - a group function no longer in the project: try the next
            continue
    raise RuntimeError("deploy_plan: the project's 'serving' function is the router of an earlier deploy and "
                       "none of its group functions is in the project; reload the project (mlrun.load_project)")
