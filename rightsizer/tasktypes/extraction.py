"""Extraction: a short span copied or normalised from the input, scored by exact match / token F1."""

from __future__ import annotations

from rightsizer.tasktypes.base import TaskType


class Extraction(TaskType):
    name = "extraction"
    metrics = ("exact_match", "token_f1")
