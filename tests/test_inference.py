"""The one inference path: the evaluate step and the served model answer alike, per task type."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlrun
import pytest

from functions.serving import set_task_models
from rightsizer import tasktypes
from rightsizer.bundle import bundle_spec, read_bundle, write_bundle
from rightsizer.errors import ConfigError
from rightsizer.evaluate import evaluate_model, load_rows, pick_shots
from rightsizer.inference import build_prompt, generate, load_bundle, load_model
from rightsizer.taskspec import load_task

ROOT = Path(__file__).resolve().parents[1]


def _specs(tmp: Path) -> dict[str, object]:
    """One spec per task type on the routing data (free-text references for generation)."""
    routing = load_task(ROOT / "tasks" / "ticket_routing.yaml")
    rows = load_rows(routing, "eval", 10)
    data = tmp / "gen.jsonl"
    data.write_text("\n".join(json.dumps({"text": r["text"], "label": f"{r['label']} queue please"})
                              for r in rows))
    extraction = dataclasses.replace(routing, name="routing_extraction", type="extraction",
                                     metric="exact_match", labels=[], max_new_tokens=4,
                                     max_eval_examples=10)
    # a prompt the model was not trained on: it runs on past line breaks, so the stop rule bites
    generation = dataclasses.replace(extraction, name="routing_generation", type="generation",
                                     metric="rouge_l", max_new_tokens=12, prompt="Note: {text}",
                                     dataset={"train": str(data), "eval": str(data)})
    return {"classification": dataclasses.replace(routing, max_eval_examples=10),
            "extraction": extraction, "generation": generation}


def test_every_task_type_is_registered():
    assert set(tasktypes.TASK_TYPES) == {"classification", "extraction", "generation"}
    with pytest.raises(ConfigError, match="'ranking' is not a task type"):
        tasktypes.get("ranking")


@pytest.mark.parametrize("task_type", ["classification", "extraction", "generation"])
def test_evaluate_step_and_served_model_answer_alike(task_type, demo_models, tmp_path):
    spec = _specs(tmp_path)[task_type]
    shots = pick_shots(spec, load_rows(spec, "train"), 2)  # few-shot prompts, as the ladder may pick
    bundle = write_bundle(demo_models / "models" / "tiny-s", spec, tmp_path / "bundle",
                          base_model="demo:tiny-s", rung="few_shot", shots=shots)
    measured = evaluate_model(spec, str(bundle), repeats=1, progress=False)
    answers = measured["predictions"]
    rows = load_rows(spec, "eval", spec.max_eval_examples)

    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    fn = project.get_function("serving")
    set_task_models(fn, {spec.name: str(bundle)})  # the flow graph, one engine per task
    server = fn.to_mock_server()
    out = server.test(f"/v2/models/{spec.name}/infer",
                      body={"inputs": [r[spec.input_field] for r in rows]})["outputs"]
    server.wait_for_completion()  # ends the async flow's loop thread (else the process waits on it)
    key = "label" if task_type == "classification" else "generated"
    assert [o[key] for o in out] == answers  # row by row, the answer the step measured
    assert len(answers) == len(rows) == 10 and all(isinstance(a, str) for a in answers)
    if task_type == "generation":  # the type's stop rule, applied by both
        model, tok = load_model("demo:tiny-s")
        prompts = [build_prompt(spec, r, shots) for r in rows]
        whole = generate(model, tok, prompts, spec.max_new_tokens, stop=None)
        # whether a line break comes within 12 tokens is up to the trained weights (it differs
        # by CPU); test_generation_stop_rule forces one, here the two paths must cut alike
        assert all("\n" not in a for a in answers)
        assert answers == [w.split("\n")[0].strip() for w in whole]


def test_bundle_carries_its_spec(demo_models, tmp_path):
    spec = _specs(tmp_path)["generation"]
    bundle = write_bundle(demo_models / "models" / "tiny-s", spec, tmp_path / "b",
                          base_model="demo:tiny-s", rung="zero_shot")
    again = bundle_spec(read_bundle(bundle))
    assert (again.type, again.prompt, again.max_new_tokens, again.metric) == (
        spec.type, spec.prompt, spec.max_new_tokens, spec.metric)
    loaded = load_bundle(bundle, device="cpu")
    assert loaded.spec.name == spec.name and loaded.precision == "fp32"


def _steer(model, tokens_by_step: dict[int, int]):
    """Make greedy decoding pick ``tokens_by_step[k]`` at decoding step k (1-based) by adding a
    large logit at the output head: the line break then appears at a known step on any CPU,
    instead of wherever one machine's trained weights happen to put it."""
    calls = {"n": 0}

    def hook(_module, _inputs, logits):
        calls["n"] += 1
        token = tokens_by_step.get(calls["n"])
        if token is not None:
            logits = logits.clone()
            logits[..., -1, token] += 1e4
        return logits

    return model.get_output_embeddings().register_forward_hook(hook)


def test_generation_stop_rule(demo_models):
    model, tok = load_model("demo:tiny-s")
    ids = {piece: tok.encode(piece, add_special_tokens=False) for piece in ("ok", "\n", "order")}
    assert all(len(v) == 1 for v in ids.values()), ids  # one token each in the demo tokenizer
    prompt = ["Ticket: my card was charged twice"]
    steps = {1: ids["ok"][0], 2: ids["\n"][0], 3: ids["order"][0]}

    def steered(stop):
        handle = _steer(model, steps)
        try:
            return generate(model, tok, prompt, max_new_tokens=6, stop=stop)[0]
        finally:
            handle.remove()

    whole, cut = steered(None), steered(("\n",))
    assert whole.startswith("ok\norder") and cut == "ok"
    # any stop string, the first one found wins; an answer may span lines
    assert steered(("der", "xyz")) == "ok\nor" and steered(("k\nor",)) == "o"
    # unsteered, the stop rule is the one the evaluate step and the server apply
    plain = generate(model, tok, prompt, max_new_tokens=12, stop=None)[0]
    assert generate(model, tok, prompt, max_new_tokens=12)[0] == plain.split("\n")[0].strip()
    with pytest.raises(ValueError, match="stop"):
        generate(model, tok, prompt, max_new_tokens=2, stop="newline")


def test_load_model_picks_attention_and_keeps_safe_defaults(demo_models):
    model, tok = load_model("demo:tiny-s")
    assert model.config._attn_implementation == "sdpa"  # choose_attention on the CPU
    assert tok.pad_token is not None and not model.training
    with pytest.raises(ConfigError, match="no such local model folder"):
        load_model("./nowhere")


def test_a_model_that_needs_remote_code_is_refused_naming_the_spec_field(demo_models, tmp_path):
    import shutil

    from rightsizer.models import load_config

    folder = tmp_path / "custom"
    shutil.copytree(demo_models / "models" / "tiny-s", folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="rightsizer-custom", auto_map={"AutoConfig": "configuration_custom.Config"})
    (folder / "config.json").write_text(json.dumps(config))
    ran = tmp_path / "ran"
    (folder / "configuration_custom.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    for load in (load_config, load_model):
        with pytest.raises(ConfigError, match="set trust_remote_code: true in the task spec"):
            load(str(folder))
    assert not ran.exists()  # the repository's code never ran


@pytest.mark.parametrize("damage, expected", [
    ("truncate rightsizer.json", r"rightsizer.json: not a valid bundle file \(JSONDecodeError"),
    ("truncate model.safetensors", r"a weights file is corrupt .*model.safetensors"),
    ("delete tokenizer", r"cannot load it from .*\(.*\); its files: \["),
])
def test_a_corrupted_bundle_is_a_clear_error_naming_the_file(demo_models, tmp_path, damage, expected):
    spec = load_task(ROOT / "tasks" / "ticket_routing.yaml")
    bundle = write_bundle(demo_models / "models" / "tiny-s", spec, tmp_path / "b", base_model="demo:tiny-s",
                          rung="zero_shot")
    action, name = damage.split(" ")
    if action == "truncate":
        f = bundle / name
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:
        for f in bundle.glob("tokenizer*"):
            f.unlink()
    with pytest.raises(ConfigError, match=expected):
        load_bundle(bundle, device="cpu")
