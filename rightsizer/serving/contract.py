"""What a task's serving engine takes and gives, apart from the model (no torch here).

``EngineConfig`` (sizes and limits of one engine), the checks of a request's inputs that need
no tokenizer (``validate_texts``, ``check_top_logprobs``) and the :class:`Answer` record. The
request parser (``rightsizer.serving.api``) imports this module, not the engine
(``rightsizer.serving.engine``), so parsing a request loads no model code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rightsizer.errors import ConfigError
from rightsizer.schema.check import build
from rightsizer.serving.errors import bad_request

DEADLINE_S = 120.0  # a request not answered by then gets 504 (the router waits longer: scale-up, load)
CACHE_SCOPES = ("salted", "shared")
# No tokenizer's token is longer than this many characters on average over a text: an input
# longer than this times the context is refused from its length, before it is tokenized (a
# multi-megabyte body would hold a worker and the interpreter for seconds)
MAX_CHARS_PER_TOKEN = 32
MAX_TOP_LOGPROBS = 20  # alternatives per answer token (vLLM's default max_logprobs)


@dataclass
class EngineConfig:
    """Sizes and limits of one task's engine (the continuous batch's KV cache is sized here,
    never from the machine's free memory)."""

    page_size: int = 32  # tokens per KV-cache page
    num_blocks: int = 128  # KV-cache blocks: page_size * num_blocks tokens in flight
    max_batch_tokens: int = 512  # tokens per forward pass of the continuous batch
    max_requests_per_batch: int = 64
    allow_block_sharing: bool = True  # shared prompt prefixes (template, shots) cached once
    score_window_s: float = 0.005  # how long a scoring micro-batch waits for more requests
    score_max_batch: int = 32  # prompts per scoring micro-batch
    max_queue: int = 64  # inputs in flight per task; beyond it: 503 with Retry-After
    cache_size: int = 1024  # exact-match response cache entries (0: no cache)
    # who may be answered from the cache: "salted" (only requests with the same cache_salt:
    # a client cannot tell from the answer's speed whether another one asked the same text) or
    # "shared" (every client, the operator's choice for one trusted caller)
    cache_scope: str = "salted"
    deadline_s: float = DEADLINE_S
    retry_after_s: int = 1
    # serve the bundle's cascade (rightsizer.bundle.CASCADE_FILE) when it has one: the small
    # model answers, the chosen one below the confidence threshold (rightsizer.serving.cascade)
    cascade: bool = False

    @classmethod
    def from_dict(cls, data: dict | None) -> EngineConfig:
        """An engine config from a plain dict (a project param, ``serve.sh`` settings): unknown
        keys are named, then the types (the typed validator of every file people write,
        ``rightsizer.schema.check``) and the values; every problem at once."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"engine: unknown setting(s) {unknown}; expected some of {sorted(known)}")
        problems: list[str] = []
        config = build(cls, data, "engine", problems)
        if config is None:
            raise ConfigError(problems)
        if config.cache_scope not in CACHE_SCOPES:
            problems.append(f"engine.cache_scope: {config.cache_scope!r}; expected one of {list(CACHE_SCOPES)}")
        for f in dataclasses.fields(cls):
            value = getattr(config, f.name)
            if isinstance(value, (bool, str)):
                continue
            if value < 0 or (value == 0 and f.name not in ("cache_size", "score_window_s")):
                problems.append(f"engine.{f.name}: {value!r}; expected a positive number")
        if problems:
            raise ConfigError(problems)
        return config

    @classmethod
    def for_load(cls, batch: int, prompt_tokens: int, output_tokens: int, **settings) -> EngineConfig:
        """An engine sized for a planned load: ``batch`` sequences of ``prompt_tokens`` +
        ``output_tokens`` in flight (a fleet plan's placement), the KV cache and the batch limit
        from them instead of the defaults; ``settings`` override."""
        page = int(settings.get("page_size", cls.page_size))
        tokens = max(1, batch) * (prompt_tokens + output_tokens)
        sized = {"num_blocks": max(1, -(-tokens // page)), "max_requests_per_batch": max(1, batch),
                 "max_batch_tokens": max(cls.max_batch_tokens, prompt_tokens + output_tokens)}
        return cls.from_dict({**sized, **settings})


@dataclass
class Answer:
    """One input's served answer: the task type's response and its token counts."""

    response: dict
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False
    finish_reason: str = "stop"  # "length": the generation was cut at its token budget
    # asked for (``logprobs``): per answer token, {"token", "logprob", "top": [[token, logprob], ...]};
    # a classification task's one "token" is its label, its alternatives the other labels
    logprobs: list[dict] | None = None
    # the task type's confidence in the answer (``TaskType.confidence``), unrounded: what a
    # served cascade compares with its threshold; a label's always, a free-text answer's only
    # when asked for (``TaskEngine.answer(confidence=True)``: one more forward pass), else None
    confidence: float | None = None


def check_top_logprobs(top: Any, name: str = "logprobs") -> int | None:
    """``top`` (alternatives per answer token) when it is None or an integer from 0 to
    ``MAX_TOP_LOGPROBS``; a 400 naming ``name`` otherwise."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise bad_request(f"{name}: {top!r}; expected an integer from 0 to {MAX_TOP_LOGPROBS}", param=name)
    return top


def validate_texts(inputs: Any, input_field: str, name: str = "inputs") -> list[str]:
    """A request's inputs as a non-empty list of strings (an object with ``input_field`` is
    taken too); a 400 naming the first bad item otherwise."""
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise bad_request(f"{name}: expected a non-empty list of strings, got {type(inputs).__name__}",
                          param=name)
    out = []
    for i, x in enumerate(inputs):
        if isinstance(x, dict):
            x = x.get(input_field)
        if not isinstance(x, str) or not x.strip():
            raise bad_request(f"{name}[{i}]: expected a non-empty string (or an object with "
                              f"'{input_field}'), got {x!r}"[:300], param=f"{name}[{i}]")
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from JSON "\ud800": no tokenizer takes it
            raise bad_request(f"{name}[{i}]: contains an unpaired surrogate (not valid Unicode text)",
                              param=f"{name}[{i}]") from None
        out.append(x)
    return out
