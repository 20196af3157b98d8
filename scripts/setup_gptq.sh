#!/usr/bin/env bash
# Create .venv-gptq: the separate environment the GPTQ step runs gptqmodel in (it does not
# fit beside mlrun 1.12; see requirements-gptq.txt). Idempotent, like setup.sh. About a
# minute and 1.4 GB on a new machine; the tests and a local quantize-gptq run use it through
# RIGHTSIZER_GPTQ_PYTHON=.venv-gptq/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=.venv-gptq
STAMP=$VENV/.rightsizer-installed
WANT=$(cat requirements-gptq.txt constraints-gptq.txt | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
# torch through pip first, for the machine's local CPU wheel (as in setup.sh)
$VENV/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" "uv==0.13.8" \
    2> >(grep -v "^WARNING: Location 'file://" >&2)
$VENV/bin/uv pip install -q --python $VENV/bin/python -r requirements-gptq.txt -c constraints-gptq.txt
echo "$WANT" > "$STAMP"
echo "GPTQ environment ready: $VENV ($($VENV/bin/python -c 'import importlib.metadata as m; print("gptqmodel", m.version("gptqmodel"), "torch", m.version("torch"), "numpy", m.version("numpy"))'))"
