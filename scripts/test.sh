#!/usr/bin/env bash
# test.sh — Installs, builds and runs every test: release, address+undefined sanitizers,
# thread sanitizer, a bounded libFuzzer run, and the clang-format check. Ends with one line:
# "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || exit 1

# hugetlbfs tests need free 2 MiB pages; reserve a few if none are free (root only).
free_huge=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if [[ ${free_huge:-0} -lt 16 && -w /proc/sys/vm/nr_hugepages ]]; then
  total=$(cat /proc/sys/vm/nr_hugepages)
  echo $((total + 32)) > /proc/sys/vm/nr_hugepages || true
  echo "test: reserved huge pages: vm.nr_hugepages=$(cat /proc/sys/vm/nr_hugepages)"
fi

status=0
for flavour in release asan tsan; do
  if ! bash scripts/build.sh "$flavour"; then
    echo "test: $flavour build failed"
    status=1
    continue
  fi
  echo "test: running the $flavour suite"
  # The long-test group (a 16 GiB guest), the install test (what people install is a release
  # build; a sanitized library cannot be loaded by a plain program) and the chaos suite (2 GiB
  # migrations broken dozens of times, a minute's soak) run in release only; chaos_small runs
  # under the sanitizers too.
  suites=()
  [[ $flavour == release ]] || suites=(--no-suite long --no-suite install --no-suite chaos)
  # Sanitizers: fail on the first report; SIGBUS tests restore the default action themselves.
  ASAN_OPTIONS=abort_on_error=0:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    meson test -C "build/$flavour" --print-errorlogs --num-processes 2 "${suites[@]}" || status=1
done

echo "test: clang-format check"
mapfile -t sources < <(git ls-files '*.cpp' '*.hpp' '*.h' '*.c' 2>/dev/null || find . -name '*.[ch]pp' -not -path './build/*')
if ! clang-format --dry-run --Werror "${sources[@]}"; then
  echo "test: clang-format found unformatted files (run: clang-format -i <file>)"
  status=1
  format_failed=1
fi

echo "test: fuzzing the frame decoder and the handshake (bounded)"
if bash scripts/fuzz.sh "${UFFDM_FUZZ_SECONDS:-30}"; then
  fuzz_result=(--extra-pass fuzz)
else
  fuzz_result=(--extra-failure fuzz)
  status=1
fi

python3 scripts/test_summary.py build/release build/asan build/tsan "${fuzz_result[@]}" \
  ${format_failed:+--extra-failure clang-format} || status=1
exit $status
