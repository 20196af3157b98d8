"""The whole size_and_deploy workflow, offline: MLRun local engine, real tiny models.

One run (module fixture) is checked from several sides: the decision records, the
registered serving bundles, the served answers, and re-evaluation on fresh data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import mlrun
import pytest
import torch

from functions.mlrun_io import STEPS_FOLDER
from rightsizer.layout import RunLayout, find_bundles, find_decisions
from rightsizer.stepcache import StepCache

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# a hub token in the environment, as a user's would be: it must end up in no file the run writes
# (made at run time: the copied sources must not contain it)
FAKE_TOKEN = "hf_" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _clone(dest: Path) -> Path:
    """The project's files (tracked and new, not ignored) in ``dest``: a fresh checkout."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def run(demo_models, tmp_path_factory, monkeypatch_module):
    # The user's first command, exactly as typed (no artifact_path, no other argument), in a
    # fresh copy of the project: artifacts must land under the project's ./artifacts.
    clone = _clone(tmp_path_factory.mktemp("clone"))
    monkeypatch_module.chdir(clone)
    monkeypatch_module.delenv("MLRUN_ARTIFACT_PATH", raising=False)
    monkeypatch_module.setitem(mlrun.mlconf._cfg, "artifact_path", "")  # Config keeps its values in _cfg
    monkeypatch_module.setattr(sys, "path", list(sys.path))  # setup() prepends the clone
    monkeypatch_module.setenv("HF_TOKEN", FAKE_TOKEN)
    project = mlrun.load_project("./")
    status = project.run("size_and_deploy", watch=True)
    assert str(status.state).lower() in ("completed", "succeeded"), status.state
    assert "artifact_path" not in (clone / "project.yaml").read_text()  # nothing machine-specific saved
    # MLRun puts a workflow's artifacts in a folder named after its run id
    artifacts = clone / "artifacts" / status.run_id
    assert artifacts.is_dir(), sorted(p.name for p in (clone / "artifacts").iterdir())
    layout = RunLayout(artifacts)
    decisions = json.loads(layout.decisions_file().read_text())
    assert not [t for t in layout.tasks() if layout.prequant_dir(t, "gptq").exists()]
    return project, layout, {r["task"]: r for r in decisions["records"]}


def test_the_hub_token_is_in_no_file_the_run_wrote(run):
    """Artifacts, run records, logs, project.yaml: every file under the project after the run."""
    project, layout, _ = run
    clone = Path(project.context)
    scanned = 0
    for path in clone.rglob("*"):
        if path.is_file():
            scanned += 1
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    assert scanned > 100 and any(layout.root.rglob("*.html"))  # the artifacts were there to scan


def test_decision_records(run):
    _, layout, records = run
    assert set(records) == {"review_sentiment", "ticket_routing", "order_extraction", "answer_drafting",
                            "chat_routing"}
    assert set(find_decisions(layout.root)) == set(records)
    routing, sentiment = records["ticket_routing"], records["review_sentiment"]
    # routing is trained into the smallest candidate: zero-shot on tiny-s, nothing rejected
    assert (routing["chosen"]["model"], routing["chosen"]["rung"]) == ("demo:tiny-s", "zero_shot")
    assert routing["why_not_smaller"] == []
    # negated reviews: tiny-s fails zero-shot and few-shot and needs LoRA
    assert (sentiment["chosen"]["model"], sentiment["chosen"]["rung"]) == ("demo:tiny-s", "lora")
    assert [(r["candidate"], r["rung"]) for r in sentiment["ladder"]] == [
        ("demo:tiny-s", "zero_shot"), ("demo:tiny-s", "few_shot"), ("demo:tiny-s", "lora")]
    assert len(sentiment["why_not_smaller"]) == 2
    assert sentiment["baseline"]["quality"] < sentiment["threshold"]  # the big model misses it
    # answer drafting: the facts are in the knowledge base only; the smallest model fails
    # zero-shot and few-shot and passes with the retrieved policy, and the one big model
    # without retrieval misses the bar
    drafting = records["answer_drafting"]
    assert (drafting["chosen"]["model"], drafting["chosen"]["rung"]) == ("demo:tiny-s", "retrieval")
    assert [r["rung"] for r in drafting["ladder"]] == ["zero_shot", "few_shot", "retrieval"]
    assert drafting["chosen"]["retrieval_recall_at_k"] == 1.0 and "retrieval recall@1 1.000" in drafting["summary"]
    assert drafting["baseline"]["quality"] < drafting["threshold"]
    # order extraction: only tiny-s is pre-trained on order messages, so it passes zero-shot
    # at its lowest precision and the one big model misses the bar; no answer is malformed
    order = records["order_extraction"]
    assert (order["chosen"]["model"], order["chosen"]["rung"]) == ("demo:tiny-s", "zero_shot")
    assert order["chosen"]["precision"] == "int4" and order["metric"] == "exact_match"
    assert order["baseline"]["quality"] < order["threshold"] and "malformed answers 0.0%" in order["summary"]
    # chat routing: a third of the messages in Spanish, which only tiny-l reads; tiny-s and
    # tiny-m fail both rungs, tiny-l passes zero-shot, and the cascade (tiny-s answers what it
    # is sure of, tiny-l the rest) meets the bar for less than tiny-l alone
    chat = records["chat_routing"]
    assert (chat["chosen"]["model"], chat["chosen"]["rung"]) == ("demo:tiny-l", "zero_shot")
    assert [(r["candidate"], r["rung"]) for r in chat["ladder"]] == [
        (m, rung) for m in ("demo:tiny-s", "demo:tiny-m") for rung in ("zero_shot", "few_shot")] + [
        ("demo:tiny-l", "zero_shot")]
    cascade = chat["cascade"]
    pair = cascade["pairs"][cascade["kept"]]
    assert cascade["chosen"] and (pair["small"], pair["big"]) == ("demo:tiny-s", "demo:tiny-l")
    assert pair["quality"] >= chat["threshold"] and 0 < pair["deferral_rate"] < 1
    assert pair["cost_per_1m_tokens"] < pair["big_alone_cost_per_1m_tokens"] == chat["chosen"]["cost_per_1m_tokens"]
    assert "(chosen)" in chat["summary"] and cascade["small_side"]["model"] == "demo:tiny-s"
    for rec in records.values():
        c, b = rec["chosen"], rec["baseline"]
        assert c["quality"] >= rec["threshold"]
        assert b["model"] == "demo:tiny-l" and b["rung"] == "zero_shot"
        assert c["params"] < b["params"] or rec["task"] == "chat_routing"  # its saving is the cascade
        # the requests' lengths as the evaluate step measured them (the eval split through the
        # model's tokenizer and prompt format), and each side's p95 at the planned request rate
        lengths = rec["workload"]["lengths"]
        assert lengths["source"].startswith("measured: eval split") and lengths["requests"] > 0
        assert lengths["summary"]["prompt_tokens"]["p95"] >= lengths["summary"]["prompt_tokens"]["p50"] > 0
        traffic = rec["traffic"]
        assert traffic["request_rate"] > 0 and traffic["chosen"]["ttft_p95_ms"] > 0
        assert traffic["chosen"]["max_rate_per_replica"] > 0 and traffic["baseline"]["tpot_p95_ms"] > 0
        assert c["gpu"] and not c["gpu"].startswith("none")
        assert c["cost_per_1m_tokens"] > 0 and math.isfinite(c["ttft_ms"])
        assert c["ttft_ms"] <= 150 and c["tpot_ms"] <= 40  # meets the SLO (estimate)
        assert c["measured_here"]["ttft_p95_ms"] > 0
        assert rec["precision_search"], "precision table missing"
        # no GPU configured (gpus=0): no GPTQ step, its backend only listed as skipped
        assert [r["status"] for r in rec["precision_search"] if r["backend"] == "gptq"] == ["skipped"]
        assert (rec["chosen"]["retrieval_recall_at_k"] is None) == (rec["task"] != "answer_drafting")
        # what each side was measured on (this CPU, fp32: the target the steps resolved), apart
        # from the precision it is sized in; the engine deployed and what its sizing assumed
        from rightsizer.runtime.target import resolve_target

        here = resolve_target()
        kept = next(r for r in rec["precision_search"] if r["kept"])
        assert c["measured_with"]["on"] == b["measured_with"]["on"] == here.measured_on
        assert c["measured_with"]["dtype"] == kept["dtype"]  # the bundle, in the dtype its trial kept
        assert b["measured_with"]["dtype"] == "float32" and b["measured_with"]["precision"] == "fp32"
        assert b["precision"] == "bf16"  # measured in fp32 here, sized and served in bf16
        assert rec["ladder_measured_with"]["device"] == "cpu"
        assert rec["serving_engine"]["deployed"].startswith("rightsizer continuous batching")


def test_bundles_are_registered_and_serve(run):
    project, layout, records = run
    serving = project.get_function("serving").copy()  # the deployed one stays as deployed
    assert set(find_bundles(layout.root)) == set(records)
    for task in records:
        bundle = layout.bundle_dir(task)
        meta = json.loads((bundle / "rightsizer.json").read_text())
        assert meta["task"] == task
        # the registered precision is the one the GPU was sized for
        from rightsizer.precisions import get_precision

        assert get_precision(meta["quant_config"]["precision"]).sizing_name == records[task]["chosen"]["precision"]
    from functions.serving import set_task_models

    set_task_models(serving, {task: str(layout.bundle_dir(task)) for task in records})
    server = serving.to_mock_server()
    out = server.test("/v2/models/ticket_routing/infer",
                      body={"inputs": ["I was charged twice for my laptop"]})["outputs"]
    assert out[0]["label"] == "billing"
    out = server.test("/v2/models/review_sentiment/infer",
                      body={"inputs": ["the screen is not bad", "I do not love the fan"]})["outputs"]
    assert [o["label"] for o in out] == ["positive", "negative"]
    # a generation task with retrieval: the served replies are the evaluated ones (the bundle
    # carries the index, so the same passage goes into the same prompt)
    evaluation = json.loads(layout.evaluation_file("answer_drafting", "chosen").read_text())
    rows = [json.loads(line) for line in (ROOT / "tasks/data/answer_drafting/eval.jsonl").read_text().splitlines()]
    out = server.test("/v2/models/answer_drafting/infer", body={"inputs": [r["text"] for r in rows[:8]]})["outputs"]
    assert [o["generated"] for o in out] == evaluation["predictions"][:8]
    assert sum(o["generated"] == r["answer"] for o, r in zip(out, rows)) >= 6  # the policies' facts
    # an extraction task: the served answers are the evaluated ones, with their parsed fields
    evaluation = json.loads(layout.evaluation_file("order_extraction", "chosen").read_text())
    rows = [json.loads(line) for line in (ROOT / "tasks/data/order_extraction/eval.jsonl").read_text().splitlines()]
    out = server.test("/v2/models/order_extraction/infer", body={"inputs": [r["text"] for r in rows[:8]]})["outputs"]
    assert [o["generated"] for o in out] == evaluation["predictions"][:8]
    from rightsizer.tasktypes.extraction import parse_answer
    from rightsizer.taskspec import load_task

    rules = load_task(ROOT / "tasks" / "order_extraction.yaml").extraction
    assert all(o["valid"] and o["problems"] == [] for o in out)
    assert [o["fields"] for o in out] == [parse_answer(rules, p).fields for p in evaluation["predictions"][:8]]
    assert sum(o["fields"] == parse_answer(rules, r["answer"]).fields for o, r in zip(out, rows)) >= 7
    server.wait_for_completion()  # ends the async flow's loop thread


def test_select_times_the_prompt_the_chosen_rung_serves(run):
    """The select step measures latency on the longest prompt a rung may serve: for a task
    that retrieves, the prompt with its passages."""
    _, layout, _ = run
    from rightsizer.evaluate import load_rows
    from rightsizer.inference import build_prompt, load_tokenizer
    from rightsizer.models import resolve_model_ref
    from rightsizer.retrieval import for_rung
    from rightsizer.select import Selection
    from rightsizer.taskspec import load_task

    sel = Selection.load(layout.selection_file("answer_drafting"))
    spec = load_task(ROOT / "tasks" / "answer_drafting.yaml")
    row = load_rows(spec, spec.eval_split)[0]
    tok = load_tokenizer(resolve_model_ref("demo:tiny-s"))
    with_passages = len(tok(build_prompt(for_rung(spec, "retrieval"), row))["input_ids"])
    bare = len(tok(build_prompt(spec, row))["input_ids"])
    assert sel.latency["demo:tiny-s"]["prompt_tokens"] == with_passages > 2 * bare


def test_reevaluate_flags_no_regression_on_fresh_data(run, tmp_path):
    project, layout, records = run
    from rightsizer.reevaluate import reevaluate_bundle
    from rightsizer.taskspec import load_task

    spec = load_task(ROOT / "tasks" / "ticket_routing.yaml")
    bundle = layout.bundle_dir("ticket_routing")
    out = reevaluate_bundle(spec, str(bundle), "fresh", progress=False)
    assert out["regression"] is False and out["fresh_examples"] == 160
    # a drifted data set (labels shuffled) is a regression, flagged with the re-size action
    rows = [json.loads(line) for line in (ROOT / "tasks/data/ticket_routing/fresh.jsonl").read_text().splitlines()]
    labels = [r["label"] for r in rows]
    drifted = tmp_path / "drift.jsonl"
    drifted.write_text("\n".join(json.dumps({"text": r["text"], "label": labels[(i + 1) % len(rows)]})
                                 for i, r in enumerate(rows)))
    out = reevaluate_bundle(spec, str(bundle), str(drifted), progress=False)
    assert out["regression"] is True and "re-run size_and_deploy" in out["action"]
    # a generation task with retrieval is re-scored the same way (ROUGE-L, its bundle's index)
    drafting = load_task(ROOT / "tasks" / "answer_drafting.yaml")
    out = reevaluate_bundle(drafting, str(layout.bundle_dir("answer_drafting")), "fresh", progress=False)
    assert out["regression"] is False and out["fresh_examples"] == 96
    # the cascade task: its deferral rate is watched too; fresh data (a little less Spanish)
    # moves it within the tolerance, a stream of Spanish messages only is flagged
    chat = load_task(ROOT / "tasks" / "chat_routing.yaml")
    out = reevaluate_bundle(chat, str(layout.bundle_dir("chat_routing")), "fresh", progress=False)
    assert out["regression"] is False and out["cascade"]["deferral_regression"] is False
    assert 0 < out["cascade"]["fresh_deferral_rate"] < 1 and out["cascade"]["fresh_quality"] >= chat.threshold
    from rightsizer.demo.data import is_spanish

    rows = [json.loads(line) for line in (ROOT / "tasks/data/chat_routing/fresh.jsonl").read_text().splitlines()]
    spanish = tmp_path / "spanish.jsonl"
    spanish.write_text("".join(json.dumps(r) + "\n" for r in rows if is_spanish(r["text"])))
    out = reevaluate_bundle(chat, str(layout.bundle_dir("chat_routing")), str(spanish), progress=False)
    assert out["cascade"]["deferral_regression"] is True and out["regression"] is True
    assert "deferral rate" in out["action"]
    # and an extraction task (exact match over the parsed fields)
    orders = load_task(ROOT / "tasks" / "order_extraction.yaml")
    out = reevaluate_bundle(orders, str(layout.bundle_dir("order_extraction")), "fresh", progress=False)
    assert out["regression"] is False and out["fresh_examples"] == sum(
        1 for _ in (ROOT / "tasks/data/order_extraction/fresh.jsonl").open())


def test_the_readmes_jupyter_lines_work_as_written(run):
    """After the bare project.run (its run under artifacts/<run id>/), the README's next lines
    find that run by themselves: reevaluate with models "artifacts" (and the app the run
    sized), serve.sh on the project's artifacts, plan --decisions artifacts."""
    from test_serving_http import _free_port, start_serve

    project, layout, records = run
    clone = Path(project.context).resolve()
    decisions = json.loads(layout.decisions_file().read_text())
    assert decisions["app"] == "tasks/demo_app.yaml"
    assert decisions["url"] == "http://127.0.0.1:8080"  # what a client calls, offline after serve.sh
    assert decisions["serve_command"] == f"bash scripts/serve.sh --artifacts {layout.root}"
    # the README's line, exactly as written (cwd: the project)
    status = project.run("reevaluate", engine="local",   # deployed models vs fresh data
                         arguments={"fresh_split": "fresh", "models": "artifacts"})  # a local run's artifacts
    assert str(status.state).lower() in ("completed", "succeeded"), status.state
    # each task of the app the run sized was re-scored from that run's bundle (offline the run
    # DB keeps no step results: each step's logged table is the evidence)
    tables = sorted((clone / "artifacts" / status.run_id).glob("reevaluate-*/**/reevaluation.csv"))
    assert len(tables) == len(layout.tasks()), sorted(p.name for p in (clone / "artifacts" / status.run_id).iterdir())
    assert all("fresh_score" in t.read_text().splitlines()[0] for t in tables)
    out = subprocess.run([sys.executable, "-m", "rightsizer", "plan", "--decisions", "artifacts", "--json"],
                         cwd=clone, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(t for d in json.loads(out.stdout)["demands"] for t in d["tasks"]) == sorted(layout.tasks())
    traffic = clone / "artifacts" / "traffic.jsonl"  # the project's traffic_log param
    base, proc, log = start_serve(clone / "artifacts", _free_port(), "--traffic-log", str(traffic))
    try:
        with urllib.request.urlopen(f"{base}/v1/models", timeout=60) as r:
            served = {m["id"] for m in json.loads(r.read())["data"]}
        assert served == set(layout.tasks())
        assert f"from {layout.root}" in (clone / "artifacts" / "serve.log").read_text()
        _the_served_cascade_is_the_evaluated_one(base, records["chat_routing"])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    _the_served_traffic_is_watched(project, clone, records["chat_routing"])


def _the_served_traffic_is_watched(project, clone: Path, record: dict) -> None:
    """What serve.sh recorded, re-evaluated without labels as the README says: per task, drift,
    p95 latency against the SLO, the cascade's deferral share and agreement with the baseline
    model (tiny-l) answering the same inputs; the confirm half is the eval split's own traffic,
    so nothing is flagged."""
    from rightsizer.serving.traffic_log import read_traffic

    rows = list(read_traffic(clone / "artifacts" / "traffic.jsonl"))
    assert {r["task"] for r in rows} == {"chat_routing"} and len(rows) >= 40
    assert {r["model"] for r in rows} == {"demo:tiny-s", "demo:tiny-l"}  # the cascade's answering models
    status = project.run("reevaluate", engine="local", arguments={"models": "artifacts", "source": "served"})
    assert str(status.state).lower() in ("completed", "succeeded"), status.state
    (table,) = sorted((clone / "artifacts" / status.run_id).glob("reevaluate-*/**/served_monitoring.csv"))
    head, *windows = table.read_text().splitlines()
    for col in ("length_drift", "answer_mix_drift", "latency_p95_ms", "latency_budget_ms", "agreement",
                "deferral_share", "judged_right"):
        assert col in head.split(","), head
    assert len(windows) == 1
    w = dict(zip(head.split(","), windows[0].split(",")))
    assert w["length_drift_flag"] == "False" and w["answer_mix_flag"] == "False"
    pair = record["cascade"]["pairs"][record["cascade"]["kept"]]
    assert abs(float(w["deferral_share"]) - pair["deferral_rate"]) < 0.05 and 0 < float(w["agreement"]) <= 1
    assert 0 <= float(w["judged_right"]) <= 1
    # what each window is held to: the cascade's own agreement with the baseline on the eval split
    # (its small model answers most requests), and the verdicts of the judge the spec names
    assert w["judge_model"] == "demo:tiny-l" and w["shadow_model"] == record["baseline"]["model"]
    assert 0 < float(w["reference_agreement"]) <= 1 and 0 <= float(w["reference_judged_right"]) <= 1


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _the_served_cascade_is_the_evaluated_one(base: str, record: dict) -> None:
    """The confirm half of chat_routing's eval split through serve.sh (which serves the plan):
    the deferral rate the ladder judged, each answer named by the model that gave it, and the
    judged quality within the task's tolerance (tiny-l is served quantized, judged unquantized)."""
    from rightsizer import cascade
    from rightsizer.evaluate import load_rows
    from rightsizer.taskspec import load_task

    spec = load_task(ROOT / "tasks" / "chat_routing.yaml")
    pair = record["cascade"]["pairs"][record["cascade"]["kept"]]
    rows = load_rows(spec, spec.eval_split)
    confirm = [rows[i] for i in cascade.split_halves(len(rows))[1]]
    # in requests of 8 inputs: the engine the plan sized admits a bounded number at once (max_queue)
    out = [o for i in range(0, len(confirm), 8)
           for o in _post(f"{base}/v2/models/chat_routing/infer", {"inputs": [r["text"] for r in confirm[i:i + 8]]})[
               "outputs"]]
    assert sum(o["deferred"] for o in out) / len(out) == pair["deferral_rate"]
    assert all(o["answered_by"] == (pair["big"] if o["deferred"] else pair["small"]) for o in out)
    quality = sum(o["label"] == r["label"] for o, r in zip(out, confirm)) / len(out)
    assert abs(quality - pair["quality"]) <= spec.quality_tolerance, (quality, pair["quality"])
    one = _post(f"{base}/v1/completions", {"model": "chat_routing", "prompt": confirm[0]["text"]})
    assert one["model"] == one["choices"][0]["rightsizer"]["answered_by"] in (pair["small"], pair["big"])


def test_the_lora_task_trains_and_serves_its_production_adapter(run):
    _, layout, records = run
    from rightsizer.taskspec import load_task

    spec = load_task(ROOT / "tasks" / "review_sentiment.yaml")
    # finetune-<task> ran for the task whose chosen rung is LoRA, not for the zero-shot one
    assert layout.production_file("review_sentiment").is_file()
    assert not layout.finetune_task_dir("ticket_routing").exists()
    prod = json.loads(layout.production_file("review_sentiment").read_text())
    # the spec's full budget: epochs over the train split, in global batches
    assert prod["base_model"] == "demo:tiny-s" and spec.finetune.epochs
    assert prod["steps"] == math.ceil(spec.finetune.epochs * prod["examples"] / 16) > \
        spec.ladder.lora.steps
    # its job folder outlives the run (beside the runs' folders, named by the job id), so a
    # rerun after a kill resumes it
    jobs = StepCache(layout.root.parent / STEPS_FOLDER).finetune_jobs_dir("review_sentiment")
    assert Path(prod["adapter_dir"]).parent.parent == jobs
    # the decision record shows both runs: the ladder's screening and the production adapter
    lora = records["review_sentiment"]["lora"]
    assert lora["screening"]["score"] >= spec.threshold
    assert lora["screening"]["steps"] == spec.ladder.lora.steps
    p = lora["production"]
    assert p["score"] == prod["score"] >= spec.threshold
    assert (p["strategy"], p["world_size"]) == ("ddp", 1)
    assert p["tokens_per_second"] > 0 and 0 < p["final_loss"] < 1
    assert "production adapter" in records["review_sentiment"]["summary"]
    assert all(records[t]["lora"] is None for t in ("ticket_routing", "order_extraction", "answer_drafting"))
    # the served bundle is the production adapter's merge
    meta = json.loads((layout.bundle_dir("review_sentiment") / "rightsizer.json").read_text())
    assert meta["adapter"]["kind"] == "production"
    assert meta["adapter"]["merged_dir"] == prod["merged_dir"]
    assert json.loads((layout.bundle_dir("ticket_routing") / "rightsizer.json").read_text())[
        "adapter"] == {}


def test_the_fleet_plan_decides_the_deployment(run):
    project, layout, records = run
    plan = json.loads(layout.plan_file().read_text())
    hosted = [t for g in plan["groups"] for m in g["models"] for t in m["tasks"]]
    assert sorted(hosted) == sorted(records)  # every task placed, once
    # the chosen cascade's placement hosts both models: tiny-l for the deferred share, tiny-s
    # (as the ladder judged it, unquantized) in front of it for all of the task's traffic
    pair = records["chat_routing"]["cascade"]["pairs"][records["chat_routing"]["cascade"]["kept"]]
    chat = next(m for g in plan["groups"] for m in g["models"] if m["tasks"] == ["chat_routing"])
    assert chat["model"] == "demo:tiny-l" and chat["cascade"]["model"] == "demo:tiny-s"
    assert (chat["cascade"]["deferral_rate"], chat["cascade"]["threshold"]) == (pair["deferral_rate"], pair["threshold"])
    assert [m.get("cascade") for s in plan["function_specs"] for m in s["models"] if m["tasks"] == ["chat_routing"]] == [
        "demo:tiny-s"]
    assert plan["price_list"]["name"] == records["ticket_routing"]["price_list"]["name"]
    for g in plan["groups"]:  # each group states the request rate it holds within its p95 targets
        assert g["holds"]["planned_request_rate"] > 0 and g["holds"]["request_rate"] > 0
    assert plan["baseline"] and plan["comparison"]["cost_per_hour"]["baseline"] > 0
    # the plan names the engine every group runs and what its sizing assumed (not calibrated here)
    assert plan["serving_engine"]["deployed"].startswith("rightsizer continuous batching")
    assert "vLLM" in plan["serving_engine"]["sized_with"]
    specs = plan["function_specs"]
    assert [s["group"] for s in specs] == [g["name"] for g in plan["groups"]]
    # the deploy step deployed what the plan says: one group here, so its function is `serving`
    serving = project.get_function("serving")
    if len(specs) == 1:
        models = serving.spec.graph.steps["models"].class_args["models"]
        assert sorted(models) == sorted(records)
        from rightsizer.serving import EngineConfig

        loads = {t: m["load"] for m in specs[0]["models"] for t in m["tasks"]}
        for task, (_, params) in models.items():  # each engine sized for the load planned there
            assert params["engine"]["num_blocks"] == EngineConfig.for_load(**loads[task]).num_blocks
            assert params["engine"]["max_requests_per_batch"] == loads[task]["batch"]
            # the chosen cascade is served by the cascade engine, every other task by its model
            assert params["engine"]["cascade"] is (task == "chat_routing")
        assert serving.spec.node_selector == specs[0]["node_selector"]
        assert serving.spec.max_replicas == specs[0]["max_replicas"] and serving.spec.min_replicas == 0
    decisions = json.loads(layout.decisions_file().read_text())
    assert decisions["fleet_plan"]["totals"] == plan["totals"]  # the report shows the same plan
    page = layout.decision_report_file().read_text()  # and its page: the fleet, each task's group
    assert '<section id="fleet">' in page and page.count("plotly.js v") == 1
    assert all(f'href="#fleet-chosen-{g["name"]}"' in page for g in plan["groups"])


# The steps that remember their result (functions.mlrun_io.reusable): per task, the folders
# they write in the run's layout.
def _reusable_dirs(layout: RunLayout, task: str) -> list[Path]:
    dirs = [layout.select_dir(task), layout.evaluate_dir(task, "baseline"), layout.quantize_dir(task),
            layout.evaluate_dir(task, "chosen"), layout.size_gpu_dir(task)]
    return dirs + ([layout.finetune_task_dir(task)] if task == "review_sentiment" else [])


def _records(layout: RunLayout) -> dict:
    return {r["task"]: r for r in json.loads(layout.decisions_file().read_text())["records"]}


def test_a_rerun_reuses_every_finished_step_and_registers_nothing_again(run):
    """The same workflow again with nothing changed: every task step is the first run's,
    linked into the new run's folder, and none of them logs an artifact again."""
    project, first, records = run
    status = project.run("size_and_deploy", watch=True)
    assert str(status.state).lower() in ("completed", "succeeded"), status.state
    second = RunLayout(Path(project.context) / "artifacts" / status.run_id)
    assert second.root != first.root
    for task in records:
        for folder in _reusable_dirs(second, task):
            assert folder.is_symlink(), folder
            assert folder.resolve() == (first.root / folder.relative_to(second.root)).resolve()
    # MLRun writes a step's logged artifacts in a folder named after the step: only the steps
    # that always run (plan, deploy, report) wrote any
    logged = {p.name for p in second.root.iterdir() if p.name != "rightsizer"}
    assert not {n for n in logged if n.startswith(("select", "evaluate", "quantize", "size-gpu", "finetune"))}, logged
    # the same decisions, and this run's report and plan were written
    assert _records(second) == _records(first)
    assert second.decision_report_file().is_file() and second.plan_file().is_file()


def test_a_rerun_after_kill_9_in_the_finetune_step_resumes_it(run, tmp_path_factory, monkeypatch):
    """kill -9 of a workflow while finetune-review_sentiment trains; the rerun completes,
    reuses the select step that finished, resumes the adapter from its last checkpoint and
    ends with the adapter of the uninterrupted run."""
    from safetensors.torch import load_file

    _, first, _ = run
    clone = _clone(tmp_path_factory.mktemp("killed"))
    # the task that fine-tunes, alone: the other three tasks' steps would only add minutes
    (clone / "tasks" / "one_task.yaml").write_text("name: killed\ntasks:\n  - review_sentiment.yaml\n")
    args = {"app": "tasks/one_task.yaml"}
    jobs = StepCache(clone / "artifacts" / STEPS_FOLDER).finetune_jobs_dir("review_sentiment")
    # the trainer sleeps a little per step here, so the kill lands between two checkpoints
    env = dict(os.environ, RIGHTSIZER_FT_STEP_SLEEP="0.1")
    env.pop("MLRUN_ARTIFACT_PATH", None)
    log = tmp_path_factory.mktemp("killed-log") / "workflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"import mlrun; mlrun.load_project('./').run('size_and_deploy', arguments={args!r}, watch=True)"],
            cwd=clone, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    checkpoint = None
    while checkpoint is None and proc.poll() is None and time.time() < deadline:
        checkpoint = next(iter(jobs.glob("production-*/checkpoints/checkpoint-*/rightsizer-checkpoint.json")), None)
        time.sleep(0.05)
    if checkpoint is None:
        os.killpg(proc.pid, signal.SIGKILL)
    assert checkpoint is not None, log.read_text(errors="replace")[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL
    job = checkpoint.parents[2]
    assert not (job / "result.json").exists(), "the fine-tune finished before the kill"
    killed = [p for p in (clone / "artifacts").iterdir() if not p.name.startswith(".")]
    assert len(killed) == 1 and RunLayout(killed[0]).selection_file("review_sentiment").is_file()

    monkeypatch.chdir(clone)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("MLRUN_ARTIFACT_PATH", raising=False)
    project = mlrun.load_project("./")
    status = project.run("size_and_deploy", arguments=args, watch=True)
    assert str(status.state).lower() in ("completed", "succeeded"), status.state
    rerun = RunLayout(clone / "artifacts" / status.run_id)
    # the select step had finished before the kill: reused (linked from the killed run)
    assert rerun.select_dir("review_sentiment").is_symlink()
    assert rerun.select_dir("review_sentiment").resolve() == killed[0].resolve() / "rightsizer" / "review_sentiment" / "select"
    # the fine-tune resumed in the same job folder, from the checkpoint the kill left
    prod = json.loads(rerun.production_file("review_sentiment").read_text())
    assert Path(prod["adapter_dir"]).parent == job
    assert prod["resumed_from"] and Path(prod["resumed_from"]).name == checkpoint.parent.name
    # ... and ends with the uninterrupted run's adapter, to the bit
    ref = load_file(Path(json.loads(first.production_file("review_sentiment").read_text())["adapter_dir"])
                    / "adapter_model.safetensors")
    got = load_file(Path(prod["adapter_dir"]) / "adapter_model.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert _records(rerun).keys() == {"review_sentiment"}
    # nothing half-written is left in the job folder or the steps' memory
    assert not [p for p in jobs.rglob(".*tmp-*")]
