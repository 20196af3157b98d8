"""The selection ladder on the tiny demo candidates: rung sequence and decision per case.

What the demo guarantees on any CPU (benchmarks/bench_demo_robustness.py, docs/demo-robustness.md):
ticket routing is trained into every candidate (tiny-s passes zero-shot); negated reviews are
not: tiny-s fails them zero-shot and few-shot and passes after a LoRA fine-tune, each by 0.05
or more. Tests pin those decisions, not one machine's scores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError
from rightsizer.select import Selection, select_model
from rightsizer.taskspec import SLO, Ladder, Screening


def _spec(spec, **changes):
    return dataclasses.replace(spec, **{"max_eval_examples": 80, **changes})


def _sequence(sel):
    return [(r.candidate, r.rung, r.passed) for r in sel.tried]


def test_smallest_passes_zero_shot(demo_models, routing_spec, tmp_path):
    sel = select_model(_spec(routing_spec), tmp_path, progress=False)
    assert _sequence(sel) == [("demo:tiny-s", "zero_shot", True)]
    assert sel.chosen.candidate == "demo:tiny-s" and sel.rejections() == []
    assert (tmp_path / "chosen" / "model.safetensors").is_file()
    # a pass is decided on the full eval split, reached in stages
    c = sel.chosen
    assert (c.n, c.n_total, c.stages, c.screened_out) == (80, 80, [20, 40, 80], False)
    spent = sel.spent()
    assert spent["examples"] == 80 and spent["per_rung"]["zero_shot"]["examples"] == 80
    assert spent["full_examples"] == 3 * 3 * 80 and spent["seconds"] > 0


def test_needs_the_lora_rung(demo_models, sentiment_spec, tmp_path):
    spec = _spec(sentiment_spec, candidates=["demo:tiny-s"])
    sel = select_model(spec, tmp_path, progress=False)
    assert _sequence(sel) == [("demo:tiny-s", "zero_shot", False),
                              ("demo:tiny-s", "few_shot", False),
                              ("demo:tiny-s", "lora", True)]
    assert len(sel.rejections()) == 2 and "zero_shot" in sel.rejections()[0]
    # the hopeless rungs were stopped on part of the split; LoRA's cost includes training
    zs, fs, lora = sel.tried
    assert zs.screened_out and zs.n < 80 and "screened out after" in zs.reason
    assert lora.n == 80 and lora.train_seconds > 0 and lora.seconds >= lora.train_seconds
    assert sel.eval_examples == zs.n + fs.n + 80 < 3 * 80
    # the adapter is merged into the saved model: it loads without peft and keeps quality
    from rightsizer.evaluate import evaluate_quality, load_rows
    from rightsizer.inference import load_model

    model, tok = load_model(sel.model_dir)
    q = evaluate_quality(model, tok, spec, load_rows(spec, "eval", 80))
    assert q.score == pytest.approx(sel.chosen.score)


def _untrained_candidate(demo_models, out):
    """A Llama smaller than tiny-s that was never trained, with the demo tokenizer: it knows
    no task, so it fails any bar by a wide margin on any machine."""
    from transformers import AutoTokenizer

    from tests.tiny_models import tiny_llama

    tok = AutoTokenizer.from_pretrained(demo_models / "tokenizer")
    model = tiny_llama(hidden=32, intermediate=64, layers=1, heads=2, kv_heads=1, vocab=len(tok))
    model.config.pad_token_id, model.config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return str(out)


def test_moves_up_a_size(demo_models, routing_spec, tmp_path):
    # Which demo model beats which on a task they all learned depends on the machine they were
    # trained on; an untrained model below tiny-s fails routing on any machine, and tiny-s,
    # trained on it, passes with a wide margin (benchmarks/bench_demo_robustness.py).
    small = _untrained_candidate(demo_models, tmp_path / "untrained")
    spec = _spec(routing_spec, candidates=["demo:tiny-s", small],
                 ladder=Ladder(rungs=["zero_shot"]), decision_rule="point")
    sel = select_model(spec, tmp_path / "ladder", progress=False)
    assert [r for r, _ in sel.order] == [small, "demo:tiny-s"]  # smallest first
    assert _sequence(sel) == [(small, "zero_shot", False), ("demo:tiny-s", "zero_shot", True)]
    assert small in sel.rejections()[0]
    assert sel.tried[0].value <= spec.threshold - 0.05 and sel.chosen.value >= spec.threshold + 0.05
    # screening reaches the decision a full evaluation of every rung reaches, for less
    full = select_model(spec, tmp_path / "full", progress=False,
                        screening=Screening(enabled=False), exhaustive=True)
    assert _sequence(full) == _sequence(sel)
    assert full.chosen.score == sel.chosen.score and full.eval_examples == 160
    assert sel.eval_examples < full.eval_examples


def test_nothing_passes_is_said_plainly(demo_models, sentiment_spec, tmp_path):
    spec = _spec(sentiment_spec, candidates=["demo:tiny-s"],
                 ladder=Ladder(rungs=["zero_shot", "few_shot"]))
    sel = select_model(spec, tmp_path, progress=False)
    assert not sel.passed and sel.chosen is None
    assert [r.rung for r in sel.tried] == ["zero_shot", "few_shot"]
    assert "NO candidate reaches accuracy >= 0.85" in sel.summary()
    assert "bigger candidate" in sel.summary()
    needs = sel.needs()
    best = max(sel.tried, key=lambda r: (not r.screened_out, r.value))
    assert needs[0].startswith(f"a lower bar: accuracy threshold {best.value:.3f}")
    assert "demo:tiny-s" in needs[0]
    assert any("lora rung (switched off" in n for n in needs)
    assert not (tmp_path / "chosen").exists()
    sel.save(tmp_path / "sel.json")
    assert Selection.load(tmp_path / "sel.json").to_dict() == sel.to_dict()


def test_ci_lower_rule_is_stricter(demo_models, sentiment_spec, tmp_path):
    # the decision is on the CI's lower end, below the point estimate, whatever the score
    spec = _spec(sentiment_spec, candidates=["demo:tiny-s"], threshold=0.65,
                 decision_rule="ci_lower", ladder=Ladder(rungs=["zero_shot"]))
    sel = select_model(spec, tmp_path, progress=False)
    r = sel.tried[0]
    assert r.value == r.ci_low < r.score
    assert r.passed == (r.ci_low >= 0.65)


def test_unknown_candidate_is_a_clear_error(sentiment_spec, tmp_path):
    spec = _spec(sentiment_spec, candidates=["./no/such/model"])
    with pytest.raises(ConfigError, match="no such local model folder"):
        select_model(spec, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="demo:huge is not a demo model"):
        select_model(_spec(sentiment_spec, candidates=["demo:huge"]), tmp_path, progress=False)


def test_slo_prefilter_drops_candidates_that_cannot_meet_it(demo_models, routing_spec, tmp_path):
    from rightsizer.models import load_config
    from rightsizer.sizing import SLO as SizingSLO
    from rightsizer.sizing import Workload, recommend

    # an SLO between the best TTFT the sizing engine gives tiny-s and the one of tiny-l
    best = {}
    for ref in ("demo:tiny-s", "demo:tiny-l"):
        rec = recommend(load_config(ref), Workload(64, 4, 16), SizingSLO(1e6, 1e6),
                        precisions=["bf16", "int8", "int4"])
        best[ref] = min(o.ttft_ms for o in rec.options if o.feasible)
    assert best["demo:tiny-s"] < best["demo:tiny-l"]
    ttft = (best["demo:tiny-s"] + best["demo:tiny-l"]) / 2
    spec = _spec(routing_spec, candidates=["demo:tiny-l", "demo:tiny-s"],
                 slo=SLO(ttft_ms=ttft, tpot_ms=30, throughput_tokens_per_s=500))
    sel = select_model(spec, tmp_path, progress=False)
    assert [d["candidate"] for d in sel.dropped] == ["demo:tiny-l"]
    assert "TTFT" in sel.dropped[0]["reason"]
    assert _sequence(sel) == [("demo:tiny-s", "zero_shot", True)]
    assert [r for r, _ in sel.order] == ["demo:tiny-s", "demo:tiny-l"]  # order keeps both
    assert sel.full_examples == 1 * 3 * 80
    # nothing can meet it: nothing is evaluated, and the summary says what would be needed
    spec = _spec(routing_spec, slo=SLO(ttft_ms=0.01, tpot_ms=30))
    sel = select_model(spec, tmp_path / "none", progress=False)
    assert sel.tried == [] and sel.chosen is None and len(sel.dropped) == 3
    assert "looser SLO" in sel.summary() and sel.eval_examples == 0
    assert len(sel.rejections()) == 3


def test_extraction_ladder(demo_models, routing_spec, tmp_path):
    spec = _spec(routing_spec, type="extraction", metric="exact_match", labels=[],
                 max_new_tokens=4, max_eval_examples=40, decision_rule="ci_lower")
    sel = select_model(spec, tmp_path, progress=False)
    assert _sequence(sel) == [("demo:tiny-s", "zero_shot", True)]
    assert sel.chosen.metrics["token_f1"] == 1.0 and sel.chosen.value == sel.chosen.ci_low


def test_bad_data_is_reported_before_any_model_loads(routing_spec, tmp_path):
    spec = _spec(routing_spec, ladder=Ladder(few_shot_k=1000))
    with pytest.raises(ConfigError, match="few_shot_k: 1000 is larger than the train split"):
        select_model(spec, tmp_path, progress=False)


def _made_up_selection():
    from rightsizer.select import RungResult

    def rr(c, p, rung, score, passed, screened=False):
        return RungResult(candidate=c, params=p, rung=rung, score=score, ci_low=score - 0.05,
                          ci_high=min(1.0, score + 0.05), value=score, threshold=0.8,
                          passed=passed, n=20 if screened else 80, seconds=1.0,
                          n_total=80, screened_out=screened, bound=0.7 if screened else None)
    tried = [rr("s", 100, "zero_shot", 0.5, False, True), rr("s", 100, "lora", 0.6, False, True),
             rr("m", 400, "zero_shot", 0.55, False, True), rr("m", 400, "lora", 0.9, True)]
    return Selection(task="t", metric="accuracy", threshold=0.8, decision_rule="point",
                     order=[("s", 100), ("m", 400), ("l", 900)], tried=tried, chosen=tried[-1],
                     dropped=[{"candidate": "l", "params": 900, "reason": "TTFT too high"}],
                     rungs=["zero_shot", "lora"],
                     latency={"s": {"ttft_p95_ms": 1.0, "tpot_p95_ms": 0.5, "peak_memory_bytes": 7},
                              "m": {"ttft_p95_ms": 2.0, "tpot_p95_ms": 0.9, "peak_memory_bytes": 9}})


def test_leaderboard_and_pareto_chart():
    from rightsizer.select_plots import leaderboard_rows, pareto_figure, pareto_points

    sel = _made_up_selection()
    rows = leaderboard_rows(sel)
    assert [(r["candidate"], r["rung"]) for r in rows] == [
        ("s", "zero_shot"), ("s", "lora"), ("m", "zero_shot"), ("m", "lora"), ("l", "slo_prefilter")]
    assert rows[3]["ci_low"] == 0.85 and rows[3]["measured_tpot_p95_ms"] == 0.9
    assert rows[0]["screened_out"] and rows[0]["eval_examples"] == 20
    assert rows[4]["reason"] == "TTFT too high"
    pts = pareto_points(sel)
    # best rung per candidate: s at lora (0.6), m at lora (0.9); both on the front
    assert [(p["candidate"], p["rung"], p["pareto"]) for p in pts] == [
        ("s", "lora", True), ("m", "lora", True)]
    fig = pareto_figure(sel)
    # the bar in both panels, and the baseline's size (the ladder never reached "l")
    assert sorted(s.y0 for s in fig.layout.shapes if s.y0 == s.y1) == [0.8, 0.8]
    assert [s.x0 for s in fig.layout.shapes if s.x0 == s.x1] == [900]
    assert fig.layout.xaxis.type == "log"
    # the dropped candidate is not a smaller option: not in why-not-smaller
    assert all("l (" not in r for r in sel.rejections())


def test_param_count_falls_back_to_transformers_for_unknown_architectures():
    from transformers import OPTConfig

    from rightsizer.select import count_params_from_config

    cfg = OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                    vocab_size=100, max_position_embeddings=64, word_embed_proj_dim=64)
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        ref = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    assert count_params_from_config(cfg) == ref


def test_the_lora_rung_trains_through_the_finetune_function_s_entry_point(
        demo_models, sentiment_spec, tmp_path, monkeypatch):
    """One trainer: the ladder's LoRA rung and the MLRun ``finetune`` function give the
    same adapter, bit for bit, for the same data, seed and settings."""
    import json
    from pathlib import Path

    import mlrun
    import torch
    from safetensors.torch import load_file

    from rightsizer.evaluate import load_rows

    lora = dataclasses.replace(sentiment_spec.ladder.lora, steps=6)
    spec = _spec(sentiment_spec, candidates=["demo:tiny-s"], max_eval_examples=20,
                 ladder=Ladder(rungs=["lora"], lora=lora))
    sel = select_model(spec, tmp_path / "ladder", progress=False)
    rung = sel.tried[0]
    assert rung.rung == "lora" and rung.training["steps"] == 6
    assert rung.training["strategy"] == "ddp" and rung.training["world_size"] == 1
    ladder_dir = rung.training["adapter_dir"]
    # the same train split as a user would hand it to the finetune function: a JSONL file
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in load_rows(spec, "train")))
    root = Path(__file__).resolve().parents[1]
    fn = mlrun.code_to_function("finetune", filename=str(root / "functions" / "finetune.py"),
                                kind="job", handler="finetune", image="mlrun/mlrun")
    monkeypatch.chdir(tmp_path)  # MLRun 1.12's local runs write artifacts under the cwd
    run = fn.run(local=True, artifact_path=str(tmp_path / "artifacts"), params={
        "model": "demo:tiny-s", "train_data": str(data), "nproc": 1, "prompt_template": spec.prompt,
        "text_field": spec.input_field, "label_field": spec.label_field,
        **{k: getattr(lora, k) for k in ("rank", "alpha", "dropout", "learning_rate",
                                         "warmup_ratio", "global_batch", "max_seq_len", "steps",
                                         "seed")},
        "output_dir": str(tmp_path / "function")})
    assert run.state() == "completed", run.status.error
    fn_dir = run.status.results["adapter_dir"]
    a, b = (load_file(f"{d}/adapter_model.safetensors") for d in (ladder_dir, fn_dir))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and it learned something: the B matrices start at zero
    assert any(k.endswith("lora_B.weight") and a[k].abs().sum() > 0 for k in a)


def test_a_max_seq_len_beyond_a_candidate_s_context_is_refused_before_any_model_loads(
        demo_models, sentiment_spec, tmp_path, monkeypatch):
    import rightsizer.select as select_module

    monkeypatch.setattr(select_module, "load_model",
                        lambda *a, **k: pytest.fail("a model was loaded"))
    spec = _spec(sentiment_spec, finetune=dataclasses.replace(sentiment_spec.finetune,
                                                              max_seq_len=300))
    with pytest.raises(ConfigError) as e:
        select_model(spec, tmp_path, progress=False)
    assert e.value.problems == [
        f"finetune.max_seq_len: 300 is longer than the context of candidate {c} (256 tokens); "
        "set it to 256 or less" for c in ("demo:tiny-s", "demo:tiny-m", "demo:tiny-l")]


def test_candidates_ordered_by_parameter_count_not_name(demo_models, sentiment_spec):
    """The ladder climbs by size (select._sized, the order Selection.order records)."""
    from rightsizer.select import _sized

    spec = _spec(sentiment_spec, candidates=["demo:tiny-l", "demo:tiny-s", "demo:tiny-m"])
    sized, unsized = _sized(spec)
    order = [(ref, params) for ref, params, _ in sized]
    assert unsized == []
    assert [r for r, _ in order] == ["demo:tiny-s", "demo:tiny-m", "demo:tiny-l"]
    assert order[0][1] < order[1][1] < order[2][1]


def test_the_cascade_option_judges_the_failed_smaller_candidate_with_the_chosen_one(
        demo_models, routing_spec, tmp_path):
    """ladder.cascade: the smaller candidate that failed at a cheap rung is paired with the
    chosen one; the threshold is chosen on one half of the eval split and judged on the other.
    Pinned: what the design guarantees (a kept pair meets the bar on the half it did not tune
    on, its small model is saved and loads, the record survives save/load), not one CPU's scores."""
    from rightsizer.inference import load_model

    small = _untrained_candidate(demo_models, tmp_path / "untrained")
    spec = _spec(routing_spec, candidates=["demo:tiny-s", small], decision_rule="point",
                 ladder=Ladder(rungs=["zero_shot"], cascade=True))
    sel = select_model(spec, tmp_path / "ladder", progress=False)
    assert sel.chosen.candidate == "demo:tiny-s"
    (pair,) = sel.cascade["pairs"]
    assert (pair["small"], pair["big"], pair["small_rung"], pair["big_rung"]) == (small, "demo:tiny-s",
                                                                                  "zero_shot", "zero_shot")
    assert pair["n_calibration"] + pair["n_confirm"] == 80 and abs(pair["n_calibration"] - pair["n_confirm"]) <= 1
    assert 0.0 <= pair["deferral_rate"] <= 1.0 and pair["ci_low"] <= pair["quality"] <= pair["ci_high"]
    if pair["meets_bar"]:  # the bar holds on the half the threshold was not chosen on
        assert sel.cascade["kept"] == 0 and pair["quality"] >= spec.threshold
        model, _ = load_model(pair["small_model_dir"])
        assert sum(p.numel() for p in model.parameters()) == pair["small_params"]
    else:
        assert sel.cascade["kept"] is None and pair["small_model_dir"] == ""
    sel.save(tmp_path / "selection.json")
    assert Selection.load(tmp_path / "selection.json").cascade == sel.cascade
    # the calibration curve runs from deferring nothing to deferring everything; the chart
    # draws it and the confirm half's point
    curve = pair["curve"]
    assert (curve[0]["deferral_rate"], curve[-1]["deferral_rate"]) == (0.0, 1.0)
    assert [p["threshold"] for p in curve] == sorted(p["threshold"] for p in curve)
    from rightsizer.select_plots import cascade_figure

    fig = cascade_figure(sel)
    line, star = fig.data[0], fig.data[-1]
    assert list(line.x) == [p["deferral_rate"] for p in curve] and list(line.y) == [p["quality"] for p in curve]
    if pair["meets_bar"]:
        assert (star.x[0], star.y[0]) == (pair["deferral_rate"], pair["quality"])
    # off by default: nothing judged, nothing saved
    plain = select_model(_spec(routing_spec, candidates=["demo:tiny-s", small], decision_rule="point",
                               ladder=Ladder(rungs=["zero_shot"])), tmp_path / "plain", progress=False)
    assert plain.cascade == {} and not (tmp_path / "plain" / "cascade_small").exists()
    assert cascade_figure(plain) is None


def test_a_free_text_task_defers_on_its_answers_tokens(demo_models, tmp_path):
    """Extraction: the small model's confidence is its answer's mean token probability, 0 for
    a malformed answer; an untrained model's answers are all malformed, so only deferring
    everything clears the bar (a cascade that meets it and cannot be cheaper)."""
    from rightsizer.taskspec import load_task

    extraction = load_task(Path(__file__).resolve().parents[1] / "tasks" / "order_extraction.yaml")
    small = _untrained_candidate(demo_models, tmp_path / "untrained")
    spec = _spec(extraction, candidates=["demo:tiny-s", small], max_eval_examples=24, decision_rule="point",
                 ladder=Ladder(rungs=["zero_shot"], cascade=True))
    sel = select_model(spec, tmp_path / "ladder", progress=False)
    assert sel.chosen.candidate == "demo:tiny-s"
    (pair,) = sel.cascade["pairs"]
    assert pair["small_quality_kept"] is None and pair["deferral_rate"] == 1.0
    assert [p["deferral_rate"] for p in pair["curve"]] == [0.0, 1.0]  # one confidence: 0
