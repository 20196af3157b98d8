"""The entry point of a fleet with several placement groups, offline and over real HTTP.

``bash scripts/serve.sh`` on a run whose fleet plan has two groups serves each group's
function on its own port and the router (``functions/router.py``, MLRun's remote steps) in
front of them, as ``deploy_plan`` deploys them on a cluster. Every answer through the router
is checked against the group's own answer to the same request.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import mlrun
import openai
import pytest
from test_serving_http import KEY, _auth, _free_port, _post, hostile_probe, start_serve, stop_serve, write_run


ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"g0-cpu-small": ["ticket_routing", "broken_task", "order_extraction"],
          "g1-cpu-large": ["review_sentiment", "routing_note"]}
# review_sentiment split by prompt length (the plan's mixed device types): its short inputs (20
# tokens, 80 characters at the entry point's 4 a token) in g0, the rest in g1, where it also is above
SPLIT = {"review_sentiment": {"g0-cpu-small": [1, 20], "g1-cpu-large": [21, 4000]}}
TASKS = sorted({t for ts in GROUPS.values() for t in ts} | set(SPLIT))
TEXT = {"ticket_routing": "I was charged twice for my laptop", "review_sentiment": "the screen is not bad at all",
        "routing_note": "my card was charged twice", "order_extraction": "the notebook from order #48213 arrived broken"}


def _plan(path: Path) -> None:
    """A fleet plan's ``function_specs`` with two groups (what deploy_plan and serve.sh read)."""
    load = {"batch": 4, "prompt_tokens": 96, "output_tokens": 12}
    specs = [{"name": name, "group": name, "device": "c7i.xlarge",
              "models": [{"name": t, "tasks": [t], "load": load} for t in tasks if t not in SPLIT]
              + [{"name": f"{t}@part", "tasks": [t], "load": load, "prompt_range": parts[name]}
                 for t, parts in SPLIT.items() if name in parts]}
             for name, tasks in GROUPS.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"function_specs": specs}))


def _get(url: str, key: str | None = KEY):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_auth(key)), timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def fleet(demo_models, tmp_path_factory):
    """(router URL, {group: URL}, artifacts) of a running ``scripts/serve.sh`` on a two-group run."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    layout = write_run(demo_models, artifacts)  # broken_task: its group answers 503 for it
    _plan(layout.plan_file())
    port = _free_port()
    base, proc, log = start_serve(artifacts, port, "--api-key", KEY)  # the router and each group require it
    groups = {name: f"http://127.0.0.1:{port + i}" for i, name in enumerate(GROUPS, start=1)}
    yield base, groups, artifacts
    stop_serve(proc, log)


def _group_of(task: str, groups: dict) -> str:
    return next(groups[g] for g, tasks in GROUPS.items() if task in tasks)


def _same(a: dict, b: dict) -> dict:
    """An OpenAI body without what differs per call (its id and creation time)."""
    return {k: v for k, v in a.items() if k not in ("id", "created")} == {
        k: v for k, v in b.items() if k not in ("id", "created")}


def test_serve_sh_prints_the_groups_and_the_router(fleet):
    text = (fleet[2] / "serve.log").read_text()
    assert "2 placement groups behind the router" in text
    for name, url in fleet[1].items():
        assert f"{name}: {url}" in text


@pytest.mark.parametrize("task", sorted(TEXT))
def test_each_task_answers_through_the_router_as_its_group_answers(fleet, task):
    base, groups, _ = fleet
    group = _group_of(task, groups)
    x = TEXT[task]
    requests = [("/v2/models/{}/infer".format(task), {"inputs": [x, x + "!"]}),
                ("/v1/completions", {"model": task, "prompt": x}),
                ("/v1/chat/completions", {"model": task, "messages": [{"role": "user", "content": x}]})]
    for path, body in requests:
        s_router, h_router, b_router = _post(base + path, body)
        s_group, _, b_group = _post(group + path, body)
        assert s_router == s_group == 200, (path, b_router, b_group)
        assert h_router["Content-Type"].startswith("application/json")
        got, want = json.loads(b_router), json.loads(b_group)
        assert _same(got, want), (path, got, want)
    # and with the official client, through the router
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=120)
    done = client.completions.create(model=task, prompt=x)
    assert done.model == task and done.choices[0].text == json.loads(_post(group + "/v1/completions", {
        "model": task, "prompt": x})[2])["choices"][0]["text"]


def test_the_model_list_merges_every_group(fleet):
    base, groups, _ = fleet
    status, body = _get(f"{base}/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [c["id"] for c in body["data"]] == TASKS
    broken = next(c for c in body["data"] if c["id"] == "broken_task")
    assert broken["status"].startswith("unavailable")  # as its group lists it
    for name, url in groups.items():  # each group lists only its own tasks (a split task in both)
        own = set(GROUPS[name]) | {t for t, parts in SPLIT.items() if name in parts}
        assert sorted(c["id"] for c in _get(f"{url}/v1/models")[1]["data"]) == sorted(own)


def test_a_task_split_by_prompt_length_goes_to_the_group_of_its_length(fleet):
    """The plan split review_sentiment across the groups by prompt length: an input of at most 80
    characters (20 tokens) goes to g0, a longer one to g1, on every route; every routed answer
    names the group that gave it (``X-Rightsizer-Group``), a task that is not split its own."""
    base, groups, _ = fleet
    short, long_ = "not bad at all", "the screen is not bad at all, " * 6
    assert len(short) <= 80 < len(long_)
    for text, group in ((short, "g0-cpu-small"), (long_, "g1-cpu-large")):
        for path, body in [("/v2/models/review_sentiment/infer", {"inputs": [text]}),
                           ("/v1/completions", {"model": "review_sentiment", "prompt": text}),
                           ("/v1/chat/completions", {"model": "review_sentiment",
                                                     "messages": [{"role": "user", "content": text}]})]:
            status, headers, got = _post(base + path, body)
            assert status == 200 and headers["X-Rightsizer-Group"] == group, (path, text, got)
            assert _same(json.loads(got), json.loads(_post(groups[group] + path, body)[2]))
    # a V2 batch goes by its longest input; a task that is not split names its one group
    status, headers, _ = _post(base + "/v2/models/review_sentiment/infer", {"inputs": [short, long_]})
    assert status == 200 and headers["X-Rightsizer-Group"] == "g1-cpu-large"
    status, headers, _ = _post(base + "/v1/completions", {"model": "ticket_routing", "prompt": long_})
    assert status == 200 and headers["X-Rightsizer-Group"] == "g0-cpu-small"


def test_health_readiness_keys_and_methods_at_the_router(fleet):
    base, groups, _ = fleet
    assert _get(f"{base}/health", key=None) == (200, {"status": "ok"})
    assert _get(f"{base}/v2/health/live", key=None)[0] == 200
    status, body = _get(f"{base}/v2/health/ready", key=None)  # the group hosting broken_task is not ready
    broken = _group_of("broken_task", groups)
    assert status == 503 and "not ready" in body["error"] and "broken_task" in body["error"], body
    ready_group = next(u for u in groups.values() if u != broken)
    assert _get(f"{ready_group}/v2/health/ready", key=None)[0] == 200
    status, body = _get(f"{base}/v1/models", key=None)
    assert status == 401 and body["error"]["type"] == "authentication_error"
    status, _, text = _post(f"{base}/v1/completions", {"model": "ticket_routing", "prompt": "hi"}, key="wrong")
    assert status == 401, text
    status, headers, text = _post(f"{base}/v1/completions", b"", method="GET")
    assert status == 405 and headers["Allow"] == "POST" and json.loads(text)["error"]["code"] == 405


def test_the_hostile_input_probe_through_the_router(fleet):
    assert hostile_probe(fleet[0]) == []


def test_an_unknown_task_is_a_400_naming_the_served_tasks(fleet):
    base = fleet[0]
    for path, body in [("/v2/models/nope/infer", {"inputs": ["hi"]}), ("/v1/completions", {"model": "nope", "prompt": "hi"}),
                       ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]})]:
        status, _, text = _post(base + path, body)
        assert status == 400, (path, text)
        error = json.loads(text)["error"]
        message = f"model: 'nope' is not a served task; expected one of {TASKS}"
        if path.startswith("/v2/"):  # the V2 protocol's error shape
            assert error == message
        else:
            assert error["message"] == message and error["param"] == "model"
    status, _, text = _post(f"{base}/v1/completions", {"prompt": "hi"})
    assert status == 400 and f"model: expected a task name, one of {TASKS}" in text
    status, _, text = _post(f"{base}/v1/completions", b"{not json", content_type="text/plain")
    assert status == 400 and "body: not valid JSON" in text
    status, _, text = _post(f"{base}/v3/nothing", {"x": 1})
    assert status == 404 and "/v1/completions" in text


def test_a_groups_errors_pass_through_with_their_status_and_body(fleet):
    base, groups, _ = fleet
    cases = [("/v2/models/broken_task/infer", {"inputs": ["hi"]}),  # 503: its model did not load
             ("/v1/completions", {"model": "ticket_routing", "prompt": "refund " * 3000}),  # 400: too long
             ("/v1/completions", {"model": "ticket_routing", "prompt": "hi", "max_tokens": 10_000}),
             ("/v1/completions", {"model": "ticket_routing", "prompt": "hi", "stream": True})]  # not a generation
    seen = set()
    for path, body in cases:
        task = body.get("model") or path.split("/")[3]
        s_router, h_router, b_router = _post(base + path, body)
        s_group, h_group, b_group = _post(_group_of(task, groups) + path, body)
        assert s_router == s_group >= 400 and b_router == b_group, (path, b_router, b_group)
        if s_group == 503:
            assert h_router["Retry-After"] == h_group["Retry-After"] and "did not load" in b_router
        seen.add(s_group)
    assert seen == {400, 503}


def test_a_stream_comes_back_whole_with_the_groups_events(fleet):
    base, groups, _ = fleet
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=120)
    x = TEXT["routing_note"]
    want = client.completions.create(model="routing_note", prompt=x).choices[0].text
    parts = list(client.completions.create(model="routing_note", prompt=x, stream=True))
    assert "".join(p.choices[0].text for p in parts) == want and parts[-1].choices[0].finish_reason == "stop"
    req = urllib.request.Request(f"{base}/v1/completions", method="POST", headers={"Content-Type": "application/json", **_auth(KEY)},
                                 data=json.dumps({"model": "routing_note", "prompt": x, "stream": True}).encode())
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and len(events) > 2


def test_a_group_that_cannot_be_reached_is_a_502_or_503_naming_it():
    """MLRun's mock server (the graph in this process); one route to a closed port, one to a
    function name that cannot be resolved here (no Nuclio)."""
    from functions.router import set_routes

    fn = mlrun.load_project(str(ROOT), name="rightsizer", save=False).get_function("router")
    closed = f"http://127.0.0.1:{_free_port()}"
    set_routes(fn, {"ticket_routing": closed, "review_sentiment": "rightsizer/g1-cpu-large"},
               {"ticket_routing": "g0-cpu-small", "review_sentiment": "g1-cpu-large"})
    server = fn.to_mock_server()
    try:
        down = server.test("/v1/completions", {"model": "ticket_routing", "prompt": "hi"}, silent=True)
        assert down.status_code == 502
        assert f"its group g0-cpu-small at {closed} cannot be reached" in json.loads(down.body)["error"]["message"]
        unresolved = server.test("/v2/models/review_sentiment/infer", {"inputs": ["hi"]}, silent=True)
        assert unresolved.status_code == 503 and unresolved.headers["Retry-After"]
        assert "its group g1-cpu-large (rightsizer/g1-cpu-large) has no URL" in unresolved.body
        models = json.loads(server.test("/v1/models", method="GET").body)  # both groups down
        assert [c["id"] for c in models["data"]] == ["review_sentiment", "ticket_routing"]
        assert all(c["status"].startswith("unavailable: its group") for c in models["data"])
    finally:
        server.wait_for_completion()


def test_plan_routes_give_a_split_task_one_route_per_part_shortest_first():
    """``rightsizer.routing.plan_routes`` from function specs, ``route_of`` on input lengths, and
    the router graph ``set_routes`` builds: a proxy per route, the parser holding the parts."""
    from functions.router import input_chars, set_routes
    from rightsizer.routing import CHARS_PER_TOKEN, plan_routes, route_of

    load = {"batch": 1, "prompt_tokens": 8, "output_tokens": 2}
    specs = [{"name": "g0", "models": [{"name": "a", "tasks": ["a"], "load": load},
                                       {"name": "b@short", "tasks": ["b"], "load": load, "prompt_range": [1, 50]}]},
             {"name": "g1", "models": [{"name": "b@long", "tasks": ["b"], "load": load, "prompt_range": [51, 900]}]}]
    routes, groups, parts = plan_routes(specs, ["http://g0", "http://g1"])
    assert routes == {"a": "http://g0", "b--prompt-1-50": "http://g0", "b--prompt-51-900": "http://g1"}
    assert groups == {"a": "g0", "b--prompt-1-50": "g0", "b--prompt-51-900": "g1"}
    assert parts == {"b": [[int(50 * CHARS_PER_TOKEN), "b--prompt-1-50"], [None, "b--prompt-51-900"]]}
    assert route_of("b", parts, 200) == "b--prompt-1-50" and route_of("b", parts, 201) == "b--prompt-51-900"
    assert route_of("b", parts, None) == "b--prompt-51-900" and route_of("a", parts, 10) == "a"
    assert input_chars("POST", "/v1/completions", {"model": "b", "prompt": "x" * 7}, "b") == 7
    assert input_chars("POST", "/v2/models/b/infer", {"inputs": ["xx", "x" * 9]}, "b") == 9
    assert input_chars("POST", "/v1/completions", b"not json", "b") is None  # the group answers its own 400
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    fn = project.get_function("router")
    set_routes(fn, routes, groups, parts=parts)
    steps = fn.spec.graph.steps
    assert steps["parse"].class_args["tasks"] == ["a", "b"] and steps["parse"].class_args["parts"] == parts
    assert {n: s.class_args["task"] for n, s in steps.items() if s.class_name == "GroupProxy"} == {
        "a": "a", "b--prompt-1-50": "b", "b--prompt-51-900": "b"}
    assert steps["models"].class_args["groups"] == {"http://g0": ["a", "b"], "http://g1": ["b"]}
    with pytest.raises(ValueError, match=r"parts: route\(s\) \['b--prompt-51-900'\] have no group URL"):
        set_routes(fn, {"a": "http://g0", "b--prompt-1-50": "http://g0"}, parts=parts)
