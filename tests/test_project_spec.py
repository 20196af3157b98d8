"""The MLRun project spec: functions, GPU limits, scale-to-zero, workflows and schedule.

Nothing is deployed here (no Kubernetes, no Nuclio): these tests check the specs that a
cluster would receive, as far as they can be checked offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlrun
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GPU_STEPS = {"select", "evaluate", "quantize", "quantize-gptq", "finetune", "serving"}
CPU_STEPS = {"size_gpu", "report", "reevaluate"}


def _load(**params):
    return mlrun.load_project(str(ROOT), name="rightsizer", parameters=params, save=False)


def _gpu_limit(fn):
    return (fn.spec.resources or {}).get("limits", {}).get("nvidia.com/gpu")


@pytest.mark.parametrize("gpus", [0, 2])
def test_gpu_limits_follow_the_project_param(gpus):
    project = _load(gpus=gpus)
    for name in GPU_STEPS:
        limit = _gpu_limit(project.get_function(name))
        assert (int(limit) if limit else 0) == gpus, name
    for name in CPU_STEPS:
        assert not _gpu_limit(project.get_function(name)), name


def test_finetune_gets_shared_memory_and_a_long_time_limit():
    fn = _load(gpus=1).get_function("finetune")
    mounts = {m["name"]: m["mountPath"] for m in fn.spec.volume_mounts}
    assert mounts.get("dshm") == "/dev/shm"
    assert fn.spec.state_thresholds["executing"].endswith("h")


def test_gptq_function_builds_its_own_environment():
    fn = _load(gpus=1).get_function("quantize-gptq")
    wanted = [ln.split("#")[0].strip() for ln in (ROOT / "requirements-gptq.txt").read_text().splitlines()]
    wanted = [w for w in wanted if w]
    commands = " ".join(fn.spec.build.commands)
    assert "python -m venv /opt/gptq" in commands  # apart from mlrun's environment
    assert wanted and all(w in commands for w in wanted)
    assert int(_gpu_limit(fn)) == 1


def test_negative_gpus_is_a_clear_error():
    with pytest.raises(ValueError, match="gpus: -1; expected a GPU count >= 0"):
        _load(gpus=-1)


@pytest.mark.parametrize("gpus", [0, 1])
def test_serving_is_one_async_flow_with_one_worker_scaling_to_zero(gpus):
    serving = _load(gpus=gpus).get_function("serving")
    assert serving.kind == "serving"
    assert serving.spec.min_replicas == 0
    assert serving.spec.max_replicas >= 1
    graph = serving.spec.graph
    assert graph.kind == "root" and graph.engine == "async"  # a flow topology, async engine
    scale = serving.spec.config["spec.scaleToZero.scaleResources"]
    assert scale == [{"metricName": "nuclio_processor_handled_events_total",
                      "windowSize": "10m", "threshold": 0}]
    http = serving.spec.config["spec.triggers.http"]
    # one worker with Nuclio's async trigger: concurrent requests reach one set of engines
    assert http["maxWorkers"] == 1 and http["mode"] == "async"
    assert http["workerAvailabilityTimeoutMilliseconds"] > 0
    assert (int(_gpu_limit(serving) or 0)) == gpus
    routes = set(serving.spec.api_handler_config["endpoints"])
    assert {"POST:/v2/models/{task}/infer", "POST:/v1/completions", "POST:/v1/chat/completions",
            "GET:/v1/models"} <= routes


def test_serving_graph_runs_one_model_per_task_selected_by_name(tmp_path):
    from functions.serving import set_task_models

    serving = _load().get_function("serving")
    set_task_models(serving, {"ticket_routing": str(tmp_path / "a"), "review_sentiment": str(tmp_path / "b")},
                    engine={"num_blocks": 64, "max_batch_tokens": 256})
    steps = serving.spec.graph.steps
    assert list(steps) == ["parse", "batch", "models", "unbatch", "stream", "respond"]
    # streamed requests skip the batch (storey streams one unbatched runnable's output) and meet
    # the others at the one responder; the function runs MLRun's streaming handler
    assert steps["stream"].after == ["parse"] and set(steps["respond"].after) == {"unbatch", "stream", "parse"}
    assert serving.spec.streaming is True
    # the parser gets the whole event (the API key is a header); every path and method reaches it
    assert steps["parse"].full_event is True
    endpoints = serving.spec.api_handler_config["endpoints"]
    assert "POST:/v1/chat/completions" in endpoints and "DELETE:/*" in endpoints
    # large bodies' memory is given back (glibc's fixed mmap threshold, as serve.sh sets it)
    assert {e["name"]: e.get("value") for e in serving.to_dict()["spec"]["env"]}["MALLOC_MMAP_THRESHOLD_"] == "1048576"
    assert steps["stream"].class_name == "StreamStep" and steps["stream"].class_args["max_in_flight"] >= 1
    stream_models = steps["stream"].class_args["models"]
    assert set(stream_models) == {"ticket_routing", "review_sentiment"}
    assert stream_models["ticket_routing"] == {"bundle_path": str(tmp_path / "a"),
                                               "engine": {"num_blocks": 64, "max_batch_tokens": 256}}
    batch = steps["batch"]  # a task's concurrent requests reach its engine together
    assert batch.class_name == "storey.Batch" and batch.class_args["key_field"] == "task"
    assert batch.class_args["max_events"] >= 1 and batch.class_args["flush_after_seconds"] > 0
    runner = steps["models"]
    assert runner.kind == "model_runner"
    assert runner.class_args["model_runner_selector"][0] == "TaskSelector"
    models = runner.class_args["models"]
    assert set(models) == {"ticket_routing", "review_sentiment"}
    for task, (cls, params) in models.items():
        assert cls == "TaskRunner" and params["bundle_path"].endswith("/a" if task == "ticket_routing" else "/b")
        assert params["engine"] == {"num_blocks": 64, "max_batch_tokens": 256}  # sized explicitly
    assert set(runner.class_args["execution_mechanism_by_model_name"].values()) == {"asyncio"}
    with pytest.raises(Exception, match=r"unknown setting\(s\) \['blocks'\]"):
        set_task_models(serving, {"ticket_routing": "x"}, engine={"blocks": 1})
    with pytest.raises(ValueError, match="batch_max_events: 0"):
        set_task_models(serving, {"ticket_routing": "x"}, batch_max_events=0)


def test_the_project_registers_the_monitoring_application():
    """project_setup.py registers ``served-traffic`` (functions/monitoring_app.py) as a model
    monitoring application on the app the project sizes, reading the deployed run's artifacts
    from the ``monitoring_models`` param (its shadow and judge checks)."""
    from functions.monitoring_app import APP_NAME

    fn = _load(monitoring_models="/mnt/runs/latest").get_function(APP_NAME)
    assert fn.metadata.labels["mlrun__type"] == "mlrun__model-monitoring-application"
    step = fn.spec.graph.steps["ServedTrafficApp"]
    assert step.class_name == "ServedTrafficApp"
    assert step.class_args == {"app": "tasks/demo_app.yaml", "models": "/mnt/runs/latest"}
    assert _load().get_function(APP_NAME).spec.graph.steps["ServedTrafficApp"].class_args["models"] == ""


def test_workflows_registered_with_reevaluation_schedule():
    project = _load()
    flows = {w["name"]: w for w in project.spec.workflows}
    assert set(flows) == {"size_and_deploy", "reevaluate"}
    assert flows["size_and_deploy"]["path"] == "pipelines/size_and_deploy.py"
    assert flows["reevaluate"]["schedule"] == "0 6 * * 1"
    assert flows["size_and_deploy"]["engine"] == "local"  # no API server configured here


def test_every_step_has_a_handler_module_of_its_name():
    project = _load()
    for name in GPU_STEPS | CPU_STEPS:
        fn = project.get_function(name)
        assert Path(ROOT, "functions", f"{name.replace('-', '_')}.py").is_file()
        if name != "serving":
            assert fn.spec.default_handler == name.replace("-", "_")


def test_project_yaml_has_no_secrets_user_names_or_embedded_code():
    text = (ROOT / "project.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["metadata"]["name"] == "rightsizer"
    for bad in ("base64", "HF_TOKEN", "token:", "password", "/User/", "owner:"):
        assert bad not in text, bad


def test_loads_from_a_git_clone(tmp_path, monkeypatch):
    # In a clone MLRun takes the remote (here a local path) as the project source; loading
    # and running a step must still work there (CI runs from exactly such a clone).
    import subprocess

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    monkeypatch.chdir(clone)  # as CI runs: from inside the clone
    project = mlrun.load_project(str(clone), name="rightsizer", save=False)
    assert project.get_function("select").spec.default_handler == "select"
    # running a step locally must not try to pull that "source" (a bad spec: the handler
    # fails inside the run, which is reported on the run, not raised by run_function)
    run = project.run_function("select", params={"task_spec": "tasks/nope.yaml"}, local=True)
    assert run.status.state != "completed"


def test_loading_the_select_handler_as_mlrun_does_keeps_the_standard_select_module():
    import importlib.util
    import select
    import sys

    # what mlrun.runtimes.local.load_module does with a handler file (embed_in_sys=True)
    spec = importlib.util.spec_from_file_location("select", ROOT / "functions" / "select.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["select"] = module
    try:
        spec.loader.exec_module(module)
        assert callable(module.select)
        assert sys.modules["select"] is select and hasattr(sys.modules["select"], "poll")
    finally:
        sys.modules["select"] = select


def _fleet_plans() -> dict:
    """A CPU plan, a MIG plan and a whole-GPU plan, as the plan step makes them."""
    from test_fleet import LLAMA8, TINY_S, decision, three_tiny

    from rightsizer.plan import plan_fleet

    big = decision("big", LLAMA8, prompt=1024, output=64, batch=16, ttft=20_000, tpot=200, throughput=50)
    return {"cpu": plan_fleet([decision("a", TINY_S)], baseline=False),
            "mig": plan_fleet(three_tiny(), include_cpu=False, baseline=False),
            "gpu": plan_fleet([big], include_cpu=False, include_mig=False, baseline=False)}


@pytest.mark.parametrize("gpus", [0, 1])
@pytest.mark.parametrize("kind", ["cpu", "mig", "gpu"])
def test_each_placement_group_deploys_with_its_own_resources(kind, gpus, tmp_path):
    from functions.serving import configure_group, set_task_models

    plan = _fleet_plans()[kind]
    assert {g.device_kind for g in plan.groups} == {kind}
    for group, spec in zip(plan.groups, plan.function_specs()):
        fn = _load(gpus=gpus).get_function("serving").copy()
        tasks = [t for m in spec["models"] for t in m["tasks"]]
        set_task_models(fn, {t: str(tmp_path / t) for t in tasks})
        configure_group(fn, spec)
        limits, requests = fn.spec.resources.get("limits", {}), fn.spec.resources.get("requests", {})
        # the group's device, not the project-wide `gpus` limit
        gpu_keys = {k for k in limits if k.startswith("nvidia.com/")}
        if kind == "cpu":
            assert not gpu_keys and not fn.spec.node_selector.get("nvidia.com/gpu.product")
            assert fn.spec.node_selector == {"node.kubernetes.io/instance-type": group.device}
            assert requests["cpu"] == spec["resources"]["requests"]["cpu"] and requests["memory"].endswith("Gi")
            assert limits["memory"] == requests["memory"]
        else:
            resource = "nvidia.com/gpu" if kind == "gpu" else f"nvidia.com/mig-{group.mig}"
            assert gpu_keys == {resource} and int(limits[resource]) == group.resource_count >= 1
            assert fn.spec.node_selector == {"nvidia.com/gpu.product": spec["node_selector"]["nvidia.com/gpu.product"]}
        assert fn.spec.min_replicas == 0 and fn.spec.max_replicas == spec["max_replicas"] >= group.replicas
        models = fn.spec.graph.steps["models"].class_args["models"]
        assert sorted(models) == sorted(tasks)  # the group's task models, and only them
        assert fn.spec.config["spec.scaleToZero.scaleResources"]  # still scales to zero
        assert not fn.spec.track_models  # no tracking unless asked (a mock deploy)
        configure_group(fn, spec, tracking_percentage=_load(gpus=gpus).get_param("tracking_percentage"))
        assert fn.spec.track_models and fn.spec.parameters["sampling_percentage"] == 10  # model endpoints
        with pytest.raises(ValueError, match=r"tracking_percentage: 150; expected a percentage in \(0, 100\]"):
            configure_group(fn, spec, tracking_percentage=150)


def _two_group_plan(path: Path) -> list[dict]:
    """A plan step's two-group plan (an SLO that sharing one L4 would break), written to ``path``."""
    from test_fleet import TINY_L, TINY_S, decision

    from rightsizer.plan import plan_fleet
    from rightsizer.sizing import Workload, estimate, load_catalog

    l4 = load_catalog().get("L4")
    tight = estimate(TINY_L, l4, Workload(96, 4, 8, "bf16")).served_tpot_ms + 0.5 * estimate(
        TINY_S, l4, Workload(96, 4, 8, "bf16")).served_tpot_ms
    plan = plan_fleet([decision("ticket_routing", TINY_L, tpot=tight, throughput=10),
                       decision("review_sentiment", TINY_S, tpot=100, throughput=10)],
                      devices=["L4"], include_mig=False, include_cpu=False, baseline=False)
    specs = plan.function_specs()
    assert len(specs) == 2
    path.write_text(json.dumps({"function_specs": specs}))
    return specs


def _bundles(demo_models, tmp_path) -> dict:
    from rightsizer.bundle import write_bundle
    from rightsizer.taskspec import load_task

    out = {}
    for task in ("ticket_routing", "review_sentiment"):
        out[task] = str(write_bundle(demo_models / "models" / "tiny-s", load_task(ROOT / "tasks" / f"{task}.yaml"),
                                     tmp_path / task, base_model="demo:tiny-s", rung="zero_shot"))
    return out


def _deploy(project, plan: Path, models: dict, tmp_path, mock: bool):
    # deploy_plan logs results only (no artifact files)
    run = project.run_function("plan", handler="deploy_plan", local=True,
                               params={"plan": str(plan), "models": models, "mock": mock})
    assert run.status.state == "completed", run.status.error
    return run.outputs


def test_a_two_group_plan_deploys_the_router_as_the_entry_point(demo_models, tmp_path):
    from functions.router import routes_of

    project = _load(gpus=1)
    specs = _two_group_plan(tmp_path / "fleet_plan.json")
    models = _bundles(demo_models, tmp_path)
    for _ in range(2):  # again in the same project: `serving` is the router by then
        out = _deploy(project, tmp_path / "fleet_plan.json", models, tmp_path, mock=True)
        assert out["functions"] == {s["group"]: s["name"] for s in specs}  # groups keep their names
        assert out["endpoint"] == "serving"  # offline: the entry point's function name
        hosted = {t: s["name"] for s in specs for m in s["models"] for t in m["tasks"]}
        router = project.get_function("serving")
        assert router.metadata.labels["rightsizer/role"] == "router"
        # a mock deploy has no URL: each route is its group function's MLRun name
        assert routes_of(router) == {t: f"rightsizer/{name}" for t, name in hosted.items()}
        assert routes_of(router, "group") == hosted
        steps = router.spec.graph.steps
        assert list(steps) == ["parse", *hosted, "models", "respond"]
        assert {s.class_name for n, s in steps.items() if n in hosted} == {"GroupProxy"}
        assert steps["models"].class_name == "ModelsFanout"
        assert steps["models"].class_args["groups"] == {f"rightsizer/{s['name']}": [m["tasks"][0] for m in s["models"]]
                                                        for s in specs}
        assert steps["respond"].responder and set(steps["respond"].after) == {"parse", "models", *hosted}
        assert router.spec.streaming is False and not router.spec.api_handler_config
        assert not _gpu_limit(router) and router.spec.min_replicas == 1  # CPU, always up
        assert router.spec.config["spec.triggers.http"]["mode"] == "async"
        for spec in specs:  # each group: its own tasks and device
            fn = project.get_function(spec["name"])
            assert fn.metadata.labels["rightsizer/role"] == "group"
            assert sorted(fn.spec.graph.steps["models"].class_args["models"]) == sorted(
                t for m in spec["models"] for t in m["tasks"])
            assert int(_gpu_limit(fn)) == 1 and fn.spec.node_selector == spec["node_selector"]


def test_a_task_split_by_prompt_length_deploys_a_route_per_part(demo_models, tmp_path):
    """A plan whose mixed-device fleet is deployed (``deploy_mixed_devices``): review_sentiment's
    short prompts in one group and its long ones in the other; the router has a proxy per part
    and its parser the parts (``rightsizer.routing.plan_routes``), each group the task's model."""
    from functions.router import routes_of

    specs = _two_group_plan(tmp_path / "plain.json")
    (rs,) = [(i, m) for i, s in enumerate(specs) for m in s["models"] if m["tasks"] == ["review_sentiment"]]
    other = 1 - rs[0]
    rs[1]["prompt_range"] = [31, 400]
    specs[other]["models"].append({**rs[1], "name": "review_sentiment@short", "prompt_range": [1, 30]})
    (tmp_path / "fleet_plan.json").write_text(json.dumps({"function_specs": specs}))
    project = _load(gpus=1)
    _deploy(project, tmp_path / "fleet_plan.json", _bundles(demo_models, tmp_path), tmp_path, mock=True)
    router = project.get_function("serving")
    routes = routes_of(router)
    assert routes["review_sentiment--prompt-1-30"] == f"rightsizer/{specs[other]['name']}"
    assert routes["review_sentiment--prompt-31-400"] == f"rightsizer/{specs[rs[0]]['name']}"
    assert "review_sentiment" not in routes and routes["ticket_routing"]
    assert router.spec.graph.steps["parse"].class_args["parts"] == {
        "review_sentiment": [[120, "review_sentiment--prompt-1-30"], [None, "review_sentiment--prompt-31-400"]]}
    for spec in specs:  # both groups load the task's model
        assert "review_sentiment" in project.get_function(spec["name"]).spec.graph.steps["models"].class_args["models"]


def test_api_keys_come_from_a_project_secret_never_the_spec(demo_models, tmp_path):
    """With ``api_key_secret``, each group function and the router read $RIGHTSIZER_API_KEYS from
    the project's Kubernetes secret (a reference in the spec, not the keys); without it, no key."""
    _two_group_plan(tmp_path / "fleet_plan.json")
    models = _bundles(demo_models, tmp_path)
    project = _load(api_key_secret="serving_api_keys")
    out = _deploy(project, tmp_path / "fleet_plan.json", models, tmp_path, mock=True)
    for name in [*out["functions"].values(), "serving"]:
        env = {e["name"]: e for e in project.get_function(name).to_dict()["spec"]["env"]}  # as deployed
        assert "value" not in env["RIGHTSIZER_API_KEYS"]
        ref = env["RIGHTSIZER_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "mlrun-project-secrets-rightsizer", "key": "serving_api_keys"}, (name, ref)
    plain = _load()
    out = _deploy(plain, tmp_path / "fleet_plan.json", models, tmp_path, mock=True)
    for name in [*out["functions"].values(), "serving"]:
        assert "RIGHTSIZER_API_KEYS" not in {e["name"] for e in plain.get_function(name).to_dict()["spec"]["env"]}


def test_on_a_cluster_the_router_routes_to_each_groups_in_cluster_url(demo_models, tmp_path, monkeypatch):
    """Nuclio cannot run here: its deploy is replaced by one that gives each function the
    status Nuclio would, and the router's spec is checked."""
    from mlrun.projects.operations import DeployStatus

    from functions.router import routes_of

    project = _load()
    specs = _two_group_plan(tmp_path / "fleet_plan.json")
    deployed = []

    def deploy_function(fn, mock=False, **kwargs):
        name = fn.metadata.name
        fn.status.internal_invocation_urls = [f"nuclio-rightsizer-{name}.mlrun.svc.cluster.local:8080"]
        fn.status.external_invocation_urls = [f"rightsizer-{name}.example.com"]
        fn.status.address = f"rightsizer-{name}.example.com"
        deployed.append((name, mock))
        return DeployStatus("ready", {"endpoint": f"http://{fn.status.address}", "name": name}, fn)

    monkeypatch.setattr(project, "deploy_function", deploy_function)
    out = _deploy(project, tmp_path / "fleet_plan.json", {"ticket_routing": "store://models/rightsizer/ticket_routing",
                                                         "review_sentiment": "store://models/rightsizer/review_sentiment"},
                  tmp_path, mock=False)
    assert deployed == [(s["name"], False) for s in specs] + [("serving", False)]  # groups first, router last
    assert out["endpoint"] == out["url"] == "http://rightsizer-serving.example.com"  # the router's
    assert out["serve_command"] == ""  # on a cluster the URL is the endpoint itself
    router = project.get_function("serving")
    assert routes_of(router) == {t: f"http://nuclio-rightsizer-{s['name']}.mlrun.svc.cluster.local:8080"
                                 for s in specs for m in s["models"] for t in m["tasks"]}


def test_one_group_deploys_no_router(demo_models, tmp_path):
    project = _load()
    plan = tmp_path / "fleet_plan.json"
    plan.write_text(json.dumps({"function_specs": [
        {**spec, "name": "g0-one"} for spec in _fleet_plans()["cpu"].function_specs()]}))
    spec = json.loads(plan.read_text())["function_specs"][0]
    task = spec["models"][0]["tasks"][0]
    out = _deploy(project, plan, {task: _bundles(demo_models, tmp_path)["ticket_routing"]}, tmp_path, mock=True)
    serve = out.pop("serve_command")
    assert out == {"endpoint": "serving", "url": "http://127.0.0.1:8080", "functions": {spec["group"]: "serving"},
                   "missing_tasks": []}
    # offline the entry point is served by serve.sh on this run's artifacts: the result says how
    assert serve.startswith("bash scripts/serve.sh --artifacts /") and serve.split()[-1].endswith("artifacts")
    assert project.get_function("serving").metadata.labels["rightsizer/role"] == "group"


def test_a_second_project_in_the_same_process_gets_its_own_artifact_folder(tmp_path, monkeypatch):
    """Offline, project_setup defaults the artifact path to <project>/artifacts; a second
    project loaded later in the same kernel must not write into the first one's folder,
    while an artifact path the user chose stays."""
    import project_setup

    monkeypatch.setitem(mlrun.mlconf._cfg, "artifact_path", "")  # Config keeps its values in _cfg
    monkeypatch.delenv(project_setup._DEFAULTED_ENV, raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    for ctx in (a, b):
        ctx.mkdir()
        project_setup._offline_defaults(mlrun.new_project(ctx.name, context=str(ctx), save=False))
        assert mlrun.mlconf.artifact_path == str(ctx / "artifacts")
    mlrun.mlconf.artifact_path = str(tmp_path / "mine")  # the user's choice wins
    project_setup._offline_defaults(mlrun.new_project("c", context=str(a), save=False))
    assert mlrun.mlconf.artifact_path == str(tmp_path / "mine")


def test_the_serving_functions_timeout_is_the_engines_deadline():
    """project_setup cannot import the library before it puts the repo on sys.path, so it
    writes the deadline again; this keeps the two equal."""
    import project_setup
    from rightsizer.serving.contract import DEADLINE_S

    assert project_setup.SERVING_TIMEOUT_S == DEADLINE_S
