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


def tokenize_examples(tokenizer, examples: list[tuple[str, str]], max_seq_len: int,
                      answer_end: str | None = None) -> list[dict]:
    """Token ids and labels (-100 on the prompt) per example, at most ``max_seq_len`` tokens.

    The answer is encoded with its prompt and split off (``prompting.split_continuation``, as
    scoring does) and ends with ``answer_end`` (the chat template's end-of-turn token) or the
    tokenizer's end-of-sequence token, in the loss too: without it a model fine-tuned to
    generate learns where an answer starts but not where it ends, and runs on past it until
    ``max_new_tokens``. An example too long is cut from the start of its prompt (its BOS
    kept), so the answer survives; ``truncated`` marks it.
    """
    from rightsizer.prompting import split_continuation

    if answer_end and answer_end not in tokenizer.get_vocab():
        raise ConfigError(f"answer_end: {answer_end!r} is not a token of {tokenizer.name_or_path}; "
                          "expected one token of its vocabulary (or none: its EOS)")
    end_id = tokenizer.convert_tokens_to_ids(answer_end) if answer_end else tokenizer.eos_token_id
    end = [end_id] if isinstance(end_id, int) and end_id >= 0 else []
    bos = tokenizer.bos_token_id
    rows = []
    for i, (prompt, answer) in enumerate(examples):
        p, a = split_continuation(tokenizer, prompt, answer)
        a = a + end
        over = len(p) + len(a) - max_seq_len
        if over > 0:
            head = p[:1] if p and bos is not None and p[0] == bos else []
            p = head + p[len(head) + min(over, len(p) - len(head)):]
            a = a[:max_seq_len - len(p)]  # an answer longer than the whole budget: its start
        rows.append({"input_ids": p + a, "labels": [-100] * len(p) + a, "idx": i, "truncated": over > 0})
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
