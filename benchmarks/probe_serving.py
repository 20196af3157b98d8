"""A hostile-input probe of the served API (scripts/serve.sh): every answer is either a correct
answer or a clear refusal, never a silent 200 or a raw failure.

Categories: bad values per field (completions, chat, V2), bodies that are not what a route
takes, unknown routes and methods, more prompts than the queue holds, and a 7 MB prompt to
one task while another task is called. Each case says whether the server must answer it (200
with its route's body) or refuse it (4xx with its route's error shape: the OpenAI error object
on /v1, ``{"error": message}`` on /v2, naming what was wrong). An answer is classed:

- ``correct``: a case to answer, answered 200 with the route's body;
- ``refused``: a case to refuse, refused 4xx in the route's error shape, with a message;
- ``silent 200``: a case to refuse that got a 200 (an accepted field not applied, a bad value taken);
- ``raw``: anything else (5xx, a body that is not the route's shape, text/plain, a hang).

    .venv/bin/python benchmarks/probe_serving.py [--base http://127.0.0.1:8080] [--api-key KEY]

Without ``--base`` it serves the demo's tiny-s on two tasks itself (as bench_serving.py does).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CLS, GEN = "ticket_routing", "routing_note"  # a classification and a generation task


def _completion(**fields) -> dict:
    return {"model": CLS, "prompt": "I was charged twice", **fields}


def _chat(**fields) -> dict:
    return {"model": GEN, "messages": [{"role": "user", "content": "My printer will not print"}], **fields}


REFUSE, ANSWER = "refuse", "answer"
V1C, V1CH, V2 = "/v1/completions", "/v1/chat/completions", f"/v2/models/{CLS}/infer"

# (name, method, path, body (dict, bytes or None), expected)
CASES: list[tuple[str, str, str, object, str]] = [
    *[(f"completions {k}={v!r}", "POST", V1C, _completion(**{k: v}), REFUSE) for k, v in [
        ("temperature", -1), ("temperature", 0.7), ("temperature", "hot"), ("top_p", 0), ("top_p", 0.5),
        ("top_k", 40), ("n", 2), ("best_of", 3), ("max_tokens", 0), ("max_tokens", -5), ("max_tokens", "5"),
        ("max_tokens", 10 ** 6), ("stop", 5), ("stop", [""]), ("stop", ["a"] * 9), ("seed", "abc"),
        ("logprobs", -1), ("logprobs", 21), ("logprobs", True), ("echo", True), ("suffix", "x"),
        ("logit_bias", {"5": 10}), ("response_format", {"type": "json_object"}), ("stream", "yes"),
        ("stream_options", {"x": 1}), ("user", 5), ("metadata", "x"), ("ignore_eos", "yes"), ("cache_salt", ""),
        ("presence_penalty", 3), ("frequency_penalty", 0.5), ("repetition_penalty", 1.2), ("frobnicate", 1),
        ("model", None), ("model", "nope"), ("prompt", None), ("prompt", ""), ("prompt", []), ("prompt", [1]),
        ("prompt", "\ud800 hi"), ("prompt", "refund " * 3000)]],
    *[(f"chat {k}={v!r}", "POST", V1CH, _chat(**{k: v}), REFUSE) for k, v in [
        ("logprobs", "yes"), ("top_logprobs", 3), ("top_logprobs", 21), ("tools", [{"type": "function"}]),
        ("tool_choice", "auto"), ("functions", [{}]), ("max_completion_tokens", 0), ("model", None),
        ("messages", None), ("messages", []), ("messages", [{"role": "system", "content": "x"}]),
        ("messages", [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]),
        ("messages", [{"role": "user", "content": 5}])]],
    ("chat stream with logprobs", "POST", V1CH, _chat(stream=True, logprobs=True), REFUSE),
    ("classification stream", "POST", V1C, _completion(stream=True), REFUSE),
    *[(f"v2 {name}", "POST", path, body, REFUSE) for name, path, body in [
        ("no inputs", V2, {}), ("empty inputs", V2, {"inputs": []}), ("inputs int", V2, {"inputs": [5]}),
        ("unknown parameter", V2, {"inputs": ["hi"], "parameters": {"temperature": 1}}),
        ("parameters list", V2, {"inputs": ["hi"], "parameters": []}),
        ("max_tokens string", V2, {"inputs": ["hi"], "parameters": {"max_tokens": "5"}}),
        ("unknown task", "/v2/models/nope/infer", {"inputs": ["hi"]})]],
    *[(f"body {name}", "POST", path, body, REFUSE) for name, path, body in [
        ("not JSON", V1C, b"{not json"), ("JSON array", V1C, b"[1, 2]"), ("JSON string", V1C, b'"hi"'),
        ("empty", V1C, b""), ("not JSON (v2)", V2, b"{x"), ("empty (chat)", V1CH, b"")]],
    *[(f"route {m} {p}", m, p, b, REFUSE) for m, p, b in [
        ("GET", "/", None), ("GET", "/v1", None), ("POST", "/v1/embeddings", {"input": "x"}),
        ("GET", f"/v2/models/{CLS}/ready", None), ("PUT", "/v1/models", b"{}"), ("GET", V2, None),
        ("DELETE", V1C, None), ("POST", "/v1/models", b"{}"), ("GET", "/v2/models/a/b/infer", None)]],
    ("more prompts than the queue", "POST", V1C, _completion(prompt=["hi"] * 65), REFUSE),
    # what must be answered, at the values a greedy server takes
    *[(f"answer {name}", "POST", path, body, ANSWER) for name, path, body in [
        ("completions", V1C, _completion()), ("greedy values", V1C, _completion(temperature=0, top_p=1, seed=7)),
        ("logprobs 0", V1C, _completion(logprobs=0)), ("stop", V1C, {**_completion(model=GEN), "stop": "x"}),
        ("max_tokens 1", V1C, {**_completion(model=GEN), "max_tokens": 1}), ("chat", V1CH, _chat()),
        ("chat logprobs", V1CH, _chat(logprobs=True, top_logprobs=2)), ("v2", V2, {"inputs": ["hi", "refund"]}),
        ("64 prompts", V1C, _completion(prompt=["hi"] * 64))]],
    *[(f"answer GET {p}", "GET", p, None, ANSWER) for p in ("/v1/models", "/health", "/v2/health/live")],
]


def call(base: str, method: str, path: str, body, key: str | None = None, timeout: float = 120):
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode(errors="replace")


def classify(path: str, expected: str, status: int, content_type: str, text: str) -> str:
    """``correct``, ``refused``, ``silent 200`` or ``raw`` (see the module's docstring)."""
    try:
        body = json.loads(text)
    except ValueError:
        return "raw"
    if not content_type.startswith("application/json"):
        return "raw"
    if status == 200:
        ok = isinstance(body, dict) and ("error" not in body)
        return ("correct" if ok else "raw") if expected == ANSWER else "silent 200"
    if not 400 <= status < 500 or expected == ANSWER:
        return "raw"
    error = body.get("error") if isinstance(body, dict) else None
    if path.startswith("/v2/"):
        return "refused" if isinstance(error, str) and error else "raw"
    return "refused" if isinstance(error, dict) and error.get("message") and error.get("code") == status else "raw"


def huge_while_others(base: str, key: str | None, mb: float = 7.0) -> list[tuple[str, str, str]]:
    """A 7 MB prompt to one task while another task is called: the huge one refused, the other answered."""
    huge = json.dumps(_completion(model=GEN, prompt="refund " * int(mb * 1e6 / 7))).encode()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        big = [pool.submit(call, base, "POST", V1C, huge, key) for _ in range(3)]
        small = [pool.submit(call, base, "POST", V1C, _completion(prompt=f"my parcel is late {i}"), key)
                 for i in range(3)]
        out = [("huge prompt while another task is called", V1C, REFUSE, *f.result()) for f in big]
        out += [("another task during huge prompts", V1C, ANSWER, *f.result()) for f in small]
    return [(name, path, classify(path, exp, s, ct, t)) for name, path, exp, s, ct, t in out]


def probe(base: str, key: str | None = None) -> list[tuple[str, str, str]]:
    """(case, path, class) for every case, the huge-body ones last."""
    out = []
    for name, method, path, body, expected in CASES:
        status, content_type, text = call(base, method, path, body, key)
        out.append((name, path, classify(path, expected, status, content_type, text)))
    return out + huge_while_others(base, key)


def tally(results: list[tuple[str, str, str]]) -> dict[str, int]:
    counts = {"correct": 0, "refused": 0, "silent 200": 0, "raw": 0}
    for _, _, cls in results:
        counts[cls] += 1
    return counts


def _serve_demo() -> tuple[object, str]:
    from bench_serving import make_artifacts, start_server  # the generation task routing_note
    from bench_serving_bodies import add_classification_task

    work = Path(tempfile.mkdtemp(prefix="probe-serving-"))
    make_artifacts(work)
    add_classification_task(work)
    return start_server(work)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="", help="a running server (default: serve the demo's tiny-s here)")
    ap.add_argument("--api-key", default=os.environ.get("RIGHTSIZER_PROBE_KEY"))
    args = ap.parse_args()
    proc = None
    base = args.base
    if not base:
        proc, base = _serve_demo()
    try:
        results = probe(base, args.api_key)
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=120)
    bad = [r for r in results if r[2] in ("silent 200", "raw")]
    for name, path, cls in bad:
        print(f"{cls:10} {path}  {name}")
    counts = tally(results)
    print(f"\n{len(results)} cases against {base}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print("\nrerun: .venv/bin/python benchmarks/probe_serving.py" + (f" --base {args.base}" if args.base else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
