#!/usr/bin/env bash
# Create .venv-gptq: the separate environment the GPTQ step runs gptqmodel in (it does not
# fit beside mlrun 1.12; see requirements-gptq.txt). Idempotent, like setup.sh. About a
# minute and 1.4 GB on a new machine; the tests and a local quantize-gptq run use it through
# RIGHTSIZER_GPTQ_PYTHON=.venv-gptq/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/side_venv.sh
side_venv gptq GPTQ "torch==2.13.0" gptqmodel torch numpy
