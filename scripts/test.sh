#!/usr/bin/env bash
# Every test in one command, on a fresh Debian machine with only rustup,
# Java and Maven: installs what is missing, checks formatting and lints,
# builds the components and the bridge, brings up the real brokers
# (tests/brokers.sh), runs every test, prints the fault report and brings
# the brokers down again, also when something fails.
#
#   bash scripts/test.sh
#
# UNS_FAULTS_LONG=1 runs the long variants of the fault tests (20,000+
# messages per scenario); the default runs a short version of each.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
started=$(date +%s)

# One run at a time on a machine: runs share the brokers' ports, and one
# run's `down` or fault test would pull the brokers from under another.
exec 9>"${TMPDIR:-/tmp}/uns-kafka-test.lock"
if ! flock -n 9; then
  echo "==> waiting for another uns-kafka test run on this machine to finish" >&2
  flock -w 5400 9
fi

step() { printf '\n==> %s\n' "$*" >&2; }

# A step with a time limit that Ctrl-C still stops: `timeout` runs the
# command in a process group of its own, out of the terminal's reach, so
# the signal is handed on to it here.
bounded() {
  local limit=$1 pid='' status=0
  shift
  # Set first: a signal between the start and the trap would leave the
  # step running while the brokers go down.
  trap '[ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true' INT TERM
  timeout -k 30 "$limit" "$@" &
  pid=$!
  wait "$pid" || status=$?
  # Interrupted: wait for the step to end before the brokers go down.
  if [ "$status" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then
    wait "$pid" || true
  fi
  trap - INT TERM
  [ "$status" -ne 124 ] || echo "==> timed out after $limit: $*" >&2
  return "$status"
}

step "tools: build dependencies, wasm32-wasip2, cargo-component"
ensure_build_deps
ensure_wasm_target
ensure_cargo_component

# Running out of disk mid-build fails in a linker's words, far from the
# cause: say it first. A fresh build of everything takes about 4 GB; the
# incremental caches would add gigabytes for a build that runs once.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$PWD/$target_dir
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" 2>/dev/null | awk 'NR == 2 { print $4 }') || true
if [[ $free_kb =~ ^[0-9]+$ ]] && (( free_kb < 8 * 1048576 )); then
  echo "==> warning: only $(( free_kb / 1048576 )) GB free under $target_dir; a fresh build needs about 4 GB and the brokers' data more" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "build the components (cargo build and cargo component build)"
cargo build --locked --release --target wasm32-wasip2 -p uns-default -p test-faulty
# The component must also build the way transform authors build theirs.
(cd components/uns-default && cargo component build --locked --release >/dev/null)

step "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

# One build: the tests' build makes target/debug/uns-kafka too (the host's
# tests run it), with the workspace's features; a separate `cargo build -p
# uns-kafka` first resolved tokio's features apart and built the whole
# dependency stack twice.
step "build the bridge and the tests"
cargo test --locked --workspace --no-run

export UNS_FAULT_REPORT=${UNS_FAULT_REPORT:-$target_dir/fault-report.tsv}
rm -f "$UNS_FAULT_REPORT"
# On failure the brokers' own account comes first, before `down` wipes it:
# a test that fails after a broker restart is often explained there.
on_exit() {
  local status=$? f
  if [ "$status" -ne 0 ]; then
    for f in kafka.history.log kafka.log mosquitto.history.log mosquitto.log; do
      f=${UNS_BROKERS_DIR:-target/brokers}/$f
      [ -s "$f" ] || continue
      step "last lines of $f"
      grep -v -e ' DEBUG ' -e ' TRACE ' "$f" | tail -n 60 >&2 || true
    done
  fi
  step "brokers down"
  bash tests/brokers.sh down || true
  exit "$status"
}
trap on_exit EXIT
step "brokers up"
bash tests/brokers.sh up

step "unit, golden, transform and end-to-end tests"
# The fault tests are #[ignore]d here and run alone below. Every test
# binary runs even when one fails (the report is the whole picture), and a
# hung test ends the step instead of the CI run's 90 minutes.
bounded 40m cargo test --locked --workspace --no-fail-fast

if [ "${UNS_FAULTS_LONG:-}" = 1 ]; then
  step "property tests of the decoder and topic mapper, long budget (20,000 cases each)"
  PROPTEST_CASES=20000 cargo test --locked --release -p uns-default --test proptest_fuzz
fi

# Fault tests stop and start the shared brokers: one at a time, last.
step "fault tests (one at a time)"
bounded 25m cargo test --locked -p uns-kafka-e2e --test faults -- --ignored --test-threads=1

if [ -s "$UNS_FAULT_REPORT" ]; then
  step "fault report (every message counted)"
  column -t -s $'\t' "$UNS_FAULT_REPORT" 2>/dev/null || cat "$UNS_FAULT_REPORT"
fi
step "all tests passed in $(( $(date +%s) - started )) s"
