#!/usr/bin/env bash
# The one test command (README and .ci/run): brings up the real peers with tests/peers/up.sh
# (stopped again on exit), then runs every test with cargo-nextest (lib and bin unit tests, the
# integration binary tests/it), the doc tests, and a compile check of the benches (cargo check).
# Every peer must come up, or the run fails; the peer tests never skip.
# Locally (not under CI=true), BURSTGATE_PEERS_ENV=<running peers' peers.env> reuses peers
# that tests/peers/up.sh already started and leaves them running.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=SCRIPTDIR/peers/lib.sh
source tests/peers/lib.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/burstgate/target}
T0=$SECONDS
step() { log "$1 (+$((SECONDS - T0)) s)"; }

if [ "${CI:-}" != true ] && [ -n "${BURSTGATE_PEERS_ENV:-}" ] && [ -f "$BURSTGATE_PEERS_ENV" ]; then
  step "reusing the peers of $BURSTGATE_PEERS_ENV"
else
  peers_down() { local rc=$?; bash tests/peers/down.sh || true; exit "$rc"; }
  trap peers_down EXIT
  trap 'exit 130' INT TERM
  step "bringing up the peers"
  bash tests/peers/up.sh > /dev/null
  export BURSTGATE_PEERS_ENV=$PEERS_ENV
fi

if ! command -v cargo-nextest > /dev/null; then
  step "installing cargo-nextest $NEXTEST_VERSION"
  cargo install --locked "cargo-nextest@$NEXTEST_VERSION"
fi
# --tests: the lib's and bins' unit tests and the integration binary. Not --all-targets: nextest
# would only list the criterion benches (it never runs them), and listing runs their setup code.
step "cargo nextest run --tests"
cargo nextest run --tests --no-fail-fast
step "cargo test --doc"
cargo test --doc
# The benches only need to compile here: a check, not a second (release) build of everything.
step "cargo check --benches"
cargo check --benches
step "all tests passed"
