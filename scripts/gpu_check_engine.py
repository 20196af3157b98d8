"""The serving engine (rightsizer.serving.TaskEngine, continuous batching) on this machine's
device, without HTTP, beside the sizing engine's estimate for the same model and workload.

For scripts/gpu_checks.sh (the GPU image has no MLRun, so bench_serving.py's HTTP server cannot
run there); it runs on a CPU too. A generation task on the demo's tiny-s (bench_serving.py's),
C concurrent streams at a time for C in --levels, each request ``--output`` tokens (ignore_eos):
per level, p50/p95 time to the first token, mean time per output token, output tokens/s; then
the sizing engine's TTFT/TPOT for the same model at batch C on this GPU, when the catalog has it.

    python3 scripts/gpu_check_engine.py [--levels 1,8,32,64] [--requests 64] [--output 16] [--out DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def one_stream(engine, prompt: str, n: int) -> tuple[float, float, int]:
    """(seconds to the first token, mean seconds per later token, tokens) of one streamed request."""
    t0 = time.perf_counter()
    first = last = None
    count = 0
    for tokens in engine.stream_tokens(prompt, n, ignore_eos=True):
        now = time.perf_counter()
        if tokens and first is None:
            first = now
        last, count = now, len(tokens)
    first = first or last
    return first - t0, (last - first) / max(1, count - 1), count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--output", type=int, default=16)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from bench_serving import TASK, inputs, make_artifacts

    from rightsizer.inference import build_prompt
    from rightsizer.layout import RunLayout
    from rightsizer.precisions import get_precision
    from rightsizer.runtime.target import catalog_device, resolve_target
    from rightsizer.serving.contract import EngineConfig
    from rightsizer.serving.engine import TaskEngine
    from rightsizer.sizing import Workload, estimate

    target = resolve_target()
    work = Path(tempfile.mkdtemp(prefix="engine-check-"))
    spec = make_artifacts(work)
    levels = [int(x) for x in args.levels.split(",")]
    engine = TaskEngine.from_bundle_dir(RunLayout(work).bundle_dir(TASK), device=target.device,
                                        config=EngineConfig.for_load(max(levels), 64, args.output))
    rows = []
    try:
        texts = inputs(spec, args.requests, "engine")
        prompts = [build_prompt(engine.spec, {engine.spec.input_field: t}, engine.shots) for t in texts]
        one_stream(engine, prompts[0], 4)  # warm-up
        for c in levels:
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(c) as pool:
                got = list(pool.map(lambda p: one_stream(engine, p, args.output), prompts))
            wall = time.perf_counter() - t0
            ttft, tpot = [g[0] for g in got], [g[1] for g in got]
            rows.append({"concurrency": c, "ttft_p50_ms": 1000 * _pct(ttft, 0.5), "ttft_p95_ms": 1000 * _pct(ttft, 0.95),
                         "tpot_mean_ms": 1000 * statistics.mean(tpot), "tpot_p95_ms": 1000 * _pct(tpot, 0.95),
                         "output_tokens_per_s": sum(g[2] for g in got) / wall})
        prompt_tokens = len(engine.tokenizer(prompts[0])["input_ids"])
        config = engine.model.config
    finally:
        engine.stop()
    device = catalog_device(target.device_name) if target.is_cuda else None
    for r in rows:
        if device is not None:
            wl = Workload(prompt_tokens=prompt_tokens, output_tokens=args.output, batch=r["concurrency"],
                          precision=get_precision("bf16" if target.dtype == "bfloat16" else "fp16").sizing_name)
            est = estimate(config, device.name, wl, mig=device.mig)
            r["estimate_ttft_ms"], r["estimate_tpot_ms"] = est.ttft_ms, est.tpot_ms
    print(f"runtime target: {target.measured_on} ({target.device}, {target.dtype}); task {TASK}, demo tiny-s, "
          f"{prompt_tokens} prompt tokens, {args.output} output tokens, {args.requests} requests per level")
    head = [k for k in rows[0]]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in head))
    if device is None:
        print("no sizing estimate: this device is not a catalog GPU")
    print(f"\nrerun: python3 scripts/gpu_check_engine.py --levels {args.levels} --requests {args.requests} "
          f"--output {args.output}")
    if args.out:
        Path(args.out, "engine.json").write_text(json.dumps({"target": target.to_dict(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
