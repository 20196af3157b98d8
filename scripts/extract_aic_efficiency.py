"""Extract achieved operator efficiencies from aiconfigurator's bundled measured tables.

    bash scripts/setup_aic.sh
    .venv-aic/bin/python scripts/extract_aic_efficiency.py [--out rightsizer/data/operator_efficiency.yaml]

Run with .venv-aic/bin/python (needs aiconfigurator-core, pandas, pyarrow, pyyaml; must not import
rightsizer or mlrun). For every system whose trtllm GEMM table aiconfigurator-core ships, it reads
the newest bundled trtllm version that holds the table itself (a version directory with only a
reuse.yaml points at older data and is skipped), and writes, per GEMM dtype and token count M:

- compute efficiency = 2*M*N*K / latency / peak tensor FLOP/s of the dtype's compute lane
  (aiconfigurator's own mapping: weight-only int8/int4 compute in bf16; fp8, fp8_block in fp8; sq
  in int8; nvfp4 in fp4), peak from the system's yaml;
- memory efficiency = (N*K*weight_bytes + M*K*activation_bytes + M*N*2) / latency / mem_bw,
  i.e. weights + input activations + the bf16 output, over the yaml's datasheet bandwidth;

each the median over the representative LLM GEMM shapes below that the table holds. And, from the
attention tables of the same version: context (prefill) attention compute efficiency vs sequence
length (aiconfigurator's causal FLOP count) and generation (decode) attention memory efficiency vs
KV length (aiconfigurator's byte count). Measured points only: no interpolation.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "rightsizer" / "data" / "operator_efficiency.yaml"
BACKEND = "trtllm"

M_LIST = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
# (N, K) = (output features, input features). aiconfigurator's grid has no 14336 or 28672, so the
# Llama shapes are represented by their nearest grid neighbours (e.g. 8B gate/up 14336x4096 ->
# 12288x4096 and 16384x4096, down 4096x14336 -> 4096x12288 and 4096x16384; 70B 8192x28672 ->
# 8192x16384, 28672x8192 -> 16384x8192).
LLM_SHAPES = [
    (4096, 4096), (6144, 4096), (12288, 4096), (16384, 4096), (4096, 12288), (4096, 16384),
    (8192, 8192), (10240, 8192), (16384, 8192), (8192, 16384),
]
# gemm_dtype -> (weight bytes, activation bytes, compute lane = system yaml key)
# (weight bytes: aiconfigurator_core.sdk.common.GEMMQuantMode memory; lanes: its compute_dtype)
GEMM_DTYPES = {
    "bfloat16": (2.0, 2.0, "bfloat16_tc_flops"),
    "fp8": (1.0, 1.0, "fp8_tc_flops"),
    "fp8_block": (1.0, 1.0, "fp8_tc_flops"),
    "int8_wo": (1.0, 2.0, "bfloat16_tc_flops"),
    "int4_wo": (0.5, 2.0, "bfloat16_tc_flops"),
    "sq": (1.0, 1.0, "int8_tc_flops"),
    "nvfp4": (9 / 16, 9 / 16, "fp4_tc_flops"),
}
# Attention heads for the representative configs: (num_heads, num_kv_heads, head_dim)
ATTN_HEADS = [(32, 8, 128), (64, 8, 128), (32, 32, 128)]
CTX_ISL = [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
GEN_BATCH = [1, 16, 64]


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def _version_key(v: str):
    import re

    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", v)]


def newest_version(data_dir: Path, family: str, filename: str) -> str | None:
    base = data_dir / family / BACKEND
    if not base.is_dir():
        return None
    versions = [d.name for d in base.iterdir() if (d / filename).is_file()]
    return max(versions, key=_version_key) if versions else None


def gemm_table(path: Path, spec: dict) -> tuple[dict, list]:
    df = pd.read_parquet(path, columns=["gemm_dtype", "m", "n", "k", "latency"])
    df = df.groupby(["gemm_dtype", "m", "n", "k"], as_index=False)["latency"].min()
    out, shapes_used = {}, set()
    gpu = spec["gpu"]
    for dtype in sorted(df.gemm_dtype.unique()):
        if dtype not in GEMM_DTYPES:
            continue
        wb, ab, lane = GEMM_DTYPES[dtype]
        peak = gpu.get(lane)
        sub = df[df.gemm_dtype == dtype].set_index(["m", "n", "k"])["latency"]
        comp, mem, nshape = [], [], []
        for m in M_LIST:
            c_vals, m_vals = [], []
            for n, k in LLM_SHAPES:
                lat = sub.get((m, n, k))
                if lat is None or not lat > 0:
                    continue
                t = lat / 1000.0  # table latency is in ms
                shapes_used.add((n, k))
                if peak:
                    c_vals.append(2.0 * m * n * k / t / peak)
                m_vals.append((n * k * wb + m * k * ab + m * n * 2.0) / t / gpu["mem_bw"])
            comp.append(_r(statistics.median(c_vals)) if c_vals else None)
            mem.append(_r(statistics.median(m_vals)) if m_vals else None)
            nshape.append(len(m_vals))
        entry = {"compute_peak_key": lane, "compute": comp, "memory": mem,
                 "weight_bytes": wb, "activation_bytes": ab}
        if len(set(nshape)) == 1:
            entry["shapes"] = nshape[0]
        else:
            entry["shapes_per_m"] = nshape
        if not peak:
            entry["note"] = f"no {lane} in the system yaml: compute efficiency not defined"
        out[dtype] = entry
    return out, sorted(shapes_used)


def context_attention(path: Path, spec: dict) -> dict:
    df = pd.read_parquet(path)
    df = df[(df.window_size == 0) & (df.batch_size == 1)]
    gpu, out = spec["gpu"], {}
    for (adt, kvdt), g in df.groupby(["attn_dtype", "kv_cache_dtype"]):
        lane = "fp8_tc_flops" if adt == "fp8" else "bfloat16_tc_flops"
        peak = gpu.get(lane)
        if not peak:
            continue
        idx = g.set_index(["isl", "num_heads", "num_key_value_heads", "head_dim"])["latency"]
        vals = []
        for s in CTX_ISL:
            effs = []
            for n, nkv, h in ATTN_HEADS:
                lat = idx.get((s, n, nkv, h))
                if lat is None or isinstance(lat, pd.Series) and lat.empty:
                    continue
                lat = float(lat.min()) if isinstance(lat, pd.Series) else float(lat)
                ops = 2.0 * s * s * n * h * 2.0 / 2.0  # aiconfigurator's causal count, batch 1
                effs.append(ops / (lat / 1000.0) / peak)
            vals.append(_r(statistics.median(effs)) if effs else None)
        if any(v is not None for v in vals):
            out[f"{adt}/kv_{kvdt}"] = {"compute_peak_key": lane, "compute": vals}
    return out


def generation_attention(path: Path, spec: dict) -> dict:
    df = pd.read_parquet(path)
    df = df[(df.window_size == 0) & (df.attn_dtype == "bfloat16")]
    df = df.assign(kv_len=df.isl + df.step)
    kv_lens = sorted(v for v in df.kv_len.unique() if v >= 128)
    bw, out = spec["gpu"]["mem_bw"], {"kv_len": [int(v) for v in kv_lens]}
    for kvdt, g in df.groupby("kv_cache_dtype"):
        kvb = 1.0 if kvdt in ("fp8", "int8") else 2.0
        idx = g.groupby(["batch_size", "kv_len", "num_heads", "num_key_value_heads", "head_dim"])["latency"].min()
        per_b = {}
        for b in GEN_BATCH:
            vals = []
            for s in kv_lens:
                effs = []
                for n, nkv, h in ATTN_HEADS:
                    lat = idx.get((b, s, n, nkv, h))
                    if lat is None:
                        continue
                    # aiconfigurator's generation byte count: q + KV read + output
                    mem = b * (n * h * 2.0 + 2.0 * nkv * s * h * kvb + n * h * 2.0)
                    effs.append(mem / (lat / 1000.0) / bw)
                vals.append(_r(statistics.median(effs)) if effs else None)
            per_b[f"batch_{b}"] = vals
        out[f"kv_{kvdt}"] = {"memory": per_b}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)

    import aiconfigurator_core

    pkg = Path(aiconfigurator_core.__file__).parent
    systems_dir = pkg / "systems"
    site = pkg.parent
    aic_version = importlib.metadata.version("aiconfigurator")
    core_version = importlib.metadata.version("aiconfigurator-core")
    meta = importlib.metadata.metadata("aiconfigurator-core")
    license_ = meta.get("License-Expression") or meta.get("License") or "unknown"
    aic_license = importlib.metadata.metadata("aiconfigurator").get("License-Expression") or "unknown"

    systems, files = {}, []
    for yml in sorted(systems_dir.glob("*.yaml")):
        spec = yaml.safe_load(yml.read_text())
        if not isinstance(spec, dict) or "gpu" not in spec or "data_dir" not in spec:
            continue
        data_dir = systems_dir / spec["data_dir"]
        ver = newest_version(data_dir, "gemm", "gemm_perf.parquet")
        if ver is None:
            continue
        gpu = spec["gpu"]
        gpath = data_dir / "gemm" / BACKEND / ver / "gemm_perf.parquet"
        gemm, shapes = gemm_table(gpath, spec)
        files.append(str(gpath.relative_to(site)))
        entry = {
            "backend_version": ver,
            "device": str(pd.read_parquet(gpath, columns=["device"]).device.iloc[0]),
            "peak": {k: gpu[k] for k in ("mem_bw", "bfloat16_tc_flops", "fp8_tc_flops", "int8_tc_flops",
                                         "fp4_tc_flops") if k in gpu},
            "system_yaml": str(yml.relative_to(site)),
            "empirical": {k: gpu[k] for k in ("mem_bw_empirical_scaling_factor",
                                              "mem_empirical_constant_latency") if k in gpu},
            "gemm": gemm,
        }
        aver = newest_version(data_dir, "attention", "context_attention_perf.parquet")
        if aver:
            apath = data_dir / "attention" / BACKEND / aver
            entry["attention_version"] = aver
            entry["context_attention"] = context_attention(apath / "context_attention_perf.parquet", spec)
            gp = apath / "generation_attention_perf.parquet"
            if gp.is_file():
                entry["generation_attention"] = generation_attention(gp, spec)
                files.append(str(gp.relative_to(site)))
            files.append(str((apath / "context_attention_perf.parquet").relative_to(site)))
        systems[yml.stem] = entry

    doc = {
        "schema_version": 1,
        "source": {
            "aiconfigurator": aic_version, "aiconfigurator_core": core_version,
            "license": f"aiconfigurator {aic_license}, aiconfigurator-core {license_} (NVIDIA)",
            "backend": BACKEND, "data_files": files,
        },
        "m": M_LIST,
        "gemm_shapes_nk": [list(s) for s in LLM_SHAPES],
        "attention_heads": [list(h) for h in ATTN_HEADS],
        "context_attention_isl": CTX_ISL,
        "definitions": {
            "gemm.compute": "2*M*N*K / latency / peak[compute_peak_key]; median over gemm_shapes_nk",
            "gemm.memory": "(N*K*weight_bytes + M*K*activation_bytes + M*N*2) / latency / peak.mem_bw",
            "context_attention.compute": "2*s*s*heads*head_dim (causal: 4*s^2*h*d/2), batch 1, no "
                                         "window, / latency / peak; median over attention_heads",
            "generation_attention.memory": "batch*(2*h*d*2 + 2*kv_heads*kv_len*d*kv_bytes) / latency / "
                                           "mem_bw; kv_len = isl + step of the table",
        },
        "aiconfigurator_factors": live_factors(systems),
        "systems": systems,
    }
    header = HEADER.format(aic=aic_version, core=core_version, license=license_)
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + body)
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(systems)} systems)", file=sys.stderr)
    return 0


HEADER = """\
# GENERATED FILE - do not edit by hand. Regenerate with:
#   bash scripts/setup_aic.sh && .venv-aic/bin/python scripts/extract_aic_efficiency.py
# From NVIDIA aiconfigurator {aic} / aiconfigurator-core {core} (PyPI), license {license}
# (Copyright NVIDIA CORPORATION & AFFILIATES; derived numbers from its measured operator tables:
# aiconfigurator_core/systems/data/<system>/{{gemm,attention}}/trtllm/<version>/*.parquet, listed in
# source.data_files; peaks from aiconfigurator_core/systems/<system>.yaml).
# Achieved fraction of the datasheet peak per GEMM dtype vs token count M (median over the
# representative LLM shapes), and attention efficiency vs sequence length. See docs/sizing.md,
# "Cross-checking with aiconfigurator". Measured points only, latency = min over repeated rows.
"""

# The small empirical factors aiconfigurator applies on top of its tables, and where they live.
# Values are read from the 0.12.0 wheel (system yamls, Python op signatures) except where "where"
# names the upstream Rust source (the wheel ships that compiled, _aiconfigurator_core.abi3.so).
AIC_FACTORS = {
    "mem_bw_empirical_scaling_factor": {
        "value": 0.8, "where": "aiconfigurator_core/systems/<system>.yaml gpu: (every bundled system)",
        "use": "memory-only ops: latency = bytes / (mem_bw * 0.8) + constant (upstream "
               "aic-core/rust/aiconfigurator-core/src/operators/attention.rs mem_op_latency_ms)"},
    "mem_empirical_constant_latency_s": {
        "value": 3.0e-6, "where": "aiconfigurator_core/systems/<system>.yaml gpu: (every bundled system)",
        "use": "added once per memory op (3 us) in the same formula"},
    "p2p_latency_s": {
        "value": 1.0e-5, "where": "aiconfigurator_core/systems/<system>.yaml node:",
        "use": "pipeline-parallel point-to-point latency"},
    "elementwise_empirical_bw_scaling_factor": {
        "value": 0.8, "where": "aiconfigurator_core._aiconfigurator_core.ElementWise.__text_signature__ (compiled)",
        "use": "norms, activations and other elementwise ops are bandwidth-bound at 0.8 of peak"},
    "embedding_empirical_bw_scaling_factor": {
        "value": 0.3, "where": "aiconfigurator_core._aiconfigurator_core.Embedding.__text_signature__ (compiled)",
        "use": "embedding lookup at 0.3 of peak bandwidth"},
    "prefill_latency_correction": {
        "value": 1.1, "where": "aiconfigurator/sdk/task_v2.py Task.prefill_latency_correction; "
                               "aiconfigurator/cli/api.py DEFAULT_PREFILL_LATENCY_CORRECTION_SCALE",
        "use": "disaggregated prefill worker latencies multiplied by 1.1 (not agg/static)"},
    "decode_latency_correction": {
        "value": 1.08, "where": "aiconfigurator/sdk/task_v2.py Task.decode_latency_correction",
        "use": "disaggregated decode worker latencies multiplied by 1.08"},
    "rate_match_degradation": {
        "value": {"prefill": 0.9, "decode": 0.92}, "where": "aiconfigurator/sdk/task_v2.py",
        "use": "disaggregated prefill/decode pool throughput derating when rate-matched"},
    "autoscale_ttft_correction_factor": {
        "value": 1.8, "where": "aiconfigurator/sdk/task_v2.py",
        "use": "TTFT pre-correction for queueing before the SLA filter (disagg)"},
    "trtllm_free_gpu_memory_fraction": {
        "value": 0.9, "where": "aiconfigurator_core/sdk/backends/trtllm_backend.py",
        "use": "share of free memory given to the KV cache (batch-size cap)"},
    "other_mem_bytes": {
        "value": 3758096384, "where": "aiconfigurator_core/systems/<system>.yaml misc.other_mem",
        "use": "3.5 GiB per GPU reserved besides weights/KV/activations (plus misc.nccl_mem by tp)"},
    "gemm_quant_util_level": {
        "value": {"bfloat16": 0.70, "int8_wo": 0.55, "int4_wo": 0.45, "fp8/sq": 0.45, "nvfp4": 0.30},
        "where": "upstream aic-core/rust/aiconfigurator-core/src/operators/gemm.rs GEMM_QUANT_UTIL_LEVEL "
                 "(mirror commit 095f58a, newer than 0.12.0; mirrors operations/gemm.py)",
        "use": "only as ratios e(query)/e(ref) when a GEMM dtype missing from the table is "
               "transferred from a measured one (HYBRID mode); not used for measured points"},
}


def live_factors(systems: dict) -> dict:
    """AIC_FACTORS with each value re-read from the installed package where it can be."""
    import copy
    import dataclasses
    import re

    f = copy.deepcopy(AIC_FACTORS)
    emp = {s: e.get("empirical", {}) for s, e in systems.items()}
    for key, yk in (("mem_bw_empirical_scaling_factor", "mem_bw_empirical_scaling_factor"),
                    ("mem_empirical_constant_latency_s", "mem_empirical_constant_latency")):
        vals = {v.get(yk) for v in emp.values()} - {None}
        if len(vals) == 1:
            f[key]["value"] = vals.pop()
        elif vals:
            f[key]["value"] = {s: v.get(yk) for s, v in emp.items()}
    try:
        import aiconfigurator_core._aiconfigurator_core as core

        for key, cls in (("elementwise_empirical_bw_scaling_factor", core.ElementWise),
                         ("embedding_empirical_bw_scaling_factor", core.Embedding)):
            m = re.search(r"empirical_bw_scaling_factor=([0-9.]+)", cls.__text_signature__ or "")
            if m:
                f[key]["value"] = float(m.group(1))
    except Exception:
        pass
    try:
        from aiconfigurator.sdk.task_v2 import Task

        d = {fl.name: fl.default for fl in dataclasses.fields(Task)}
        f["prefill_latency_correction"]["value"] = d["prefill_latency_correction"]
        f["decode_latency_correction"]["value"] = d["decode_latency_correction"]
        f["rate_match_degradation"]["value"] = {"prefill": d["rate_match_prefill_degradation"],
                                                "decode": d["rate_match_decode_degradation"]}
        f["autoscale_ttft_correction_factor"]["value"] = d["autoscale_ttft_correction_factor"]
    except Exception:
        pass
    try:
        from aiconfigurator_core.sdk.backends import trtllm_backend

        f["trtllm_free_gpu_memory_fraction"]["value"] = trtllm_backend.TRTLLM_DEFAULT_FREE_GPU_MEMORY_FRACTION
    except Exception:
        pass
    return f


if __name__ == "__main__":
    sys.exit(main())
