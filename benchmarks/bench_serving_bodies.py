"""Huge request bodies against the real HTTP server (scripts/serve.sh): does one client's 7 MB
prompt stall the others, and is the memory it takes given back?

Two tasks are served (``routing_note``, a generation, and ``ticket_routing``, a classification;
the demo's tiny-s). Each round sends ``--concurrent`` prompts of ``--mb`` MB (under the 8 MB
body limit, far beyond the context: refused from their length before tokenizing) to
``routing_note`` while a second client keeps calling ``ticket_routing`` and ``GET /v1/models``.

Figures per round: the huge requests' status and wall time, the other client's slowest answer
during the round (a stall shows here), and the server's RSS after the round; then the RSS
growth from the first round to the last, and the server's peak RSS.

    .venv/bin/python benchmarks/bench_serving_bodies.py [--rounds 6] [--concurrent 3] [--mb 7]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_serving import _rss_kb, make_artifacts, start_server  # noqa: E402

OTHER = "ticket_routing"


def add_classification_task(work: Path) -> None:
    """The second served task, laid out as a run leaves it."""
    from rightsizer.bundle import write_bundle
    from rightsizer.demo.bootstrap import bootstrap
    from rightsizer.layout import RunLayout
    from rightsizer.taskspec import load_task

    spec = dataclasses.replace(load_task(ROOT / "tasks" / "ticket_routing.yaml"))
    write_bundle(bootstrap(verbose=False) / "models" / "tiny-s", spec, RunLayout(work).bundle_dir(OTHER),
                 base_model="demo:tiny-s", rung="zero_shot")


async def one_round(base: str, mb: float, concurrent: int) -> dict:
    import aiohttp

    # encoded once, before the clock: the client's own JSON encoding would stall its other client
    payload = json.dumps({"model": "routing_note", "prompt": "refund " * int(mb * 1e6 / 7)}).encode()
    done = asyncio.Event()
    others: list[float] = []
    statuses: list[int] = []

    async with aiohttp.ClientSession() as session:
        async def huge() -> None:
            async with session.post(f"{base}/v1/completions", data=payload,
                                    headers={"Content-Type": "application/json"}) as r:
                await r.read()
                statuses.append(r.status)

        async def other() -> None:
            i = 0
            while not done.is_set():
                t0 = time.perf_counter()
                if i % 2:
                    async with session.get(f"{base}/v1/models") as r:
                        await r.read()
                else:
                    async with session.post(f"{base}/v1/completions",
                                            json={"model": OTHER, "prompt": f"my parcel is late ({i})"}) as r:
                        await r.read()
                        assert r.status == 200, await r.text()
                others.append(time.perf_counter() - t0)
                i += 1

        watcher = asyncio.create_task(other())
        t0 = time.perf_counter()
        await asyncio.gather(*(huge() for _ in range(concurrent)))
        wall = time.perf_counter() - t0
        done.set()
        await watcher
    return {"statuses": sorted(set(statuses)), "wall_s": wall, "other_max_ms": 1000 * max(others),
            "other_p50_ms": 1000 * sorted(others)[len(others) // 2], "other_requests": len(others)}


async def quiet(base: str, n: int = 10) -> dict:
    """The other client's latency with no huge request in flight (the reference)."""
    import aiohttp

    lat = []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            t0 = time.perf_counter()
            async with session.post(f"{base}/v1/completions",
                                    json={"model": OTHER, "prompt": f"my parcel is late (quiet {i})"}) as r:
                await r.read()
            lat.append(time.perf_counter() - t0)
    return {"p50_ms": 1000 * sorted(lat)[n // 2], "max_ms": 1000 * max(lat)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--concurrent", type=int, default=3, help="huge requests at once per round")
    ap.add_argument("--mb", type=float, default=7.0, help="size of each huge prompt (MB; the limit is 8)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-bodies-"))
    make_artifacts(work)
    add_classification_task(work)
    proc, base = start_server(work)
    rows, rss = [], []
    try:
        asyncio.run(one_round(base, 0.001, 1))  # warm-up, not measured
        alone = asyncio.run(quiet(base))
        start = _rss_kb(proc.pid)
        for _ in range(args.rounds):
            rows.append(asyncio.run(one_round(base, args.mb, args.concurrent)))
            rss.append(_rss_kb(proc.pid))
        peak = _rss_kb(proc.pid, "VmHWM")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    print(f"\n{args.rounds} rounds of {args.concurrent} x {args.mb:g} MB prompts to routing_note, while another "
          f"client calls {OTHER} and GET /v1/models")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (shared)")
    print(f"the other client alone: p50 {alone['p50_ms']:.0f} ms, max {alone['max_ms']:.0f} ms")
    print("round | huge status | huge wall s | other p50 ms | other max ms | other requests | RSS MiB")
    for i, (r, kb) in enumerate(zip(rows, rss), start=1):
        print(f"{i} | {r['statuses']} | {r['wall_s']:.2f} | {r['other_p50_ms']:.0f} | {r['other_max_ms']:.0f} | "
              f"{r['other_requests']} | {kb / 1024:.0f}")
    print(f"RSS before the first round {start / 1024:.0f} MiB; growth from round 1 to round {args.rounds}: "
          f"{(rss[-1] - rss[0]) / 1024:+.0f} MiB; peak {peak / 1024:.0f} MiB")
    print(f"\nrerun: .venv/bin/python benchmarks/bench_serving_bodies.py --rounds {args.rounds} "
          f"--concurrent {args.concurrent} --mb {args.mb:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
