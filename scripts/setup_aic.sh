#!/usr/bin/env bash
# Create .venv-aic: the separate environment NVIDIA's aiconfigurator runs in (it does not fit
# beside mlrun 1.12; see requirements-aic.txt). Idempotent, like setup.sh. Only PyPI is
# needed: the measured operator data ships inside the aiconfigurator-core wheel. Used by
#   .venv-aic/bin/python benchmarks/aic_estimate.py < rows.json
#   .venv-aic/bin/python scripts/extract_aic_efficiency.py
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=.venv-aic
STAMP=$VENV/.rightsizer-installed
WANT=$(cat requirements-aic.txt constraints-aic.txt | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
$VENV/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.8" \
    2> >(grep -v "^WARNING: Location 'file://" >&2)
$VENV/bin/uv pip install -q --python $VENV/bin/python -r requirements-aic.txt -c constraints-aic.txt
echo "$WANT" > "$STAMP"
echo "aiconfigurator environment ready: $VENV ($($VENV/bin/python -c 'import importlib.metadata as m; print("aiconfigurator", m.version("aiconfigurator"), "aiconfigurator-core", m.version("aiconfigurator-core"), "numpy", m.version("numpy"))'))"
