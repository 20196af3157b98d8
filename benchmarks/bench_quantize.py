"""Quantization on CPU: weight memory, decode speed and quality change per precision.

Rerun:  .venv/bin/python benchmarks/bench_quantize.py [--json OUT.json] [--no-task]
Targets (issue 5): weight bytes at int8 <= 0.55 and int4 <= 0.30 of bf16 for a model whose
linear layers dominate. Prints figures only; nothing here asserts on time (shared machine).

Two parts:
1. a tiny Llama built from a config (hidden 256, MLP 1024, 4 blocks, vocab 256: linear
   layers hold 97% of the weights, like real LLMs): weight bytes, decode tokens/s (greedy,
   batch 1, 32 new tokens, median of 3), and quality as top-1 agreement with bf16 and
   relative logits error on fixed random inputs;
2. the demo candidate ``demo:tiny-m`` on the review_sentiment eval split: task accuracy per
   precision through the evaluation harness (the tokenizer-driven path the pipeline uses).
   Its embeddings are 10% of its weights, so its ratios sit above the targets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rightsizer.quantize import available_backends, quantize_model, weight_bytes  # noqa: E402
from rightsizer.quantize.tiny import tiny_llama  # noqa: E402

PRECISIONS = ("bf16", "int8", "int4")


def decode_tps(model, prompt_len: int = 16, new_tokens: int = 32, repeats: int = 3) -> float:
    ids = torch.randint(3, 256, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    gen = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, **dict(gen, max_new_tokens=2, min_new_tokens=2))  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model.generate(ids, **gen)
            times.append(time.perf_counter() - t)
    return new_tokens / statistics.median(times)


def synthetic_part() -> list[dict]:
    def make():
        return tiny_llama(hidden=256, intermediate=1024, layers=4, vocab=256)

    ids = torch.randint(3, 256, (8, 32), generator=torch.Generator().manual_seed(1))
    rows, ref, base_bytes = [], None, None
    for precision in PRECISIONS:
        model = make()
        info = quantize_model(model, precision)
        with torch.no_grad():
            logits = model(ids).logits.float()
        if ref is None:
            ref, base_bytes = logits, info.memory_bytes
        rows.append({
            "model": "tiny-llama h256 x4", "precision": precision, "backend": info.backend,
            "weight_bytes": info.memory_bytes, "ratio_vs_bf16": round(info.memory_bytes / base_bytes, 4),
            "decode_tokens_per_s": round(decode_tps(model), 1),
            "top1_agreement": round((logits.argmax(-1) == ref.argmax(-1)).float().mean().item(), 4),
            "rel_logits_error": round(((logits - ref).norm() / ref.norm()).item(), 4),
            "footprint_api_bytes": model.get_memory_footprint(),
        })
    return rows


def task_part() -> list[dict]:
    from rightsizer.evaluate import evaluate_quality, load_rows
    from rightsizer.models import load_model
    from rightsizer.taskspec import load_task

    spec = load_task(str(ROOT / "tasks" / "review_sentiment.yaml"))
    rows = load_rows(spec, spec.eval_split)
    out, base = [], None
    for precision in PRECISIONS:
        model, tok = load_model("demo:tiny-m")
        info = quantize_model(model, precision)
        score = evaluate_quality(model, tok, spec, rows).score
        base = base if base is not None else (score, info.memory_bytes)
        out.append({"model": "demo:tiny-m", "precision": precision, "backend": info.backend,
                    "weight_bytes": info.memory_bytes, "ratio_vs_bf16": round(info.memory_bytes / base[1], 4),
                    "task_accuracy": round(score, 4), "delta": round(score - base[0], 4), "n": len(rows)})
    return out


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(str(r[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--no-task", action="store_true", help="skip the demo-model task accuracy part")
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "backends": {p: v["backend"] for p, v in available_backends("cpu").items()},
              "synthetic": synthetic_part()}
    print(table(result["synthetic"]))
    if not a.no_task:
        result["task"] = task_part()
        print()
        print(table(result["task"]))
    s = {r["precision"]: r for r in result["synthetic"]}
    result["targets"] = {"int8_ratio<=0.55": s["int8"]["ratio_vs_bf16"] <= 0.55,
                         "int4_ratio<=0.30": s["int4"]["ratio_vs_bf16"] <= 0.30}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print("\ntargets:", result["targets"], f"({result['seconds']} s)")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
