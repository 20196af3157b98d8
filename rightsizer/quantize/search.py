"""The precision search: the lowest precision whose task quality stays within tolerance.

bf16 is evaluated first (the memory reference and the fallback). Then each lower precision
in ``rightsizer.precisions.SEARCH_ORDER``: a fresh model from ``load_fn``, quantized for real with the
backend the hardware allows, scored with ``evaluate_fn``. When the full quantization breaks
the tolerance, the sensitive modules (LM head, embeddings, first and last blocks) are kept
at a higher precision and the precision is tried again (mixed precision): for int4 first
with those modules in int8, then in bf16. Backends that cannot run here are recorded as
skipped trials with the reason. A pre-quantized checkpoint (GPTQ, made with calibration text
by its own function) is one more trial of its precision. The kept trial is the one with the
fewest weight bytes (ties: the lower precision, then the higher score) among those with
``score >= baseline - tolerance``; bf16 when none qualifies. Bytes are counted as served: the
tensors left unquantized in bf16 (``SERVED_FLOAT``) whatever dtype the trial computed in, so a
CPU without bf16 units (its int8/int4 trials keep those tensors in fp32) ranks the trials as
any other machine does.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from rightsizer.errors import ConfigError
from rightsizer.precisions import QUANT_CONFIG_KEYS, QUANT_CONFIG_VERSION, SEARCH_ORDER, quant_config
from rightsizer.runtime.backends import (
    BACKENDS, backend_status, block_names, normalize_device, quantize_model, sensitive_modules, weight_bytes,
)


SERVED_FLOAT = torch.bfloat16  # the dtype a trial's unquantized tensors are counted in


@dataclass
class PrecisionTrial:
    """One attempt (or one skipped backend) of the search."""

    precision: str
    backend: str | None
    skip_modules: list[str] = field(default_factory=list)
    mixed: bool = False
    skip_precision: str = "bf16"
    status: str = "evaluated"  # evaluated | skipped | failed
    score: float | None = None
    delta: float | None = None
    memory_bytes: int | None = None
    memory_ratio: float | None = None
    decode_tokens_per_s: float | None = None
    passed: bool = False
    kept: bool = False
    reason: str = ""
    group_size: int | None = None
    dtype: str = "bfloat16"
    seconds: float = 0.0
    pre_quantized: dict | None = None  # the checkpoint's config, for a pre-quantized (GPTQ) trial
    # layers the backend's kernel could not take, kept at the next precision up (module, precision, reason)
    fallback: list[dict] = field(default_factory=list)

    def to_config(self) -> dict:
        """The config ``apply_quant_config`` takes to rebuild this trial's model.

        For a pre-quantized trial: the checkpoint's config (``pre_quantized: true``); the
        model is loaded as saved, not re-quantized.
        """
        if self.backend is None or self.status != "evaluated":
            raise ValueError(f"trial {self.precision}/{self.backend} was {self.status}; it has no config")
        if self.pre_quantized is not None:
            pre = self.pre_quantized
            # the checkpoint's own facts (calibration_samples, device, ...) ride along; the
            # keys the writer owns are written afresh
            facts = {k: v for k, v in pre.items() if k not in QUANT_CONFIG_KEYS}
            return quant_config(self.precision, self.backend, skip_modules=pre.get("skip_modules") or (),
                                skip_precision=pre.get("skip_precision", "bf16"),
                                dtype=pre.get("dtype", self.dtype), group_size=pre.get("group_size", self.group_size),
                                pre_quantized=True, **facts)
        return quant_config(self.precision, self.backend, skip_modules=self.skip_modules,
                            skip_precision=self.skip_precision, dtype=self.dtype, group_size=self.group_size)

    def to_dict(self) -> dict:
        return asdict(self)


def fallback_summary(fallback: list[dict]) -> str:
    """The layers a trial kept above its precision, grouped: "model.layers.0.mlp.down_proj,
    ... at int8: in_features 350 is not a multiple of the group size 64" ("" when none)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for f in fallback:
        groups.setdefault((f["precision"], f["reason"].split(": ", 1)[-1]), []).append(f["module"])
    return "; ".join(f"{', '.join(mods)} at {prec}: {why}" for (prec, why), mods in groups.items())


@dataclass
class PreQuantized:
    """A checkpoint quantized elsewhere (GPTQ with calibration text) to evaluate in the search."""

    load: Callable[[], object]  # returns the quantized model, ready to evaluate
    config: dict  # its quant config (group_size, calibration_samples, ...)


@dataclass
class PrecisionSearch:
    """Every trial of one search, the kept one, and the rules it was judged by."""

    baseline_score: float
    tolerance: float
    device: str
    trials: list[PrecisionTrial]
    kept: PrecisionTrial
    kept_model: object | None = field(default=None, repr=False)

    @property
    def threshold(self) -> float:
        return self.baseline_score - self.tolerance

    def to_rows(self) -> list[dict]:
        """One row per trial, for a table artifact."""
        cols = ("precision", "backend", "mixed", "skip_precision", "status", "score", "delta", "memory_bytes",
                "memory_ratio", "decode_tokens_per_s", "passed", "kept", "reason", "dtype")
        return [{**{c: getattr(t, c) for c in cols}, "kept_higher": fallback_summary(t.fallback)}
                for t in self.trials]

    def to_dict(self) -> dict:
        return {"baseline_score": self.baseline_score, "tolerance": self.tolerance,
                "threshold": self.threshold, "device": self.device,
                "kept": self.kept.to_dict(), "quant_config": self.kept.to_config(),
                "trials": self.to_rows()}


def _check_inputs(baseline_score, tolerance, precisions) -> list[str]:
    problems = []
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or not 0.0 <= tolerance <= 1.0:
        problems.append(f"quality_tolerance: {tolerance!r} is outside [0, 1]")
    if isinstance(baseline_score, bool) or not isinstance(baseline_score, (int, float)) \
            or not math.isfinite(baseline_score):
        problems.append(f"baseline_score: {baseline_score!r} is not a finite number")
    if isinstance(precisions, str) or not isinstance(precisions, (list, tuple)) or not precisions:
        problems.append(f"precisions: {precisions!r}; expected a non-empty list drawn from {list(SEARCH_ORDER)}")
    else:
        unknown = [p for p in precisions if p not in SEARCH_ORDER]
        if unknown:
            problems.append(f"precisions: {unknown} unknown; expected some of {list(SEARCH_ORDER)}")
    return problems


def search_precision(load_fn: Callable[[], object], evaluate_fn: Callable[[object], float],
                     baseline_score: float, tolerance: float, precisions: list[str],
                     device: str = "cpu", progress: bool = True, mixed: bool = True,
                     speed_fn: Callable[[object], float] | None = None,
                     keep_model: bool = False, stop_at_first_failure: bool = False,
                     backends: dict[str, str] | None = None,
                     pre_quantized: dict[str, PreQuantized] | None = None,
                     compute_dtype: str = "bfloat16") -> PrecisionSearch:
    """Search bf16 -> fp8 -> int8 -> int4 (those in ``precisions``) for the lowest one that keeps quality.

    ``load_fn()`` returns a fresh full-precision model each call (quantization is in place).
    ``evaluate_fn(model)`` returns the task score (higher is better). ``speed_fn(model)``,
    when given, returns decode tokens/s. ``backends`` forces a backend per precision.
    ``keep_model`` keeps the kept trial's model object on the result (``kept_model``).
    ``pre_quantized`` maps a pre-quantized backend ("gptq") to a checkpoint made elsewhere;
    it is scored as one more trial of its precision, judged by the same rules.
    ``compute_dtype``: the dtype the fp8/int8/int4 trials keep their other layers and compute in
    (the runtime target's: fp32 on a CPU without bf16 matrix units, where bf16 is emulated);
    the bf16 trial is bf16.
    """
    problems = _check_inputs(baseline_score, tolerance, precisions)
    dev = device
    try:
        dev = normalize_device(device)
    except ConfigError as e:
        problems.extend(e.problems)
    for p in backends or {}:
        if p not in SEARCH_ORDER:
            problems.append(f"backends: {p!r} is not a precision; expected some of {list(SEARCH_ORDER)}")
    pre = dict(pre_quantized or {})
    for name in pre:
        if name not in BACKENDS or BACKENDS[name].kind != "pre_quantized":
            problems.append(f"pre_quantized: {name!r} is not a pre-quantized backend; expected one of "
                            f"{sorted(b for b, v in BACKENDS.items() if v.kind == 'pre_quantized')}")
        elif BACKENDS[name].precision not in precisions:
            problems.append(f"pre_quantized: {name!r} is {BACKENDS[name].precision}, which is not in precisions")
        version = (getattr(pre[name], "config", None) or {}).get("version", QUANT_CONFIG_VERSION)
        if version != QUANT_CONFIG_VERSION:
            problems.append(f"pre_quantized: {name!r} has quant_config version {version!r}; "
                            f"this library reads version {QUANT_CONFIG_VERSION}")
    if problems:
        raise ConfigError(problems)
    threshold = baseline_score - tolerance
    order = ["bf16"] + [p for p in SEARCH_ORDER if p in precisions and p != "bf16"]
    trials: list[PrecisionTrial] = []
    bf16_bytes: int | None = None
    best: tuple[PrecisionTrial, object] | None = None
    sensitive: list[str] = []
    n_blocks: list[int] = []
    bar = tqdm(total=len(order), desc="precision search", disable=not progress, leave=False)

    def run(precision: str, backend: str, skip: list[str] | None, is_mixed: bool,
            skip_precision: str = "bf16") -> PrecisionTrial:
        start = time.perf_counter()
        model = load_fn()
        if not n_blocks:
            sensitive.extend(sensitive_modules(model))
            n_blocks.append(len(block_names(model)))
        info = quantize_model(model, precision, backend=backend, skip_modules=skip, device=dev,
                              skip_precision=skip_precision,
                              dtype="bfloat16" if precision == "bf16" else compute_dtype)
        trial = judge(precision, info.backend, model, start, skip=list(info.skip_modules), is_mixed=is_mixed,
                      skip_precision=info.skip_precision, memory=weight_bytes(model, SERVED_FLOAT),
                      group_size=info.group_size, dtype=info.dtype)
        trial.fallback = list(info.fallback)
        return trial

    def run_pre(precision: str, name: str, item: PreQuantized) -> PrecisionTrial:
        start = time.perf_counter()
        model = item.load()
        return judge(precision, name, model, start, memory=weight_bytes(model, SERVED_FLOAT),
                     group_size=item.config.get("group_size"), dtype=item.config.get("dtype", "bfloat16"),
                     pre=dict(item.config))

    def judge(precision: str, backend: str, model, start: float, memory: int, skip: list[str] | None = None,
              is_mixed: bool = False, skip_precision: str = "bf16", group_size: int | None = None,
              dtype: str = "bfloat16", pre: dict | None = None) -> PrecisionTrial:
        nonlocal bf16_bytes, best
        score = float(evaluate_fn(model))
        tps = float(speed_fn(model)) if speed_fn else None
        if precision == "bf16":
            bf16_bytes = memory
        passed = score >= threshold - 1e-12
        t = PrecisionTrial(
            precision=precision, backend=backend, skip_modules=skip or [], mixed=is_mixed,
            skip_precision=skip_precision,
            score=score, delta=score - baseline_score, memory_bytes=memory,
            memory_ratio=memory / bf16_bytes if bf16_bytes else None,
            decode_tokens_per_s=tps, passed=passed, group_size=group_size, dtype=dtype,
            reason=("within tolerance" if passed else
                    f"score {score:.4f} < baseline {baseline_score:.4f} - tolerance {tolerance:g}"),
            seconds=time.perf_counter() - start, pre_quantized=pre)
        trials.append(t)
        if passed or precision == "bf16":
            if best is None or (passed and (not best[0].passed or _lower(t, best[0]))):
                best = (t, model if keep_model else None)
        return t

    for precision in order:
        bar.set_postfix_str(precision)
        rows = backend_status(precision, dev)
        forced = (backends or {}).get(precision)
        chosen = forced or next((r["backend"] for r in rows if r["usable"]), None)
        for r in rows:
            if r["backend"] != chosen and not r["usable"] and r["backend"] not in pre:
                trials.append(PrecisionTrial(precision=precision, backend=r["backend"], status="skipped",
                                             reason=r["reason"]))
        if chosen is not None:
            t = run(precision, chosen, None, False)
            if not t.passed and mixed and precision != "bf16":
                if n_blocks[0] > 2:
                    for high in _mixed_levels(precision, dev):
                        if run(precision, chosen, list(sensitive), True, high).passed:
                            break
                else:
                    trials.append(PrecisionTrial(
                        precision=precision, backend=chosen, skip_modules=list(sensitive), mixed=True,
                        status="skipped", reason=f"the model has {n_blocks[0]} blocks: keeping the first "
                                                 "and last in bf16 leaves nothing to quantize"))
        for r in rows:
            if r["backend"] in pre:
                run_pre(precision, r["backend"], pre[r["backend"]])
        bar.update(1)
        if stop_at_first_failure and precision != "bf16" and not any(
                x.passed for x in trials if x.precision == precision):
            break
    bar.close()
    assert best is not None  # bf16 always runs (or raised)
    kept, kept_model = best
    kept.kept = True
    if not kept.passed:
        kept.reason = (f"no precision met baseline {baseline_score:.4f} - tolerance {tolerance:g}; "
                       "kept bf16 (" + kept.reason + ")")
    return PrecisionSearch(baseline_score=float(baseline_score), tolerance=float(tolerance), device=dev,
                           trials=trials, kept=kept, kept_model=kept_model)


def decode_speed_fn(tokenizer, prompt: str, output_tokens: int = 8, batch: int = 1,
                    repeats: int = 3) -> Callable[[object], float]:
    """A ``speed_fn`` for the search: decode tokens/s measured by the evaluation harness."""
    from rightsizer.evaluate import measure_latency

    def speed(model) -> float:
        return measure_latency(model, tokenizer, prompt, output_tokens=output_tokens, batch=batch,
                               repeats=repeats).tokens_per_s

    return speed


def _mixed_levels(precision: str, device: str) -> list[str]:
    """Precisions to keep the sensitive modules at, cheapest first: int8 (for int4), then bf16."""
    levels = []
    if precision == "int4" and backend_status("int8", device) and any(
            r["usable"] for r in backend_status("int8", device)):
        levels.append("int8")
    return levels + ["bf16"]


def _lower(a: PrecisionTrial, b: PrecisionTrial) -> bool:
    """Whether trial ``a`` is a better keep than ``b``: fewer weight bytes, then lower precision,
    then the higher score.

    Bytes decide, not the label: int4 with half its blocks in bf16 can outweigh plain int8.
    """
    if a.memory_bytes != b.memory_bytes:
        return (a.memory_bytes or 0) < (b.memory_bytes or 0)
    if a.precision != b.precision:
        return SEARCH_ORDER.index(a.precision) > SEARCH_ORDER.index(b.precision)
    return (a.score or 0.0) > (b.score or 0.0)  # same size and precision (GPTQ vs round-to-nearest)


def precision_figure(search: PrecisionSearch, task: str = "", metric: str = "task score"):
    """Plotly chart of the search: quality per trial (bars: kept, within tolerance, below it)
    with the bar it was judged by, weight memory relative to bf16 (line), and every backend
    that was skipped or failed shown at zero with its reason (not left out)."""
    import textwrap

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    def label(t: PrecisionTrial) -> str:
        mixed = f" + {t.skip_precision} ends" if t.mixed else ""
        return f"{t.precision}{mixed}<br>{t.backend or 'no backend'}"

    def wrap(text: str) -> str:
        lines = textwrap.wrap(text, 22)
        return "<br>".join(lines[:4]) + ("…" if len(lines) > 4 else "")

    done = [t for t in search.trials if t.status == "evaluated"]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    groups = (("kept", "#2ca02c", lambda t: t.kept), ("within tolerance", "#1f77b4", lambda t: t.passed and not t.kept),
              ("below tolerance", "#d62728", lambda t: not t.passed and not t.kept))
    for name, color, pick in groups:
        ts = [t for t in done if pick(t)]
        if not ts:
            continue
        fig.add_trace(go.Bar(
            x=[label(t) for t in ts], y=[t.score for t in ts], marker_color=color, name=name,
            text=[f"{t.score:.3f}" + (f"<br>{t.memory_ratio:.2f}x bf16 bytes" if t.memory_ratio else "")
                  for t in ts], textposition="outside", cliponaxis=False,
            customdata=[[t.delta or 0.0, t.memory_bytes or 0, t.reason] for t in ts],
            hovertemplate=("%{x}<br>" + metric + " %{y:.3f} (delta %{customdata[0]:+.3f})<br>"
                           "weights %{customdata[1]:,} bytes<br>%{customdata[2]}<extra></extra>")),
            secondary_y=False)
    not_run = [t for t in search.trials if t.status != "evaluated"]
    if not_run:
        fig.add_trace(go.Scatter(
            x=[label(t) for t in not_run], y=[0.0] * len(not_run), mode="markers+text",
            marker=dict(symbol="x-thin-open", size=14, color="#7f7f7f", line=dict(width=2)),
            text=[f"{t.status}:<br>{wrap(t.reason)}" for t in not_run], textposition="top center",
            cliponaxis=False, name="skipped / failed (reason)", customdata=[t.reason for t in not_run],
            hovertemplate="%{x}: %{customdata}<extra></extra>"), secondary_y=False)
    fig.add_trace(go.Scatter(x=[label(t) for t in done], y=[t.memory_ratio for t in done], mode="lines+markers",
                             name="weight memory / bf16", line=dict(color="#7f7f7f", dash="dot"),
                             hovertemplate="%{x}<br>%{y:.2f}x the bf16 weight bytes<extra></extra>"),
                  secondary_y=True)
    fig.add_hline(y=search.threshold, line_dash="dash", line_color="#b8860b",
                  annotation_text=(f"bar: bf16 {search.baseline_score:.3f} - tolerance {search.tolerance:g} "
                                   f"= {search.threshold:.3f}"), annotation_position="bottom right")
    kept = search.kept
    title = (f"{task + ': ' if task else ''}precision search, kept {kept.precision}"
             f"{' mixed' if kept.mixed else ''} ({kept.backend})"
             f"<br><sup>{metric} and weight bytes measured on {search.device}; "
             f"{len(done)} evaluated, {len(not_run)} skipped or failed</sup>")
    fig.update_layout(title=dict(text=title), barmode="group", template="plotly_white",
                      margin=dict(t=100, b=90), legend=dict(orientation="h", y=-0.18))
    # categories in the order the search tried them (traces are grouped by verdict)
    order = list(dict.fromkeys(label(t) for t in search.trials))
    fig.update_xaxes(title_text="precision and backend", categoryorder="array", categoryarray=order)
    fig.update_yaxes(title_text=f"{metric} (0-1)", range=[0, 1.2], secondary_y=False)
    fig.update_yaxes(title_text="weight memory / bf16 (ratio)", range=[0, 1.2], secondary_y=True,
                     showgrid=False)
    return fig
