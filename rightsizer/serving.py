"""Serving core: one task model that answers requests, thread-safe, with a small cache.

MLRun's mock server (and Nuclio workers) call ``predict`` from several threads at once, so
the model call is serialised by a lock; identical inputs are answered from an LRU cache.
A list of inputs is served as one batched ``generate`` call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from rightsizer.bundle import read_bundle
from rightsizer.errors import ConfigError
from rightsizer.evaluate import score_options


class TaskModel:
    """A loaded serving bundle: classification by option log-likelihood, plus generation."""

    def __init__(self, bundle_dir: str | Path, device: str | None = None, cache_size: int = 1024):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.meta = read_bundle(bundle_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        trust = bool(self.meta.get("trust_remote_code", False))
        self.tokenizer = AutoTokenizer.from_pretrained(bundle_dir, trust_remote_code=trust)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # generation continues after the prompt
        qc = self.meta.get("quant_config") or {}
        if qc.get("pre_quantized"):  # a GPTQ checkpoint: loads quantized, nothing to apply
            from rightsizer.quantize.gptq_format import load_gptq_model

            self.model = load_gptq_model(bundle_dir, device=self.device, trust_remote_code=trust)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(
                bundle_dir, use_safetensors=True, trust_remote_code=trust).to(self.device).eval()
        if qc.get("backend") not in (None, "none") and not qc.get("pre_quantized"):
            from rightsizer.quantize import apply_quant_config

            self.model = apply_quant_config(self.model, qc)
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self._cache_size = cache_size

    @property
    def task(self) -> str:
        return self.meta["task"]

    def prompt_for(self, text: str) -> str:
        m = self.meta
        parts = [m["prompt"].format(**{m["input_field"]: s[m["input_field"]]}) + " " +
                 s[m["label_field"]] for s in m["shots"]]
        return "\n\n".join(parts + [m["prompt"].format(**{m["input_field"]: text})])

    def validate(self, inputs) -> list[str]:
        """Normalise a request's inputs to a list of strings, or raise ConfigError."""
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise ConfigError("inputs: expected a non-empty list of strings")
        out = []
        for i, x in enumerate(inputs):
            if isinstance(x, dict):
                x = x.get(self.meta["input_field"])
            if not isinstance(x, str) or not x.strip():
                raise ConfigError(f"inputs[{i}]: expected a non-empty string (or an object with "
                                  f"'{self.meta['input_field']}'), got {x!r}")
            out.append(x)
        return out

    @torch.no_grad()
    def predict(self, inputs, max_new_tokens: int | None = None) -> list[dict]:
        """Label, class probabilities and a short greedy generation for each input."""
        texts = self.validate(inputs)
        n_new = max_new_tokens or int(self.meta.get("max_new_tokens", 4))
        results: dict[int, dict] = {}
        todo = []
        with self._lock:
            for i, t in enumerate(texts):
                key = f"{n_new}\x00{t}"
                if key in self._cache:
                    self._cache.move_to_end(key)
                    results[i] = self._cache[key]
                else:
                    todo.append(i)
            if todo:
                prompts = [self.prompt_for(texts[i]) for i in todo]
                fresh = self._run(prompts, n_new)
                for i, r in zip(todo, fresh):
                    results[i] = r
                    self._cache[f"{n_new}\x00{texts[i]}"] = r
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return [results[i] for i in range(len(texts))]

    def _run(self, prompts: list[str], n_new: int) -> list[dict]:
        out = []
        labels = self.meta.get("labels") or []
        probs = None
        if labels:
            probs = torch.softmax(score_options(self.model, self.tokenizer, prompts, labels), -1)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        gen = self.model.generate(**enc, max_new_tokens=n_new, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:],
                                            skip_special_tokens=True)
        for j, text in enumerate(texts):
            r = {"task": self.task, "generated": text.strip()}
            if probs is not None:
                r["label"] = labels[int(probs[j].argmax())]
                r["probabilities"] = {lab: round(float(p), 4) for lab, p in zip(labels, probs[j])}
            out.append(r)
        return out
