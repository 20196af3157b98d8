"""Do the demo's decisions hold on another machine? Rebuild the demo models under perturbations
that stand in for other CPUs and rerun the ladder.

Each run builds the demo candidates from scratch in a fresh cache (``RIGHTSIZER_CACHE``) with
one perturbation, then runs the select step's ladder on every task of the demo application,
every rung tried scored on the full eval split (no screening), and scores the one-big-model
baseline (the largest candidate, zero-shot). The perturbations (the standard matrix):

* bootstrap seeds 0..4 (``RIGHTSIZER_DEMO_SEED``), torch's best kernels for this CPU, 2 threads;
* seed 0 with ``ATEN_CPU_CAPABILITY=default`` (torch's portable kernels: another instruction
  set's rounding), 2 threads; seed 0 with 1 thread (another reduction order), best and default.

Prints per run and task the decision (model, rung; for a task with ``ladder.cascade``, the
cascade served) and every decisive score with its margin from the bar (positive: passes):
each rung the ladder tried, the baseline, and for a cascade its quality on the confirm half
and its deferral rate below the break-even one (where it would cost what the big model
does). Then per task: whether every run made the same decision, and the smallest margin. Target: the same decisions
in every run, and every decisive score at least 0.05 from its bar. Exit status 1 when missed.

Rerun (about 50 min on 2 cores): .venv/bin/python benchmarks/bench_demo_robustness.py
Quicker look: --seeds 0,1 --no-capability-runs (2 runs); a part of the matrix: --only 1,2,6
Tables for docs/demo-robustness.md: --json FILE, then --markdown-from FILE (no rerun)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RERUN = ".venv/bin/python benchmarks/bench_demo_robustness.py"
MARGIN = 0.05  # every decisive score at least this far from its bar


def _worker(app_path: str, threads: int) -> dict:
    """One run, in this process: build the demo models, run the ladder on every task."""
    import torch

    torch.set_num_threads(threads)
    from rightsizer.demo.bootstrap import bootstrap
    from rightsizer.evaluate import evaluate_quality
    from rightsizer.inference import load_model
    from rightsizer.select import check_task_data, select_model
    from rightsizer.taskspec import Screening, load_app

    t0 = time.perf_counter()
    bootstrap(verbose=False)
    out = {"bootstrap_seconds": round(time.perf_counter() - t0, 1),
           "torch_capability": torch.backends.cpu.get_cpu_capability(), "tasks": {}}
    for spec in load_app(app_path).tasks:
        with tempfile.TemporaryDirectory() as work:
            sel = select_model(spec, work, progress=False, screening=Screening(enabled=False))
            decision = [sel.chosen.candidate, sel.chosen.rung] if sel.chosen else None
            cascade = []
            if spec.ladder.cascade and decision:  # priced from the chosen model's folder, under work
                decision, cascade = _cascade_figures(spec, sel, decision)
        base_ref = sel.order[-1][0]
        model, tok = load_model(base_ref, trust_remote_code=spec.trust_remote_code)
        q = evaluate_quality(model, tok, spec, check_task_data(spec)[1])
        base_value = q.ci_low if spec.decision_rule == "ci_lower" else q.score
        scores = [{"what": f"{r.candidate} {r.rung}", "value": round(r.value, 4),
                   "margin": round(r.value - spec.threshold, 4)} for r in sel.tried]
        scores.append({"what": f"baseline {base_ref} zero_shot", "value": round(base_value, 4),
                       "margin": round(base_value - spec.threshold, 4)})
        scores += cascade
        out["tasks"][spec.name] = {"threshold": spec.threshold, "metric": spec.metric, "decision": decision,
                                   "baseline_passes": base_value >= spec.threshold, "scores": scores}
    return out


def _cascade_figures(spec, sel, decision: list) -> tuple[list, list[dict]]:
    """A cascade task's decision (the chosen model, then the cascade served, if any) and its
    decisive figures: the kept pair's quality on the confirm half against the bar, and its
    deferral rate against the break-even one (where the pair costs what the big model
    alone does: priced as the sizing step prices it, both in bf16)."""
    from rightsizer.size_gpu import price_cascade, size_for_task

    big_cost = size_for_task(spec, sel.model_dir, "bf16").chosen.cost_per_1m_output_tokens
    priced = price_cascade(spec, sel, big_cost)
    kept = priced.get("kept")
    if kept is None:
        return decision + ["no cascade"], []
    pair = priced["pairs"][kept]
    small_cost = priced["small_side"]["cost_per_1m_tokens"]
    break_even = 1 - small_cost / big_cost
    chosen = f"cascade {pair['small']} -> {pair['big']}" if priced["chosen"] else "cascade not chosen"
    return decision + [chosen], [
        {"what": f"cascade {pair['small']} confirm-half quality", "value": round(pair["quality"], 4),
         "margin": round(pair["quality"] - spec.threshold, 4)},
        {"what": f"cascade deferral (break-even {break_even:.3f})", "value": round(pair["deferral_rate"], 4),
         "margin": round(break_even - pair["deferral_rate"], 4)}]


def runs_matrix(seeds: list[int], capability_runs: bool) -> list[dict]:
    """The perturbations: every seed on the best kernels and 2 threads, then seed 0 on the
    portable kernels and on 1 thread."""
    runs = [{"seed": s, "capability": "best", "threads": 2} for s in seeds]
    if capability_runs:
        runs += [{"seed": seeds[0], "capability": "default", "threads": 2},
                 {"seed": seeds[0], "capability": "best", "threads": 1},
                 {"seed": seeds[0], "capability": "default", "threads": 1}]
    return runs


def run_one(run: dict, app: str, cache: Path) -> dict:
    env = {**os.environ, "RIGHTSIZER_CACHE": str(cache), "RIGHTSIZER_DEMO_SEED": str(run["seed"]),
           "OMP_NUM_THREADS": str(run["threads"]), "TQDM_DISABLE": "1"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if run["capability"] != "best":
        env["ATEN_CPU_CAPABILITY"] = run["capability"]
    proc = subprocess.run([sys.executable, __file__, "--worker", "--app", app,
                           "--threads", str(run["threads"])],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"run {run} failed:\n{proc.stderr[-3000:]}")
    return {**run, **json.loads(proc.stdout.strip().splitlines()[-1])}


def summarize(results: list[dict]) -> tuple[list[dict], bool]:
    """Per task: the decisions seen, the smallest margin (and where), whether the target holds."""
    rows, ok = [], True
    for task in results[0]["tasks"]:
        decisions = {json.dumps(r["tasks"][task]["decision"]) for r in results}
        baseline = {r["tasks"][task]["baseline_passes"] for r in results}
        worst = min(((abs(_margin(s, r["tasks"][task])), s["what"], r)
                     for r in results for s in r["tasks"][task]["scores"]), key=lambda w: w[0])
        same = len(decisions) == 1 and len(baseline) == 1
        ok &= same and worst[0] >= MARGIN
        rows.append({"task": task, "decisions": sorted(decisions), "same": same,
                     "baseline_passes": sorted(baseline),
                     "min_margin": round(worst[0], 4),
                     "where": f"{worst[1]} (seed {worst[2]['seed']}, {worst[2]['capability']}, "
                              f"{worst[2]['threads']} threads)"})
    return rows, ok


def _margin(score: dict, task: dict) -> float:
    """A score's distance from its bar, positive where it passes (older --json files: from the task's bar)."""
    return score.get("margin", score["value"] - task["threshold"])


def _short(text: str) -> str:
    return text.replace("demo:", "").replace(" zero_shot", " zs")


def markdown(results: list[dict], rows: list[dict], ok: bool) -> str:
    """The runs and the summary as markdown tables (docs/demo-robustness.md)."""
    tasks = list(results[0]["tasks"])
    out = ["| run | bootstrap s | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for r in results:
        cells = []
        for task in tasks:
            t = r["tasks"][task]
            dec = " ".join(t["decision"]) if t["decision"] else "NONE"
            scores = "; ".join(f"{_short(s['what'])} {_margin(s, t):+.3f}" for s in t["scores"])
            cells.append(f"**{_short(dec)}**: {scores}")
        threads = f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}"
        out.append(f"| seed {r['seed']}, {r['capability']} ({r['torch_capability']}), {threads} "
                   f"| {r['bootstrap_seconds']} | " + " | ".join(cells) + " |")
    out += ["", "| task | decision in every run | baseline (largest candidate, zero-shot) | same "
            "| smallest margin | where |", "|---|---|---|---|---|---|"]
    for row in rows:
        dec = " / ".join(" ".join(json.loads(d) or ["NONE"]) for d in row["decisions"])
        base = " / ".join("passes" if b else "misses" for b in row["baseline_passes"])
        out.append(f"| {row['task']} | {_short(dec)} | {base} | {'yes' if row['same'] else 'NO'} "
                   f"| {row['min_margin']:.3f} | {_short(row['where'])} |")
    out += ["", f"Target (the same decisions in every run, every margin >= {MARGIN}): "
                f"**{'met' if ok else 'missed'}** over {len(results)} runs."]
    return "\n".join(out) + "\n"


def _label(r: dict) -> str:
    return f"seed {r['seed']} {r['capability']} ({r['torch_capability']}) {r['threads']}t"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", default=str(ROOT / "tasks" / "demo_app.yaml"))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--no-capability-runs", action="store_true",
                    help="only the seeds (no portable-kernel or one-thread runs)")
    ap.add_argument("--only", default="", metavar="N,N",
                    help="only these runs of the matrix, numbered from 1 as printed (e.g. 1,6: seed 0 on the "
                         "best and the portable kernels)")
    ap.add_argument("--json", default="", help="also write every run's figures to this file")
    ap.add_argument("--markdown-from", default="", metavar="JSON",
                    help="print the markdown tables of a --json file and exit (no runs)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.app, args.threads)))
        return 0
    if args.markdown_from:
        saved = json.loads(Path(args.markdown_from).read_text())
        print(markdown(saved["runs"], saved["summary"], saved["met"]), end="")
        return 0

    seeds = [int(s) for s in args.seeds.split(",") if s]
    runs = runs_matrix(seeds, not args.no_capability_runs)
    if args.only:
        picked = [int(n) for n in args.only.split(",") if n]
        if not all(1 <= n <= len(runs) for n in picked):
            raise SystemExit(f"--only {args.only}: the matrix has runs 1-{len(runs)}")
        runs = [runs[n - 1] for n in picked]
    results = []
    with tempfile.TemporaryDirectory(prefix="rightsizer-robust-") as tmp:
        for i, run in enumerate(runs):
            t0 = time.perf_counter()
            results.append(run_one(run, args.app, Path(tmp) / f"cache-{i}"))
            r = results[-1]
            print(f"\n== run {i + 1}/{len(runs)}: {_label(r)}: bootstrap {r['bootstrap_seconds']} s, "
                  f"{time.perf_counter() - t0:.0f} s in all", flush=True)
            for task, t in r["tasks"].items():
                dec = " ".join(t["decision"]) if t["decision"] else "NONE"
                scores = ", ".join(f"{s['what']} {s['value']:.3f} ({_margin(s, t):+.3f})"
                                   for s in t["scores"])
                print(f"  {task:<17} {dec:<22} {t['metric']} >= {t['threshold']}: {scores}", flush=True)
    rows, ok = summarize(results)
    print(f"\n{'task':<17} {'decision':<26} {'baseline':<9} {'same':<5} {'min margin':>10}  where")
    for row in rows:
        dec = " | ".join(" ".join(json.loads(d) or ["NONE"]) for d in row["decisions"])
        base = "|".join("passes" if b else "misses" for b in row["baseline_passes"])
        print(f"{row['task']:<17} {dec:<26} {base:<9} {str(row['same']):<5} {row['min_margin']:>10.3f}  "
              f"{row['where']}")
    print(f"\ntarget (same decisions, every margin >= {MARGIN}): {'MET' if ok else 'MISSED'}"
          f" over {len(results)} runs; rerun: {RERUN} --seeds {args.seeds}"
          + (" --no-capability-runs" if args.no_capability_runs else "") + (f" --only {args.only}" if args.only else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "summary": rows, "met": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
