"""The sizing engine on this machine's CPU: estimate vs measured decode and prefill latency.

Rerun:  PYTHONPATH=. .venv/bin/python benchmarks/bench_cpu_estimate.py [--json OUT]

1. ``measure_local_cpu()`` measures this machine (copy bandwidth, fp32/bf16 matmul FLOP/s) and
   makes the ``cpu-local`` device entry.
2. Llama models of several widths and depths (the demo's tiny-m and tiny-l among them; random
   weights, which do not change the time) run plain transformers ``generate`` in fp32 on the CPU:
   a logits processor stamps each step: TTFT = time to the first step, TPOT = the median step
   interval, over 3 runs, at batch 1 and 4.
3. The estimate with the default CPU factors is printed beside each measurement; then
   ``fit_calibration`` fits the factors (efficiencies, step overhead, host cost per layer in
   prefill and decode steps) on five models' rows, and two models' rows (tiny-l, w384-l4: one
   between the fitted depths, one between the fitted widths) are held out; their TTFT and TPOT
   errors are the figures.

Prints figures only; nothing here asserts (the machine is shared). About 40 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rightsizer.sizing import Workload, estimate, fit_calibration, load_catalog  # noqa: E402
from rightsizer.sizing.cpu import LOCAL, measure_local_cpu  # noqa: E402

# (name, hidden, intermediate, layers, heads, kv heads): the demo's tiny-m and tiny-l, and wider,
# narrower, deeper and shallower ones
SHAPES = [("tiny-m", 128, 384, 4, 4, 2), ("tiny-l", 256, 768, 6, 8, 4), ("small-512", 512, 1536, 8, 8, 4),
          ("w192-l5", 192, 576, 5, 6, 2), ("deep-128", 128, 384, 12, 4, 2), ("w384-l4", 384, 1152, 4, 6, 2),
          ("w768-l6", 768, 2048, 6, 12, 4)]
HELD_OUT = ("tiny-l", "w384-l4")  # never in the fit
PROMPT, NEW = 48, 16


def _config(hidden, inter, layers, heads, kv) -> dict:
    return {"model_type": "llama", "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": 640,
            "tie_word_embeddings": True, "max_position_embeddings": 256}


def _measure(cfg: dict, batch: int, runs: int = 3) -> tuple[float, float]:
    """(TTFT, TPOT) in ms from plain ``generate``: a logits processor stamps every step, so TTFT
    is the time to the first step and TPOT the median step interval (robust on a shared CPU)."""
    import statistics

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

    class Clock(LogitsProcessor):
        def __init__(self):
            self.stamps = []

        def __call__(self, input_ids, scores):
            self.stamps.append(time.perf_counter())
            return scores

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k != "model_type"},
                                         pad_token_id=0, bos_token_id=1, eos_token_id=2)).eval()
    ids = torch.randint(3, cfg["vocab_size"], (batch, PROMPT))
    ttfts, steps = [], []
    for i in range(runs + 1):
        clock = Clock()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, min_new_tokens=NEW,
                           do_sample=False, pad_token_id=0, logits_processor=LogitsProcessorList([clock]))
        if i:  # the first run warms up
            ttfts.append(clock.stamps[0] - t0)
            steps.extend(b - a for a, b in zip(clock.stamps, clock.stamps[1:]))
    return statistics.median(ttfts) * 1e3, statistics.median(steps) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the rows and the fitted factors here")
    args = ap.parse_args(argv)
    entry = measure_local_cpu()
    print(f"cpu-local: {entry['vcpus']} threads, copy bandwidth {entry['memory_bandwidth'] / 1e9:.1f} GB/s, "
          f"fp32 {entry['fp32_flops'] / 1e9:.1f} GFLOP/s, bf16 {entry['bf16_flops'] / 1e9:.1f} GFLOP/s")
    cat = load_catalog(extra=[{**entry, "price_per_hour": 0.0, "price_source": "user"}])
    dev = cat.get(LOCAL)
    rows = []
    for name, *shape in SHAPES:
        cfg = _config(*shape)
        for batch in (1, 4):
            ttft, tpot = _measure(cfg, batch)
            est = estimate(cfg, dev, Workload(PROMPT, NEW + 1, batch, "fp32"), catalog=cat)
            rows.append({"model": name, "batch": batch, "measured_ttft_ms": ttft, "measured_tpot_ms": tpot,
                         "estimate_ttft_ms": est.ttft_ms, "estimate_tpot_ms": est.tpot_ms,
                         "prefill": {"flops": est.prefill.flops, "bytes": est.prefill.bytes},
                         "decode": {"flops": est.decode.flops, "bytes": est.decode.bytes}, "cfg": cfg})
    fit_rows = [r for r in rows if r["model"] not in HELD_OUT]
    meas = []
    for r in fit_rows:
        for phase, key in (("prefill", "measured_ttft_ms"), ("decode", "measured_tpot_ms")):
            meas.append({"gpu": LOCAL, "phase": phase, "flops": r[phase]["flops"], "bytes": r[phase]["bytes"],
                         "measured_ms": r[key], "peak_flops": dev.fp32_flops, "bandwidth": dev.memory_bandwidth,
                         "layers": r["cfg"]["num_hidden_layers"]})
    factors = fit_calibration(meas, catalog=cat)
    fitted = factors.per_gpu[LOCAL]
    print(f"calibrated on {len(fit_rows)} rows: compute_eff {fitted.compute_efficiency}, memory_eff "
          f"{fitted.memory_efficiency}, overhead {fitted.step_overhead_ms} ms, per layer prefill "
          f"{fitted.prefill_layer_ms} / decode {fitted.decode_layer_ms} ms")
    print(f"\n{'model':<11} {'batch':>5} {'role':<8} {'TTFT meas':>9} {'default':>8} {'calib':>8} {'err':>6}  "
          f"{'TPOT meas':>9} {'default':>8} {'calib':>8} {'err':>6}")
    errors: dict[str, list[float]] = {"ttft": [], "tpot": []}
    for r in rows:
        cal = estimate(r["cfg"], dev, Workload(PROMPT, NEW + 1, r["batch"], "fp32"), factors=factors, catalog=cat)
        r["calibrated_ttft_ms"], r["calibrated_tpot_ms"] = cal.ttft_ms, cal.tpot_ms
        role = "fit" if r in fit_rows else "held out"
        err = {k: getattr(cal, f"{k}_ms") / r[f"measured_{k}_ms"] - 1 for k in errors}
        if role == "held out":
            for k in errors:
                errors[k].append(abs(err[k]))
        print(f"{r['model']:<11} {r['batch']:>5} {role:<8} {r['measured_ttft_ms']:>9.2f} {r['estimate_ttft_ms']:>8.2f} "
              f"{cal.ttft_ms:>8.2f} {err['ttft']:>+6.0%}  {r['measured_tpot_ms']:>9.2f} {r['estimate_tpot_ms']:>8.2f} "
              f"{cal.tpot_ms:>8.2f} {err['tpot']:>+6.0%}")
    for k, label in (("ttft", "prefill (TTFT)"), ("tpot", "decode (TPOT)")):
        print(f"held-out {label} error after calibration: mean {sum(errors[k]) / len(errors[k]):.0%}, "
              f"max {max(errors[k]):.0%}")
    print(f"machine: load average {os.getloadavg()[0]:.1f} at the end (shared)\n"
          "rerun: PYTHONPATH=. .venv/bin/python benchmarks/bench_cpu_estimate.py")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": entry, "rows": [{k: v for k, v in r.items() if k != "cfg"}
                                                                       for r in rows],
                                               "factors": factors.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
