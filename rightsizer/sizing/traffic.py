"""Open-loop traffic: requests of many lengths arriving at random, through the engine's scheduler.

``batching`` models the steady state of a closed loop (``batch`` requests always in flight,
one typical request shape). What a user's SLO names is different: p95 TTFT and TPOT while
requests arrive on their own (a Poisson process at a request rate) with prompt and output
lengths drawn from the task's data. Bursts queue; long prompts hold the token budget. This
module simulates that, step by step, with the same step-time model:

- every step decodes one token for each running sequence and fills the rest of the token
  budget with prompt chunks, first-come first-served (vLLM's and SGLang's chunked prefill);
  a request is admitted while fewer than ``max_seqs`` run (the KV cache's or the engine's cap);
- the server's front end (HTTP, tokenising) takes requests one at a time, ``front_end_ms``
  each, before the engine sees them (for a small model this queue is often what saturates);
- a request's first token comes out of the step that finishes its prompt; TTFT is that time
  less its arrival (the front end's queue included), plus ``server_latency_ms`` (streaming,
  the round trip: latency that holds no shared resource);
  TPOT is (finish - first token) / (output - 1), per request, as benchmark clients report it;
- decode-only stretches between events (an arrival, a finish) are taken in one jump at the
  step time of their batch, so a run costs O(requests), not O(tokens).

A discrete-event simulation rather than a queueing formula: an M/G/1 formula would need the
service time of a batch that changes with every arrival and finish, and the p95 of TTFT under
chunked prefill has no closed form. Seeded (``numpy.random.default_rng``), so the figures are
the same on every machine.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from rightsizer.errors import ConfigError

StepTime = Callable[[int, float, float, int], float]  # (decode seqs, mean context, prefill tokens, prompt) -> ms
MAX_BINS = 16  # per axis of the length histogram a record keeps


def _positive_ints(values: Iterable[Any], what: str) -> list[int]:
    out = []
    for v in values:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{what}: every length must be a positive integer, got {v!r}")
        out.append(int(v))
    if not out:
        raise ConfigError(f"{what}: no lengths (expected at least one request)")
    return out


def _bin_edges(values: list[int]) -> list[int]:
    """At most MAX_BINS bins, each a quarter of a power of two wide (about 19 %), so a bin's
    representative (its mean) is within 10 % of every length in it."""
    lo, hi = min(values), max(values)
    edges, e = [lo], float(lo)
    while e <= hi:
        e = max(e * 2 ** 0.25, edges[-1] + 1)
        edges.append(int(math.ceil(e)))
    while len(edges) - 1 > MAX_BINS:  # merge neighbours until the histogram is bounded
        edges = edges[::2] if edges[-1] == edges[::2][-1] else edges[::2] + [edges[-1]]
    return edges


@dataclass(frozen=True)
class Lengths:
    """Request lengths as a joint histogram: (prompt tokens, output tokens, count) rows.

    ``source`` says where they come from ("measured: ..." from a task's data and tokenizer,
    "spec" when the task spec gives them, "typical" for one workload shape)."""

    rows: tuple[tuple[int, int, int], ...]
    source: str = ""

    @classmethod
    def fixed(cls, prompt_tokens: int, output_tokens: int, source: str = "typical") -> "Lengths":
        return cls(((int(prompt_tokens), int(output_tokens), 1),), source)

    @classmethod
    def uniform(cls, prompt_mean: float, output_mean: float, source: str = "uniform") -> "Lengths":
        """Prompt and output lengths independent and uniform on [1, 2 x mean - 1] (benchmark
        clients' random datasets: ``sglang.bench_serving --dataset-name random`` at its default
        range ratio), binned."""
        return cls.uniform_between((1, max(1, int(round(2 * prompt_mean - 1)))),
                                   (1, max(1, int(round(2 * output_mean - 1)))), source)

    @classmethod
    def uniform_between(cls, prompt: tuple[int, int], output: tuple[int, int], source: str = "uniform") -> "Lengths":
        """Prompt and output lengths independent and uniform on the integers of each closed
        range (e.g. ``randint(100, 1024)`` in a benchmark script), binned."""
        def axis(lo: int, hi: int) -> list[tuple[int, int]]:
            if not 1 <= lo <= hi:
                raise ConfigError(f"lengths ({source}): range [{lo}, {hi}]; expected 1 <= low <= high")
            edges = np.linspace(lo, hi + 1, min(MAX_BINS, hi - lo + 1) + 1)
            return [(max(1, int(round((a + b - 1) / 2))), int(math.ceil(b) - math.ceil(a)))
                    for a, b in zip(edges[:-1], edges[1:]) if math.ceil(b) > math.ceil(a)]
        rows = tuple((p, o, pc * oc) for p, pc in axis(*prompt) for o, oc in axis(*output))
        return cls(rows, source)

    @classmethod
    def from_samples(cls, prompts: Iterable[int], outputs: Iterable[int], source: str = "") -> "Lengths":
        """Binned from one (prompt, output) pair per request."""
        p = _positive_ints(prompts, f"prompt lengths ({source or 'samples'})")
        o = _positive_ints(outputs, f"output lengths ({source or 'samples'})")
        if len(p) != len(o):
            raise ConfigError(f"lengths ({source or 'samples'}): {len(p)} prompt lengths but {len(o)} output lengths")
        pe, oe = _bin_edges(p), _bin_edges(o)
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for a, b in zip(p, o):
            key = (int(np.searchsorted(pe, a, side="right")), int(np.searchsorted(oe, b, side="right")))
            groups.setdefault(key, []).append((a, b))
        rows = sorted((max(1, round(sum(a for a, _ in g) / len(g))), max(1, round(sum(b for _, b in g) / len(g))),
                       len(g)) for g in groups.values())
        return cls(tuple(rows), source)

    @classmethod
    def from_spec(cls, histogram: list, task: str) -> "Lengths":
        """A task spec's own ``workload.lengths`` (a ConfigError naming the task and field)."""
        return cls.from_dict({"histogram": histogram, "source": "spec (workload.lengths)"},
                             where=f"{task}: workload.lengths")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "lengths") -> "Lengths":
        rows = data.get("histogram") if isinstance(data, Mapping) else None
        if not isinstance(rows, list) or not rows:
            raise ConfigError(f"{where}.histogram: expected a list of [prompt_tokens, output_tokens, count] rows, "
                              f"got {rows!r}")
        out = []
        for i, r in enumerate(rows):
            if not (isinstance(r, (list, tuple)) and len(r) == 3):
                raise ConfigError(f"{where}.histogram[{i}]: expected [prompt_tokens, output_tokens, count], got {r!r}")
            out.append(tuple(_positive_ints(r, f"{where}.histogram[{i}]")))
        return cls(tuple(out), str(data.get("source", "")))

    @property
    def count(self) -> int:
        return sum(c for _, _, c in self.rows)

    def _quantile(self, axis: int, q: float) -> int:
        pairs = sorted((r[axis], r[2]) for r in self.rows)
        target, seen = q * self.count, 0
        for v, c in pairs:
            seen += c
            if seen >= target:
                return v
        return pairs[-1][0]

    def mean(self, axis: int) -> float:
        return sum(r[axis] * r[2] for r in self.rows) / self.count

    def summary(self) -> dict[str, Any]:
        return {name: {"mean": round(self.mean(i), 1), "p50": self._quantile(i, 0.5), "p95": self._quantile(i, 0.95),
                       "max": max(r[i] for r in self.rows)}
                for i, name in ((0, "prompt_tokens"), (1, "output_tokens"))}

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "requests": self.count, "summary": self.summary(),
                "histogram": [list(r) for r in self.rows]}

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        weights = np.array([c for _, _, c in self.rows], dtype=float)
        idx = rng.choice(len(self.rows), size=n, p=weights / weights.sum())
        arr = np.array([(p, o) for p, o, _ in self.rows], dtype=np.int64)
        return arr[idx, 0], arr[idx, 1]


@dataclass(frozen=True)
class TailFigures:
    """Mean and p95 TTFT and TPOT at one request rate (open loop), and whether the engine kept up."""

    request_rate: float
    ttft_mean_ms: float
    ttft_p95_ms: float
    tpot_mean_ms: float
    tpot_p95_ms: float
    requests: int  # measured (after the warm-up share)
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    output_tokens_per_s: float  # the measured requests' output over the time they span
    busy: float  # share of the time the engine was stepping
    saturated: bool  # the queue grew through the run: the rate is above what the option serves
    mean_running: float  # sequences in flight, time-averaged

    def to_dict(self) -> dict[str, Any]:
        return {"request_rate": self.request_rate, "ttft_mean_ms": self.ttft_mean_ms,
                "ttft_p95_ms": self.ttft_p95_ms, "tpot_mean_ms": self.tpot_mean_ms, "tpot_p95_ms": self.tpot_p95_ms,
                "ttft_p50_ms": self.ttft_p50_ms, "ttft_p99_ms": self.ttft_p99_ms, "tpot_p50_ms": self.tpot_p50_ms,
                "tpot_p99_ms": self.tpot_p99_ms, "output_tokens_per_s": self.output_tokens_per_s,
                "requests": self.requests, "busy": self.busy, "saturated": self.saturated,
                "mean_running": self.mean_running}

    def meets(self, ttft_ms: float, tpot_ms: float) -> bool:
        return not self.saturated and self.ttft_p95_ms <= ttft_ms and self.tpot_p95_ms <= tpot_ms


def _cached(step: StepTime) -> StepTime:
    """Step times memoised on a coarse grid (2 % in the token counts and the context), so a run
    of thousands of steps calls the roofline a few hundred times."""
    memo: dict[tuple, float] = {}

    def q(x: float) -> float:
        return 0.0 if x <= 0 else (x if x < 32 else float(round(2 ** (round(math.log2(x) * 36) / 36))))

    def f(d: int, ctx: float, c: float, prompt: int) -> float:
        key = (d if d < 32 else q(d), q(ctx), q(c), q(prompt))
        if key not in memo:
            memo[key] = step(int(key[0]), key[1], key[2], max(1, int(key[3])))
        return memo[key]

    return f


def simulate(step_ms: StepTime, lengths: Lengths, request_rate: float, *, token_budget: int, max_seqs: int,
             front_end_ms: float = 0.0, server_latency_ms: float = 0.0, requests: int = 600, seed: int = 0,
             warmup: float = 0.1, warmup_s: float = 0.0, step_cv: float = 0.0) -> TailFigures:
    """Poisson arrivals at ``request_rate`` (requests/s) with lengths from ``lengths``, served
    by continuous batching with chunked prefill; figures over the requests after the first
    ``warmup`` share and the first ``warmup_s`` seconds. ``step_ms(d, ctx, c, prompt)``: one step's time with ``d`` decoding
    sequences of mean context ``ctx`` and ``c`` prompt tokens (of prompts ``prompt`` long).
    ``step_cv``: the steps' times vary around it (lognormal, this coefficient of variation; a
    jumped stretch of k steps by cv / sqrt(k)), as a CPU engine's do; 0 (the default, the sizing
    engine's) keeps them fixed. Seeded apart from the arrivals, so the same requests come."""
    if not (isinstance(request_rate, (int, float)) and request_rate > 0 and not math.isnan(request_rate)):
        raise ConfigError(f"request_rate must be a positive number of requests/s (inf: all at once), "
                          f"got {request_rate!r}")
    burst = math.isinf(request_rate)  # a benchmark's "request rate inf": every request sent at once
    if token_budget < 1 or max_seqs < 1:
        raise ConfigError(f"token_budget and max_seqs must be >= 1, got {token_budget}, {max_seqs}")
    if not step_cv >= 0:
        raise ConfigError(f"step_cv must be >= 0 (the steps' coefficient of variation), got {step_cv!r}")
    step = _cached(step_ms)
    rng = np.random.default_rng(seed)
    jitter = np.random.default_rng(seed + 1) if step_cv > 0 else None

    def noisy(dt: float, k: int = 1) -> float:
        """``k`` steps of ``dt`` each, their times varying (lognormal, mean dt, ``step_cv``)."""
        if jitter is None:
            return k * dt
        s_k = math.sqrt(math.log1p(step_cv ** 2 / k))
        return k * dt * float(jitter.lognormal(-s_k * s_k / 2, s_k))
    arrivals = np.zeros(requests) if burst else np.cumsum(rng.exponential(1.0 / request_rate, size=requests))
    prompts, outputs = lengths.sample(rng, requests)
    # The server's front end (HTTP, tokenising) takes each request in turn before the engine
    # sees it: a first-come first-served queue of front_end_ms per request. For a
    # small model it is often the bottleneck: it caps the rate at 1 / front_end_ms.
    enter, free_at = [], 0.0
    for a in arrivals.tolist():
        free_at = max(a, free_at) + front_end_ms / 1e3
        enter.append(free_at)
    arr, plen, olen = enter, prompts.tolist(), outputs.tolist()  # scalars: lists are faster
    first = [math.nan] * requests
    done = [math.nan] * requests
    # Decoding sequences share one token clock G (tokens each running sequence has decoded):
    # sequence i ends when G reaches end[i], so a step is O(log n) however many run.
    G = 0
    ends: list[tuple[int, int]] = []  # heap of (end G, request)
    ctx_base = 0  # sum over decoding of prompt + output - end: their mean context is ctx_base / d + G
    prefilling: list[list] = []  # [request, prompt tokens left], admitted, first-come first-served
    waiting: deque[int] = deque()
    t, nxt = 0.0, 0
    busy = area = 0.0

    def finish_decodes(at: float) -> None:
        nonlocal ctx_base
        while ends and ends[0][0] <= G:
            end, i = heapq.heappop(ends)
            done[i] = at
            ctx_base -= plen[i] + olen[i] - end

    while nxt < requests or ends or prefilling or waiting:
        while nxt < requests and arr[nxt] <= t:
            waiting.append(nxt)
            nxt += 1
        while waiting and len(ends) + len(prefilling) < max_seqs:
            i = waiting.popleft()
            prefilling.append([i, float(plen[i])])
        d = len(ends)
        if not d and not prefilling:
            t = arr[nxt]
            continue
        ctx = ctx_base / d + G if d else 0.0
        room = max(0, token_budget - d)
        chunks: list[tuple[list, float]] = []
        for entry in prefilling:
            if room <= 0:
                break
            c = min(entry[1], room)
            chunks.append((entry, c))
            room -= c
        running = d + len(prefilling)
        if not chunks:
            # decode only: jump to the next finish or arrival at this batch's step time
            dt = step(d, ctx, 0.0, 1) / 1e3
            k = ends[0][0] - G
            if nxt < requests:
                k = max(1, min(k, int(math.ceil((arr[nxt] - t) / dt))))
            G += k
            span = noisy(dt, k)
            t += span
            busy += span
            area += span * running
            finish_decodes(t)
            continue
        prompt = max(plen[e[0]] for e, _ in chunks)
        dt = noisy(step(d, ctx, sum(c for _, c in chunks), prompt) / 1e3)
        G += 1
        t += dt
        busy += dt
        area += dt * running
        finish_decodes(t)
        for entry, c in chunks:
            entry[1] -= c
            if entry[1] <= 0:  # the prompt's last chunk samples the first token
                i = entry[0]
                first[i] = t
                if olen[i] <= 1:
                    done[i] = t
                else:  # olen - 1 more tokens, from the next step on
                    heapq.heappush(ends, (G + olen[i] - 1, i))
                    ctx_base += plen[i] + olen[i] - (G + olen[i] - 1)
        prefilling = [e for e in prefilling if e[1] > 0]
    first_a, done_a = np.array(first), np.array(done)
    # measured: the requests that arrive after the warm-up (the engine filling up)
    start = 0 if burst else max(int(requests * warmup), int(np.searchsorted(arrivals, warmup_s)))
    start = max(0, min(start, requests - max(10, requests // 4)))
    keep = np.arange(requests) >= start
    # from the client's send: the front end's queue included, and the latency no queue holds
    ttft = (first_a - arrivals)[keep] * 1e3 + server_latency_ms
    multi = keep & (outputs > 1)
    tpot = ((done_a - first_a)[multi] / (outputs[multi] - 1)) * 1e3 if multi.any() else np.zeros(1)
    # saturated: the backlog (arrived, not finished) kept growing over the measured arrivals by
    # more than a tenth of the rate (steady state holds it level, up to noise), or the wait for
    # the first token kept growing (a queue behind a full engine), or the front end alone is
    # busier than it can be (a short run may not show that queue grow)
    t0, t1 = float(arrivals[start]), float(arrivals[-1])
    tmid = (t0 + t1) / 2

    def backlog(at: float) -> int:
        return int(np.count_nonzero(arrivals <= at)) - int(np.count_nonzero(done_a <= at))

    growth = backlog(t1) - backlog(tmid)
    waits = (first_a - arrivals)[keep]
    quarter = max(1, len(waits) // 4)
    growing = float(np.mean(waits[-quarter:])) > 3 * float(np.mean(waits[quarter:2 * quarter])) + 0.05
    overloaded = front_end_ms > 0 and request_rate * front_end_ms / 1e3 >= 1.0
    saturated = bool(burst or growing or overloaded or growth > max(5.0, 0.1 * request_rate * (t1 - tmid)))
    span = float(np.nanmax(done_a[keep]) - arrivals[keep].min())
    throughput = float(outputs[keep].sum()) / span if span > 0 else 0.0
    return TailFigures(request_rate=float(request_rate), ttft_mean_ms=float(np.mean(ttft)),
                       ttft_p95_ms=float(np.percentile(ttft, 95)), tpot_mean_ms=float(np.mean(tpot)),
                       tpot_p95_ms=float(np.percentile(tpot, 95)), requests=int(keep.sum()),
                       ttft_p50_ms=float(np.percentile(ttft, 50)), ttft_p99_ms=float(np.percentile(ttft, 99)),
                       tpot_p50_ms=float(np.percentile(tpot, 50)), tpot_p99_ms=float(np.percentile(tpot, 99)),
                       output_tokens_per_s=throughput,
                       busy=busy / t if t > 0 else 0.0, saturated=saturated, mean_running=area / t if t > 0 else 0.0)


def max_rate(figures_at: Callable[[float], TailFigures], ttft_ms: float, tpot_ms: float, start: float,
             iterations: int = 10) -> tuple[float, TailFigures | None]:
    """The highest request rate whose p95 TTFT and TPOT meet the targets (bisection on a
    log scale from ``start``); (0, None) when even a trickle misses them."""
    lo_fig = None
    lo, hi = 0.0, start
    fig = figures_at(hi)
    while fig.meets(ttft_ms, tpot_ms) and hi < start * 2 ** 20:  # grow until it misses
        lo, lo_fig, hi = hi, fig, hi * 2
        fig = figures_at(hi)
    if lo == 0.0:  # shrink until it meets
        while hi > start / 2 ** 20:
            hi /= 2
            fig = figures_at(hi)
            if fig.meets(ttft_ms, tpot_ms):
                lo, lo_fig, hi = hi, fig, hi * 2
                break
        if lo == 0.0:
            return 0.0, None
    for _ in range(iterations):
        mid = math.sqrt(lo * hi)
        fig = figures_at(mid)
        if fig.meets(ttft_ms, tpot_ms):
            lo, lo_fig = mid, fig
        else:
            hi = mid
    return lo, lo_fig


__all__ = ["Lengths", "TailFigures", "simulate", "max_rate", "MAX_BINS"]
