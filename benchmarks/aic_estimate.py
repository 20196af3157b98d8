"""Cross-check rows with NVIDIA's aiconfigurator (run with .venv-aic/bin/python).

    bash scripts/setup_aic.sh
    .venv-aic/bin/python benchmarks/aic_estimate.py < rows.json      # or --rows rows.json

Input: a JSON list of rows
    {"id": ..., "model": "llama-3.1-8b", "gpu": "H100-SXM", "count": 1, "precision": "fp8",
     "kv_precision": "fp8" (optional, default bf16), "prompt_tokens": 128, "output_tokens": 128,
     "metric": "ttft_ms" | "tpot_ms" | "max_throughput_tokens_per_s"}
Output (stdout): a JSON list, one object per row, in input order:
    {"id", "value" (null when aiconfigurator cannot estimate it), "reason" (when null),
     "aic_version", "system", "backend", "backend_version", "mode", "gemm", "kvcache", "wall_s"}

What each metric is in aiconfigurator terms:
- ttft_ms, tpot_ms: the static estimate (cli_estimate(mode="static"), the SDK behind
  `aiconfigurator cli estimate --mode static`) of one request alone: batch 1, tensor parallel
  on `count` GPUs, pp 1. TTFT is the context (prefill) latency of `prompt_tokens`; TPOT the
  mean decode step over `output_tokens` (aiconfigurator samples the decode loop every 32 steps).
- max_throughput_tokens_per_s: output tokens/s of ONE replica on `count` GPUs, aggregated
  in-flight-batching serving, as `aiconfigurator cli default --serving-mode agg` searches it,
  with the search space cut down so one row takes seconds: tp fixed to `count`, pp 1, no
  disaggregation, no attention-DP, MoE tp = `count` (ep 1), TTFT/TPOT limits of 1e9 ms (no
  limit). aiconfigurator still sweeps the batch size (up to its default of 512) and the
  per-step context-token budget and reports the best point; `tokens/s` of that point is the
  value.

This script must not import rightsizer or mlrun: the aiconfigurator environment holds only
aiconfigurator and its dependencies. The name tables below are the whole mapping; a project
name that is not in them, or maps to None, gives value null with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROJECT_CONFIGS = REPO / "tests" / "fixtures" / "configs"

# ---------------------------------------------------------------------------------------------
# Name tables
# ---------------------------------------------------------------------------------------------

# Project catalog GPU (rightsizer/data/gpus.yaml) -> aiconfigurator system, or None + why.
# A system counts only where aiconfigurator-core ships measured operator tables for it
# (systems/data/<system>/ with gemm + attention data); systems/*.yaml alone is a spec sheet.
GPU_TO_SYSTEM: dict[str, tuple[str | None, str]] = {
    "H100-SXM": ("h100_sxm", ""),
    "H200": ("h200_sxm", ""),
    "A100-80GB": ("a100_sxm", ""),
    "L40S": ("l40s", ""),
    "B200": ("b200_sxm", ""),
    "A100-40GB": (None, "no operator data for A100-40GB (aiconfigurator has a100_sxm, the 80 GB part, "
                        "whose memory and bandwidth differ)"),
    "H100-PCIe": (None, "no operator data for h100_pcie (aiconfigurator ships a spec sheet "
                        "systems/h100_pcie.yaml but an empty data/h100_pcie/)"),
    "L4": (None, "no operator data for l4 (aiconfigurator ships a spec sheet systems/l4.yaml but an "
                 "empty data/l4/)"),
    "T4": (None, "no operator data for t4 (no aiconfigurator system)"),
    "A10G": (None, "no operator data for a10g (no aiconfigurator system)"),
    "MI300X": (None, "no operator data for mi300x (aiconfigurator models NVIDIA systems only)"),
}

# Project config name -> what aiconfigurator loads. ("hf", id): a HuggingFace id whose config
# aiconfigurator-core bundles and resolves itself (its DefaultHFModels; no hub access needed).
# ("aic", file): a config in aiconfigurator_core/model_configs/ that is bundled but not in
# DefaultHFModels (aiconfigurator would try the hub), copied to a temporary directory.
# ("file", name, architecture): the
# project's own config tests/fixtures/configs/<name>.json, written to a temporary directory with
# `architectures` set (the fixtures omit it), since aiconfigurator does not bundle that model.
MODEL_TO_AIC: dict[str, tuple] = {
    "llama-3.1-8b": ("hf", "meta-llama/Meta-Llama-3.1-8B"),
    "llama-3.1-70b": ("hf", "meta-llama/Meta-Llama-3.1-70B"),
    "llama-3.1-405b": ("hf", "meta-llama/Meta-Llama-3.1-405B"),
    "mixtral-8x7b": ("aic", "mistralai--Mixtral-8x7B-v0.1_config.json"),
    "qwen3-8b": ("hf", "Qwen/Qwen3-8B"),
    "qwen3-0.6b": ("hf", "Qwen/Qwen3-0.6B"),
    "llama-2-70b": ("file", "llama-2-70b", "LlamaForCausalLM"),
    "llama-2-7b": ("file", "llama-2-7b", "LlamaForCausalLM"),
    "qwen2.5-7b": ("file", "qwen2.5-7b", "Qwen2ForCausalLM"),  # aic: LLAMA family (qkv bias ignored)
    "qwen2.5-0.5b": ("file", "qwen2.5-0.5b", "Qwen2ForCausalLM"),
    # aiconfigurator has no MistralForCausalLM; Mistral-7B-v0.1 is the Llama block with GQA 32/8 and
    # a 4096-token sliding window, which the LLAMA family ignores (exact below 4096 tokens).
    "mistral-7b": ("file", "mistral-7b-v0.1", "LlamaForCausalLM"),
    "mistral-7b-v0.1": ("file", "mistral-7b-v0.1", "LlamaForCausalLM"),
}
MODEL_UNSUPPORTED: dict[str, str] = {
    "gemma-2-2b": "model not supported (aiconfigurator has no Gemma-2 architecture)",
    "gemma-2b": "model not supported (aiconfigurator has no Gemma architecture)",
    "gpt2": "model not supported (aiconfigurator has no GPT-2 architecture)",
    "phi-3-mini-4k": "model not supported (aiconfigurator has no Phi-3 architecture)",
    "pythia-160m": "model not supported (aiconfigurator has no GPT-NeoX architecture)",
    "smollm2-135m": "model not supported (no bundled config; Llama architecture, add a table entry)",
}

# Project weight precision -> aiconfigurator GEMMQuantMode (rightsizer/precisions.py: int8 and int4
# are weight-only W8A16 / W4A16 there, fp8 is W8A8 e4m3 per-tensor).
PRECISION_TO_GEMM: dict[str, tuple[str | None, str]] = {
    "bf16": ("bfloat16", ""),
    "fp16": ("bfloat16", ""),  # aiconfigurator has no fp16 GEMM tables; bf16 has the same peak
    "fp8": ("fp8", ""),
    "int8": ("int8_wo", ""),
    "int4": ("int4_wo", ""),
    "fp32": (None, "precision fp32 not modelled by aiconfigurator"),
    "nf4": (None, "precision nf4 not modelled by aiconfigurator"),
}
# KV-cache precision -> KVCacheQuantMode (default bf16 when the row has none).
KV_TO_AIC: dict[str, str] = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8", "int8": "int8"}

METRICS = ("ttft_ms", "tpot_ms", "max_throughput_tokens_per_s")
BACKEND = "trtllm"
SILENCE_LOGGERS = ("aiconfigurator", "aiconfigurator_core")


# ---------------------------------------------------------------------------------------------


def _aic_version() -> str:
    try:
        return importlib.metadata.version("aiconfigurator")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class Unsupported(Exception):
    """The row cannot be estimated; the message is the reason."""


class Estimator:
    def __init__(self, backend: str = BACKEND, backend_version: str | None = None):
        self.backend = backend
        self.backend_version = backend_version
        self._tmp = tempfile.TemporaryDirectory(prefix="aic-models-")
        self._model_paths: dict[str, str] = {}
        self._gemm_dtypes: dict[str, set[str]] = {}
        self._static_cache: dict[tuple, Any] = {}
        from aiconfigurator_core.sdk import perf_database

        self._supported = perf_database.get_supported_databases()

    # -- mapping -------------------------------------------------------------------------------

    def system(self, gpu: str) -> str:
        if gpu not in GPU_TO_SYSTEM:
            raise Unsupported(f"no mapping for GPU {gpu!r} (add it to GPU_TO_SYSTEM)")
        system, why = GPU_TO_SYSTEM[gpu]
        if system is None:
            raise Unsupported(why)
        if self.backend not in self._supported.get(system, {}):
            raise Unsupported(f"no operator data for {system} with backend {self.backend}")
        return system

    def model_path(self, model: str) -> str:
        if model in MODEL_UNSUPPORTED:
            raise Unsupported(MODEL_UNSUPPORTED[model])
        if model not in MODEL_TO_AIC:
            raise Unsupported(f"model not supported: no mapping for {model!r} (add it to MODEL_TO_AIC)")
        entry = MODEL_TO_AIC[model]
        if entry[0] == "hf":
            return entry[1]
        if model not in self._model_paths:
            if entry[0] == "aic":
                import aiconfigurator_core

                name = entry[1].removesuffix("_config.json")
                src = Path(aiconfigurator_core.__file__).parent / "model_configs" / entry[1]
                if not src.is_file():
                    raise Unsupported(f"model not supported: {entry[1]} not bundled in this aiconfigurator")
                cfg = json.loads(src.read_text())
            else:
                _, name, arch = entry
                src = PROJECT_CONFIGS / f"{name}.json"
                if not src.is_file():
                    raise Unsupported(f"model config {src} not found")
                cfg = json.loads(src.read_text())
                cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
                cfg["architectures"] = [arch]
                cfg.setdefault("torch_dtype", "bfloat16")
            d = Path(self._tmp.name) / name
            d.mkdir(parents=True, exist_ok=True)
            (d / "config.json").write_text(json.dumps(cfg))
            self._model_paths[model] = str(d)
        return self._model_paths[model]

    def gemm_mode(self, precision: str, system: str) -> str:
        if precision not in PRECISION_TO_GEMM:
            raise Unsupported(f"no mapping for precision {precision!r}")
        mode, why = PRECISION_TO_GEMM[precision]
        if mode is None:
            raise Unsupported(why)
        have = self._system_gemm_dtypes(system)
        if have and mode not in have:
            raise Unsupported(
                f"no {mode} GEMM data for {system} ({self.backend}; it has {', '.join(sorted(have))})"
            )
        return mode

    def _system_gemm_dtypes(self, system: str) -> set[str]:
        if system not in self._gemm_dtypes:
            self._gemm_dtypes[system] = set()
            try:
                import pandas as pd
                from aiconfigurator_core.sdk import perf_database

                versions = self._supported[system][self.backend]
                version = self.backend_version or _default_version(system, self.backend, versions)
                for root in perf_database.get_systems_paths():
                    f = Path(root) / "data" / system / "gemm" / self.backend / version / "gemm_perf.parquet"
                    if f.is_file():
                        dt = pd.read_parquet(f, columns=["gemm_dtype"])["gemm_dtype"].unique()
                        self._gemm_dtypes[system] = set(dt.tolist())
            except Exception:  # no pre-check then; aiconfigurator's own error will say
                pass
        return self._gemm_dtypes[system]

    # -- estimates -----------------------------------------------------------------------------

    def static(self, model_path, system, count, gemm, kv, isl, osl, moe: bool):
        key = (model_path, system, count, gemm, kv, isl, osl)
        if key not in self._static_cache:
            from aiconfigurator.cli.api import cli_estimate

            kwargs = {"moe_tp_size": count, "moe_ep_size": 1, "moe_quant_mode": _moe_mode(gemm)} if moe else {}
            self._static_cache[key] = cli_estimate(
                model_path, system, mode="static", backend_name=self.backend,
                backend_version=self.backend_version, isl=isl, osl=osl, batch_size=1,
                tp_size=count, pp_size=1, gemm_quant_mode=gemm, kvcache_quant_mode=kv, **kwargs,
            )
        return self._static_cache[key]

    def max_throughput(self, model_path, system, count, gemm, kv, isl, osl, moe: bool):
        from aiconfigurator.cli.api import _execute_and_wrap_result
        from aiconfigurator.sdk import common
        from aiconfigurator.sdk.task_v2 import Task

        extra = {"agg_moe_tp_candidates": [count], "agg_moe_ep_candidates": [1],
                 "moe_quant_mode": common.MoEQuantMode[_moe_mode(gemm)]} if moe else {}
        task = Task(
            serving_mode="agg", model_path=model_path, system_name=system, backend_name=self.backend,
            backend_version=self.backend_version, total_gpus=count, isl=isl, osl=osl,
            ttft=1e9, tpot=1e9, agg_num_gpu_candidates=[count], agg_tp_candidates=[count],
            agg_pp_candidates=[1], agg_dp_candidates=[1],
            gemm_quant_mode=common.GEMMQuantMode[gemm], kvcache_quant_mode=common.KVCacheQuantMode[kv],
            **extra,
        )
        res = _execute_and_wrap_result({"agg": task}, mode="default", top_n=1)
        df = res.best_configs.get("agg")
        if df is None or len(df) == 0:
            raise Unsupported("aiconfigurator found no feasible agg configuration (does the model fit?)")
        return df.iloc[0].to_dict()

    def row(self, row: dict) -> dict:
        t0 = time.time()
        out: dict[str, Any] = {
            "id": row.get("id"), "value": None, "aic_version": _aic_version(), "system": None,
            "backend": self.backend, "backend_version": self.backend_version, "mode": None,
        }
        try:
            metric = row.get("metric")
            if metric not in METRICS:
                raise Unsupported(f"unknown metric {metric!r} (one of {', '.join(METRICS)})")
            out["mode"] = "agg" if metric == "max_throughput_tokens_per_s" else "static"
            system = out["system"] = self.system(str(row["gpu"]))
            path = self.model_path(str(row["model"]))
            gemm = out["gemm"] = self.gemm_mode(str(row["precision"]), system)
            kvp = str(row.get("kv_precision") or "bf16")
            if kvp not in KV_TO_AIC:
                raise Unsupported(f"no mapping for kv_precision {kvp!r}")
            kv = out["kvcache"] = KV_TO_AIC[kvp]
            count, isl, osl = int(row["count"]), int(row["prompt_tokens"]), int(row["output_tokens"])
            moe = "mixtral" in str(row["model"]).lower()
            if metric == "max_throughput_tokens_per_s":
                best = self.max_throughput(path, system, count, gemm, kv, isl, osl, moe)
                out["value"] = float(best["tokens/s"])
                out["backend_version"] = best.get("version")
                out["detail"] = {k: _plain(best.get(k)) for k in
                                 ("bs", "ctx_tokens", "ttft", "tpot", "tokens/s/gpu", "memory", "parallel")}
            else:
                r = self.static(path, system, count, gemm, kv, isl, osl, moe)
                out["value"] = float(r.ttft if metric == "ttft_ms" else r.tpot)
                out["backend_version"] = r.backend_version or r.raw.get("version")
                out["detail"] = {"memory_gb": _plain(r.raw.get("memory")),
                                 "fmha": r.raw.get("fmha"), "comm": r.raw.get("comm")}
        except Unsupported as e:
            out["reason"] = str(e)
        except KeyError as e:
            out["reason"] = f"row lacks field {e}"
        except SystemExit as e:  # aiconfigurator's CLI helpers exit on some unsupported inputs
            out["value"] = None
            out["reason"] = f"aiconfigurator exited ({e.code}); see stderr"
        except Exception as e:  # aiconfigurator's own error: say what it said
            out["value"] = None
            out["reason"] = f"aiconfigurator error: {type(e).__name__}: {str(e)[:300]}"
        out["wall_s"] = round(time.time() - t0, 2)
        return out


def _moe_mode(gemm: str) -> str:
    """The experts' quant mode: the GEMM one where MoEQuantMode has it (int8_wo: bf16 experts)."""
    return gemm if gemm in ("bfloat16", "fp8", "int4_wo") else "bfloat16"


def _default_version(system: str, backend: str, versions: list[str]) -> str:
    try:
        from aiconfigurator_core.sdk import perf_database

        v = perf_database.get_latest_database_version(system, backend)
        if v:
            return v
    except Exception:
        pass
    return sorted(versions)[-1]


def _plain(v):
    try:
        import numpy as np

        if isinstance(v, np.generic):
            return v.item()
    except ImportError:
        pass
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", help="JSON file with the rows (default: stdin)")
    ap.add_argument("--backend", default=BACKEND, choices=["trtllm", "vllm", "sglang"])
    ap.add_argument("--backend-version", default=None, help="default: aiconfigurator's current one")
    args = ap.parse_args(argv)
    rows = json.loads(Path(args.rows).read_text() if args.rows else sys.stdin.read())
    if not isinstance(rows, list):
        raise SystemExit("input must be a JSON list of rows")

    # aiconfigurator logs (and its Rust core prints) progress; keep stdout for the JSON alone.
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    for name in SILENCE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr):
        est = Estimator(args.backend, args.backend_version)
        results = [est.row(r) for r in rows]
    json.dump(results, real_stdout, indent=1)
    real_stdout.write("\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
