"""The serving bundle: a saved model plus ``rightsizer.json``, everything serving needs.

``rightsizer.json`` holds the task's prompt template, label options, few-shot examples,
the quantization config to re-apply at load time, and where the model came from. The
bundle is what gets registered as the task's model artifact.

When the chosen rung retrieves (the spec written has its index attached,
``rightsizer.retrieval.for_rung``), the index is saved in ``retrieval/`` and
``rightsizer.json``'s ``retrieval`` says so (folder, digest, passages, k); ``load_bundle``
loads it back, so serving retrieves what evaluation retrieved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rightsizer.atomic import atomic_dir, atomic_write_text
from rightsizer import tasktypes
from rightsizer.errors import ConfigError
from rightsizer.taskspec import TaskSpec, task_from_dict

BUNDLE_FILE = "rightsizer.json"
RETRIEVAL_DIR = "retrieval"
# A chosen model's bundle may carry the cascade the ladder judged (``ladder.cascade``): the
# small model's own bundle in cascade/ and the pair's figures in cascade.json (written last:
# its presence means the small bundle is complete). Served as a cascade only when asked
# (``EngineConfig.cascade``): whether it pays is the sizing step's decision.
CASCADE_DIR = "cascade"
CASCADE_FILE = "cascade.json"


def write_bundle(model_dir: str | Path, spec: TaskSpec, out_dir: str | Path, *,
                 base_model: str, rung: str, shots: list[dict] | None = None,
                 quant_config: dict | None = None, metrics: dict | None = None,
                 adapter: dict | None = None) -> Path:
    """Copy the model folder to ``out_dir`` and add the serving config (atomic).

    ``adapter``: for a LoRA choice, which adapter is merged into the weights (``kind``
    production or screening, its score and where it came from)."""
    out = Path(out_dir)
    meta = {
        "task": spec.name, "type": spec.type, "prompt": spec.prompt,
        "input_field": spec.input_field, "label_field": spec.label_field,
        "labels": spec.labels, "shots": shots or [], "base_model": base_model, "rung": rung,
        "quant_config": quant_config or {"precision": "fp32", "backend": "none"},
        "max_new_tokens": spec.workload.output_tokens, "metrics": metrics or {},
        "trust_remote_code": spec.trust_remote_code, "adapter": adapter or {},
        "spec": spec.to_dict(),  # serving rebuilds the task (prompt, type, stop rule) from it
        "retrieval": {},
    }
    with atomic_dir(out) as tmp:
        shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns(BUNDLE_FILE, RETRIEVAL_DIR),
                        dirs_exist_ok=True)
        if spec.index is not None:  # the rung retrieves: serving runs the same retrieval
            spec.index.save(tmp / RETRIEVAL_DIR)
            meta["retrieval"] = {"dir": RETRIEVAL_DIR, "digest": spec.index.digest,
                                 "n_passages": len(spec.index.passages), "k": spec.retrieval.k}
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


def add_cascade(bundle_dir: str | Path, small_model_dir: str | Path, small_spec: TaskSpec, pair: dict) -> Path:
    """Put the ladder's kept cascade pair into a written bundle: the small model's bundle (its
    rung's spec: shots, retrieval index) in ``cascade/`` and ``pair`` (``Selection.cascade``'s
    kept pair: threshold, deferral rate, quality, the two models) in ``cascade.json``."""
    bundle_dir = Path(bundle_dir)
    write_bundle(small_model_dir, small_spec, bundle_dir / CASCADE_DIR, base_model=pair["small"],
                 rung=pair["small_rung"], shots=pair.get("small_shots") or [])
    atomic_write_text(bundle_dir / CASCADE_FILE, json.dumps(pair, indent=2, sort_keys=True))
    return bundle_dir / CASCADE_DIR


def read_cascade(bundle_dir: str | Path) -> dict | None:
    """A bundle's cascade pair (``add_cascade``), or None when it carries none; a ConfigError
    naming the file when it is unreadable or lacks the threshold or its small bundle."""
    path = Path(bundle_dir) / CASCADE_FILE
    if not path.is_file():
        return None
    try:
        pair = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a valid cascade file ({type(e).__name__}: {e})") from None
    threshold = pair.get("threshold") if isinstance(pair, dict) else None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError(f"{path}: threshold: expected a number, got {threshold!r}")
    if not (Path(bundle_dir) / CASCADE_DIR / BUNDLE_FILE).is_file():
        raise ConfigError(f"{path}: the small model's bundle ({CASCADE_DIR}/) is missing")
    return pair


def read_bundle(bundle_dir: str | Path) -> dict:
    """A bundle's ``rightsizer.json``; a ConfigError naming the file when it is missing or corrupt."""
    path = Path(bundle_dir) / BUNDLE_FILE
    if not path.is_file():
        raise ConfigError(f"{bundle_dir}: not a Rightsizer serving bundle (no {BUNDLE_FILE})")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # a truncated or overwritten file
        raise ConfigError(f"{path}: not a valid bundle file ({type(e).__name__}: {e}); "
                          "re-run the quantize step to write the bundle again") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    problems = [f"{key}: expected {kind}, got {type(meta[key]).__name__} {meta[key]!r}"[:300]
                for key, types, kind in _META_TYPES if meta.get(key) is not None
                and not isinstance(meta[key], types)]
    if problems:
        raise ConfigError(problems, str(path))
    return meta


# The fields serving reads as they are (the spec is validated as a task spec): (field, types, said as).
_META_TYPES = (("quant_config", dict, "a JSON object"), ("shots", list, "a list of rows"),
               ("retrieval", dict, "a JSON object"), ("spec", dict, "a JSON object (the task spec)"),
               ("adapter", dict, "a JSON object"), ("metrics", dict, "a JSON object"))
_LEGACY_FIELDS = ("task", "type", "prompt", "input_field", "label_field")


def bundle_retrieval_dir(bundle_dir: str | Path, meta: dict) -> Path | None:
    """The bundle's retrieval index folder, or None when its rung does not retrieve."""
    sub = (meta.get("retrieval") or {}).get("dir")
    if not sub:
        return None
    path = Path(bundle_dir) / sub
    if not path.is_dir():
        raise ConfigError(f"{bundle_dir}: {BUNDLE_FILE} names a retrieval index in {sub}/, "
                          "which is missing")
    return path


def bundle_spec(meta: dict, source: str | None = None) -> TaskSpec:
    """The task spec a bundle was written for (what serving builds prompts and answers from).

    Bundles written before the spec was stored carry only the prompt fields; the spec is
    rebuilt from those, with placeholders for what serving does not use (data, SLO).
    """
    if "spec" in meta:  # the knowledge source stays behind: the bundle has its index
        return task_from_dict(meta["spec"], source=source, check_source=False)
    missing = [k for k in _LEGACY_FIELDS if not isinstance(meta.get(k), str)]
    if missing:
        raise ConfigError(f"no spec, and the fields a bundle without one needs are missing or not strings: "
                          f"{missing}; re-run the quantize step to write the bundle again", source)
    if meta["type"] not in tasktypes.REGISTRY:
        raise ConfigError(f"type: {meta['type']!r} is not a task type; expected one of "
                          f"{sorted(tasktypes.REGISTRY)}", source)
    legacy = {"name": meta["task"], "type": meta["type"], "prompt": meta["prompt"],
              "input_field": meta["input_field"], "label_field": meta["label_field"],
              "labels": meta.get("labels") or [], "candidates": [meta.get("base_model", "?")],
              "dataset": {"train": "-", "eval": "-"}, "threshold": 0.0,
              "metric": tasktypes.get(meta["type"]).metrics[0],
              "slo": {"ttft_ms": 1.0, "tpot_ms": 1.0},
              "workload": {"output_tokens": int(meta.get("max_new_tokens", 16))}}
    return task_from_dict(legacy, source=source)
