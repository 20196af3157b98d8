"""Task and application specs: YAML files that say what "good enough" means per task.

A spec is validated as a whole when it is loaded: every problem is collected and raised in
one ``ConfigError``. ``save_task``/``load_task`` are exact mirrors (tested by round trip).
"""

from __future__ import annotations

import copy
import os
import dataclasses
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rightsizer import tasktypes
from rightsizer.errors import ConfigError
from rightsizer.metrics import METRIC_RANGE
from rightsizer.precisions import SEARCH_ORDER, get_precision
from rightsizer.prompting import PROMPT_FORMATS
from rightsizer.tasktypes import TASK_TYPES
from rightsizer.yamlio import MAX_YAML_BYTES, read_yaml

# The rungs, cheapest first. "retrieval" only applies to a task that declares ``retrieval:``
# (a spec that leaves ``ladder.rungs`` out gets it then, and only then).
RUNGS = ("zero_shot", "few_shot", "retrieval", "lora")
DEFAULT_RUNGS = ("zero_shot", "few_shot", "lora")  # a task without a knowledge source
CONTEXT = "context"  # the prompt placeholder the retrieved passages go into
CHUNK_RULES = ("paragraph", "words", "passage")
RETRIEVERS = ("bm25", "embedding")
MAX_SEQ_LEN = 512  # a LoRA run's default sequence length (prompt + answer), if the model takes it
DECISION_RULES = ("point", "ci_lower")
TRUNCATE_RULES = ("none", "left")  # serving: refuse an over-long input, or keep its end
# A task name names folders (the run layout), artifacts and the served model: one safe path part.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass
class SLO:
    """Latency and throughput targets the deployment must meet (p95)."""

    ttft_ms: float  # p95 time to first token
    tpot_ms: float  # p95 time per output token
    throughput_tokens_per_s: float = 0.0  # sustained output tokens/s the task needs


@dataclass
class Workload:
    """Typical request shape, used by the GPU sizing step."""

    prompt_tokens: int = 128
    output_tokens: int = 16
    batch: int = 1


@dataclass
class LoraSettings:
    """One LoRA run: the ladder's screening run (``ladder.lora``) or the production adapter
    (``finetune``). The one home of the LoRA defaults, set for hub models as common LoRA
    recipes do (rank 16, alpha 32, learning rate 2e-4); the trainer
    (``rightsizer.finetune.train.FinetuneConfig``) and the MLRun handler take them from here.

    The budget is ``steps`` or ``epochs`` over the train split: giving one in a spec clears
    the other's default, giving both is an error.
    """

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.03
    global_batch: int = 16
    max_seq_len: int | None = None  # prompt + answer tokens; None: 512 or a shorter context
    steps: int | None = 200  # a short screening run
    epochs: float | None = None
    target_modules: list[str] | None = None  # None: chosen per architecture
    seed: int = 0

    def seq_len(self, context: int | None) -> int:
        """The sequence length a run uses: ``max_seq_len``, or the default capped by the
        model's ``context``."""
        if self.max_seq_len is not None:
            return self.max_seq_len
        return min(MAX_SEQ_LEN, context) if context else MAX_SEQ_LEN


@dataclass
class FinetuneSettings(LoraSettings):
    """The ``finetune`` section: the production adapter trained by the pipeline's finetune
    step when a task's chosen rung is LoRA (the ladder's run only screened it).

    ``enabled: false`` serves the screening adapter instead (no finetune step).
    """

    steps: int | None = None
    epochs: float | None = 3.0  # the full budget: three passes over the train split
    enabled: bool = True


@dataclass
class Ladder:
    """Which rungs to try, in order of cost, before moving to the next size up."""

    rungs: list[str] = field(default_factory=lambda: list(DEFAULT_RUNGS))
    few_shot_k: int = 4
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class Screening:
    """Evaluate on a small subset first; go on only while the candidate can still pass.

    The eval split is scored in stages of ``min_examples``, then ``growth`` times more
    each stage, up to the full split. After each stage the full-split score is bounded
    from above (one-sided bootstrap bound at level ``alpha`` split over the stages); a
    rung whose bound is below the threshold is stopped there. A pass is only ever
    decided on the full split.
    """

    enabled: bool = True
    min_examples: int = 20
    growth: float = 2.0
    alpha: float = 0.05


@dataclass
class ChunkRule:
    """How a knowledge source is cut into passages (``rightsizer.retrieval.chunk_documents``).

    ``by``: ``paragraph`` (blank-line separated; a heading line alone joins the paragraph
    after it; a paragraph over ``size`` words is cut into windows of ``size`` words that
    share ``overlap`` words), ``words`` (each document as windows of ``size`` words sharing
    ``overlap``) or ``passage`` (each file, or each JSONL row, is one passage as it is).
    """

    by: str = "paragraph"
    size: int = 200  # words per passage at most (paragraph, words)
    overlap: int = 0  # words two consecutive windows share (paragraph, words)


@dataclass
class Retrieval:
    """The task's knowledge source and how the retrieval rung uses it (``retrieval:``).

    The top ``k`` passages for each input (the ``input_field`` is the query) go into the
    prompt: at the template's ``{context}`` placeholder, or, when it has none, before the
    prompt as ``"Context:\n<one passage per line>\n\n"``.
    """

    source: str  # a folder of .txt/.md files, or a .jsonl of passages ({"id", "text"})
    k: int = 3
    retriever: str = "bm25"  # bm25 (bm25s), or embedding (mean-pooled hidden states of ``model``)
    model: str | None = None  # the embedding model (retriever: embedding): hub id, folder, demo:<name>
    chunk: ChunkRule = field(default_factory=ChunkRule)
    gold_field: str | None = None  # eval row field naming its gold passage id(s): recall@k
    lora: bool = True  # the LoRA rung trains and is scored with the retrieved context too


@dataclass
class FieldRule:
    """One field of an extraction answer: a regular expression its value must match in full
    (``pattern``), or the values it may take (``values``, compared case-insensitively)."""

    pattern: str | None = None
    values: list[str] | None = None
    required: bool = True  # an answer without it is malformed


@dataclass
class ExtractionFields:
    """``extraction:`` the fields an extraction answer holds and how they are written
    (``rightsizer.tasktypes.extraction.parse_answer``). ``format``: ``key_value``
    (``name: value; name: value``, in any order) or ``json`` (one object of strings)."""

    fields: dict[str, FieldRule]
    format: str = "key_value"


@dataclass
class PlannedModel:
    """Optional ``plan`` section: the model a task is planned with *without* running the ladder
    (``python -m rightsizer plan --app``): a published ``config.json`` is enough, no weights.
    Its quality is not measured; the ladder's decision records replace it once they exist."""

    model: str  # a config.json path (relative to the spec's folder) or a hub id
    precision: str = "bf16"  # any precision the sizing engine knows (bf16, int8, int4, fp8, int4-gN, ...)
    name: str = ""  # how the plan names the model (default: the config's _name_or_path)


@dataclass
class TaskSpec:
    """One small task of the application and the bar its model must clear."""

    name: str
    type: str
    dataset: dict[str, str]  # split name -> path (jsonl/csv/parquet) or hub dataset id
    input_field: str
    label_field: str
    prompt: str  # template with {<input_field>}
    metric: str
    threshold: float
    slo: SLO
    candidates: list[str]
    labels: list[str] = field(default_factory=list)
    quality_tolerance: float = 0.02  # allowed quality drop when quantizing
    decision_rule: str = "ci_lower"  # the CI's lower end must clear the bar ("point": the score)
    train_split: str = "train"
    eval_split: str = "eval"
    workload: Workload = field(default_factory=Workload)
    ladder: Ladder = field(default_factory=Ladder)
    precisions: list[str] = field(default_factory=lambda: ["int8"])
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    max_eval_examples: int | None = None
    max_new_tokens: int = 16  # greedy generation length (extraction and generation tasks)
    screening: Screening = field(default_factory=Screening)
    trust_remote_code: bool = False
    hub_datasets: bool = False  # a dataset ref shaped like a hub id is loaded from the hub only then
    truncate: str = "none"  # serving: an input too long for the context is refused ("none") or cut from its start ("left")
    # how prompts are rendered (``rightsizer.prompting``): auto = the tokenizer's chat template
    # when it has one, raw text otherwise
    prompt_format: str = "auto"
    system: str | None = None  # a system text: a system turn in chat format, the first block in raw
    stop: list[str] | None = None  # where a generated answer is cut (None: the format's default)
    retrieval: Retrieval | None = None  # a knowledge source: the retrieval rung
    extraction: ExtractionFields | None = None  # extraction: the answer's fields and format
    plan: PlannedModel | None = None  # the planned model of a hub-scale example (plan --app)
    base_dir: str = ""  # directory the relative dataset paths are resolved against
    # The loaded retrieval index (``rightsizer.retrieval.Index``) when this spec is the one of
    # a rung that retrieves (``retrieval.for_rung``) or of a loaded bundle: ``build_prompt``
    # then puts the top-k passages into the prompt. Runtime only, never saved.
    index: Any = field(default=None, compare=False, repr=False)
    # The prompt format bound to the model's tokenizer (``prompting.resolve``); None: not yet
    # bound, prompts render as raw text. Runtime only, never saved.
    rendering: Any = field(default=None, compare=False, repr=False)

    def dataset_path(self, split: str) -> str:
        """Path or id of a split, relative paths resolved against the spec's directory."""
        ref = self.dataset[split]
        p = Path(ref)
        if not p.is_absolute() and self.base_dir and (Path(self.base_dir) / p).exists():
            return str(Path(self.base_dir) / p)
        return ref

    def source_path(self) -> Path:
        """The knowledge source, a relative path resolved against the spec's directory."""
        if self.retrieval is None:
            raise ConfigError("retrieval: this task declares no knowledge source", self.name)
        p = Path(self.retrieval.source)
        return p if p.is_absolute() or not self.base_dir else Path(self.base_dir) / p

    def format_prompt(self, row: dict, context: str = "") -> str:
        """The template filled from ``row``; ``context`` goes into a ``{context}`` placeholder."""
        if self.retrieval is not None and CONTEXT in template_fields(self.prompt):
            row = {**row, CONTEXT: context}
        return self.prompt.format(**row)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(dataclasses.replace(self, index=None, rendering=None))
        d.pop("base_dir")
        d.pop("index")
        d.pop("rendering")
        if d.get("plan") is None:
            d.pop("plan", None)
        return d


_REQUIRED = ("name", "type", "dataset", "input_field", "label_field", "prompt", "metric",
             "threshold", "slo", "candidates")
_NESTED = {"slo": SLO, "workload": Workload, "ladder": Ladder, "screening": Screening,
           "finetune": FinetuneSettings, "retrieval": Retrieval, "extraction": ExtractionFields,
           "plan": PlannedModel}
_RUNTIME = ("base_dir", "index", "rendering")  # TaskSpec fields a spec file cannot set
_OPTIONAL_NESTED = ("plan", "extraction")  # sections that may be null
EXTRACTION_FORMATS = ("key_value", "json")
_BUDGET = ("steps", "epochs")


def _check_fields(cls, data: dict, where: str, problems: list[str]) -> dict:
    """Type-check ``data`` against dataclass ``cls``; unknown keys are problems too."""
    hints = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        if key not in hints:
            problems.append(f"{where}{key}: unknown field; expected one of {sorted(hints)}")
            continue
        out[key] = value
    for f in dataclasses.fields(cls):
        if f.name not in out:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{where}{f.name}: missing required field")
            continue
        value, ftype = out[f.name], str(f.type)
        ok = True
        if ftype in ("Any", "ChunkRule", "Retrieval | None", "ExtractionFields | None",
                     "dict[str, FieldRule]"):  # checked by their own sections
            continue
        if ftype in ("float",):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                out[f.name] = float(value)
        elif ftype == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif ftype == "int | None":
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        elif ftype == "float | None":
            ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
            if ok and value is not None:
                out[f.name] = float(value)
        elif ftype == "str":
            ok = isinstance(value, str)
        elif ftype == "str | None":
            ok = value is None or isinstance(value, str)
        elif ftype == "bool":
            ok = isinstance(value, bool)
        elif ftype.startswith("list[str]"):
            ok = (value is None and "None" in ftype) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))
        elif ftype.startswith("dict[str, str]"):
            ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        if not ok:
            problems.append(f"{where}{f.name}: expected {ftype}, got {type(value).__name__} {value!r}")
    return out


def _lora_fields(cls, data: dict, where: str, problems: list[str]) -> dict:
    """A LoRA section's fields: the budget given (steps or epochs) replaces the default one."""
    given = [k for k in _BUDGET if data.get(k) is not None]
    if len(given) == 2:
        problems.append(f"{where}steps and {where}epochs: give one training budget, not both")
    elif given:
        data = {**{k: None for k in _BUDGET}, **data}
    return _check_fields(cls, data, where, problems)


def _extraction_fields(sub: dict, problems: list[str]) -> dict:
    """The ``extraction:`` section: its fields, each a FieldRule with a compilable pattern."""
    fields = sub.pop("fields", None)
    out = _check_fields(ExtractionFields, {**sub, "fields": None}, "extraction.", problems)
    if not isinstance(fields, dict) or not fields:
        problems.append("extraction.fields: expected a mapping of field name -> {pattern: <regex>} "
                        f"or {{values: [...]}}, got {type(fields).__name__} {fields!r}")
        return out
    rules = {}
    for name, rule in fields.items():
        where = f"extraction.fields.{name}."
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.append(f"extraction.fields: {name!r} is not a field name (letters, digits, '_')")
            continue
        if rule is None:
            rule = {}
        if not isinstance(rule, dict):
            problems.append(f"{where[:-1]}: expected a mapping (pattern, values, required), "
                            f"got {type(rule).__name__} {rule!r}")
            continue
        ok = _check_fields(FieldRule, rule, where, problems)
        if isinstance(ok.get("pattern"), str):
            try:
                re.compile(ok["pattern"])
            except re.error as e:
                problems.append(f"{where}pattern: {ok['pattern']!r} is not a regular expression ({e})")
        if ok.get("pattern") is not None and ok.get("values") is not None:
            problems.append(f"{where[:-1]}: give a pattern or values, not both")
        if ok.get("values") == []:
            problems.append(f"{where}values: empty; list the values the field may take")
        rules[name] = ok
    if not problems:
        out["fields"] = {n: FieldRule(**r) for n, r in rules.items()}
    if out.get("format", "key_value") not in EXTRACTION_FORMATS:
        problems.append(f"extraction.format: {out['format']!r}; expected one of {list(EXTRACTION_FORMATS)}")
    return out


def task_from_dict(data: dict, source: str | None = None, base_dir: str = "",
                   check_source: bool = True) -> TaskSpec:
    """Build and validate a TaskSpec; raise ConfigError listing every problem.

    ``check_source``: whether the knowledge source (``retrieval.source``) must exist; a
    serving bundle's spec carries the built index instead (``rightsizer.bundle``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", source)
    problems: list[str] = []
    data = copy.deepcopy(data)
    for key in _RUNTIME:
        if key in data:
            data.pop(key)
            problems.append(f"{key}: unknown field (set by the loader, not by a spec file)")
    for key in ("retrieval", "extraction"):
        if key in data and data[key] is None:
            data.pop(key)  # written as null by save_task for a task without one
    rungs_given = isinstance(data.get("ladder"), dict) and "rungs" in data["ladder"]
    nested = {}
    for key, cls in _NESTED.items():
        if key in data:
            sub = data.pop(key)
            if sub is None and key in _OPTIONAL_NESTED:
                continue
            if not isinstance(sub, dict):
                problems.append(f"{key}: expected a mapping, got {type(sub).__name__}")
                continue
            if cls is Ladder and "lora" in sub and not isinstance(sub["lora"], dict):
                problems.append(f"ladder.lora: expected a mapping (rank, alpha, learning_rate, steps, ...), "
                                f"got {type(sub['lora']).__name__} {sub.pop('lora')!r}")
            if cls is Ladder and isinstance(sub.get("lora"), dict):
                lora = _lora_fields(LoraSettings, sub.pop("lora"), "ladder.lora.", problems)
                sub_ok = _check_fields(Ladder, sub, "ladder.", problems)
                sub_ok["lora"] = LoraSettings(**lora) if not problems else None
                nested[key] = sub_ok
            elif cls is FinetuneSettings:
                nested[key] = _lora_fields(cls, sub, f"{key}.", problems)
            elif cls is Retrieval:
                chunk = sub.pop("chunk", {})
                if not isinstance(chunk, dict):
                    problems.append(f"retrieval.chunk: expected a mapping (by, size, overlap), "
                                    f"got {type(chunk).__name__} {chunk!r}")
                    chunk = {}
                chunk_ok = _check_fields(ChunkRule, chunk, "retrieval.chunk.", problems)
                sub_ok = _check_fields(Retrieval, sub, "retrieval.", problems)
                sub_ok["chunk"] = ChunkRule(**chunk_ok) if not problems else None
                nested[key] = sub_ok
            elif cls is ExtractionFields:
                nested[key] = _extraction_fields(sub, problems)
            else:
                nested[key] = _check_fields(cls, sub, f"{key}.", problems)
    top = _check_fields(TaskSpec, {**data, **{k: None for k in nested}}, "", problems)
    if problems:
        raise ConfigError(problems, source)
    for key, cls in _NESTED.items():
        if key in nested:
            top[key] = cls(**nested[key])
    spec = TaskSpec(**top, base_dir=base_dir)
    if spec.retrieval is not None and not rungs_given:
        spec.ladder.rungs = list(RUNGS)  # the default ladder of a task with a knowledge source
    _check_values(spec, problems)
    if spec.retrieval is not None:
        _check_retrieval(spec, problems, check_source)
    if problems:
        raise ConfigError(problems, source)
    return spec


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
    if not 0.0 <= spec.quality_tolerance <= 1.0:
        problems.append(f"quality_tolerance: {spec.quality_tolerance} is outside [0, 1]")
    if spec.decision_rule not in DECISION_RULES:
        problems.append(f"decision_rule: {spec.decision_rule!r}; expected one of {list(DECISION_RULES)}")
    for split in (spec.train_split, spec.eval_split):
        if split not in spec.dataset:
            problems.append(f"dataset: no {split!r} split; the spec names splits {sorted(spec.dataset)}")
    _check_template(spec, task_type, problems)
    if task_type is not None:
        task_type.check_spec(spec, problems)
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
    _check_lora(spec.ladder.lora, "ladder.lora.", problems)
    _check_lora(spec.finetune, "finetune.", problems)
    for name in ("ttft_ms", "tpot_ms"):
        if not getattr(spec.slo, name) > 0:  # NaN fails too
            problems.append(f"slo.{name}: {getattr(spec.slo, name)}; expected > 0")
    if not spec.slo.throughput_tokens_per_s >= 0:  # 0: no throughput target (NaN fails too)
        problems.append(f"slo.throughput_tokens_per_s: {spec.slo.throughput_tokens_per_s}; expected >= 0 "
                        "(0: no target)")
    for name in ("prompt_tokens", "output_tokens", "batch"):
        if getattr(spec.workload, name) <= 0:
            problems.append(f"workload.{name}: {getattr(spec.workload, name)}; expected > 0")
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


def template_fields(template: str) -> list[str]:
    """The placeholders of a prompt template, in order (``ValueError`` on a lone brace)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


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
    project = project_root(Path(spec.base_dir or ".").resolve())
    if not within_roots(path, [project, *data_roots()]):
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


def _check_lora(lora: LoraSettings, where: str, problems: list[str]) -> None:
    """Value checks of a LoRA section (the model's context is checked against each
    candidate's config when the ladder starts: configs are not read at load time)."""
    for name in ("rank", "alpha", "global_batch", "max_seq_len"):
        value = getattr(lora, name)
        if value is not None and value <= 0:
            problems.append(f"{where}{name}: {value}; expected a positive integer")
    if lora.steps is not None and lora.steps <= 0:
        problems.append(f"{where}steps: {lora.steps}; expected a positive integer")
    if lora.epochs is not None and not lora.epochs > 0:  # NaN fails too
        problems.append(f"{where}epochs: {lora.epochs}; expected > 0")
    if lora.steps is None and lora.epochs is None:
        problems.append(f"{where}steps/epochs: no training budget; give steps or epochs")
    if not lora.learning_rate > 0:
        problems.append(f"{where}learning_rate: {lora.learning_rate}; expected > 0")
    if not 0.0 <= lora.dropout < 1.0:
        problems.append(f"{where}dropout: {lora.dropout}; expected 0 <= dropout < 1")
    if not 0.0 <= lora.warmup_ratio < 1.0:
        problems.append(f"{where}warmup_ratio: {lora.warmup_ratio}; expected 0 <= warmup_ratio < 1")
    if lora.target_modules is not None and not lora.target_modules:
        problems.append(f"{where}target_modules: empty; leave it out for the architecture's default")


MAX_SPEC_BYTES = MAX_YAML_BYTES  # a spec is a few KB; anything near this is not a spec


DATA_ROOTS_ENV = "RIGHTSIZER_DATA_ROOTS"


def data_roots() -> list[Path]:
    """The folders besides the project that data paths (dataset splits, knowledge sources)
    may point into: the user lists them in ``$RIGHTSIZER_DATA_ROOTS`` (separated by
    ``os.pathsep``), resolved."""
    raw = os.environ.get(DATA_ROOTS_ENV, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def project_root(folder: Path) -> Path:
    """The project a spec belongs to: the nearest folder at or above it with a project.yaml
    (the MLRun project), else the spec's own folder."""
    for d in (folder, *folder.parents):
        if (d / "project.yaml").is_file():
            return d
    return folder


def within_roots(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (resolved) is one of ``roots`` or inside one of them."""
    where = path.resolve()
    return any(where == r or r in where.parents for r in roots)


def read_spec_yaml(path: str | Path, what: str = "spec") -> dict:
    """A spec file's YAML mapping; a ConfigError naming the file for a missing, oversized,
    non-UTF-8 or invalid file, YAML aliases (``rightsizer.yamlio``; no spec needs them),
    or a top level that is not a mapping."""
    path = Path(path)
    data = read_yaml(path, what, max_bytes=MAX_SPEC_BYTES, max_aliases=0)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level is a {type(data).__name__}; expected a mapping of fields", str(path))
    return data


def load_task(path: str | Path) -> TaskSpec:
    """Load and validate a task spec YAML file."""
    path = Path(path)
    data = read_spec_yaml(path, "task spec")
    return task_from_dict(data, source=str(path), base_dir=str(path.parent.resolve()))


def save_task(spec: TaskSpec, path: str | Path) -> None:
    """Write a spec so that ``load_task`` gives it back unchanged."""
    Path(path).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=True))


@dataclass
class AppSpec:
    """A gen-AI application: its name and the task specs it is split into."""

    name: str
    tasks: list[TaskSpec]


APP_FIELDS = ("name", "tasks", "baseline")  # baseline: the one-big-model of ``plan --app``


def load_app(path: str | Path) -> AppSpec:
    """Load an application spec (``name`` and ``tasks``: spec paths relative to it)."""
    path = Path(path)
    data = read_spec_yaml(path, "application spec")
    problems = [f"{key}: unknown field; expected some of {list(APP_FIELDS)}" for key in data
                if key not in APP_FIELDS]
    if not isinstance(data.get("name"), str):
        problems.append("name: missing or not a string")
    if not isinstance(data.get("tasks"), list) or not data.get("tasks"):
        problems.append("tasks: expected a non-empty list of task spec paths")
    else:
        problems += [f"tasks[{i}]: {ref!r}; expected a task spec path (relative to the app spec)"
                     for i, ref in enumerate(data["tasks"]) if not isinstance(ref, str) or not ref.strip()]
    if problems:
        raise ConfigError(problems, str(path))
    tasks, errors = [], []
    for ref in data["tasks"]:
        try:
            tasks.append(load_task(path.parent / ref))
        except ConfigError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError(errors, str(path))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"tasks: duplicate task names {names}", str(path))
    return AppSpec(name=data["name"], tasks=tasks)


def app_task_paths(app_path: str | Path, root: str | Path = ".") -> list[tuple[str, str]]:
    """``(task name, spec path)`` for each task of an app spec, validating every spec."""
    path = Path(app_path)
    if not path.is_absolute():
        path = Path(root) / path
    app = load_app(path)
    refs = read_spec_yaml(path, "application spec")["tasks"]
    root = Path(root).resolve()
    # Relative to the project root, so the same paths work in a cluster pod's source dir.
    return [(t.name, os.path.relpath((path.parent / ref).resolve(), root))
            for t, ref in zip(app.tasks, refs)]
