"""Every zoo architecture through ``size_and_deploy`` and ``scripts/serve.sh`` (MLRun local engine).

One application of eight tasks, one per architecture of tests/zoo.py: ticket routing with the
LoRA rung only and a bar every model reaches, so each task runs every step (the ladder's LoRA
screening, the production fine-tune, the baseline and chosen evaluations, the precision search
with int8 and int4, sizing), then the fleet is planned and deployed, and ``serve.sh`` answers
an OpenAI chat request for each task over HTTP. The models are random: the test pins that
every step ran and what each record says, not scores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlrun
import pytest
import yaml
from test_serving_http import _free_port, _post, start_serve, stop_serve

from rightsizer.families import family_of
from rightsizer.layout import RunLayout
from tests.zoo import ZOO, build

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
ARCHS = sorted(ZOO)
LABELS = ["billing", "shipping", "technical", "account"]


def _task(arch: str, dest: Path, candidate: Path) -> str:
    spec = yaml.safe_load((ROOT / "tasks" / "ticket_routing.yaml").read_text())
    for path in spec["dataset"].values():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "tasks" / path, dest / path)
    name = f"routing_{arch}"
    spec.update(name=name, candidates=[str(candidate)], threshold=0.0, max_eval_examples=16,
                precisions=["int8", "int4"])
    spec["ladder"] = {"rungs": ["lora"], "lora": {**spec["ladder"]["lora"], "steps": 3, "global_batch": 8}}
    spec["finetune"] = {**spec["finetune"], "epochs": None, "steps": 3, "global_batch": 8}
    (dest / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return f"{name}.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(project, workflow status, layout) of size_and_deploy on the eight-task app."""
    base = tmp_path_factory.mktemp("zoo-app")
    tasks = [_task(a, base, build(a, base / "models" / a)) for a in ARCHS]
    (base / "app.yaml").write_text(yaml.safe_dump({"name": "zoo", "tasks": tasks}))
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RIGHTSIZER_STEPS_DIR", str(base / "steps"))
        status = project.run("size_and_deploy", arguments={"app": str(base / "app.yaml")},
                             artifact_path=str(base / "artifacts"), watch=True, dirty=True)
    return project, status, RunLayout(base / "artifacts")


def test_every_architecture_goes_through_every_step(run):
    _, status, layout = run
    assert str(status.state).lower() in ("completed", "succeeded"), status.exc
    decisions = json.loads(layout.decisions_file().read_text())
    assert sorted(r["task"] for r in decisions["records"]) == [f"routing_{a}" for a in ARCHS]
    assert decisions["unsized"] == [] and decisions["deployed"] is True
    for arch in ARCHS:
        task = f"routing_{arch}"
        sel = json.loads(layout.selection_file(task).read_text())
        assert sel["passed"] and sel["chosen"]["rung"] == "lora", arch
        assert layout.production_file(task).is_file(), arch  # the production fine-tune ran
        assert layout.evaluation_file(task, "baseline").is_file() and layout.evaluation_file(task, "chosen").is_file()
        assert (layout.bundle_dir(task) / "rightsizer.json").is_file() and layout.decision_file(task).is_file()


def test_chat_template_models_are_prompted_through_their_template(run):
    """auto: the tokenizer's chat template where it has one (all but GPT-2's); the selection
    and the evaluate step say which format was used, and the per-sample log shows each prompt
    as the model read it."""
    _, _, layout = run
    opening = {"chatml": "<|im_start|>user\nTicket: ", "gemma": "<bos><start_of_turn>user\nTicket: ",
               "gpt2": "Ticket: "}
    for arch in ARCHS:
        task, kind = f"routing_{arch}", ZOO[arch].tokenizer
        fmt = "raw" if kind == "gpt2" else "chat"
        assert json.loads(layout.selection_file(task).read_text())["chosen"]["prompt_format"] == fmt, arch
        record = json.loads(layout.decision_file(task).read_text())
        assert record["chosen"]["prompt_format"] == record["baseline"]["prompt_format"] == fmt, arch
        assert record["chosen"]["sizing_rules"] == family_of(arch).name, arch  # not "generic"
        for label in ("baseline", "chosen"):
            assert json.loads(layout.evaluation_file(task, label).read_text())["prompt_format"] == fmt
            samples = [json.loads(line) for line in layout.samples_file(task, label).read_text().splitlines()]
            assert len(samples) == 16 and all(s["prompt"].startswith(opening[kind]) for s in samples), arch
            assert all(s["gold"] in LABELS and s["answer"] in LABELS for s in samples)


def test_the_precision_table_says_which_layers_int4_kept_higher(run):
    from rightsizer.bundle import read_bundle

    _, _, layout = run
    expected = {"phi3": ["mlp.gate_up_proj", "mlp.down_proj", "at int8: out_features 700 is not a multiple of 16",
                         "at int8: in_features 350 is not a multiple of the group size"],
                "mistral": ["lm_head at int8: out_features 405 is not a multiple of 16"]}
    for arch in ARCHS:
        rows = read_bundle(layout.bundle_dir(f"routing_{arch}"))["metrics"]["precision_search"]
        int4 = next(r for r in rows if r["precision"] == "int4" and r["status"] == "evaluated")
        assert all(e in int4["kept_higher"] for e in expected.get(arch, [])), (arch, int4["kept_higher"])
        assert bool(int4["kept_higher"]) == (arch in expected), (arch, int4["kept_higher"])


def test_serve_sh_answers_a_chat_request_for_every_architecture(run, tmp_path):
    _, _, layout = run
    port = _free_port()
    base, proc, log = start_serve(layout.root, port)
    try:
        for arch in ARCHS:
            body = {"model": f"routing_{arch}", "messages": [{"role": "user", "content": "I was charged twice"}]}
            status, _, text = _post(f"{base}/v1/chat/completions", body)
            assert status == 200, (arch, text)
            answer = json.loads(text)["choices"][0]["message"]["content"]
            assert answer in LABELS, (arch, answer)  # a classification task answers one of its labels
    finally:
        stop_serve(proc, log)
