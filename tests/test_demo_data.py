"""The shipped demo data is exactly what the generator makes (nothing edited by hand)."""

from pathlib import Path

from rightsizer.demo.data import KNOWLEDGE_SPLITS, SPLITS, generate_rows, write_demo_data
from rightsizer.demo.knowledge import DEMO_VALUES, POLICIES, SLOT_VALUES, policy_text, pretrain_examples

DATA = Path(__file__).resolve().parents[1] / "tasks" / "data"


def test_shipped_data_regenerates_bit_for_bit(tmp_path):
    written = write_demo_data(tmp_path)
    # four generated tasks, answer_drafting's splits and its knowledge base (one file per policy)
    assert len(written) == 4 * len(SPLITS) + len(KNOWLEDGE_SPLITS) + len(POLICIES)
    for p in written:
        rel = p.relative_to(tmp_path)
        assert (DATA / rel).read_text() == p.read_text(), rel


def test_reviews_have_negations_and_balanced_labels():
    rows = generate_rows("review_sentiment", 400, seed=0)
    negated = [r for r in rows if " not " in f" {r['text']} "]
    assert len(negated) > 100  # negation is common, so word-spotting is not enough
    pos = sum(r["label"] == "positive" for r in rows)
    assert 150 < pos < 250


def test_pretraining_does_not_teach_the_demo_knowledge_base():
    """The demo models learn to read policies whose facts are drawn at random: the demo's
    value of a fact is no likelier than any other value of its slot, so only the passage
    tells a model which one is right (the zero-shot rung fails, the retrieval rung passes)."""
    examples = pretrain_examples(1200, seed=100)
    assert len({p for p, _, _ in examples}) > 250  # many different policies, not a few repeated
    for pid, values in DEMO_VALUES.items():
        title = POLICIES[pid][0]
        mine = [a for p, _, a in examples if p.startswith(f"# {title}\n")]
        demo_answer = policy_text(pid, values)[1]
        chance = max(1 / len(SLOT_VALUES[k]) for k in values)
        assert len(mine) > 100 and mine.count(demo_answer) / len(mine) < 2 * chance + 0.05, pid


def test_pretraining_prompts_are_the_served_retrieval_prompts(tmp_path, monkeypatch):
    """The bootstrap writes answer_drafting's prompt itself (PROMPTS, the passage with its
    whitespace collapsed); it must be what the retrieval rung serves for the same passage,
    or the models would learn to read a format they never see."""
    from rightsizer import retrieval
    from rightsizer.demo.bootstrap import PROMPTS
    from rightsizer.inference import build_prompt
    from rightsizer.taskspec import load_task

    monkeypatch.setattr(retrieval, "cache_dir", lambda: tmp_path / "retrieval")
    spec = retrieval.for_rung(load_task(DATA.parent / "answer_drafting.yaml"), "retrieval")
    row = {"text": "how long does a refund for my camera take"}
    passage = (DATA / "answer_drafting" / "knowledge" / "refunds.md").read_text()
    assert build_prompt(spec, row) == PROMPTS["answer_drafting"].format(
        context=" ".join(passage.split()), text=row["text"])


def test_pretraining_prompts_are_the_task_specs_prompts():
    """The bootstrap pre-trains on each task's own template, or the models would learn a
    prompt the pipeline never sends."""
    from rightsizer.demo.bootstrap import PROMPTS
    from rightsizer.taskspec import load_task

    for task, prompt in PROMPTS.items():
        if task != "answer_drafting":  # its passage comes from retrieval (the test above)
            assert load_task(DATA.parent / f"{task}.yaml").prompt == prompt, task


def test_only_the_smallest_model_is_pretrained_on_order_messages():
    """tiny-s gets order steps beside its other steps; every model keeps its budget of the
    other tasks' steps, in the same proportions, so adding orders changed nothing else."""
    from collections import Counter

    from rightsizer.demo.bootstrap import DEMO_MODELS, OTHER_TASKS, STEP_WEIGHTS

    for m in DEMO_MODELS:
        counts = Counter(m.schedule())
        assert sum(counts[t] for t in OTHER_TASKS) == m.pretrain_steps, m.name
        unit = m.pretrain_steps // sum(STEP_WEIGHTS.get(t, 1) for t in OTHER_TASKS)
        assert {t: counts[t] for t in OTHER_TASKS} == {t: unit * STEP_WEIGHTS.get(t, 1) for t in OTHER_TASKS}
        assert counts["order_extraction"] == unit * m.order_weight
        assert counts["chat_routing"] == unit * m.chat_weight
    assert [m.name for m in DEMO_MODELS if m.order_weight] == ["tiny-s"]
    # Spanish tickets: the biggest model only (chat_routing's cascade needs a small model that
    # cannot read them and a big one that can)
    assert [m.name for m in DEMO_MODELS if m.chat_weight] == ["tiny-l"]


def test_a_model_without_spanish_steps_has_recipe_4s_schedule_and_tokenizer_corpus():
    """Adding chat_routing changed tiny-l only: tiny-s and tiny-m draw the same steps in the
    same order as before it, and the tokenizer is trained on the same text (Spanish left out)."""
    from rightsizer.demo import bootstrap

    for m in bootstrap.DEMO_MODELS:
        one = [t for t in bootstrap.OTHER_TASKS for _ in range(bootstrap.STEP_WEIGHTS.get(t, 1))]
        before = ((one + ["order_extraction"] * m.order_weight) * -(-m.pretrain_steps // len(one)))[
            :m.pretrain_steps * (len(one) + m.order_weight) // len(one)]
        assert (m.schedule() == before) == (m.chat_weight == 0), m.name
    corpus = bootstrap._pretrain_corpus()
    assert list(corpus)[-1] == "chat_routing"  # after the others: their order in the tokenizer corpus is kept
    spanish = {p for p, _ in corpus["chat_routing"]}
    assert not spanish & {p for t, pairs in corpus.items() if t != "chat_routing" for p, _ in pairs}


def test_chat_routing_is_a_third_spanish_with_balanced_queues():
    import random
    from collections import Counter

    from rightsizer.demo.data import INTENTS_ES, SPANISH_SHARE, _ticket, is_spanish, spanish_ticket

    rows = generate_rows("chat_routing", 480, seed=0)
    share = sum(is_spanish(r["text"]) for r in rows) / len(rows)
    assert abs(share - SPANISH_SHARE) < 0.08, share
    assert min(Counter(r["label"] for r in rows).values()) > 90
    text, label = spanish_ticket(random.Random(0))
    assert label in INTENTS_ES and text.isascii()  # typed without accents
    # is_spanish (the re-evaluation test's Spanish-only stream) tells the two generators apart
    rng = random.Random(1)
    assert all(is_spanish(spanish_ticket(rng)[0]) for _ in range(300))
    assert not any(is_spanish(_ticket(rng)[0]) for _ in range(300)) and not is_spanish("")


def test_the_demo_tokenizer_splits_order_ids_into_digit_pairs(tmp_path):
    from rightsizer.demo.bootstrap import _train_tokenizer

    corpus = [r["text"] + "\n" + r["answer"] for r in generate_rows("order_extraction", 200, seed=0)]
    tok = _train_tokenizer(corpus, tmp_path / "tok")
    pieces = tok.convert_ids_to_tokens(tok("order #48213 and #11111")["input_ids"])
    assert pieces[pieces.index("Ġ#"):][:4] == ["Ġ#", "48", "21", "3"]  # Ġ: the byte-level space
    assert ["11", "11", "1"] == pieces[-3:]
    assert not list(tmp_path.glob("tok/*.bin"))  # saved as JSON, no pickles


def test_order_messages_outnumber_what_pretraining_draws():
    """tiny-s must learn to copy ids, not memorize them: the pre-training corpus has more
    order messages than its order steps draw, so few repeat (issue 27: with 2,400 messages
    some seeds memorized the corpus and copied 0.39 of the eval ids)."""
    from rightsizer.demo.bootstrap import BATCH, DEMO_MODELS, _pretrain_corpus

    corpus = _pretrain_corpus()["order_extraction"]
    for m in DEMO_MODELS:
        drawn = m.schedule().count("order_extraction") * BATCH.get("order_extraction", 32)
        assert drawn <= 2.5 * len(corpus), (m.name, drawn, len(corpus))
    assert len({a for _, a in corpus}) > 0.95 * len(corpus)  # ids hardly ever repeat


def test_the_bootstrap_seed_is_part_of_the_cache_key(monkeypatch):
    import pytest

    from rightsizer.demo import bootstrap
    from rightsizer.errors import ConfigError

    monkeypatch.delenv("RIGHTSIZER_DEMO_SEED", raising=False)
    default = bootstrap.demo_dir()
    monkeypatch.setenv("RIGHTSIZER_DEMO_SEED", "0")
    assert bootstrap.demo_dir() == default
    monkeypatch.setenv("RIGHTSIZER_DEMO_SEED", "3")
    assert bootstrap.demo_seed() == 3 and bootstrap.demo_dir() != default
    monkeypatch.setenv("RIGHTSIZER_DEMO_SEED", "three")
    with pytest.raises(ConfigError, match="RIGHTSIZER_DEMO_SEED='three': expected an integer"):
        bootstrap.demo_dir()
