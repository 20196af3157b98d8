"""Test-only: a loaded serving bundle answering raw inputs with blocking calls (``TaskModel``),
as a test that serves a bundle wants it; the served path is ``TaskEngine`` beneath. Tests
import it as ``tests.task_model``."""

from __future__ import annotations

from pathlib import Path

from rightsizer.errors import ConfigError
from rightsizer.serving import EngineConfig, ServingError, validate_texts
from rightsizer.serving.engine import TaskEngine


class TaskModel:
    """A loaded serving bundle answering raw inputs of its task (blocking calls, thread-safe)."""

    def __init__(self, bundle_dir: str | Path, device: str | None = None,
                 config: EngineConfig | None = None):
        self.engine = TaskEngine.from_bundle_dir(bundle_dir, device=device, config=config)
        self.model, self.tokenizer = self.engine.model, self.engine.tokenizer
        self.spec, self.shots, self.meta = self.engine.spec, self.engine.shots, self.engine.bundle.meta

    @property
    def task(self) -> str:
        return self.spec.name

    def validate(self, inputs) -> list[str]:
        """Normalise a request's inputs to a list of strings, or raise ConfigError naming the item."""
        try:
            return validate_texts(inputs, self.spec.input_field)
        except ServingError as e:
            raise ConfigError(e.message) from None

    def predict(self, inputs, max_new_tokens: int | None = None) -> list[dict]:
        """The task type's response for each input (classification: label, probabilities and a
        short free generation; extraction and generation: the answer as the evaluate step
        generated it)."""
        return [a.response for a in self.engine.answer(self.validate(inputs), max_new_tokens)]

    def close(self) -> None:
        self.engine.stop()
