"""Serving through MLRun's mock server: a router with one real task model per task."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import mlrun
import pytest

from rightsizer.bundle import write_bundle
from rightsizer.evaluate import load_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(demo_models, tmp_path_factory):
    from rightsizer.taskspec import load_task

    tmp = tmp_path_factory.mktemp("bundles")
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    fn = project.get_function("serving")
    for task, model in (("ticket_routing", "tiny-s"), ("review_sentiment", "tiny-m")):
        spec = load_task(ROOT / "tasks" / f"{task}.yaml")
        bundle = write_bundle(demo_models / "models" / model, spec, tmp / task,
                              base_model=f"demo:{model}", rung="zero_shot")
        fn.add_model(task, class_name="TaskModelServer", model_path=str(bundle))
    return fn.to_mock_server()


def _infer(server, task, inputs):
    return server.test(f"/v2/models/{task}/infer", body={"inputs": inputs})["outputs"]


def test_router_sends_each_task_to_its_model(server):
    spec_rows = load_rows(__import__("rightsizer.taskspec", fromlist=["x"]).load_task(
        ROOT / "tasks" / "ticket_routing.yaml"), "eval", 8)
    out = _infer(server, "ticket_routing", [r["text"] for r in spec_rows])
    assert [o["label"] for o in out] == [r["label"] for r in spec_rows]
    assert all(o["task"] == "ticket_routing" and isinstance(o["generated"], str) for o in out)
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-3 for o in out)
    out = _infer(server, "review_sentiment", ["the battery is great"])
    assert out[0]["task"] == "review_sentiment"
    assert set(out[0]["probabilities"]) == {"positive", "negative"}
    assert out[0]["generated"]  # a real generation, not an empty string


def test_concurrent_requests_are_safe(server):
    texts = ["I was charged twice for my phone", "my router has not arrived yet",
             "the laptop will not turn on", "please reset my password"] * 4
    expected = [_infer(server, "ticket_routing", [t])[0] for t in texts[:4]]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: _infer(server, "ticket_routing", [t])[0], texts))
    assert results == expected * 4
    assert [r["label"] for r in expected] == ["billing", "shipping", "technical", "account"]


def test_bad_request_is_rejected_with_the_field_named(server):
    with pytest.raises(RuntimeError, match=r"inputs\[0\]: expected a non-empty string"):
        server.test("/v2/models/ticket_routing/infer", body={"inputs": [""]})
    with pytest.raises(RuntimeError, match="nope"):
        server.test("/v2/models/nope/infer", body={"inputs": ["hi"]})
