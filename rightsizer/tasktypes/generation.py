"""Generation: a short free-text answer, scored by ROUGE-L against the references."""

from __future__ import annotations

from rightsizer.tasktypes.base import TaskType


class Generation(TaskType):
    name = "generation"
    metrics = ("rouge_l",)
