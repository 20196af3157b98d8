"""Rightsizer: the smallest model, lowest precision and cheapest GPU per task.

The package is pure Python (no MLRun import); the MLRun adapters live in ``functions/``.
"""

__version__ = "0.1.0"
