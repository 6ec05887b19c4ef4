#!/usr/bin/env bash
# bench.sh — Installs, builds and runs the end-to-end benchmark runner (bench/run.py): floors
# first, then real migrations through the matrix. Arguments go to bench/run.py (--quick, --out,
# --netns, --repetitions N, --publish).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh release
exec python3 bench/run.py "$@"
