#!/usr/bin/env bash
# Create .venv and install everything the project needs. Idempotent: a second run with the
# same requirement files does nothing. See README "Dependencies" for why it is done this way.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
STAMP=.venv/.rightsizer-installed
WANT=$(cat requirements.txt constraints.txt overrides.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first, through pip: pip takes the CPU wheel from the machine's local wheel folder
# where there is one (find-links), which is ~10x smaller than PyPI's default CUDA build.
# (grep drops pip's notes about this machine's configured local index folders)
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" "uv==0.13.8" \
    2> >(grep -v "^WARNING: Location 'file://" >&2)
# Everything else with uv: it resolves the whole set in seconds and honours overrides.txt
# (kfp 1.8's metadata-only pydantic<2 pin vs deepspeed's pydantic>=2); torch stays as is.
.venv/bin/uv pip install -q --python .venv/bin/python -r requirements.txt \
    -c constraints.txt --override overrides.txt
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
echo "$WANT" > "$STAMP"
echo "environment ready: .venv ($(.venv/bin/python -c 'import torch, transformers, mlrun; print("torch", torch.__version__, "transformers", transformers.__version__, "mlrun", mlrun.__version__)'))"
