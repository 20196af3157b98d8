"""The LoRA rung: a short PEFT fine-tune of a candidate on the task's train split.

Runs in-process through Accelerate (CPU or one GPU). The loss covers only the answer tokens,
so the adapter learns the task rather than the prompt template.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rightsizer.atomic import atomic_dir
from rightsizer.errors import ConfigError

# Attention and MLP projections per architecture family (model_type in config.json).
TARGET_MODULES = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def default_target_modules(model) -> list[str]:
    """LoRA target modules for the model's architecture."""
    mt = getattr(model.config, "model_type", None)
    if mt not in TARGET_MODULES:
        raise ConfigError(f"ladder.lora.target_modules: no default for model_type {mt!r}; "
                          f"set them explicitly (known types: {sorted(TARGET_MODULES)})")
    return TARGET_MODULES[mt]


def _check_targets(model, targets: list[str]) -> None:
    leaf_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) or type(m).__name__.endswith("Linear")}
    unknown = sorted(set(targets) - leaf_names)
    if unknown:
        raise ConfigError(f"ladder.lora.target_modules: {unknown} not found in the model; "
                          f"valid names: {sorted(leaf_names)}")


@dataclass
class LoraResult:
    """What a LoRA run produced."""

    adapter_dir: str
    steps: int
    losses: list[float] = field(repr=False)
    learning_rates: list[float] = field(repr=False)
    seconds: float
    trainable_params: int
    target_modules: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def train_lora(model, tokenizer, examples: list[tuple[str, str]], output_dir: str | Path,
               rank: int = 8, alpha: int = 16, steps: int = 60, learning_rate: float = 3e-3,
               batch_size: int = 16, target_modules: list[str] | None = None, seed: int = 0,
               progress: bool = True):
    """Train a LoRA adapter on ``(prompt, answer)`` pairs; returns ``(peft_model, LoraResult)``.

    The adapter is written to ``output_dir`` only when training finished (written to a
    temporary folder first), so a failed run leaves no partial adapter behind.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model

    if rank <= 0:
        raise ConfigError(f"ladder.lora.rank: {rank}; expected a positive integer")
    if steps <= 0:
        raise ConfigError(f"ladder.lora.steps: {steps}; expected a positive integer")
    if not examples:
        raise ConfigError("train split is empty; the LoRA rung needs training examples")
    targets = target_modules or default_target_modules(model)
    _check_targets(model, targets)
    set_seed(seed)
    start = time.perf_counter()
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad],
                            lr=learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5) * (1 - s / steps))
    peft_model, opt, sched = accelerator.prepare(peft_model, opt, sched)
    peft_model.train()
    gen = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id
    losses, lrs = [], []
    for _ in tqdm(range(steps), desc="LoRA", disable=not progress, leave=False):
        idx = torch.randint(len(examples), (min(batch_size, len(examples)),), generator=gen)
        ids, labels = [], []
        for i in idx.tolist():
            prompt, answer = examples[i]
            p = tokenizer(prompt)["input_ids"]
            a = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
            ids.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(map(len, ids))
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in ids])
        label_t = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
        out = peft_model(input_ids=input_ids.to(accelerator.device),
                         attention_mask=mask.to(accelerator.device),
                         labels=label_t.to(accelerator.device))
        accelerator.backward(out.loss)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(out.loss.detach()))
        lrs.append(sched.get_last_lr()[0])
    peft_model.eval()
    peft_model = accelerator.unwrap_model(peft_model)
    out_dir = Path(output_dir)
    result = LoraResult(adapter_dir=str(out_dir), steps=steps, losses=losses,
                        learning_rates=lrs, seconds=time.perf_counter() - start,
                        trainable_params=sum(p.numel() for p in peft_model.parameters()
                                             if p.requires_grad),
                        target_modules=list(targets))
    with atomic_dir(out_dir) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "training.json").write_text(json.dumps(
            {k: v for k, v in result.to_dict().items() if k not in ("losses", "learning_rates")},
            indent=2, sort_keys=True))
    return peft_model, result
