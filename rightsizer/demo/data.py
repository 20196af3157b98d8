"""Deterministic task data for the offline demo application.

Five tasks of a small support assistant:

* ``review_sentiment``: product reviews whose polarity is often flipped by a negation
  ("not bad", "didn't love"), so word-spotting alone scores near chance.
* ``ticket_routing``: support tickets routed to one of four queues.
* ``chat_routing``: live-chat messages routed to the same queues; about a third in Spanish.
* ``order_extraction``: the order id (copied), product (its catalogue name, however the
  message names it) and issue (a code) of a customer message, written as
  ``order_id: #48213; product: laptop; issue: damaged``.
* ``answer_drafting``: replies to policy questions, from the policy / FAQ knowledge base of
  ``rightsizer.demo.knowledge`` (written as ``answer_drafting/knowledge/<policy>.md``).

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


# Order problems: the order id is copied, the product and the issue normalised to a name / code.
ISSUES = {
    "damaged": ["arrived broken", "came with a cracked screen", "is damaged", "was dented in the box"],
    "missing_part": ["came without the charger", "is missing the cable", "has no power adapter"],
    "wrong_item": ["is the wrong colour", "is not what I ordered", "is a different model"],
    "late": ["has not arrived yet", "is two weeks late", "is still not delivered"],
}
# a product is named in several ways; the answer gives its catalogue name
PRODUCTS = {"laptop": ["laptop", "notebook"], "phone": ["phone", "smartphone"],
            "tablet": ["tablet", "ipad"], "router": ["router", "modem"],
            "watch": ["watch", "smartwatch"], "camera": ["camera", "webcam"],
            "printer": ["printer", "scanner"], "speaker": ["speaker", "soundbar"]}
# Every id follows a space, as in the answer ("order_id: #48213"): the byte-level tokenizer
# would make "(#" one token, and a model that copies the id by what comes before it would
# then have no "#" token to look for.
ORDER_MESSAGES = ["hi, my order {oid} arrived but the {item} {issue}",
                  "order {oid}: the {item} {issue}, please help",
                  "the {item} from order {oid} {issue}",
                  "my {item} {issue}. order number {oid}",
                  "hello, the {item} I bought (order {oid}) {issue}"]


def order_answer(order_id: str, product: str, issue: str) -> str:
    """The reference answer of ``order_extraction``, in its spec's ``key_value`` format."""
    return f"order_id: {order_id}; product: {product}; issue: {issue}"


def _order(rng: random.Random) -> tuple[str, str]:
    oid = f"#{rng.randrange(10000, 100000)}"
    item, issue = rng.choice(sorted(PRODUCTS)), rng.choice(sorted(ISSUES))
    text = rng.choice(ORDER_MESSAGES).format(oid=oid, item=rng.choice(PRODUCTS[item]),
                                             issue=rng.choice(ISSUES[issue]))
    return text, order_answer(oid, item, issue)


# chat_routing: live-chat messages to the same queues, about a third of them in Spanish
# (written without accents, as people type in a chat). Only the biggest demo model is
# pre-trained on Spanish tickets (``demo.bootstrap``): the smaller ones route English messages
# and guess at Spanish ones, mostly unsure (the demo's cascade task).
SPANISH_SHARE = 0.35
INTENTS_ES = {
    "billing": ["me cobraron dos veces por mi {item}", "la factura de mi {item} esta mal",
                "devuelvanme el pago de mi {item}", "fallo el pago con tarjeta de mi {item}",
                "por que hay un cargo extra en mi {item}"],
    "shipping": ["mi {item} todavia no llega", "el paquete de mi {item} se perdio",
                 "donde esta el envio de mi {item}", "el mensajero dejo mi {item} en otra puerta",
                 "cuando mandan mi {item}"],
    "technical": ["mi {item} no enciende", "mi {item} se cuelga desde la actualizacion",
                  "mi {item} no se conecta a la red", "no se instala el programa de mi {item}",
                  "mi {item} muestra un codigo de error"],
    "account": ["no puedo entrar a mi cuenta", "cambien mi contrasena por favor",
                "como cambio el correo de mi cuenta", "mi cuenta esta bloqueada",
                "borren mi perfil y mis datos"],
}
ITEMS_ES = ["portatil", "telefono", "tableta", "enrutador", "reloj", "camara", "impresora", "altavoz"]
POLITE_ES = ["", "gracias", "ayuda por favor", "es urgente"]


def spanish_ticket(rng: random.Random) -> tuple[str, str]:
    """A support ticket in Spanish and its queue (``INTENTS_ES``)."""
    label = rng.choice(sorted(INTENTS_ES))
    text = rng.choice(INTENTS_ES[label]).format(item=rng.choice(ITEMS_ES))
    tail = rng.choice(POLITE_ES)
    return (f"{text}, {tail}" if tail else text), label


_FIRST_WORDS_ES = {p.split()[0] for phrases in INTENTS_ES.values() for p in phrases}


def is_spanish(text: str) -> bool:
    """Whether a chat_routing message is one of ``spanish_ticket``'s (by its first word)."""
    words = text.split()
    return bool(words) and words[0] in _FIRST_WORDS_ES


def _chat(rng: random.Random) -> tuple[str, str]:
    return spanish_ticket(rng) if rng.random() < SPANISH_SHARE else _ticket(rng)


GENERATORS = {"review_sentiment": _review, "ticket_routing": _ticket, "order_extraction": _order,
              "chat_routing": _chat}
LABEL_FIELDS = {"order_extraction": "answer"}  # the others' gold is "label"


def generate_rows(task: str, n: int, seed: int) -> list[dict]:
    """Return ``n`` rows ``{"text", "label"}`` (``{"text", "answer"}`` for ``order_extraction``)
    for ``task``, the same for the same seed."""
    if task not in GENERATORS:
        raise ValueError(f"unknown demo task {task!r}; expected one of {sorted(GENERATORS)}")
    rng = random.Random(f"{task}:{seed}")
    keys = ("text", LABEL_FIELDS.get(task, "label"))
    return [dict(zip(keys, GENERATORS[task](rng))) for _ in range(n)]


SPLITS = {"train": (240, 0), "eval": (160, 1), "fresh": (160, 2)}
KNOWLEDGE_SPLITS = {"train": (64, 0), "eval": (96, 1), "fresh": (96, 2)}  # answer_drafting


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r, sort_keys=True) for r in rows) + "\n")
    return path


def write_demo_data(out_dir: str | Path) -> list[Path]:
    """Write ``<task>/<split>.jsonl`` for every demo task and answer_drafting's knowledge
    base (``answer_drafting/knowledge/``); returns the written paths."""
    from rightsizer.demo.knowledge import knowledge_questions, write_knowledge_base

    out = Path(out_dir)
    written = [_write_jsonl(out / task / f"{split}.jsonl", generate_rows(task, n, seed))
               for task in GENERATORS for split, (n, seed) in SPLITS.items()]
    written += [_write_jsonl(out / "answer_drafting" / f"{split}.jsonl", knowledge_questions(n, seed))
                for split, (n, seed) in KNOWLEDGE_SPLITS.items()]
    kb = write_knowledge_base(out / "answer_drafting" / "knowledge")
    return written + sorted(kb.iterdir())


if __name__ == "__main__":  # python -m rightsizer.demo.data tasks/data
    import sys

    for p in write_demo_data(sys.argv[1] if len(sys.argv) > 1 else "tasks/data"):
        print(p)
