"""A task's LoRA runs, through the one training entry point (``launch.finetune``).

Two runs per task can happen, both built from the task spec the same way (prompt and
answer exactly as the ladder scores them, the spec's LoRA settings):

* the ladder's screening run (``ladder.lora``), in-process, on the model being screened;
* the production adapter (``finetune``), the pipeline's finetune step, 1..N processes by
  the memory plan, merged into its base for serving and scored on the eval split.

Each run lands in ``<workdir>/<name>-<job id>``: the same run again resumes (a finished one
is not trained again), any change of settings or data starts a fresh folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from rightsizer.finetune.launch import finetune, job_id
from rightsizer.finetune.train import FinetuneConfig
from rightsizer.inference import answer_text, build_prompt, load_tokenizer, with_format
from rightsizer.taskspec import LoraSettings, TaskSpec

_SETTINGS = ("rank", "alpha", "dropout", "learning_rate", "warmup_ratio", "global_batch",
             "max_seq_len", "steps", "epochs", "target_modules", "seed")


def task_examples(spec: TaskSpec, rows: list[dict]) -> list[dict]:
    """``{"prompt", "answer"}`` per row: the zero-shot prompt and the answer text the ladder
    scores, so the adapter learns exactly what it is evaluated on (with the retrieved
    passages when ``spec`` has its retrieval index attached: ``retrieval.for_rung``)."""
    return [{"prompt": build_prompt(spec, r), "answer": answer_text(spec, r)} for r in rows]


def bind_format(spec: TaskSpec, model: str) -> TaskSpec:
    """``spec`` with its prompt format bound to ``model``'s tokenizer (``inference.with_format``)."""
    if spec.rendering is not None:
        return spec
    from transformers import AutoConfig

    from rightsizer.models import resolve_model_ref

    path = resolve_model_ref(model)
    trust = spec.trust_remote_code
    return with_format(spec, load_tokenizer(path, trust), AutoConfig.from_pretrained(path, trust_remote_code=trust))


def settings_params(settings: LoraSettings) -> dict:
    """The trainer's parameters for a spec's LoRA section (same names in both)."""
    params = {name: getattr(settings, name) for name in _SETTINGS}
    if params["target_modules"] is not None:
        params["target_modules"] = list(params["target_modules"])
    return params


def run_folder(workdir: str | Path, name: str, params: dict, nproc: int) -> Path:
    """``<workdir>/<name>-<job id>``: the job id hashes the parameters and data."""
    safe = name.replace("/", "--").replace(":", "-")
    return Path(workdir) / f"{safe}-{job_id(params, nproc)}"


def train_for_task(spec: TaskSpec, model: str, settings: LoraSettings, rows: list[dict],
                   workdir: str | Path, name: str = "adapter", nproc: int = 1,
                   progress: bool = True, node=None, **overrides) -> dict:
    """Train a LoRA adapter of ``model`` on ``rows`` (train split) with a spec section's
    settings; returns the entry point's result (``adapter_dir``, losses, tokens/s, plan).

    ``node``: one node of a multi-node run (``rightsizer.finetune.mpi.MpiNode``; ``nproc``
    per node). ``overrides``: further trainer parameters (``gpu_memory_gb``, ``zero_stage``, ...).
    """
    spec = bind_format(spec, model)
    params = {"model": model, "train_data": task_examples(spec, rows),
              **settings_params(settings), **overrides}
    if spec.trust_remote_code:  # the trainer runs the model's own code only when the spec says so
        params["trust_remote_code"] = True
    if spec.rendering.end_of_answer:
        params["answer_end"] = spec.rendering.end_of_answer
    out = run_folder(workdir, name, params, nproc * (node.count if node is not None else 1))
    cfg = FinetuneConfig.from_dict({**params, "output_dir": str(out), "progress": progress})
    return finetune(cfg, nproc=nproc, node=node)


def training_figures(result: dict) -> dict:
    """What the decision record shows of a training run."""
    losses = result.get("losses") or []
    return {"steps": result.get("steps"), "epochs": result.get("epochs"),
            "examples": result.get("n_examples"), "rank": result.get("rank"),
            "learning_rate": result.get("learning_rate"),
            "global_batch": result.get("global_batch"), "max_seq_len": result.get("max_seq_len"),
            "final_loss": losses[-1] if losses else None,
            "tokens_per_second": result.get("tokens_per_second"),
            "train_seconds": result.get("train_seconds"), "strategy": result.get("strategy"),
            "truncated_rows": result.get("truncated_rows"),
            "world_size": result.get("world_size"), "adapter_dir": result.get("adapter_dir"),
            "resumed_from": result.get("resumed_from")}


def production_adapter(spec: TaskSpec, base_model: str, train_rows: list[dict],
                       eval_rows: list[dict], workdir: str | Path, nproc: int = 1,
                       progress: bool = True, node=None, **overrides) -> dict:
    """Train the production adapter (the spec's ``finetune`` section), merge it into its
    base and score the merged model on ``eval_rows``.

    ``node``: one node of a multi-node run (``nproc`` processes on each); node 0 merges and
    scores, the others return ``{"node_rank", "world_size"}`` once they trained.

    The merge keeps the dtype the base checkpoint was saved in (a bf16 hub model stays
    bf16, an fp32 one is not rounded): the quantize step that follows picks the serving
    precision. Returns the run's figures with ``merged_dir`` and ``score``.
    """
    import torch

    from rightsizer.evaluate import evaluate_quality
    from rightsizer.finetune.merge import merge_adapter
    from rightsizer.inference import load_model, load_tokenizer
    from rightsizer.models import load_config

    from rightsizer.retrieval import for_rung

    spec = for_rung(spec, "lora")  # a task with a knowledge source trains with its passages
    # the step's GPUs decide: a 4-bit base (QLoRA) only where the 16-bit base does not fit
    overrides.setdefault("quantization", "auto")
    result = train_for_task(spec, base_model, spec.finetune, train_rows, workdir,
                            name="production", nproc=nproc, progress=progress, node=node, **overrides)
    if node is not None and node.rank != 0:
        return result
    adapter = Path(result["adapter_dir"])
    saved = getattr(load_config(base_model, spec.trust_remote_code), "dtype", None)
    dtype = saved if isinstance(saved, torch.dtype) else getattr(torch, str(saved or ""), None)
    t0 = time.perf_counter()
    merged = merge_adapter(base_model, adapter, adapter.parent / "merged",
                           dtype=dtype if isinstance(dtype, torch.dtype) else None,
                           trust_remote_code=spec.trust_remote_code)
    device = "cuda" if torch.cuda.is_available() else None
    model, _ = load_model(str(merged), dtype="auto", device=device,
                          trust_remote_code=spec.trust_remote_code)
    quality = evaluate_quality(model, load_tokenizer(str(merged), spec.trust_remote_code), spec,
                               eval_rows)
    return {**training_figures(result), "losses": result.get("losses") or [],
            "learning_rates": result.get("learning_rates") or [],
            "base_model": base_model, "merged_dir": str(merged),
            "metric": spec.metric, "score": quality.score, "ci_low": quality.ci_low,
            "ci_high": quality.ci_high, "eval_examples": quality.n,
            "eval_seconds": time.perf_counter() - t0}


def wants_production(spec: TaskSpec, rung: str | None) -> bool:
    """Whether a chosen rung gets a production adapter: LoRA, with the spec's
    ``finetune`` section enabled (otherwise the screening adapter is served)."""
    return rung == "lora" and spec.finetune.enabled


def file_digest(path: str | Path) -> str:
    """A short content hash (ties a production summary to the selection it was trained for)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def read_production(path: str | Path, base_model: str, selection_file: str | Path) -> dict:
    """The production summary at ``path``, checked to belong to this selection; a clear
    error when it is missing or stale (another selection, another base model)."""
    import json

    from rightsizer.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"the chosen rung is LoRA and the spec's finetune section is enabled, "
                          f"but no production adapter was trained ({path} is missing): run the "
                          "finetune step first, or set finetune.enabled: false to serve the "
                          "screening adapter")
    prod = json.loads(path.read_text())
    digest = file_digest(selection_file)
    if prod.get("base_model") != base_model or prod.get("selection_digest") != digest:
        raise ConfigError(f"{path}: the production adapter was trained for another selection "
                          f"(base {prod.get('base_model')!r}, selection {prod.get('selection_digest')}"
                          f"; now {base_model!r}, {digest}): rerun the finetune step")
    return prod


def production_for(spec: TaskSpec, chosen_candidate: str, chosen_rung: str,
                   selection_file: str | Path, production_file: str | Path,
                   finetuned: str = "auto") -> dict | None:
    """The production summary the steps after finetune use, or None (not a LoRA choice,
    the section disabled, or ``finetuned="off"``)."""
    from rightsizer.errors import ConfigError

    if finetuned not in ("auto", "off"):
        raise ConfigError(f"finetuned: {finetuned!r}; expected 'auto' or 'off'")
    if finetuned == "off" or not wants_production(spec, chosen_rung):
        return None
    return read_production(production_file, chosen_candidate, selection_file)
