#!/usr/bin/env bash
# build.sh — Configures (once) and builds one build directory: release, asan or tsan.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-release}
dir=build/$flavour
case $flavour in
  release) options=(-Dbuildtype=release) ;;
  asan) options=(-Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false -Dbenchmarks=false) ;;
  tsan) options=(-Dbuildtype=debugoptimized -Db_sanitize=thread -Dbenchmarks=false) ;;
  *) echo "build.sh: unknown flavour '$flavour' (release, asan, tsan)" >&2; exit 2 ;;
esac

if [[ ! -f $dir/build.ninja ]]; then
  meson setup "$dir" "${options[@]}" >/dev/null
fi
echo "build: $flavour ($dir)"
ninja -C "$dir"
