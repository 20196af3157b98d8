"""Deterministic task data for the offline demo application.

Two tasks of a small e-commerce assistant:

* ``review_sentiment``: product reviews whose polarity is often flipped by a negation
  ("not bad", "didn't love"), so word-spotting alone scores near chance.
* ``ticket_routing``: support tickets routed to one of four queues.

Everything is generated from templates with a fixed seed, so the shipped JSONL files under
``tasks/data/`` can be re-created bit for bit (a test checks that).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ASPECTS = ["battery", "screen", "camera", "keyboard", "speaker", "charger", "case", "strap",
           "lens", "fan", "cable", "remote", "headset", "mouse", "stand", "printer"]
POSITIVE = ["great", "good", "excellent", "solid", "reliable", "sturdy", "bright", "fast",
            "comfortable", "sharp"]
NEGATIVE = ["bad", "poor", "awful", "flimsy", "weak", "dim", "slow", "noisy", "cheap",
            "terrible"]
LOVE = ["love", "like", "enjoy", "recommend"]
OPENERS = ["Honestly,", "Overall,", "After a week,", "To be fair,", "In short,", ""]

INTENTS = {
    "billing": ["I was charged twice for my {item}", "my invoice for the {item} is wrong",
                "please refund the {item} payment", "the card payment for my {item} failed",
                "why is there an extra fee on the {item}"],
    "shipping": ["my {item} has not arrived yet", "the {item} package was lost in transit",
                 "can you track the {item} delivery", "the courier left my {item} at the wrong door",
                 "when will the {item} be shipped"],
    "technical": ["the {item} will not turn on", "my {item} keeps crashing after the update",
                  "the {item} does not connect to wifi", "the {item} firmware install fails",
                  "the {item} shows an error code"],
    "account": ["I cannot log in to my account", "please reset my password",
                "how do I change the email on my account", "my account was locked",
                "delete my profile and data"],
}
ITEMS = ["laptop", "phone", "tablet", "router", "watch", "camera", "printer", "speaker"]
POLITE = ["", "please help", "thanks", "asap", "this is urgent"]


def _review(rng: random.Random) -> tuple[str, str]:
    aspect = rng.choice(ASPECTS)
    form = rng.randrange(4)
    if form == 0:  # plain adjective
        pos = rng.random() < 0.5
        adj = rng.choice(POSITIVE if pos else NEGATIVE)
        text = f"the {aspect} is {adj}"
    elif form == 1:  # negated adjective flips polarity
        pos_adj = rng.random() < 0.5
        adj = rng.choice(POSITIVE if pos_adj else NEGATIVE)
        text = f"the {aspect} is not {adj}"
        pos = not pos_adj
    elif form == 2:  # (not) love
        neg = rng.random() < 0.5
        verb = rng.choice(LOVE)
        text = f"I {'do not ' if neg else ''}{verb} the {aspect}"
        pos = not neg
    else:  # contrast: the second clause decides
        a1, a2 = rng.sample(ASPECTS, 2)
        pos = rng.random() < 0.5
        first = rng.choice(NEGATIVE if pos else POSITIVE)
        second = rng.choice(POSITIVE if pos else NEGATIVE)
        text = f"the {a1} is {first} but the {a2} is {second}"
    opener = rng.choice(OPENERS)
    text = f"{opener} {text}".strip()
    return text, "positive" if pos else "negative"


def _ticket(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(sorted(INTENTS))
    text = rng.choice(INTENTS[label]).format(item=rng.choice(ITEMS))
    tail = rng.choice(POLITE)
    return (f"{text}, {tail}" if tail else text), label


GENERATORS = {"review_sentiment": _review, "ticket_routing": _ticket}


def generate_rows(task: str, n: int, seed: int) -> list[dict]:
    """Return ``n`` rows ``{"text", "label"}`` for ``task``, the same for the same seed."""
    if task not in GENERATORS:
        raise ValueError(f"unknown demo task {task!r}; expected one of {sorted(GENERATORS)}")
    rng = random.Random(f"{task}:{seed}")
    return [dict(zip(("text", "label"), GENERATORS[task](rng))) for _ in range(n)]


SPLITS = {"train": (240, 0), "eval": (160, 1), "fresh": (160, 2)}


def write_demo_data(out_dir: str | Path) -> list[Path]:
    """Write ``<task>/<split>.jsonl`` for every demo task; returns the written paths."""
    written = []
    for task in GENERATORS:
        for split, (n, seed) in SPLITS.items():
            path = Path(out_dir) / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps(r, sort_keys=True) for r in generate_rows(task, n, seed)]
            path.write_text("\n".join(lines) + "\n")
            written.append(path)
    return written


if __name__ == "__main__":  # python -m rightsizer.demo.data tasks/data
    import sys

    for p in write_demo_data(sys.argv[1] if len(sys.argv) > 1 else "tasks/data"):
        print(p)
