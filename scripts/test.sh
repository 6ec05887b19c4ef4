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

# While one tree's tests run, the next tree compiles at idle priority (SCHED_IDLE and nice 19):
# it takes only the CPU time the tests leave (they wait on sockets, timeouts and other
# processes much of the time), and a runnable test always goes first, so their timing is as
# if it were alone. Its output goes to build/FLAVOUR.build.log.
idle() { chrt --idle 0 nice -n 19 "$@"; }
start_build() {  # flavour -> the background build's pid in $building
  mkdir -p build
  idle bash scripts/build.sh "$1" > "build/$1.build.log" 2>&1 &
  building=$!
}
finish_build() {  # flavour: waits for its background build; non-zero (and its log) on failure
  if wait "$building"; then
    tail -n 1 "build/$1.build.log"
    return 0
  fi
  tail -n 40 "build/$1.build.log"
  echo "test: $1 build failed"
  return 1
}

status=0
flavours=(release asan tsan)
bash scripts/build.sh release || { echo "test: release build failed"; status=1; }
built=$((status == 0))
for i in "${!flavours[@]}"; do
  flavour=${flavours[$i]}
  next=${flavours[$((i + 1))]:-fuzz}
  if [[ $next == fuzz ]]; then
    idle bash scripts/fuzz.sh --build-only > build/fuzz.build.log 2>&1 &
    building=$!
  else
    start_build "$next"
  fi
  if ((built)); then
    echo "test: running the $flavour suite"
    # The long-test group (a 16 GiB guest), the install test (what people install is a release
    # build; a sanitized library cannot be loaded by a plain program) and the chaos suite (2 GiB
    # migrations broken dozens of times, a minute's soak) run in release only; chaos_small runs
    # under the sanitizers too.
    suites=()
    [[ $flavour == release ]] || suites=(--no-suite long --no-suite install --no-suite chaos)
    # Sanitizers: fail on the first report; SIGBUS tests restore the default action themselves.
    ASAN_OPTIONS=abort_on_error=0:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp \
      meson test -C "build/$flavour" --print-errorlogs --num-processes 2 "${suites[@]}" || status=1
  fi
  built=1
  finish_build "$next" || { built=0; status=1; }
done
fuzz_built=$built

echo "test: clang-format check"
mapfile -t sources < <(git ls-files '*.cpp' '*.hpp' '*.h' '*.c' 2>/dev/null || find . -name '*.[ch]pp' -not -path './build/*')
if ! clang-format --dry-run --Werror "${sources[@]}"; then
  echo "test: clang-format found unformatted files (run: clang-format -i <file>)"
  status=1
  format_failed=1
fi

echo "test: fuzzing the frame decoder, the handshake and the migration messages (bounded)"
if ((fuzz_built)) && bash scripts/fuzz.sh "${UFFDM_FUZZ_SECONDS:-30}"; then
  fuzz_result=(--extra-pass fuzz)
else
  fuzz_result=(--extra-failure fuzz)
  status=1
fi

python3 scripts/test_summary.py build/release build/asan build/tsan "${fuzz_result[@]}" \
  ${format_failed:+--extra-failure clang-format} || status=1
exit $status
