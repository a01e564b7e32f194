#!/usr/bin/env bash
# Runs every check and test of skyfs in order and prints one summary; `deno task test` calls it.
#
# Usage: scripts/test.sh [STEP...]
#   Steps, in order: setup fmt lint check unit sim tests tests-cluster tests-uring tests-curp
#   tests-etcd bench (default: all).
#   tests runs tests/ but for tests/cluster/ and tests/meta/, which tests-cluster runs (each step
#   has its own time cap: as one step they did not finish within 900 s at load 7-9 on 2 cores).
#   tests-uring runs the POSIX suites, the differential test, the crash and kill points tests and
#   the cluster tests of what a cluster node serves on FUSE over io_uring
#   (SKYFS_TEST_FUSE_TRANSPORT=uring); it turns the kernel's switch on first (root), and fails,
#   never skips, when the ring cannot be set up.
#   tests-curp and tests-etcd run the POSIX suites and the differential test (40 runs) on a cluster
#   node: three CURP replicas, or one etcd member, with a directory backend (SKYFS_TEST_META);
#   tests-curp on FUSE over io_uring, tests-etcd on /dev/fuse. tests-etcd also runs the cluster
#   fault suites that take their store from SKYFS_TEST_META (tests/cluster: cluster, consistency,
#   errors, locks, unmount_records; tests-cluster runs them on CURP) and etcd_failover_test.ts
#   (the member killed -9 and restarted under writers), on etcd.
#   Every step runs even after an earlier one failed, so one run shows every failure; the exit code
#   is non-zero when any step failed.
#
# Environment: CI=true is honoured (nothing interactive, no colours); SKYFS_TEST_STEP_TIMEOUT_S
# caps each step (default 900 s) so a hung mount cannot eat the CI budget.
set -uo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_dir"

all_steps=(setup fmt lint check unit sim tests tests-cluster tests-uring tests-curp tests-etcd bench)
if [ "$#" -gt 0 ]; then
  for step in "$@"; do
    if [[ ! " ${all_steps[*]} " =~ " $step " ]]; then
      echo "test.sh: unknown step \"$step\"; steps are: ${all_steps[*]}" >&2
      exit 2
    fi
  done
  steps=("$@")
else
  steps=("${all_steps[@]}")
fi

export DEBIAN_FRONTEND=noninteractive
if [ "${CI:-}" = "true" ]; then
  export NO_COLOR=1
fi
step_timeout_s="${SKYFS_TEST_STEP_TIMEOUT_S:-900}"
log_dir="$(mktemp -d "${TMPDIR:-/tmp}/skyfs-test-XXXXXX")"
# FUSE over io_uring is offered by the kernel only while this switch is on, and mounts take it
# when offered (fuse.transport = auto). Every step but tests-uring and tests-curp runs with it off,
# whatever an earlier run left, so a run means the same on every machine; it is put back as it was
# at the end.
# (The bench step's own run turns it on for its skyfs-uring target, every other mount pinned to
# /dev/fuse, and back off at its end: bench/uring_switch.ts.)
uring_switch=/sys/module/fuse/parameters/enable_uring
uring_before="$(cat "$uring_switch" 2>/dev/null || true)"
set_uring() { [ -w "$uring_switch" ] && echo "$1" >"$uring_switch" 2>/dev/null || true; }
restore_uring() { case "$uring_before" in Y) set_uring 1 ;; N) set_uring 0 ;; esac; }
trap 'rm -rf "$log_dir"; restore_uring' EXIT

results=()  # "status name seconds note"
tests_passed=0
tests_failed=0
tests_skipped=0
any_failed=0

# count_deno_tests LOG: adds the closing "ok | N passed | M failed | K ignored" lines of deno test.
count_deno_tests() {
  local line passed failed ignored
  while IFS= read -r line; do
    passed="$(sed -n 's/.* \([0-9][0-9]*\) passed.*/\1/p' <<<"$line")"
    failed="$(sed -n 's/.* \([0-9][0-9]*\) failed.*/\1/p' <<<"$line")"
    ignored="$(sed -n 's/.* \([0-9][0-9]*\) ignored.*/\1/p' <<<"$line")"
    tests_passed=$((tests_passed + ${passed:-0}))
    tests_failed=$((tests_failed + ${failed:-0}))
    tests_skipped=$((tests_skipped + ${ignored:-0}))
  done < <(sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -E '^(ok|FAILED) \| [0-9]+ passed')
}

# run_step NAME KIND COMMAND...: runs a command with a time cap, streams its output, records it.
# KIND is "deno-test" when the output's deno test counts go into the totals, else "step", which
# counts as one test of its own.
run_step() {
  local name="$1" kind="$2"
  shift 2
  local log="$log_dir/$name.log" start end rc
  echo
  echo "=== test.sh: $name: $*"
  start="$(date +%s.%N)"
  timeout --kill-after=30 "$step_timeout_s" "$@" </dev/null 2>&1 | tee "$log"
  rc="${PIPESTATUS[0]}"
  end="$(date +%s.%N)"
  local seconds note=""
  seconds="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
  [ "$rc" -eq 124 ] && note="timed out after ${step_timeout_s} s"
  if [ "$kind" = "deno-test" ]; then
    local before_failed="$tests_failed"
    count_deno_tests "$log"
    # A deno test run that fails before its summary (type error, crash) still counts as a failure.
    if [ "$rc" -ne 0 ] && [ "$tests_failed" -eq "$before_failed" ]; then
      tests_failed=$((tests_failed + 1))
    fi
  elif [ "$rc" -eq 0 ]; then
    tests_passed=$((tests_passed + 1))
  else
    tests_failed=$((tests_failed + 1))
  fi
  if [ "$rc" -eq 0 ]; then
    results+=("ok $name $seconds $note")
  else
    results+=("FAILED $name $seconds exit $rc${note:+, $note}")
    any_failed=1
  fi
}

skip_step() {
  results+=("skipped $1 0.0 $2")
  tests_skipped=$((tests_skipped + 1))
  echo
  echo "=== test.sh: $1: skipped ($2)"
}

# Test files that `deno test DIR` would pick up, under the given directories.
find_deno_tests() {
  local dirs=()
  for dir in "$@"; do [ -d "$dir" ] && dirs+=("$dir"); done
  [ "${#dirs[@]}" -eq 0 ] && return 0
  find "${dirs[@]}" -path '*/node_modules' -prune -o -type f \
    \( -name '*_test.ts' -o -name '*.test.ts' -o -name 'test.ts' \) -print | sort
}

run_tests_dir() {
  local files
  mapfile -t files < <(find_deno_tests tests | grep -v -e '^tests/cluster/' -e '^tests/meta/')
  if [ "${#files[@]}" -gt 0 ]; then
    # /dev/fuse here (SKYFS_TEST_FUSE_TRANSPORT=dev); tests-uring runs the suites on the ring.
    run_step tests deno-test env SKYFS_TEST_FUSE_TRANSPORT=dev deno test -A "${files[@]}"
  else
    skip_step tests "no test files under tests/ yet"
  fi
  local script
  shopt -s nullglob
  for script in tests/*.sh; do
    run_step "tests/$(basename "$script")" step bash "$script"
  done
  shopt -u nullglob
}

bench_out="$log_dir/bench"
total_start="$(date +%s)"
for step in "${steps[@]}"; do
  set_uring 0 # tests/fuse_uring_test.ts (in `tests`) and tests-uring turn it on
  case "$step" in
    setup) run_step setup step bash scripts/setup.sh ;;
    fmt) run_step fmt step deno fmt --check ;;
    lint) run_step lint step deno lint ;;
    check)
      targets=()
      for path in mod.ts src tests bench scripts; do [ -e "$path" ] && targets+=("$path"); done
      run_step check step deno check "${targets[@]}"
      ;;
    unit)
      mapfile -t unit_files < <(find_deno_tests src lib bench scripts)
      if [ "${#unit_files[@]}" -gt 0 ]; then
        run_step unit deno-test deno test -A "${unit_files[@]}"
      else
        skip_step unit "no *_test.ts files under src/, lib/, bench/ or scripts/ yet"
      fi
      ;;
    sim)
      # CURP: 500 seeded cluster simulations, invariants and linearizability checked on each.
      run_step sim step deno run -A src/meta/curp/sim_main.ts --seeds 500
      ;;
    tests) run_tests_dir ;;
    tests-cluster)
      # etcd_failover_test.ts runs in tests-etcd, with the etcd variants of the store suites.
      mapfile -t cluster_files < <(find_deno_tests tests/cluster tests/meta |
        grep -v -x tests/cluster/etcd_failover_test.ts)
      if [ "${#cluster_files[@]}" -gt 0 ]; then
        run_step tests-cluster deno-test env SKYFS_TEST_FUSE_TRANSPORT=dev deno test -A \
          "${cluster_files[@]}"
      else
        skip_step tests-cluster "no test files under tests/cluster/ or tests/meta/ yet"
      fi
      ;;
    tests-uring)
      # tests/ already ran tests/fuse_uring_test.ts and both transports' unit tests; this is the
      # suites again with every mount on the ring (53 s at load 9-12, 120 s at load 17, 2 cores),
      # and the cluster tests whose subject is what a cluster node's mounts serve (the cluster's
      # mounts inherit SKYFS_FUSE_TRANSPORT=uring; LocalCluster fails a mount not on the ring).
      # The fault tests of tests/cluster/ (replica kills, network cuts, zones) run in
      # tests-cluster only: the ring changes nothing they test. About 90 s more.
      run_step tests-uring deno-test bash -c 'echo 1 > /sys/module/fuse/parameters/enable_uring &&
        exec env SKYFS_TEST_FUSE_TRANSPORT=uring SKYFS_FUSE_TRANSPORT=uring \
        SKYFS_TEST_TARGET=skyfs deno test -A tests/posix/ tests/differential_test.ts \
        tests/crash_test.ts tests/kill_points_test.ts tests/cluster/cluster_test.ts \
        tests/cluster/consistency_test.ts tests/cluster/kernel_cache_test.ts \
        tests/cluster/locks_test.ts tests/cluster/passthrough_test.ts \
        tests/cluster/inline_test.ts tests/cluster/listing_test.ts tests/meta/curp_mount_test.ts \
        tests/cluster/close_to_open_test.ts'
      ;;
    tests-curp | tests-etcd)
      # On CURP also the volume suite (tests/volumes/ runs in `tests` on one node): quotas, kill -9
      # of a cluster node mid-write, the API, about 45 s. CURP's run is on FUSE over io_uring and
      # etcd's on /dev/fuse, so a cluster node passes the POSIX suites on both transports.
      extra=()
      transport=dev
      if [ "$step" = tests-curp ]; then
        extra=(tests/volumes/volumes_test.ts)
        transport=uring
        echo 1 >/sys/module/fuse/parameters/enable_uring || true # startMount fails if not taken
      fi
      # On etcd also the cluster fault suites (their CURP runs are in tests-cluster).
      [ "$step" = tests-etcd ] && extra=(tests/cluster/cluster_test.ts
        tests/cluster/consistency_test.ts tests/cluster/errors_test.ts tests/cluster/locks_test.ts
        tests/cluster/unmount_records_test.ts tests/cluster/etcd_failover_test.ts)
      run_step "$step" deno-test env SKYFS_TEST_META="${step#tests-}" SKYFS_TEST_TARGET=skyfs \
        SKYFS_TEST_FUSE_TRANSPORT="$transport" SKYFS_FUSE_TRANSPORT="$transport" \
        SKYFS_DIFF_RUNS="${SKYFS_DIFF_RUNS:-40}" deno test -A tests/posix/ tests/differential_test.ts \
        "${extra[@]}"
      ;;
    bench)
      # Proves the harness works end to end on tiny sizes; it asserts nothing about speed.
      run_step bench step deno run -A bench/main.ts --quick --tiny --no-readme --out "$bench_out"
      # The zones family at its smallest (3 emulated zones, CURP, one operation each, then 1 MiB
      # read from each of the 4 tiers on 2 zones; ~17 s).
      run_step bench-zones step deno run -A bench/zones/main.ts --rtt-ms 10 --ops 1 --mib 1 \
        --meta curp
      ;;
  esac
done
total_s=$(($(date +%s) - total_start))

echo
echo "=== test.sh summary (${total_s} s)"
for result in "${results[@]}"; do
  read -r status name seconds note <<<"$result"
  printf '  %-8s %-28s %7s s  %s\n' "$status" "$name" "$seconds" "$note"
done
echo "(deno test cases are counted one by one; every other step counts as one test)"
echo "tests: ${tests_passed} passed, ${tests_failed} failed, ${tests_skipped} skipped"
exit "$any_failed"
