#!/usr/bin/env bash
# demo.sh — Installs, builds and runs the main job. Until the migration exists, that is
# `uffd-migrate check`: what this host allows. Arguments go to uffd-migrate (default: check).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/build.sh release
if (($# == 0)); then
  set -- check
fi
exec build/release/cli/uffd-migrate "$@"
