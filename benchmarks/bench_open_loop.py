"""Open-loop traffic against the project's own engine: predicted vs measured mean and p95 TTFT/TPOT.

Requests arrive at random (seeded Poisson arrivals, a bounded count per rate) at the real HTTP
server (scripts/serve.sh, the demo's tiny-s as a generation task, streamed, 16 output tokens,
``ignore_eos`` as load generators do); each request's TTFT (its first text chunk) and TPOT (the
mean gap between its chunks after the first) are measured by the client. The same arrivals go
through ``rightsizer.sizing.traffic.simulate`` with the engine's token budget and sequence cap
and the prompts' measured lengths (the server's own ``usage``).

The simulation needs this engine's step time and host costs on this CPU. They are calibrated on
the server itself at two rates (a trickle and about half of the burst throughput) and on the
burst (its requests/s, which pins the cost of a full batch): a step of
``d`` decoding sequences and ``c`` prompt tokens takes ``a + b d + p c`` ms on average, varying
from step to step by a coefficient of variation ``v`` (a CPU engine's steps do: Python, the
allocator, the OS), and each request costs the front end ``f`` ms (one at a time) plus ``l`` ms
of latency no queue holds; the six are fitted (scipy, least squares on log errors of mean and
p95 TTFT and TPOT). The other rates are held out: the table compares them.

    .venv/bin/python benchmarks/bench_open_loop.py [--requests 200] [--rounds 3] [--calibrate 0.1,0.5]
        [--validate 0.25,0.65,0.8] [--json FILE]
    .venv/bin/python benchmarks/bench_open_loop.py --from-json benchmarks/data/open_loop_measured.json
        (no server: refit and compare on figures measured before, as ``--json`` wrote them)

Rates are fractions of the burst throughput measured first (``--requests`` sent at once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_serving import TASK, inputs, sse_events, start_server  # noqa: E402

from rightsizer.serving.contract import EngineConfig  # noqa: E402
from rightsizer.sizing.traffic import Lengths, TailFigures, simulate  # noqa: E402

OUTPUT_TOKENS = 16
BURST = 48  # requests sent at once to measure the burst throughput (under the engine's max_queue of 64)
PARAMS = ("step_ms", "seq_ms", "prefill_token_ms", "front_ms", "latency_ms", "step_cv")


def make_artifacts(out: Path):
    """The demo's order_extraction task on tiny-s (pre-trained on order messages, so its answers
    are text from the first token on: a stream's first chunk is its first token), served as a
    generation task named TASK with a stop string it never writes, so with ``ignore_eos`` every
    request generates OUTPUT_TOKENS."""
    import dataclasses

    from rightsizer.bundle import write_bundle
    from rightsizer.demo.bootstrap import bootstrap
    from rightsizer.layout import RunLayout
    from rightsizer.taskspec import load_task

    orders = load_task(ROOT / "tasks" / "order_extraction.yaml")
    spec = dataclasses.replace(orders, name=TASK, type="generation", metric="rouge_l", max_new_tokens=OUTPUT_TOKENS,
                               stop=["<end-of-note>"], extraction=None)
    write_bundle(bootstrap(verbose=False) / "models" / "tiny-s", spec, RunLayout(out).bundle_dir(TASK),
                 base_model="demo:tiny-s", rung="zero_shot")
    return spec


async def one(session, base: str, text: str, at: float, t0: float) -> dict:
    """One streamed request sent at ``t0 + at``: its TTFT (the first token's chunk), TPOT (the mean
    gap between its tokens' chunks after the first) and token counts."""
    delay = t0 + at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    sent = time.perf_counter()
    stamps, usage = [], None
    async with session.post(f"{base}/v1/completions", json={
            "model": TASK, "prompt": text, "stream": True, "max_tokens": OUTPUT_TOKENS, "ignore_eos": True,
            "stream_options": {"include_usage": True}}) as r:
        if r.status == 503:  # the engine's queue is full (max_queue): counted, not timed
            return {"rejected": True}
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {await r.text()}")
        async for chunk in sse_events(r):
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("choices"):
                stamps.append(time.perf_counter())
    # TTFT: the first chunk; TPOT: from it to the last chunk (right after the last token) over the
    # tokens the server counts (a delta may carry several tokens, or none for a partial character)
    n = usage["completion_tokens"]
    ttft = (stamps[0] - sent) * 1e3 if stamps else math.nan
    tpot = (stamps[-1] - stamps[0]) * 1e3 / (n - 1) if len(stamps) > 1 and n > 1 else math.nan
    return {"ttft": ttft, "tpot": tpot, "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"], "chunks": len(stamps)}


def arrivals(rate: float, n: int, seed: int) -> np.ndarray:
    """The arrival times ``simulate`` draws for (rate, n, seed): the same first draws of its generator."""
    if math.isinf(rate):
        return np.zeros(n)
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, size=n))


async def run(base: str, texts: list[str], rate: float, seed: int) -> list[dict]:
    import aiohttp

    at = arrivals(rate, len(texts), seed)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as session:
        t0 = time.perf_counter() + 0.2
        return await asyncio.gather(*(one(session, base, t, a, t0) for t, a in zip(texts, at)))


def figures(results: list[dict], warmup: float = 0.1) -> dict:
    rejected = sum(1 for r in results if r.get("rejected"))
    kept = [r for r in results[int(len(results) * warmup):] if not r.get("rejected")]
    ttft = [r["ttft"] for r in kept if r["chunks"] > 1]  # a lone last chunk: no first token seen
    tpot = [r["tpot"] for r in kept if not math.isnan(r["tpot"])]
    return {"ttft_mean_ms": float(np.mean(ttft)), "ttft_p95_ms": float(np.percentile(ttft, 95)),
            "tpot_mean_ms": float(np.mean(tpot)), "tpot_p95_ms": float(np.percentile(tpot, 95)),
            "requests": len(kept), "rejected": rejected}


def predict(theta: dict, lengths: Lengths, rate: float, n: int, seed: int, budget: int, max_seqs: int) -> TailFigures:
    def step(d: int, ctx: float, c: float, prompt: int) -> float:
        return theta["step_ms"] + theta["seq_ms"] * d + theta["prefill_token_ms"] * c

    return simulate(step, lengths, rate, token_budget=budget, max_seqs=max_seqs, requests=n, seed=seed,
                    warmup=0.1, front_end_ms=theta["front_ms"], server_latency_ms=theta["latency_ms"],
                    step_cv=theta.get("step_cv", 0.0))


KEYS = ("ttft_mean_ms", "ttft_p95_ms", "tpot_mean_ms", "tpot_p95_ms")


def fit(measured: list[tuple[float, dict]], lengths, n, seed, budget, max_seqs, start: dict,
        burst: tuple[int, float]) -> dict:
    """The six that fit the calibration rates' mean and p95 TTFT and TPOT and the burst's
    requests/s (``burst``: requests sent at once, requests/s measured), least squares on logs;
    Nelder-Mead from ``start`` and from starts around it (the loss has local minima: a step cost
    traded for a front-end cost), the lowest kept."""
    from scipy.optimize import minimize

    def loss(x) -> float:
        theta = dict(zip(PARAMS, np.abs(x)))
        total = 0.0
        for rate, m in measured:
            p = predict(theta, lengths, rate, n, seed, budget, max_seqs).to_dict()
            total += sum(math.log(max(p[k], 1e-3) / m[k]) ** 2 for k in KEYS)
        b = predict(theta, lengths, math.inf, burst[0], seed, budget, max_seqs)
        total += math.log(max(b.output_tokens_per_s / OUTPUT_TOKENS, 1e-3) / burst[1]) ** 2
        return total

    starts = [start, {**start, "seq_ms": start["seq_ms"] * 4, "front_ms": start["front_ms"] * 0.15},
              {**start, "step_cv": start["step_cv"] * 2}, {**start, "step_ms": start["step_ms"] * 1.2,
                                                             "seq_ms": start["seq_ms"] * 2}]
    best = min((minimize(loss, [s[k] for k in PARAMS], method="Nelder-Mead",
                         options={"maxfev": 1500, "xatol": 1e-4, "fatol": 1e-5}) for s in starts),
               key=lambda r: r.fun)
    return dict(zip(PARAMS, (round(float(abs(v)), 4) for v in best.x)))


def measure(args, cal: list[float], val: list[float], budget: int, max_seqs: int
            ) -> tuple[dict[float, dict], float, Lengths, int]:
    """Every rate measured against a real server, ``args.rounds`` interleaved rounds (medians):
    (figures per share of the burst throughput, the burst's requests/s, the prompts' lengths,
    the burst's request count)."""
    work = Path(tempfile.mkdtemp(prefix="bench-open-loop-"))
    spec = make_artifacts(work)
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    if pin:  # the server (a child) inherits the other CPUs and one torch thread per CPU
        os.sched_setaffinity(0, cpus[1:])
        os.environ["OMP_NUM_THREADS"] = str(len(cpus) - 1)
    proc, base = start_server(work)
    if pin:
        os.sched_setaffinity(0, cpus[:1])
    measured: dict[float, dict] = {}
    try:
        asyncio.run(run(base, inputs(spec, 24, "warm"), math.inf, args.seed))  # warm-up, not measured
        # at most the engine's queue (max_queue, 64) at once: more would be refused with 503
        bursts, capacities = [], []
        for k in range(args.rounds):
            t = time.perf_counter()
            bursts.append(asyncio.run(run(base, inputs(spec, min(args.requests, BURST), f"burst{k}"), math.inf,
                                          args.seed)))
            capacities.append(len(bursts[-1]) / (time.perf_counter() - t - 0.2))
        capacity = float(np.median(capacities))
        burst = bursts[0]
        lengths = Lengths.from_samples([r["prompt_tokens"] for r in burst], [OUTPUT_TOKENS] * len(burst),
                                       source="measured: the server's usage")
        # rounds over every rate, the same order each time: a figure is the median over the rounds
        # (this shared machine's speed drifts by up to 2x over minutes; one pass would measure the drift)
        per_round: dict[float, list[dict]] = {}
        for k in range(args.rounds):
            for frac in sorted(set(cal + val)):
                rate = frac * capacity
                results = asyncio.run(run(base, inputs(spec, args.requests, f"r{frac}-{k}"), rate, args.seed))
                per_round.setdefault(frac, []).append(figures(results))
        for frac, runs in sorted(per_round.items()):
            measured[frac] = {"rate": frac * capacity, "rejected": sum(r["rejected"] for r in runs),
                              "requests": sum(r["requests"] for r in runs),
                              **{k: float(np.median([r[k] for r in runs])) for k in KEYS},
                              "spread": {k: [round(r[k], 2) for r in runs] for k in KEYS}}
            print(f"measured at {measured[frac]['rate']:6.2f} req/s ({frac:.2f} of the bursts' median {capacity:.1f}; "
                  f"bursts {[round(c) for c in capacities]}), median of {args.rounds}: "
                  + ", ".join(f"{k} {measured[frac][k]:.1f} {measured[frac]['spread'][k]}" for k in KEYS)
                  + f", {measured[frac]['rejected']} refused (queue full)", flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    return measured, capacity, lengths, len(burst)


def from_json(path: str) -> tuple[dict[float, dict], float, Lengths, int, list[float], list[float]]:
    """Figures measured before (``--json``): per share, the rate and the measured figures; the
    burst's requests/s and request count; the lengths; which shares calibrated."""
    data = json.loads(Path(path).read_text())
    measured: dict[float, dict] = {}
    for r in data["rows"]:
        m = measured.setdefault(float(r["share"]), {"rate": r["rate"], "role": r["role"]})
        m[r["metric"]] = r["measured"]
    cal = sorted(f for f, m in measured.items() if m["role"] == "calibration")
    val = sorted(f for f, m in measured.items() if m["role"] != "calibration")
    return (measured, float(data["capacity_req_per_s"]), Lengths.from_dict(data["lengths"], where=path),
            int(data.get("burst_requests", BURST)), cal, val)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per rate (and in the burst)")
    ap.add_argument("--calibrate", default="0.1,0.5", help="fractions of the burst throughput the fit uses")
    ap.add_argument("--validate", default="0.25,0.65,0.8", help="fractions held out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="passes over every rate (medians reported)")
    ap.add_argument("--json", default="", help="write the figures here too")
    ap.add_argument("--from-json", default="", help="no server: refit and compare on the figures a --json run wrote")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not split the CPUs (by default the client runs on CPU 0 and the server on the others, "
                         "so the client's own work at high rates does not slow the server's steps)")
    args = ap.parse_args()
    cfg = EngineConfig()
    budget, max_seqs = cfg.max_batch_tokens, cfg.max_requests_per_batch
    if args.from_json:
        measured, capacity, lengths, burst_n, cal, val = from_json(args.from_json)
        pin = False
    else:
        cal = [float(x) for x in args.calibrate.split(",")]
        val = [float(x) for x in args.validate.split(",")]
        measured, capacity, lengths, burst_n = measure(args, cal, val, budget, max_seqs)
        pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    lone = measured[min(cal)]
    start = {"step_ms": lone["tpot_mean_ms"] * 0.8, "seq_ms": 0.1, "prefill_token_ms": 0.01,
             "front_ms": 1.0, "latency_ms": max(0.0, lone["ttft_mean_ms"] - lone["tpot_mean_ms"]), "step_cv": 0.3}
    theta = fit([(measured[f]["rate"], measured[f]) for f in cal], lengths, args.requests, args.seed, budget,
                max_seqs, start, (burst_n, capacity))
    print(f"\ncalibrated on rates {cal} x the burst throughput and on the burst itself ({burst_n} requests at once, "
          f"{capacity:.1f} requests/s): " + ", ".join(f"{k} {v}" for k, v in theta.items()))
    print("\n| rate (req/s) | share of burst | role | metric | measured ms | predicted ms | error |")
    print("|---:|---:|---|---|---:|---:|---:|")
    rows, errors = [], []
    for frac in sorted(measured):
        m = measured[frac]
        p = predict(theta, lengths, m["rate"], args.requests, args.seed, budget, max_seqs).to_dict()
        role = "calibration" if frac in cal else "held out"
        for k in KEYS:
            err = p[k] / m[k] - 1
            if role == "held out":
                errors.append(abs(err))
            rows.append({"rate": m["rate"], "share": frac, "role": role, "metric": k, "measured": m[k],
                         "predicted": p[k], "error": err, "saturated": p["saturated"]})
            print(f"| {m['rate']:.2f} | {frac:.2f} | {role} | {k} | {m[k]:.1f} | {p[k]:.1f} | {err:+.0%} |")
    print(f"\nheld-out mean absolute error {np.mean(errors):.1%}, worst {max(errors):.1%} "
          f"({len(errors)} figures at {len(val)} rates)")
    if args.from_json:
        print(f"figures measured before: {args.from_json}")
        print(f"rerun: .venv/bin/python benchmarks/bench_open_loop.py --from-json {args.from_json}")
    else:
        print(f"machine: {os.cpu_count()} CPUs ({'client on CPU 0, server on the others' if pin else 'shared'}), "
              f"load average {os.getloadavg()[0]:.1f} at the end; "
              f"engine: max_batch_tokens {budget}, max_requests_per_batch {max_seqs}; "
              f"prompt lengths {lengths.summary()['prompt_tokens']}")
        print(f"rerun: .venv/bin/python benchmarks/bench_open_loop.py --requests {args.requests} "
              f"--calibrate {args.calibrate} --validate {args.validate} --seed {args.seed} --rounds {args.rounds}"
              + (" --no-pin" if not pin else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"capacity_req_per_s": capacity, "burst_requests": burst_n,
                                               "theta": theta, "rows": rows, "lengths": lengths.to_dict()},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
