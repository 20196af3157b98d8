"""Serving under load, measured by guidellm: the real HTTP server (scripts/serve.sh) under vLLM's
maintained load generator instead of bench_serving.py's own client.

The same artifacts as bench_serving.py (generation task ``routing_note`` on demo tiny-s, built
by its ``make_artifacts``), the same server start; then ``.venv-guidellm/bin/guidellm run``
(``bash scripts/setup_guidellm.sh`` makes that environment) against ``/v1/completions`` with the
OpenAI HTTP backend, streaming, ``concurrent`` profile at each level (a closed loop of C
streams), synthetic prompts of the task's prompt tokens and output tokens of its
``max_new_tokens``, the tokenizer read from the local bundle folder (no model hub:
HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1). Prints requests/s, output tokens/s, TTFT p50/p95 and
ITL/TPOT p50/p95 per level, and the guidellm command to rerun by hand.

    .venv/bin/python benchmarks/bench_serving_guidellm.py [--requests 128] [--levels 1,8,32,64]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import ROOT, TASK, make_artifacts, start_server  # noqa: E402

GUIDELLM = ROOT / ".venv-guidellm" / "bin" / "guidellm"


def guidellm_cmd(base: str, bundle: Path, prompt_tokens: int, output_tokens: int, levels: list[int],
                 requests: int, out_json: Path) -> list[str]:
    profile = {"kind": "concurrent", "streams": levels}
    return [str(GUIDELLM), "run",
            "--backend", f"kind=openai_http,target={base},model={TASK},request_format=/v1/completions,"
                         f"stream=true,timeout=120,validate_backend=false",  # no /health here; /v1/models was checked
            "--profile", json.dumps(profile, separators=(",", ":")),
            "--constraint", f"kind=max_requests,count={requests}",
            "--data", f"kind=synthetic_text,prompt_tokens={prompt_tokens},output_tokens={output_tokens}",
            "--tokenizer", f"kind=huggingface_auto,model={bundle}",
            "--seed", "kind=static,value=42",
            "--output", f"kind=json,path={out_json}",
            "--output", "kind=console",
            "--disable-progress"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=128, help="requests per concurrency level")
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--json", default="", help="copy guidellm's report here too")
    args = ap.parse_args()
    if not GUIDELLM.exists():
        raise SystemExit(f"{GUIDELLM} missing: run bash scripts/setup_guidellm.sh")
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-serving-guidellm-"))
    spec = make_artifacts(work)
    from rightsizer.layout import RunLayout

    bundle = RunLayout(work).bundle_dir(TASK)
    out_json = work / "guidellm.json"
    proc, base = start_server(work)
    cmd = guidellm_cmd(base, bundle, spec.workload.prompt_tokens, spec.max_new_tokens, levels,
                       args.requests, out_json)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    try:
        rc = subprocess.run(cmd, env=env, cwd=work).returncode
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    if rc != 0 or not out_json.exists():
        raise SystemExit(f"guidellm failed ({rc}); server log {work / 'serve.log'}")
    report = json.loads(out_json.read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(report))
    print(f"\nguidellm {_version()} against {base}/v1/completions, task {TASK} (demo tiny-s), "
          f"{spec.workload.prompt_tokens} prompt / {spec.max_new_tokens} output tokens (synthetic), "
          f"{args.requests} requests per level, streamed")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (shared)")
    print("concurrency | requests | req_per_s | out_tok_per_s | ttft_p50_ms | ttft_p95_ms | "
          "itl_p50_ms | itl_p95_ms | tpot_p50_ms | tpot_p95_ms")
    for r in summarize(report):
        print(f"{r['concurrency']} | {r['requests']} | {r['req_per_s']:.1f} | {r['out_tok_per_s']:.0f} | "
              f"{r['ttft_p50_ms']:.1f} | {r['ttft_p95_ms']:.1f} | {r['itl_p50_ms']:.2f} | {r['itl_p95_ms']:.2f} | "
              f"{r['tpot_p50_ms']:.2f} | {r['tpot_p95_ms']:.2f}")
    shown = [shlex.quote(c) for c in cmd]
    print("\nrerun (the server on", base, "with artifacts", work, "):\n  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "
          + " ".join(shown))
    print(f"or all of it: .venv/bin/python benchmarks/bench_serving_guidellm.py --requests {args.requests} "
          f"--levels {args.levels}")
    return 0


def _version() -> str:
    out = subprocess.run([str(GUIDELLM), "--version"], capture_output=True, text=True).stdout
    return out.strip().split()[-1] if out.strip() else "?"


def summarize(report: dict) -> list[dict]:
    """One row per benchmark (concurrency level) of guidellm's JSON report, successful requests.
    guidellm's ITL is (last token - first token) / (output tokens - 1), what bench_serving.py
    calls TPOT; its TPOT is (last token - request start) / output tokens, TTFT included."""
    rows = []
    for b in report["benchmarks"]:
        m = b["metrics"]

        def ok(name, m=m):
            return m[name]["successful"]

        rows.append({"concurrency": b["config"]["strategy"]["streams"],
                     "requests": m["request_totals"]["successful"],
                     "req_per_s": ok("requests_per_second")["mean"],
                     "out_tok_per_s": ok("output_tokens_per_second")["mean"],
                     **{f"{short}_{q}_ms": ok(name)["percentiles"][q]
                        for short, name in (("ttft", "time_to_first_token_ms"), ("itl", "inter_token_latency_ms"),
                                            ("tpot", "time_per_output_token_ms"))
                        for q in ("p50", "p95")}})
    return rows


if __name__ == "__main__":
    sys.exit(main())
