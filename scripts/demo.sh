#!/usr/bin/env bash
# demo.sh — Installs, builds and runs the main job: a real postcopy migration between two
# processes on this host (`uffd-migrate demo`). Arguments go to uffd-migrate (default: demo).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh release
if (($# == 0)); then
  set -- demo
fi
exec build/release/cli/uffd-migrate "$@"
