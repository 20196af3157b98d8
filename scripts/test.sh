#!/usr/bin/env bash
# Set up, check (ruff, import contracts) and run the whole test suite (unit, integration,
# serving, spec, notebook).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint rules and import contracts first (pyproject.toml): a broken layer fails in seconds.
bash scripts/lint.sh
# The GPTQ step's own environment (gptqmodel does not fit beside mlrun): its tests run GPTQ
# for real on the CPU, and fail rather than skip here when that environment is missing.
bash scripts/setup_gptq.sh
export RIGHTSIZER_GPTQ_PYTHON="$PWD/.venv-gptq/bin/python" RIGHTSIZER_REQUIRE_GPTQ=1
# Progress bars are under test (tests/test_finetune_inprocess.py): a TQDM_DISABLE in the
# caller's shell would turn them off before any test runs (tqdm reads it at import).
unset TQDM_DISABLE
exec .venv/bin/python -m pytest "$@"
