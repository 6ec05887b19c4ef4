#!/usr/bin/env bash
# fuzz.sh — Builds the libFuzzer targets with clang 16 (ASan+UBSan) and runs each one for
# SECONDS (default 30) on a scratch copy of its committed seed corpus in fuzz/corpus/.
# A crash leaves its input in build/fuzz/crashes/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

# fuzz.sh --build-only: build the targets and stop (scripts/test.sh builds them while tests run).
build_only=0
if [[ ${1:-} == --build-only ]]; then
  build_only=1
  shift
fi
seconds=${1:-30}
dir=build/fuzz
if [[ ! -f $dir/build.ninja ]]; then
  # libstdc++ 12 hides std::expected unless __cpp_concepts >= 202002L; clang 16 implements
  # what <expected> needs (P0848) but still reports 201907L.
  CXX=clang++-16 CXXFLAGS="-U__cpp_concepts -D__cpp_concepts=202002L -Wno-builtin-macro-redefined" \
    meson setup "$dir" -Dfuzzing=true -Dtests=false -Dbenchmarks=false \
      -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized >/dev/null
fi
echo "fuzz: building ($dir)"
ninja -C "$dir"
((build_only)) && exit 0
mkdir -p "$dir/crashes"
for target in frame_fuzz handshake_fuzz wire_fuzz; do
  seeds=fuzz/corpus/${target%_fuzz}
  scratch=$(mktemp -d)
  echo "fuzz: $target for ${seconds}s from $seeds"
  if ! "$dir/fuzz/$target" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$dir/crashes/$target-" "$scratch" "$seeds" \
       2> "$dir/$target.log"; then
    tail -40 "$dir/$target.log"
    rm -rf "$scratch"
    echo "fuzz: $target FAILED (input in $dir/crashes/)"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::new_units_added" "$dir/$target.log" | sed "s/^/fuzz: $target /"
  rm -rf "$scratch"
done
echo "fuzz: no crash"
