"""Task specs: validation that reports every problem at once, and exact save/load."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from rightsizer.errors import ConfigError
from rightsizer.taskspec import app_task_paths, load_app, load_task, task_from_dict
from tests.specfiles import save_task

TASKS = Path(__file__).resolve().parents[1] / "tasks"
SPEC_FILES = sorted(TASKS.glob("*.yaml"))


def _raw(name="review_sentiment"):
    return yaml.safe_load((TASKS / f"{name}.yaml").read_text())


def test_every_shipped_spec_loads():
    # 5 task specs + 1 app spec; a new file must be added here on purpose
    assert [p.name for p in SPEC_FILES] == ["answer_drafting.yaml", "chat_routing.yaml", "demo_app.yaml",
                                            "order_extraction.yaml", "review_sentiment.yaml",
                                            "ticket_routing.yaml"]
    app = load_app(TASKS / "demo_app.yaml")
    assert [t.name for t in app.tasks] == ["review_sentiment", "ticket_routing", "order_extraction",
                                           "answer_drafting", "chat_routing"]
    assert [t.type for t in app.tasks] == ["classification", "classification", "extraction", "generation",
                                           "classification"]
    assert app.tasks[2].extraction is not None and app.tasks[3].source_path().is_dir()
    # the one demo task judged as a cascade, with no training rung (its data is not trained on)
    assert [t.name for t in app.tasks if t.ladder.cascade] == ["chat_routing"]
    assert app.tasks[4].ladder.rungs == ["zero_shot", "few_shot"]
    for t in app.tasks:
        assert Path(t.dataset_path("train")).is_file()
        assert t.trust_remote_code is False


def test_round_trip_is_exact(tmp_path):
    spec = load_task(TASKS / "review_sentiment.yaml")
    save_task(spec, tmp_path / "s.yaml")
    again = load_task(tmp_path / "s.yaml")
    assert again.to_dict() == spec.to_dict()
    save_task(again, tmp_path / "s2.yaml")
    assert (tmp_path / "s.yaml").read_text() == (tmp_path / "s2.yaml").read_text()


def test_missing_field_is_named():
    raw = _raw()
    del raw["threshold"]
    with pytest.raises(ConfigError, match="threshold: missing required field"):
        task_from_dict(raw)


def test_wrong_type_is_named_with_expected_type():
    raw = _raw()
    raw["threshold"] = "high"
    with pytest.raises(ConfigError, match=r"threshold: expected float, got str 'high'"):
        task_from_dict(raw)


def test_all_problems_reported_at_once():
    raw = _raw()
    del raw["metric"]
    raw["slo"]["ttft_ms"] = "fast"
    raw["bogus"] = 1
    with pytest.raises(ConfigError) as e:
        task_from_dict(raw)
    assert len(e.value.problems) == 3
    text = str(e.value)
    assert "metric: missing" in text and "slo.ttft_ms" in text and "bogus: unknown field" in text


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(threshold=1.5), "outside the metric's range"),
    (lambda r: r.update(metric="rouge_l"), "does not fit a classification task"),
    (lambda r: r.update(labels=["positive"]), "at least two label options"),
    (lambda r: r.update(prompt="no placeholder"), "must contain {text}"),
    (lambda r: r["ladder"].update(rungs=["zero_shot", "magic"]), "'magic' is not a rung"),
    (lambda r: r["ladder"]["lora"].update(rank=0), "ladder.lora.rank: 0"),
    (lambda r: r.update(quality_tolerance=-0.1), "quality_tolerance"),
    (lambda r: r.update(precisions=["int3"]), "precisions: 'int3'"),
    (lambda r: r["dataset"].pop("eval"), "no 'eval' split"),
    (lambda r: r["slo"].update(throughput_tokens_per_s=-5), r"slo.throughput_tokens_per_s: -5.0; expected >= 0"),
    (lambda r: r["slo"].update(throughput_tokens_per_s=float("nan")), r"slo.throughput_tokens_per_s: nan"),
    (lambda r: r.setdefault("workload", {}).update(request_rate=-1), r"workload.request_rate: -1.0; expected >= 0"),
    (lambda r: r.setdefault("workload", {}).update(lengths=[[20, 4]]),
     r"workload.lengths\[0\]: \[20, 4\]; expected \[prompt_tokens, output_tokens, count\]"),
    (lambda r: r.setdefault("workload", {}).update(lengths=[[20, 0, 3]]), r"workload.lengths\[0\]: \[20, 0, 3\]"),
    (lambda r: r.setdefault("workload", {}).update(lengths=[]), "workload.lengths: empty"),
])
def test_bad_values(change, message):
    raw = copy.deepcopy(_raw())
    change(raw)
    with pytest.raises(ConfigError, match=message):
        task_from_dict(raw)


def test_missing_spec_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_task(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_task(bad)


def test_app_paths_are_project_relative():
    paths = app_task_paths("tasks/demo_app.yaml", root=TASKS.parent)
    assert paths == [("review_sentiment", "tasks/review_sentiment.yaml"),
                     ("ticket_routing", "tasks/ticket_routing.yaml"),
                     ("order_extraction", "tasks/order_extraction.yaml"),
                     ("answer_drafting", "tasks/answer_drafting.yaml"),
                     ("chat_routing", "tasks/chat_routing.yaml")]


def _extraction_raw():
    raw = _raw("ticket_routing")
    raw.update(type="extraction", metric="token_f1", threshold=0.8)
    raw.pop("labels")
    return raw


def test_default_decision_rule_is_the_ci_lower_end():
    raw = _raw()
    raw.pop("decision_rule")
    assert task_from_dict(raw).decision_rule == "ci_lower"


def test_extraction_and_generation_specs_load_and_round_trip(tmp_path):
    raw = _extraction_raw()
    raw["screening"] = {"min_examples": 8, "growth": 3, "alpha": 0.1}
    raw["max_new_tokens"] = 6
    spec = task_from_dict(raw)
    assert (spec.type, spec.metric, spec.screening.growth, spec.max_new_tokens) == (
        "extraction", "token_f1", 3.0, 6)
    save_task(spec, tmp_path / "x.yaml")
    assert load_task(tmp_path / "x.yaml").to_dict() == spec.to_dict()
    gen = _extraction_raw()
    gen.update(type="generation", metric="rouge_l")
    assert task_from_dict(gen).metric == "rouge_l"


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(metric="accuracy"), "'accuracy' does not fit a extraction task"),
    (lambda r: r.update(type="generation", metric="exact_match"), "does not fit a generation task"),
    (lambda r: r.update(threshold=-0.2), r"threshold: -0.2 is outside the metric's range \[0, 1\]"),
    (lambda r: r.update(labels=["a", "b"]), "only a classification task takes label options"),
    (lambda r: r.update(max_new_tokens=0), "max_new_tokens: 0"),
    (lambda r: r.update(screening={"growth": 1.0}), "screening.growth"),
    (lambda r: r.update(screening={"min_examples": 0}), "screening.min_examples"),
    (lambda r: r.update(screening={"alpha": 1.5}), "screening.alpha"),
    (lambda r: r.update(screening={"stages": 3}), "screening.stages: unknown field"),
])
def test_bad_values_of_extraction_and_screening(change, message):
    raw = _extraction_raw()
    change(raw)
    with pytest.raises(ConfigError, match=message):
        task_from_dict(raw)


def test_type_metric_and_threshold_problems_reported_together():
    raw = _extraction_raw()
    raw.update(metric="macro_f1", threshold=2.0, labels=["x", "y"])
    with pytest.raises(ConfigError) as e:
        task_from_dict(raw)
    assert len(e.value.problems) == 3


def test_lora_defaults_are_for_hub_models_and_the_demo_sets_its_own():
    from rightsizer.finetune.train import FinetuneConfig
    from rightsizer.taskspec import FinetuneSettings, LoraSettings

    raw = _raw()
    raw["ladder"].pop("lora")
    raw.pop("finetune")
    spec = task_from_dict(raw)
    # one home of the defaults: the spec sections and the trainer agree
    cfg = FinetuneConfig(model="m", train_data=[], output_dir="x")
    for lora in (spec.ladder.lora, spec.finetune):
        assert (lora.rank, lora.alpha, lora.learning_rate) == (16, 32, 2e-4)
        assert (cfg.rank, cfg.alpha, cfg.learning_rate, cfg.max_seq_len) == (
            lora.rank, lora.alpha, lora.learning_rate, lora.max_seq_len)
    assert (spec.ladder.lora.steps, spec.ladder.lora.epochs) == (LoraSettings.steps, None)
    assert (spec.finetune.steps, spec.finetune.epochs) == (None, FinetuneSettings.epochs)
    demo = load_task(TASKS / "review_sentiment.yaml")
    assert demo.ladder.lora.learning_rate == demo.finetune.learning_rate == 0.003
    assert demo.finetune.max_seq_len <= 256  # the tiny demo models' context


def test_a_budget_given_as_epochs_clears_the_default_steps():
    raw = _raw()
    raw["ladder"]["lora"] = {"epochs": 2}
    raw["finetune"] = {"steps": 500}
    spec = task_from_dict(raw)
    assert (spec.ladder.lora.steps, spec.ladder.lora.epochs) == (None, 2.0)
    assert (spec.finetune.steps, spec.finetune.epochs) == (500, None)


@pytest.mark.parametrize("section, message", [
    ({"steps": 0}, "finetune.steps: 0; expected a positive integer"),
    ({"epochs": -1}, "finetune.epochs: -1.0; expected > 0"),
    ({"learning_rate": -0.001}, "finetune.learning_rate: -0.001; expected > 0"),
    ({"rank": 0}, "finetune.rank: 0; expected a positive integer"),
    ({"max_seq_len": 0}, "finetune.max_seq_len: 0"),
    ({"global_batch": 0}, "finetune.global_batch: 0"),
    ({"dropout": 1.0}, "finetune.dropout: 1.0"),
    ({"steps": 10, "epochs": 1}, "give one training budget, not both"),
    ({"batch_size": 16}, "finetune.batch_size: unknown field"),
    ({"rank": "8"}, "finetune.rank: expected int"),
    ({"enabled": "yes"}, "finetune.enabled: expected bool"),
])
def test_bad_finetune_values_are_refused_at_load_naming_the_field(section, message):
    raw = _raw()
    raw["finetune"] = section
    with pytest.raises(ConfigError, match=message):
        task_from_dict(raw)


def test_every_lora_problem_is_reported_at_once():
    raw = _raw()
    raw["finetune"] = {"steps": 0, "learning_rate": -1, "rank": 0}
    raw["ladder"]["lora"] = {"steps": -5}
    with pytest.raises(ConfigError) as e:
        task_from_dict(raw)
    assert sorted(p.split(":")[0] for p in e.value.problems) == [
        "finetune.learning_rate", "finetune.rank", "finetune.steps", "ladder.lora.steps"]


BOMB = """name: ticket_routing
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
labels: [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


@pytest.mark.parametrize("content, expected", [
    (BOMB.encode(), r"YAML aliases \(\*a\) are not accepted"),
    ("name: caf\u00e9\n".encode("latin-1"), "not UTF-8 text"),
    (b"- name: x\n- name: y\n", "the top level is a list; expected a mapping"),
    (b"name: [unclosed\n", "not valid YAML"),
])
def test_hostile_spec_files_get_a_clear_error_naming_the_file(tmp_path, content, expected):
    from rightsizer.taskspec import load_app

    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    for load in (load_task, load_app):
        with pytest.raises(ConfigError, match=expected) as e:
            load(path)
        assert str(path) in str(e.value) and len(str(e.value)) < 2000  # nothing expanded into it


def test_an_oversized_spec_file_is_refused_before_it_is_parsed(tmp_path):
    from rightsizer.taskspec import MAX_SPEC_BYTES

    path = tmp_path / "big.yaml"
    path.write_bytes(b"name: x\n" + b"#" * MAX_SPEC_BYTES)
    with pytest.raises(ConfigError, match=f"a task spec is at most {MAX_SPEC_BYTES} bytes"):
        load_task(path)


def _retrieval_raw(tmp_path, **section):
    """The sentiment spec with a knowledge source (a folder with one markdown file)."""
    kb = tmp_path / "kb"
    kb.mkdir(exist_ok=True)
    (kb / "faq.md").write_text("# FAQ\n\nRefunds take 5 days.\n")
    raw = _raw()
    raw.pop("ladder")
    raw["retrieval"] = {"source": str(kb), **section}
    return raw


def test_a_retrieval_section_loads_with_its_defaults_and_round_trips(tmp_path):
    from rightsizer.taskspec import RUNGS

    spec = task_from_dict(_retrieval_raw(tmp_path, k=2, gold_field="passage",
                                         chunk={"by": "words", "size": 50, "overlap": 10}))
    r = spec.retrieval
    assert (r.k, r.retriever, r.gold_field, r.lora) == (2, "bm25", "passage", True)
    assert (r.chunk.by, r.chunk.size, r.chunk.overlap) == ("words", 50, 10)
    # the default ladder of such a task has the retrieval rung, between few-shot and LoRA
    assert spec.ladder.rungs == list(RUNGS) == ["zero_shot", "few_shot", "retrieval", "lora"]
    assert task_from_dict(_retrieval_raw(tmp_path)).retrieval.chunk.by == "paragraph"
    save_task(spec, tmp_path / "s.yaml")
    assert load_task(tmp_path / "s.yaml").to_dict() == spec.to_dict()
    # a task without one keeps the three rungs, and round-trips too
    plain = load_task(TASKS / "review_sentiment.yaml")
    assert plain.retrieval is None and "retrieval" not in plain.ladder.rungs
    save_task(plain, tmp_path / "p.yaml")
    assert load_task(tmp_path / "p.yaml").to_dict() == plain.to_dict()


@pytest.mark.parametrize("section, message", [
    ({"k": 0}, r"retrieval.k: 0; expected >= 1"),
    ({"chunk": {"by": "sentence"}}, r"retrieval.chunk.by: 'sentence' is not a chunk rule"),
    ({"chunk": {"size": 0}}, r"retrieval.chunk.size: 0"),
    ({"chunk": {"size": 10, "overlap": 10}}, r"retrieval.chunk.overlap: 10; expected 0 <= overlap < size"),
    ({"chunk": "paragraph"}, r"retrieval.chunk: expected a mapping"),
    ({"chunk": {"by": "words", "stride": 3}}, r"retrieval.chunk.stride: unknown field"),
    ({"retriever": "tfidf"}, r"retrieval.retriever: 'tfidf'"),
    ({"retriever": "embedding"}, r"retrieval.model: the embedding retriever needs the embedding model"),
    ({"model": "m"}, r"retrieval.model: 'm' is only for retriever: embedding"),
    ({"k": "three"}, r"retrieval.k: expected int"),
    ({"top_k": 3}, r"retrieval.top_k: unknown field"),
    ({"gold_field": "text"}, r"retrieval.gold_field: 'text' is the input or label field"),
    ({"source": "no/such/folder"}, r"retrieval.source: 'no/such/folder' not found"),
])
def test_bad_retrieval_sections_are_refused_naming_the_field(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        task_from_dict(_retrieval_raw(tmp_path, **section))


def test_a_knowledge_source_must_be_a_text_folder_or_a_jsonl(tmp_path):
    (tmp_path / "notes.csv").write_text("a,b\n")
    (tmp_path / "empty").mkdir()
    for source, message in ((tmp_path / "notes.csv", "is a .csv file"),
                            (tmp_path / "empty", "has no .txt or .md file")):
        with pytest.raises(ConfigError, match=message):
            task_from_dict(_retrieval_raw(tmp_path, source=str(source)))
    # a relative source is resolved against the spec file's folder
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(_retrieval_raw(tmp_path, source="kb")))
    assert load_task(tmp_path / "spec.yaml").source_path() == tmp_path / "kb"


@pytest.mark.parametrize("prompt, message", [
    ("Review: {text}\nTone: {tone}", r"prompt: 'Review: \{text\}\\nTone: \{tone\}' uses the "
                                     r"unknown placeholder \{tone\}; the template may use \['text'\]"),
    ("Review: {text} {", r"is not a valid template .*write a literal brace as \{\{ or \}\}"),
    ("Review: {text} }", r"is not a valid template"),
    ("Review: {text} {}", r"has an empty placeholder \{\}"),
    ("Facts: {context}\nReview: {text}", r"uses \{context\} but the task declares no retrieval"),
    ("Review: {text.upper}", r"unknown placeholder \{text.upper\}"),
])
def test_prompt_templates_are_checked_against_their_fields_at_load(prompt, message):
    raw = _raw()
    raw["prompt"] = prompt
    with pytest.raises(ConfigError, match=message):
        task_from_dict(raw)
    raw["prompt"] = "Review: {text} {{literal braces}}"
    assert task_from_dict(raw).format_prompt({"text": "ok"}) == "Review: ok {literal braces}"


def test_context_placeholder_is_known_once_retrieval_is_declared(tmp_path):
    raw = _retrieval_raw(tmp_path)
    raw["prompt"] = "Facts: {context}\nReview: {text}\nSentiment:"
    spec = task_from_dict(raw)
    assert spec.format_prompt({"text": "fine"}, "Refunds take 5 days.") == (
        "Facts: Refunds take 5 days.\nReview: fine\nSentiment:")


def test_the_retrieval_rung_needs_a_knowledge_source():
    raw = _raw()
    raw["ladder"]["rungs"] = ["zero_shot", "retrieval"]
    with pytest.raises(ConfigError, match="'retrieval' needs a knowledge source"):
        task_from_dict(raw)


def test_every_retrieval_and_template_problem_is_reported_at_once(tmp_path):
    raw = _retrieval_raw(tmp_path, source=str(tmp_path / "missing"), k=0,
                         chunk={"by": "sentence"})
    raw["prompt"] = "Review: {text} {tone} {"
    with pytest.raises(ConfigError) as e:
        task_from_dict(raw, source="tasks/x.yaml")
    fields = sorted(p.split(":")[0] for p in e.value.problems)
    assert fields == ["prompt", "retrieval.chunk.by", "retrieval.k", "retrieval.source"]
    assert str(e.value).startswith("tasks/x.yaml: 4 problems:")
    raw["prompt"] = "Review: {text} {tone}"  # a parseable template: its placeholders are checked
    with pytest.raises(ConfigError) as e:
        task_from_dict(raw)
    assert len(e.value.problems) == 4 and "unknown placeholder {tone}" in str(e.value)


def test_spec_fields_only_the_loader_sets_are_refused():
    raw = _raw()
    raw.update(base_dir="/x", index="y")
    with pytest.raises(ConfigError) as e:
        task_from_dict(raw)
    assert sorted(p.split(":")[0] for p in e.value.problems) == ["base_dir", "index"]
