#!/usr/bin/env bash
# install_test.sh — `meson install` into a scratch DESTDIR, then builds the C example against the
# installed header, library and pkg-config file, as an embedding VMM would.
set -euo pipefail
build=$1
source=$2
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT

meson install -C "$build" --destdir "$dest" --no-rebuild >/dev/null
for file in uffd-migrate uffdm.h uffdm.hpp error.hpp report.hpp uffdm.pc; do
  if [[ -z $(find "$dest" -name "$file") ]]; then
    echo "install: $file was not installed"
    exit 1
  fi
done
library=$(find "$dest" -name 'libuffdm.so.*' -type f | head -n 1)
pc=$(find "$dest" -name uffdm.pc)
if [[ -z $library ]]; then
  echo "install: libuffdm.so was not installed"
  exit 1
fi
# Only uffdm_* C symbols and the public C++ API are exported.
if nm -D --defined-only "$library" | awk '{print $3}' | grep -v -E '^(uffdm_|_Z.*5uffdm|UFFDM_)' | grep -q .; then
  echo "install: libuffdm.so exports symbols outside its API:"
  nm -D --defined-only "$library" | awk '{print $3}' | grep -v -E '^(uffdm_|_Z.*5uffdm|UFFDM_)' | head
  exit 1
fi
# The prefix the files landed under inside DESTDIR (PREFIX/include/uffdm/uffdm.h).
prefix=$(dirname "$(dirname "$(dirname "$(find "$dest" -name uffdm.h)")")")
flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --define-variable=prefix="$prefix" --cflags --libs uffdm)
# shellcheck disable=SC2086
cc -std=c11 -Wall -Wextra -Werror "$source/examples/tiny_vmm.c" $flags -lpthread -o "$dest/tiny_vmm"
set +e
LD_LIBRARY_PATH=$(dirname "$library") "$dest/tiny_vmm" >/dev/null 2>&1
status=$?
set -e
if [[ $status -ne 2 ]]; then  # usage: it linked, loaded and ran
  echo "install: the example built against the installed library exited $status, not 2"
  exit 1
fi
# A C++ embedder: uffdm::Errc compares equal to the codes the shared library makes (one error
# category, exported), with nothing but the installed headers and library.
# shellcheck disable=SC2086
c++ -std=c++23 -Wall -Wextra -Werror "$source/tests/install_errors.cpp" $flags -o "$dest/install_errors"
if ! LD_LIBRARY_PATH=$(dirname "$library") "$dest/install_errors"; then
  echo "install: an Errc made by libuffdm does not compare equal in a program linked against it"
  exit 1
fi
echo "install: uffd-migrate, libuffdm, uffdm.h/.hpp and uffdm.pc installed; the C example and a C++ program build against them"
