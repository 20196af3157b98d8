"""GPTQ / AWQ pre-quantization with calibration text from the task's train split.

Both run with gptqmodel (autoawq is archived upstream): GPTQ on a CUDA GPU or, more slowly,
on the CPU; AWQ on CUDA only. gptqmodel does not fit beside mlrun 1.12 in one environment
(it wants numpy >= 2 and a newer protobuf), so these run in their own MLRun function
(``functions/quantize_gptq.py``, image built from ``requirements-gptq.txt``; locally
``.venv-gptq`` from ``scripts/setup_gptq.sh``). This module imports gptqmodel only inside
:func:`prequantize`, so the main environment imports it fine; without it, it raises a
ConfigError that says so. The checkpoint it writes loads in the main environment through
``rightsizer.runtime.gptq_format``.

Bad input is rejected before anything is loaded, and the quantized model is written to a
temporary folder renamed into place at the end: a failed run leaves no half-written artifact.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from rightsizer.atomic import atomic_dir
from rightsizer.errors import ConfigError
from rightsizer.precisions import quant_config

METHODS = {"gptq": "gptqmodel", "awq": "gptqmodel"}  # gptqmodel implements both
MIN_CALIBRATION_SAMPLES = 16
RESULT_MARK = "RIGHTSIZER_QUANT_CONFIG="  # the CLI's result line, among gptqmodel's own output


def served_calibration_texts(spec, rows: list[dict], rung: str | None = None, **kwargs) -> list[str]:
    """Calibration texts for the model of ``rung`` (the chosen one): prompts as that rung
    serves them, so a retrieval rung's calibration text carries its passages."""
    from rightsizer.retrieval import for_rung

    return calibration_texts(rows, for_rung(spec, rung) if rung else spec, **kwargs)


def calibration_texts(rows: list[dict], spec=None, text_field: str | None = None,
                      samples: int = 128, min_samples: int = MIN_CALIBRATION_SAMPLES,
                      min_chars: int = 8) -> list[str]:
    """Calibration texts from train rows: the task prompt plus its answer, as served.

    Raises ConfigError naming ``calibration`` when fewer than ``min_samples`` usable texts
    (at least ``min_chars`` characters, duplicates dropped) are found.
    """
    if not isinstance(min_samples, int) or min_samples < 1:
        raise ConfigError(f"calibration.min_samples: {min_samples!r}; expected a positive integer")
    if not isinstance(samples, int) or samples < min_samples:
        raise ConfigError(f"calibration.samples: {samples!r}; expected an integer >= min_samples ({min_samples})")
    texts: list[str] = []
    seen = set()
    for row in rows or []:
        if spec is not None:
            from rightsizer.inference import build_prompt

            text = f"{build_prompt(spec, row)} {row.get(spec.label_field, '')}".strip()
        else:
            text = str(row.get(text_field or "text", "")).strip()
        if len(text) >= min_chars and text not in seen:
            seen.add(text)
            texts.append(text)
        if len(texts) >= samples:
            break
    if len(texts) < min_samples:
        raise ConfigError(f"calibration: {len(texts)} usable text(s) in the train split; GPTQ/AWQ need at "
                          f"least {min_samples} (of >= {min_chars} characters, no duplicates) to estimate "
                          "the weights' sensitivity. Add training rows or lower calibration.min_samples.")
    return texts


def check_method(method: str, bits: int, group_size: int) -> list[str]:
    problems = []
    if method not in METHODS:
        problems.append(f"method: {method!r}; expected one of {sorted(METHODS)}")
    if bits not in (4, 8) or (method == "awq" and bits != 4):
        problems.append(f"bits: {bits!r}; GPTQ takes 4 or 8, AWQ takes 4")
    if not isinstance(group_size, int) or (group_size != -1 and (group_size <= 0 or group_size % 32)):
        problems.append(f"group_size: {group_size!r}; expected a multiple of 32, or -1 (per column)")
    return problems


def fit_group_size(model_path: str | os.PathLike, group_size: int) -> int:
    """``group_size``, or the largest smaller power of two (>= 32) that divides every linear
    layer's input width (hidden, intermediate, attention output); ConfigError when none does.

    Small models (the demo's, 64 wide) cannot take the usual 128; the kernels need whole groups.
    """
    path = Path(model_path) / "config.json"
    if group_size == -1 or not path.is_file():
        return group_size
    cfg = json.loads(path.read_text())
    cfg = cfg.get("text_config", cfg)
    heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
    widths = [w for w in (hidden, cfg.get("intermediate_size"),
                          (cfg.get("head_dim") or 0) * (heads or 0) or None) if isinstance(w, int)]
    for g in [group_size] + [x for x in (128, 64, 32) if x < group_size]:
        if all(w % g == 0 for w in widths):
            return g
    raise ConfigError(f"group_size: {group_size} and no smaller power of two >= 32 divides the model's "
                      f"layer widths {widths}; GPTQ needs whole groups")


def missing_packages(method: str) -> list[str]:
    return [p for p in (METHODS[method],) if importlib.util.find_spec(p) is None]


def resolve_device(device: str) -> str:
    """``auto`` is the GPU where torch sees one, else the CPU (gptqmodel quantizes on both)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device: {device!r}; expected 'auto', 'cpu' or 'cuda[:N]'")
    return device


def prequantize(model_path: str, texts: list[str], output_dir: str | os.PathLike, method: str = "gptq",
                bits: int = 4, group_size: int = 128, device: str = "auto", desc_act: bool = False) -> dict:
    """Quantize the saved model at ``model_path`` with calibration ``texts``; save to ``output_dir``.

    Returns the quant config to register with the model (``backend`` is the method). The
    GPTQ checkpoint is symmetric; ``desc_act`` (act-order) is off by default because it
    slows most inference kernels for little gain on small groups.
    """
    problems = check_method(method, bits, group_size)
    if not texts:
        problems.append("calibration: no texts")
    if Path(output_dir).exists():
        problems.append(f"output_dir: {output_dir} exists; refusing to overwrite")
    if (os.path.isabs(model_path) or str(model_path).startswith(".")) and not Path(model_path).is_dir():
        problems.append(f"model_path: {model_path} is not a folder (a saved model or a hub id expected)")
    if problems:
        raise ConfigError(problems)
    missing = missing_packages(method)
    if missing:
        raise ConfigError(f"method: {method} needs {missing}, which are not installed in this environment. "
                          "Run it as the quantize-gptq MLRun function, whose image installs "
                          "requirements-gptq.txt (they do not fit beside mlrun 1.12), or locally with "
                          "scripts/setup_gptq.sh.")
    group_size = fit_group_size(model_path, group_size)
    device = resolve_device(device)
    if method == "awq" and device == "cpu":
        raise ConfigError("device: AWQ quantization (gptqmodel) needs a CUDA GPU; on the CPU use method 'gptq'")
    # gptqmodel sizes a CPU thread pool from the core count and refuses fewer than 2 workers
    os.environ["GPTQMODEL_CPU_WORKERS"] = str(max(2, int(os.environ.get("GPTQMODEL_CPU_WORKERS") or 2)))
    out = Path(output_dir)
    with atomic_dir(out) as tmp:
        from gptqmodel import GPTQModel, QuantizeConfig

        if method == "gptq":
            qc = QuantizeConfig(bits=bits, group_size=group_size, sym=True, desc_act=desc_act,
                                offload_to_disk=False)
        else:
            from gptqmodel.quantization.config import AWQConfig, FORMAT

            qc = AWQConfig(bits=bits, group_size=group_size, format=FORMAT.GEMM, offload_to_disk=False)
        model = GPTQModel.load(model_path, qc, device=device)
        model.quantize(texts, batch_size=4)
        model.save(str(tmp))
        config = quant_config(f"int{bits}", method, dtype="bfloat16", group_size=group_size, pre_quantized=True,
                              calibration_samples=len(texts), device=device, desc_act=desc_act)
        (tmp / "rightsizer_quant.json").write_text(json.dumps(config, indent=2))
    return config


def main(argv: list[str] | None = None) -> int:
    """CLI run inside the GPTQ environment: ``python -m rightsizer.quantize_gptq``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--texts", required=True, help="JSON file: a list of calibration strings")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--method", default="gptq", choices=sorted(METHODS))
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--desc-act", action="store_true", help="GPTQ act-order")
    a = ap.parse_args(argv)
    texts = json.loads(Path(a.texts).read_text())
    config = prequantize(a.model_path, texts, a.output_dir, a.method, a.bits, a.group_size, a.device, a.desc_act)
    print(RESULT_MARK + json.dumps(config), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
