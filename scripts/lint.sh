#!/usr/bin/env bash
# The checks that run before the tests (scripts/test.sh, so .ci/run): lint rules and the
# import contracts, both configured in pyproject.toml. Needs .venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check rightsizer functions pipelines scripts benchmarks tests project_setup.py
.venv/bin/lint-imports --no-cache
