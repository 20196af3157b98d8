"""The ladder's confidence cascade on the demo's cascade task: the figures behind
docs/selection.md's cascade section.

Pair: tiny-s (routes English tickets, never saw Spanish) and tiny-l (pre-trained on Spanish
tickets too) on chat_routing's eval split (a third of its messages in Spanish), both
zero-shot, with ``ladder.cascade`` as the task spec has it. Prints the calibration half's
curve (deferral rate and quality at each candidate threshold, thinned), the threshold chosen,
the confirm half's quality with its CI, the deferral rate and each model's quality on its
share, its price against the big model alone (both sized in bf16 on the default price list),
then the served check: the confirm half through the cascade engine (same deferral rate
expected).

Rerun: .venv/bin/python benchmarks/bench_cascade.py [--examples N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RERUN = ".venv/bin/python benchmarks/bench_cascade.py"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=None,
                    help="eval examples (halved: calibration, confirm; default: the whole split)")
    args = ap.parse_args(argv)

    from rightsizer.cascade import split_halves
    from rightsizer.demo.bootstrap import bootstrap
    from rightsizer.evaluate import load_rows
    from rightsizer.quantize import quantize_for_task
    from rightsizer.select import select_model
    from rightsizer.serving.cascade import engine_for
    from rightsizer.size_gpu import price_cascade, size_for_task
    from rightsizer.serving.contract import EngineConfig
    from rightsizer.taskspec import load_task

    bootstrap(verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_task(ROOT / "tasks" / "chat_routing.yaml")
        spec = dataclasses.replace(spec, candidates=["demo:tiny-s", "demo:tiny-l"], precisions=["int8"],
                                   max_eval_examples=args.examples or spec.max_eval_examples,
                                   ladder=dataclasses.replace(spec.ladder, rungs=["zero_shot"]))
        sel = select_model(spec, Path(tmp) / "ladder", progress=False)
        pair = sel.cascade["pairs"][0]
        print(f"{spec.name}, bar {spec.metric} >= {spec.threshold}, quality tolerance {spec.quality_tolerance}; "
              f"small {pair['small']}, big {pair['big']}; {pair['n_calibration']} calibration + "
              f"{pair['n_confirm']} confirm examples")
        print("\ncalibration half: threshold  deferral  quality")
        curve = pair["curve"]
        step = max(1, len(curve) // 12)
        for p in curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else []):
            print(f"  {p['threshold']:>20.6f}  {p['deferral_rate']:>8.1%}  {p['quality']:.3f}")
        print(f"\nchosen threshold {pair['threshold']}: calibration quality {pair['calibration_quality']}, "
              f"deferral {pair['calibration_deferral_rate']}")
        print(f"confirm half: quality {pair['quality']:.3f} (95% CI {pair['ci_low']:.3f}-{pair['ci_high']:.3f}), "
              f"deferral {pair['deferral_rate']:.1%}, small on its share {pair['small_quality_kept']}, "
              f"big on its share {pair['big_quality_deferred']}, meets the bar: {pair['meets_bar']}")
        big_cost = size_for_task(spec, sel.model_dir, "bf16").chosen.cost_per_1m_output_tokens
        priced_pair = price_cascade(spec, sel, big_cost)
        print(priced_pair["line"])
        if pair["meets_bar"]:
            out = quantize_for_task(spec, sel, sel.model_dir, Path(tmp) / "bundle", progress=False)
            rows = load_rows(spec, spec.eval_split, spec.max_eval_examples)
            _, confirm = split_halves(len(rows))
            engine = engine_for(out.bundle_dir, config=EngineConfig(cascade=True))
            try:
                answers = engine.answer([rows[i][spec.input_field] for i in confirm])
            finally:
                engine.stop()
            served = sum(a.response["deferred"] for a in answers) / len(answers)
            print(f"served (cascade engine, confirm half): deferral {served:.1%} "
                  f"({'same as evaluated' if served == pair['deferral_rate'] else 'DIFFERS from evaluated'})")
    print(f"\nrerun: {RERUN}" + (f" --examples {args.examples}" if args.examples else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
