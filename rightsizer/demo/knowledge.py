"""A small policy / FAQ knowledge base for a support assistant, and questions about it.

Deterministic (templates, a fixed seed), so the demo's ``answer_drafting`` task can write
its knowledge source and its splits bit for bit. Each policy is one document whose facts
(days, amounts, channels) appear nowhere else, so a question is answerable from its own
passage only: a model without retrieval has to guess, a retrieval miss shows as a wrong
answer. Rows: ``{"text": question, "answer": reference reply, "passage": policy id}``
(``passage`` is the gold passage for ``retrieval.gold_field``).

Every fact is a slot of its policy's template. The knowledge base fills the slots with the
demo's values (``DEMO_VALUES``); the demo models are pre-trained on the same policies with
values drawn at random from ``SLOT_VALUES`` (``pretrain_examples``), so they learn to *read*
the answer from a passage, and cannot know the demo's values without one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# id -> (title, policy template, answer template, questions); {slots} are the facts
POLICIES: dict[str, tuple[str, str, str, list[str]]] = {
    "refunds": ("Refunds",
                "Refunds are paid back to the original card within {days} business days after "
                "the returned item reaches our warehouse.",
                "within {days} business days",
                ["when will I get my refund for the {item}", "how long does a refund for my {item} take"]),
    "returns": ("Returns",
                "Unused items can be returned within {days} days of delivery with the prepaid "
                "label from the orders page.",
                "within {days} days of delivery",
                ["can I still return the {item} I bought", "what is the return window for a {item}"]),
    "shipping": ("Shipping",
                 "Standard shipping takes {low} to {high} days; express shipping arrives the next "
                 "working day when ordered before noon.",
                 "{low} to {high} days",
                 ["how long does shipping of a {item} take", "when will my {item} be delivered with standard shipping"]),
    "warranty": ("Warranty",
                 "Every device carries a {years} year warranty covering defects; accidental "
                 "damage is not covered.",
                 "a {years} year warranty",
                 ["is my {item} still under warranty", "how long is the warranty on the {item}"]),
    "password": ("Password reset",
                 "A password reset link is sent by email and expires after {hours} hours; request "
                 "a new one from the sign-in page.",
                 "it expires after {hours} hours",
                 ["my password reset link does not work", "how long is the password reset email valid"]),
    "cancellation": ("Order cancellation",
                     "An order can be cancelled free of charge {until}, from the orders page or "
                     "by chat.",
                     "{until}",
                     ["can I cancel my {item} order", "until when can I cancel the {item}"]),
    "price_match": ("Price match",
                    "We refund the difference if the same item is cheaper in our shop within "
                    "{days} days of purchase.",
                    "within {days} days of purchase",
                    ["the {item} is cheaper now, can I get the difference", "do you price match the {item}"]),
    "gift_cards": ("Gift cards",
                   "Gift cards {expiry} and can pay for any item except other gift cards.",
                   "gift cards {expiry}",
                   ["does my gift card expire", "can I pay for the {item} with an old gift card"]),
}
DEMO_VALUES: dict[str, dict[str, str]] = {
    "refunds": {"days": "5"}, "returns": {"days": "30"}, "shipping": {"low": "3", "high": "7"},
    "warranty": {"years": "2"}, "password": {"hours": "24"}, "cancellation": {"until": "until it ships"},
    "price_match": {"days": "14"}, "gift_cards": {"expiry": "never expire"},
}
_NUMBERS = [str(n) for n in range(2, 61)]
SLOT_VALUES: dict[str, list[str]] = {
    "days": _NUMBERS, "low": [str(n) for n in range(1, 5)], "high": [str(n) for n in range(5, 21)],
    "years": [str(n) for n in range(1, 6)], "hours": _NUMBERS,
    "until": ["until it ships", "until it is packed", "within 2 hours of ordering",
              "within one day of ordering", "before it leaves the warehouse", "until noon the next day"],
    "expiry": ["never expire", "expire after 3 years", "expire after one year", "expire after 5 years",
               "are valid for 2 years", "are valid for 10 years"],
}
ITEMS = ["laptop", "phone", "tablet", "router", "watch", "camera", "printer", "speaker"]


def policy_text(pid: str, values: dict[str, str]) -> tuple[str, str]:
    """``(policy sentence, answer)`` of policy ``pid`` with its slots filled by ``values``."""
    _, text, answer, _ = POLICIES[pid]
    return text.format(**values), answer.format(**values)


def knowledge_documents() -> list[dict]:
    """``{"id", "text"}`` per policy (a markdown document: title heading, then the policy)."""
    return [{"id": pid, "text": f"# {title}\n\n{policy_text(pid, DEMO_VALUES[pid])[0]}\n"}
            for pid, (title, *_rest) in POLICIES.items()]


def write_knowledge_base(out: str | Path, as_jsonl: bool = False) -> Path:
    """Write the policies as ``<out>/<id>.md`` files, or as one ``<out>`` JSONL of passages."""
    out = Path(out)
    docs = knowledge_documents()
    if as_jsonl:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in docs))
        return out
    out.mkdir(parents=True, exist_ok=True)
    for d in docs:
        (out / f"{d['id']}.md").write_text(d["text"])
    return out


def knowledge_questions(n: int, seed: int = 0) -> list[dict]:
    """``n`` questions ``{"text", "answer", "passage"}``, the same for the same seed."""
    rng = random.Random(f"knowledge:{seed}")
    ids = sorted(POLICIES)
    rows = []
    for i in range(n):
        pid = ids[i % len(ids)] if i < len(ids) else rng.choice(ids)
        template = rng.choice(POLICIES[pid][3])
        rows.append({"text": template.format(item=rng.choice(ITEMS)),
                     "answer": policy_text(pid, DEMO_VALUES[pid])[1], "passage": pid})
    return rows


def pretrain_examples(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``n`` ``(passage, question, answer)`` about policies with randomly drawn facts: the
    reading skill the demo models are pre-trained on. Each fact is drawn from all the values
    of its slot (the demo's is one of them, no likelier than another), so a model learns to
    copy it from the passage and cannot tell the demo's value without one."""
    rng = random.Random(f"knowledge-pretrain:{seed}")
    out = []
    for _ in range(n):
        pid = rng.choice(sorted(POLICIES))
        title, _, _, questions = POLICIES[pid]
        slots = DEMO_VALUES[pid]
        values = {k: rng.choice(SLOT_VALUES[k]) for k in slots}
        text, answer = policy_text(pid, values)
        out.append((f"# {title}\n\n{text}", rng.choice(questions).format(item=rng.choice(ITEMS)), answer))
    return out
