#!/usr/bin/env bash
# Crash safety at scale (docs/performance.md, "Crash safety at scale"): `scripts/crash.sh [PODS
# [KILLS]]` (default 1000 pods, 20 kills) runs tests/it/crash_safety.rs with orphan GC at its
# production minimum age (600 s), across ACI (the emulator behind Prism) and Fargate (moto). It
# brings up tests/peers unless BURSTGATE_PEERS_ENV names running ones, and prints the numbers:
# where each kill landed, workloads ever created, ever doubled, orphans after GC, lost, untrue
# statuses and the durations. BURSTGATE_CRASH_SEED replays a run's kill points (its seed is
# printed); BURSTGATE_CRASH_GC_MIN_AGE_SECONDS=20 shortens the orphan phase.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/burstgate/target}
export BURSTGATE_CRASH_PODS=${1:-${BURSTGATE_CRASH_PODS:-1000}}
export BURSTGATE_CRASH_KILLS=${2:-${BURSTGATE_CRASH_KILLS:-20}}
export BURSTGATE_CRASH_GC_MIN_AGE_SECONDS=${BURSTGATE_CRASH_GC_MIN_AGE_SECONDS:-production}
if [ -z "${BURSTGATE_PEERS_ENV:-}" ] || [ ! -f "$BURSTGATE_PEERS_ENV" ]; then
  trap 'bash tests/peers/down.sh' EXIT
  bash tests/peers/up.sh > /dev/null
  BURSTGATE_PEERS_ENV=${BURSTGATE_PEERS_DIR:-/var/tmp/burstgate-peers}/peers.env
fi
export BURSTGATE_PEERS_ENV
cargo nextest run --test it --no-capture -E 'test(/^crash_safety::/)'
