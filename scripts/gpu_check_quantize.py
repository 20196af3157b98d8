"""One prepared CUDA check of the quantization paths; prints every figure as JSON.

Run from the repository root on a GPU machine (a few minutes on an H100):

    python scripts/gpu_check_quantize.py [--out DIR] [--quick] [--pytest]

What it checks, each section independent (a failure is recorded with its error and the
run goes on; the exit code is 1 if any section failed):

1. environment: torch/CUDA, GPU name, compute capability, installed packages;
2. backends: ``available_backends("cuda")`` (chosen and skipped backends with reasons);
3. precisions: for a ~0.2B-parameter Llama built from a config (random weights, linear
   layers dominate) and each backend that can run here (bf16, torchao int8, bnb int8,
   torchao int4, bnb NF4, torchao fp8 when compute capability >= 8.9): stored weight
   bytes and ratio to bf16, CUDA memory allocated, decode tokens/s (greedy, batch 1 and 8),
   prefill ms, relative logits error and top-1 agreement with bf16, and that the
   registered config rebuilds the same model (``apply_quant_config``);
4. attention: ``choose_attention("cuda")`` and the measured effect of eager / sdpa /
   flash_attention_2 / flash_attention_3 (whichever load) on prefill at 2048 tokens and decode;
5. search: ``search_precision`` on CUDA with a logits-fidelity score;
6. optionally (``--pytest``) the CUDA-only tests in tests/test_quantize_gpu.py.

Writes gpu_check_quantize.json to ``--out`` (default: $OUT or the current folder).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

RESULT: dict = {"sections": {}, "errors": {}}


def section(name):
    def wrap(fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                RESULT["sections"][name] = fn(*a, **k)
            except Exception as e:  # recorded, reported, and makes the exit code 1
                RESULT["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"
            RESULT.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 1)
            print(f"[{name}] {'ERROR' if name in RESULT['errors'] else 'ok'} "
                  f"({RESULT['seconds'][name]} s)", flush=True)
        return run
    return wrap


DEVICE = "cuda"  # --device cpu dry-runs the script's logic on a machine without a GPU


def sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def build(quick: bool, dtype=torch.float32):
    from tests.tiny_models import tiny_llama

    if DEVICE == "cpu":  # dry run of the logic only
        return tiny_llama(hidden=128, intermediate=256, layers=3, vocab=512, dtype=dtype)
    if quick:
        return tiny_llama(hidden=512, intermediate=2048, layers=4, vocab=4096, heads=8, kv_heads=4, dtype=dtype,
                          device=DEVICE)
    return tiny_llama(hidden=1024, intermediate=4096, layers=12, vocab=8192, heads=16, kv_heads=8, dtype=dtype,
                      device=DEVICE)


def decode_tps(model, batch: int, vocab: int, new: int = 64) -> float:
    new = new if DEVICE.startswith("cuda") else 8
    ids = torch.randint(3, vocab, (batch, 32), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    gen = dict(do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **gen)
        times = []
        for _ in range(3):
            sync()
            t = time.perf_counter()
            model.generate(ids, max_new_tokens=new, min_new_tokens=new, **gen)
            sync()
            times.append(time.perf_counter() - t)
    return batch * new / statistics.median(times)


def prefill_ms(model, tokens: int, vocab: int, batch: int = 1) -> float:
    ids = torch.randint(3, vocab, (batch, tokens), device=DEVICE)
    with torch.no_grad():
        model(ids)
        times = []
        for _ in range(5):
            sync()
            t = time.perf_counter()
            model(ids)
            sync()
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


@section("environment")
def environment():
    pkgs = {}
    for p in ("transformers", "accelerate", "torchao", "bitsandbytes", "flash_attn", "flash_attn_interface",
              "gptqmodel", "awq", "kernels"):
        spec = importlib.util.find_spec(p)
        if spec is None:
            pkgs[p] = None
            continue
        try:
            from importlib.metadata import version

            pkgs[p] = version(p.replace("_interface", "").replace("_", "-"))
        except Exception:
            pkgs[p] = "installed"
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "capability": list(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None,
            "packages": pkgs}


@section("backends")
def backends():
    from rightsizer.runtime import available_backends

    return available_backends(DEVICE)


@section("precisions")
def precisions(quick: bool):
    from rightsizer.runtime import apply_quant_config, available_backends, quantize_model

    vocab = build(quick).config.vocab_size
    ids = torch.randint(3, vocab, (8, 64), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    rows, ref, base = [], None, None
    plan = [("bf16", "native")]
    for p in ("fp8", "int8", "int4"):
        for c in available_backends(DEVICE)[p]["candidates"]:
            if c["usable"]:
                plan.append((p, c["backend"]))
            else:
                rows.append({"precision": p, "backend": c["backend"], "skipped": c["reason"]})
    for precision, backend in plan:
        row = {"precision": precision, "backend": backend}
        try:
            cuda = DEVICE.startswith("cuda")
            if cuda:
                torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated() if cuda else 0
            model = build(quick)
            info = quantize_model(model, precision, backend=backend, device=DEVICE)
            row.update(weight_bytes=info.memory_bytes,
                       cuda_allocated_bytes=(torch.cuda.memory_allocated() - before) if cuda else None,
                       quantize_s=round(info.seconds, 2))
            with torch.no_grad():
                logits = model(ids).logits.float()
            if ref is None:
                ref, base = logits, info.memory_bytes
            row.update(ratio_vs_bf16=round(info.memory_bytes / base, 4),
                       rel_logits_error=round(((logits - ref).norm() / ref.norm()).item(), 4),
                       top1_agreement=round((logits.argmax(-1) == ref.argmax(-1)).float().mean().item(), 4),
                       decode_tps_b1=round(decode_tps(model, 1, vocab), 1),
                       decode_tps_b8=round(decode_tps(model, 8, vocab), 1),
                       prefill_ms_512=round(prefill_ms(model, 512, vocab), 2))
            rebuilt = apply_quant_config(build(quick), info.to_config(), device=DEVICE)
            with torch.no_grad():
                again = rebuilt(ids).logits.float()
            row["config_rebuild_max_abs_diff"] = float((again - logits).abs().max())
            del model, rebuilt
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        rows.append(row)
        print("  ", json.dumps(row), flush=True)
    return rows


@section("attention")
def attention(quick: bool):
    from rightsizer.runtime.attention import choose_attention

    model = build(quick, dtype=torch.bfloat16).to(DEVICE)
    vocab = model.config.vocab_size
    choice = choose_attention(DEVICE, model)
    out = {"choice": choice.to_dict(), "measured": []}
    for impl in ("eager", "sdpa", "flash_attention_2", "flash_attention_3"):
        row = {"implementation": impl}
        try:
            model.set_attn_implementation(impl)
            long = 2048 if DEVICE.startswith("cuda") else 64
            row.update(prefill_tokens=long, prefill_ms=round(prefill_ms(model, long, vocab), 2),
                       prefill_ms_512_b8=round(prefill_ms(model, 512 if long == 2048 else 32, vocab, batch=8), 2),
                       decode_tps_b8=round(decode_tps(model, 8, vocab), 1))
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        out["measured"].append(row)
        print("  ", json.dumps(row), flush=True)
    return out


@section("search")
def search(quick: bool):
    from rightsizer.quantize import search_precision

    vocab = build(quick).config.vocab_size
    ids = torch.randint(3, vocab, (8, 64), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with torch.no_grad():
        ref = build(quick).to(DEVICE, torch.bfloat16)(ids).logits.float()

    def score(model):
        with torch.no_grad():
            return 1 - ((model(ids).logits.float() - ref).norm() / ref.norm()).item()

    s = search_precision(lambda: build(quick), score, 1.0, 0.05, ["fp8", "int8", "int4"], device=DEVICE,
                         progress=False)
    return {"kept": s.kept.to_config(), "rows": s.to_rows()}


@section("pytest")
def run_pytest():
    proc = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_quantize_gpu.py"),
                           "-q", "-rs"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)))
    tail = proc.stdout[-3000:]
    if proc.returncode != 0:
        raise RuntimeError(tail)
    return {"returncode": proc.returncode, "tail": tail}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true", help="a smaller model (fewer seconds)")
    ap.add_argument("--pytest", action="store_true", help="also run tests/test_quantize_gpu.py")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global DEVICE
    DEVICE = a.device
    skip = set(filter(None, a.skip.split(",")))
    environment()
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        RESULT["errors"]["cuda"] = "torch sees no CUDA GPU; nothing else to check"
    else:
        backends()
        for name, fn in (("precisions", precisions), ("attention", attention), ("search", search)):
            if name not in skip:
                fn(a.quick)
        if a.pytest:
            run_pytest()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check_quantize.json").write_text(json.dumps(RESULT, indent=2, default=str))
    print(json.dumps(RESULT, indent=1, default=str))
    return 1 if RESULT["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
