"""Training data: (prompt, answer) examples, tokenized with the loss on the answer only."""

from __future__ import annotations

import json
from pathlib import Path

from rightsizer.errors import ConfigError


def load_examples(source, prompt_template: str | None = None, text_field: str = "text",
                  label_field: str = "label") -> list[tuple[str, str]]:
    """``(prompt, answer)`` pairs from a list (pairs or dicts) or a JSONL file.

    A row is ``{"prompt": ..., "answer": ...}``, or ``{text_field: ..., label_field: ...}``
    turned into a prompt by ``prompt_template`` (``"Review: {text}\\nSentiment:"``).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"train_data: no such file {str(path)!r}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"train_data {path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise ConfigError(f"train_data {path}:{i}: not JSON ({e})") from None
    else:
        rows = list(source or [])
    out, problems = [], []
    for i, row in enumerate(rows):
        if isinstance(row, (list, tuple)) and len(row) == 2:
            out.append((str(row[0]), str(row[1])))
        elif isinstance(row, dict) and "prompt" in row and "answer" in row:
            out.append((str(row["prompt"]), str(row["answer"])))
        elif isinstance(row, dict) and text_field in row and label_field in row:
            tpl = prompt_template or "{" + text_field + "}"
            try:
                out.append((tpl.format(**row), str(row[label_field])))
            except KeyError as e:
                problems.append(f"train_data row {i}: prompt_template needs field {e}")
        else:
            problems.append(f"train_data row {i}: expected (prompt, answer), {{'prompt', 'answer'}} "
                            f"or {{{text_field!r}, {label_field!r}}}")
        if len(problems) >= 5:
            break
    if problems:
        raise ConfigError(problems)
    return out


def tokenize_examples(tokenizer, examples: list[tuple[str, str]], max_seq_len: int) -> list[dict]:
    """Token ids and labels (-100 on the prompt) per example, cut to ``max_seq_len``.

    The answer ends with the tokenizer's end-of-sequence token, in the loss too: without it a
    model fine-tuned to generate (extraction, generation) learns where an answer starts but
    not where it ends, and runs on past it until ``max_new_tokens``.
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    rows = []
    for i, (prompt, answer) in enumerate(examples):
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + eos
        ids = (p + a)[:max_seq_len]
        labels = ([-100] * len(p) + a)[:max_seq_len]
        rows.append({"input_ids": ids, "labels": labels, "idx": i})
    return rows


class ListDataset:
    """A map-style dataset over a list of dicts (what the Trainer's sampler needs)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class Collator:
    """Pads a batch and remembers which examples and how many tokens this rank saw."""

    def __init__(self, pad_id: int, record_limit: int = 100_000):
        self.pad_id = pad_id
        self.seen: list[int] = []
        self.tokens = 0
        self.record_limit = record_limit

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[j, :n] = torch.tensor(r["input_ids"])
            labels[j, :n] = torch.tensor(r["labels"])
            mask[j, :n] = 1
            self.tokens += n
            if len(self.seen) < self.record_limit:
                self.seen.append(int(r["idx"]))
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
