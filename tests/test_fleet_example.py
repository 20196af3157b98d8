"""The hub-scale example (tasks/examples/support_hub.yaml): planned from published configs with
no weights (``plan --app``), cheaper than the one-big-model baseline, every task placed once,
quality reported as not measured; clear errors for a task without a planned model or a
missing config file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from rightsizer.cli import EXIT_CONFIG, EXIT_OK, main
from rightsizer.errors import ConfigError
from rightsizer.plan import NOT_MEASURED, decisions_from_app, plan_app
from rightsizer.sizing import Workload, count_params, estimate, load_catalog
from rightsizer.sizing.params import load_config
from rightsizer.sizing.prices import DEFAULT_PRICE_LIST
from rightsizer.taskspec import load_app, load_task, task_from_dict
from tests.specfiles import save_task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tasks" / "examples"
APP = EXAMPLES / "support_hub.yaml"


@pytest.fixture(scope="module")
def app_json() -> dict:
    """``plan --app ... --json`` on the shipped example, once for the module."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["plan", "--app", str(APP), "--json"])
    assert rc == EXIT_OK
    return json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def plan():
    return plan_app(APP)


def _spec_files() -> list[Path]:
    return [EXAMPLES / ref for ref in yaml.safe_load(APP.read_text())["tasks"]]


def test_the_example_ships_its_configs_with_sources():
    app = load_app(APP)
    assert len(app.tasks) == 4
    sources = (EXAMPLES / "configs" / "SOURCES.md").read_text()
    for spec in app.tasks:
        assert spec.plan is not None, spec.name
        path = Path(spec.base_dir) / spec.plan.model
        cfg = json.loads(path.read_text())
        assert path.parent == EXAMPLES / "configs" and path.stat().st_size < 4096
        assert cfg["_source"].startswith("https://huggingface.co/") and cfg["_source"] in sources
        # the shipped file is the tested fixture (its parameter count checked in test_sizing_params)
        fixture = ROOT / "tests" / "fixtures" / "configs" / path.name
        assert {k: v for k, v in cfg.items() if k != "_source"} == json.loads(fixture.read_text())
    sizes = sorted(count_params(Path(s.base_dir) / s.plan.model).total for s in app.tasks)
    assert sizes[0] < 200e6 and 6e9 < sizes[-1] < 9e9  # a 135M model up to an 8B one


def test_decisions_from_app_are_what_plan_fleet_reads():
    records = decisions_from_app(APP)
    specs = {s.name: s for s in load_app(APP).tasks}
    assert sorted(r["task"] for r in records) == sorted(specs)
    base_cfg = load_config(str(EXAMPLES / "configs" / "llama-2-70b.json"))
    for r in records:
        s = specs[r["task"]]
        assert r["chosen"]["precision"] == s.plan.precision and r["chosen"]["quality"] is None
        assert r["chosen"]["config"] == load_config(str(Path(s.base_dir) / s.plan.model))
        assert r["chosen"]["params"] == count_params(r["chosen"]["config"]).total
        assert r["baseline"]["config"] == base_cfg and r["baseline"]["precision"] == "bf16"
        shape = {k: r["workload"][k] for k in ("prompt_tokens", "output_tokens", "batch")}
        assert shape == {"prompt_tokens": s.workload.prompt_tokens, "output_tokens": s.workload.output_tokens,
                         "batch": s.workload.batch}
        # a spec's own length histogram travels with its record (the plan's holds and mixed devices read it)
        assert (r["workload"].get("lengths") or {}).get("histogram") == s.workload.lengths
        assert r["slo"]["throughput_tokens_per_s"] == s.slo.throughput_tokens_per_s
        assert (r["metric"], r["threshold"]) == (s.metric, s.threshold)


def test_cli_plans_the_example_and_every_task_is_placed_once(app_json):
    out = app_json
    assert out["input"] == {"app": str(APP)} and out["price_list"]["name"] == DEFAULT_PRICE_LIST
    names = sorted(s.name for s in load_app(APP).tasks)
    placed = [m["name"] for g in out["groups"] for m in g["models"]]
    assert sorted(placed) == names  # each task once
    assert sorted(m["name"] for f in out["function_specs"] for m in f["models"]) == names
    for g in out["groups"]:
        assert g["memory_used_bytes"] <= g["memory_capacity_bytes"]
        assert g["busy_per_replica"] <= out["headroom"] + 1e-9
    # the baseline fleet: one model carrying every task's traffic
    (bg,) = out["baseline"]["groups"]
    (bm,) = bg["models"]
    assert sorted(bm["tasks"]) == names and bm["model"] == "meta-llama/Llama-2-70b-hf" and bm["precision"] == "bf16"
    assert out["baseline"]["totals"]["throughput_tokens_per_s"] == pytest.approx(
        sum(s.slo.throughput_tokens_per_s for s in load_app(APP).tasks))
    assert out["baseline"]["totals"]["throughput_tokens_per_s"] == pytest.approx(
        out["totals"]["throughput_tokens_per_s"])


def test_the_chosen_fleet_is_cheaper_than_the_baseline_fleet(plan, app_json):
    cat = load_catalog()
    b = plan.baseline
    assert b is not None and not plan.baseline_error
    # prices recomputed from the price list: each group is replicas x its device kind's price
    for fleet in (plan, b):
        for g in fleet.groups:
            dev = cat.get(g.device)
            unit = dev.slice_price(next(p for p in dev.mig_profiles if p.name == g.mig)) if g.mig \
                else dev.price_per_hour * g.count
            assert g.cost_per_hour == pytest.approx(unit * g.replicas)
    assert plan.cost_per_hour < b.cost_per_hour
    assert plan.cost_per_1m_output_tokens < b.cost_per_1m_output_tokens
    comp = app_json["comparison"]
    assert comp["cost_per_hour"] == {"chosen": pytest.approx(plan.cost_per_hour),
                                     "baseline": pytest.approx(b.cost_per_hour)}
    assert comp["saving"] == pytest.approx(1 - plan.cost_per_hour / b.cost_per_hour) and comp["saving"] > 0
    # the baseline cannot run on any device the chosen fleet uses: a 70B bf16 model does not fit there
    for g in plan.groups:
        dev = cat.get(g.device)
        wl = Workload(b.demands[0].prompt_tokens, b.demands[0].output_tokens, b.demands[0].batch, "bf16")
        assert not estimate(b.demands[0].config, dev, wl, count=g.count, mig=g.mig).fits


def test_the_8b_task_runs_apart_from_the_small_ones_unless_the_plan_shares(plan):
    cat = load_catalog()
    specs = {s.name: s for s in load_app(APP).tasks}
    params = {n: count_params(Path(s.base_dir) / s.plan.model).total for n, s in specs.items()}
    big = max(params, key=params.get)
    small = [n for n, p in params.items() if p <= 0.6e9]
    assert params[big] > 7e9 and small
    g_big, p_big = plan.placement_of(big)
    dem_big = next(d for d in plan.demands if d.name == big)
    for n in small:
        g, _ = plan.placement_of(n)
        if g is g_big:  # sharing is allowed only where the plan says so: same group, both members
            assert {big, n} <= {p.name for p in g.placements}
            continue
        assert (g.device, g.mig, g.count) != (g_big.device, g_big.mig, g_big.count)
        # the small task's device kind is cheaper, and the 8B model at its planned batch does not fit it
        assert g.price_per_hour < g_big.price_per_hour
        wl = Workload(dem_big.prompt_tokens, dem_big.output_tokens, p_big.batch, p_big.precision)
        assert not estimate(dem_big.config, cat.get(g.device), wl, count=g.count, mig=g.mig).fits


def test_quality_is_reported_as_not_measured(plan, app_json, capsys):
    specs = {s.name: s for s in load_app(APP).tasks}
    assert set(app_json["quality"]) == set(specs)
    for name, q in app_json["quality"].items():
        assert q["measured"] is False and q["status"] == NOT_MEASURED and q["chosen"] is None
        assert q["metric"] == specs[name].metric and q["threshold"] == specs[name].threshold
    assert any(NOT_MEASURED in n for n in app_json["notes"])
    # the text output: chosen beside baseline, where each task runs, the saving
    assert main(["plan", "--app", str(APP)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "| chosen fleet" in text and "| baseline fleet" in text
    assert f"{plan.cost_per_hour:.3f}" in text and f"{plan.baseline.cost_per_hour:.3f}" in text
    assert f"saving vs baseline: {plan.comparison()['saving']:.1%}" in text
    for name in specs:
        g, p = plan.placement_of(name)
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} "))
        assert g.label in row and p.precision in row and NOT_MEASURED in row


def test_app_and_decisions_are_mutually_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--app", str(APP), "--decisions", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["plan"])
    assert exc.value.code == 2
    assert "--app" in capsys.readouterr().err


def _copy_example(tmp_path: Path) -> Path:
    dst = tmp_path / "examples"
    shutil.copytree(EXAMPLES, dst)
    return dst / APP.name


def _edit(spec_file: Path, fn) -> None:
    data = yaml.safe_load(spec_file.read_text())
    fn(data)
    spec_file.write_text(yaml.safe_dump(data))


def test_a_task_without_a_planned_model_is_a_clear_error(tmp_path, capsys):
    app = _copy_example(tmp_path)
    spec_file = app.parent / "order_extraction.yaml"
    _edit(spec_file, lambda d: d.pop("plan"))
    with pytest.raises(ConfigError) as exc:
        decisions_from_app(app)
    assert str(app) in str(exc.value) and f"{spec_file}: plan: missing" in str(exc.value)
    assert main(["plan", "--app", str(app), "--json"]) == EXIT_CONFIG
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "ConfigError" and any(f"{spec_file}: plan: missing" in p for p in out["problems"])


def test_a_missing_config_file_is_a_clear_error(tmp_path, capsys):
    app = _copy_example(tmp_path)
    spec_file = app.parent / "answer_drafting.yaml"
    _edit(spec_file, lambda d: d["plan"].update(model="configs/nope.json"))
    (app.parent / "configs" / "llama-2-70b.json").unlink()
    assert main(["plan", "--app", str(app)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{spec_file}: plan.model: config file not found: {app.parent / 'configs' / 'nope.json'}" in err
    assert f"{app}: baseline.model: config file not found" in err  # every problem at once
    # a config the sizing engine cannot read names the field too
    (app.parent / "configs" / "nope.json").write_text(json.dumps({"model_type": "unknown-arch"}))
    (app.parent / "configs" / "llama-2-70b.json").write_text((EXAMPLES / "configs" / "llama-2-70b.json").read_text())
    with pytest.raises(ConfigError, match=r"answer_drafting.yaml: plan.model: .*unknown architecture"):
        decisions_from_app(app)


def test_a_bad_baseline_section_names_the_field(tmp_path):
    app = _copy_example(tmp_path)
    _edit(app, lambda d: d["baseline"].update(precision="int4"))
    with pytest.raises(ConfigError, match=r"baseline.precision: unknown field"):
        decisions_from_app(app)
    _edit(app, lambda d: d.pop("baseline"))
    records = decisions_from_app(app)  # without one: the largest planned model, bf16
    biggest = max(records, key=lambda r: r["chosen"]["params"])
    assert all(r["baseline"]["model"] == biggest["chosen"]["model"] and r["baseline"]["precision"] == "bf16"
               for r in records)


def test_the_plan_section_is_optional_validated_and_round_trips(tmp_path):
    spec_file = EXAMPLES / "review_sentiment.yaml"
    spec = load_task(spec_file)
    assert spec.plan.precision == "int4" and spec.plan.model == "configs/qwen2.5-0.5b.json"
    save_task(spec, tmp_path / "x.yaml")
    assert load_task(tmp_path / "x.yaml").to_dict() == spec.to_dict()
    data = yaml.safe_load(spec_file.read_text())
    no_plan = {k: v for k, v in data.items() if k != "plan"}
    assert task_from_dict(no_plan).plan is None and "plan" not in task_from_dict(no_plan).to_dict()
    assert task_from_dict({**no_plan, "plan": None}).plan is None
    with pytest.raises(ConfigError, match=r"plan.precision: .*unknown precision 'int3'"):
        task_from_dict({**data, "plan": {"model": "configs/x.json", "precision": "int3"}})
    with pytest.raises(ConfigError, match=r"plan.model: missing required field"):
        task_from_dict({**data, "plan": {"precision": "int8"}})
    with pytest.raises(ConfigError, match=r"plan.size: unknown field"):
        task_from_dict({**data, "plan": {"model": "configs/x.json", "size": 1}})
    with pytest.raises(ConfigError, match=r"plan: expected a mapping"):
        task_from_dict({**data, "plan": "configs/x.json"})


def test_a_task_split_by_prompt_length_keeps_its_traffic_and_every_length_once():
    """``split_by_prompt``: two parts whose output tokens/s add up to the task's, whose prompt
    ranges cover its histogram once, each sized at its own mean shape; no split without a
    histogram, past the longest prompt, or for a cascade."""
    from dataclasses import replace

    from rightsizer.plan.demand import CascadeDemand, demands_from_decisions, split_by_prompt

    (d,) = [x for x in demands_from_decisions(decisions_from_app(APP)) if x.name == "answer_drafting"]
    short, long_ = split_by_prompt(d, 200)
    assert short.throughput_tokens_per_s + long_.throughput_tokens_per_s == pytest.approx(d.throughput_tokens_per_s)
    # 80 drafts of 180 tokens against 20 of 560: the short part carries 144 / 256 of the output tokens
    assert short.throughput_tokens_per_s == pytest.approx(d.throughput_tokens_per_s * 80 * 180 / (80 * 180 + 20 * 560))
    assert (short.prompt_range, long_.prompt_range) == ((200, 200), (201, 4200))
    assert (short.prompt_tokens, short.output_tokens, long_.prompt_tokens, long_.output_tokens) == (200, 180, 4200, 560)
    assert short.tasks == long_.tasks == ["answer_drafting"] and short.name != long_.name
    assert split_by_prompt(d, 4200) is None and split_by_prompt(replace(d, lengths=None), 200) is None
    assert split_by_prompt(replace(d, cascade=CascadeDemand("s", None, "bf16", 0.3, 0.9)), 200) is None


@pytest.fixture(scope="module")
def without_mig():
    return plan_app(APP, include_mig=False, mixed_devices=True)


def test_mixed_device_types_pay_on_the_example_without_mig_slices(without_mig):
    """Mélange's point on the hub-scale example: without MIG slices, answer drafting's short
    requests on a T4 and its long threads on another device cost less than the task on one
    device type, both fleets holding their planned traffic within the p95 targets (arrivals at
    random); the JSON keeps the alternative, which says whether it is deployed. With MIG slices the
    split does not pay, and the plan says why."""
    from rightsizer.plan.fleet import FleetPlan

    plan = without_mig
    assert plan.mixed is not None and plan.mixed.cost_per_hour < plan.cost_per_hour
    assert plan.mixed_note.startswith("pays: ")
    parts = {p.name: g for g in plan.mixed.groups for p in g.placements if p.tasks == ["answer_drafting"]}
    assert len(parts) == 2 and len({g.label for g in parts.values()}) == 2  # two device types
    for fleet in (plan, plan.mixed):
        assert all(g.holds["meets_planned"] for g in fleet.groups if g.holds)
    info = plan.mixed_devices()
    assert info["deployed"] is False and "deploy_mixed_devices is false" in info["why_not_deployed"]
    assert sorted(p["prompt_tokens"] for p in info["splits"]["answer_drafting"]) == [[200, 200], [201, 4200]]
    assert info["saving"] == pytest.approx(1 - plan.mixed.cost_per_hour / plan.cost_per_hour)
    back = FleetPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back.mixed.cost_per_hour == pytest.approx(plan.mixed.cost_per_hour) and back.mixed_note == plan.mixed_note
    # deployed (deploy_mixed_devices): its function specs carry each part's prompt range, which the
    # entry point routes by (rightsizer.routing.plan_routes)
    from rightsizer.routing import plan_routes

    specs = plan.mixed.function_specs()
    ranges = sorted(m["prompt_range"] for s in specs for m in s["models"] if m["tasks"] == ["answer_drafting"])
    assert ranges == [[200, 200], [201, 4200]]
    _, _, parts = plan_routes(specs, [s["name"] for s in specs])
    assert [bound for bound, _ in parts["answer_drafting"]] == [800, None]
    plan.mixed_deployed = True
    assert FleetPlan.from_dict(plan.to_dict()).mixed_devices()["deployed"] is True
    plan.mixed_deployed = False
    with_mig = plan_app(APP, mixed_devices=True, baseline=False)
    assert with_mig.mixed is None and with_mig.mixed_note.startswith("does not pay: ")
    assert plan_app(APP, baseline=False).to_dict().get("mixed_devices") is None  # not asked, not planned


def test_a_group_below_its_planned_traffic_gets_the_replicas_that_hold_it(without_mig):
    """The packer sizes on the closed loop; the simulation says a group's p95 under random
    arrivals: without MIG slices answer drafting's group holds 0.9x its planned traffic on one
    device, so the plan gives it two, and says so."""
    from rightsizer.plan.solve import hold_planned

    (g,) = [g for g in without_mig.groups if any(p.tasks == ["answer_drafting"] for p in g.placements)]
    assert g.replicas == 2 and g.holds["raised_from_replicas"] == 1 and g.holds["meets_planned"]
    assert any("1 -> 2 replicas to hold its planned traffic" in n for n in without_mig.notes)
    h = {"planned_request_rate": 10.0, "request_rate": 4.0, "scale": 0.4, "meets_planned": False}
    assert hold_planned(h, 2)[0] == 5 and hold_planned(h, 2)[1]["scale"] == pytest.approx(1.0)
    assert hold_planned({**h, "scale": 1.5, "meets_planned": True}, 2) == (2, {**h, "scale": 1.5, "meets_planned": True})
    assert hold_planned(None, 3) == (3, None)


def test_the_cli_shows_the_mixed_device_fleet():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["plan", "--app", str(APP), "--mixed-devices", "--no-mig", "--no-baseline"]) == EXIT_OK
    out = buf.getvalue()
    assert "mixed device types: pays:" in out and "answer_drafting@prompt<=200" in out
    assert "the plan step deploys it where the project param deploy_mixed_devices is true" in out


def test_the_decision_report_shows_the_mixed_device_fleet(without_mig):
    """The report's fleet section says what the mixed-device plan found and where each split
    task's parts would run, and whether it is deployed."""
    from rightsizer.report.page import _fleet_html

    # the fleet section alone: an app spec's records have no measured quality for the rest of the page
    page = "".join(_fleet_html(without_mig.to_dict(), lambda fig, key: ""))
    assert "Mixed device types for one task (split by prompt length)" in page
    assert "answer_drafting@prompt&lt;=200" in page and "201-4200" in page
    assert "Not deployed: the project param deploy_mixed_devices is false" in page
    body = without_mig.to_dict()
    body["mixed_devices"]["deployed"] = True
    assert "Deployed: the entry point routes a split task" in "".join(_fleet_html(body, lambda fig, key: ""))
