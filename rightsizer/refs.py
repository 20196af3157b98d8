"""Whether a reference names something on the Hugging Face hub: one rule per kind of ref.

A spec names models and datasets by a local path or a hub id; what is not a local path is
taken for a hub id only when it is shaped like one, so a typo in a file name is reported as
a missing file, not tried on the hub (and retried there). The rules:

- a model (``datasets=False``): ``owner/name`` (``Qwen/Qwen2.5-0.5B-Instruct``): exactly one
  slash; letters, digits, ``_``, ``.`` and ``-``; the owner starts with a letter or digit (so
  ``./x``, ``/x`` and ``~/x`` are paths); a name ending in a file extension
  (``configs/llama.json``, ``out/model.safetensors``) is a path;
- a dataset (``datasets=True``): ``name`` or ``owner/name`` (``imdb``, ``acme/tickets``): the
  hub's canonical datasets have no owner.
"""

from __future__ import annotations

import re

_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# what a file, never a model repository, is named like
_FILE_SUFFIXES = (".json", ".yaml", ".yml", ".safetensors", ".bin", ".pt", ".pth", ".gguf")


def is_hub_id(ref: object, datasets: bool = False) -> bool:
    """Whether ``ref`` is shaped like a hub id of a model (``owner/name``), or with
    ``datasets`` of a dataset (``name`` or ``owner/name``); see the module docstring."""
    if not isinstance(ref, str):
        return False
    if datasets:
        return bool(_DATASET_ID.match(ref))
    return bool(_MODEL_ID.match(ref)) and not ref.lower().endswith(_FILE_SUFFIXES)
