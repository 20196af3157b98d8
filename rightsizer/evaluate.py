"""The evaluation harness: task quality and latency on this machine.

Predictions come from the inference core (``rightsizer.inference``), the same code serving
runs; what differs by task type (row checks, few-shot draw, metrics, calibration) comes
from the task type (``rightsizer.tasktypes``). Classification is scored by option
log-likelihood, extraction and short generation on greedy generations cut by the type's
stop rule, with the metrics of ``rightsizer.metrics``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rightsizer import metrics, tasktypes
from rightsizer.errors import ConfigError
from rightsizer.inference import Predictions, build_prompt, load_bundle, load_model, predict, with_format
from rightsizer.runtime.target import DTYPES, RuntimeTarget, resolve_target, with_dtype
from rightsizer.prompting import format_name
from rightsizer.refs import is_hub_id
from rightsizer.taskspec import DATA_ROOTS_ENV, TaskSpec, allowed_roots, within_roots


MAX_ROW_BYTES = 1 << 20  # one example is text for a prompt: a row near this is not one
DATA_FILES = ("jsonl", "json", "csv", "parquet")


def _check_dataset_ref(spec: TaskSpec, split: str) -> str:
    """The split's path or hub id, refused early (before any copy or hub retry) when it is a
    data file that does not exist, a relative path that leaves the project, neither a local
    path nor something shaped like a hub dataset id, or a hub id in a spec that does not
    allow the hub (``hub_datasets``, off by default: a typo in a file name is not tried on
    the hub)."""
    raw = spec.dataset[split]
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"dataset.{split}: {raw!r}; expected a file path or a hub dataset id", spec.name)
    ref = spec.dataset_path(split)
    local = Path(ref) if Path(ref).is_absolute() else Path(spec.base_dir or ".") / ref
    roots = allowed_roots(spec.base_dir)  # the project first, then the listed data roots
    base = roots[0]
    if not Path(raw).is_absolute() and spec.base_dir:
        if base not in local.resolve().parents:
            raise ConfigError(f"dataset.{split}: {raw!r} resolves to {local.resolve()}, outside the project "
                              f"{base}; use a path inside it, or an absolute path under a listed data "
                              f"root (${DATA_ROOTS_ENV})", spec.name)
    if Path(raw).is_absolute():
        if not within_roots(local, roots):
            raise ConfigError(f"dataset.{split}: {raw!r} is outside the project {base} and the listed data roots "
                              f"({', '.join(map(str, roots[1:])) or 'none'}); add its folder to ${DATA_ROOTS_ENV} "
                              f"({os.pathsep}-separated) to read data from there", spec.name)
    if local.exists():
        return str(local)
    if raw.rsplit(".", 1)[-1].lower() in DATA_FILES or raw.startswith((".", "/")):
        raise ConfigError(f"dataset.{split}: file not found: {local} (from {raw!r}, relative to the spec's "
                          f"folder)", spec.name)
    if not is_hub_id(raw, datasets=True):
        raise ConfigError(f"dataset.{split}: {raw!r} is not a local file or folder (looked for {local}) and "
                          "not a hub dataset id ('name' or 'owner/name')", spec.name)
    if not spec.hub_datasets:
        raise ConfigError(f"dataset.{split}: {raw!r} is not a local file or folder (looked for {local}); "
                          "as a hub dataset id it is loaded only with hub_datasets: true in the spec",
                          spec.name)
    return raw




MAX_LINE_PROBLEMS = 5  # a file that is not JSONL at all: the first few bad lines say enough


def _check_jsonl(spec: TaskSpec, split: str, path: str) -> None:
    """Each JSONL line checked before ``datasets`` reads the file: a row over ``MAX_ROW_BYTES``
    (refused as soon as it is met, before it is read whole), then every line that is not
    UTF-8, not valid JSON or not a JSON object, named by its number."""
    if not Path(path).is_file():
        return
    problems: list[str] = []
    with open(path, "rb") as f:
        for number, line in enumerate(iter(lambda: f.readline(MAX_ROW_BYTES + 1), b""), 1):
            where = f"dataset.{split}: {path} line {number}"
            if len(line) > MAX_ROW_BYTES:
                raise ConfigError(f"{where} is over {MAX_ROW_BYTES} bytes; "
                                  "one example is expected per line, each a prompt's input", spec.name)
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                problems.append(f"{where}: not UTF-8 text (byte {e.start}: {e.reason})")
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not valid JSON ({e})")
            else:
                if not isinstance(row, dict):
                    problems.append(f"{where}: a JSON {type(row).__name__}; expected a JSON object (one row)")
            if len(problems) >= MAX_LINE_PROBLEMS:
                break
    if problems:
        raise ConfigError(problems, spec.name)


def _read_error(exc: BaseException) -> str:
    """The innermost cause of a ``datasets`` read failure (the Arrow or decode error says what is wrong)."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:500]


@contextlib.contextmanager
def _quiet_datasets():
    """No "Generating split" bar for a local file (read in well under a second, once per
    step): a workflow run would print dozens of them."""
    from datasets.utils import logging as ds_logging

    was_on = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            ds_logging.enable_progress_bar()


def load_rows(spec: TaskSpec, split: str, limit: int | None = None) -> list[dict]:
    """Load a split of the task's dataset as rows, through Hugging Face ``datasets``."""
    import datasets

    if split not in spec.dataset:
        raise ConfigError(f"dataset: no {split!r} split; the spec names {sorted(spec.dataset)}",
                          spec.name)
    ref = _check_dataset_ref(spec, split)
    ext = ref.rsplit(".", 1)[-1].lower()
    builder = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}.get(ext)
    if builder == "json" and ext == "jsonl":
        _check_jsonl(spec, split, ref)
    if builder and Path(ref).is_file() and not open(ref, "rb").read(4096).strip():
        raise ConfigError(f"dataset.{split}: {ref} is empty; expected at least one row", spec.name)
    try:
        if builder:
            # A local file is read through a cache of its own, removed afterwards: a bad file
            # leaves no entry in the datasets cache, and a good one no stale copy of itself.
            with tempfile.TemporaryDirectory(prefix="rightsizer-data-") as cache, _quiet_datasets():
                rows = datasets.load_dataset(builder, data_files={split: ref}, split=split,
                                             cache_dir=cache).to_list()
        else:
            ds = (datasets.load_from_disk(ref) if Path(ref).is_dir()
                  else datasets.load_dataset(ref, split=split))
            rows = ds.to_list()
    except FileNotFoundError:
        raise ConfigError(f"dataset.{split}: file not found: {ref}", spec.name) from None
    except Exception as e:  # noqa: BLE001 - Arrow, decode and datasets errors alike: the file is bad
        if not builder:
            raise
        raise ConfigError(f"dataset.{split}: {ref} cannot be read as {ext.upper()} ({_read_error(e)})",
                          spec.name) from None
    if not rows:
        raise ConfigError(f"dataset.{split}: {ref} is empty; expected at least one row", spec.name)
    missing = {f for f in (spec.input_field, spec.label_field) if f not in rows[0]}
    if missing:
        raise ConfigError(f"dataset.{split}: the rows of {ref} have no field(s) {sorted(missing)}; "
                          f"they have {sorted(rows[0])}", spec.name)
    problems = tasktypes.get(spec.type).check_rows(spec, rows, split)
    if problems:
        raise ConfigError([f"{p} (in {ref})" for p in problems], spec.name)
    return rows[:limit] if limit else rows


def check_task_data(spec: TaskSpec) -> tuple[list[dict], list[dict]]:
    """Load the train and eval splits, checking them against the spec; every problem at once.

    Returns ``(train_rows, eval_rows)`` (eval capped at ``max_eval_examples``). Problems: a
    missing or empty split, rows without the input/label field, labels outside the spec's
    options, and ``ladder.few_shot_k`` larger than the train split.
    """
    problems: list[str] = []
    splits: dict[str, list[dict]] = {}
    for split in dict.fromkeys((spec.train_split, spec.eval_split)):
        try:
            splits[split] = load_rows(spec, split)
        except ConfigError as e:
            problems.extend(e.problems)
    train = splits.get(spec.train_split)
    if train is not None and "few_shot" in spec.ladder.rungs and spec.ladder.few_shot_k > len(train):
        problems.append(f"ladder.few_shot_k: {spec.ladder.few_shot_k} is larger than the train "
                        f"split ({len(train)} rows)")
    gold = spec.retrieval.gold_field if spec.retrieval is not None else None
    evals = splits.get(spec.eval_split)
    if gold is not None and evals is not None and gold not in evals[0]:
        problems.append(f"retrieval.gold_field: the {spec.eval_split} rows have no {gold!r} field; "
                        f"they have {sorted(evals[0])}")
    if problems:
        raise ConfigError(problems, spec.name)
    return train, evals[:spec.max_eval_examples] if spec.max_eval_examples else evals


def pick_shots(spec: TaskSpec, train_rows: list[dict], k: int, seed: int = 0) -> list[dict]:
    """k training examples (spread over the labels for classification), the same for the same seed."""
    if k > len(train_rows):
        raise ConfigError(f"ladder.few_shot_k: {k} is larger than the train split "
                          f"({len(train_rows)} rows)", spec.name)
    return tasktypes.get(spec.type).pick_shots(spec, train_rows, k, random.Random(seed))


@dataclass
class QualityResult:
    """Task quality of one model on one set of rows.

    ``metrics`` holds every metric of the task type (the spec's ``metric`` is ``score``);
    for classification ``calibration`` holds the expected calibration error and Brier score
    of the option probabilities, raw and after temperature scaling (``temperature``).
    """

    metric: str
    score: float
    ci_low: float
    ci_high: float
    n: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None  # classification only
    macro_f1: float | None = None  # classification only
    mean_confidence: float | None = None  # classification only (calibrated probabilities)
    calibration: dict[str, float] = field(default_factory=dict)
    extraction: dict[str, Any] = field(default_factory=dict)  # extraction with fields: malformed share, per field
    predictions: list[str] = field(default_factory=list, repr=False)

    def value_for(self, rule: str) -> float:
        """The number the decision rule compares with the threshold."""
        return self.ci_low if rule == "ci_lower" else self.score

    def to_dict(self, with_predictions: bool = False) -> dict:
        d = asdict(self)
        if not with_predictions:
            d.pop("predictions")
        return d


def score_predictions(spec: TaskSpec, rows: list[dict], pred: Predictions) -> QualityResult:
    """The task's metrics, bootstrap CI and (classification) calibration for some answers."""
    if not rows:
        raise ConfigError(f"{spec.eval_split} split is empty; nothing to evaluate", spec.name)
    raw_gold = [r[spec.label_field] for r in rows]
    tt = tasktypes.get(spec.type)
    gold, answers = tt.scoring_inputs(spec, raw_gold, pred.answers)
    values = {m: metrics.compute(m, gold, answers, spec.labels) for m in tt.metrics}
    lo, hi = metrics.bootstrap_ci(gold, answers, spec.labels, spec.metric)
    q = QualityResult(metric=spec.metric, score=values[spec.metric], ci_low=lo, ci_high=hi,
                      n=len(rows), seconds=pred.seconds, metrics=values, predictions=pred.answers)
    for key, value in tt.quality_extras(spec, raw_gold, pred, values).items():
        setattr(q, key, value)
    return q


def sample_log(spec: TaskSpec, rows: list[dict], prompts: list[str], quality: QualityResult) -> list[dict]:
    """One record per row (lm-evaluation-harness's ``--log_samples``): the prompt exactly as
    the model read it (template, examples and chat template applied), its answer, the gold
    answer and the row's score on the task metric."""
    tt = tasktypes.get(spec.type)
    raw_gold = [r[spec.label_field] for r in rows]
    gold, answers = tt.scoring_inputs(spec, raw_gold, quality.predictions)
    return [{"index": i, "prompt": p, "answer": a, "gold": g,
             "score": metrics.compute(spec.metric, [gs], [ans], spec.labels)}
            for i, (p, a, g, gs, ans) in enumerate(zip(prompts, quality.predictions, raw_gold, gold, answers))]


def request_lengths(spec: TaskSpec, tokenizer, prompts: list[str], rows: list[dict],
                    predictions: list[Any]) -> dict:
    """The requests this task serves, measured on the eval split with the model's tokenizer
    and prompt format: prompt tokens as the model read them (template, shots, passages, chat
    template) and output tokens (a classification's gold label, the generated answer
    otherwise), each plus the stop token. A length histogram (``sizing.traffic.Lengths``)."""
    from rightsizer.sizing.traffic import Lengths

    prompt_n = [len(tokenizer(p)["input_ids"]) for p in prompts]
    outs = [r[spec.label_field] for r in rows] if spec.type == "classification" else predictions
    out_n = [len(tokenizer(o if isinstance(o, str) else json.dumps(o), add_special_tokens=False)["input_ids"]) + 1
             for o in outs]
    return Lengths.from_samples(prompt_n, out_n, source=f"measured: {spec.eval_split} split, "
                                f"{format_name(spec)} prompt format").to_dict()


def evaluate_quality(model, tokenizer, spec: TaskSpec, rows: list[dict],
                     shots: list[dict] | None = None, batch_size: int = 32,
                     progress: bool = False) -> QualityResult:
    """Score the task metric on ``rows`` (classification by option log-likelihood,
    extraction and generation by greedy generation)."""
    if not rows:
        raise ConfigError(f"{spec.eval_split} split is empty; nothing to evaluate", spec.name)
    start = time.perf_counter()
    pred = predict(model, tokenizer, spec, rows, shots, batch_size, progress)
    q = score_predictions(spec, rows, pred)
    q.seconds = time.perf_counter() - start
    return q


@dataclass
class LatencyResult:
    """Latency measured on the machine the step runs on."""

    device: str
    batch: int
    prompt_tokens: int
    output_tokens: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    tpot_p50_ms: float
    tpot_p95_ms: float
    tokens_per_s: float
    peak_memory_bytes: int
    repeats: int
    ttft_std_ms: float = 0.0  # spread over the repeats
    tpot_std_ms: float = 0.0
    measured_on: str = ""  # the device as the GPU catalog names it (a MIG slice included), else as it says

    def to_dict(self) -> dict:
        return asdict(self)


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@torch.no_grad()
def measure_latency(model, tokenizer, prompt: str, output_tokens: int = 8, batch: int = 1,
                    repeats: int = 5, warmup: int = 1) -> LatencyResult:
    """p50/p95 time to first token and per output token, tokens/s and peak memory."""
    device = next(model.parameters()).device
    enc = tokenizer([prompt] * batch, return_tensors="pt").to(device)
    gen = dict(do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def timed(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        model.generate(**enc, max_new_tokens=n, min_new_tokens=n, **gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t) * 1000

    for _ in range(warmup):
        timed(2)
    ttft, tpot, tps = [], [], []
    n = max(2, output_tokens)
    for _ in range(repeats):
        first = timed(1)
        total = timed(n)
        ttft.append(first)
        tpot.append(max(total - first, 0.0) / (n - 1))
        tps.append(batch * n / (total / 1000))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:  # process high-water mark (ru_maxrss is in KiB on Linux)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return LatencyResult(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        batch=batch, prompt_tokens=enc["input_ids"].shape[1], output_tokens=n,
        ttft_p50_ms=_percentile(ttft, 0.5), ttft_p95_ms=_percentile(ttft, 0.95),
        tpot_p50_ms=_percentile(tpot, 0.5), tpot_p95_ms=_percentile(tpot, 0.95),
        tokens_per_s=statistics.median(tps), peak_memory_bytes=int(peak), repeats=repeats,
        ttft_std_ms=statistics.pstdev(ttft), tpot_std_ms=statistics.pstdev(tpot))


def evaluate_model(spec: TaskSpec, model_ref: str, split: str | None = None,
                   output_tokens: int | None = None, repeats: int = 5,
                   progress: bool = True, batch_sizes: tuple[int, ...] = (1,),
                   target: RuntimeTarget | None = None) -> dict:
    """Quality and latency of a candidate reference or a serving bundle, as one dict.

    ``latency`` is measured at batch 1 (what the SLO is about); ``latency_by_batch`` holds
    one measurement per entry of ``batch_sizes`` (each after a warm-up, with its spread);
    ``predictions`` the answer for each row, in row order (what serving answers for them).
    A bundle whose rung retrieves is scored with its own index (the one serving loads).
    ``target``: where and in which dtype the model loads (default: this machine's,
    ``resolve_target``; a bundle keeps its own dtype); the report's ``target`` says what it was,
    and each latency row's ``measured_on`` names the device as the GPU catalog does.
    """
    target = target or resolve_target()
    from rightsizer.bundle import BUNDLE_FILE
    from rightsizer.models import param_count, state_dict_bytes

    rows = load_rows(spec, split or spec.eval_split, spec.max_eval_examples)
    if (Path(model_ref) / BUNDLE_FILE).is_file():
        bundle = load_bundle(model_ref, device=target.device)
        model, tok, shots, precision = bundle.model, bundle.tokenizer, bundle.shots, bundle.precision
        if model.dtype in DTYPES.values():  # a bundle keeps its own dtype: say which
            target = with_dtype(target, model.dtype)
        spec = dataclasses.replace(spec, index=bundle.spec.index)
    else:
        model, tok = load_model(model_ref, trust_remote_code=spec.trust_remote_code, target=target)
        shots, precision = [], target.precision
    spec = with_format(spec, tok, model.config)
    quality = evaluate_quality(model, tok, spec, rows, shots=shots, progress=progress)
    prompts = [build_prompt(spec, r, shots) for r in rows]
    prompt = prompts[0]
    n_out = output_tokens or spec.workload.output_tokens
    by_batch = {b: measure_latency(model, tok, prompt, output_tokens=n_out, batch=b,
                                   repeats=repeats) for b in sorted({1, *batch_sizes})}
    for lat in by_batch.values():
        lat.measured_on = target.measured_on
    return {"model": model_ref, "split": split or spec.eval_split, "precision": precision,
            "target": target.to_dict(),
            "prompt_format": format_name(spec),
            "params": param_count(model), "weights_bytes": state_dict_bytes(model),
            "quality": quality.to_dict(), "predictions": quality.predictions,
            "samples": sample_log(spec, rows, prompts, quality),
            "lengths": request_lengths(spec, tok, prompts, rows, quality.predictions),
            "latency": by_batch[1].to_dict(),
            "latency_by_batch": [by_batch[b].to_dict() for b in sorted(by_batch)]}
