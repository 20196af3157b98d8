"""The task spec's format: what a task YAML file holds, as types (``rightsizer.schema.check``
validates a file against them and gives their JSON Schema; ``rightsizer.taskspec`` loads and
checks values). Imports nothing but errors, so the task types, prompting and retrieval can
use these types without a cycle.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rightsizer.errors import ConfigError

# The rungs, cheapest first. "retrieval" only applies to a task that declares ``retrieval:``
# (a spec that leaves ``ladder.rungs`` out gets it then, and only then).
RUNGS = ("zero_shot", "few_shot", "retrieval", "lora")
CHEAP_RUNGS = ("zero_shot", "few_shot", "retrieval")  # no training: what a cascade's small model may use
DEFAULT_RUNGS = ("zero_shot", "few_shot", "lora")  # a task without a knowledge source
CONTEXT = "context"  # the prompt placeholder the retrieved passages go into
CHUNK_RULES = ("paragraph", "words", "passage")
RETRIEVERS = ("bm25", "embedding")
MAX_SEQ_LEN = 512  # a LoRA run's default sequence length (prompt + answer), if the model takes it
DECISION_RULES = ("point", "ci_lower")
BUDGET = ("steps", "epochs")  # a LoRA run's training budget: one of the two
EXTRACTION_FORMATS = ("key_value", "json")
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
    # requests/s arriving at random that the p95 figures are simulated at (0: the SLO's
    # throughput over the mean output length)
    request_rate: float = 0.0
    # the requests' lengths as [prompt_tokens, output_tokens, count] rows (None: measured on
    # the eval split with the chosen model's tokenizer and prompt format)
    lengths: list[list[int]] | None = None


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

    @classmethod
    def normalize(cls, data: dict, where: str, problems: list[str]) -> dict:
        """The budget given (``steps`` or ``epochs``) replaces the default one; both is a problem."""
        given = [k for k in BUDGET if data.get(k) is not None]
        if len(given) == 2:
            problems.append(f"{where}steps and {where}epochs: give one training budget, not both")
        elif given:
            data = {**{k: None for k in BUDGET}, **data}
        return data

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

    rungs: list[str] = field(default_factory=lambda: list(DEFAULT_RUNGS), metadata={"choices": RUNGS})
    few_shot_k: int = 4
    lora: LoraSettings = field(default_factory=LoraSettings)
    # when a smaller candidate fails at its cheap rungs and a bigger one passes, also judge the
    # pair as a confidence cascade (``rightsizer.cascade``): the small model answers when sure
    cascade: bool = False


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

    by: str = field(default="paragraph", metadata={"choices": CHUNK_RULES})
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
    retriever: str = field(default="bm25", metadata={"choices": RETRIEVERS})  # bm25 (bm25s), or embedding (mean-pooled hidden states of ``model``)
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
    format: str = field(default="key_value", metadata={"choices": EXTRACTION_FORMATS})

    @classmethod
    def normalize(cls, data: dict, where: str, problems: list[str]) -> dict | None:
        """``fields`` must be a non-empty mapping of field names (a rule may be empty: any
        value, required); each rule's pattern must compile and not come with values."""
        fields = data.get("fields")
        if not isinstance(fields, dict) or not fields:
            problems.append(f"{where}fields: expected a mapping of field name -> {{pattern: <regex>}} "
                            f"or {{values: [...]}}, got {type(fields).__name__} {fields!r}")
            return None
        rules = {}
        for name, rule in fields.items():
            at = f"{where}fields.{name}"
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                problems.append(f"{where}fields: {name!r} is not a field name (letters, digits, '_')")
                continue
            rule = {} if rule is None else rule
            if isinstance(rule, dict):
                if isinstance(rule.get("pattern"), str):
                    try:
                        re.compile(rule["pattern"])
                    except re.error as e:
                        problems.append(f"{at}.pattern: {rule['pattern']!r} is not a regular expression ({e})")
                if rule.get("pattern") is not None and rule.get("values") is not None:
                    problems.append(f"{at}: give a pattern or values, not both")
                if rule.get("values") == []:
                    problems.append(f"{at}.values: empty; list the values the field may take")
            rules[name] = rule
        return {**data, "fields": rules}


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
    # re-evaluation: a served cascade's deferral rate on fresh data may move this far (absolute)
    deferral_tolerance: float = 0.10
    # monitoring without labels: a model that judges served answers (``rightsizer.judge``)
    judge: str | None = None
    decision_rule: str = field(default="ci_lower", metadata={"choices": DECISION_RULES})  # the CI's lower end must clear the bar ("point": the score)
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
    truncate: str = field(default="none", metadata={"choices": TRUNCATE_RULES})  # serving: an input too long for the context is refused ("none") or cut from its start ("left")
    # how prompts are rendered (``rightsizer.prompting``): auto = the tokenizer's chat template
    # when it has one, raw text otherwise
    prompt_format: str = "auto"
    system: str | None = None  # a system text: a system turn in chat format, the first block in raw
    stop: list[str] | None = None  # where a generated answer is cut (None: the format's default)
    retrieval: Retrieval | None = None  # a knowledge source: the retrieval rung
    extraction: ExtractionFields | None = None  # extraction: the answer's fields and format
    plan: PlannedModel | None = None  # the planned model of a hub-scale example (plan --app)
    base_dir: str = field(default="", metadata={"runtime": True})  # directory the relative dataset paths are resolved against
    # The loaded retrieval index (``rightsizer.retrieval.Index``) when this spec is the one of
    # a rung that retrieves (``retrieval.for_rung``) or of a loaded bundle: ``build_prompt``
    # then puts the top-k passages into the prompt. Runtime only, never saved.
    index: Any = field(default=None, compare=False, repr=False, metadata={"runtime": True})
    # The prompt format bound to the model's tokenizer (``prompting.resolve``); None: not yet
    # bound, prompts render as raw text. Runtime only, never saved.
    rendering: Any = field(default=None, compare=False, repr=False, metadata={"runtime": True})

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


def template_fields(template: str) -> list[str]:
    """The placeholders of a prompt template, in order (``ValueError`` on a lone brace)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


