"""Quantization on CPU: weight memory, decode speed and quality change per precision.

Rerun:  .venv/bin/python benchmarks/bench_quantize.py [--json OUT.json] [--no-task] [--gptq]
Targets (issue 5): weight bytes at int8 <= 0.55 and int4 <= 0.30 of bf16 for a model whose
linear layers dominate. Prints figures only; nothing here asserts on time (shared machine).

Two parts:
1. a tiny Llama built from a config (hidden 256, MLP 1024, 4 blocks, vocab 256: linear
   layers hold 97% of the weights, like real LLMs): weight bytes, decode tokens/s (greedy,
   batch 1, 32 new tokens, median of 3), and quality as top-1 agreement with bf16 and
   relative logits error on fixed random inputs;
2. the demo candidate ``demo:tiny-m`` on the review_sentiment eval split: task accuracy per
   precision through the evaluation harness (the tokenizer-driven path the pipeline uses).
   Its embeddings are 10% of its weights, so its ratios sit above the targets. Quality is
   also the relative error of the next-token logits against bf16 on 64 eval prompts;
   ``--gptq`` adds GPTQ int4 rows (gptqmodel in .venv-gptq, scripts/setup_gptq.sh, 128
   calibration texts from the train split) at group 64 (the in-place int4's) and 128.
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

from rightsizer.runtime import available_backends, quantize_model, weight_bytes  # noqa: E402
from tests.tiny_models import tiny_llama  # noqa: E402

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


def task_part(gptq: bool = False) -> list[dict]:
    from rightsizer.evaluate import evaluate_quality, load_rows
    from rightsizer.inference import build_prompt
    from rightsizer.inference import load_model
    from rightsizer.taskspec import load_task

    spec = load_task(str(ROOT / "tasks" / "review_sentiment.yaml"))
    rows = load_rows(spec, spec.eval_split)
    _, tok = load_model("demo:tiny-m")
    batch = tok([build_prompt(spec, r) for r in rows[:64]], return_tensors="pt", padding=True)

    def measure(model, precision, backend, weight_bytes_, ref):
        with torch.no_grad():
            logits = model(**batch).logits[:, -1].float()
        score = evaluate_quality(model, tok, spec, rows).score
        return {"model": "demo:tiny-m", "precision": precision, "backend": backend,
                "weight_bytes": weight_bytes_, "task_accuracy": round(score, 4),
                "rel_logits_error": round(((logits - ref).norm() / ref.norm()).item(), 4) if ref is not None else 0.0,
                "n": len(rows)}, logits

    out, ref = [], None
    for precision in PRECISIONS:
        model, _ = load_model("demo:tiny-m")
        info = quantize_model(model, precision)
        row, logits = measure(model, precision, info.backend, info.memory_bytes, ref)
        ref = logits if ref is None else ref
        out.append(row)
    if gptq:
        for group in (64, 128):
            model = gptq_model(spec, group)
            out.append(measure(model, "int4", f"gptq g{group}", weight_bytes(model), ref)[0])
    base = out[0]
    for r in out:
        r["ratio_vs_bf16"] = round(r["weight_bytes"] / base["weight_bytes"], 4)
        r["delta"] = round(r["task_accuracy"] - base["task_accuracy"], 4)
    return out


def gptq_model(spec, group_size: int):
    """demo:tiny-m quantized by gptqmodel in .venv-gptq, loaded here on the int4 kernel."""
    import os
    import subprocess
    import tempfile

    from rightsizer.evaluate import load_rows
    from rightsizer.models import resolve_model_ref
    from rightsizer.runtime.gptq_format import load_gptq_model
    from rightsizer.quantize_gptq import calibration_texts

    py = os.environ.get("RIGHTSIZER_GPTQ_PYTHON") or str(ROOT / ".venv-gptq" / "bin" / "python")
    if not Path(py).exists():
        raise SystemExit(f"--gptq needs the GPTQ environment at {py}: run scripts/setup_gptq.sh")
    work = Path(tempfile.mkdtemp(prefix="bench-gptq-"))
    texts = work / "texts.json"
    texts.write_text(json.dumps(calibration_texts(load_rows(spec, "train"), spec, samples=128)))
    subprocess.run([py, "-m", "rightsizer.quantize_gptq", "--model-path", resolve_model_ref("demo:tiny-m"),
                    "--texts", str(texts), "--output-dir", str(work / "q"), "--group-size", str(group_size),
                    "--device", "cpu"], check=True, cwd=work, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return load_gptq_model(work / "q")


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(str(r[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--no-task", action="store_true", help="skip the demo-model task accuracy part")
    ap.add_argument("--gptq", action="store_true", help="add GPTQ int4 rows to the task part (.venv-gptq)")
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "backends": {p: v["backend"] for p, v in available_backends("cpu").items()},
              "synthetic": synthetic_part()}
    print(table(result["synthetic"]))
    if not a.no_task:
        result["task"] = task_part(gptq=a.gptq)
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
