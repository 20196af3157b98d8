"""One task that cannot be sized does not hide the others (size_and_deploy, MLRun local engine).

A two-task application: ``review_sentiment`` with a bar no candidate reaches (accuracy 1.0 on
the negated reviews, zero-shot only) first, then ``ticket_routing``, which passes. Both run on
one small randomly initialised Llama built here (a tokenizer trained on the tasks' text), so
the test needs no demo build. The first workflow fails after its report, before deploying;
the second, with ``deploy_partial``, deploys the task that passed. The two share the steps'
memory (``$RIGHTSIZER_STEPS_DIR``), so the second reuses the task steps, the unsized task's
select step included.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlrun
import pytest
import yaml

from rightsizer.layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
UNSIZED, SIZED = "review_sentiment", "ticket_routing"


def _candidate(folder: Path) -> Path:
    """A 2-layer Llama with random weights and a byte-level BPE tokenizer of the tasks' text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [json.loads(line)["text"] for task in (UNSIZED, SIZED)
             for line in (ROOT / "tasks" / "data" / task / "train.jsonl").read_text().splitlines()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    hf.save_pretrained(folder)
    return folder


def _spec(task: str, dest: Path, candidate: Path, **changes) -> str:
    """The demo task's spec and data in ``dest`` (the spec's folder is its project), zero-shot
    on ``candidate`` only."""
    import shutil

    spec = yaml.safe_load((ROOT / "tasks" / f"{task}.yaml").read_text())
    for path in spec["dataset"].values():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "tasks" / path, dest / path)
    spec.update(candidates=[str(candidate)], precisions=[], **changes)  # bf16 only: fast
    spec["ladder"]["rungs"] = ["zero_shot"]
    (dest / f"{task}.yaml").write_text(yaml.safe_dump(spec))
    return f"{task}.yaml"


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Path:
    """The application spec (the unsized task first); its folder holds each run's artifacts."""
    base = tmp_path_factory.mktemp("unsized")
    candidate = _candidate(base / "candidate")
    tasks = [_spec(UNSIZED, base, candidate, threshold=1.0),  # no model reaches 1.0 on negations
             _spec(SIZED, base, candidate, threshold=0.0)]  # any model passes
    (base / "app.yaml").write_text(yaml.safe_dump({"name": "partial", "tasks": tasks}))
    with pytest.MonkeyPatch.context() as mp:  # both runs remember and reuse their steps here
        mp.setenv("RIGHTSIZER_STEPS_DIR", str(base / "steps"))
        yield base / "app.yaml"


def _run(app_file: Path, run: str, **arguments):
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    artifacts = app_file.parent / run
    status = project.run("size_and_deploy", arguments={"app": str(app_file), **arguments},
                         artifact_path=str(artifacts), watch=True, dirty=True)
    return project, status, RunLayout(artifacts)


def _served_tasks(project) -> list[str]:
    steps = project.get_function("serving").spec.graph.steps
    return sorted(steps["models"].class_args.get("models") or {}) if "models" in steps else []


def _summary_rows(decisions: dict) -> dict:
    from rightsizer.report import summary_rows

    return {(r["task"], r["choice"]): r for r in summary_rows(decisions["records"], decisions["unsized"])}


@pytest.fixture(scope="module")
def failed(app):
    """The workflow with the default deploy_partial (false)."""
    return _run(app, "failed")


def test_an_unsized_task_fails_the_workflow_after_the_report_and_before_deploying(failed):
    project, status, layout = failed
    assert str(status.state).lower() == "failed", status.state
    # one line, from the step after the report: the task, its bar and what would be needed
    error = str(status.exc)
    assert error.startswith("step 'all-tasks-sized' failed: nothing deployed: the application needs "
                            "all its tasks and 1 of its 2 cannot be sized."), error
    assert f"{UNSIZED}: NO candidate reaches accuracy >= 1.0" in error and "Would be needed: " in error
    assert f"To deploy the other task ({SIZED}) without {UNSIZED}, set the workflow argument or project " \
           "param deploy_partial=true." in error
    # the unsized task's select step finished with its outcome; its later steps never ran
    sel = json.loads(layout.selection_file(UNSIZED).read_text())
    assert sel["passed"] is False and sel["chosen"] is None
    for folder in (layout.evaluate_dir(UNSIZED, "baseline"), layout.quantize_dir(UNSIZED),
                   layout.evaluate_dir(UNSIZED, "chosen"), layout.size_gpu_dir(UNSIZED)):
        assert not folder.exists(), folder
    # the task after it ran all its steps
    assert layout.evaluation_file(SIZED, "baseline").is_file() and layout.evaluation_file(SIZED, "chosen").is_file()
    assert (layout.bundle_dir(SIZED) / "rightsizer.json").is_file() and layout.decision_file(SIZED).is_file()
    # the report was written and shows both tasks: the unsized one with what would be needed
    decisions = json.loads(layout.decisions_file().read_text())
    assert [r["task"] for r in decisions["records"]] == [SIZED]
    assert [u["task"] for u in decisions["unsized"]] == [UNSIZED] and decisions["deployed"] is False
    needs = decisions["unsized"][0]["needs"]
    assert needs and needs[0].startswith("a lower bar: accuracy threshold")
    assert decisions["missing"] in error  # the report says what the workflow failed with
    page = layout.decision_report_file().read_text()
    assert f'<section id="task-{SIZED}">' in page and f'<section id="task-{UNSIZED}" class="unsized">' in page
    assert "Would be needed" in page and needs[0] in page and "nothing deployed" in page
    # the summary table: the sized task (chosen and baseline), the unsized one, the totals
    rows = _summary_rows(decisions)
    assert rows[(UNSIZED, "unsized")]["meets_bar"] is False and rows[("TOTAL", "chosen")]["meets_bar"] == "1/2"
    # nothing was planned for the unsized task, and nothing was deployed
    plan = json.loads(layout.plan_file().read_text())
    assert [t for g in plan["groups"] for m in g["models"] for t in m["tasks"]] == [SIZED]
    assert plan["unsized_tasks"] == [UNSIZED]
    assert _served_tasks(project) == []


def test_deploy_partial_deploys_the_tasks_that_passed_and_says_which_is_missing(app, failed):
    """The same application with deploy_partial="true" (after the failed run: its task steps
    are reused)."""
    project, status, layout = _run(app, "partial", deploy_partial="true")
    assert str(status.state).lower() in ("completed", "succeeded"), status.exc
    # every task step of the failed run was reused (linked), the unsized select step's too
    for folder in (layout.select_dir(UNSIZED), layout.select_dir(SIZED), layout.size_gpu_dir(SIZED)):
        assert folder.is_symlink() and folder.resolve().is_relative_to(failed[2].root.resolve()), folder
    plan = json.loads(layout.plan_file().read_text())
    assert [t for g in plan["groups"] for m in g["models"] for t in m["tasks"]] == [SIZED]
    assert _served_tasks(project) == [SIZED]  # the deploy step deployed the sized task only
    decisions = json.loads(layout.decisions_file().read_text())
    assert decisions["deployed"] is True and decisions["endpoint"] == "serving"
    assert decisions["missing"].startswith(f"deployed without {UNSIZED} (deploy_partial is true)")
    assert f"{UNSIZED}: NO candidate reaches accuracy >= 1.0" in decisions["missing"]
    page = layout.decision_report_file().read_text()
    assert f"deployed without {UNSIZED}" in page and f'<section id="task-{UNSIZED}" class="unsized">' in page


def test_reevaluate_after_a_partial_deploy_says_which_task_has_no_model(app, failed):
    """The reevaluate workflow on the deploy_partial run's models: the deployed task is
    re-scored, the unsized one is reported as not deployed instead of failing the workflow."""
    partial = app.parent / "partial"
    if not RunLayout(partial).bundle_dir(SIZED).is_dir():
        _run(app, "partial", deploy_partial="true")
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    status = project.run("reevaluate", arguments={"app": str(app), "models": str(partial)},
                         artifact_path=str(app.parent / "reeval"), watch=True, dirty=True)
    assert str(status.state).lower() in ("completed", "succeeded"), status.exc
    results = {}
    for task in (UNSIZED, SIZED):
        run = project.run_function("reevaluate", params={"task_spec": str(app.parent / f"{task}.yaml"),
                                                         "models": str(partial)},
                                   local=True, output_path=str(app.parent / "reeval-steps"))
        results[task] = run.status.results
    assert results[SIZED]["deployed"] is True and results[SIZED]["fresh_score"] is not None
    assert results[UNSIZED]["deployed"] is False and results[UNSIZED]["regression"] is False
    action = results[UNSIZED]["action"]
    assert action.startswith(f"not deployed: the size_and_deploy run at {partial} could not size {UNSIZED}")
    assert "NO candidate reaches accuracy >= 1.0" in action
    # a run that never selected the task is still an error, not "not deployed"
    from rightsizer.unsized import not_deployed_reason

    assert not_deployed_reason(app.parent / "nowhere", SIZED) is None
    assert not_deployed_reason(partial, SIZED) is None


def test_the_project_param_deploy_partial_is_read_when_the_argument_is_auto(failed, tmp_path):
    """The plan step alone on the failed run's selections: the project param decides."""
    import shutil

    shutil.copytree(failed[2].base, tmp_path / "rightsizer", symlinks=True)  # the plan step writes there
    layout = RunLayout(tmp_path)
    selections = [str(layout.selection_file(t)) for t in (UNSIZED, SIZED)]
    for param, deploy in ((True, True), ("true", True), (False, False), ("false", False)):
        project = mlrun.load_project(str(ROOT), name="rightsizer", save=False,
                                     parameters={"deploy_partial": param})
        run = project.run_function("plan", params={"selections": selections}, local=True,
                                   output_path=str(layout.root))
        assert run.status.results["deploy"] is deploy, param
        assert run.status.results["unsized_tasks"] == [UNSIZED]
    project.spec.params["deploy_partial"] = "yes"
    with pytest.raises(RuntimeError, match=r"deploy_partial: 'yes'; expected true or false"):
        from pipelines.wiring import run_step

        run_step(project, "plan", params={"selections": selections}, local=True, output_path=str(layout.root))
