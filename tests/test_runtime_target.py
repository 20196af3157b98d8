"""The runtime target (rightsizer.runtime.target) resolved from device descriptions: GPUs this
machine does not have are described, not patched into torch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rightsizer.calibrate import catalog_gpu
from rightsizer.runtime.target import DeviceInfo, describe_device, dtype_name, resolve_target, target_for

GIB = 2**30


@pytest.mark.parametrize("name, cc, dtype, catalog", [
    ("NVIDIA H100 80GB HBM3", (9, 0), "bfloat16", "H100-SXM"),
    ("NVIDIA H200", (9, 0), "bfloat16", "H200"),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bfloat16", "A100-40GB"),
    ("NVIDIA L4", (8, 9), "bfloat16", "L4"),
    ("Tesla T4", (7, 5), "float16", "T4"),
    ("Tesla V100-SXM2-16GB", (7, 0), "float16", None),  # not in the catalog: named as the GPU says
])
def test_a_gpu_gets_bf16_where_it_has_it_else_fp16(name, cc, dtype, catalog):
    t = target_for(DeviceInfo("cuda", name, cc, 80 * GIB))
    assert (t.device, t.dtype, t.compute_dtype) == ("cuda:0", dtype, dtype)
    assert t.catalog_name == catalog and t.measured_on == (catalog or name)
    assert t.torch_dtype == getattr(torch, dtype) and f"{cc[0]}.{cc[1]}" in t.reason


def test_a_mig_slice_is_named_as_the_catalog_names_it():
    t = target_for(DeviceInfo("cuda", "NVIDIA A100-SXM4-40GB MIG 1g.10gb", (8, 0), 10 * GIB, index=0))
    assert t.mig == "1g.10gb" and t.catalog_name == "A100-40GB MIG 1g.10gb" and t.dtype == "bfloat16"
    assert catalog_gpu("NVIDIA H200 MIG 1g.18gb") == "H200 MIG 1g.18gb"
    assert catalog_gpu("NVIDIA A100-SXM4-40GB MIG 9g.99gb") is None  # a profile the catalog does not list


@pytest.mark.parametrize("bf16_units, compute", [(True, "bfloat16"), (False, "float32")])
def test_a_cpu_keeps_fp32_weights_and_uses_bf16_compute_only_with_bf16_units(bf16_units, compute):
    t = target_for(DeviceInfo("cpu", "AMD EPYC 7B13", cpu_bf16=bf16_units))
    assert (t.device, t.dtype, t.compute_dtype, t.catalog_name) == ("cpu", "float32", compute, None)
    assert t.measured_on == "AMD EPYC 7B13" and t.precision == "fp32"


def test_the_dtype_can_be_asked_for_and_a_bad_one_is_named():
    t = target_for(DeviceInfo("cpu", "x"), dtype="bf16")
    assert t.dtype == "bfloat16" and "as asked" in t.reason
    assert dtype_name(torch.float16) == "float16"
    with pytest.raises(ValueError, match="dtype: 'int3'; expected one of"):
        target_for(DeviceInfo("cpu", "x"), dtype="int3")


def test_this_machine_resolves_to_what_it_is():
    info = describe_device()
    t = resolve_target()
    if torch.cuda.is_available():
        assert info.kind == "cuda" and t.is_cuda
    else:
        assert info.kind == "cpu" and t.device == "cpu" and t.dtype == "float32"
        flags = open("/proc/cpuinfo").read()
        avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        assert info.cpu_bf16 == (("avx512_bf16" in flags or "amx_bf16" in flags) and avx512)
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"):
        describe_device("tpu")


def test_portable_kernels_count_as_a_cpu_without_bf16_units():
    """ATEN_CPU_CAPABILITY=default, the stand-in for another CPU, also takes the fp32 compute
    path that a CPU without bf16 units takes (CI's AVX2 machine did; this one did not)."""
    code = "from rightsizer.runtime.target import resolve_target; print(resolve_target().compute_dtype)"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "float32"
