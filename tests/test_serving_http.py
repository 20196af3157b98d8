"""The real HTTP server (``bash scripts/serve.sh``) on a free port, queried over real HTTP with
the official ``openai`` client: what the evaluate step measured is what is served.

The server runs the serving function's spec through MLRun's own entry point (the graph Nuclio
would run) behind an aiohttp listener; the artifacts folder is laid out as a
``size_and_deploy`` run leaves it (``rightsizer/<task>/quantize/bundle``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from rightsizer.bundle import write_bundle
from rightsizer.evaluate import evaluate_model, load_rows, score_predictions
from rightsizer.layout import RunLayout
from rightsizer.tasktypes import Predictions
from rightsizer.taskspec import load_task

ROOT = Path(__file__).resolve().parents[1]


def _specs() -> dict:
    routing = load_task(ROOT / "tasks" / "ticket_routing.yaml")
    note = dataclasses.replace(routing, name="routing_note", type="generation", metric="rouge_l",
                               labels=[], max_new_tokens=12, prompt="Note: {text}",
                               max_eval_examples=24)
    return {"ticket_routing": (routing, "tiny-s"),
            "review_sentiment": (load_task(ROOT / "tasks" / "review_sentiment.yaml"), "tiny-m"),
            "routing_note": (note, "tiny-s"),
            "order_extraction": (dataclasses.replace(load_task(ROOT / "tasks" / "order_extraction.yaml"),
                                                     max_eval_examples=48), "tiny-s")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KEY = "rs-test-key"  # the module's server requires it (--api-key); servers without keys ignore it


def _auth(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _post(url: str, body: bytes | dict, content_type: str = "application/json", key: str | None = KEY,
          method: str = "POST"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type, **_auth(key)},
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def write_run(demo_models: Path, artifacts: Path) -> RunLayout:
    """``artifacts`` laid out as a run leaves it: the tasks' bundles, and a ``broken_task`` bundle
    missing its model (it answers 503, the others serve)."""
    layout = RunLayout(artifacts)
    for task, (spec, model) in _specs().items():
        write_bundle(demo_models / "models" / model, spec, layout.bundle_dir(task),
                     base_model=f"demo:{model}", rung="zero_shot")
    broken = layout.bundle_dir("broken_task")
    broken.mkdir(parents=True)
    (broken / "rightsizer.json").write_text("{}")
    return layout


def start_serve(artifacts: Path, port: int, *args: str) -> tuple[str, subprocess.Popen, object]:
    """(base URL, process, log file) of ``scripts/serve.sh`` on ``artifacts`` (more of its
    arguments: ``args``), once it answers."""
    log = open(artifacts / "serve.log", "w")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "serve.sh"), "--port", str(port),
                             "--artifacts", str(artifacts), *args], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    # wait for the listener (a readiness wait, not an assertion on speed)
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"serve.sh exited {proc.returncode}:\n{(artifacts / 'serve.log').read_text()[-3000:]}")
        try:  # health needs no API key
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(1)
    return base, proc, log


def stop_serve(proc: subprocess.Popen, log) -> None:
    """Stop ``scripts/serve.sh`` as Ctrl-C does (SIGKILL if it has not ended within a minute)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def served(demo_models, tmp_path_factory):
    """(base URL, server process, artifacts) of a running ``scripts/serve.sh``."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    write_run(demo_models, artifacts)
    base, proc, log = start_serve(artifacts, _free_port(), "--api-key", KEY, "--api-key", "another-key",
                                  "--body-timeout", "3")
    yield base, proc, artifacts
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served[0]}/v1", api_key=KEY, max_retries=0, timeout=120)


def _v2(base: str, task: str, inputs: list[str]) -> list[dict]:
    status, _, body = _post(f"{base}/v2/models/{task}/infer", {"inputs": inputs})
    assert status == 200, body
    return json.loads(body)["outputs"]


def test_routes_are_printed(served):
    text = (served[2] / "serve.log").read_text()
    for route in ("POST", "/v2/models/{task}/infer", "/v1/completions", "/v1/chat/completions",
                  "/v1/models", "Ctrl-C"):
        assert route in text


def test_openai_client_models_completions_and_chat_for_every_task(served, client):
    base = served[0]
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"ticket_routing", "review_sentiment", "routing_note", "order_extraction",
                           "broken_task"}
    text = {"ticket_routing": "I was charged twice for my laptop",
            "review_sentiment": "the screen is not bad at all", "routing_note": "my card was charged twice",
            "order_extraction": "the notebook from order #48213 arrived broken"}
    for task, x in text.items():
        v2 = _v2(base, task, [x])[0]
        want = v2.get("label", v2["generated"])
        done = client.completions.create(model=task, prompt=x)
        assert done.model == task and done.choices[0].text == want
        assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
        assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
        chat = client.chat.completions.create(model=task, messages=[{"role": "user", "content": x}])
        assert chat.model == task and chat.choices[0].message.content == want
        assert chat.usage.completion_tokens > 0
    assert _v2(base, "ticket_routing", [text["ticket_routing"]])[0]["label"] == "billing"


def test_a_generation_streams_as_server_sent_events_that_join_up_to_the_answer(served, client):
    spec, _ = _specs()["routing_note"]
    rows = load_rows(spec, spec.eval_split, 8)
    chunks_seen = []
    for row in rows:
        x = row[spec.input_field]
        want = client.completions.create(model="routing_note", prompt=x).choices[0].text
        parts = list(client.completions.create(model="routing_note", prompt=x, stream=True))
        assert "".join(p.choices[0].text for p in parts) == want
        last = parts[-1]
        assert last.choices[0].finish_reason == "stop" and all(p.choices[0].finish_reason is None for p in parts[:-1])
        assert last.usage.prompt_tokens > 0 and last.usage.total_tokens == (
            last.usage.prompt_tokens + last.usage.completion_tokens)
        chat = list(client.chat.completions.create(model="routing_note", stream=True,
                                                   messages=[{"role": "user", "content": x}]))
        assert "".join(c.choices[0].delta.content or "" for c in chat) == want
        assert chat[-1].choices[0].finish_reason == "stop" and chat[-1].object == "chat.completion.chunk"
        chunks_seen.append(sum(1 for p in parts if p.choices[0].text))
    assert max(chunks_seen) > 1, chunks_seen  # text arrives in pieces, not as one chunk at the end
    # on the wire: an event stream of data: lines, ended by data: [DONE]
    req = urllib.request.Request(f"{served[0]}/v1/completions", method="POST",
                                 data=json.dumps({"model": "routing_note", "prompt": rows[0][spec.input_field],
                                                  "stream": True}).encode(),
                                 headers={"Content-Type": "application/json", **_auth(KEY)})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    final = json.loads(events[-2][len("data: "):])  # the last chunk carries the task type's response
    texts = "".join(json.loads(e[len("data: "):])["choices"][0]["text"] for e in events[:-1])
    assert final["choices"][0]["rightsizer"]["generated"] == texts


def test_concurrent_streams_are_served_together_not_one_after_another(served, client):
    # storey's own steps emit one event's stream to its end before the next event's: then only
    # the first of several concurrent streams would see a token before the first one ended
    spec, _ = _specs()["routing_note"]
    texts = [r[spec.input_field] for r in load_rows(spec, spec.eval_split, 8)]

    def stream(text):
        first = None
        for part in client.completions.create(model="routing_note", prompt=text, stream=True):
            if first is None and part.choices[0].text:
                first = time.perf_counter()
        return first, time.perf_counter()

    with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
        spans = [s for s in pool.map(stream, texts) if s[0] is not None]
    first_end = min(end for _, end in spans)
    started_before = sum(first < first_end for first, _ in spans)
    assert len(spans) >= 4 and started_before >= 2, spans
    card = next(m for m in client.models.list() if m.id == "routing_note")
    assert card.model_extra["stats"]["in_flight"] == 0


def test_streaming_is_refused_where_it_cannot_stream(served, client):
    with pytest.raises(openai.BadRequestError, match="only generation tasks stream"):
        list(client.completions.create(model="ticket_routing", prompt="hi", stream=True))
    status, _, body = _post(f"{served[0]}/v1/completions", {"model": "routing_note", "prompt": ["a", "b"],
                                                            "stream": True})
    assert status == 400 and "a stream answers one prompt" in body
    status, _, body = _post(f"{served[0]}/v1/completions", {"model": "routing_note", "prompt": "a",
                                                            "stream": "yes"})
    assert status == 400 and "stream: 'yes'; expected true or false" in body
    status, _, body = _post(f"{served[0]}/v1/completions", {"model": "routing_note", "prompt": "refund " * 600,
                                                            "stream": True})
    assert status == 400 and "exceeds the model's context" in body


@pytest.mark.parametrize("task", ["ticket_routing", "routing_note", "order_extraction"])
def test_the_eval_split_over_http_scores_as_the_evaluate_step_measured(task, served, client):
    spec, _ = _specs()[task]
    bundle = RunLayout(served[2]).bundle_dir(task)
    measured = evaluate_model(spec, str(bundle), repeats=1, progress=False)
    rows = load_rows(spec, spec.eval_split, spec.max_eval_examples)

    def ask(row):
        return client.completions.create(model=task, prompt=row[spec.input_field]).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(16) as pool:  # concurrent clients, batched server-side
        answers = list(pool.map(ask, rows))
    assert answers == measured["predictions"]  # row by row
    served_score = score_predictions(spec, rows, Predictions(answers, None, 0.0)).score
    assert served_score == pytest.approx(measured["quality"]["score"])


def test_errors_over_http_name_the_field_or_the_limit(served, client):
    base = served[0]
    status, headers, body = _post(f"{base}/v1/completions", b"{not json")  # MLRun decodes JSON bodies
    assert status == 400 and headers["Content-Type"].startswith("application/json"), (status, body)
    assert json.loads(body)["error"]["message"].startswith("body: not valid JSON"), body
    status, _, body = _post(f"{base}/v1/completions", b"{not json", content_type="text/plain")
    assert status == 400 and "body: not valid JSON" in body, (status, body)
    status, _, body = _post(f"{base}/v1/completions", {"model": "nope", "prompt": "hi"})
    assert status == 400 and "model: 'nope' is not a served task" in body
    status, _, body = _post(f"{base}/v1/completions", {"model": "ticket_routing", "prompt": "refund " * 600})
    assert status == 400 and "exceeds the model's context of 256 tokens" in json.loads(body)["error"]["message"]
    status, _, body = _post(f"{base}/v1/completions", {"model": "ticket_routing", "prompt": "refund " * 3000})
    assert status == 400 and "refused before tokenizing" in json.loads(body)["error"]["message"]
    status, headers, body = _post(f"{base}/v2/models/broken_task/infer", {"inputs": ["hi"]})
    assert status == 503 and int(headers["Retry-After"]) > 0 and "did not load" in body
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="ticket_routing", prompt="hi", max_tokens=10_000)
    status, _, body = _post(f"{base}/v3/nothing", {"x": 1})
    assert status == 404 and json.loads(body)["error"]["type"] == "not_found_error"


def _get(url: str, key: str | None = KEY) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_auth(key)), timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_max_tokens_and_stop_are_applied_and_finish_reason_says_why(served, client):
    spec, _ = _specs()["routing_note"]
    full = None
    for row in load_rows(spec, spec.eval_split, 24):  # an answer of a few tokens, to cut
        done = client.completions.create(model="routing_note", prompt=row["text"])
        if len(done.choices[0].text) >= 4 and done.usage.completion_tokens >= 2:
            full, text = done, row["text"]
            break
    assert full is not None, "no answer of 2 tokens or more among 24 rows"
    answer = full.choices[0].text
    one = client.completions.create(model="routing_note", prompt=text, max_tokens=1)
    assert one.usage.completion_tokens == 1 and one.choices[0].finish_reason == "length"
    assert answer.startswith(one.choices[0].text)
    cut = answer[2:4]
    stopped = client.completions.create(model="routing_note", prompt=text, stop=[cut])
    assert stopped.choices[0].text == answer.split(cut)[0].strip()
    assert stopped.choices[0].finish_reason == "stop"
    chat = client.chat.completions.create(model="routing_note", max_completion_tokens=1,
                                          messages=[{"role": "user", "content": text}])
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 1
    # ignore_eos (vLLM's, which load generators send): the generation runs to max_tokens
    short = next((r["text"] for r in load_rows(spec, spec.eval_split, 24)
                  if client.completions.create(model="routing_note", prompt=r["text"]).usage.completion_tokens
                  < spec.max_new_tokens), None)
    assert short is not None, "no answer ended before its budget among 24 rows"
    forced = client.completions.create(model="routing_note", prompt=short, max_tokens=spec.max_new_tokens,
                                       extra_body={"ignore_eos": True})
    assert forced.usage.completion_tokens == spec.max_new_tokens  # past its EOS (the text is still cut at "\n")
    status, _, body = _post(f"{served[0]}/v1/completions", {"model": "routing_note", "prompt": "hi",
                                                            "ignore_eos": "yes"})
    assert status == 400 and "ignore_eos: 'yes'; expected true or false" in body
    # streamed: the same cut, and the last chunk's finish reason
    parts = list(client.completions.create(model="routing_note", prompt=text, max_tokens=1, stream=True))
    assert "".join(p.choices[0].text for p in parts) == one.choices[0].text
    assert parts[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize("field, value, message", [
    ("temperature", 0.7, "temperature: 0.7; this server answers greedily"),
    ("temperature", -1, "temperature: -1; expected a number from 0 to 2"),
    ("top_p", 0, "top_p: 0; expected a number from"),
    ("top_p", 0.5, "top_p: 0.5; this server answers greedily"),
    ("seed", "abc", "seed: 'abc'; expected an integer"),
    ("logprobs", 21, "logprobs: 21; expected an integer from 0 to 20"),
    ("echo", True, "echo: True is not supported here"),
    ("logit_bias", {"5": 10}, "logit_bias"),
    ("response_format", {"type": "json_object"}, "response_format"),
    ("stop", ["a"] * 9, "stop: .*a list of 1 to 8"),
    ("frobnicate", 1, r"unknown field\(s\) \['frobnicate'\]"),
])
def test_a_field_that_is_not_applied_is_refused_by_name(served, field, value, message):
    status, _, body = _post(f"{served[0]}/v1/completions", {"model": "ticket_routing", "prompt": "hi", field: value})
    error = json.loads(body)["error"]
    assert status == 400 and error["param"] == field, body
    assert __import__("re").search(message, error["message"]), error["message"]


def test_greedy_values_seeds_and_chat_tool_fields(served, client):
    base = served[0]
    plain = client.completions.create(model="ticket_routing", prompt="I was charged twice")
    same = client.completions.create(model="ticket_routing", prompt="I was charged twice", temperature=0,
                                     top_p=1, seed=7, user="u1")
    assert same.choices[0].text == plain.choices[0].text  # greedy: the seed changes nothing
    status, _, body = _post(f"{base}/v1/chat/completions", {
        "model": "ticket_routing", "tool_choice": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and "tool_choice: 'auto' needs tools" in body
    status, _, body = _post(f"{base}/v1/chat/completions", {
        "model": "ticket_routing", "top_logprobs": 3, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and "top_logprobs" in body
    status, _, body = _post(f"{base}/v2/models/ticket_routing/infer", {"inputs": ["hi"], "parameters": {"temp": 1}})
    assert status == 400 and "parameters: unknown ['temp']" in body


def test_more_inputs_than_the_queue_can_hold_is_413_not_a_retry(served):
    status, headers, body = _post(f"{served[0]}/v1/completions", {"model": "ticket_routing", "prompt": ["hi"] * 65})
    assert status == 413 and "Retry-After" not in headers, (status, body)
    assert "65 inputs in one request; at most 64 (max_queue)" in json.loads(body)["error"]["message"]


def test_health_and_readiness_routes(served):
    base = served[0]
    assert _get(f"{base}/health") == (200, json.dumps({"status": "ok"}))
    assert _get(f"{base}/v2/health/live")[0] == 200
    status, body = _get(f"{base}/v2/health/ready")  # broken_task did not load: not ready, and why
    assert status == 503 and "['broken_task'] did not load" in body


def _log_lines(served, since: int) -> list[str]:
    return (served[2] / "serve.log").read_text().splitlines()[since:]


def test_every_error_is_in_its_routes_shape_with_one_log_line(served):
    """MLRun's own errors (an undecodable JSON body, a route or method it does not serve) come
    back as the parser's do: the OpenAI error object on /v1, V2's {"error": message} on /v2,
    405 with Allow; each rejected request writes one log line and no traceback."""
    base = served[0]
    before = len(_log_lines(served, 0))
    cases = [("POST", "/v1/completions", b"{not json", 400), ("POST", "/v2/models/ticket_routing/infer", b"{x", 400),
             ("GET", "/v1/completions", None, 405), ("DELETE", "/v2/models/ticket_routing/infer", None, 405),
             ("PUT", "/v1/models", b"{}", 405), ("GET", "/v1/nothing", None, 404), ("POST", "/v2/nothing", b"{}", 404),
             ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}', 400)]
    for method, path, data, want in cases:
        status, headers, body = _post(base + path, data or b"", method=method)
        assert status == want and headers["Content-Type"].startswith("application/json"), (path, status, body)
        error = json.loads(body)["error"]
        if path.startswith("/v2/"):
            assert isinstance(error, str) and error, body  # V2: {"error": message}
        else:
            assert error["code"] == want and error["message"] and "type" in error, body
        if want == 405:
            assert headers["Allow"] == ("GET" if path == "/v1/models" else "POST"), headers
    # the chat request without a model: the parser's 400 naming it, as completions answers it
    assert "model: expected a task name" in body
    lines = _log_lines(served, before)
    assert not [x for x in lines if "Traceback" in x], "\n".join(lines)
    refused = [x for x in lines if "request refused" in x or "failed to json decode" in x]
    assert len(refused) == len(cases), "\n".join(lines)


def test_an_api_key_is_required_on_every_route_but_health(served, client):
    base = served[0]
    for key in (None, "wrong-key"):
        for status, headers, body in (_post(f"{base}/v1/completions", {"model": "ticket_routing", "prompt": "hi"},
                                            key=key),
                                      _post(f"{base}/v2/models/ticket_routing/infer", {"inputs": ["hi"]}, key=key),
                                      _post(f"{base}/v1/models", b"", method="GET", key=key)):
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer", (status, body)
            assert "Authorization: Bearer <key>" in body and (key or "@@") not in body
    for path in ("/health", "/v2/health/live"):
        assert _get(base + path, key=None)[0] == 200
    assert _get(f"{base}/v2/health/ready", key=None)[0] == 503  # open too: broken_task did not load
    assert _get(f"{base}/v1/models", key="another-key")[0] == 200  # any of the keys
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
    assert "wrong-key" not in (served[2] / "serve.log").read_text()  # a key is never logged


def test_a_body_shorter_than_its_content_length_times_out_with_408(served):
    before = len(_log_lines(served, 0))
    host, port = served[0].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Authorization: Bearer {KEY}\r\nContent-Length: 100\r\n\r\n{{\"model\":".encode())
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)  # the server answers (--body-timeout 3) before this socket's 30 s
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 408"), reply
    assert "not received whole within 3 s" in json.loads(body)["error"]["message"]
    refused = [x for x in _log_lines(served, before) if "request refused" in x]
    assert len(refused) == 1 and '"status":408' in refused[0], refused


def test_logprobs_are_returned_as_openai_and_vllm_shape_them(served, client):
    """A classification task's log-probabilities are over its labels (as it was scored); a
    generation's are its answer tokens', each with its most likely alternatives."""
    done = client.completions.create(model="ticket_routing", prompt="I was charged twice", logprobs=3)
    choice = done.choices[0]
    lp = choice.logprobs
    assert lp.tokens == [choice.text] and len(lp.top_logprobs[0]) == 3
    probs = choice.model_extra["rightsizer"]["probabilities"]
    assert math.exp(lp.token_logprobs[0]) == pytest.approx(probs[choice.text], abs=1e-3)
    assert max(lp.top_logprobs[0].values()) == lp.token_logprobs[0]  # the label is the most likely one
    assert client.completions.create(model="ticket_routing", prompt="hi").choices[0].logprobs is None
    chat = client.chat.completions.create(model="routing_note", logprobs=True, top_logprobs=2,
                                          messages=[{"role": "user", "content": "My printer will not print"}])
    content = chat.choices[0].logprobs.content
    assert content and "".join(t.token for t in content).strip() == chat.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2 and bytes(t.bytes).decode() == t.token
        # greedy: the answer's token is the most likely one (up to a near tie's rounding)
        assert t.logprob >= t.top_logprobs[0].logprob - 0.05, (t.token, t.top_logprobs)
    plain = client.chat.completions.create(model="routing_note",
                                           messages=[{"role": "user", "content": "My printer will not print"}])
    assert plain.choices[0].message.content == chat.choices[0].message.content
    status, _, body = _post(f"{served[0]}/v1/completions", {"model": "routing_note", "prompt": "hi", "logprobs": 1,
                                                            "stream": True})
    assert status == 400 and "logprobs: not returned on a stream here" in body


def hostile_probe(base: str) -> list[tuple[str, str, str]]:
    """benchmarks/probe_serving.py's cases against ``base``: the answers that are a silent 200 or raw."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from probe_serving import CASES, probe, tally

    results = probe(base, KEY)
    counts = tally(results)
    assert counts["correct"] >= sum(c[-1] == "answer" for c in CASES) and counts["refused"] >= 80, counts
    return [r for r in results if r[2] in ("silent 200", "raw")]


def test_a_hostile_input_probe_gets_no_silent_200_and_no_raw_answer(served):
    """Bad values per field, bodies and routes no route takes, more prompts than the queue, 7 MB
    prompts while another task is called: each answered correctly or refused in its route's shape."""
    assert hostile_probe(served[0]) == []


def test_ctrl_c_stops_the_server(served):
    base, proc, _ = served
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/v1/models", timeout=5)
