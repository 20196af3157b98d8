"""The one inference path: load a model, build a task's prompt, score options, generate.

Evaluation, screening, the precision search, re-evaluation and serving all call this
module, so what a step measured is what the server answers (tests/test_inference.py
checks the evaluate step against the served model row by row, for every task type).

Loading (``load_model``) takes a candidate reference (hub id, local folder, ``demo:<name>``)
or a folder with a quantization config to re-apply; safetensors only; ``trust_remote_code``
only when the caller (the task spec) says so; the attention implementation from
``choose_attention``; a device map from ``plan_placement`` when a memory budget is given.
``load_bundle`` loads a serving bundle with its task spec and few-shot examples, and its
retrieval index when the chosen rung retrieves (attached to ``Bundle.spec``, so every
prompt built from the bundle's spec, the serving engine's included, carries the passages).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from rightsizer import prompting, tasktypes
from rightsizer.bundle import BUNDLE_FILE, bundle_retrieval_dir, bundle_spec, read_bundle
from rightsizer.errors import ConfigError
from rightsizer.models import remote_code_error, resolve_model_ref
from rightsizer.retrieval import Index, context_text, retrieve_for
from rightsizer.runtime.attention import choose_attention
from rightsizer.runtime.placement import PlacementPlan, plan_placement
from rightsizer.runtime.target import DTYPES, RuntimeTarget
from rightsizer.tasktypes import Predictions
from rightsizer.taskspec import CONTEXT, TaskSpec, template_fields

__all__ = ["Bundle", "Engine", "Predictions", "answer_text", "apply_stop", "build_prompt", "generate",
           "load_bundle", "load_model", "load_tokenizer", "predict", "predict_with", "respond",
           "respond_with", "score_options", "with_format"]


def _device(device: str | None) -> str | None:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_tokenizer(target: str, trust_remote_code: bool = False):
    """The tokenizer of a model folder or hub id, with a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(ref: str | Path, dtype: torch.dtype | str = torch.float32, *, device: str | None = None,
               trust_remote_code: bool = False, quant_config: dict | None = None,
               attention: str | None = "auto", memory_budget: dict | None = None,
               placement: PlacementPlan | None = None, device_map=None, target: RuntimeTarget | None = None,
               **kwargs):
    """Load ``(model, tokenizer)`` for inference, in eval mode, from safetensors only.

    ``target``: the step's runtime target (``rightsizer.runtime.target``): its device and
    weights dtype, in place of ``device`` and ``dtype``.

    ``device``: where to put the model (``"auto"``: CUDA when there is one; None: where
    transformers loads it, the CPU). ``quant_config``: the config a quantize step wrote
    (re-applied after loading; a pre-quantized GPTQ checkpoint loads quantized).
    ``attention``: ``"auto"`` picks with ``choose_attention``; an implementation name is
    passed on; None leaves transformers' default. ``memory_budget``: ``plan_placement``'s
    keyword arguments (``gpu_bytes``, ``cpu_bytes``, ``reserve_bytes``, ``offload_folder``),
    or a ready ``placement`` plan: the model is loaded with that device map.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if target is not None:
        device, dtype = target.device, target.torch_dtype
    path = resolve_model_ref(str(ref))
    dev = _device(device)
    qc = quant_config or {}
    try:
        tokenizer = load_tokenizer(path, trust_remote_code)
        if qc.get("pre_quantized"):  # a GPTQ checkpoint: loads quantized, nothing to apply
            from rightsizer.runtime.gptq_format import load_gptq_model

            # the dtype it was evaluated in (quant_config's, as for the in-place backends)
            model = load_gptq_model(path, dtype=DTYPES[qc.get("dtype", "bfloat16")], device=dev or "cpu",
                                    trust_remote_code=trust_remote_code)
            return model, tokenizer
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        if memory_budget is not None and placement is None:
            placement = plan_placement(config, **memory_budget)
        if placement is not None:
            kw = placement.from_pretrained_kwargs()
            dtype = kw.pop("dtype")
            if placement.offload_folder:
                Path(placement.offload_folder).mkdir(parents=True, exist_ok=True)
            kwargs.update(kw)
        elif device_map is not None:
            kwargs["device_map"] = device_map
        if attention == "auto":
            model_class = _model_class(config)
            torch_dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
            attention = choose_attention(dev or "cpu", model_class, torch_dtype).implementation
        if attention is not None:
            kwargs["attn_implementation"] = attention
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs)
    except ValueError as e:
        err = remote_code_error(str(ref), e)
        if err is e and Path(path).is_dir():  # a local folder whose files are broken or missing
            raise ConfigError(f"model {ref!r}: cannot load it from {path} ({str(e).splitlines()[0]}); "
                              f"its files: {sorted(p.name for p in Path(path).iterdir())}") from None
        raise err from None
    except OSError as e:
        raise ConfigError(f"model {ref!r}: cannot load it ({e})") from None
    except SafetensorError as e:  # a truncated or overwritten weights file
        files = sorted(str(f) for f in Path(path).glob("*.safetensors")) if Path(path).is_dir() else [path]
        raise ConfigError(f"model {ref!r}: a weights file is corrupt ({e}); files: {files}") from None
    if dev is not None and "device_map" not in kwargs:
        model = model.to(dev)
    model.eval()
    gen = getattr(model, "generation_config", None)
    stops = prompting.stop_token_ids(model.config, tokenizer, gen)
    if stops and gen is not None:
        # generate() and the continuous batch both stop at EOS and the template's end of turn
        model.generation_config.eos_token_id = stops
    if qc.get("backend") not in (None, "none"):
        from rightsizer.runtime.backends import apply_quant_config

        model = apply_quant_config(model, qc)
    return model, tokenizer


def _model_class(config):
    """The causal-LM class transformers would build for ``config`` (None when unknown)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        return None


@dataclass
class Bundle:
    """A loaded serving bundle: the model, its task spec and few-shot examples.

    ``spec.index`` is the bundle's retrieval index when its rung retrieves (else None)."""

    model: Any
    tokenizer: Any
    spec: TaskSpec
    shots: list[dict]
    meta: dict

    @property
    def precision(self) -> str:
        return self.meta["quant_config"].get("precision", "fp32")


def load_bundle(bundle_dir: str | Path, device: str | None = "auto") -> Bundle:
    """Load a serving bundle (``rightsizer.bundle``) with its quantization re-applied."""
    meta = read_bundle(bundle_dir)
    # what the bundle file says is checked before the weights are loaded
    spec = bundle_spec(meta, source=str(Path(bundle_dir) / BUNDLE_FILE))
    index_dir = bundle_retrieval_dir(bundle_dir, meta)
    model, tokenizer = load_model(bundle_dir, dtype="auto", device=device,
                                  trust_remote_code=bool(meta.get("trust_remote_code", False)),
                                  quant_config=meta.get("quant_config"))
    if index_dir is not None:
        spec = dataclasses.replace(spec, index=Index.load(index_dir))
    return Bundle(model, tokenizer, with_format(spec, tokenizer, model.config), list(meta.get("shots") or []),
                  meta)


def with_format(spec: TaskSpec, tokenizer, model_config=None) -> TaskSpec:
    """``spec`` with its prompt format bound to ``tokenizer`` (``prompting.resolve``); a spec
    already bound is returned as it is."""
    if spec.rendering is not None:
        return spec
    model_type = getattr(model_config, "model_type", None)
    return dataclasses.replace(spec, rendering=prompting.resolve(spec, tokenizer, model_type))


def answer_text(spec: TaskSpec, row: dict) -> str:
    """The answer a model should give for ``row`` (as a few-shot example or a training target)."""
    return tasktypes.get(spec.type).answer_text(spec, row)


def build_prompt(spec: TaskSpec, row: dict, shots: list[dict] | None = None) -> str:
    """The task prompt for ``row``, after solved examples when shots are given, rendered in
    the spec's prompt format (``prompting``: raw text, or turns through the chat template).

    When ``spec`` has a retrieval index attached (``retrieval.for_rung``, a loaded bundle),
    the top-k passages for the row's input go into the template's ``{context}``, or, when
    it has none, before the prompt as ``"Context:\n<passages, one per line>\n\n"``; each
    shot gets the passages of its own input the same way."""
    fmt = spec.rendering or prompting.PromptFormat("raw")
    turns = [(_with_context(spec, s), answer_text(spec, s)) for s in shots or []]
    return fmt.render(spec.system, turns, _with_context(spec, row))


def _with_context(spec: TaskSpec, row: dict) -> str:
    if spec.index is None or spec.retrieval is None:
        return spec.format_prompt(row)
    context = context_text(retrieve_for(spec, row))
    if CONTEXT in template_fields(spec.prompt):
        return spec.format_prompt(row, context)
    return f"Context:\n{context}\n\n{spec.format_prompt(row)}"


@torch.no_grad()
def score_options(model, tokenizer, prompts: list[str], options: list[str],
                  batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """Total log-probability of each option after each prompt: a [len(prompts), len(options)] tensor."""
    pairs = []
    for p in prompts:
        ctx = prompting.encode(tokenizer, p)
        # each option encoded with its prompt and split (lm-eval's method)
        pairs += [prompting.split_continuation(tokenizer, p, o, ctx) for o in options]
    sums = _continuation_sums(model, tokenizer, pairs, batch_size * len(options), progress)
    return torch.tensor([s for s, _ in sums]).view(len(prompts), len(options))


def continuation_logprobs(model, tokenizer, prompts: list[str], continuations: list[str],
                          batch_size: int = 32, progress: bool = False) -> list[float]:
    """The mean log-probability of each continuation's tokens after its prompt (a free-text
    answer's confidence, ``TaskType.confidence``); ``-inf`` for an empty one."""
    pairs = [prompting.split_continuation(tokenizer, p, c) for p, c in zip(prompts, continuations, strict=True)]
    return [total / n if n else float("-inf")
            for total, n in _continuation_sums(model, tokenizer, pairs, batch_size, progress)]


@torch.no_grad()
def _continuation_sums(model, tokenizer, pairs: list[tuple[list[int], list[int]]], step: int,
                       progress: bool) -> list[tuple[float, int]]:
    """``(sum of log-probabilities, tokens)`` of each pair's continuation ids after its
    context ids, ``step`` sequences per forward pass."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[tuple[float, int]] = []
    for start in tqdm(range(0, len(pairs), step), desc="scoring", disable=not progress, leave=False):
        chunk = [p + c for p, c in pairs[start:start + step]]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, seq in enumerate(chunk):
            ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for i, (p_ids, c_ids) in enumerate(pairs[start:start + step]):
            p_len, c_len = len(p_ids), len(c_ids)
            targets = ids[i, p_len:p_len + c_len]
            out.append((float(logp[i, p_len - 1:p_len - 1 + c_len].gather(1, targets[:, None]).sum()), c_len))
    return out


def apply_stop(text: str, stop: tuple[str, ...] | list[str] | None) -> str:
    """A generation cut at the first of the stop strings (``prompting.stop_strings``), stripped."""
    if isinstance(stop, str):  # a lone string would be read as its characters
        raise ValueError(f"stop: {stop!r}; expected a list of stop strings (or None)")
    return prompting.cut_at_stop(text, stop or ())


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 16,
             stop: tuple[str, ...] | list[str] | None = ("\n",), batch_size: int = 16,
             progress: bool = False) -> list[str]:
    """Greedy generations, prompts left-padded in batches, ended by EOS or the end-of-turn
    token (the model's generation config, ``load_model``) and cut at the first ``stop``
    string, stripped."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    answers: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generating",
                      disable=not progress, leave=False):
        encoded = [prompting.encode(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(map(len, encoded))
        # left-padded: generation continues at the right end of every row
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encoded):
            ids[i, width - len(e):] = torch.tensor(e)
            mask[i, width - len(e):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        answers.extend(apply_stop(t, stop) for t in texts)
    return answers


class Engine:
    """A model and its tokenizer as the task types see them (``tasktypes.Engine``)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def score_options(self, prompts: list[str], options: list[str], batch_size: int = 32,
                      progress: bool = False) -> list[list[float]]:
        return score_options(self.model, self.tokenizer, prompts, options, batch_size, progress).tolist()

    def generate(self, prompts: list[str], max_new_tokens: int, stop: tuple[str, ...],
                 batch_size: int = 16, progress: bool = False) -> list[str]:
        return generate(self.model, self.tokenizer, prompts, max_new_tokens, stop, batch_size, progress)

    def answer_logprobs(self, prompts: list[str], answers: list[str], batch_size: int = 32) -> list[float]:
        return continuation_logprobs(self.model, self.tokenizer, prompts, answers, batch_size)


def predict(model, tokenizer, spec: TaskSpec, rows: list[dict], shots: list[dict] | None = None,
            batch_size: int = 32, progress: bool = False, confidence: bool = False) -> Predictions:
    """The task type's answers for ``rows`` (best label option, or a generation cut by its stop rule),
    prompts rendered in the spec's format bound to ``tokenizer``. ``confidence``: a free-text
    answer's mean token log-probability too (``Predictions.answer_logprobs``, one more forward
    pass; a label's is in its option scores), what ``TaskType.confidence`` reads."""
    spec = with_format(spec, tokenizer, model.config)
    return predict_with(Engine(model, tokenizer), spec, rows, shots, batch_size, progress, confidence)


def predict_with(engine: tasktypes.Engine, spec: TaskSpec, rows: list[dict],
                 shots: list[dict] | None = None, batch_size: int = 32,
                 progress: bool = False, confidence: bool = False) -> Predictions:
    """``predict`` through any model runner (the serving engine batches across requests)."""
    start = time.perf_counter()
    prompts = [build_prompt(spec, r, shots) for r in rows]
    return _predict_prompts(engine, spec, prompts, batch_size, progress, start, confidence)


def _predict_prompts(engine: tasktypes.Engine, spec: TaskSpec, prompts: list[str], batch_size: int = 32,
                     progress: bool = False, start: float | None = None, confidence: bool = False) -> Predictions:
    start = time.perf_counter() if start is None else start
    answers, scores = tasktypes.get(spec.type).predict(engine, spec, prompts, batch_size, progress)
    pred = Predictions(answers, scores, time.perf_counter() - start)
    if confidence and scores is None:
        pred.answer_logprobs = engine.answer_logprobs(prompts, answers, batch_size)
    return pred


def respond(model, tokenizer, spec: TaskSpec, texts: list[str], shots: list[dict] | None = None,
            max_new_tokens: int | None = None) -> list[dict]:
    """Serving responses for raw inputs: the same prediction as ``predict``, shaped by the task type."""
    spec = with_format(spec, tokenizer, model.config)
    return respond_with(Engine(model, tokenizer), spec, texts, shots, max_new_tokens)


def respond_with(engine: tasktypes.Engine, spec: TaskSpec, texts: list[str],
                 shots: list[dict] | None = None, max_new_tokens: int | None = None) -> list[dict]:
    """``respond`` through any model runner: the same prompts, prediction and response shape."""
    prompts = [build_prompt(spec, {spec.input_field: t}, shots) for t in texts]
    pred = _predict_prompts(engine, spec, prompts)
    return tasktypes.get(spec.type).respond(engine, spec, prompts, pred, max_new_tokens)
