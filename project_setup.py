"""Registers Rightsizer's functions and workflows; run by ``mlrun.load_project``.

Parameters (``mlrun.load_project("./", parameters={...})`` or project.yaml ``spec.params``):
``gpus`` (GPU limit of the GPU steps, 0 = CPU), ``finetune_gpus`` (the finetune step's GPU
limit per node, default ``gpus``: one training process per GPU), ``finetune_nodes`` (the
finetune step's node count, default 1; more runs it as an MPIJob, one replica per node),
``gpu_type``, ``image``, ``source``
(git/archive URL of this repo for cluster runs), ``serving_max_replicas``,
``reevaluate_schedule`` (cron), ``deploy_partial`` (``size_and_deploy``: when a task cannot
be sized, deploy the others instead of failing before deploying; default false). No secrets here: a hub token comes from the project
secrets or the environment (HF_TOKEN).
"""

from __future__ import annotations

import logging
import os
import sys

import mlrun
from mlrun.runtimes.nuclio.function import AsyncSpec

JOB_STEPS = ("select", "evaluate", "quantize", "finetune", "size_gpu", "plan", "report", "reevaluate")
GPU_STEPS = ("select", "evaluate", "quantize", "quantize-gptq", "finetune", "serving")
SERVING_TIMEOUT_S = 120  # a request's deadline in the engine (rightsizer.serving.contract.DEADLINE_S; a test keeps them equal)
ROUTER_CPU, ROUTER_MEMORY = "500m", "1Gi"
SCALE_TO_ZERO = [{"metricName": "nuclio_processor_handled_events_total",
                  "windowSize": "10m", "threshold": 0}]


def setup(project: mlrun.projects.MlrunProject) -> mlrun.projects.MlrunProject:
    # Local runs execute the handlers in this process: make functions/ and rightsizer/
    # importable from wherever the project was loaded (Jupyter starts in notebooks/).
    if project.context not in sys.path:
        sys.path.insert(0, project.context)
    _offline_defaults(project)
    gpus = int(project.get_param("gpus", 0))
    gpu_type = project.get_param("gpu_type", "nvidia.com/gpu")
    image = project.get_param("image", "mlrun/mlrun")
    # Only an explicit source: in a git checkout MLRun fills spec.source with the remote
    # (a local path in a clone), which is not a source a pod can pull.
    source = project.get_param("source", "")
    if source:
        project.set_source(source, pull_at_runtime=True)

    for name in JOB_STEPS:
        fn = project.set_function(f"functions/{name}.py", name=name, kind="job", image=image,
                                  handler=name, with_repo=bool(source))
        if name == "finetune":  # GPU limit, /dev/shm for NCCL, a multi-day run-time limit
            from functions.finetune import configure_function

            # its own GPU request: training may want more GPUs than serving-sized steps
            ft_gpus = int(project.get_param("finetune_gpus", gpus))
            if ft_gpus < 0:
                raise ValueError(f"finetune_gpus: {ft_gpus}; expected a GPU count >= 0")
            ft_nodes = int(project.get_param("finetune_nodes", 1))
            if ft_nodes < 1:
                raise ValueError(f"finetune_nodes: {ft_nodes}; expected a node count >= 1")
            _gpu_limits(fn, name, 0, gpu_type)  # validates gpus first
            if ft_nodes > 1:  # one MPI replica per node, each running torchrun for its GPUs
                from functions.finetune import mpijob_function

                mpijob_function(project, name=name, image=image, replicas=ft_nodes,
                                gpus_per_replica=ft_gpus, gpu_type=gpu_type, handler=name,
                                with_repo=bool(source))
            else:
                configure_function(fn, gpus=ft_gpus, gpu_type=gpu_type)
        else:
            _gpu_limits(fn, name, gpus, gpu_type)

    # GPTQ/AWQ pre-quantization: gptqmodel does not fit beside mlrun 1.12, so the image gets a
    # second virtualenv (requirements-gptq.txt); the handler runs it there. size_and_deploy
    # calls it only when gpus > 0.
    from functions.quantize_gptq import gptq_build_commands

    gptq = project.set_function("functions/quantize_gptq.py", name="quantize-gptq", kind="job",
                                image=image, handler="quantize_gptq", with_repo=bool(source))
    gptq.build_config(commands=gptq_build_commands())
    _gpu_limits(gptq, "quantize-gptq", gpus, gpu_type)

    serving = project.set_function("functions/serving.py", name="serving", kind="serving",
                                   image=image, with_repo=bool(source))
    from functions.serving import configure_serving

    # flow graph (async engine): V2 and OpenAI routes, one continuous-batching engine per task;
    # the task models are set at deploy time (functions.serving.set_task_models)
    configure_serving(serving)
    # one worker with an async trigger: concurrent requests reach the same engines, which
    # batch them (Nuclio's sync Python runtime hands one request per worker at a time)
    _with_http(serving, workers=1, async_spec=AsyncSpec(), worker_timeout=SERVING_TIMEOUT_S)
    serving.spec.min_replicas = 0  # scale to zero when idle (needs Nuclio's scale-to-zero);
    # set after with_http/NuclioSpec, which turn a 0 given to them into 1
    serving.spec.max_replicas = int(project.get_param("serving_max_replicas", 2))
    serving.set_config("spec.scaleToZero.scaleResources", SCALE_TO_ZERO)
    _gpu_limits(serving, "serving", gpus, gpu_type)

    # the entry point when the fleet plan has several placement groups: passes each request on
    # to its task's group function (functions.router); deploy_plan deploys it as `serving`
    router = project.set_function("functions/router.py", name="router", kind="serving",
                                  image=image, with_repo=bool(source))
    from functions.router import TIMEOUT_S, configure_router

    configure_router(router)
    # async trigger, one worker: it only waits on the groups, so one event loop carries them all
    _with_http(router, workers=1, async_spec=AsyncSpec(), worker_timeout=TIMEOUT_S)
    router.with_requests(cpu=ROUTER_CPU, mem=ROUTER_MEMORY)
    # always up (CPU only, cheap): a cold entry point would add its start to every group's
    router.spec.min_replicas = 1
    router.spec.max_replicas = int(project.get_param("serving_max_replicas", 2))

    # the model-monitoring application on the tracked group functions' endpoints (on a cluster;
    # offline, reevaluate with source "served" computes the same from serve.sh's record)
    from functions.monitoring_app import register

    register(project, image=image, models=project.get_param("monitoring_models", ""))

    # No MLRun API configured: run workflows with the local engine (the offline demo);
    # with an API server they run on KFP.
    from functions.mlrun_io import has_api

    engine = None if has_api() else "local"
    project.set_workflow("size_and_deploy", "pipelines/size_and_deploy.py", engine=engine)
    # A schedule needs the API server (KFP); locally: project.run("reevaluate", engine="local").
    project.set_workflow("reevaluate", "pipelines/reevaluate.py",
                         schedule=project.get_param("reevaluate_schedule", "0 6 * * 1"))
    return project


_DEFAULTED_ENV = "RIGHTSIZER_DEFAULTED_ARTIFACT_PATH"


def _offline_defaults(project: mlrun.projects.MlrunProject) -> None:
    """Without an MLRun API: an absolute artifact path unless the user chose one, and no
    "not connected to API server" warning on every call into MLRun's no-op run DB.

    Without an artifact path MLRun falls back to a relative ``./<run id>`` folder; ``log_model``
    then doubles that prefix when it uploads a model's extra files, so a bare
    ``project.run("size_and_deploy")`` failed in the select step. A path set on the project,
    ``project.run(artifact_path=...)`` and ``MLRUN_ARTIFACT_PATH`` still win; with an MLRun
    API the server's default (object storage) applies. Set in MLRun's process config, not
    on the project, so that project.yaml never holds a machine's absolute path.
    """
    from functions.mlrun_io import has_api

    if has_api():
        return
    # MLRun's own switch for the no-op DB's warnings (two per call, dozens per run); real
    # errors are logged as before.
    mlrun.mlconf.httpdb.nop_db.verbose = False
    current = mlrun.mlconf.artifact_path or ""
    if current and current == os.environ.get(_DEFAULTED_ENV):
        current = ""  # our default for a project loaded earlier in this process, not a choice
    if project.spec.artifact_path or "://" in current or os.path.isabs(current):
        return
    mlrun.mlconf.artifact_path = os.path.abspath(os.path.join(project.context, current or "artifacts"))
    # remembered process-wide (MLRun loads this file afresh for every project): a second
    # project loaded in the same kernel gets its own folder, not the first one's
    os.environ[_DEFAULTED_ENV] = mlrun.mlconf.artifact_path


class _SpuriousHttpTriggerWarning(logging.Filter):
    """MLRun 1.12's ``with_http`` warns "Adding HTTP trigger despite the default HTTP trigger
    creation being disabled" on every call: it tests ``self.disable_default_http_trigger``,
    which is the method of that name (always true), not the spec field. Dropped only while
    the spec field is not set, so the warning still shows where it would be true."""

    MESSAGE = "Adding HTTP trigger despite the default HTTP trigger creation being disabled"

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith(self.MESSAGE) and not self.fn.spec.disable_default_http_trigger)


def _with_http(fn, **kwargs) -> None:
    """``fn.with_http(**kwargs)`` without MLRun's spurious trigger warning."""
    quiet = _SpuriousHttpTriggerWarning(fn)
    logging.getLogger("mlrun").addFilter(quiet)
    try:
        fn.with_http(**kwargs)
    finally:
        logging.getLogger("mlrun").removeFilter(quiet)


def _gpu_limits(fn, name: str, gpus: int, gpu_type: str) -> None:
    if gpus < 0:
        raise ValueError(f"gpus: {gpus}; expected a GPU count >= 0")
    if gpus and name in GPU_STEPS:
        fn.with_limits(gpus=gpus, gpu_type=gpu_type)
