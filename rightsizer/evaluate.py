"""The evaluation harness: task quality by log-likelihood, and latency on this machine.

Classification is scored without parsing free text: each label option is appended to the
prompt and the option with the highest total log-probability wins. The softmax over the
options' log-likelihoods gives class probabilities; their calibration (ECE, Brier) is
reported raw and after temperature scaling. Extraction and short generation are scored on
greedy generations (``max_new_tokens`` of the spec, cut at the first newline) with the
metrics of ``rightsizer.metrics``.
"""

from __future__ import annotations

import math
import random
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rightsizer import metrics
from rightsizer.errors import ConfigError
from rightsizer.metrics import macro_f1  # noqa: F401  (re-exported)
from rightsizer.taskspec import TaskSpec


def load_rows(spec: TaskSpec, split: str, limit: int | None = None) -> list[dict]:
    """Load a split of the task's dataset as rows, through Hugging Face ``datasets``."""
    import datasets

    if split not in spec.dataset:
        raise ConfigError(f"dataset: no {split!r} split; the spec names {sorted(spec.dataset)}",
                          spec.name)
    ref = spec.dataset_path(split)
    ext = ref.rsplit(".", 1)[-1].lower()
    builder = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}.get(ext)
    if builder and Path(ref).is_file() and not open(ref, "rb").read(4096).strip():
        raise ConfigError(f"dataset.{split}: {ref} is empty; expected at least one row", spec.name)
    try:
        if builder:
            ds = datasets.load_dataset(builder, data_files={split: ref}, split=split)
        else:
            ds = (datasets.load_from_disk(ref) if Path(ref).is_dir()
                  else datasets.load_dataset(ref, split=split))
    except FileNotFoundError:
        raise ConfigError(f"dataset.{split}: file not found: {ref}", spec.name) from None
    rows = ds.to_list()
    if not rows:
        raise ConfigError(f"dataset.{split}: {ref} is empty; expected at least one row", spec.name)
    missing = {f for f in (spec.input_field, spec.label_field) if f not in rows[0]}
    if missing:
        raise ConfigError(f"dataset.{split}: rows have no field(s) {sorted(missing)}; "
                          f"they have {sorted(rows[0])}", spec.name)
    if spec.type == "classification":
        bad = sorted({str(r[spec.label_field]) for r in rows} - set(spec.labels))
        if bad:
            raise ConfigError(f"dataset.{split}: label(s) {bad} are not in labels {spec.labels}",
                              spec.name)
    else:
        bad_rows = [i for i, r in enumerate(rows) if not _gold_ok(r[spec.label_field])]
        if bad_rows:
            raise ConfigError(f"dataset.{split}: {len(bad_rows)} row(s) (first: row {bad_rows[0]}) "
                              f"have a {spec.label_field!r} that is not a string or a non-empty "
                              "list of strings", spec.name)
    return rows[:limit] if limit else rows


def _gold_ok(value) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def answer_text(spec: TaskSpec, row: dict) -> str:
    """The answer a model should give for ``row`` (the first reference when there are several)."""
    gold = row[spec.label_field]
    return gold[0] if isinstance(gold, list) else str(gold)


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
    if problems:
        raise ConfigError(problems, spec.name)
    evals = splits[spec.eval_split]
    return train, evals[:spec.max_eval_examples] if spec.max_eval_examples else evals


def pick_shots(spec: TaskSpec, train_rows: list[dict], k: int, seed: int = 0) -> list[dict]:
    """k training examples (spread over the labels for classification), the same for the same seed."""
    if k > len(train_rows):
        raise ConfigError(f"ladder.few_shot_k: {k} is larger than the train split "
                          f"({len(train_rows)} rows)", spec.name)
    rng = random.Random(seed)
    if spec.type != "classification":
        return rng.sample(train_rows, k)
    by_label: dict[str, list[dict]] = {}
    for row in train_rows:
        by_label.setdefault(row[spec.label_field], []).append(row)
    shots: list[dict] = []
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_label.items())]
    while len(shots) < k:
        for pool in pools:
            if pool and len(shots) < k:
                shots.append(pool.pop())
    rng.shuffle(shots)
    return shots


def build_prompt(spec: TaskSpec, row: dict, shots: list[dict] | None = None) -> str:
    """The task prompt for ``row``, preceded by solved examples when shots are given."""
    parts = [f"{spec.format_prompt(s)} {answer_text(spec, s)}" for s in shots or []]
    return "\n\n".join(parts + [spec.format_prompt(row)])


@torch.no_grad()
def score_options(model, tokenizer, prompts: list[str], options: list[str],
                  batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """Total log-probability of each option after each prompt: a [len(prompts), len(options)] tensor."""
    device = next(model.parameters()).device
    opt_ids = [tokenizer(" " + o, add_special_tokens=False)["input_ids"] for o in options]
    seqs, spans = [], []
    for p in prompts:
        p_ids = tokenizer(p)["input_ids"]
        for o in opt_ids:
            seqs.append(p_ids + o)
            spans.append((len(p_ids), len(o)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = torch.empty(len(seqs))
    step = batch_size * len(options)
    for start in tqdm(range(0, len(seqs), step), desc="scoring", disable=not progress, leave=False):
        chunk = seqs[start:start + step]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(chunk):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for i, (p_len, o_len) in enumerate(spans[start:start + step]):
            targets = ids[i, p_len:p_len + o_len]
            scores[start + i] = logp[i, p_len - 1:p_len - 1 + o_len].gather(
                1, targets[:, None]).sum()
    return scores.view(len(prompts), len(options))


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 16,
                     batch_size: int = 16, progress: bool = False) -> list[str]:
    """Greedy answers (text up to the first newline, stripped), prompts left-padded in batches."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues at the right end of every row
    answers: list[str] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="generating",
                          disable=not progress, leave=False):
            enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt",
                            padding=True).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                           skip_special_tokens=True)
            answers.extend(t.strip().split("\n")[0].strip() for t in texts)
    finally:
        tokenizer.padding_side = side
    return answers


@dataclass
class Predictions:
    """What a model answered for some rows; ``option_scores`` only for classification."""

    answers: list[str]
    option_scores: list[list[float]] | None
    seconds: float


def predict(model, tokenizer, spec: TaskSpec, rows: list[dict], shots: list[dict] | None = None,
            batch_size: int = 32, progress: bool = False) -> Predictions:
    """Answers for ``rows``: the best label option (classification) or a greedy generation."""
    start = time.perf_counter()
    prompts = [build_prompt(spec, r, shots) for r in rows]
    if spec.type == "classification":
        scores = score_options(model, tokenizer, prompts, spec.labels, batch_size, progress)
        answers = [spec.labels[i] for i in scores.argmax(dim=-1).tolist()]
        return Predictions(answers, scores.tolist(), time.perf_counter() - start)
    answers = generate_answers(model, tokenizer, prompts, spec.max_new_tokens,
                               min(batch_size, 16), progress)
    return Predictions(answers, None, time.perf_counter() - start)


def bootstrap_ci(gold: list, pred: list[str], labels: list[str], metric: str,
                 n_boot: int = 500, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the metric over eval examples."""
    vals = metrics.bootstrap(metric, gold, pred, labels, n_boot=n_boot, seed=seed)
    return vals[int(alpha / 2 * n_boot)], vals[min(n_boot - 1, int((1 - alpha / 2) * n_boot))]


def _metric(name: str, gold: list, pred: list[str], labels: list[str]) -> float:
    return metrics.compute(name, gold, pred, labels)


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
    predictions: list[str] = field(default_factory=list, repr=False)

    def value_for(self, rule: str) -> float:
        """The number the decision rule compares with the threshold."""
        return self.ci_low if rule == "ci_lower" else self.score

    def to_dict(self, with_predictions: bool = False) -> dict:
        d = asdict(self)
        if not with_predictions:
            d.pop("predictions")
        return d


def _softmax(row: list[float], t: float = 1.0) -> list[float]:
    m = max(row)
    e = [math.exp((v - m) / t) for v in row]
    z = sum(e)
    return [v / z for v in e]


def score_predictions(spec: TaskSpec, rows: list[dict], pred: Predictions) -> QualityResult:
    """The task's metrics, bootstrap CI and (classification) calibration for some answers."""
    if not rows:
        raise ConfigError(f"{spec.eval_split} split is empty; nothing to evaluate", spec.name)
    gold = [r[spec.label_field] for r in rows]
    answers = pred.answers
    names = metrics.METRICS[spec.type]
    values = {m: metrics.compute(m, gold, answers, spec.labels) for m in names}
    lo, hi = bootstrap_ci(gold, answers, spec.labels, spec.metric)
    q = QualityResult(metric=spec.metric, score=values[spec.metric], ci_low=lo, ci_high=hi,
                      n=len(rows), seconds=pred.seconds, metrics=values, predictions=answers)
    if spec.type == "classification" and pred.option_scores is not None:
        gold_idx = [spec.labels.index(g) for g in gold]
        t = metrics.fit_temperature(pred.option_scores, gold_idx)
        raw = [_softmax(r) for r in pred.option_scores]
        cal = [_softmax(r, t) for r in pred.option_scores]
        correct = [g == a for g, a in zip(gold, answers)]
        q.accuracy, q.macro_f1 = values["accuracy"], values["macro_f1"]
        q.mean_confidence = sum(max(p) for p in raw) / len(raw)
        q.calibration = {
            "ece": metrics.expected_calibration_error([max(p) for p in raw], correct),
            "brier": metrics.brier(raw, gold_idx), "temperature": t,
            "ece_calibrated": metrics.expected_calibration_error([max(p) for p in cal], correct),
            "brier_calibrated": metrics.brier(cal, gold_idx)}
    return q


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
                   progress: bool = True, batch_sizes: tuple[int, ...] = (1,)) -> dict:
    """Quality and latency of a candidate reference or a serving bundle, as one dict.

    ``latency`` is measured at batch 1 (what the SLO is about); ``latency_by_batch`` holds
    one measurement per entry of ``batch_sizes`` (each after a warm-up, with its spread).
    """
    from rightsizer.bundle import BUNDLE_FILE
    from rightsizer.models import load_model, param_count, state_dict_bytes

    rows = load_rows(spec, split or spec.eval_split, spec.max_eval_examples)
    if (Path(model_ref) / BUNDLE_FILE).is_file():
        from rightsizer.serving import TaskModel

        tm = TaskModel(model_ref, device="cpu" if not torch.cuda.is_available() else None)
        model, tok, shots = tm.model, tm.tokenizer, tm.meta["shots"]
        precision = tm.meta["quant_config"].get("precision", "fp32")
    else:
        model, tok = load_model(model_ref, trust_remote_code=spec.trust_remote_code)
        shots, precision = [], "fp32"
    quality = evaluate_quality(model, tok, spec, rows, shots=shots, progress=progress)
    prompt = build_prompt(spec, rows[0], shots)
    n_out = output_tokens or spec.workload.output_tokens
    by_batch = {b: measure_latency(model, tok, prompt, output_tokens=n_out, batch=b,
                                   repeats=repeats) for b in sorted({1, *batch_sizes})}
    return {"model": model_ref, "split": split or spec.eval_split, "precision": precision,
            "params": param_count(model), "weights_bytes": state_dict_bytes(model),
            "quality": quality.to_dict(), "latency": by_batch[1].to_dict(),
            "latency_by_batch": [by_batch[b].to_dict() for b in sorted(by_batch)]}
