#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer) and runs each for SECONDS (default
# 30), one after another; fails on the first crash, leaving the input in
# fuzz/artifacts/<target>/ and printing the command that replays it. docs/fuzzing.md.
#
#   scripts/fuzz.sh                 # the short coverage-guided run: 30 s per target
#   scripts/fuzz.sh 300             # the long run: 5 min per target
#   scripts/fuzz.sh 60 translate    # some targets only
#
# Runs on the stable toolchain: cargo-fuzz passes rustc a few unstable flags, which stable
# accepts under RUSTC_BOOTSTRAP=1 (no sanitizer: the code fuzzed is safe Rust; cargo-fuzz turns
# debug assertions and overflow checks on). The corpus grows from run to run in
# $BURSTGATE_FUZZ_CORPUS (default /var/cache/burstgate/fuzz-corpus, outside the checkout),
# seeded from fuzz/seeds/ and the example policies; the numbers of each run are appended to
# $CARGO_TARGET_DIR/fuzz-runs.log.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/fuzz"
SECONDS_PER_TARGET=${1:-30}
shift || true
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${BURSTGATE_FUZZ_TARGET_DIR:-/var/cache/burstgate/target-fuzz-crate}
CORPUS=${BURSTGATE_FUZZ_CORPUS:-/var/cache/burstgate/fuzz-corpus}
FLAGS=(--sanitizer none --target-dir "$CARGO_TARGET_DIR")
log() { printf 'fuzz: %s\n' "$*" >&2; }

if ! cargo fuzz --version 2> /dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo fuzz list)
fi

T0=$SECONDS
log "building ${#TARGETS[*]} targets"
cargo fuzz build "${FLAGS[@]}" > /dev/null
log "built in $((SECONDS - T0)) s"

# The policy loader's seeds: each example policy, and all of them as one input (NUL-separated).
seed_policies() {
  mkdir -p "$CORPUS/policy_load"
  local all=()
  for f in "$ROOT"/policies/*.yaml; do
    cp "$f" "$CORPUS/policy_load/$(basename "$f")"
    all+=("$f")
  done
  for f in "${all[@]}"; do cat "$f"; printf '\0'; done > "$CORPUS/policy_load/all-examples"
}

# A dictionary of the policy schema's field names (kept true by reading the schema).
policy_dict() {
  grep -o '"[A-Za-z][A-Za-z0-9]*":' "$ROOT/policies/schema.json" | sort -u |
    sed 's/^"\(.*\)":$/"\1: "/' > "$CARGO_TARGET_DIR/policy.dict"
  printf '%s\n' '"apiVersion: burstgate.io/v1alpha1"' '"kind: BurstPolicy"' '"\x0a  - "' \
    >> "$CARGO_TARGET_DIR/policy.dict"
  echo "-dict=$CARGO_TARGET_DIR/policy.dict"
}

run() {
  local target=$1 out=$CARGO_TARGET_DIR/fuzz-$1.out extra=()
  mkdir -p "$CORPUS/$target"
  [ -d "seeds/$target" ] && cp -n "seeds/$target"/* "$CORPUS/$target/" 2> /dev/null || true
  if [ "$target" = policy_load ]; then
    seed_policies
    extra+=("$(policy_dict)")
  fi
  if ! cargo fuzz run "${FLAGS[@]}" "$target" "$CORPUS/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${extra[@]}" > "$out" 2>&1; then
    tail -n 60 "$out" >&2
    log "CRASH in $target; replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${FLAGS[*]} $target artifacts/$target/<file>)"
    return 1
  fi
  local runs rate corpus
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out")
  corpus=$(find "$CORPUS/$target" -type f | wc -l)
  printf '%-16s %12s runs %8s/s %6s inputs in corpus, 0 crashes\n' "$target" "$runs" "$rate" "$corpus"
  printf '%s %s %ss %s runs %s/s corpus %s\n' "$(date -u +%FT%TZ)" "$target" \
    "$SECONDS_PER_TARGET" "$runs" "$rate" "$corpus" >> "$CARGO_TARGET_DIR/fuzz-runs.log"
}

for target in "${TARGETS[@]}"; do
  run "$target"
done
log "${#TARGETS[*]} targets, ${SECONDS_PER_TARGET} s each, no crash ($((SECONDS - T0)) s in all)"
