"""The serving protocol, apart from any web framework: requests in, response bodies out.

Four routes share one engine per task:

- ``POST /v2/models/<task>/infer`` with ``{"inputs": [...]}`` (the V2 shape existing clients
  use) -> ``{"id", "model_name", "outputs": [<task type's response>, ...]}``;
- ``POST /v1/completions`` (``model`` = task name, ``prompt`` = the task's input, a string or
  a list of strings) and ``POST /v1/chat/completions`` (one user message, the input; a system
  message or earlier turns get a 400 naming them, since the served prompt is the evaluated one):
  OpenAI-shaped, with ``usage`` token counts; the task type's full response (label and
  probabilities, parsed answer) rides along in each choice as ``rightsizer``;
- ``GET /v1/models``: one card per task, including the ones that failed to load.

The server applies the task's template and few-shot examples to the input, exactly as the
evaluate step did, so a client sends the raw input, not a prompt.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rightsizer.routing import KINDS
from rightsizer.serving.contract import Answer, check_top_logprobs, validate_texts
from rightsizer.serving.errors import bad_request

MAX_STOP = 8  # stop strings per request (OpenAI takes 4, vLLM more)

# The body fields each route takes; any other field is refused by name (a field accepted and
# not applied would be a silent wrong answer). Sampling fields are taken only at their greedy
# value: every answer is the greedy one the evaluate step measured (docs/serving.md).
_COMMON = {"model", "stream", "stream_options", "n", "max_tokens", "stop", "temperature", "top_p", "top_k",
           "seed", "presence_penalty", "frequency_penalty", "repetition_penalty", "logprobs", "logit_bias",
           "user", "cache_salt", "best_of", "response_format", "metadata", "ignore_eos"}
FIELDS = {"completions": _COMMON | {"prompt", "echo", "suffix"},
          "chat": _COMMON | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
                             "parallel_tool_calls", "functions", "function_call"}}
V2_PARAMETERS = {"max_tokens", "stop", "cache_salt"}


@dataclass
class ParsedRequest:
    """A request reduced to what the engine needs."""

    kind: str
    task: str | None
    inputs: list[str]
    max_tokens: int | None = None
    stream: bool = False  # server-sent events, one input (completions and chat)
    stop: list[str] | None = None  # the client's stop strings, on top of the task's own
    cache_salt: str | None = None  # answers are cached and reused only among requests with this salt
    ignore_eos: bool = False  # vLLM's: a generation runs to max_tokens (load generators fix output lengths)
    logprobs: int | None = None  # asked for: each answer token's log-probability, with this many alternatives


def _obj(body: Any) -> dict:
    if not isinstance(body, dict):
        raise bad_request(f"body: expected a JSON object, got {type(body).__name__}", param="body")
    return body


def _task(body: dict, field: str, tasks: list[str]) -> str:
    name = body.get(field)
    if not isinstance(name, str) or not name:
        raise bad_request(f"{field}: expected a task name, one of {tasks}", param=field)
    if name not in tasks:
        raise bad_request(f"{field}: {name!r} is not a served task; expected one of {tasks}", param=field)
    return name


def _max_tokens(body: dict, *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_request(f"{name}: {value!r}; expected a positive integer", param=name)
        return value
    return None


def _number(body: dict, name: str, lo: float, hi: float, greedy: float | None,
            why: str = "") -> None:
    """A sampling field: a number in [lo, hi] (as vLLM checks it), taken at its greedy value only."""
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise bad_request(f"{name}: {value!r}; expected a number from {lo:g} to {hi:g}", param=name)
    if greedy is not None and value != greedy:
        raise bad_request(f"{name}: {value!r}; this server answers greedily, as each task's quality was "
                          f"measured: send {greedy:g} or leave it out{why}", param=name)


def _refused(body: dict, name: str, allowed: tuple = (None,), why: str = "") -> None:
    value = body.get(name)
    if value not in allowed:
        raise bad_request(f"{name}: {value!r} is not supported here{why}", param=name)


def _options(kind: str, body: dict) -> tuple[list[str] | None, str | None, bool]:
    """Check every field of an OpenAI body: unknown ones and ones this server does not apply are
    refused by name; returns the applied ones that reach the engine (stop strings, cache salt)."""
    unknown = sorted(set(body) - FIELDS[kind])
    if unknown:
        raise bad_request(f"unknown field(s) {unknown}; this route takes {sorted(FIELDS[kind])}",
                          param=unknown[0])
    _number(body, "temperature", 0, 2, 0)
    _number(body, "top_p", 1e-9, 1, 1)
    _number(body, "presence_penalty", -2, 2, 0)
    _number(body, "frequency_penalty", -2, 2, 0)
    _number(body, "repetition_penalty", 1e-9, 100, 1)
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k not in (-1, 0, 1)):
        raise bad_request(f"top_k: {top_k!r}; this server answers greedily: send -1, 0 or 1, or leave it out",
                          param="top_k")
    seed = body.get("seed")  # greedy answers do not depend on it: any integer gives the same answer
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request(f"seed: {seed!r}; expected an integer", param="seed")
    if body.get("best_of") not in (None, 1):
        raise bad_request(f"best_of: {body.get('best_of')!r}; one greedy answer per input: expected 1",
                          param="best_of")
    if kind == "chat":
        if body.get("tool_choice") not in (None, "none") and not body.get("tools"):
            raise bad_request(f"tool_choice: {body.get('tool_choice')!r} needs tools", param="tool_choice")
        for name in ("tools", "functions", "function_call", "tool_choice", "parallel_tool_calls"):
            _refused(body, name, (None, [], "none", False), ": a task model answers its task, it calls no tools")
    else:
        _refused(body, "echo", (None, False))
        _refused(body, "suffix", (None, ""))
    _refused(body, "logit_bias", (None, {}))
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise bad_request(f"response_format: {fmt!r} is not supported here; an extraction task's answer "
                          "format is its task spec's (extraction.format)", param="response_format")
    opts = body.get("stream_options")
    if opts is not None and (not isinstance(opts, dict) or set(opts) - {"include_usage", "continuous_usage_stats"}):
        raise bad_request(f"stream_options: {opts!r}; expected {{'include_usage': true|false}} (the last "
                          "chunk always carries usage)", param="stream_options")
    for name in ("user",):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise bad_request(f"{name}: {body[name]!r}; expected a string", param=name)
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise bad_request(f"metadata: {body['metadata']!r}; expected an object", param="metadata")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise bad_request(f"ignore_eos: {ignore_eos!r}; expected true or false", param="ignore_eos")
    return _stop(body), _salt(body), ignore_eos


def _logprobs(kind: str, body: dict, stream: bool) -> int | None:
    """How many alternatives per answer token the client asked for, or None when it asked for no
    log-probabilities: completions' ``logprobs: k``; chat's ``logprobs: true`` and ``top_logprobs``."""
    if kind == "chat":
        asked = body.get("logprobs")
        if asked is not None and not isinstance(asked, bool):
            raise bad_request(f"logprobs: {asked!r}; expected true or false", param="logprobs")
        top = check_top_logprobs(body.get("top_logprobs"), "top_logprobs")
        if top is not None and not asked:
            raise bad_request("top_logprobs: needs logprobs: true", param="top_logprobs")
        top = (top or 0) if asked else None
    else:
        top = check_top_logprobs(body.get("logprobs"))
    if top is not None and stream:
        raise bad_request("logprobs: not returned on a stream here; ask without stream: true", param="logprobs")
    return top


def _stop(body: dict) -> list[str] | None:
    value = body.get("stop")
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if (not isinstance(stops, list) or not 1 <= len(stops) <= MAX_STOP
            or not all(isinstance(x, str) and x for x in stops)):
        raise bad_request(f"stop: {value!r}; expected a non-empty string or a list of 1 to {MAX_STOP} of them",
                          param="stop")
    return stops


def _salt(body: dict) -> str | None:
    value = body.get("cache_salt")
    if value is not None and (not isinstance(value, str) or not value or len(value) > 256):
        raise bad_request(f"cache_salt: {value!r}; expected a non-empty string of at most 256 characters",
                          param="cache_salt")
    return value


def _stream(body: dict) -> bool:
    value = body.get("stream")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"stream: {value!r}; expected true or false", param="stream")
    return value


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


def parse_request(kind: str, body: Any, tasks: list[str], path_task: str | None = None,
                  input_field: str = "text") -> ParsedRequest:
    """Validate a request of ``kind`` against the served ``tasks``; a 400 names the field."""
    if kind in ("models", "health", "ready"):
        return ParsedRequest(kind, None, [])
    if kind == "v2":
        if path_task not in tasks:
            raise bad_request(f"model: {path_task!r} is not a served task; expected one of {tasks}",
                              param="model")
        body = _obj(body)
        params = body.get("parameters")
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise bad_request("parameters: expected an object", param="parameters")
        unknown = sorted(set(params) - V2_PARAMETERS)
        if unknown:
            raise bad_request(f"parameters: unknown {unknown}; expected some of {sorted(V2_PARAMETERS)}",
                              param=f"parameters.{unknown[0]}")
        return ParsedRequest("v2", path_task, validate_texts(body.get("inputs"), input_field),
                             _max_tokens(params, "max_tokens"), stop=_stop(params), cache_salt=_salt(params))
    body = _obj(body)
    if kind not in FIELDS:
        raise bad_request(f"route: unknown request kind {kind!r}; expected one of {list(KINDS)}")
    task = _task(body, "model", tasks)
    stream = _stream(body)
    stop, salt, ignore_eos = _options(kind, body)
    if body.get("n") not in (None, 1):
        raise bad_request(f"n: {body.get('n')!r}; one answer per input (greedy): expected 1", param="n")
    if kind == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            texts = validate_texts(prompt, input_field, name="prompt")
        else:
            texts = validate_texts(prompt if isinstance(prompt, str) else [prompt], input_field,
                                   name="prompt")
        if stream and len(texts) != 1:
            raise bad_request(f"prompt: {len(texts)} prompts with stream=true; a stream answers one prompt",
                              param="prompt")
        return ParsedRequest("completions", task, texts, _max_tokens(body, "max_tokens"), stream, stop, salt,
                             ignore_eos, _logprobs(kind, body, stream))
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("messages: expected a non-empty list of messages", param="messages")
        users = [(i, m) for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise bad_request("messages: no message with role 'user' (its content is the task's input)",
                              param="messages")
        i, last = users[-1]
        # the served answer must be the evaluated one: a client's system text or earlier turns
        # would change the prompt, so they are refused by name, never dropped silently
        extra = [j for j in range(len(messages)) if j != i]
        if extra:
            named = ", ".join(f"messages[{j}] (role {_role(messages[j])!r})" for j in extra)
            raise bad_request(
                f"{named}: task {task!r} answers one user message with the prompt it was evaluated "
                "with (its system text and examples come from the task spec); send the input as the "
                "only message", param=f"messages[{extra[0]}]")
        content = last.get("content")
        if isinstance(content, list):  # content parts: the text parts, joined
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            content = "\n".join(p for p in parts if isinstance(p, str)) if parts else None
        texts = validate_texts([content], input_field, name=f"messages[{i}].content")
        return ParsedRequest("chat", task, texts,
                             _max_tokens(body, "max_completion_tokens", "max_tokens"), stream, stop, salt,
                             ignore_eos, _logprobs(kind, body, stream))
    raise bad_request(f"route: unknown request kind {kind!r}; expected one of {list(KINDS)}")


def answer_text(response: dict) -> str:
    """The text an OpenAI client reads: the label for classification, the answer otherwise."""
    return str(response.get("label", response.get("generated", "")))


def _usage(answers: list[Answer]) -> dict:
    p = sum(a.prompt_tokens for a in answers)
    c = sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _model_field(req: ParsedRequest, answers: list[Answer]) -> str:
    """The OpenAI ``model`` field: the task, or under a cascade (``rightsizer.serving.cascade``)
    the model that answered, when one model answered every input (OpenAI names the model it
    ran, which may be more specific than the one asked for)."""
    names = {a.response.get("answered_by") for a in answers}
    return str(names.pop()) if len(names) == 1 and None not in names else req.task


def shape_response(req: ParsedRequest, answers: list[Answer]) -> dict:
    """The response body of an answered request."""
    now = int(time.time())
    if req.kind == "v2":
        return {"id": uuid.uuid4().hex, "model_name": req.task,
                "outputs": [a.response for a in answers], "usage": _usage(answers)}
    if req.kind == "completions":
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": now,
                "model": _model_field(req, answers), "usage": _usage(answers),
                "choices": [{"index": i, "text": answer_text(a.response), "finish_reason": a.finish_reason,
                             "logprobs": completion_logprobs(a.logprobs), "rightsizer": a.response}
                            for i, a in enumerate(answers)]}
    if req.kind == "chat":
        a = answers[0]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": now,
                "model": _model_field(req, answers), "usage": _usage(answers),
                "choices": [{"index": 0, "finish_reason": a.finish_reason, "logprobs": chat_logprobs(a.logprobs),
                             "message": {"role": "assistant", "content": answer_text(a.response)},
                             "rightsizer": a.response}]}
    raise ValueError(f"kind: {req.kind!r} has no answers to shape")


def completion_logprobs(entries: list[dict] | None) -> dict | None:
    """The completions ``logprobs`` object (tokens, their log-probabilities, the alternatives and
    each token's character offset in the answer), or None when not asked for."""
    if entries is None:
        return None
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [dict((t, v) for t, v in e["top"]) for e in entries], "text_offset": offsets}


def chat_logprobs(entries: list[dict] | None) -> dict | None:
    """The chat ``logprobs`` object (``content``: one entry per answer token), or None when not asked for."""
    if entries is None:
        return None

    def item(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [{**item(e["token"], e["logprob"]), "top_logprobs": [item(t, v) for t, v in e["top"]]}
                        for e in entries]}


def stream_chunk(req: ParsedRequest, stream_id: str, created: int, delta: str | None = None,
                 answer: Answer | None = None) -> dict:
    """One server-sent event's body of a streamed completion or chat completion: a text delta,
    or (with ``answer``) the last chunk with its finish reason, usage and the task type's response."""
    done = answer is not None
    if req.kind == "completions":
        choice: dict[str, Any] = {"index": 0, "text": delta or "", "logprobs": None,
                                  "finish_reason": answer.finish_reason if done else None}
        obj = "text_completion"
    elif req.kind == "chat":
        choice = {"index": 0, "delta": {} if done else {"role": "assistant", "content": delta or ""},
                  "logprobs": None, "finish_reason": answer.finish_reason if done else None}
        obj = "chat.completion.chunk"
    else:
        raise ValueError(f"kind: {req.kind!r} does not stream")
    body = {"id": stream_id, "object": obj, "created": created, "model": req.task, "choices": [choice]}
    if done:
        choice["rightsizer"] = answer.response
        body["usage"] = _usage([answer])
    return body


def sse(data: dict | str) -> str:
    """One server-sent event (``data: [DONE]`` ends an OpenAI stream)."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def models_list(cards: list[dict]) -> dict:
    """The ``/v1/models`` body."""
    now = int(time.time())
    return {"object": "list", "data": [{"created": now, **c} for c in cards]}
