"""The shipped demo data is exactly what the generator makes (nothing edited by hand)."""

from pathlib import Path

from rightsizer.demo.data import KNOWLEDGE_SPLITS, SPLITS, generate_rows, write_demo_data
from rightsizer.demo.knowledge import POLICIES

DATA = Path(__file__).resolve().parents[1] / "tasks" / "data"


def test_shipped_data_regenerates_bit_for_bit(tmp_path):
    written = write_demo_data(tmp_path)
    # three generated tasks, answer_drafting's splits and its knowledge base (one file per policy)
    assert len(written) == 3 * len(SPLITS) + len(KNOWLEDGE_SPLITS) + len(POLICIES)
    for p in written:
        rel = p.relative_to(tmp_path)
        assert (DATA / rel).read_text() == p.read_text(), rel


def test_reviews_have_negations_and_balanced_labels():
    rows = generate_rows("review_sentiment", 400, seed=0)
    negated = [r for r in rows if " not " in f" {r['text']} "]
    assert len(negated) > 100  # negation is common, so word-spotting is not enough
    pos = sum(r["label"] == "positive" for r in rows)
    assert 150 < pos < 250

