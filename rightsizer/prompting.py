"""The one home of the prompt format: how a task's text becomes what a model reads.

A task spec's ``prompt_format`` is ``auto`` (the tokenizer's chat template when it has one,
raw text otherwise), ``chat`` (the template; an error when the tokenizer has none) or
``raw``. ``resolve`` binds a spec to a tokenizer: the result (``PromptFormat``) rides on the
spec as a runtime field, so every caller of ``inference.build_prompt`` (scoring,
generation, training, serving) renders the same way.

- raw: the filled template, few-shot examples before it as ``"<prompt> <answer>"`` blocks
  separated by a blank line, the spec's ``system`` text first;
- chat: the spec's ``system`` as a system turn, each few-shot example as a user turn and an
  assistant turn (lm-evaluation-harness's ``--fewshot_as_multiturn``), the filled template
  as the last user turn, rendered by ``tokenizer.apply_chat_template`` with the generation
  prompt.

Token-level rules, the same for every caller (lm-evaluation-harness's method):

- ``encode``: a rendered chat prompt already holds the template's BOS; it is never doubled;
- ``split_continuation``: an answer is encoded together with its context and split off,
  not tokenized apart (no stray ``"▁"`` piece with SentencePiece-style tokenizers); it
  follows the context after a space, or directly when the context ends in whitespace (a
  chat generation prompt ends with a line break);
- generation stops at EOS and the family's end-of-turn tokens (``stop_token_ids``) and at
  the spec's ``stop`` strings (``stop_strings``; by default a line break for raw-text tasks
  whose answer is one line, nothing in chat format, where the turn's end ends the answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rightsizer.errors import ConfigError
from rightsizer.families import end_of_turn_tokens

if TYPE_CHECKING:
    from rightsizer.schema.task import TaskSpec

PROMPT_FORMATS = ("auto", "chat", "raw")

__all__ = ["PROMPT_FORMATS", "PromptFormat", "answer_separator", "cut_at_stop", "encode", "format_name",
           "has_chat_template", "resolve", "split_continuation", "stop_strings", "stop_token_ids"]


@dataclass(frozen=True)
class PromptFormat:
    """A task's prompt format bound to one tokenizer (``resolve``)."""

    kind: str  # "chat" or "raw"
    tokenizer: Any = None  # the tokenizer whose chat template renders (chat only)
    end_of_answer: str | None = None  # the token text that ends a trained answer (chat: the turn's end)

    def render(self, system: str | None, turns: list[tuple[str, str]], user: str) -> str:
        """The prompt for ``user`` after the solved ``turns`` ((input, answer) pairs)."""
        if self.kind == "raw":
            blocks = [f"{q} {a}" for q, a in turns] + [user]
            head = [system] if system else []
            return "\n\n".join(head + blocks)
        messages = [{"role": "system", "content": system}] if system else []
        for q, a in turns:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": user})
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # a template that refuses a system turn (Gemma 2) or raises itself
            name = getattr(self.tokenizer, "name_or_path", "the tokenizer")
            raise ConfigError(f"prompt_format: the chat template of {name} cannot render this task's "
                              f"prompt ({type(e).__name__}: {e}); set prompt_format: raw, or drop "
                              f"'system' if the template takes no system turn") from None


def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def resolve(spec: TaskSpec, tokenizer, model_type: str | None = None) -> PromptFormat:
    """The format ``spec`` asks for, bound to ``tokenizer``; ``chat`` without a template is an
    error naming the task and the tokenizer."""
    want = spec.prompt_format
    if want == "raw" or (want == "auto" and not has_chat_template(tokenizer)):
        return PromptFormat("raw", end_of_answer=None)
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or "its model"
        raise ConfigError(f"prompt_format: chat, but the tokenizer of {name} has no chat template; "
                          "expected auto (raw text then) or raw", spec.name)
    ends = [t for t in end_of_turn_tokens(model_type) if _token_id(tokenizer, t) is not None]
    return PromptFormat("chat", tokenizer, end_of_answer=ends[0] if ends else None)


def format_name(spec: TaskSpec) -> str:
    """``chat`` or ``raw``: the format ``spec``'s prompts are rendered in (raw until resolved)."""
    return spec.rendering.kind if spec.rendering is not None else "raw"


def _token_id(tokenizer, token: str) -> int | None:
    """The id of ``token`` when it is one token of ``tokenizer``'s vocabulary."""
    vocab = tokenizer.get_vocab()
    return vocab.get(token)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt: the tokenizer's special tokens added unless the text already
    starts with its BOS (a chat template wrote it)."""
    bos = tokenizer.bos_token
    special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def answer_separator(context: str) -> str:
    """What goes between a prompt and its answer: nothing after whitespace, else a space."""
    return "" if not context or context[-1].isspace() else " "


def split_continuation(tokenizer, context: str, continuation: str,
                       context_ids: list[int] | None = None) -> tuple[list[int], list[int]]:
    """``(context ids, continuation ids)``: the two encoded together and split where the
    context's own encoding ends, so the continuation's first token is the one the model
    would read after that context."""
    ctx = encode(tokenizer, context) if context_ids is None else context_ids  # callers scoring many answers pass it once
    whole = encode(tokenizer, context + answer_separator(context) + continuation)
    return whole[:len(ctx)], whole[len(ctx):]


def stop_token_ids(model_config, tokenizer, generation_config=None) -> list[int]:
    """Where generation stops: the model's own end tokens (its generation config's, which an
    instruct model often lists with its end of turn, and its config's), the tokenizer's EOS,
    and the family's end-of-turn tokens that ``tokenizer`` has."""
    ids: list[int] = []
    values: list = []
    for source in (generation_config, model_config):
        eos = getattr(source, "eos_token_id", None)
        values += eos if isinstance(eos, list) else [eos]
    for value in values + [tokenizer.eos_token_id]:
        if isinstance(value, int) and value >= 0 and value not in ids:
            ids.append(value)
    for token in end_of_turn_tokens(getattr(model_config, "model_type", None)):
        i = _token_id(tokenizer, token)
        if i is not None and i not in ids:
            ids.append(i)
    return ids


def stop_strings(spec: TaskSpec, type_default: str | None) -> tuple[str, ...]:
    """Where a generated answer is cut: the spec's ``stop`` strings, else the task type's
    default (``"newline"``: a line break) in raw format, and nothing in chat format."""
    if spec.stop is not None:
        return tuple(spec.stop)
    if type_default == "newline" and format_name(spec) == "raw":
        return ("\n",)
    return ()


def cut_at_stop(text: str, stops: tuple[str, ...] | list[str]) -> str:
    """``text`` up to the first of the stop strings, stripped."""
    text = text.strip()
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut] if cut >= 0 else text).strip()
