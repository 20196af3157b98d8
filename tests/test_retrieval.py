"""The retrieval rung: chunking, the BM25 index and its cache, recall@k, the prompt rule,
the index in the serving bundle, and the ladder trying the rung between few-shot and LoRA.

The knowledge base is the demo's policy / FAQ one (``rightsizer.demo.knowledge``), written
by each test into its own folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from rightsizer import retrieval
from rightsizer.demo.knowledge import knowledge_questions, write_knowledge_base
from rightsizer.errors import ConfigError
from rightsizer.inference import build_prompt
from rightsizer.retrieval import Index, build_index, chunk_documents, for_rung, load_documents
from rightsizer.taskspec import ChunkRule, Ladder, Screening, task_from_dict

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _spec(tmp_path: Path, k: int = 1, prompt: str = "Question: {text}\nAnswer:", **retr):
    """A generation task answering policy questions from the demo knowledge base."""
    kb = write_knowledge_base(tmp_path / "kb")
    raw = yaml.safe_load((TASKS / "ticket_routing.yaml").read_text())
    raw.pop("labels")
    raw.pop("finetune")
    raw.update(name="answer_drafting", type="generation", metric="rouge_l", label_field="answer",
               prompt=prompt, threshold=0.5, decision_rule="point", max_new_tokens=6,
               dataset={"train": _write_jsonl(tmp_path / "data/train.jsonl", knowledge_questions(16, 1)),
                        "eval": _write_jsonl(tmp_path / "data/eval.jsonl", knowledge_questions(24, 2))},
               retrieval={"source": str(kb), "k": k, "gold_field": "passage", **retr})
    raw["ladder"].pop("rungs")  # the default ladder of a task with a knowledge source
    return task_from_dict(raw)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Indexes are cached in the test's own folder, never in the user's cache (the demo
    models stay in theirs: ``$RIGHTSIZER_CACHE`` is left alone)."""
    monkeypatch.setattr(retrieval, "cache_dir", lambda: tmp_path / "cache" / "retrieval")


def test_recall_at_k_on_the_demo_knowledge_base(tmp_path):
    spec = _spec(tmp_path)
    index = build_index(spec)
    assert len(index.passages) == 8 and index.passages[0].id == "cancellation#0"
    qs = knowledge_questions(40, seed=3)
    queries, gold = [q["text"] for q in qs], [q["passage"] for q in qs]
    for k in (1, 3):
        assert retrieval.recall_at_k(index, queries, gold, k) == 1.0
    # a wrong gold id is a miss: the figure measures something
    assert retrieval.recall_at_k(index, queries, ["warranty"] * len(qs), 1) < 0.3
    # the same from a JSONL of passages
    jsonl = write_knowledge_base(tmp_path / "kb.jsonl", as_jsonl=True)
    docs = load_documents(jsonl)
    assert [d for d, _ in docs] == [  # file order, where the folder's is by name
        "refunds", "returns", "shipping", "warranty", "password", "cancellation", "price_match",
        "gift_cards"]
    jindex = Index.build(chunk_documents(docs, spec.retrieval.chunk))
    assert retrieval.recall_at_k(jindex, queries, gold, 1) == 1.0


def test_a_question_whose_passage_was_removed_retrieves_another_one(tmp_path):
    spec = _spec(tmp_path)
    row = {"text": "how long does a refund for my camera take", "passage": "refunds"}
    rspec = for_rung(spec, "retrieval")
    assert retrieval.retrieve_for(rspec, row)[0].doc == "refunds"
    assert "within 5 business days" in build_prompt(rspec, row)
    assert retrieval.retrieval_figures(rspec, [row])["recall_at_k"] == 1.0
    (tmp_path / "kb" / "refunds.md").unlink()
    gone = for_rung(spec, "retrieval")  # new content, new digest: a fresh index
    assert gone.index.digest != rspec.index.digest
    assert retrieval.retrieve_for(gone, row)[0].doc != "refunds"
    assert "5 business days" not in build_prompt(gone, row)
    figures = retrieval.retrieval_figures(gone, [row])
    assert (figures["recall_at_k"], figures["missed_rows"]) == (0.0, [0])


def test_chunk_rules_are_deterministic_and_stated(tmp_path):
    text = "# Title\n\nfirst para one two\n\nsecond " + " ".join(f"w{i}" for i in range(9))
    docs = [("d", text)]
    para = chunk_documents(docs, ChunkRule(by="paragraph", size=6, overlap=1))
    # the heading joins the paragraph after it; the long paragraph is cut in 6-word windows
    # sharing one word
    assert [p.text for p in para] == ["# Title first para one two", "second w0 w1 w2 w3 w4",
                                      "w4 w5 w6 w7 w8"]
    assert [p.id for p in para] == ["d#0", "d#1", "d#2"]
    assert para == chunk_documents(docs, ChunkRule(by="paragraph", size=6, overlap=1))
    words = chunk_documents(docs, ChunkRule(by="words", size=8, overlap=2))
    assert [len(p.text.split()) for p in words] == [8, 8, 4]
    whole = chunk_documents(docs, ChunkRule(by="passage"))
    assert len(whole) == 1 and whole[0].text == " ".join(text.split())


def test_index_save_load_round_trip_and_cache(tmp_path, monkeypatch):
    spec = _spec(tmp_path, k=3)
    index = build_index(spec)
    saved = index.save(tmp_path / "saved")
    again = Index.load(saved)
    for q in knowledge_questions(8, seed=5):
        assert again.retrieve(q["text"], 3) == index.retrieve(q["text"], 3)
    assert again.passages == index.passages and again.digest == index.digest
    # built once: the second call loads the cache entry and does not build
    monkeypatch.setattr(Index, "build", classmethod(lambda cls, *a, **k: pytest.fail("rebuilt")))
    assert build_index(spec).passages == index.passages
    assert [p.name for p in (tmp_path / "cache" / "retrieval").iterdir()] == [index.digest]
    with pytest.raises(ConfigError, match="not a retrieval index"):
        Index.load(tmp_path / "kb")


def test_a_failing_build_leaves_no_cache_entry_and_no_temp_folder(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    real_save = Index.save

    def broken(self, folder):
        real_save(self, folder)  # half the work done, then a crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(Index, "save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_index(spec)
    cache = tmp_path / "cache" / "retrieval"
    assert list(cache.iterdir()) == []  # no entry, no .tmp folder
    monkeypatch.setattr(Index, "save", real_save)
    index = build_index(spec)
    assert [p.name for p in cache.iterdir()] == [index.digest]


def test_prompt_rule_context_placeholder_or_prefix(tmp_path):
    row = {"text": "does my gift card expire"}
    plain = _spec(tmp_path)
    assert build_prompt(plain, row) == "Question: does my gift card expire\nAnswer:"  # no index
    assert for_rung(plain, "zero_shot").index is None and for_rung(plain, "few_shot").index is None
    prompt = build_prompt(for_rung(plain, "retrieval"), row)
    assert prompt.startswith("Context:\n# Gift cards Gift cards never expire")
    assert prompt.endswith("\n\nQuestion: does my gift card expire\nAnswer:")
    placed = _spec(tmp_path / "b", prompt="Policy: {context}\nQ: {text}\nA:")
    assert build_prompt(placed, row) == "Policy: \nQ: does my gift card expire\nA:"
    assert build_prompt(for_rung(placed, "retrieval"), row).startswith(
        "Policy: # Gift cards Gift cards never expire")
    # the LoRA rung retrieves too, unless the spec says otherwise
    assert for_rung(plain, "lora").index is not None
    no_lora = _spec(tmp_path / "c", lora=False)
    assert for_rung(no_lora, "lora").index is None
    # the LoRA training prompts are the scored ones, passages included
    from rightsizer.finetune.task import task_examples

    ex = task_examples(for_rung(plain, "lora"), [{**row, "answer": "never"}])
    assert ex == [{"prompt": prompt, "answer": "never"}]


def test_the_served_prompt_carries_the_evaluated_passages(demo_models, tmp_path):
    from rightsizer.bundle import read_bundle, write_bundle
    from rightsizer.inference import load_bundle, predict, respond_with
    from tests.task_model import TaskModel

    spec = for_rung(_spec(tmp_path, k=2), "retrieval")
    rows = knowledge_questions(6, seed=7)
    evaluated = [build_prompt(spec, r) for r in rows]
    out = write_bundle(demo_models / "models" / "tiny-s", spec, tmp_path / "bundle",
                       base_model="demo:tiny-s", rung="retrieval")
    meta = read_bundle(out)
    assert meta["retrieval"]["digest"] == spec.index.digest and (out / "retrieval").is_dir()
    # the knowledge source is not needed to serve: the bundle carries the index
    (tmp_path / "kb" / "refunds.md").unlink()
    bundle = load_bundle(out, device=None)
    assert [build_prompt(bundle.spec, {"text": r["text"]}, bundle.shots) for r in rows] == evaluated

    class Recorder:  # the serving engine answers through respond_with, with the bundle's spec
        prompts: list[str] = []

        def generate(self, prompts, max_new_tokens, stop, batch_size=16, progress=False):
            self.prompts.extend(prompts)
            return ["x"] * len(prompts)

        def score_options(self, *a, **k):
            raise AssertionError("a generation task scores no options")

    rec = Recorder()
    respond_with(rec, bundle.spec, [r["text"] for r in rows], bundle.shots)
    assert rec.prompts == evaluated
    # and the serving engine itself answers what evaluation predicted
    pred = predict(bundle.model, bundle.tokenizer, spec, rows)
    served = TaskModel(out, device=None)
    try:
        assert [a["generated"] for a in served.predict([r["text"] for r in rows])] == pred.answers
    finally:
        served.close()
    # a bundle of a rung without retrieval has no index and serves the plain prompt
    plain = write_bundle(demo_models / "models" / "tiny-s", for_rung(spec, "zero_shot"),
                         tmp_path / "plain", base_model="demo:tiny-s", rung="zero_shot")
    assert read_bundle(plain)["retrieval"] == {} and not (plain / "retrieval").exists()
    assert load_bundle(plain, device=None).spec.index is None


def test_the_ladder_tries_retrieval_between_few_shot_and_lora(demo_models, tmp_path, monkeypatch):
    import rightsizer.finetune.task as ft
    from rightsizer.select import select_model

    spec = _spec(tmp_path)
    spec = dataclasses.replace(
        spec, candidates=["demo:tiny-s"], threshold=1.0, max_eval_examples=16,
        screening=Screening(min_examples=8), ladder=dataclasses.replace(
            spec.ladder, few_shot_k=2, lora=dataclasses.replace(
                spec.ladder.lora, steps=2, rank=4, alpha=8, max_seq_len=96, global_batch=4)))
    assert spec.ladder.rungs == ["zero_shot", "few_shot", "retrieval", "lora"]
    trained_with = []
    real = ft.train_for_task
    monkeypatch.setattr(ft, "train_for_task", lambda s, *a, **k: (
        trained_with.append(s.index is not None), real(s, *a, **k))[1])
    # exhaustive: every rung is tried even when one passes (tiny-s may answer every row right)
    sel = select_model(spec, tmp_path / "work", progress=False, exhaustive=True)
    assert [r.rung for r in sel.tried] == ["zero_shot", "few_shot", "retrieval", "lora"]
    assert trained_with == [True]  # the LoRA rung trained on prompts with passages
    zs, fs, rt, lora = sel.tried
    assert zs.retrieval == {} and fs.retrieval == {}
    for r in (rt, lora):
        assert r.retrieval["recall_at_k"] == 1.0 and r.retrieval["k"] == 1
        assert r.passed or "retrieval recall@1 1.000" in r.reason
    assert sel.retrieval["gold_rows"] == 16 and sel.retrieval["missed_rows"] == []
    from rightsizer.select_plots import leaderboard_rows

    assert [r["retrieval_recall_at_k"] for r in leaderboard_rows(sel)] == [None, None, 1.0, 1.0]
    again = type(sel).load(sel.save(tmp_path / "sel.json") or tmp_path / "sel.json")
    assert again.to_dict() == sel.to_dict()
    # a knowledge base without the refunds policy: its questions miss, and the rejected
    # rung says the retriever was the cause, not the model
    holed = _spec(tmp_path / "holed")
    (tmp_path / "holed" / "kb" / "refunds.md").unlink()
    holed = dataclasses.replace(holed, candidates=["demo:tiny-s"], threshold=1.0, max_eval_examples=16,
                                screening=Screening(enabled=False),
                                ladder=dataclasses.replace(holed.ladder, rungs=["retrieval"]))
    (miss,) = select_model(holed, tmp_path / "w3", progress=False).tried
    assert not miss.passed and miss.retrieval["recall_at_k"] < 1.0
    assert f"retrieval recall@1 {miss.retrieval['recall_at_k']:.3f}" in miss.reason
    # without a retrieval: section the rung cannot be asked for
    with pytest.raises(ConfigError, match="'retrieval' needs a knowledge source"):
        select_model(dataclasses.replace(spec, retrieval=None), tmp_path / "w2", progress=False)
    assert Ladder().rungs == ["zero_shot", "few_shot", "lora"]


def test_a_gold_field_missing_from_the_eval_rows_is_a_data_problem(tmp_path):
    from rightsizer.evaluate import check_task_data

    spec = _spec(tmp_path, gold_field="source_doc")
    with pytest.raises(ConfigError, match="retrieval.gold_field: the eval rows have no 'source_doc'"):
        check_task_data(spec)


def test_the_embedding_retriever_ranks_by_cosine_and_travels_with_the_bundle(demo_models, tmp_path):
    """retriever: embedding with a local model: each passage's own text finds it first, the
    index (vectors and its encoder) saves and loads to the same ranking, its digest follows the
    model, and a bundle serves the evaluated prompts with the source gone and the encoder
    taken from the bundle."""
    from rightsizer.bundle import write_bundle
    from rightsizer.inference import load_bundle
    from rightsizer.retrieval import EmbeddingIndex

    spec = _spec(tmp_path, k=2, retriever="embedding", model="demo:tiny-s")
    index = build_index(spec)
    assert isinstance(index, EmbeddingIndex) and index.meta["model"] == "demo:tiny-s"
    assert index.vectors.shape == (len(index.passages), 64)  # tiny-s is 64 wide
    for p in index.passages:
        top = index.retrieve(p.text, 1)[0]
        assert top.id == p.id and top.score == pytest.approx(1.0, abs=1e-4)
    queries = [q["text"] for q in knowledge_questions(12, seed=5)]
    loaded = Index.load(tmp_path / "cache" / "retrieval" / index.digest)
    assert isinstance(loaded, EmbeddingIndex)
    assert [[p.id for p in loaded.retrieve(q, 2)] for q in queries] == \
        [[p.id for p in index.retrieve(q, 2)] for q in queries]
    # another model, another index; BM25 on the same source, another digest too
    other = build_index(_spec(tmp_path, k=2, retriever="embedding", model="demo:tiny-m"))
    assert len({index.digest, other.digest, build_index(_spec(tmp_path, k=2)).digest}) == 3
    # served from the bundle: same passages in the same prompts, the knowledge source deleted
    spec = for_rung(spec, "retrieval")
    rows = knowledge_questions(6, seed=7)
    evaluated = [build_prompt(spec, r) for r in rows]
    out = write_bundle(demo_models / "models" / "tiny-s", spec, tmp_path / "bundle",
                       base_model="demo:tiny-s", rung="retrieval")
    assert (out / "retrieval" / "encoder" / "model.safetensors").is_file()
    for f in (tmp_path / "kb").iterdir():
        f.unlink()
    bundle = load_bundle(out, device=None)
    assert isinstance(bundle.spec.index, EmbeddingIndex)
    assert bundle.spec.index.encoder.model_dir.startswith(str(out))
    assert [build_prompt(bundle.spec, {"text": r["text"]}, bundle.shots) for r in rows] == evaluated
