#!/usr/bin/env bash
# Stops the peers that tests/peers/up.sh started, by the PID files in $BURSTGATE_PEERS_DIR (never
# by process name), in reverse start order, and removes peers.env. The test node's containers are
# killed through containerd before it stops, then its mounts, bridge and cgroups are removed
# (lib.sh, test_node_down). Logs and data stay for a look until the next up.sh. Safe to run when
# nothing is up.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

[ -d "$PEERS_DIR" ] || exit 0
rm -f "$PEERS_ENV"
for (( i = ${#PEER_NAMES[@]} - 1; i >= 0; i-- )); do
  [ "${PEER_NAMES[i]}" != containerd ] || test_node_containers_down
  f=$PEERS_DIR/${PEER_NAMES[i]}.pid
  if [ -e "$f" ]; then stop_pidfile "$f"; fi
done
for f in "$PEERS_DIR"/*.pid; do  # anything else an up.sh of another version left
  if [ -e "$f" ]; then stop_pidfile "$f"; fi
done
test_node_down
log "peers in $PEERS_DIR stopped"
