"""The one training entry point: PEFT LoRA / QLoRA through the HF Trainer, with DeepSpeed.

Runs the same code three ways:

* in-process (one process, tests and tiny models): ``run_training(FinetuneConfig(...))``;
* under torchrun, one process per GPU (or per CPU slot with gloo)::

      torchrun --nproc_per_node 2 -m rightsizer.finetune.train --config job.json

* under an MPI launcher (MLRun MPIJob): the ranks are read from ``OMPI_COMM_WORLD_*``
  first (:func:`rightsizer.finetune.mpi.discover_mpi_env`).

The DeepSpeed config is derived from the training memory plan (:mod:`.plan`); stage 0 means
plain DDP without DeepSpeed. Output folder layout::

    <output_dir>/checkpoints/checkpoint-<step>/   resumable checkpoints (marked when complete)
    <output_dir>/adapter/                         the final adapter (written atomically)
    <output_dir>/merged/                          optional: base (bf16) + adapter merged
    <output_dir>/result.json                      losses, learning rates, tokens/s, plan
    <output_dir>/ranks/rank<r>.json               what each rank saw (world size, data)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rightsizer.schema.check import is_number
from rightsizer.atomic import atomic_dir
from rightsizer.errors import ConfigError
from rightsizer.families import context_length
from rightsizer.models import param_count
from rightsizer.taskspec import LoraSettings, check_lora

QUANTIZATIONS = ("none", "nf4", "auto")  # auto: the memory plan picks nf4 where a 16-bit base does not fit
_LORA = LoraSettings()  # the one home of the LoRA defaults (hub-model recipes)


@dataclass
class FinetuneConfig:
    """Everything one fine-tuning run needs; JSON-serialisable (it travels to every rank)."""

    model: str
    train_data: str | list
    output_dir: str
    prompt_template: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    rank: int = _LORA.rank
    alpha: int = _LORA.alpha
    dropout: float = _LORA.dropout
    target_modules: list[str] | None = None
    steps: int | None = None  # the budget: steps or epochs (neither: LoraSettings' steps)
    epochs: float | None = None  # passes over the train data, rounded up to whole steps
    learning_rate: float = _LORA.learning_rate
    lr_scheduler: str = "linear"
    warmup_ratio: float = _LORA.warmup_ratio
    warmup_steps: int = 0  # > 0 replaces warmup_ratio
    micro_batch_size: int | None = None  # None: from the memory plan
    grad_accum: int | None = None  # None: from the memory plan
    global_batch: int = _LORA.global_batch
    max_seq_len: int | None = _LORA.max_seq_len  # None: the default capped by the context
    answer_end: str | None = None  # the token ending each answer (a chat template's end of turn); None: EOS
    seed: int = _LORA.seed
    zero_stage: int | None = None  # None: from the memory plan (0 = DDP, no DeepSpeed)
    gpu_memory_gb: float | None = None  # None: the device's (host RAM / processes on CPU)
    deepspeed: dict | str | None = None  # an explicit DeepSpeed config instead of the derived one
    quantization: str = "none"  # "nf4": QLoRA on a bitsandbytes 4-bit base; "auto": nf4 if the 16-bit base does not fit
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False  # the task spec's: a model's own code runs only when it says so
    mixed_precision: str | None = None  # None: bf16 on a GPU that has it, fp16 on one without, fp32 on a CPU
    max_grad_norm: float = 1.0
    save_steps: int = 50
    save_total_limit: int | None = 2
    resume: bool = True
    merge: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown fine-tune parameter(s) {unknown}; known: {sorted(names)}")
        missing = [n for n in ("model", "train_data", "output_dir") if n not in d]
        if missing:
            raise ConfigError(f"missing fine-tune parameter(s) {missing}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- validation

def _dist_env() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def bnb_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def validate(cfg: FinetuneConfig, world_size: int = 1, check_model: bool = True) -> dict:
    """Check every input before any training; raises one ConfigError listing all problems.

    Returns what it resolved: ``model_path``, ``examples``, ``targets``, ``deepspeed`` (an
    explicit config, read) and ``fingerprint`` (of the base model).
    """
    from rightsizer.finetune.data import load_examples
    from rightsizer.models import resolve_model_ref

    problems: list[str] = []
    # the LoRA settings' rules are the task spec's (one home: taskspec.check_lora); neither
    # steps nor epochs is fine here: the default budget applies
    check_lora(cfg, "", problems, need_budget=False)
    if not isinstance(cfg.save_steps, int) or isinstance(cfg.save_steps, bool) or cfg.save_steps <= 0:
        problems.append(f"save_steps: {cfg.save_steps!r}; expected a positive integer")
    if cfg.steps is not None and cfg.epochs is not None:
        problems.append(f"steps {cfg.steps} and epochs {cfg.epochs}: give one budget, not both")
    for name in ("micro_batch_size", "grad_accum"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or v <= 0):
            problems.append(f"{name}: {v!r}; expected a positive integer or None (from the plan)")
    if cfg.zero_stage is not None and (not isinstance(cfg.zero_stage, int)
                                       or isinstance(cfg.zero_stage, bool)
                                       or cfg.zero_stage not in (0, 1, 2, 3)):
        problems.append(f"zero_stage: {cfg.zero_stage!r}; expected 0, 1, 2 or 3 "
                        "(0 = DDP without DeepSpeed) or None (from the memory plan)")
    if cfg.quantization not in QUANTIZATIONS:
        problems.append(f"quantization: {cfg.quantization!r}; expected one of {QUANTIZATIONS}")
    elif cfg.quantization == "nf4" and not bnb_available():
        problems.append("quantization 'nf4' (QLoRA) needs bitsandbytes, which is not installed "
                        "(pip install bitsandbytes), or set quantization='none'")
    if cfg.mixed_precision not in (None, "bf16", "fp16", "fp32"):
        problems.append(f"mixed_precision: {cfg.mixed_precision!r}; expected bf16, fp16, fp32 or None")
    if not isinstance(cfg.trust_remote_code, bool):
        problems.append(f"trust_remote_code: {cfg.trust_remote_code!r}; expected true or false")
    if cfg.gpu_memory_gb is not None and not (is_number(cfg.gpu_memory_gb) and cfg.gpu_memory_gb > 0):
        problems.append(f"gpu_memory_gb: {cfg.gpu_memory_gb!r}; expected a positive number")
    ds = cfg.deepspeed
    if isinstance(ds, str):
        try:
            ds = json.loads(Path(ds).read_text())
        except (OSError, ValueError) as e:
            problems.append(f"deepspeed: cannot read config {cfg.deepspeed!r} ({e})")
            ds = None
    if isinstance(ds, dict):
        from rightsizer.finetune.plan import check_deepspeed_config

        problems += [f"deepspeed: {p}" for p in check_deepspeed_config(ds)]
    examples = []
    try:
        examples = load_examples(cfg.train_data, cfg.prompt_template, cfg.text_field,
                                 cfg.label_field)
        if not examples:
            problems.append("train_data: the train split is empty; fine-tuning needs examples")
    except ConfigError as e:
        problems += e.problems
    model_path = None
    try:
        model_path = resolve_model_ref(cfg.model)
    except ConfigError as e:
        problems += e.problems
    targets = cfg.target_modules
    seq_len = cfg.max_seq_len or _LORA.seq_len(None)
    if check_model and model_path is not None:
        try:
            trust = cfg.trust_remote_code is True
            targets = check_target_modules(model_path, cfg.target_modules, trust)
            problems += check_context(model_path, cfg.max_seq_len, cfg.model, trust=trust)
            seq_len = LoraSettings(max_seq_len=cfg.max_seq_len).seq_len(
                context_length(auto_config(model_path, trust, cfg.model)))
        except ConfigError as e:
            problems += e.problems
        except OSError as e:
            problems.append(f"model {cfg.model!r}: cannot read its config ({e})")
    resolved = {"model_path": model_path, "examples": examples, "targets": targets,
                "deepspeed": ds if isinstance(ds, dict) else None, "fingerprint": None,
                "steps": total_steps(cfg, len(examples)), "max_seq_len": seq_len}
    if problems:
        raise ConfigError(problems, source="fine-tune")
    from rightsizer.models import model_fingerprint

    resolved["fingerprint"] = model_fingerprint(model_path)
    return resolved


def total_steps(cfg: FinetuneConfig, n_examples: int) -> int:
    """The run's optimizer steps: ``steps``, or ``epochs`` over the data in global batches."""
    if cfg.steps is not None:
        return cfg.steps
    if cfg.epochs is None:
        return _LORA.steps
    return max(1, math.ceil(cfg.epochs * n_examples / cfg.global_batch))


def auto_config(model_path: str, trust_remote_code: bool = False, model: str | None = None):
    """The model's config, running its own code only with ``trust_remote_code``; a model that
    needs it, without it, is a ConfigError naming the task spec's field."""
    from transformers import AutoConfig

    from rightsizer.models import remote_code_error

    try:
        return AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        err = remote_code_error(model or model_path, e)
        if err is e:
            raise
        raise err from None


def check_context(model_path: str, max_seq_len: int, model: str, field: str = "max_seq_len",
                  trust: bool = False) -> list[str]:
    """A problem when ``max_seq_len`` is longer than the model's context."""
    ctx = context_length(auto_config(model_path, trust, model))
    if ctx is not None and isinstance(max_seq_len, int) and max_seq_len > ctx:
        return [f"{field}: {max_seq_len} is longer than the context of {model} ({ctx} tokens); "
                f"set it to {ctx} or less"]
    return []


def resume_point(cfg: FinetuneConfig, fingerprint: str, world_size: int, zero_stage: int | None):
    """The checkpoint to resume from, or None; ConfigError when it cannot be resumed."""
    from rightsizer.finetune.checkpoint import check_resume

    if not cfg.resume:
        return None
    return check_resume(Path(cfg.output_dir) / "checkpoints", world_size=world_size,
                        zero_stage=zero_stage, fingerprint=fingerprint, model=cfg.model)


def check_target_modules(model_path: str, target_modules: list[str] | None,
                         trust_remote_code: bool = False) -> list[str] | str:
    """The target modules to use (the spec's, else the architecture's default: its family's
    list or ``"all-linear"``); ConfigError listing the valid names for unknown ones."""
    import torch
    from transformers import AutoModelForCausalLM

    from rightsizer.finetune.lora import check_targets, default_targets

    cfg = auto_config(model_path, trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    targets = list(target_modules) if target_modules else default_targets(getattr(cfg, "model_type", None), model)
    check_targets(model, targets)
    return targets


# --------------------------------------------------------------------------- planning

def device_memory_gb(world_size: int) -> float:
    """Memory per process: the GPU's, or on CPU the host RAM shared by the processes."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 1024**3
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram / 1024**3 / max(world_size, 1)


def resolve_precision(cfg: FinetuneConfig) -> str:
    """The mixed precision of this run: the config's, else this process's runtime target's
    (``rightsizer.runtime.target``): bf16 on a GPU that has it, fp16 on one that does not
    (T4, V100), fp32 on a CPU."""
    from rightsizer.runtime.target import resolve_target

    if cfg.mixed_precision:
        return cfg.mixed_precision
    target = resolve_target()
    return target.precision if target.is_cuda else "fp32"


def make_plan(cfg: FinetuneConfig, model_path: str, targets: list[str], world_size: int,
              explicit_ds: dict | None = None, seq_len: int | None = None):
    """``(plan, deepspeed_config, training-argument values)`` for this run, checked together."""
    import torch

    from rightsizer.finetune.plan import (check_training_args, deepspeed_config, plan_for_gpu, plan_training,
                                          shape_for_lora)

    precision = resolve_precision(cfg)
    shape = shape_for_lora(model_path, targets, cfg.rank, trust_remote_code=cfg.trust_remote_code)
    common = dict(gpu_memory_gb=cfg.gpu_memory_gb or device_memory_gb(world_size),
                  n_gpus=world_size, seq_len=seq_len or cfg.max_seq_len or _LORA.seq_len(None),
                  global_batch=cfg.global_batch, max_micro_batch=cfg.micro_batch_size or 16,
                  mixed_precision=precision, gradient_checkpointing=cfg.gradient_checkpointing,
                  zero_stage=cfg.zero_stage)
    if cfg.quantization == "auto":  # the memory decides: a 4-bit base only where 16-bit does not fit
        base = precision if precision in ("bf16", "fp16") else "fp32"
        plan = plan_for_gpu(shape, base_precision=base,
                            allow_qlora=bnb_available() and torch.cuda.is_available(), **common)
    else:
        plan = plan_training(shape, weight_precision="nf4" if cfg.quantization == "nf4" else precision,
                             **common)
    ds = explicit_ds if explicit_ds is not None else deepspeed_config(
        plan, learning_rate=cfg.learning_rate, gradient_clipping=cfg.max_grad_norm)
    args = {"per_device_train_batch_size": cfg.micro_batch_size or plan.micro_batch,
            "gradient_accumulation_steps": cfg.grad_accum or plan.grad_accum,
            "learning_rate": cfg.learning_rate, "max_grad_norm": cfg.max_grad_norm,
            "bf16": precision == "bf16", "fp16": precision == "fp16"}
    check_training_args(ds, world_size=world_size, **args)
    return plan, ds, args


def check_run(cfg: FinetuneConfig, world_size: int):
    """Inputs, plan vs training arguments and resume, all checked; one ConfigError for all.

    Returns ``(resolved, plan, deepspeed_config, training-argument values, resume_from)``.
    """
    resolved = validate(cfg, world_size=world_size)
    problems: list[str] = []
    plan = ds = args = resume_from = None
    stage = resolved["deepspeed"]["zero_optimization"].get("stage", 0) \
        if resolved["deepspeed"] else cfg.zero_stage
    try:
        plan, ds, args = make_plan(cfg, resolved["model_path"], resolved["targets"], world_size,
                                   resolved["deepspeed"], seq_len=resolved["max_seq_len"])
        stage = int(ds["zero_optimization"]["stage"])
    except ConfigError as e:
        problems += e.problems
    try:
        resume_from = resume_point(cfg, resolved["fingerprint"], world_size, stage)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems, source="fine-tune")
    return resolved, plan, ds, args, resume_from


# --------------------------------------------------------------------------- model

def load_base(model_path: str, quantization: str = "none", dtype=None, zero3: bool = False,
              local_rank: int = 0, trust_remote_code: bool = False):
    """``(model, tokenizer)``: the base in ``dtype``, or in NF4 (QLoRA) via bitsandbytes,
    computing in this process's runtime target's compute dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kwargs = {"use_safetensors": True, "dtype": dtype or torch.float32, "trust_remote_code": trust_remote_code}
    if quantization == "nf4":
        if not bnb_available():
            raise ConfigError("quantization 'nf4' (QLoRA) needs bitsandbytes, which is not "
                              "installed (pip install bitsandbytes)")
        from transformers import BitsAndBytesConfig

        from rightsizer.runtime.target import resolve_target

        # the 4-bit layers compute in the target's dtype: bf16 where the GPU has it, else fp16
        compute = resolve_target().torch_compute_dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            # ZeRO-3 can only partition the packed 4-bit weights when stored as a float type.
            bnb_4bit_quant_storage=compute if zero3 else torch.uint8)
        kwargs["dtype"] = compute
        if torch.cuda.is_available() and not zero3:
            kwargs["device_map"] = {"": local_rank}  # each rank quantizes onto its own GPU
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, tok


def adapter_state_dict(model, zero3: bool) -> dict:
    """The trainable (adapter) tensors by parameter name, on CPU and full size.

    Under ZeRO-3 each rank holds a slice: only the trainable parameters are gathered (a
    collective: call on every rank), never the whole model.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if zero3:
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            return {n: p.detach().to("cpu").clone() for n, p in named}
    return {n: p.detach().to("cpu").clone() for n, p in named}


def save_adapter(model, out_dir: Path, state_dict: dict, meta: dict) -> Path:
    """Write the adapter atomically (temporary folder, then rename); refuses empty tensors."""
    empty = sorted(k for k, v in state_dict.items() if v.numel() == 0)
    if not state_dict or empty:
        raise RuntimeError(f"refusing to save an empty adapter ({len(empty)} empty tensors, "
                           f"e.g. {empty[:3]}): under ZeRO-3 the parameters must be gathered")
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        (tmp / "training.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return out_dir


# --------------------------------------------------------------------------- callbacks

def _trainer_callbacks(cfg: FinetuneConfig, meta: dict, stats: dict, rank: int):
    from transformers import TrainerCallback

    out = Path(cfg.output_dir)

    class Rightsizer(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            import torch.distributed as dist

            stats["dist_world_size"] = dist.get_world_size() if dist.is_initialized() else 1
            stats["args_world_size"] = args.world_size
            stats["train_begin"] = time.perf_counter()
            stats["partition"] = _partition_stats(model)
            (out / "ranks").mkdir(parents=True, exist_ok=True)
            (out / "ranks" / f"rank{rank}.pid").write_text(str(os.getpid()))

        def on_step_end(self, args, state, control, **kw):
            delay = float(os.environ.get("RIGHTSIZER_FT_STEP_SLEEP", "0") or 0)
            if delay:  # test hook: slow steps down so a test can kill a rank mid-run
                time.sleep(delay)

        def on_save(self, args, state, control, **kw):
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()  # every rank finished writing its shards and RNG state
            if args.should_save:
                from rightsizer.finetune.checkpoint import write_marker

                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                write_marker(ckpt, {**meta, "step": state.global_step})

        def on_train_end(self, args, state, control, **kw):
            stats["train_seconds"] = time.perf_counter() - stats.get("train_begin", time.perf_counter())

    return [Rightsizer()]


def _partition_stats(model) -> dict:
    """How many parameters ZeRO-3 partitioned on this rank (elements held vs full size)."""
    total = held = n = n_part = 0
    for p in model.parameters():
        if hasattr(p, "ds_numel"):
            n += 1
            local = p.ds_tensor.numel() if getattr(p, "ds_tensor", None) is not None else p.ds_numel
            total += p.ds_numel
            held += local
            if local < p.ds_numel and p.numel() == 0:
                n_part += 1
        else:
            total += p.numel()
            held += p.numel()
    return {"zero_params": n, "partitioned_params": n_part, "elements_total": total,
            "elements_held": held}


# --------------------------------------------------------------------------- training

def run_training(cfg: FinetuneConfig) -> dict:
    """Train on this rank (one process of a torchrun/MPI job, or the only one).

    Returns the result dict (also written to ``<output_dir>/result.json`` by rank 0).
    """
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    rank, world, local_rank = _dist_env()
    out = Path(cfg.output_dir)
    err_file = out / "error.json"
    try:
        resolved, plan, ds, arg_values, resume_from = check_run(cfg, world)
    except ConfigError as e:
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            err_file.write_text(json.dumps({"message": str(e), "problems": e.problems}))
        raise
    if rank == 0:
        err_file.unlink(missing_ok=True)
    stage = int(ds["zero_optimization"]["stage"])
    steps = resolved["steps"]
    use_ds = stage > 0
    zero3 = stage == 3
    ckpt_dir = out / "checkpoints"
    if not cfg.resume and rank == 0:
        shutil.rmtree(ckpt_dir, ignore_errors=True)

    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_utils import set_seed

    from rightsizer.finetune.data import Collator, ListDataset, tokenize_examples

    precision = resolve_precision(cfg)
    cpu = not torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(ckpt_dir), max_steps=steps, learning_rate=cfg.learning_rate,
        # transformers reads a warmup_steps below 1 as a fraction of the run
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_steps or cfg.warmup_ratio,
        per_device_train_batch_size=arg_values["per_device_train_batch_size"],
        gradient_accumulation_steps=arg_values["gradient_accumulation_steps"],
        max_grad_norm=cfg.max_grad_norm, bf16=precision == "bf16", fp16=precision == "fp16",
        logging_steps=1, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, data_seed=cfg.seed,
        report_to="none", disable_tqdm=not (cfg.progress and rank == 0),
        remove_unused_columns=False, dataloader_num_workers=0,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5's name for it
        # The CPU trap: without use_cpu + gloo, the Trainer under torchrun with DeepSpeed
        # sees world size 1 and every rank trains alone on the whole data.
        use_cpu=cpu, ddp_backend="gloo" if cpu and world > 1 else None,
        deepspeed=ds if use_ds else None, local_rank=local_rank if world > 1 else -1,
    )
    _ = args.device  # initialises torch.distributed now, before ZeRO-3 builds the model
    if use_ds and world > 1:
        import deepspeed

        # With use_cpu the Trainer never initialises deepspeed.comm: ZeRO-3's model
        # construction would then see world size 1 and reject the batch layout.
        deepspeed.init_distributed(dist_backend="gloo" if cpu else "nccl")
    if world > 1 and args.world_size != world:
        raise RuntimeError(f"the Trainer sees world size {args.world_size} but the launcher "
                           f"started {world} processes: every rank would train alone")
    set_seed(cfg.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    quantization = "nf4" if plan.weight_precision == "nf4" else "none"  # what the plan sized
    model, tok = load_base(resolved["model_path"], quantization, dtype=dtype, zero3=zero3,
                           local_rank=local_rank, trust_remote_code=cfg.trust_remote_code)
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=resolved["targets"], task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    trainable = param_count(model, trainable_only=True)
    rows = tokenize_examples(tok, resolved["examples"], resolved["max_seq_len"], cfg.answer_end)
    collator = Collator(tok.pad_token_id)
    meta = {"model": cfg.model, "base_fingerprint": resolved["fingerprint"], "world_size": world,
            "zero_stage": stage, "seed": cfg.seed, "rank": cfg.rank, "alpha": cfg.alpha,
            "target_modules": resolved["targets"], "quantization": quantization}
    stats: dict = {}
    trainer = Trainer(model=model, args=args, train_dataset=ListDataset(rows),
                      data_collator=collator, callbacks=_trainer_callbacks(cfg, meta, stats, rank))
    # Every step is logged (logging_steps=1: the loss curve); the Trainer would print each
    # log dict, under its bar or, without one, on its own line. Keep the bar only.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    trainer.remove_callback(PrinterCallback)
    if cfg.progress and trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly())
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    sd = adapter_state_dict(trainer.model, zero3)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    lrs = [h["learning_rate"] for h in history if "loss" in h and "learning_rate" in h]
    rank_stats = {"rank": rank, "world_size": world, "dist_world_size": stats.get("dist_world_size"),
                  "args_world_size": stats.get("args_world_size"), "seen": collator.seen,
                  "tokens": collator.tokens, "train_seconds": stats.get("train_seconds"),
                  "partition": stats.get("partition")}
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    (out / "ranks" / f"rank{rank}.json").write_text(json.dumps(rank_stats))
    result = {}
    if rank == 0:
        training_meta = {**meta, "steps": steps, "epochs": cfg.epochs,
                         "learning_rate": cfg.learning_rate, "n_examples": len(rows),
                         "micro_batch_size": args.per_device_train_batch_size,
                         "grad_accum": args.gradient_accumulation_steps,
                         "global_batch": args.per_device_train_batch_size
                         * args.gradient_accumulation_steps * world,
                         "max_seq_len": resolved["max_seq_len"], "trainable_params": trainable,
                         # examples cut from the start of their prompt to fit max_seq_len
                         "truncated_rows": sum(r["truncated"] for r in rows),
                         "resumed_from": str(resume_from) if resume_from else None}
        adapter = save_adapter(trainer.model, out / "adapter", sd, training_meta)
        tok.save_pretrained(adapter)
        result = {**training_meta, "adapter_dir": str(adapter), "losses": losses,
                  "learning_rates": lrs, "plan": plan.to_dict(), "deepspeed": ds if use_ds else None,
                  "strategy": "ddp" if not use_ds else f"deepspeed-zero{stage}",
                  "train_seconds": stats.get("train_seconds"), "tokens_rank0": collator.tokens}
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank == 0:
        all_ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in range(world)]
        tokens = sum(r["tokens"] for r in all_ranks)
        secs = max(r["train_seconds"] or 0 for r in all_ranks) or float("nan")
        result["tokens"] = tokens
        result["tokens_per_second"] = tokens / secs if secs == secs and secs > 0 else None
        if cfg.merge:
            from rightsizer.finetune.merge import merge_adapter

            result["merged_dir"] = str(merge_adapter(resolved["model_path"], out / "adapter",
                                                     out / "merged", trust_remote_code=cfg.trust_remote_code))
        (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


# --------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rightsizer.finetune.train",
                                description="LoRA/QLoRA fine-tune (run under torchrun for N processes)")
    p.add_argument("--config", help="JSON file with FinetuneConfig fields")
    p.add_argument("--model")
    p.add_argument("--train-data")
    p.add_argument("--output-dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override one field, value parsed as JSON (e.g. --set zero_stage=3)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help="accepted for the deepspeed launcher; the rank comes from the environment")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    from rightsizer.finetune.mpi import discover_mpi_env

    discover_mpi_env()
    d = json.loads(Path(ns.config).read_text()) if ns.config else {}
    for k, v in (("model", ns.model), ("train_data", ns.train_data), ("output_dir", ns.output_dir)):
        if v is not None:
            d[k] = v
    for item in ns.set:
        k, _, v = item.partition("=")
        try:
            d[k] = json.loads(v)
        except ValueError:
            d[k] = v
    try:
        run_training(FinetuneConfig.from_dict(d))
    except ConfigError as e:
        print(f"rightsizer.finetune: {e}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
