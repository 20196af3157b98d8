#!/usr/bin/env bash
# The prepared GPU check (one run on a lent CUDA machine; see README "GPU checks").
# Needs the wheels the GPU image lacks in .whl/ (bitsandbytes, torchao for Python 3.12):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_24_x86_64 -d .whl bitsandbytes==0.50.2 torchao==0.18.0
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee "$OUT/versions.txt"
timeout 330 python3 scripts/gpu_check_quantize.py --out "$OUT" --pytest 2>&1 | tee "$OUT/quantize.log" | tail -60
timeout 150 python3 -m pytest -q -p no:cacheprovider -rA tests/test_finetune_inprocess.py -k "bnb or qlora or nf4" 2>&1 | tee "$OUT/finetune_gpu.log" | tail -25
