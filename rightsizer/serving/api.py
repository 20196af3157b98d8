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

from rightsizer.serving.engine import Answer, validate_texts
from rightsizer.serving.errors import bad_request

KINDS = ("v2", "completions", "chat", "models")


@dataclass
class ParsedRequest:
    """A request reduced to what the engine needs."""

    kind: str
    task: str | None
    inputs: list[str]
    max_tokens: int | None = None
    stream: bool = False  # server-sent events, one input (completions and chat)


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
    if kind == "models":
        return ParsedRequest("models", None, [])
    if kind == "v2":
        if path_task not in tasks:
            raise bad_request(f"model: {path_task!r} is not a served task; expected one of {tasks}",
                              param="model")
        body = _obj(body)
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise bad_request("parameters: expected an object", param="parameters")
        return ParsedRequest("v2", path_task, validate_texts(body.get("inputs"), input_field),
                             _max_tokens(params, "max_tokens"))
    body = _obj(body)
    task = _task(body, "model", tasks)
    stream = _stream(body)
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
        return ParsedRequest("completions", task, texts, _max_tokens(body, "max_tokens"), stream)
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
                             _max_tokens(body, "max_completion_tokens", "max_tokens"), stream)
    raise bad_request(f"route: unknown request kind {kind!r}; expected one of {list(KINDS)}")


def answer_text(response: dict) -> str:
    """The text an OpenAI client reads: the label for classification, the answer otherwise."""
    return str(response.get("label", response.get("generated", "")))


def _usage(answers: list[Answer]) -> dict:
    p = sum(a.prompt_tokens for a in answers)
    c = sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def shape_response(req: ParsedRequest, answers: list[Answer]) -> dict:
    """The response body of an answered request."""
    now = int(time.time())
    if req.kind == "v2":
        return {"id": uuid.uuid4().hex, "model_name": req.task,
                "outputs": [a.response for a in answers], "usage": _usage(answers)}
    if req.kind == "completions":
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": now,
                "model": req.task, "usage": _usage(answers),
                "choices": [{"index": i, "text": answer_text(a.response), "finish_reason": "stop",
                             "logprobs": None, "rightsizer": a.response}
                            for i, a in enumerate(answers)]}
    if req.kind == "chat":
        a = answers[0]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": now,
                "model": req.task, "usage": _usage(answers),
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": answer_text(a.response)},
                             "rightsizer": a.response}]}
    raise ValueError(f"kind: {req.kind!r} has no answers to shape")


def stream_chunk(req: ParsedRequest, stream_id: str, created: int, delta: str | None = None,
                 answer: Answer | None = None) -> dict:
    """One server-sent event's body of a streamed completion or chat completion: a text delta,
    or (with ``answer``) the last chunk with its finish reason, usage and the task type's response."""
    done = answer is not None
    if req.kind == "completions":
        choice: dict[str, Any] = {"index": 0, "text": delta or "", "logprobs": None,
                                  "finish_reason": "stop" if done else None}
        obj = "text_completion"
    elif req.kind == "chat":
        choice = {"index": 0, "delta": {} if done else {"role": "assistant", "content": delta or ""},
                  "logprobs": None, "finish_reason": "stop" if done else None}
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
