# Sourced by the setup_<tool>.sh scripts: one environment beside .venv for a tool that does not
# fit beside mlrun 1.12, pinned by requirements-<name>.txt and constraints-<name>.txt.
#   side_venv NAME LABEL PIP_FIRST PACKAGE...
# makes .venv-NAME (Python $PYTHON, default python3.11), idempotent through a stamp of the two
# pin files; PIP_FIRST is installed with pip before uv ("torch==2.13.0" takes the machine's local
# CPU wheel, as in setup.sh; "" for none); the PACKAGEs' versions are printed when it is ready.
side_venv() {
  local name=$1 label=$2 pip_first=$3
  shift 3
  local venv=.venv-$name req=requirements-$name.txt cons=constraints-$name.txt
  local stamp=$venv/.rightsizer-installed want
  want=$(cat "$req" "$cons" | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3.11}" -m venv "$venv"
  # shellcheck disable=SC2086  # pip_first is empty or one requirement
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $pip_first "uv==0.13.8" \
      2> >(grep -v "^WARNING: Location 'file://" >&2)
  "$venv/bin/uv" pip install -q --python "$venv/bin/python" -r "$req" -c "$cons"
  echo "$want" > "$stamp"
  local versions
  versions=$("$venv/bin/python" -c 'import sys, importlib.metadata as m; print(" ".join(f"{p} {m.version(p)}" for p in sys.argv[1:]))' "$@")
  echo "$label environment ready: $venv ($versions)"
}
