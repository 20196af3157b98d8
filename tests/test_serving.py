"""Serving through MLRun's mock server: the flow graph with one real engine per task.

Routes: ``/v2/models/<task>/infer`` (V2), ``/v1/completions``, ``/v1/chat/completions``
(MLRun's OpenAI frontend) and ``/v1/models``; a bundle that does not load leaves the others
serving. The real HTTP listener is tests/test_serving_http.py; the engine alone is
tests/test_serving_engine.py.
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import mlrun
import pytest

from functions.serving import set_task_models
from rightsizer.bundle import write_bundle
from rightsizer.evaluate import load_rows
from rightsizer.taskspec import load_task

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"ticket_routing": "tiny-s", "review_sentiment": "tiny-m"}


def _bundles(demo_models: Path, tmp: Path) -> dict[str, str]:
    out = {}
    for task, model in TASKS.items():
        spec = load_task(ROOT / "tasks" / f"{task}.yaml")
        out[task] = str(write_bundle(demo_models / "models" / model, spec, tmp / task,
                                     base_model=f"demo:{model}", rung="zero_shot"))
    return out


@pytest.fixture(scope="module")
def bundles(demo_models, tmp_path_factory):
    return _bundles(demo_models, tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    broken = tmp_path_factory.mktemp("broken")
    (broken / "rightsizer.json").write_text("{not json")  # a bundle that cannot load
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    fn = project.get_function("serving")
    set_task_models(fn, {**bundles, "broken_task": str(broken)})
    server = fn.to_mock_server()
    yield server
    server.wait_for_completion()


def _infer(server, task, inputs):
    return server.test(f"/v2/models/{task}/infer", body={"inputs": inputs})["outputs"]


def test_v2_route_sends_each_task_to_its_model(server):
    rows = load_rows(load_task(ROOT / "tasks" / "ticket_routing.yaml"), "eval", 8)
    out = _infer(server, "ticket_routing", [r["text"] for r in rows])
    assert [o["label"] for o in out] == [r["label"] for r in rows]
    assert all(o["task"] == "ticket_routing" and isinstance(o["generated"], str) for o in out)
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-3 for o in out)
    out = _infer(server, "review_sentiment", ["the battery is great"])
    assert out[0]["task"] == "review_sentiment"
    assert set(out[0]["probabilities"]) == {"positive", "negative"}
    assert out[0]["generated"]  # a real generation, not an empty string


def test_64_concurrent_requests_across_tasks_each_get_their_own_answer(server):
    specs = {t: load_task(ROOT / "tasks" / f"{t}.yaml") for t in TASKS}
    work = []
    for t in TASKS:  # 32 distinct inputs per task
        texts = list(dict.fromkeys(r["text"] for r in load_rows(specs[t], "eval")))
        work += [(t, x) for x in texts[:32]]
    assert len(work) == 64 and len({w for w in work}) == 64  # distinct inputs
    alone = [_infer(server, t, [x])[0] for t, x in work]  # one at a time
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        together = list(pool.map(lambda w: _infer(server, w[0], [w[1]])[0], work))
    assert together == alone  # none lost, none duplicated, none swapped between requests
    assert [o["task"] for o in together] == [t for t, _ in work]


def test_concurrent_requests_reach_the_engine_together(server):
    # a flow step takes one event at a time: without the graph's batch step the engine would
    # hold one request at a time and its continuous batch would never form
    texts = [f"order {i} arrived broken, I want a refund" for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        list(pool.map(lambda x: _infer(server, "ticket_routing", [x]), texts))
    cards = {c["id"]: c for c in server.test("/v1/models", method="GET")["data"]}
    stats = cards["ticket_routing"]["stats"]
    assert stats["in_flight"] == 0 and stats["answered"] >= 24
    assert stats["peak_in_flight"] >= 4, stats


def test_openai_routes_name_the_task_as_model(server):
    done = server.test("/v1/completions", body={"model": "ticket_routing",
                                                "prompt": ["I was charged twice", "my parcel is late"]})
    assert done["object"] == "text_completion" and done["model"] == "ticket_routing"
    assert [c["text"] for c in done["choices"]] == [
        o["label"] for o in _infer(server, "ticket_routing", ["I was charged twice", "my parcel is late"])]
    usage = done["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    chat = server.test("/v1/chat/completions", body={
        "model": "review_sentiment",
        "messages": [{"role": "user", "content": "the battery died in a day"}]})
    assert chat["object"] == "chat.completion" and chat["model"] == "review_sentiment"
    msg = chat["choices"][0]["message"]
    assert msg["role"] == "assistant"
    assert msg["content"] == _infer(server, "review_sentiment", ["the battery died in a day"])[0]["label"]
    models = server.test("/v1/models", method="GET")
    cards = {m["id"]: m for m in models["data"]}
    assert set(cards) == {"ticket_routing", "review_sentiment", "broken_task"}
    assert cards["ticket_routing"]["status"] == "ready"
    assert cards["broken_task"]["status"].startswith("unavailable:")


def test_a_bad_bundle_answers_503_with_the_reason_and_the_others_serve(server):
    resp = server.test("/v2/models/broken_task/infer", body={"inputs": ["hi"]}, silent=True)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    error = json.loads(resp.body)["error"]  # the V2 route's error shape: {"error": message}
    assert "broken_task" in error and "did not load" in error
    assert "rightsizer.json: not a valid bundle file" in error  # names the file
    assert _infer(server, "ticket_routing", ["please reset my password"])[0]["label"] == "account"


@pytest.mark.parametrize("path, body, message", [
    ("/v2/models/ticket_routing/infer", {"inputs": [""]}, r"inputs\[0\]: expected a non-empty string"),
    ("/v2/models/ticket_routing/infer", {"inputs": "x", "parameters": {"max_tokens": "5"}},
     "max_tokens: '5'; expected a positive integer"),
    ("/v2/models/nope/infer", {"inputs": ["hi"]}, "model: 'nope' is not a served task"),
    ("/v1/completions", {"model": "nope", "prompt": "hi"}, "model: 'nope' is not a served task"),
    ("/v1/completions", {"model": "ticket_routing", "prompt": 5}, r"prompt\[0\]: expected a non-empty"),
    ("/v1/completions", {"model": "ticket_routing", "prompt": "\ud800 hi"}, "unpaired surrogate"),
    ("/v1/completions", b"{not json", "body: not valid JSON"),
    ("/v1/chat/completions", {"model": "ticket_routing", "messages": [{"role": "system", "content": "x"}]},
     "messages: no message with role 'user'"),
    # a system text or earlier turns would change the evaluated prompt: refused by name
    ("/v1/chat/completions", {"model": "review_sentiment", "messages": [
        {"role": "system", "content": "be nice"}, {"role": "user", "content": "fine"}]},
     r"messages\[0\] \(role 'system'\): task 'review_sentiment' answers one user message"),
    ("/v1/chat/completions", {"model": "review_sentiment", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "fine"}]},
     r"messages\[0\] \(role 'user'\), messages\[1\] \(role 'assistant'\): .*only message"),
])
def test_bad_requests_get_400_naming_the_field(server, path, body, message):
    with pytest.raises(RuntimeError, match=r"failed \(400\).*" + message):
        server.test(path, body=body)


def test_input_longer_than_the_context_gets_400_naming_the_limit(server):
    before = _infer(server, "ticket_routing", ["I was charged twice"])[0]
    resp = server.test("/v1/completions", body={"model": "ticket_routing", "prompt": "refund " * 600},
                       silent=True)
    assert resp.status_code == 400
    message = json.loads(resp.body)["error"]["message"]
    assert "exceeds the model's context of 256 tokens" in message and "at most" in message
    # far beyond the context: refused from its length, before it is tokenized
    resp = server.test("/v1/completions", body={"model": "ticket_routing", "prompt": "refund " * 3000},
                       silent=True)
    assert resp.status_code == 400
    assert "21,000 characters, far beyond the model's context of 256 tokens (refused before tokenizing" in (
        json.loads(resp.body)["error"]["message"])
    # the engine is not held up by it: the next request gets the answer it got before
    assert _infer(server, "ticket_routing", ["I was charged twice"])[0] == before


def test_the_graph_records_sampled_answers_when_a_traffic_log_is_set(server, tmp_path, monkeypatch):
    """With $RIGHTSIZER_TRAFFIC_LOG (serve.sh --traffic-log) the graph writes each answer's task,
    answering model, input, answer, latency and tokens; never a header (the key sent is nowhere
    in the file)."""
    from rightsizer.serving.traffic_log import TRAFFIC_LOG_ENV, read_traffic

    log = tmp_path / "traffic.jsonl"
    monkeypatch.setenv(TRAFFIC_LOG_ENV, str(log))
    texts = ["where is my parcel", "my card was charged twice"]
    out = _infer(server, "ticket_routing", texts)
    server.test("/v1/completions", body={"model": "review_sentiment", "prompt": "the screen is great"},
                headers={"Authorization": "Bearer secret-key-123"})
    rows = list(read_traffic(log))
    assert [(r["task"], r["model"], r["input"]) for r in rows] == [
        ("ticket_routing", "demo:tiny-s", texts[0]), ("ticket_routing", "demo:tiny-s", texts[1]),
        ("review_sentiment", "demo:tiny-m", "the screen is great")]
    assert [r["answer"] for r in rows[:2]] == [o["label"] for o in out]
    assert all(r["latency_ms"] > 0 and r["prompt_tokens"] > 0 for r in rows)
    assert "secret-key-123" not in log.read_text() and "Authorization" not in log.read_text()
