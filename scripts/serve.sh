#!/usr/bin/env bash
# Serve the latest size_and_deploy run's task models over real HTTP (the serving graph Nuclio
# would run, behind a local aiohttp listener): V2 and OpenAI-compatible routes. Ctrl-C stops.
# Usage: bash scripts/serve.sh [--port 8080] [--host 127.0.0.1] [--artifacts DIR] [--engine JSON]
#        [--traffic-log PATH [--traffic-sample SHARE]]
#        [--api-key KEY ...] [--body-timeout SECONDS]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# no cd: a relative --artifacts is the caller's
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# glibc raises its mmap threshold after freeing a large block, and then keeps the memory of every
# later large request body; a fixed threshold gives it back (benchmarks/bench_serving_bodies.py)
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-1048576}"
exec "$ROOT/.venv/bin/python" -m functions.serving_http "$@"
