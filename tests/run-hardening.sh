#!/usr/bin/env bash
# Hardening checks (docs/reliability.md), called from .ci/run:
#   (a) ASan + UBSan build (gcc) running the unit suite (and the gst suite
#       when there is one, and two ehat-remaster tests: a whole job and the
#       error paths), failing on any sanitizer report;
#   (b) test-loader (and test-ehatsr when built) under valgrind memcheck;
#   (c) with clang-14 and libFuzzer: fuzz-loader and fuzz-tiler, each for
#       FUZZ_SECONDS on a copy of its seed corpus, failing on any crash;
#   (d) when nvcc is there: the CUDA backend and its kernels on the emulated
#       device (kernels/emu) built with ASan + UBSan, running the CUDA suite:
#       a kernel that reads or writes past its buffer is a heap-buffer-
#       overflow (compute-sanitizer's memcheck, on the CPU).
# Budget: ~15 min on 2 cores.  Environment knobs:
#   HARDENING_DIR   build dirs and logs          (build-hardening)
#   FUZZ_SECONDS    time per fuzz target         (60)
#   FUZZ_CC         clang for the fuzzers        (clang-14)
#   SKIP_ASAN=1 SKIP_VALGRIND=1 SKIP_FUZZ=1 SKIP_CUDA_EMU=1   leave a part out
set -uo pipefail
cd "$(dirname "$0")/.."
src=$PWD
out=${HARDENING_DIR:-build-hardening}
mkdir -p "$out"
out=$(cd "$out" && pwd)
fuzz_seconds=${FUZZ_SECONDS:-60}
fuzz_cc=${FUZZ_CC:-clang-14}
jobs=${HARDENING_JOBS:-2}

declare -a summary=()
status=0
note() { summary+=("$1"); echo "== $1"; }
fail() { status=1; note "FAIL: $1"; }

# Sanitizer settings shared by (a) and (c).  LSan stays on; the suppressions
# cover one-time GLib/GObject/GStreamer type and plugin registrations only.
lsan_supp=$src/tests/lsan.supp
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1
export LSAN_OPTIONS=suppressions=$lsan_supp:print_suppressions=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export OMP_WAIT_POLICY=passive
# the gst-check suite: load the (instrumented) plugin in the test process,
# not in the uninstrumented gst-plugin-scanner
export GST_REGISTRY_FORK=no

setup() {     # setup DIR ARGS...: configure (or reconfigure) a build dir
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1
  else
    rm -rf "$dir"
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1
  fi || { tail -20 "$dir.setup.log"; return 1; }
}

# ---------------------------------------------------------------- (a) ASan
if [ "${SKIP_ASAN:-0}" != 1 ]; then
  t0=$SECONDS
  asan=$out/asan
  if CC=${ASAN_CC:-gcc} setup "$asan" -Db_sanitize=address,undefined \
        -Db_lundef=false -Dbuildtype=debugoptimized -Dcuda=disabled \
        -Dfuzzing=false \
      && ninja -C "$asan" -j"$jobs" >"$asan.build.log" 2>&1; then
    suites=(unit)
    # the gst suite, when the tree has one
    if meson introspect --tests "$asan" | grep -qE '"gst-ehatsr:gst"|"gst"'; then
      suites+=(gst)
    fi
    for s in "${suites[@]}"; do
      if meson test -C "$asan" --suite "$s" --print-errorlogs \
          --num-processes "$jobs" --timeout-multiplier 3 \
          >"$asan.test-$s.log" 2>&1 \
          && ! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' \
                "$asan/meson-logs/testlog.txt"; then
        n=$(grep -cE '^ *[0-9]+/[0-9]+ .* OK ' "$asan.test-$s.log")
        note "asan+ubsan: suite $s: $n tests passed, no reports"
      else
        tail -60 "$asan.test-$s.log"
        grep -E -A12 'ERROR: (Address|Leak)Sanitizer|runtime error:' \
            "$asan/meson-logs/testlog.txt" | head -80
        fail "asan+ubsan: suite $s (log: $asan.test-$s.log)"
      fi
    done
    # ehat-remaster (driver, worker and join processes, all ASan builds):
    # one whole job and every error path.  Not the whole suite: the
    # network runs at ~1 frame/s under ASan.  The slow unwinder, because
    # the fast one stops in GLib (no frame pointers) before the frames the
    # suppressions name.  One `-p` per meson test: GLib's TAP plan is
    # wrong with several.  LSan's own tracer, which stops a process's
    # threads for the leak check, once crashed at a worker's exit ("Tracer
    # caught signal 11 ... LeakSanitizer has encountered a fatal error",
    # no report): that alone, a sanitizer failure and not a finding, is
    # tried once more.  So is, once, an ehat-remaster process killed by a
    # signal with no sanitizer report (CI saw one in /remaster/errors on
    # 2026-12-08 that no rerun here reproduced in 30 ASan and 600 plain
    # runs; the part of the log CI printed did not show the process's
    # stderr, so the cause is not known).  The summary now names the
    # signal, the case and that stderr ($asan.test-remaster.first.log
    # keeps the whole log).
    # A crash that repeats, or any report, fails; the main test run,
    # without retries, runs the same cases.
    if meson introspect --tests "$asan" | grep -q '"name": "remaster"'; then
      for t in /remaster/single /remaster/errors; do
        for attempt in 1 2; do
          ASAN_OPTIONS=$ASAN_OPTIONS:fast_unwind_on_malloc=0 \
            meson test -C "$asan" remaster --print-errorlogs \
            --timeout-multiplier 3 --test-args "-p $t" \
            >"$asan.test-remaster.log" 2>&1
          ok=$?
          reports=$(grep -cE 'ERROR: (Address|Leak)Sanitizer|runtime error:' \
              "$asan/meson-logs/testlog.txt")
          if [ "$ok" != 0 ] && [ "$reports" = 0 ] && [ "$attempt" = 1 ]; then
            if grep -q 'LeakSanitizer has encountered a fatal error' \
                "$asan/meson-logs/testlog.txt"; then
              note "asan+ubsan: $t: LSan's tracer failed (no report); again"
              continue
            fi
            killed=$(grep -A8 'ehat-remaster was killed by signal' \
                "$asan/meson-logs/testlog.txt" | head -9 | tr '\n' ' ')
            last_case=$(grep '^# case' "$asan/meson-logs/testlog.txt" \
                | tail -1)
            if [ -n "$killed" ]; then
              cp "$asan/meson-logs/testlog.txt" "$asan.test-remaster.first.log"
              note "asan+ubsan: $t: no sanitizer report, but: ${last_case:-(before any case)}: $killed; again"
              continue
            fi
          fi
          break
        done
        if [ "$ok" = 0 ] && [ "$reports" = 0 ]; then
          note "asan+ubsan: $t (ehat-remaster processes): no reports"
        else
          tail -60 "$asan.test-remaster.log"
          grep -E -A20 'ERROR: (Address|Leak)Sanitizer|runtime error:' \
              "$asan/meson-logs/testlog.txt" | head -80
          # the failing case's own words (its stderr is a TAP comment)
          grep -E -A8 '^# case|killed by signal|Sanitizer|Tracer' \
              "$asan/meson-logs/testlog.txt" | tail -40
          fail "asan+ubsan: $t (log: $asan.test-remaster.log)"
        fi
      done
    fi
  else
    tail -30 "$asan.build.log" 2>/dev/null
    fail "asan+ubsan: build"
  fi
  note "asan+ubsan: $((SECONDS - t0)) s"
fi

# ------------------------------------------------------------ (b) valgrind
if [ "${SKIP_VALGRIND:-0}" != 1 ]; then
  t0=$SECONDS
  if ! command -v valgrind >/dev/null; then
    fail "valgrind: not installed (tools/setup-debian.sh installs it)"
  else
    vg=$out/plain
    # valgrind and ASan exclude each other: a plain debug build.  The tests
    # run through `meson test --wrapper`, so they get meson's environment.
    if setup "$vg" -Dbuildtype=debugoptimized -Dcuda=disabled -Dfuzzing=false \
        && ninja -C "$vg" -j"$jobs" >"$vg.build.log" 2>&1; then
      wrapper="valgrind --tool=memcheck --error-exitcode=1 --leak-check=full"
      wrapper+=" --errors-for-leak-kinds=definite --show-leak-kinds=definite"
      wrapper+=" --num-callers=30 --suppressions=$src/tests/valgrind.supp"
      for f in /usr/share/glib-2.0/valgrind/glib.supp \
               /usr/share/gstreamer-1.0/validate/gst.supp; do
        [ -f "$f" ] && wrapper+=" --suppressions=$f"
      done
      tests=(loader)
      if meson introspect --tests "$vg" | grep -q '"name": "ehatsr"'; then
        tests+=(ehatsr)
      fi
      # test-ehatsr: the element's lifecycle, properties, negotiation errors
      # and model swaps; the cases that run networks on frames take more
      # than 5 min each under memcheck and are covered by (a).
      log=$vg/meson-logs/testlog-valgrind.txt
      if env G_SLICE=always-malloc G_DEBUG=gc-friendly GST_REGISTRY_FORK=no \
            GST_CHECKS="${VALGRIND_GST_CHECKS:-test_properties,test_missing_model,test_caps_transform,test_latency_query,test_model_swap_failure,test_timestamps_and_stats}" \
          meson test -C "$vg" --no-rebuild --timeout-multiplier 10 \
            --num-processes "$jobs" --print-errorlogs --wrapper "$wrapper" \
            "${tests[@]}" >"$vg.test.log" 2>&1; then
        procs=$(grep -c 'ERROR SUMMARY: 0 errors' "$log")
        note "valgrind: ${tests[*]}: OK, $procs processes with 0 errors, 0 bytes definitely lost"
      else
        grep -E -B2 -A25 'Invalid|uninitialised|definitely lost in|Mismatched' \
            "$log" | head -80
        tail -25 "$vg.test.log"
        fail "valgrind: ${tests[*]} (log: $log)"
      fi
    else
      tail -30 "$vg.build.log" 2>/dev/null
      fail "valgrind: build"
    fi
  fi
  note "valgrind: $((SECONDS - t0)) s"
fi

# -------------------------------------------------------------- (c) fuzzing
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  t0=$SECONDS
  if ! command -v "$fuzz_cc" >/dev/null; then
    note "fuzz: skipped ($fuzz_cc not installed)"
  else
    fz=$out/fuzz
    if CC=$fuzz_cc setup "$fz" -Dfuzzing=true -Dgst=disabled -Dcuda=disabled \
          -Db_sanitize=address,undefined -Db_lundef=false \
          -Dbuildtype=debugoptimized -Dc_args=-fsanitize=fuzzer-no-link \
        && ninja -C "$fz" -j"$jobs" tests/fuzz/fuzz-loader tests/fuzz/fuzz-tiler \
          >"$fz.build.log" 2>&1; then
      for t in loader tiler; do
        corpus=$out/corpus-$t
        rm -rf "$corpus" "$out/crashes-$t"
        mkdir -p "$corpus" "$out/crashes-$t"
        cp "$src/tests/fuzz/corpus/$t/"* "$corpus/"
        log=$out/fuzz-$t.log
        # one process, so a crash ends the run with a non-zero status;
        # loader seeds include ~300 KiB valid models
        ASAN_OPTIONS=$ASAN_OPTIONS:detect_stack_use_after_return=0 \
          "$fz/tests/fuzz/fuzz-$t" -max_total_time="$fuzz_seconds" \
            -rss_limit_mb=2048 -timeout=25 -max_len=400000 -print_final_stats=1 \
            -artifact_prefix="$out/crashes-$t/" "$corpus" >"$log" 2>&1
        rc=$?
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
        crashes=$(find "$out/crashes-$t" -type f | wc -l)
        if [ "$rc" = 0 ] && [ "$crashes" = 0 ]; then
          note "fuzz-$t: ${runs:-?} executions in ${fuzz_seconds} s, ${cov:-cov ?}, 0 crashes"
        else
          grep -E -A30 'ERROR: |runtime error:|==ERROR|deadly signal|Test unit written' \
              "$log" | head -80
          fail "fuzz-$t: exit $rc, ${runs:-?} executions, $crashes crash file(s) in $out/crashes-$t"
        fi
      done
    else
      tail -30 "$fz.build.log" "$fz.setup.log" 2>/dev/null
      fail "fuzz: build"
    fi
  fi
  note "fuzz: $((SECONDS - t0)) s"
fi

# ----------------------------------------------- (d) CUDA kernels under ASan
if [ "${SKIP_CUDA_EMU:-0}" != 1 ]; then
  t0=$SECONDS
  if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
    note "cuda-emu asan: skipped (no CUDA toolkit)"
  else
    ce=$out/cuda-emu-asan
    if CC=${ASAN_CC:-gcc} CXX=${ASAN_CXX:-g++} setup "$ce" \
          -Db_sanitize=address,undefined -Db_lundef=false \
          -Dbuildtype=debugoptimized -Dgst=disabled -Dfuzzing=false \
          -Dcuda=enabled -Dcuda-emu=enabled \
        && ninja -C "$ce" -j"$jobs" tests/test-cuda-emu tests/test-cuda-emu-self \
          kernels/emu/module/libehat-cuda.so >"$ce.build.log" 2>&1; then
      log=$ce.test.log
      # /cuda/conv: its fp32 tolerance is met by the -O3 CPU reference of
      # the normal build, not always by this -O2 one (summation order); the
      # same kernels run in every golden case here.  /cuda/oom runs: ASan's
      # quarantine catches what the emulator's own NaN quarantine (off under
      # ASan) would, a stale pointer after the OOM retries' frees, and says
      # where (one CI run once saw a frame differ there).  The fibers switch
      # stacks, which ASan's fake stacks do not follow.
      if ASAN_OPTIONS=$ASAN_OPTIONS:detect_stack_use_after_return=0 \
          EHAT_BACKEND_PATH=$ce/kernels/emu/module \
          EHAT_GOLDEN_DIR=$src/../shared/golden \
          EHAT_PROJECT_GOLDEN_DIR=$src/tests/golden \
          EHAT_SHARED_DATA=$src/../shared/data EHAT_MODELS_DIR=$src/models \
          "$ce/tests/test-cuda-emu" -s /cuda/conv \
            -s /cuda/shipped/ehat-fast-x2 -s /cuda/shipped/ehat-fast-x4 \
            >"$log" 2>&1 \
        && ASAN_OPTIONS=$ASAN_OPTIONS:detect_stack_use_after_return=0 \
          "$ce/tests/test-cuda-emu-self" >>"$log" 2>&1; then
        note "cuda-emu asan+ubsan: $(grep '^ok' "$log" | grep -vc SKIP) cases, no reports"
      else
        grep -E -A25 'ERROR: |runtime error:|not ok|Bail out' "$log" | head -60
        fail "cuda-emu asan+ubsan (log: $log)"
      fi
    else
      tail -30 "$ce.build.log" "$ce.setup.log" 2>/dev/null
      fail "cuda-emu asan: build"
    fi
  fi
  note "cuda-emu asan: $((SECONDS - t0)) s"
fi

echo
echo "hardening summary:"
for l in "${summary[@]}"; do echo "  $l"; done
[ "$status" = 0 ] && echo "hardening: PASS" || echo "hardening: FAIL"
exit $status
