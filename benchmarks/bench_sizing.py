"""Speed of the sizing engine, and its accuracy against published measurements.

Rerun:  .venv/bin/python benchmarks/bench_sizing.py
Targets (issue 3): one estimate < 50 ms; a recommendation over the whole catalog < 1 s;
(issue 33) a fleet plan for 50 tasks < 30 s, with every group's p95-held rate simulated.
Prints figures only; nothing here asserts on time (the machine is shared).

On a CUDA machine, ``python3 benchmarks/bench_sizing.py --measure-gpu OUT_DIR`` builds
Llama-3.1-8B (random bf16 weights, transformers eager + SDPA) on the GPU, times prefill and
decode steps with CUDA events, compares them with the default-factor estimate, fits a
calibration (``fit_calibration``) and writes measurements.json and calibration.json to OUT_DIR.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rightsizer.sizing import SLO, Workload, estimate, load_catalog, model_spec, recommend  # noqa: E402

CONFIGS = ROOT / "tests" / "fixtures" / "configs"


def timed(fn, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples), max(samples)


def accuracy_rows():
    spec = importlib.util.spec_from_file_location("acc", ROOT / "tests" / "test_sizing_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for row in mod.MEASURED:
        yield row, mod.predicted_tpot(row)


def main() -> None:
    cfg = str(CONFIGS / "llama-3.1-8b.json")
    load_catalog()  # warm the packaged catalog
    model_spec(cfg)
    wl = Workload(1024, 256, 8)
    med, worst = timed(lambda: estimate(cfg, "H100-SXM", wl), 200)
    print(f"estimate (Llama-3.1-8B, H100-SXM, from config path):   median {med:6.2f} ms   max {worst:6.2f} ms"
          "   target < 50 ms")
    mix = str(CONFIGS / "mixtral-8x7b.json")
    med, worst = timed(lambda: estimate(mix, "A100-80GB", wl, count=2), 200)
    print(f"estimate (Mixtral-8x7B, 2x A100-80GB):                  median {med:6.2f} ms   max {worst:6.2f} ms")
    n_opts = len(recommend(cfg, wl, SLO(500, 30)).options)
    med, worst = timed(lambda: recommend(cfg, wl, SLO(500, 30)), 10)
    print(f"recommend (Llama-3.1-8B, whole catalog, {n_opts} options):  median {med:6.1f} ms   max {worst:6.1f} ms"
          "   target < 1000 ms")
    seventy = str(CONFIGS / "llama-2-70b.json")
    med, worst = timed(lambda: recommend(seventy, wl, SLO(2000, 60, throughput_tokens_per_s=1000)), 5)
    print(f"recommend (Llama-2-70B, throughput target):             median {med:6.1f} ms   max {worst:6.1f} ms")

    from rightsizer.sizing.estimate import tail

    small = str(ROOT / "tasks" / "examples" / "configs" / "qwen2.5-0.5b.json")
    est = estimate(small, "L4", Workload(512, 128, 8))
    for rate in (5.0, 0.6 * est.max_throughput_tokens_per_s / 128):
        med, worst = timed(lambda r=rate: tail(est, r), 10)
        print(f"open-loop p95 (Qwen2.5-0.5B, L4, {rate:7.1f} req/s):         median {med:6.1f} ms   max {worst:6.1f} ms")
    from rightsizer.sizing import Factors, Traffic

    vllm = Factors.defaults().for_engine("vllm-0.19")
    med, worst = timed(lambda: recommend(small, Workload(256, 64, 1), SLO(200, 30), factors=vllm,
                                         traffic=Traffic(200.0)), 3)
    print(f"recommend at 200 req/s (Qwen2.5-0.5B, whole catalog, p95 held): median {med:6.1f} ms   max {worst:6.1f} ms"
          "   target < 1000 ms")
    plan_s, groups = plan_50()
    print(f"fleet plan, 50 tasks (ffd, every group's held rate simulated): {plan_s:6.1f} s ({groups} groups)"
          "   target < 30 s")

    print("\nAccuracy against published measurements (TPOT at batch 1, default factors):\n")
    print("| case | model | GPU | precision | measured TPOT ms | estimated ms | error | role |")
    print("|---|---|---|---|---:|---:|---:|---|")
    errors = []
    for row, pred in accuracy_rows():
        rid, cfg_name, gpu, count, prec, _, _, measured, _, role = row
        err = pred / measured - 1
        errors.append(abs(err))
        print(f"| {rid} | {cfg_name} | {count}x {gpu} | {prec} | {measured:.2f} | {pred:.2f} | {err:+.0%} | {role} |")
    print(f"\nmean |error| {statistics.mean(errors):.1%}, max |error| {max(errors):.1%}")
    print("\nrerun: .venv/bin/python benchmarks/bench_sizing.py")


def plan_50() -> tuple[float, int]:
    """A fleet plan of 50 tasks over the hub example's four models, varied traffic and SLOs."""
    import random

    from rightsizer.plan import plan_fleet
    from rightsizer.sizing.params import load_config

    configs = [load_config(str(ROOT / "tasks" / "examples" / "configs" / f"{n}.json"))
               for n in ("smollm2-135m", "qwen2.5-0.5b", "gemma-2-2b", "llama-3.1-8b")]
    rng = random.Random(0)
    decisions = []
    for i in range(50):
        cfg = configs[i % 4]
        decisions.append({
            "task": f"t{i:02d}", "chosen": {"model": f"m{i % 4}", "params": 1, "precision": "int8", "config": cfg},
            "baseline": {"model": "big", "params": 9, "precision": "bf16", "config": configs[-1]},
            "workload": {"prompt_tokens": rng.choice([128, 256, 512]), "output_tokens": rng.choice([4, 16, 64]),
                         "batch": 8},
            "slo": {"ttft_ms": rng.choice([500, 1000, 2000]), "tpot_ms": 60,
                    "throughput_tokens_per_s": rng.choice([50, 200, 500])},
            "price_list": {"name": "aws-on-demand-us-east-1"}})
    t = time.perf_counter()
    fleet = plan_fleet(decisions, baseline=False)
    return time.perf_counter() - t, len(fleet.groups)


GPU_NAMES = {"H100": "H100-SXM", "H200": "H200", "A100-SXM4-80GB": "A100-80GB", "A100-SXM4-40GB": "A100-40GB",
             "L40S": "L40S", "L4": "L4", "A10G": "A10G", "T4": "T4", "H100 PCIe": "H100-PCIe"}


def measure_gpu(out_dir: str) -> None:
    import json
    import os

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rightsizer.sizing import Factors, fit_calibration

    device_name = torch.cuda.get_device_name(0)
    gpu = next((v for k, v in sorted(GPU_NAMES.items(), key=lambda kv: -len(kv[0])) if k in device_name), None)
    if gpu is None:
        raise SystemExit(f"no catalog entry for {device_name!r}")
    if "H100" in device_name and "PCIe" in device_name:
        gpu = "H100-PCIe"
    cfg_path = str(CONFIGS / "llama-3.1-8b.json")
    raw = {k: v for k, v in __import__("json").loads(open(cfg_path).read()).items() if not k.startswith("_")}
    cfg = AutoConfig.for_model(**raw)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    print(f"{device_name} -> catalog {gpu}; model built in {time.perf_counter() - t0:.1f} s", flush=True)

    def cuda_ms(fn, reps):
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times)

    rows = []
    with torch.inference_mode():
        for batch, prompt in ((1, 128), (1, 512), (1, 2048), (1, 4096), (4, 2048)):
            ids = torch.randint(0, cfg.vocab_size, (batch, prompt), device="cuda")
            fn = lambda ids=ids: model(input_ids=ids, use_cache=False, logits_to_keep=1)  # noqa: E731
            fn()
            torch.cuda.synchronize()
            ms = cuda_ms(fn, 5)
            est = estimate(cfg_path, gpu, Workload(prompt, 17, batch))
            rows.append({"gpu": gpu, "phase": "prefill", "batch": batch, "prompt_tokens": prompt,
                         "flops": est.prefill.flops, "bytes": est.prefill.bytes, "measured_ms": ms,
                         "estimated_ms": est.ttft_ms})
            print(f"prefill b={batch} p={prompt}: measured {ms:.2f} ms, estimated {est.ttft_ms:.2f} ms", flush=True)
        for batch, prompt in ((1, 512), (8, 512), (32, 512)):
            ids = torch.randint(0, cfg.vocab_size, (batch, prompt), device="cuda")
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            nxt = torch.randint(0, cfg.vocab_size, (batch, 1), device="cuda")
            for _ in range(3):
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            torch.cuda.synchronize()
            steps = 16
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(steps):
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            b.record()
            torch.cuda.synchronize()
            ms = a.elapsed_time(b) / steps
            est = estimate(cfg_path, gpu, Workload(prompt, 12, batch))
            rows.append({"gpu": gpu, "phase": "decode", "batch": batch, "prompt_tokens": prompt,
                         "flops": est.decode.flops, "bytes": est.decode.bytes, "measured_ms": ms,
                         "estimated_ms": est.tpot_ms})
            print(f"decode b={batch} ctx~{prompt + 11}: measured {ms:.2f} ms/step, estimated {est.tpot_ms:.2f} ms "
                  "(transformers eager: Python launch overhead per step)", flush=True)
    factors = fit_calibration(rows)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "measurements.json"), "w") as fh:
        json.dump({"device": device_name, "torch": torch.__version__, "rows": rows}, fh, indent=2)
    factors.save(os.path.join(out_dir, "calibration.json"))
    f = factors.per_gpu[gpu]
    print(f"fitted {gpu}: compute_efficiency {f.compute_efficiency}, memory_efficiency {f.memory_efficiency}, "
          f"step_overhead_ms {f.step_overhead_ms}, rms error {f.rms_relative_error:.1%}")
    again = Factors.load(os.path.join(out_dir, "calibration.json"))
    for r in rows:
        est = estimate(cfg_path, gpu, Workload(r["prompt_tokens"], 17 if r["phase"] == "prefill" else 12, r["batch"]),
                       factors=again)
        pred = est.ttft_ms if r["phase"] == "prefill" else est.tpot_ms
        print(f"  calibrated {r['phase']:<7} b={r['batch']:<2} p={r['prompt_tokens']:<5} measured {r['measured_ms']:8.2f}"
              f"  default {r['estimated_ms']:8.2f}  calibrated {pred:8.2f} [{est.mode}]")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure-gpu":
        measure_gpu(sys.argv[2])
    else:
        main()
