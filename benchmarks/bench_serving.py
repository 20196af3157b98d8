"""Serving under load: the real HTTP server (scripts/serve.sh) against per-request generate.

Closed loop (each of C clients sends its next request when the last one is answered) at
concurrency 1, 8, 32 and 64 against ``/v1/completions`` of a generation-shaped task (the
task spec's prompt and output lengths), distinct inputs (no cache hits). The baseline is
today's server before continuous batching: one ``inference.respond`` per request under a
per-model lock, in this process (no HTTP, so it is, if anything, flattered).

Figures: requests/s, output tokens/s (from ``usage``), end-to-end latency p50/p95, goodput
(requests within the task's SLO, ``ttft_ms + tpot_ms * output_tokens``), the server's peak
RSS, and its RSS after each of five rounds of 64. Then the same closed loop streamed
(``stream=true``, server-sent events): time to the first text chunk (TTFT) and the mean gap
between text chunks (TPOT), p50/p95 per concurrency, and p95 TTFT at the top level against a
lone request's.

    .venv/bin/python benchmarks/bench_serving.py [--requests 128] [--levels 1,8,32,64]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASK = "routing_note"


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def make_artifacts(out: Path):
    """A run's layout with one generation-shaped task (the demo's tiny-s model)."""
    from rightsizer.bundle import write_bundle
    from rightsizer.demo.bootstrap import bootstrap
    from rightsizer.layout import RunLayout
    from rightsizer.taskspec import load_task

    demo = bootstrap(verbose=False)
    routing = load_task(ROOT / "tasks" / "ticket_routing.yaml")
    spec = dataclasses.replace(routing, name=TASK, type="generation", metric="rouge_l", labels=[],
                               max_new_tokens=16, prompt="Note: {text}")
    write_bundle(demo / "models" / "tiny-s", spec, RunLayout(out).bundle_dir(TASK),
                 base_model="demo:tiny-s", rung="zero_shot")
    return spec


def start_server(work: Path, engine: str = "{}") -> tuple[subprocess.Popen, str]:
    """scripts/serve.sh on a free port over ``work``'s artifacts, once ``/v1/models`` answers
    (its log in ``work/serve.log``; stop it with ``os.killpg(proc.pid, signal.SIGINT)``)."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts/serve.sh"), "--port", str(port),
                             "--artifacts", str(work), "--engine", engine], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{base}/v1/models", timeout=5)
            break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit((work / "serve.log").read_text()[-2000:]) from None
            time.sleep(1)
    return proc, base


def inputs(spec, n: int, tag: str) -> list[str]:
    from rightsizer.evaluate import load_rows

    rows = load_rows(spec, "eval")
    return [f"{rows[i % len(rows)]['text']} (ref {tag}-{i})" for i in range(n)]


async def closed_loop(base: str, texts: list[str], concurrency: int) -> dict:
    import aiohttp

    queue = list(texts)
    lat: list[float] = []
    tokens = 0
    async with aiohttp.ClientSession() as session:
        async def client():
            nonlocal tokens
            while queue:
                text = queue.pop()
                t0 = time.perf_counter()
                async with session.post(f"{base}/v1/completions",
                                        json={"model": TASK, "prompt": text}) as r:
                    body = await r.json()
                    if r.status != 200:
                        raise RuntimeError(f"{r.status}: {body}")
                lat.append(time.perf_counter() - t0)
                tokens += body["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"wall": wall, "lat": lat, "tokens": tokens}


async def sse_events(response):
    """The JSON bodies of a streamed response's server-sent events, as they arrive ([DONE] ends)."""
    async for line in response.content:
        line = line.decode().strip()
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


async def closed_loop_stream(base: str, texts: list[str], concurrency: int) -> dict:
    """The closed loop with ``stream=true``: per request, seconds to the first text chunk and the
    mean gap between text chunks after it."""
    import aiohttp

    queue = list(texts)
    ttft: list[float] = []
    tpot: list[float] = []
    async with aiohttp.ClientSession() as session:
        async def client():
            while queue:
                text = queue.pop()
                t0 = time.perf_counter()
                stamps = []
                async with session.post(f"{base}/v1/completions",
                                        json={"model": TASK, "prompt": text, "stream": True}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"{r.status}: {await r.text()}")
                    async for chunk in sse_events(r):
                        if chunk["choices"][0]["text"]:
                            stamps.append(time.perf_counter())
                if stamps:
                    ttft.append(stamps[0] - t0)
                if len(stamps) > 1:
                    tpot.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"wall": time.perf_counter() - t0, "ttft": ttft, "tpot": tpot}


def baseline(spec, bundle_dir: Path, texts: list[str], concurrency: int) -> dict:
    """Today's server before this engine: one respond() per request, one lock per model."""
    import concurrent.futures

    from rightsizer.inference import load_bundle, respond

    b = load_bundle(bundle_dir, device="cpu")
    lock = threading.Lock()
    lat: list[float] = []
    tokens = [0]

    def one(text):
        t0 = time.perf_counter()
        with lock:
            out = respond(b.model, b.tokenizer, b.spec, [text], b.shots)
            tokens[0] += len(b.tokenizer(out[0]["generated"], add_special_tokens=False)["input_ids"])
        lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, texts))
    return {"wall": time.perf_counter() - t0, "lat": lat, "tokens": tokens[0]}


def row(name: str, c: int, r: dict, slo_s: float) -> dict:
    n = len(r["lat"])
    return {"server": name, "concurrency": c, "requests": n, "req_per_s": n / r["wall"],
            "out_tok_per_s": r["tokens"] / r["wall"], "e2e_p50_ms": 1000 * _pct(r["lat"], 0.5),
            "e2e_p95_ms": 1000 * _pct(r["lat"], 0.95),
            "goodput": sum(x <= slo_s for x in r["lat"]) / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=128, help="requests per concurrency level")
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--repeats", type=int, default=1, help="runs per level (medians reported)")
    ap.add_argument("--json", default="", help="write the figures here too")
    ap.add_argument("--stream-only", action="store_true", help="only the streamed closed loop (TTFT/TPOT)")
    ap.add_argument("--engine", default="{}", help="EngineConfig fields as JSON, e.g. '{\"max_batch_tokens\": 256}'")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    spec = make_artifacts(work)
    from rightsizer.layout import RunLayout

    bundle = RunLayout(work).bundle_dir(TASK)
    slo_s = (spec.slo.ttft_ms + spec.slo.tpot_ms * spec.max_new_tokens) / 1000
    proc, base = start_server(work, args.engine)
    rows, rss = [], []
    try:
        asyncio.run(closed_loop(base, inputs(spec, 16, "warm"), 8))  # warm-up, not measured
        for c in ([] if args.stream_only else levels):
            runs = [asyncio.run(closed_loop(base, inputs(spec, args.requests, f"c{c}r{k}"), c))
                    for k in range(args.repeats)]
            rows.append(_median("engine (HTTP)", c, runs, slo_s))
        streamed = {}
        for c in levels:
            r = asyncio.run(closed_loop_stream(base, inputs(spec, args.requests, f"s{c}"), c))
            streamed[c] = {"ttft_p50_ms": 1000 * _pct(r["ttft"], 0.5), "ttft_p95_ms": 1000 * _pct(r["ttft"], 0.95),
                           "tpot_p50_ms": 1000 * _pct(r["tpot"], 0.5) if r["tpot"] else float("nan"),
                           "tpot_p95_ms": 1000 * _pct(r["tpot"], 0.95) if r["tpot"] else float("nan"),
                           "streams": len(r["ttft"])}
        for k in range(0 if args.stream_only else 5):
            asyncio.run(closed_loop(base, inputs(spec, 64, f"rss{k}"), 64))
            rss.append(_rss_kb(proc.pid))
        peak = _rss_kb(proc.pid, "VmHWM")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    if args.stream_only:
        _print_streamed(streamed, levels)
        return 0
    for c in levels:
        runs = [baseline(spec, bundle, inputs(spec, args.requests, f"b{c}r{k}"), c)
                for k in range(args.repeats)]
        rows.append(_median("per-request generate", c, runs, slo_s))
    print(f"\ntask {TASK} (generation, demo tiny-s, {spec.max_new_tokens} output tokens), "
          f"{args.requests} requests per level, median of {args.repeats}; SLO {slo_s * 1000:.0f} ms e2e")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (shared)")
    head = ["server", "concurrency", "req_per_s", "out_tok_per_s", "e2e_p50_ms", "e2e_p95_ms", "goodput"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(f"{r[h]:.2f}" if isinstance(r[h], float) else str(r[h]) for h in head))
    by = {(r["server"], r["concurrency"]): r for r in rows}
    top = max(levels)
    speedup = by["engine (HTTP)", top]["out_tok_per_s"] / by["per-request generate", top]["out_tok_per_s"]
    print(f"\noutput tokens/s at concurrency {top}: {speedup:.1f}x the per-request baseline")
    _print_streamed(streamed, levels)
    print(f"server RSS after five rounds of 64 (MiB): {[round(x / 1024) for x in rss]}; "
          f"growth {100 * (rss[-1] - rss[0]) / rss[0]:.1f} %; peak {peak / 1024:.0f} MiB")
    print(f"\nrerun: .venv/bin/python benchmarks/bench_serving.py --requests {args.requests} "
          f"--levels {args.levels} --repeats {args.repeats} --engine '{args.engine}'")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "streamed": streamed, "rss_kb": rss, "peak_kb": peak},
                                              indent=2))
    return 0


def _print_streamed(streamed: dict, levels: list[int]) -> None:
    print("\nstreamed (stream=true): concurrency | streams | ttft_p50_ms | ttft_p95_ms | tpot_p50_ms | tpot_p95_ms")
    for c, r in streamed.items():
        print(f"{c} | {r['streams']} | {r['ttft_p50_ms']:.1f} | {r['ttft_p95_ms']:.1f} | {r['tpot_p50_ms']:.2f} | "
              f"{r['tpot_p95_ms']:.2f}")
    lo, hi = min(levels), max(levels)
    print(f"p95 TTFT at concurrency {hi}: {streamed[hi]['ttft_p95_ms'] / streamed[lo]['ttft_p95_ms']:.1f}x "
          f"that at {lo} (target <= 2x)")
    print(f"machine: load average {os.getloadavg()[0]:.1f} at the end (shared)")


def _median(name: str, c: int, runs: list[dict], slo_s: float) -> dict:
    rs = [row(name, c, r, slo_s) for r in runs]
    out = dict(rs[0])
    for k in ("req_per_s", "out_tok_per_s", "e2e_p50_ms", "e2e_p95_ms", "goodput"):
        out[k] = statistics.median(r[k] for r in rs)
    return out


if __name__ == "__main__":
    sys.exit(main())
