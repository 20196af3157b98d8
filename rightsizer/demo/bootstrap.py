"""Build the offline demo's candidate models: tiny Llama-architecture causal LMs.

No model hub is reachable here, so the demo makes its own candidates: a byte-level BPE
tokenizer trained on the demo text, and three Llama models of increasing size, built from
configs and briefly pre-trained on text in the tasks' prompt format. Routing tickets is
trained into them (the smallest passes zero-shot); negated reviews are not (that task needs
the LoRA rung). The result is saved with ``save_pretrained`` (safetensors), so the rest of
the project loads it through the same ``from_pretrained`` path as a hub id.

Built once per machine and cached under ``$RIGHTSIZER_CACHE`` (default
``~/.cache/rightsizer``); the build goes to a temporary folder that is renamed into place,
so an interrupted build never leaves a half-written cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rightsizer.atomic import atomic_dir
from rightsizer.demo.data import generate_rows


@dataclass(frozen=True)
class TinyModel:
    """Shape and pre-training budget of one demo candidate."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    pretrain_steps: int


DEMO_MODELS = (
    TinyModel("tiny-s", 64, 192, 2, 4, 2, 250),
    TinyModel("tiny-m", 128, 384, 4, 4, 2, 250),
    TinyModel("tiny-l", 256, 768, 6, 8, 4, 250),
)
VOCAB_SIZE = 640
SEQ_LEN = 40
RECIPE_VERSION = "1"
PROMPTS = {"review_sentiment": ("Review: {text}\nSentiment:", "text"),
           "ticket_routing": ("Ticket: {text}\nQueue:", "text")}


def cache_root() -> Path:
    """Where built artifacts are cached (``$RIGHTSIZER_CACHE`` or ``~/.cache/rightsizer``)."""
    return Path(os.environ.get("RIGHTSIZER_CACHE", Path.home() / ".cache" / "rightsizer"))


def _recipe_key() -> str:
    recipe = {"v": RECIPE_VERSION, "models": [asdict(m) for m in DEMO_MODELS],
              "vocab": VOCAB_SIZE, "seq": SEQ_LEN, "prompts": PROMPTS,
              "torch": torch.__version__.split("+")[0]}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]


def demo_dir() -> Path:
    """The folder of the current demo build (it may not exist yet)."""
    return cache_root() / f"demo-{_recipe_key()}"


def _pretrain_corpus() -> list[str]:
    """Text in the tasks' prompt format. Negated reviews are left out on purpose."""
    texts = []
    for row in generate_rows("ticket_routing", 1200, seed=100):
        texts.append(PROMPTS["ticket_routing"][0].format(**row) + " " + row["label"])
    for row in generate_rows("review_sentiment", 2400, seed=100):
        if " not " in f" {row['text']} ":
            continue
        texts.append(PROMPTS["review_sentiment"][0].format(**row) + " " + row["label"])
    return texts


def _train_tokenizer(corpus: list[str], out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                 pad_token="<pad>")
    hf.save_pretrained(out)
    return hf


def _build_model(spec: TinyModel, tokenizer, corpus: list[str], out: Path, seed: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads, max_position_embeddings=256,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=spec.pretrain_steps,
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(spec.pretrain_steps), desc=f"pre-train {spec.name}", leave=False):
        idx = torch.randint(len(corpus), (32,), generator=gen).tolist()
        batch = tokenizer([corpus[i] + tokenizer.eos_token for i in idx], return_tensors="pt",
                          padding=True, truncation=True, max_length=SEQ_LEN)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"name": spec.name, "params": sum(p.numel() for p in model.parameters()),
            "final_loss": round(sum(losses[-20:]) / 20, 4)}


def bootstrap(force: bool = False, verbose: bool = True) -> Path:
    """Build (or reuse) the demo tokenizer and candidate models; returns their folder."""
    target = demo_dir()
    if target.is_dir() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".bootstrap.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; others reuse its result
        if target.is_dir() and not force:
            return target
        # Inside the lock: the swap replaces a forced rebuild's old folder only once the
        # new one is complete, and never races another builder.
        with atomic_dir(target) as tmp:
            start = time.perf_counter()
            corpus = _pretrain_corpus()
            tokenizer = _train_tokenizer(corpus, tmp / "tokenizer")
            built = [_build_model(m, tokenizer, corpus, tmp / "models" / m.name, seed=i)
                     for i, m in enumerate(tqdm(DEMO_MODELS, desc="demo models", disable=not verbose))]
            manifest = {"recipe": _recipe_key(), "models": built,
                        "seconds": round(time.perf_counter() - start, 1)}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if verbose:
        print(f"demo models built in {manifest['seconds']} s -> {target}")
    return target


def demo_model_path(name: str) -> Path:
    """Path of a demo candidate, building the demo first if needed."""
    names = [m.name for m in DEMO_MODELS]
    if name not in names:
        from rightsizer.errors import ConfigError

        raise ConfigError(f"demo:{name} is not a demo model; expected one of "
                          f"{['demo:' + n for n in names]}")
    return bootstrap(verbose=False) / "models" / name


if __name__ == "__main__":
    print(bootstrap(force=True))
