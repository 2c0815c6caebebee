#!/usr/bin/env bash
# The scale benchmark (docs/performance.md): `scripts/scale.sh [N ...]` (default 1000) builds
# the release binary, brings up tests/peers unless BURSTGATE_PEERS_ENV names running ones, and
# runs scripts/scale.py: N bare pods on one virtual node, unthrottled and behind a bucket, then
# their delete; it prints one JSON record per run. `SCALE_MODES=owed` runs examples/owed_writes.rs
# in the gateway's place: the writes a placement owes, alone.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/burstgate/target}
cargo build --release --quiet --bin burstgate --example owed_writes
export BURSTGATE_BINARY=$CARGO_TARGET_DIR/release/burstgate
export SCALE_OWED_BINARY=$CARGO_TARGET_DIR/release/examples/owed_writes
if [ -z "${BURSTGATE_PEERS_ENV:-}" ] || [ ! -f "$BURSTGATE_PEERS_ENV" ]; then
  trap 'bash tests/peers/down.sh' EXIT
  bash tests/peers/up.sh > /dev/null
  BURSTGATE_PEERS_ENV=/var/tmp/burstgate-peers/peers.env
fi
export BURSTGATE_PEERS_ENV
exec python3 scripts/scale.py "$@"
