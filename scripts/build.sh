#!/usr/bin/env bash
# build.sh — Configures (once) and builds one build directory: release, asan or tsan.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:-release}
dir=build/$flavour
# The sanitizer trees are built for finding bugs, not for speed: -O1 with line tables (-g1: file
# and line in every report) instead of -O2 -g, and each folder compiled as one unit (unity),
# which shares Asio's, CLI11's and googletest's instantiations between a folder's files. Together
# they cut those trees' compile time by about two thirds (BENCHMARKS.md, "CI"). Assertions stay
# on (b_ndebug=false: meson would drop them with debug=false). The release tree stays one unit
# per file, so a missing include still fails there.
sanitizer_tree=(-Dbuildtype=plain -Doptimization=1 -Ddebug=false -Db_ndebug=false -Dc_args=-g1 -Dcpp_args=-g1
                -Dunity=on -Dunity_size=8 -Dbenchmarks=false)
case $flavour in
  release) options=(-Dbuildtype=release) ;;
  asan) options=("${sanitizer_tree[@]}" -Db_sanitize=address,undefined -Db_lundef=false) ;;
  tsan) options=("${sanitizer_tree[@]}" -Db_sanitize=thread) ;;
  *) echo "build.sh: unknown flavour '$flavour' (release, asan, tsan)" >&2; exit 2 ;;
esac

# meson uses ccache when it is installed. Paths relative to the checkout, so that another clone
# of the same commit on this machine (CI's) finds what this one compiled.
export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=true

if [[ ! -f $dir/build.ninja ]]; then
  meson setup "$dir" "${options[@]}" >/dev/null
fi
echo "build: $flavour ($dir)"
ninja -C "$dir"
