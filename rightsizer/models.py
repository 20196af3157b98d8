"""Candidate references, their configs, and counting a loaded model's size.

A candidate is a hub id (``Qwen/Qwen2.5-0.5B-Instruct``), a local folder written by
``save_pretrained``, or ``demo:<name>`` (a tiny model the offline bootstrap builds). All
three load through the same ``from_pretrained`` call (``rightsizer.inference.load_model``).
Safe defaults: safetensors only, ``trust_remote_code`` off unless the task spec turns it on,
the hub token read by huggingface_hub from the environment (``HF_TOKEN``), never passed
around or logged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rightsizer.errors import ConfigError
from rightsizer.refs import is_hub_id


def resolve_model_ref(ref: str) -> str:
    """Turn a candidate reference into what ``from_pretrained`` takes (path or hub id)."""
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"candidate: expected a hub id, a local path or demo:<name>, got {ref!r}")
    if ref.startswith("demo:"):
        from rightsizer.demo.bootstrap import demo_model_path

        return str(demo_model_path(ref[len("demo:"):]))
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"candidate {ref!r}: folder has no config.json (not a saved model)")
        return str(path)
    if not is_hub_id(ref):
        raise ConfigError(f"candidate {ref!r}: no such local model folder, and not a hub id "
                          "of the form 'org/name'")
    return ref


def model_fingerprint(model_path: str) -> str:
    """A cheap, stable identity of a model: its config plus, for a local folder, the size and
    the first and last MiB of every weight file (no full read of the weights). Used where a
    model must be the same one again: a fine-tuning checkpoint's base, an embedding index's
    encoder."""
    h = hashlib.sha256()
    path = Path(model_path)
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
            cfg.pop(k, None)
        h.update(json.dumps(cfg, sort_keys=True).encode())
        for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), 2)
                    h.update(fh.read(1 << 20))
    else:  # a hub id: the id (and revision, if pinned in the id) is the identity
        h.update(str(model_path).encode())
    return h.hexdigest()[:16]


def load_config(ref: str, trust_remote_code: bool = False):
    """Load only the config of a candidate (no weights), for sizing and ordering."""
    from transformers import AutoConfig

    target = resolve_model_ref(ref)
    try:
        return AutoConfig.from_pretrained(target, trust_remote_code=trust_remote_code)
    except ValueError as e:
        raise remote_code_error(ref, e) from None
    except OSError as e:
        raise ConfigError(f"candidate {ref!r}: cannot load its config ({e}). A hub id needs "
                          "hub access (and HF_TOKEN for gated models).") from None


def remote_code_error(ref: str, error: ValueError) -> Exception:
    """A ConfigError naming the spec field when transformers refused to run a model's own
    code (``trust_remote_code`` is off unless the task spec turns it on); else ``error``."""
    if "trust_remote_code" not in str(error):
        return error
    return ConfigError(f"candidate {ref!r}: its config needs the model repository's own Python code, "
                       "which Rightsizer does not run by default; set trust_remote_code: true in the "
                       "task spec only if you trust that code")


def param_count(model, trainable_only: bool = False) -> int:
    """Parameters of a built model (``torch.nn.Module``; on the meta device too), or with
    ``trainable_only`` those that require a gradient. A parameter DeepSpeed ZeRO-3 has
    partitioned counts whole (``ds_numel``), not the shard this rank holds. A model known only
    by its config is counted by ``rightsizer.sizing.params.count_params`` instead."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()
               if p.requires_grad or not trainable_only)


def state_dict_bytes(model) -> int:
    """Bytes the model's weights take as stored (true size for quantized tensor subclasses)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
