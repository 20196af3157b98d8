"""Serving core: one task model that answers requests, thread-safe, with a small cache.

Answers come from the inference core (``rightsizer.inference.respond``): the same prompt,
prediction and stop rule the evaluate step measured, shaped by the task type. MLRun's mock
server (and Nuclio workers) call ``predict`` from several threads at once, so the model
call is serialised by a lock; identical inputs are answered from an LRU cache. A list of
inputs is served as one batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from rightsizer.errors import ConfigError
from rightsizer.inference import load_bundle, respond


class TaskModel:
    """A loaded serving bundle answering raw inputs of its task."""

    def __init__(self, bundle_dir: str | Path, device: str | None = None, cache_size: int = 1024):
        bundle = load_bundle(bundle_dir, device=device or "auto")
        self.model, self.tokenizer = bundle.model, bundle.tokenizer
        self.spec, self.shots, self.meta = bundle.spec, bundle.shots, bundle.meta
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self._cache_size = cache_size

    @property
    def task(self) -> str:
        return self.spec.name

    def validate(self, inputs) -> list[str]:
        """Normalise a request's inputs to a list of strings, or raise ConfigError."""
        field = self.spec.input_field
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise ConfigError("inputs: expected a non-empty list of strings")
        out = []
        for i, x in enumerate(inputs):
            if isinstance(x, dict):
                x = x.get(field)
            if not isinstance(x, str) or not x.strip():
                raise ConfigError(f"inputs[{i}]: expected a non-empty string (or an object with "
                                  f"'{field}'), got {x!r}")
            out.append(x)
        return out

    @torch.no_grad()
    def predict(self, inputs, max_new_tokens: int | None = None) -> list[dict]:
        """The task type's response for each input (classification: label, probabilities
        and a short free generation of ``max_new_tokens``; extraction and generation: the
        answer, generated as the evaluate step generates it)."""
        texts = self.validate(inputs)
        results: dict[int, dict] = {}
        todo = []
        with self._lock:
            for i, t in enumerate(texts):
                key = f"{max_new_tokens}\x00{t}"
                if key in self._cache:
                    self._cache.move_to_end(key)
                    results[i] = self._cache[key]
                else:
                    todo.append(i)
            if todo:
                fresh = respond(self.model, self.tokenizer, self.spec, [texts[i] for i in todo],
                                self.shots, max_new_tokens)
                for i, r in zip(todo, fresh):
                    results[i] = r
                    self._cache[f"{max_new_tokens}\x00{texts[i]}"] = r
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return [results[i] for i in range(len(texts))]
