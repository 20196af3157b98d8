"""A task served as the ladder judged it: a confidence cascade (``rightsizer.cascade``).

The small model's engine answers every request; an answer whose confidence (the task type's,
``TaskType.confidence``, unrounded in ``Answer.confidence``: a label's class probability, a
free-text answer's mean token probability) is below the threshold chosen on the eval split is
asked again of the chosen model's engine. Each response says which model answered
(``answered_by``), whether it was deferred and the small model's confidence
(``small_confidence``). The eval split through this engine gives the deferral rate the ladder
measured on it (``tests/test_serving_cascade.py``).

Streaming: a stream (generation tasks) is the chosen model's: tokens already sent cannot be
taken back when the small model's answer turns out unsure.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from rightsizer.bundle import CASCADE_DIR, read_cascade
from rightsizer.errors import ConfigError
from rightsizer.serving.contract import Answer, EngineConfig
from rightsizer.serving.engine import TaskEngine


class CascadeEngine:
    """Two task engines behind one task: ``small`` first, ``big`` below ``threshold``."""

    def __init__(self, small: TaskEngine, big: TaskEngine, pair: dict):
        if small.spec.type != big.spec.type or small.task != big.task:
            raise ConfigError(f"cascade: the small model's bundle is for {small.task!r} ({small.spec.type}), "
                              f"the chosen one's for {big.task!r} ({big.spec.type})")
        self.small, self.big, self.pair = small, big, pair
        self.threshold = float(pair["threshold"])
        self.names = (str(pair.get("small", "small")), str(pair.get("big", "big")))
        self.spec, self.config = big.spec, big.config
        self._asked = self._deferred = 0
        self._count_lock = threading.Lock()  # answers come from the engines' threads and the event loop

    @classmethod
    def from_bundle_dir(cls, bundle_dir: str | Path, device: str | None = None,
                        config: EngineConfig | None = None) -> CascadeEngine:
        """The chosen model's bundle and the cascade it carries (``rightsizer.bundle.add_cascade``)."""
        pair = read_cascade(bundle_dir)
        if pair is None:
            raise ConfigError(f"{bundle_dir}: engine.cascade is on but the bundle carries no cascade "
                              "(the ladder kept none: ladder.cascade off, or no pair met the bar)")
        engine_config = dataclasses.replace(config or EngineConfig(), cascade=False)
        small = TaskEngine.from_bundle_dir(Path(bundle_dir) / CASCADE_DIR, device, engine_config)
        try:
            big = TaskEngine.from_bundle_dir(bundle_dir, device, engine_config)
        except Exception:
            small.stop()
            raise
        return cls(small, big, pair)

    @property
    def task(self) -> str:
        return self.big.task

    @property
    def stopped(self) -> bool:
        return self.small.stopped or self.big.stopped

    def start(self) -> None:
        self.small.start()
        self.big.start()

    def stop(self) -> None:
        self.small.stop()
        self.big.stop()

    def _defer(self, answers: list[Answer]) -> list[int]:
        """The answers the small model is not sure enough of (no confidence: deferred too)."""
        return [i for i, a in enumerate(answers) if a.confidence is None or a.confidence < self.threshold]

    def _merge(self, first: list[Answer], deferred: list[int], second: list[Answer]) -> list[Answer]:
        # small_confidence: what the deferral compared with the threshold (a deferred answer's
        # own confidence is the chosen model's)
        out = [dataclasses.replace(a, response={**a.response, "answered_by": self.names[0], "deferred": False,
                                                "small_confidence": a.confidence})
               for a in first]
        for i, a in zip(deferred, second):
            out[i] = dataclasses.replace(a, response={**a.response, "answered_by": self.names[1], "deferred": True,
                                                      "small_confidence": first[i].confidence},
                                         prompt_tokens=first[i].prompt_tokens + a.prompt_tokens,
                                         completion_tokens=first[i].completion_tokens + a.completion_tokens)
        with self._count_lock:
            self._asked += len(first)
            self._deferred += len(deferred)
        return out

    def answer(self, texts: list[str], max_new_tokens: int | None = None, stop: list[str] | None = None,
               cache_salt: str | None = None, ignore_eos: bool = False,
               logprobs: int | None = None) -> list[Answer]:
        """Blocking: the small model's answers, the chosen model's where the small one was unsure."""
        first = self.small.answer(texts, max_new_tokens, stop, cache_salt, ignore_eos, logprobs, confidence=True)
        deferred = self._defer(first)
        second = (self.big.answer([texts[i] for i in deferred], max_new_tokens, stop, cache_salt, ignore_eos,
                                  logprobs) if deferred else [])
        return self._merge(first, deferred, second)

    async def answer_async(self, texts: list[str], max_new_tokens: int | None = None,
                           stop: list[str] | None = None, cache_salt: str | None = None,
                           ignore_eos: bool = False, logprobs: int | None = None) -> list[Answer]:
        first = await self.small.answer_async(texts, max_new_tokens, stop, cache_salt, ignore_eos, logprobs,
                                              confidence=True)
        deferred = self._defer(first)
        second = (await self.big.answer_async([texts[i] for i in deferred], max_new_tokens, stop, cache_salt,
                                              ignore_eos, logprobs) if deferred else [])
        return self._merge(first, deferred, second)

    def stream_async(self, *args, **kwargs):
        return self.big.stream_async(*args, **kwargs)

    def card(self) -> dict:
        """The chosen model's card with the cascade: its models, threshold, the deferral rate
        the ladder measured and the one served so far."""
        card = self.big.card()
        card["cascade"] = {"small": self.names[0], "big": self.names[1], "threshold": self.threshold,
                           "evaluated_deferral_rate": self.pair.get("deferral_rate"),
                           "served_deferral_rate": self._deferred / self._asked if self._asked else None,
                           "asked": self._asked, "deferred": self._deferred}
        return card


def engine_for(bundle_dir: str | Path, device: str | None = None,
               config: EngineConfig | None = None) -> TaskEngine | CascadeEngine:
    """The engine a bundle is served by: a cascade when ``config.cascade`` asks for one."""
    config = config or EngineConfig()
    if config.cascade:
        return CascadeEngine.from_bundle_dir(bundle_dir, device, config)
    return TaskEngine.from_bundle_dir(bundle_dir, device, config)


__all__ = ["CascadeEngine", "engine_for"]
