"""A judge model: a label-free verdict on served answers, for a task whose spec names one
(``judge: <model>``).

The judge answers a yes/no question about each (request, answer) pair: the task's own prompt
for the request, the answer, then "is that answer right?". It is run as a two-label
classification through the one inference path (``rightsizer.inference.predict``: the judge's
chat template when its tokenizer has one, the options scored by log-likelihood, not parsed), so
a judge of any supported family is asked the same way. Its verdict share on served traffic is
held to its verdict share on the deployed answers to the eval split (the chosen model's, or a
cascade's; ``rightsizer.reevaluate.label_free_checks``): the judge's own bias cancels, and a drop beyond the task's ``quality_tolerance`` is flagged by
``rightsizer.monitor.served_report``, as MLRun's monitoring-and-feedback demo does with an LLM judge.
"""

from __future__ import annotations

import dataclasses
from rightsizer.errors import ConfigError
from rightsizer.monitor import Judge
from rightsizer.schema.task import TaskSpec

VERDICTS = ("yes", "no")
QUESTION = "Is that answer right for the request above? Reply yes or no."
SYSTEM = "You check the answers of an assistant. Reply with one word: yes or no."
CASE = "case"


def judge_spec(spec: TaskSpec) -> TaskSpec:
    """The yes/no classification the judge of ``spec``'s answers performs (``case_text`` rows)."""
    return dataclasses.replace(
        spec, name=f"{spec.name}-judge", type="classification", input_field=CASE, label_field="verdict",
        prompt="{" + CASE + "}", labels=list(VERDICTS), metric="accuracy", retrieval=None, extraction=None,
        system=SYSTEM, stop=None, index=None, rendering=None, prompt_format="auto")


def case_text(spec: TaskSpec, text: str, answer: str) -> str:
    """What the judge reads: the task's prompt for ``text`` (no retrieved passages), the answer, the question."""
    return f"{spec.format_prompt({spec.input_field: text}).rstrip()} {answer}\n\n{QUESTION}"


def load_judge(spec: TaskSpec, target=None) -> Judge:
    """The spec's judge model, loaded once (safetensors; ``trust_remote_code`` as the spec says)."""
    from rightsizer.inference import load_model, predict
    from rightsizer.models import resolve_model_ref

    if not spec.judge:
        raise ConfigError("judge: the task names no judge model", spec.name)
    model, tok = load_model(resolve_model_ref(spec.judge), trust_remote_code=spec.trust_remote_code, target=target)
    jspec = judge_spec(spec)

    def judge(inputs: list[str], answers: list[str]) -> list[bool]:
        if len(inputs) != len(answers):
            raise ConfigError(f"judge: {len(inputs)} inputs against {len(answers)} answers; expected as many",
                              spec.name)
        rows = [{CASE: case_text(spec, i, a)} for i, a in zip(inputs, answers)]
        return [a == VERDICTS[0] for a in predict(model, tok, jspec, rows).answers] if rows else []
    return judge


def judged_right(judge: Judge, inputs: list[str], answers: list[str]) -> float:
    """The share of answers ``judge`` calls right."""
    verdicts = judge(inputs, answers)
    if not verdicts:
        raise ConfigError("judge: no answers to judge; expected at least one")
    return sum(verdicts) / len(verdicts)


__all__ = ["Judge", "judge_spec", "case_text", "load_judge", "judged_right", "VERDICTS"]
