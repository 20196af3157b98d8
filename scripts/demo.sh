#!/usr/bin/env bash
# Set up and run the offline demo of size_and_deploy; prints the decision summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/run_demo.py "$@"
