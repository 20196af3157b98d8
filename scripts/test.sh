#!/usr/bin/env bash
# Set up and run the whole test suite (unit, integration, serving, spec, notebook).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
