#!/usr/bin/env bash
# The prepared GPU check: one run on a lent CUDA machine (H100 or H200), within 8 minutes.
# Its log goes to $OUT; copy what it shows into docs/gpu-runs/<date>-<gpu>-*.log.
#
# Before the run, on the CPU machine (the GPU image has torch, transformers, peft and
# accelerate, but no MLRun and no network):
#   - the wheels it lacks, in .whl/ (bitsandbytes, torchao for Python 3.12):
#       python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux_2_24_x86_64 -d .whl bitsandbytes==0.50.2 torchao==0.18.0
#   - the demo's candidates, built once here (minutes of CPU there otherwise):
#       mkdir -p .cache && cp -r "${RIGHTSIZER_CACHE:-$HOME/.cache/rightsizer}"/demo-* .cache/
#   and carry both: run(command="bash scripts/gpu_checks.sh", carry=[".whl", ".cache"]).
#
# What it runs (each part in its own time box; one failing part does not stop the others):
#   1. the environment: GPU, capability, versions, and the runtime target it resolves
#   2. the pipeline's GPU steps on CUDA (scripts/gpu_check_pipeline.py: select, quantize,
#      evaluate chosen and baseline, calibration from their latencies, sizing) on the demo app
#   3. the model zoo on CUDA: load/score/generate and int8/int4 quantization per family (tests/test_zoo.py)
#   4. quantization backends and QLoRA on CUDA (the earlier checks)
#   5. the serving engine on CUDA (scripts/gpu_check_engine.py: continuous batching at concurrency
#      1/8/32/64, p95 TTFT, TPOT, output tokens/s, the sizing estimate for the same model beside);
#      over HTTP too (bench_serving.py) where MLRun is installed
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
if [ -d .cache ] && ls -d .cache/demo-* >/dev/null 2>&1; then export RIGHTSIZER_CACHE=$PWD/.cache; fi
start=$(date +%s)
part() { echo "=== $1 ($(( $(date +%s) - start )) s in)" | tee -a "$OUT/parts.txt"; }

part "1 environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee "$OUT/nvidia-smi.txt"
python3 - <<'EOF' 2>&1 | tee "$OUT/versions.txt"
import json, torch, transformers, peft
from rightsizer.runtime.target import resolve_target
print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
print("runtime target", json.dumps(resolve_target().to_dict()))
EOF

part "2 pipeline steps on CUDA"
timeout 180 python3 scripts/gpu_check_pipeline.py --out "$OUT" --tasks ticket_routing,order_extraction \
  2>&1 | grep -v "it/s" | tee "$OUT/pipeline.log" | tail -20

part "3 model zoo on CUDA"
timeout 60 python3 -m pytest -q -p no:cacheprovider -rA tests/test_zoo.py -k "loads_scores or quantizes" \
  2>&1 | tee "$OUT/zoo.log" | tail -15

part "4 quantization backends and QLoRA"
timeout 90 python3 scripts/gpu_check_quantize.py --out "$OUT" 2>&1 | tee "$OUT/quantize.log" | tail -30
timeout 45 python3 -m pytest -q -p no:cacheprovider -rA tests/test_finetune_inprocess.py -k "bnb or qlora or nf4" \
  2>&1 | tee "$OUT/finetune_gpu.log" | tail -15

part "5 serving engine on CUDA"
timeout 90 python3 scripts/gpu_check_engine.py --levels 1,8,32,64 --requests 64 --out "$OUT" \
  2>&1 | grep -v "it/s" | tee "$OUT/engine.log" | tail -12
if python3 -c "import mlrun" 2>/dev/null; then  # the same through HTTP, where MLRun is there
  timeout 120 python3 benchmarks/bench_serving.py --requests 64 --levels 1,8,32,64 --json "$OUT/serving.json" \
    2>&1 | tee "$OUT/serving.log" | tail -25
fi
part "done"
