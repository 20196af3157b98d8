"""The robustness benchmark's verdict (benchmarks/bench_demo_robustness.py): what counts as the
demo's decisions holding. The runs themselves take most of an hour; these check the judging."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_demo_robustness",
                                               ROOT / "benchmarks" / "bench_demo_robustness.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _run(seed: int, lora: float, baseline: float, decision=("demo:tiny-s", "lora")) -> dict:
    return {"seed": seed, "capability": "best", "torch_capability": "AVX2", "threads": 2,
            "bootstrap_seconds": 1.0,
            "tasks": {"review_sentiment": {
                "threshold": 0.85, "metric": "accuracy", "decision": list(decision) if decision else None,
                "baseline_passes": baseline >= 0.85,
                "scores": [{"what": "demo:tiny-s zero_shot", "value": 0.70},
                           {"what": "demo:tiny-s lora", "value": lora},
                           {"what": "baseline demo:tiny-l zero_shot", "value": baseline}]}}}


def test_the_same_decisions_with_margin_meet_the_target():
    runs = [_run(0, 0.95, 0.68), _run(1, 0.94, 0.70)]
    rows, ok = bench.summarize(runs)
    assert ok and rows[0]["same"] and rows[0]["min_margin"] == pytest.approx(0.09)
    assert "seed 1" in rows[0]["where"] and "lora" in rows[0]["where"]
    assert "**met** over 2 runs" in bench.markdown(runs, rows, ok)


@pytest.mark.parametrize("second, why", [
    (_run(1, 0.89, 0.68), "a rung 0.04 above its bar"),
    (_run(1, 0.95, 0.81), "the baseline 0.04 below its bar"),
    (_run(1, 0.95, 0.95), "the baseline passing in one run only"),
    (_run(1, 0.80, 0.68, decision=None), "no decision in one run"),
    (_run(1, 0.95, 0.68, decision=("demo:tiny-m", "zero_shot")), "another decision"),
])
def test_a_knife_edge_or_a_changed_decision_misses_the_target(second, why):
    rows, ok = bench.summarize([_run(0, 0.95, 0.68), second])
    assert not ok, why
    assert "**missed**" in bench.markdown([_run(0, 0.95, 0.68), second], rows, ok)


def test_the_standard_matrix_covers_seeds_kernels_and_threads():
    runs = bench.runs_matrix([0, 1, 2, 3, 4], capability_runs=True)
    assert len(runs) == 8 and {r["seed"] for r in runs} == {0, 1, 2, 3, 4}
    assert {(r["capability"], r["threads"]) for r in runs if r["seed"] == 0} == {
        ("best", 2), ("default", 2), ("best", 1), ("default", 1)}


def test_markdown_from_a_saved_run_needs_no_rerun(tmp_path, capsys):
    import json

    results = [_run(0, 0.95, 0.68)]
    rows, ok = bench.summarize(results)
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps({"runs": results, "summary": rows, "met": ok}))
    assert bench.main(["--markdown-from", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "| seed 0, best (AVX2), 2 threads | 1.0 | **tiny-s lora**" in out
    assert "| review_sentiment | tiny-s lora | misses | yes | 0.100 |" in out
