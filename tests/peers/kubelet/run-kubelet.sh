#!/usr/bin/env bash
# Runs the test node's kubelet without touching the machine's kernel settings. Started by up.sh as
#   unshare --mount --propagation unchanged -- run-kubelet.sh STATE_DIR KUBELET ARGS...
# kubelet 1.20 insists on six sysctls (vm.overcommit_memory=1, vm.panic_on_oom=0, kernel.panic=10,
# kernel.panic_on_oops=1, kernel.keys.root_maxkeys, kernel.keys.root_maxbytes) and, without
# --protect-kernel-defaults, writes them machine-wide. In this private mount namespace the ones
# that differ are shadowed by files holding the wanted value, so the kubelet reads what it wants
# and writes nothing. Its volume mounts still reach containerd: up.sh makes the kubelet's root dir
# a shared mount before the unshare, and /proc, where the shadows live, is private.
set -euo pipefail
state=$1; shift
mkdir -p "$state/sysctl"
mount --make-private /proc
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
          kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key=${kv%%=*} want=${kv#*=}
  [ "$(cat "/proc/sys/$key")" = "$want" ] && continue
  echo "$want" > "$state/sysctl/${key//\//.}"
  mount --bind "$state/sysctl/${key//\//.}" "/proc/sys/$key"
done
exec "$@"
