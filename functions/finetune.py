"""MLRun step ``finetune``: a LoRA/QLoRA adapter for one base model, on 1..N processes.

The handler launches ``torchrun`` itself when ``nproc > 1``: the same code runs in a GPU pod
(one process per GPU, NCCL) and on a laptop with ``run_function(local=True)`` (CPU
processes, gloo). Multi-node runs use :func:`mpijob_function` (MLRun's MPIJob v1) or a
Kubeflow Trainer ``TrainJob`` (``rightsizer.finetune.launch.trainjob_manifest``); see
docs/finetune.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlrun

from functions.mlrun_io import log_results, log_model_dir, log_plot, made_dir, project_file, reusable, run_layout, step_cache
from rightsizer.atomic import atomic_write_text
from rightsizer.errors import ConfigError
from rightsizer.evaluate import check_task_data
from rightsizer.finetune.launch import finetune as run_finetune
from rightsizer.finetune.launch import job_id
from rightsizer.finetune.mpi import mpi_node
from rightsizer.finetune.report import curves_figure
from rightsizer.finetune.task import file_digest, production_adapter, wants_production
from rightsizer.select import Selection
from rightsizer.taskspec import load_task

ADAPTER_FILE = "adapter_model.safetensors"


def finetune(context: mlrun.MLClientCtx, model: str, train_data, nproc: int = 0,
             key: str = "adapter", rank: int | None = None, alpha: int | None = None,
             steps: int | None = None, epochs: float | None = None,
             learning_rate: float | None = None, warmup_ratio: float | None = None,
             dropout: float | None = None, global_batch: int | None = None,
             micro_batch_size: int | None = None, grad_accum: int | None = None,
             max_seq_len: int | None = None, zero_stage: int | None = None,
             gpu_memory_gb: float | None = None, quantization: str = "none",
             target_modules: list | None = None, prompt_template: str | None = None,
             text_field: str = "text", label_field: str = "label", save_steps: int = 50,
             resume: bool = True, merge: bool = False, seed: int | None = None,
             gradient_checkpointing: bool = False, output_dir: str | None = None) -> None:
    """Fine-tune ``model`` on ``train_data`` (JSONL path or input) and register the adapter.

    LoRA values left out (None) take the one set of defaults
    (``rightsizer.taskspec.LoraSettings``, through the trainer's config). ``nproc`` 0 means
    one process per visible GPU (1 on CPU). Checkpoints go to a folder named after ``key``
    and a hash of the parameters and data, so rerunning the same job after a crash resumes
    (``output_dir`` overrides the folder). Logs: the adapter as model ``key`` (labels: base
    model; parameters: the training parameters), optionally the merged model
    ``<key>-merged``, ``training_curves`` (Plotly: loss and learning rate), results
    ``final_loss``, ``tokens_per_second``, ``strategy``, ``world_size``.
    """
    node = mpi_node()
    if node is not None and node.count > 1:  # each replica would train a job of its own
        raise ConfigError(f"the finetune handler runs on one node, and MPI started {node.count}: use "
                          "handler finetune_task (size_and_deploy's step) or mpi_worker on an MPIJob")
    if hasattr(train_data, "local"):  # an MLRun DataItem input
        train_data = train_data.local()
    else:
        train_data = project_file(str(train_data))
    nproc = nproc or _visible_gpus()
    given = dict(rank=rank, alpha=alpha, steps=steps, epochs=epochs, learning_rate=learning_rate,
                 warmup_ratio=warmup_ratio, dropout=dropout, global_batch=global_batch,
                 max_seq_len=max_seq_len, seed=seed,
                 target_modules=list(target_modules) if target_modules else None)
    params = dict(model=model, train_data=train_data,
                  **{k: v for k, v in given.items() if v is not None},
                  micro_batch_size=micro_batch_size, grad_accum=grad_accum,
                  zero_stage=zero_stage, gpu_memory_gb=gpu_memory_gb, quantization=quantization,
                  prompt_template=prompt_template, text_field=text_field, label_field=label_field,
                  save_steps=save_steps, resume=resume, merge=merge,
                  gradient_checkpointing=gradient_checkpointing)
    # A rerun of the same job (same parameters and data) lands in the same folder and
    # resumes from its last checkpoint; any other job gets a fresh folder.
    job_dir = run_layout(context).finetune_dir(f"{key}-{job_id(params, nproc)}")
    params["output_dir"] = output_dir or str(made_dir(job_dir))
    # Bad input raises here (before any worker starts) and nothing is registered.
    result = run_finetune(params, nproc=nproc)
    training = {k: v for k, v in params.items() if k not in ("train_data", "output_dir")}
    _log_outputs(context, result, key, {**training, "nproc": nproc})


def finetune_task(context: mlrun.MLClientCtx, task_spec: str, selection: str, nproc: int = 0,
                  gpu_memory_gb: float | None = None) -> None:
    """size_and_deploy's finetune step: the production adapter of a task whose chosen rung
    is LoRA, trained with the spec's ``finetune`` section on the chosen candidate.

    The pipeline runs it only then (a ``dsl.Condition`` on KFP). ``nproc`` 0: one process
    per visible GPU (the function's GPU limit), strategy from the memory plan. A rerun of
    the same job resumes from its last checkpoint; a finished one is not trained again.
    Logs: ``training_curves``, the merged model ``<task>-finetuned``, results ``score``
    (production adapter, eval split), ``screening_score``, ``final_loss``,
    ``tokens_per_second``, ``strategy``, ``world_size``, ``model_dir`` and ``production``
    (the summary the quantize and size_gpu steps read).
    """
    spec = load_task(project_file(task_spec))
    layout = run_layout(context)
    reuse = reusable(context, "finetune_task", {"task": spec, "selection": selection, "nproc": nproc,
                                                "gpu_memory_gb": gpu_memory_gb},
                     [layout.finetune_task_dir(spec.name)])
    if reuse.hit():
        return
    sel = Selection.load(selection)
    if not sel.passed or not wants_production(spec, sel.chosen.rung):
        raise ConfigError(f"finetune step for {spec.name}: the chosen rung is "
                          f"{sel.chosen.rung if sel.passed else None!r} (finetune.enabled "
                          f"{spec.finetune.enabled}); it trains only a chosen LoRA rung")
    train, evals = check_task_data(spec)
    overrides = {"gpu_memory_gb": gpu_memory_gb} if gpu_memory_gb else {}
    # The job folder outlives the run (named by the job id: settings and data): a rerun after
    # the step was killed resumes from its last checkpoint, a finished job is not trained again.
    cache = step_cache(context)
    jobs = cache.finetune_jobs_dir(spec.name) if cache is not None else layout.finetune_task_dir(spec.name)
    # Several nodes (an MPIJob, project param finetune_nodes): MPI starts this handler once
    # per node, each runs torchrun for its GPUs against node 0; the job folder must be on a
    # volume the nodes share (RIGHTSIZER_WORKDIR). Node 0 merges, scores and logs.
    node = mpi_node()
    prod = production_adapter(spec, sel.chosen.candidate, train, evals, made_dir(jobs),
                              nproc=nproc or _visible_gpus(), node=node, **overrides)
    if node is not None and node.rank != 0:
        return
    prod.update(selection_digest=file_digest(selection), screening_score=sel.chosen.score,
                screening=sel.chosen.training)
    path = layout.production_file(spec.name)
    atomic_write_text(path, json.dumps(prod, indent=2, sort_keys=True, default=str))
    log_plot(context, "training_curves", curves_figure(
        prod, title=f"{spec.name}: production adapter of {sel.chosen.candidate} "
                    f"({prod['strategy']}, {prod['world_size']} process(es))"))
    model_ref = log_model_dir(
        context, f"{spec.name}-finetuned", prod["merged_dir"], framework="transformers",
        metrics={spec.metric: prod["score"], "final_loss": prod["final_loss"] or 0.0,
                 "tokens_per_second": prod["tokens_per_second"] or 0.0},
        labels={"task": spec.name, "rung": "lora", "base_model": sel.chosen.candidate,
                "stage": "production", "strategy": prod["strategy"]})
    log_results(context, {"score": prod["score"], "screening_score": sel.chosen.score,
                         "final_loss": prod["final_loss"], "tokens_per_second": prod["tokens_per_second"],
                         "strategy": prod["strategy"], "world_size": prod["world_size"],
                         "model_dir": model_ref, "production": str(path)})
    context.logger.info(f"{spec.name}: production adapter {spec.metric} {prod['score']:.3f} "
                        f"(screening {sel.chosen.score:.3f}), {prod['strategy']} x "
                        f"{prod['world_size']}, final loss {prod['final_loss']}")
    reuse.done()


def _visible_gpus() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def _log_outputs(context: mlrun.MLClientCtx, result: dict, key: str, training: dict) -> None:
    """Curves, the adapter (a model artifact referencing its base), the merged model, results."""
    log_plot(context, "training_curves", curves_figure(result))
    training = {**training, "strategy": result["strategy"],
                "micro_batch_size": result["micro_batch_size"], "grad_accum": result["grad_accum"],
                "global_batch": result["global_batch"], "target_modules": result["target_modules"]}
    adapter_dir = Path(result["adapter_dir"])
    extra = {f.name: str(f) for f in sorted(adapter_dir.iterdir())
             if f.is_file() and f.name != ADAPTER_FILE}
    metrics = {"final_loss": result["losses"][-1] if result["losses"] else None,
               "tokens_per_second": result.get("tokens_per_second")}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    context.log_model(key, model_dir=str(adapter_dir), model_file=ADAPTER_FILE, extra_data=extra,
                      framework="peft",
                      algorithm="qlora" if result.get("quantization") == "nf4" else "lora",
                      labels={"base_model": result["model"], "kind": "adapter",
                              "strategy": result["strategy"]},
                      parameters=training, metrics=metrics)
    if result.get("merged_dir"):
        log_model_dir(context, f"{key}-merged", result["merged_dir"], framework="transformers",
                      labels={"base_model": result["model"], "adapter": key, "kind": "merged"})
    log_results(context, {**metrics, "strategy": result["strategy"],
                         "world_size": result["world_size"], "adapter_dir": str(adapter_dir)})


def configure_function(fn, gpus: int = 0, gpu_type: str = "nvidia.com/gpu", shm_gb: int = 16,
                       max_hours: int = 72):
    """GPU limit, shared memory for NCCL and a run-time limit suited to long training.

    NCCL exchanges buffers through /dev/shm, which Kubernetes caps at 64 MiB by default:
    mount a memory-backed emptyDir there. MLRun's default ``executing`` threshold would
    abort a multi-day fine-tune; raise it.
    """
    if gpus < 0:
        raise ValueError(f"gpus: {gpus}; expected >= 0")
    if gpus:
        fn.with_limits(gpus=gpus, gpu_type=gpu_type)
    fn.spec.update_vols_and_mounts(
        [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gb}Gi"}}],
        [{"name": "dshm", "mountPath": "/dev/shm"}])
    fn.set_state_thresholds({"executing": f"{max_hours}h"})
    return fn


def mpijob_function(project, name: str = "finetune-mpi", image: str = "mlrun/mlrun",
                    replicas: int = 2, gpus_per_replica: int = 1,
                    gpu_type: str = "nvidia.com/gpu", shm_gb: int = 16,
                    handler: str = "mpi_worker", with_repo: bool = False):
    """A multi-node MPIJob (MLRun 1.12's only multi-node runtime, MPIJob v1), one MPI
    process per replica (node).

    ``handler="mpi_worker"``: every replica runs one training rank, which reads its rank from
    MPI (``discover_mpi_env``) before DeepSpeed/Accelerate initialise.
    ``handler="finetune_task"`` (size_and_deploy's step with ``finetune_nodes`` > 1): every
    replica runs torchrun for its ``gpus_per_replica`` GPUs as one node (``mpi_node``).
    Needs the MPI operator on the cluster and mpi4py in the image.
    """
    if replicas < 1:
        raise ValueError(f"replicas: {replicas}; expected a node count >= 1")
    fn = project.set_function("functions/finetune.py", name=name, kind="mpijob", image=image,
                              handler=handler, with_repo=with_repo)
    fn.spec.replicas = replicas
    return configure_function(fn, gpus=gpus_per_replica, gpu_type=gpu_type, shm_gb=shm_gb)


def mpi_worker(context: mlrun.MLClientCtx, config: str, key: str = "adapter") -> None:
    """One MPI rank of a multi-node run: ``config`` is a FinetuneConfig JSON file; rank 0
    registers the adapter like :func:`finetune`."""
    from rightsizer.finetune.train import main

    config = project_file(config)
    rc = main(["--config", config])
    if rc:
        raise RuntimeError(f"fine-tune rank failed with exit code {rc}")
    if os.environ.get("RANK", "0") == "0":
        cfg = json.loads(Path(config).read_text())
        result = json.loads((Path(cfg["output_dir"]) / "result.json").read_text())
        _log_outputs(context, result, key, {k: v for k, v in cfg.items()
                                            if k not in ("train_data", "output_dir")})
