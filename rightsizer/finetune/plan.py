"""Training memory plan and the DeepSpeed config derived from it.

The plan answers, for one GPU type and a number of GPUs: which ZeRO stage, which CPU
offload, which micro-batch and how much gradient accumulation make a (Q)LoRA or full
fine-tune fit. The DeepSpeed config is *derived* from the plan, never hand-written per run;
:func:`check_training_args` then reports every mismatch between a DeepSpeed config and the
training arguments at once.

Per-GPU memory model (bytes; ``n`` = data-parallel GPUs, ``P`` = all parameters,
``T`` = trainable parameters, ``w`` = bytes per frozen weight):

* weights: ``P*w`` (``/n`` under ZeRO-3; a few layers' worth when parameters are offloaded)
* gradients: ``T*g`` (``/n`` from ZeRO-2), ``g`` = 2 with bf16/fp16, 4 with fp32
* optimizer: AdamW moments (+ fp32 master copy in mixed precision), ``/n`` from ZeRO-1,
  0 on the GPU when offloaded to CPU
* activations per sample: ``layers*seq*hidden*34`` bytes without gradient checkpointing
  (Korthikanti et al. 2022, with a fused attention kernel, 16-bit), ``layers*seq*hidden*2``
  plus one full layer with it, plus fp32 logits and their gradient (``seq*vocab*8``)
* a fixed reserve (CUDA context, allocator fragmentation): 10 % + 1 GiB

Parameters are counted and frozen weights sized by the sizing engine
(``rightsizer.sizing.params`` / ``sizing.memory.weights_bytes``: block matrices at the base's
precision, embeddings and norms at 16-bit, quantization overheads from
``rightsizer.precisions``), so serving and training agree on a model's bytes;
:meth:`ModelShape.from_config` plans from a ``config.json`` alone, without building a model.
:func:`plan_for_gpu` picks the strategy, a 4-bit base (QLoRA) where the 16-bit base does not fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from typing import Any

from rightsizer.errors import ConfigError, InsufficientMemory
from rightsizer.models import param_count
from rightsizer.sizing.memory import weights_bytes
from rightsizer.sizing.params import ParamCount, count_spec, model_spec

GiB = 1024**3

# Storage of the frozen base a plan may assume (bytes per weight: rightsizer.precisions).
BASE_PRECISIONS = ("fp32", "bf16", "fp16", "nf4")


@dataclass(frozen=True)
class ModelShape:
    """The few numbers of a decoder-only model that a training memory plan needs."""

    total_params: int
    trainable_params: int
    hidden_size: int
    num_layers: int
    vocab_size: int
    num_heads: int = 1
    params: ParamCount | None = None  # the sizing engine's count: sizes the frozen weights by precision

    @classmethod
    def from_config(cls, config: Any, rank: int = 16, full_finetune: bool = False) -> "ModelShape":
        """The shape of a ``config.json`` (path, dict or hub id) from the sizing engine's count;
        LoRA on every projection of every block (attention q/k/v/o and the MLP), as the
        families' default targets (and ``all-linear``) do."""
        spec = model_spec(config)
        params = count_spec(spec)
        h, q, kv, inter = spec.hidden, spec.q_dim, spec.kv_dim, spec.intermediate
        mlp = (2 if spec.gated_mlp else 1) * (h + inter) + (inter + h)
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + mlp * max(1, spec.experts)
        trainable = params.total if full_finetune else rank * per_layer * spec.layers
        return cls(total_params=params.total, trainable_params=trainable, hidden_size=h, num_layers=spec.layers,
                   vocab_size=spec.vocab, num_heads=spec.heads, params=params)

    def frozen_weight_bytes(self, precision: str) -> float:
        """Bytes of the frozen base at ``precision`` (trainable LoRA weights excluded)."""
        if self.params is not None:
            frozen = weights_bytes(self.params, precision)
        else:  # a shape without the sizing count: every parameter at the precision's bytes
            frozen = weights_bytes(self.total_params, precision)
        if self.trainable_params >= self.total_params:  # full fine-tune: nothing is frozen
            return 0.0
        return float(frozen)

    @classmethod
    def from_model(cls, model, trainable_params: int | None = None) -> "ModelShape":
        cfg = model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        total = param_count(model)
        trainable = trainable_params if trainable_params is not None else param_count(model, trainable_only=True)
        return cls(total_params=int(total), trainable_params=int(trainable),
                   hidden_size=int(cfg.hidden_size), num_layers=int(cfg.num_hidden_layers),
                   vocab_size=int(cfg.vocab_size),
                   num_heads=int(getattr(cfg, "num_attention_heads", 1) or 1))


def lora_trainable_params(model, target_modules: list[str] | str, rank: int) -> int:
    """LoRA parameters that ``target_modules`` (names, or ``"all-linear"``) at ``rank`` add
    to ``model`` (A and B matrices)."""
    from rightsizer.finetune.lora import targeted_layers

    total = 0
    for _, mod in targeted_layers(model, target_modules):
        if hasattr(mod, "in_features"):
            total += rank * (int(mod.in_features) + int(mod.out_features))
        elif type(mod).__name__ == "Conv1D":  # GPT-2: weight [in, out]
            total += rank * sum(mod.weight.shape)
    return total


def shape_for_lora(model_path: str, target_modules: list[str] | None, rank: int,
                   full_finetune: bool = False, trust_remote_code: bool = False) -> ModelShape:
    """Build the model on the meta device (no weights read) and count what LoRA trains."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rightsizer.finetune.lora import default_targets

    cfg = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    targets = target_modules or default_targets(cfg.model_type, model)
    base = ModelShape.from_model(model, trainable_params=0)
    trainable = base.total_params if full_finetune else lora_trainable_params(model, targets, rank)
    try:
        params = count_spec(model_spec(cfg.to_dict()))  # the sizing engine's count (same totals)
    except ConfigError:  # an architecture the sizing engine does not describe: counts only
        params = None
    return ModelShape(total_params=base.total_params, trainable_params=trainable, hidden_size=base.hidden_size,
                      num_layers=base.num_layers, vocab_size=base.vocab_size, num_heads=base.num_heads,
                      params=params)


@dataclass(frozen=True)
class TrainingPlan:
    """One feasible way to train: ZeRO stage, offload, batch layout and the per-GPU bytes."""

    zero_stage: int
    offload_optimizer: bool
    offload_params: bool
    micro_batch: int
    grad_accum: int
    n_gpus: int
    seq_len: int
    requested_global_batch: int
    gpu_memory_bytes: int
    weight_precision: str
    mixed_precision: str
    gradient_checkpointing: bool
    hidden_size: int
    breakdown: dict = field(default_factory=dict)

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.n_gpus

    @property
    def per_gpu_bytes(self) -> int:
        return int(sum(self.breakdown.values()))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["global_batch"] = self.global_batch
        d["per_gpu_bytes"] = self.per_gpu_bytes
        return d

    def describe(self) -> str:
        off = [k for k, v in (("optimizer", self.offload_optimizer),
                              ("parameters", self.offload_params)) if v]
        return (f"ZeRO-{self.zero_stage}" + (f" + CPU offload of {' and '.join(off)}" if off else "")
                + f", micro-batch {self.micro_batch} x accumulation {self.grad_accum} x "
                f"{self.n_gpus} GPU(s) = global batch {self.global_batch}, "
                f"{self.per_gpu_bytes / GiB:.2f} of {self.gpu_memory_bytes / GiB:.1f} GiB per GPU")


# Tried in this order: fastest first. Offloading the optimizer under ZeRO-2 is usually
# faster than ZeRO-3 on one node; ZeRO-3 with parameter offload is the last resort.
STRATEGIES = ((0, False, False), (2, False, False), (2, True, False), (3, False, False),
              (3, True, False), (3, True, True))


def _static_bytes(shape: ModelShape, stage: int, off_opt: bool, off_par: bool, n: int,
                  precision: str, mixed: bool) -> dict:
    grad_b = 2 if mixed else 4
    opt_b = 12 if mixed else 8  # fp32 master + 2 moments, or just the 2 moments
    # Trainable weights are held at the compute precision (2 bytes in mixed precision).
    weights = shape.frozen_weight_bytes(precision) + shape.trainable_params * (2 if mixed else 4)
    if stage == 3:
        if off_par:
            per_layer = weights / max(shape.num_layers, 1)
            weights = 2 * per_layer  # the prefetch working set
        else:
            weights = weights / n
    grads = shape.trainable_params * grad_b / (n if stage >= 2 else 1)
    optim = 0.0 if off_opt else shape.trainable_params * opt_b / (n if stage >= 1 else 1)
    return {"weights": weights, "gradients": grads, "optimizer": optim}


def _activation_bytes_per_sample(shape: ModelShape, seq: int, checkpointing: bool) -> float:
    layer = seq * shape.hidden_size * 34
    acts = shape.num_layers * seq * shape.hidden_size * 2 + layer if checkpointing \
        else shape.num_layers * layer
    return acts + seq * shape.vocab_size * 8


def plan_training(shape: ModelShape, *, gpu_memory_gb: float, n_gpus: int = 1, seq_len: int = 512,
                  global_batch: int = 16, max_micro_batch: int = 16, weight_precision: str = "bf16",
                  mixed_precision: str = "bf16", gradient_checkpointing: bool = True,
                  zero_stage: int | None = None, reserve_fraction: float = 0.10,
                  reserve_gb: float = 1.0) -> TrainingPlan:
    """The fastest strategy that fits ``gpu_memory_gb`` per GPU; raises when none does.

    ``zero_stage`` pins the stage (offload is still added when needed).
    """
    problems = []
    if gpu_memory_gb is None or gpu_memory_gb <= 0:
        problems.append(f"gpu_memory_gb: {gpu_memory_gb}; expected a positive number")
    if n_gpus < 1:
        problems.append(f"n_gpus: {n_gpus}; expected >= 1")
    if seq_len < 1:
        problems.append(f"seq_len: {seq_len}; expected >= 1")
    if global_batch < 1:
        problems.append(f"global_batch: {global_batch}; expected >= 1")
    if max_micro_batch < 1:
        problems.append(f"max_micro_batch: {max_micro_batch}; expected >= 1")
    if weight_precision not in BASE_PRECISIONS:
        problems.append(f"weight_precision: {weight_precision!r}; expected one of {list(BASE_PRECISIONS)}")
    if mixed_precision not in ("bf16", "fp16", "fp32"):
        problems.append(f"mixed_precision: {mixed_precision!r}; expected bf16, fp16 or fp32")
    if zero_stage is not None and zero_stage not in (0, 1, 2, 3):
        problems.append(f"zero_stage: {zero_stage}; expected 0, 1, 2 or 3")
    if problems:
        raise ConfigError(problems, source="training plan")
    mem = int(gpu_memory_gb * GiB)
    usable = mem * (1 - reserve_fraction) - reserve_gb * GiB
    mixed = mixed_precision != "fp32"
    per_sample = _activation_bytes_per_sample(shape, seq_len, gradient_checkpointing)
    strategies = [s for s in STRATEGIES if zero_stage is None or s[0] == zero_stage]
    if zero_stage == 1:
        strategies = [(1, False, False), (1, True, False)]
    smallest = None
    for stage, off_opt, off_par in strategies:
        static = _static_bytes(shape, stage, off_opt, off_par, n_gpus, weight_precision, mixed)
        free = usable - sum(static.values())
        need_one = sum(static.values()) + per_sample
        smallest = need_one if smallest is None else min(smallest, need_one)
        if free < per_sample:
            continue
        micro = 1
        while micro * 2 <= max_micro_batch and (micro * 2) * per_sample <= free:
            micro *= 2
        micro = min(micro, max(1, global_batch // n_gpus)) if global_batch >= n_gpus else 1
        accum = max(1, math.ceil(global_batch / (micro * n_gpus)))
        breakdown = {**{k: int(v) for k, v in static.items()},
                     "activations": int(micro * per_sample),
                     "reserve": int(mem - usable)}
        return TrainingPlan(zero_stage=stage, offload_optimizer=off_opt, offload_params=off_par,
                            micro_batch=micro, grad_accum=accum, n_gpus=n_gpus, seq_len=seq_len,
                            requested_global_batch=global_batch, gpu_memory_bytes=mem,
                            weight_precision=weight_precision, mixed_precision=mixed_precision,
                            gradient_checkpointing=gradient_checkpointing,
                            hidden_size=shape.hidden_size, breakdown=breakdown)
    pinned = f" with ZeRO stage {zero_stage}" if zero_stage is not None else ""
    raise InsufficientMemory(
        f"{shape.total_params / 1e6:.1f}M parameters ({shape.trainable_params / 1e6:.2f}M trainable) "
        f"do not fit {n_gpus} x {gpu_memory_gb:g} GiB{pinned} at sequence length {seq_len}: the "
        f"smallest option needs {smallest / GiB:.1f} GiB per GPU with {reserve_fraction:.0%} + "
        f"{reserve_gb:g} GiB reserve. Use more GPUs, a larger GPU, a 4-bit base (QLoRA), a "
        "shorter sequence length or gradient checkpointing.")


def plan_for_gpu(shape: ModelShape, *, gpu_memory_gb: float, n_gpus: int = 1, allow_qlora: bool = True,
                 base_precision: str = "bf16", **settings) -> TrainingPlan:
    """The strategy for training ``shape`` on ``n_gpus`` x ``gpu_memory_gb``, as the memory requires:
    one process, DDP, ZeRO-2, ZeRO-2 with CPU offload, ZeRO-3 (``plan_training``'s order) with the
    16-bit base; where that base only fits with its parameters offloaded to the CPU, or not at
    all, a 4-bit NF4 base (QLoRA) without parameter offload; parameter offload is the last resort.
    ``settings``: the other ``plan_training`` arguments."""
    def fits(precision: str, stages) -> TrainingPlan | None:
        for stage in stages:
            try:
                plan = plan_training(shape, gpu_memory_gb=gpu_memory_gb, n_gpus=n_gpus,
                                     weight_precision=precision, zero_stage=stage, **settings)
            except InsufficientMemory:
                continue
            if not plan.offload_params:
                return plan
        return None

    full = shape.trainable_params >= shape.total_params
    stages = (settings.pop("zero_stage", None),)  # pinned by the caller, or None: any stage
    plan = fits(base_precision, stages)
    if plan is None and allow_qlora and not full:
        plan = fits("nf4", stages)
    if plan is None:  # parameter offload, or InsufficientMemory naming what would fit
        plan = plan_training(shape, gpu_memory_gb=gpu_memory_gb, n_gpus=n_gpus, weight_precision=base_precision,
                             zero_stage=stages[0], **settings)
    return plan


def deepspeed_config(plan: TrainingPlan, *, learning_rate: float | None = None,
                     gradient_clipping: float = 1.0, weight_decay: float = 0.0) -> dict:
    """The DeepSpeed config for ``plan`` (explicit values, no ``"auto"``)."""
    h = plan.hidden_size
    zero: dict = {"stage": plan.zero_stage}
    if plan.zero_stage >= 1:
        zero.update({"overlap_comm": plan.zero_stage >= 2, "contiguous_gradients": True,
                     "reduce_bucket_size": int(h * h), "allgather_bucket_size": int(max(h * h, 5e7))})
    if plan.zero_stage == 3:
        zero.pop("allgather_bucket_size")
        zero.update({
            "stage3_prefetch_bucket_size": int(0.9 * h * h),
            # The DeepSpeed default (1e5 elements) keeps every tensor of a small model
            # replicated: nothing would be partitioned. 10 x hidden keeps only norms/biases.
            "stage3_param_persistence_threshold": int(min(1e5, 10 * h)),
            # The adapter is gathered by the trainer (trainable parameters only), never
            # the whole 16-bit model onto one rank.
            "stage3_gather_16bit_weights_on_model_save": False,
        })
    if plan.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if plan.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg = {
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "train_batch_size": plan.global_batch,
        "gradient_clipping": gradient_clipping,
        "bf16": {"enabled": plan.mixed_precision == "bf16"},
        "fp16": {"enabled": plan.mixed_precision == "fp16"},
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if plan.offload_optimizer and learning_rate is not None:
        # Offloaded optimizer steps run on the CPU: DeepSpeed's CPU Adam (JIT-built on
        # first use) is several times faster there than torch's AdamW.
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": learning_rate, "betas": [0.9, 0.999],
                                                         "eps": 1e-8, "weight_decay": weight_decay}}
    return cfg


def check_deepspeed_config(cfg: dict) -> list[str]:
    """Problems inside a DeepSpeed config on its own (all of them)."""
    problems = []
    zero = cfg.get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    if not isinstance(stage, int) or isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        problems.append(f"zero_optimization.stage: {stage!r}; expected 0, 1, 2 or 3")
        stage = None
    off_par = (zero.get("offload_param") or {}).get("device", "none") not in (None, "none")
    off_opt = (zero.get("offload_optimizer") or {}).get("device", "none") not in (None, "none")
    if off_par and stage is not None and stage != 3:
        problems.append(f"zero_optimization.offload_param needs stage 3 (stage is {stage})")
    if off_opt and stage == 0:
        problems.append("zero_optimization.offload_optimizer needs stage 1, 2 or 3 (stage is 0)")
    if (cfg.get("bf16") or {}).get("enabled") is True and (cfg.get("fp16") or {}).get("enabled") is True:
        problems.append("bf16.enabled and fp16.enabled are both true")
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size"):
        v = cfg.get(key)
        if v is not None and v != "auto" and (not isinstance(v, int) or v < 1):
            problems.append(f"{key}: {v!r}; expected a positive integer or 'auto'")
    return problems


def check_training_args(cfg: dict, *, per_device_train_batch_size: int,
                        gradient_accumulation_steps: int, world_size: int,
                        learning_rate: float | None = None, max_grad_norm: float | None = None,
                        bf16: bool = False, fp16: bool = False) -> None:
    """Raise one :class:`ConfigError` listing every mismatch between a DeepSpeed config and
    the training arguments (``"auto"`` values match anything), plus the config's own problems."""
    problems = check_deepspeed_config(cfg)

    def cmp(key, cfg_val, arg_name, arg_val):
        if cfg_val is None or cfg_val == "auto" or arg_val is None:
            return
        if isinstance(cfg_val, float) or isinstance(arg_val, float):
            same = math.isclose(float(cfg_val), float(arg_val), rel_tol=1e-9)
        else:
            same = cfg_val == arg_val
        if not same:
            problems.append(f"{key}={cfg_val!r} but training argument {arg_name}={arg_val!r}")

    micro = cfg.get("train_micro_batch_size_per_gpu")
    accum = cfg.get("gradient_accumulation_steps")
    cmp("train_micro_batch_size_per_gpu", micro, "per_device_train_batch_size",
        per_device_train_batch_size)
    cmp("gradient_accumulation_steps", accum, "gradient_accumulation_steps",
        gradient_accumulation_steps)
    cmp("train_batch_size", cfg.get("train_batch_size"),
        "per_device_train_batch_size x gradient_accumulation_steps x world_size",
        per_device_train_batch_size * gradient_accumulation_steps * world_size)
    cmp("gradient_clipping", cfg.get("gradient_clipping"), "max_grad_norm", max_grad_norm)
    cmp("bf16.enabled", (cfg.get("bf16") or {}).get("enabled"), "bf16", bf16)
    cmp("fp16.enabled", (cfg.get("fp16") or {}).get("enabled"), "fp16", fp16)
    opt_lr = ((cfg.get("optimizer") or {}).get("params") or {}).get("lr")
    cmp("optimizer.params.lr", opt_lr, "learning_rate", learning_rate)
    if problems:
        raise ConfigError(problems, source="DeepSpeed config vs training arguments")
