#!/usr/bin/env bash
# Create .venv-guidellm: the separate environment the guidellm load generator runs in (its
# transformers/datasets/sanic set is not .venv's; see requirements-guidellm.txt). Idempotent,
# like setup.sh. Only PyPI is needed; the benchmark gives it the bundle's own tokenizer, so no
# model hub. Used by
#   .venv/bin/python benchmarks/bench_serving_guidellm.py
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/side_venv.sh
side_venv guidellm guidellm "torch==2.13.0" guidellm torch transformers
