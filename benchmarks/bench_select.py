"""Evaluations spent by the screening ladder vs a full evaluation of every candidate x rung.

On the demo application (tasks/demo_app.yaml, the tiny demo candidates, CPU), each task is
run twice:

* screening ladder: the ladder as shipped (stop at the first candidate and rung that pass,
  each rung scored in stages and stopped when it can no longer pass);
* full: every candidate at every rung, each on the full eval split (no screening, no early
  stop); the decision is still the first pass, and the two must agree.

Prints examples scored and seconds spent (evaluation + LoRA training) per task and in total,
and the ratio screening/full (aim: <= 0.5 in examples).

Rerun: .venv/bin/python benchmarks/bench_select.py [--tasks review_sentiment,ticket_routing]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RERUN = ".venv/bin/python benchmarks/bench_select.py"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", default=str(ROOT / "tasks" / "demo_app.yaml"))
    ap.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    args = ap.parse_args(argv)

    from rightsizer.demo.bootstrap import bootstrap
    from rightsizer.select import select_model
    from rightsizer.taskspec import Screening, load_app

    bootstrap(verbose=False)
    app = load_app(args.app)
    wanted = [t for t in args.tasks.split(",") if t]
    rows = []
    for spec in app.tasks:
        if wanted and spec.name not in wanted:
            continue
        out = {}
        for mode in ("screening", "full"):
            with tempfile.TemporaryDirectory() as work:
                t0 = time.perf_counter()
                if mode == "screening":
                    sel = select_model(spec, work, progress=False)
                else:
                    sel = select_model(spec, work, progress=False,
                                       screening=Screening(enabled=False), exhaustive=True)
                out[mode] = {"examples": sel.eval_examples, "seconds": time.perf_counter() - t0,
                             "rungs": len(sel.tried),
                             "decision": (sel.chosen.candidate, sel.chosen.rung) if sel.chosen else None,
                             "sequence": [(r.candidate, r.rung, r.n) for r in sel.tried]}
        if out["screening"]["decision"] != out["full"]["decision"]:
            print(f"DECISIONS DIFFER for {spec.name}: {out}", file=sys.stderr)
            return 1
        rows.append({"task": spec.name, **{f"{m}_{k}": out[m][k] for m in out
                                          for k in ("examples", "seconds", "rungs")},
                     "decision": out["screening"]["decision"],
                     "screening_sequence": out["screening"]["sequence"]})
    tot = {k: sum(r[k] for r in rows) for k in ("screening_examples", "full_examples",
                                                "screening_seconds", "full_seconds")}
    print(f"{'task':<18} {'decision':<28} {'screen ex':>9} {'full ex':>8} {'ratio':>6} "
          f"{'screen s':>9} {'full s':>8} {'ratio':>6}")
    for r in rows + [{"task": "TOTAL", "decision": "", **tot}]:
        dec = f"{r['decision'][0]} {r['decision'][1]}" if r["decision"] else ""
        print(f"{r['task']:<18} {dec:<28} {r['screening_examples']:>9} {r['full_examples']:>8} "
              f"{r['screening_examples'] / r['full_examples']:>6.3f} "
              f"{r['screening_seconds']:>9.1f} {r['full_seconds']:>8.1f} "
              f"{r['screening_seconds'] / r['full_seconds']:>6.3f}")
    for r in rows:
        print(f"{r['task']} screening ladder (candidate, rung, examples): {r['screening_sequence']}")
    ratio = tot["screening_examples"] / tot["full_examples"]
    print(f"examples ratio {ratio:.3f} (aim <= 0.5): {'OK' if ratio <= 0.5 else 'ABOVE AIM'}")
    print(f"rerun: {RERUN}")
    if args.json:
        Path(args.json).write_text(json.dumps({"tasks": rows, "total": tot}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
