#!/usr/bin/env bash
# Create .venv-aic: the separate environment NVIDIA's aiconfigurator runs in (it does not fit
# beside mlrun 1.12; see requirements-aic.txt). Idempotent, like setup.sh. Only PyPI is
# needed: the measured operator data ships inside the aiconfigurator-core wheel. Used by
#   .venv-aic/bin/python benchmarks/aic_estimate.py < rows.json
#   .venv-aic/bin/python scripts/extract_aic_efficiency.py
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/side_venv.sh
side_venv aic aiconfigurator "" aiconfigurator aiconfigurator-core numpy
