"""Value checks of a task spec, once its types are right (``rightsizer.schema.check``):
ranges, names that must exist (task type, metric, rungs, precisions), the prompt template,
the knowledge source, a LoRA run's settings (``check_lora``, used by the trainer too).
"""

from __future__ import annotations

from typing import Any

from rightsizer import tasktypes
from rightsizer.errors import ConfigError
from rightsizer.metrics import METRIC_RANGE
from rightsizer.precisions import SEARCH_ORDER, get_precision
from rightsizer.prompting import PROMPT_FORMATS
from rightsizer.schema.check import is_number, is_positive_int
from rightsizer.schema.task import (CHUNK_RULES, CONTEXT, DECISION_RULES, EXTRACTION_FORMATS, RETRIEVERS, RUNGS, TASK_NAME,
                                    TRUNCATE_RULES, TaskSpec, template_fields)
from rightsizer.taskspec.paths import DATA_ROOTS_ENV, allowed_roots, within_roots
from rightsizer.tasktypes import TASK_TYPES


def check_values(spec: TaskSpec, problems: list[str], check_source: bool = True) -> None:
    """Every value problem of a well-typed spec, appended to ``problems``."""
    _check_values(spec, problems)
    if spec.retrieval is not None:
        _check_retrieval(spec, problems, check_source)


def _check_values(spec: TaskSpec, problems: list[str]) -> None:
    if not TASK_NAME.fullmatch(spec.name):
        problems.append(f"name: {spec.name!r}; expected letters, digits, '_', '-' or '.', starting with a "
                        "letter or digit (it names the task's folders, artifacts and served model)")
    task_type = tasktypes.REGISTRY.get(spec.type)
    if task_type is None:
        problems.append(f"type: {spec.type!r} is not a task type; expected one of {list(TASK_TYPES)}")
    elif spec.metric not in task_type.metrics:
        problems.append(f"metric: {spec.metric!r} does not fit a {spec.type} task; "
                        f"expected one of {list(task_type.metrics)}")
    lo, hi = METRIC_RANGE.get(spec.metric, (0.0, 1.0))
    if not lo <= spec.threshold <= hi:
        problems.append(f"threshold: {spec.threshold} is outside the metric's range [{lo:g}, {hi:g}]")
    for name in ("quality_tolerance", "deferral_tolerance"):
        if not 0.0 <= getattr(spec, name) <= 1.0:
            problems.append(f"{name}: {getattr(spec, name)} is outside [0, 1]")
    if spec.judge is not None and not spec.judge.strip():
        problems.append("judge: an empty model reference; expected a model (hub id, demo:<name> or a path) "
                        "or no judge")
    if spec.decision_rule not in DECISION_RULES:
        problems.append(f"decision_rule: {spec.decision_rule!r}; expected one of {list(DECISION_RULES)}")
    for split in (spec.train_split, spec.eval_split):
        if split not in spec.dataset:
            problems.append(f"dataset: no {split!r} split; the spec names splits {sorted(spec.dataset)}")
    _check_template(spec, task_type, problems)
    if task_type is not None:
        task_type.check_spec(spec, problems)
    if spec.extraction is not None and spec.extraction.format not in EXTRACTION_FORMATS:
        problems.append(f"extraction.format: {spec.extraction.format!r}; expected one of {list(EXTRACTION_FORMATS)}")
    if spec.extraction is not None and spec.type != "extraction":
        problems.append(f"extraction: only an extraction task names answer fields; this is a "
                        f"{spec.type} task")
    if spec.max_new_tokens <= 0:
        problems.append(f"max_new_tokens: {spec.max_new_tokens}; expected > 0")
    if spec.truncate not in TRUNCATE_RULES:
        problems.append(f"truncate: {spec.truncate!r}; expected one of {list(TRUNCATE_RULES)}")
    if spec.prompt_format not in PROMPT_FORMATS:
        problems.append(f"prompt_format: {spec.prompt_format!r}; expected one of {list(PROMPT_FORMATS)}")
    if spec.stop is not None and not all(spec.stop):
        problems.append(f"stop: {spec.stop!r}; expected non-empty strings (or no 'stop' for the default)")
    if spec.max_eval_examples is not None and spec.max_eval_examples <= 0:
        problems.append(f"max_eval_examples: {spec.max_eval_examples}; expected > 0 or null")
    sc = spec.screening
    if sc.min_examples < 1:
        problems.append(f"screening.min_examples: {sc.min_examples}; expected >= 1")
    if not sc.growth > 1.0:  # NaN fails too
        problems.append(f"screening.growth: {sc.growth}; expected > 1")
    if not 0.0 < sc.alpha < 1.0:
        problems.append(f"screening.alpha: {sc.alpha}; expected in (0, 1)")
    if not spec.candidates:
        problems.append("candidates: at least one candidate model is needed")
    for rung in spec.ladder.rungs:
        if rung not in RUNGS:
            problems.append(f"ladder.rungs: {rung!r} is not a rung; expected some of {list(RUNGS)}")
    if "retrieval" in spec.ladder.rungs and spec.retrieval is None:
        problems.append("ladder.rungs: 'retrieval' needs a knowledge source; add a retrieval: "
                        "section (source, k, chunk) or drop the rung")
    if spec.ladder.few_shot_k < 1:
        problems.append(f"ladder.few_shot_k: {spec.ladder.few_shot_k}; expected >= 1")
    check_lora(spec.ladder.lora, "ladder.lora.", problems)
    check_lora(spec.finetune, "finetune.", problems)
    for name in ("ttft_ms", "tpot_ms"):
        if not getattr(spec.slo, name) > 0:  # NaN fails too
            problems.append(f"slo.{name}: {getattr(spec.slo, name)}; expected > 0")
    if not spec.slo.throughput_tokens_per_s >= 0:  # 0: no throughput target (NaN fails too)
        problems.append(f"slo.throughput_tokens_per_s: {spec.slo.throughput_tokens_per_s}; expected >= 0 "
                        "(0: no target)")
    for name in ("prompt_tokens", "output_tokens", "batch"):
        if getattr(spec.workload, name) <= 0:
            problems.append(f"workload.{name}: {getattr(spec.workload, name)}; expected > 0")
    if not spec.workload.request_rate >= 0:  # NaN fails too
        problems.append(f"workload.request_rate: {spec.workload.request_rate}; expected >= 0 requests/s "
                        "(0: the SLO's throughput over the mean output length)")
    for i, row in enumerate(spec.workload.lengths or []):
        if len(row) != 3 or any(v < 1 for v in row):
            problems.append(f"workload.lengths[{i}]: {row}; expected [prompt_tokens, output_tokens, count], "
                            "each >= 1")
    if spec.workload.lengths == []:
        problems.append("workload.lengths: empty; give [prompt_tokens, output_tokens, count] rows or leave it out")
    for p in spec.precisions:
        if p not in SEARCH_ORDER:
            problems.append(f"precisions: {p!r}; expected some of {list(SEARCH_ORDER)}")
    if spec.plan is not None:
        if not spec.plan.model.strip():
            problems.append("plan.model: empty; give a config.json path (relative to the spec) or a hub id")
        try:
            get_precision(spec.plan.precision)
        except ConfigError as exc:
            problems.append(f"plan.precision: {exc}")


def _check_template(spec: TaskSpec, task_type, problems: list[str]) -> None:
    """The prompt template against the fields it may use: the task type's (the input field:
    serving has nothing else) and ``{context}`` when the task declares retrieval. A lone
    brace, an empty or unknown placeholder is a problem naming the template."""
    try:
        names = template_fields(spec.prompt)
    except ValueError as e:
        problems.append(f"prompt: {spec.prompt!r} is not a valid template ({e}); write a literal "
                        "brace as {{ or }}")
        return
    known = set(task_type.prompt_fields(spec)) if task_type is not None else {spec.input_field}
    if spec.retrieval is not None:
        known.add(CONTEXT)
    for name in dict.fromkeys(names):
        if name == "":
            problems.append(f"prompt: {spec.prompt!r} has an empty placeholder {{}}; name the field, "
                            f"one of {sorted(known)}")
        elif name == CONTEXT and spec.retrieval is None:
            problems.append(f"prompt: {spec.prompt!r} uses {{context}} but the task declares no "
                            "retrieval: section (the passages that would fill it)")
        elif name not in known:
            problems.append(f"prompt: {spec.prompt!r} uses the unknown placeholder {{{name}}}; "
                            f"the template may use {sorted(known)}")
    if spec.input_field not in names:
        problems.append(f"prompt: the template must contain {{{spec.input_field}}} (the input_field)")


def _check_retrieval(spec: TaskSpec, problems: list[str], check_source: bool) -> None:
    r = spec.retrieval
    if r.k < 1:
        problems.append(f"retrieval.k: {r.k}; expected >= 1 (passages per input)")
    if r.retriever not in RETRIEVERS:
        problems.append(f"retrieval.retriever: {r.retriever!r}; expected one of {list(RETRIEVERS)}")
    elif r.retriever == "embedding":
        if not isinstance(r.model, str) or not r.model.strip():
            problems.append("retrieval.model: the embedding retriever needs the embedding model "
                            "(a hub id, a local save_pretrained folder or demo:<name>)")
    elif r.model is not None:
        problems.append(f"retrieval.model: {r.model!r} is only for retriever: embedding")
    c = r.chunk
    if c.by not in CHUNK_RULES:
        problems.append(f"retrieval.chunk.by: {c.by!r} is not a chunk rule; expected one of "
                        f"{list(CHUNK_RULES)}")
    if c.size < 1:
        problems.append(f"retrieval.chunk.size: {c.size}; expected >= 1 (words per passage)")
    elif not 0 <= c.overlap < c.size:
        problems.append(f"retrieval.chunk.overlap: {c.overlap}; expected 0 <= overlap < size ({c.size})")
    if r.gold_field is not None and r.gold_field in (spec.input_field, spec.label_field):
        problems.append(f"retrieval.gold_field: {r.gold_field!r} is the input or label field; "
                        "name the field that holds the gold passage id")
    if not check_source:
        return
    path = spec.source_path()
    roots = allowed_roots(spec.base_dir)
    project = roots[0]
    if not within_roots(path, roots):
        problems.append(f"retrieval.source: {r.source!r} resolves to {path.resolve()}, outside the project "
                        f"{project} and the listed data roots; use a path inside it, or list its folder in "
                        f"${DATA_ROOTS_ENV}")
    elif not path.exists():
        problems.append(f"retrieval.source: {r.source!r} not found ({path}); expected a folder of "
                        ".txt/.md files or a .jsonl of passages")
    elif path.is_file() and path.suffix.lower() != ".jsonl":
        problems.append(f"retrieval.source: {r.source!r} is a {path.suffix or 'plain'} file; expected "
                        "a folder of .txt/.md files or a .jsonl of passages ({\"id\", \"text\"})")
    elif path.is_dir() and not any(p.suffix.lower() in (".txt", ".md") for p in path.rglob("*")
                                   if p.is_file()):
        problems.append(f"retrieval.source: the folder {r.source!r} has no .txt or .md file")


def check_lora(lora: Any, where: str, problems: list[str], need_budget: bool = True) -> None:
    """Value checks of one LoRA run's settings (a spec's ``ladder.lora`` or ``finetune``
    section, or the trainer's ``FinetuneConfig``, whose values come untyped from a handler):
    the one home of these rules. ``need_budget``: neither steps nor epochs is a problem (the
    trainer falls back to the default budget instead). The model's context is checked
    against each candidate's config when the ladder starts: configs are not read at load."""
    for name in ("rank", "alpha", "global_batch", "max_seq_len"):
        value = getattr(lora, name)
        if not (name == "max_seq_len" and value is None) and not is_positive_int(value):
            problems.append(f"{where}{name}: {value!r}; expected a positive integer")
    if lora.steps is not None and not is_positive_int(lora.steps):
        problems.append(f"{where}steps: {lora.steps!r}; expected a positive integer")
    if lora.epochs is not None and not (is_number(lora.epochs) and lora.epochs > 0):  # NaN fails too
        problems.append(f"{where}epochs: {lora.epochs!r}; expected > 0")
    if need_budget and lora.steps is None and lora.epochs is None:
        problems.append(f"{where}steps/epochs: no training budget; give steps or epochs")
    if not (is_number(lora.learning_rate) and lora.learning_rate > 0):
        problems.append(f"{where}learning_rate: {lora.learning_rate!r}; expected > 0")
    if not (is_number(lora.dropout) and 0.0 <= lora.dropout < 1.0):
        problems.append(f"{where}dropout: {lora.dropout!r}; expected 0 <= dropout < 1")
    if not (is_number(lora.warmup_ratio) and 0.0 <= lora.warmup_ratio < 1.0):
        problems.append(f"{where}warmup_ratio: {lora.warmup_ratio!r}; expected 0 <= warmup_ratio < 1")
    if lora.target_modules is not None and not lora.target_modules:
        problems.append(f"{where}target_modules: empty; leave it out for the architecture's default")
