#!/usr/bin/env bash
# Create .venv-guidellm: the separate environment the guidellm load generator runs in (its
# transformers/datasets/sanic set is not .venv's; see requirements-guidellm.txt). Idempotent,
# like setup.sh. Only PyPI is needed; the benchmark gives it the bundle's own tokenizer, so no
# model hub. Used by
#   .venv/bin/python benchmarks/bench_serving_guidellm.py
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=.venv-guidellm
STAMP=$VENV/.rightsizer-installed
WANT=$(cat requirements-guidellm.txt constraints-guidellm.txt | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
# torch through pip first, for the machine's local CPU wheel (as in setup.sh), not CUDA's 5 GB
$VENV/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" "uv==0.13.8" \
    2> >(grep -v "^WARNING: Location 'file://" >&2)
$VENV/bin/uv pip install -q --python $VENV/bin/python -r requirements-guidellm.txt -c constraints-guidellm.txt
echo "$WANT" > "$STAMP"
echo "guidellm environment ready: $VENV ($($VENV/bin/python -c 'import importlib.metadata as m; print("guidellm", m.version("guidellm"), "torch", m.version("torch"), "transformers", m.version("transformers"))'))"
