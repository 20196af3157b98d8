"""A small policy / FAQ knowledge base for a support assistant, and questions about it.

Deterministic (templates, a fixed seed), so a demo ``answer_drafting`` task can write its
knowledge source and its splits bit for bit. Each policy is one document whose facts
(days, amounts, channels) appear nowhere else, so a question is answerable from its own
passage only: a model without retrieval has to guess, a retrieval miss shows as a wrong
answer. Rows: ``{"text": question, "answer": reference reply, "passage": policy id}``
(``passage`` is the gold passage for ``retrieval.gold_field``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# id -> (title, policy text, [(question template, answer)])
POLICIES: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "refunds": ("Refunds",
                "Refunds are paid back to the original card within 5 business days after the "
                "returned item reaches our warehouse.",
                [("when will I get my refund for the {item}", "within 5 business days"),
                 ("how long does a refund for my {item} take", "within 5 business days")]),
    "returns": ("Returns",
                "Unused items can be returned within 30 days of delivery with the prepaid "
                "label from the orders page.",
                [("can I still return the {item} I bought", "within 30 days of delivery"),
                 ("what is the return window for a {item}", "within 30 days of delivery")]),
    "shipping": ("Shipping",
                 "Standard shipping takes 3 to 7 days; express shipping arrives the next "
                 "working day when ordered before noon.",
                 [("how long does shipping of a {item} take", "3 to 7 days"),
                  ("when will my {item} be delivered with standard shipping", "3 to 7 days")]),
    "warranty": ("Warranty",
                 "Every device carries a 2 year warranty covering defects; accidental damage "
                 "is not covered.",
                 [("is my {item} still under warranty", "a 2 year warranty"),
                  ("how long is the warranty on the {item}", "a 2 year warranty")]),
    "password": ("Password reset",
                 "A password reset link is sent by email and expires after 24 hours; request "
                 "a new one from the sign-in page.",
                 [("my password reset link does not work", "it expires after 24 hours"),
                  ("how long is the password reset email valid", "it expires after 24 hours")]),
    "cancellation": ("Order cancellation",
                     "An order can be cancelled free of charge until it ships, from the orders "
                     "page or by chat.",
                     [("can I cancel my {item} order", "until it ships"),
                      ("until when can I cancel the {item}", "until it ships")]),
    "price_match": ("Price match",
                    "We refund the difference if the same item is cheaper in our shop within "
                    "14 days of purchase.",
                    [("the {item} is cheaper now, can I get the difference", "within 14 days of purchase"),
                     ("do you price match the {item}", "within 14 days of purchase")]),
    "gift_cards": ("Gift cards",
                   "Gift cards never expire and can pay for any item except other gift cards.",
                   [("does my gift card expire", "gift cards never expire"),
                    ("can I pay for the {item} with an old gift card", "gift cards never expire")]),
}
ITEMS = ["laptop", "phone", "tablet", "router", "watch", "camera", "printer", "speaker"]


def knowledge_documents() -> list[dict]:
    """``{"id", "text"}`` per policy (a markdown document: title heading, then the policy)."""
    return [{"id": pid, "text": f"# {title}\n\n{text}\n"} for pid, (title, text, _) in POLICIES.items()]


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
        template, answer = rng.choice(POLICIES[pid][2])
        rows.append({"text": template.format(item=rng.choice(ITEMS)), "answer": answer,
                     "passage": pid})
    return rows
