#!/usr/bin/env bash
# install-deps.sh — Installs the Debian 12 packages uffd-migrate builds, tests and benchmarks with.
# Idempotent: does nothing (and touches no package list) when everything is installed.
set -euo pipefail

PACKAGES=(
  meson ninja-build g++ pkg-config python3   # build
  ccache                                     # rebuilds of the same sources (another clone too)
  libcap-dev                                 # capabilities: the privilege gate
  liburing-dev                               # io_uring: probe today, data path next
  libboost-dev                               # Boost.Asio: connection set-up, handshakes, timers
  libcli11-dev nlohmann-json3-dev            # CLI arguments and JSON reports
  libxxhash-dev                              # per-page hashes the destination verifies
  liblz4-dev libzstd-dev                     # compressed PAGES runs (lz4 fast, zstd levels)
  libgtest-dev libgmock-dev                  # tests
  libbenchmark-dev                           # benchmarks
  clang-format                               # the format check in the test command
  clang-16 libclang-rt-16-dev                # libFuzzer targets (clang 16 compiles <expected>)
  iproute2                                   # network namespaces for "two hosts" tests
  openssl                                    # the TLS tests make a throwaway CA and certificates
  gnuplot-nox                                # the benchmark runner's plots (PNG and SVG)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing ${missing[*]}; run as root (or install them) and retry" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
