#!/usr/bin/env bash
# E2E test bed: a real Kubernetes control plane (etcd + kube-apiserver +
# kube-controller-manager), a MongoDB-wire server (mongo-java-server, in memory),
# Redis and an S3-compatible server (versitygw), and a real node (kube-scheduler, kubelet, containerd + runc, CNI
# bridge, kube-proxy, kube-router's NetworkPolicy firewall, CoreDNS, a
# local-path PersistentVolume provisioner) in a network namespace of its own:
# see node/node.sh. One node bed per machine (a lock); control-plane-only beds
# (--no-node, on 127.0.0.1) can run side by side.
#
#   tests/e2e/testbed.sh install           apt packages + build/cache binaries
#   tests/e2e/testbed.sh start [DIR] [--no-node] [--audit-log]
#                                          install, then start everything, and wait
#                                          until the node is Ready and a pod resolves
#                                          a Service name; --no-node: the control
#                                          plane and servers only (TESTBED_NODE=0
#                                          too); --audit-log also writes
#                                          DIR/logs/audit.log (JSON lines, Metadata
#                                          level, every create/update/patch/delete by
#                                          anyone) to count API writes
#   tests/e2e/testbed.sh stop [DIR]        stop what start started
#   tests/e2e/testbed.sh restart DIR etcd|kube-apiserver [--down SECONDS] [ARG...]
#                                          stop it, wait SECONDS, start it again with
#                                          its arguments (+ ARGS, kept by later
#                                          restarts); for fault tests in a bed of their own
#   tests/e2e/testbed.sh status [DIR]
#   tests/e2e/testbed.sh peak-memory [DIR] current/peak RSS of each process
#   tests/e2e/testbed.sh selftest [DIR]    prove the running test bed works
#   tests/e2e/testbed.sh load-image DIR ARCHIVE...
#                                          load images into the node's containerd
#   tests/e2e/testbed.sh sync-versions     rewrite go.mod/go.sum/pom from versions.env
#
# DIR defaults to ${TESTBED_DIR:-/tmp/referral-testbed}. After start,
# `source DIR/env` exports KUBECONFIG, REFOP_TEST_MONGODB_URI,
# REFOP_TEST_REDIS_URL, REFOP_TEST_S3_* (endpoint, bucket, region, keys),
# TESTBED_DIR (and a few TESTBED_* extras).
# Built binaries are cached under ${REFOP_CACHE_DIR:-~/.cache/referral-operator}
# keyed by version. See TESTBED.md.
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$E2E_DIR/versions.env"

CACHE_ROOT="${REFOP_CACHE_DIR:-$HOME/.cache/referral-operator}"
ETCD_CACHE="$CACHE_ROOT/etcd-$ETCD_VERSION"
MONGO_CACHE="$CACHE_ROOT/mongo-java-server-$MONGO_JAVA_SERVER_VERSION"
S3_CACHE="$CACHE_ROOT/versitygw-$VERSITYGW_VERSION"
KUBE_MOD_DIR="$E2E_DIR/controlplane/kube"
if [[ -n ${TESTBED_KUBERNETES_VERSION:-} && $TESTBED_KUBERNETES_VERSION != "$KUBERNETES_VERSION" ]]; then
  [[ $TESTBED_KUBERNETES_VERSION =~ ^v1\.[0-9]+\.[0-9]+$ ]] ||
    { echo "TESTBED_KUBERNETES_VERSION must look like v1.35.4, not $TESTBED_KUBERNETES_VERSION" >&2; exit 2; }
  KUBERNETES_VERSION=$TESTBED_KUBERNETES_VERSION
  KUBE_MOD_DIR="$CACHE_ROOT/kube-modules/$KUBERNETES_VERSION"
  KUBE_MOD_GENERATED=1
fi
ETCD_MOD_DIR="$E2E_DIR/controlplane/etcd"
MONGO_PROJECT_DIR="$E2E_DIR/mongo-server"
S3_MOD_DIR="$E2E_DIR/s3server"
# The bucket the S3 server starts with.
S3_BUCKET=refop-test
NODE_SRC="$E2E_DIR/node"
KUBE_ROUTER_CACHE="$CACHE_ROOT/kube-router-$KUBE_ROUTER_VERSION"
COREDNS_CACHE="$CACHE_ROOT/coredns-$COREDNS_VERSION"
LOCAL_PATH_CACHE="$CACHE_ROOT/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION"
WORKER_CACHE="$CACHE_ROOT/standin-worker"

READY_TIMEOUT="${TESTBED_READY_TIMEOUT:-90}"
# Processes in stop order (dependents first): the control plane and servers...
CP_PROCS=(kube-controller-manager kube-apiserver mongo redis s3 etcd)
# ... and the node's, stopped before them (node_stop).
NODE_PROCS=(kubelet kube-router kube-proxy kube-scheduler containerd)
PROCS=("${CP_PROCS[@]}")

# shellcheck source=node/node.sh
source "$E2E_DIR/node/node.sh"

log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- install ---

APT_PACKAGES=(redis-server redis-tools openssl stunnel4 curl ca-certificates python3 util-linux
  # the node: container runtime, CNI plugins, what kube-proxy and kube-router
  # run (iptables, ipset, conntrack), image building, nsenter/ip
  containerd runc containernetworking-plugins iptables ipset conntrack iproute2
  busybox-static buildah libc6-dev gcc tzdata)

apt_install_missing() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven openjdk-17-jdk-headless)
  [[ ${#missing[@]} -eq 0 ]] && return 0

  [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]} and not root: install them first"
  log "apt-get install ${missing[*]}"
  local t0; t0=$(now)
  # Keep package maintainer scripts from starting system services (the
  # redis-server package would start one on :6379). Only when no policy is
  # already in place, and removed afterwards.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
  fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600
             install --no-install-recommends "${missing[@]}")
  local rc=0
  "${apt[@]}" >"$CACHE_ROOT/apt-install.log" 2>&1 || rc=$?
  if [[ $rc -ne 0 ]]; then
    log "apt-get install failed (rc=$rc); running apt-get update and retrying"
    rc=0
    { env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update &&
      "${apt[@]}"; } >>"$CACHE_ROOT/apt-install.log" 2>&1 || rc=$?
  fi
  [[ $added_policy -eq 1 ]] && rm -f "$policy"
  if [[ $rc -ne 0 ]]; then
    tail -n 30 "$CACHE_ROOT/apt-install.log" >&2
    die "apt-get install ${missing[*]} failed (full log: $CACHE_ROOT/apt-install.log)"
  fi
  log "installed ${missing[*]} in $(elapsed "$t0")s"
}

# k8s.io/kubernetes v1.X.Y -> staging modules v0.X.Y
staging_version() { echo "v0.${KUBERNETES_VERSION#v1.}"; }

go_env() {
  env GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOWORK=off "$@"
}

check_go_mods() {
  command -v go >/dev/null 2>&1 || die "go not found (need Go >= 1.26 on PATH)"
  local got sv
  got=$(cd "$KUBE_MOD_DIR" && go_env go list -m -f '{{.Version}}' k8s.io/kubernetes)
  [[ $got == "$KUBERNETES_VERSION" ]] ||
    die "controlplane/kube/go.mod has k8s.io/kubernetes $got but versions.env says $KUBERNETES_VERSION; run: $0 sync-versions"
  sv=$(staging_version)
  if grep -E '^\s*k8s\.io/[a-z0-9-]+ => k8s\.io/' "$KUBE_MOD_DIR/go.mod" | grep -vq " $sv\$"; then
    die "controlplane/kube/go.mod has replaces not at $sv; run: $0 sync-versions"
  fi
  got=$(cd "$ETCD_MOD_DIR" && go_env go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
  [[ $got == "$ETCD_VERSION" ]] ||
    die "controlplane/etcd/go.mod has etcd $got but versions.env says $ETCD_VERSION; run: $0 sync-versions"
  got=$(cd "$S3_MOD_DIR" && go_env go list -m -f '{{.Version}}' github.com/versity/versitygw)
  [[ $got == "$VERSITYGW_VERSION" ]] ||
    die "s3server/go.mod has versitygw $got but versions.env says $VERSITYGW_VERSION; run: $0 sync-versions"
  local dir module want
  for dir in kube-router:github.com/cloudnativelabs/kube-router/v2:$KUBE_ROUTER_VERSION \
             coredns:github.com/coredns/coredns:$COREDNS_VERSION \
             local-path:github.com/rancher/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION; do
    IFS=: read -r dir module want <<<"$dir"
    got=$(cd "$NODE_SRC/$dir" && go_env go list -m -f '{{.Version}}' "$module")
    [[ $got == "$want" ]] ||
      die "node/$dir/go.mod has $module $got but versions.env says $want; run: $0 sync-versions"
  done
}

# Hash of everything that determines a build's output.
stamp_of() { # stdin -> short hash, toolchain versions included
  { go version 2>/dev/null || true; java -version 2>&1 || true; cat; } | sha256sum | cut -c1-16
}

kube_ldflags() {
  local minor date pkg ld="-s -w"
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  # Reproducible build date: the release time of the k8s.io/kubernetes module.
  date=$(cd "$KUBE_MOD_DIR" && go_env go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes 2>/dev/null) ||
    date=1970-01-01T00:00:00Z
  # Same variables as kubernetes' hack/lib/version.sh (gitCommit is not known
  # for a module build and keeps its placeholder).
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  echo "$ld"
}

# Stamp of a Go build: its flags, packages, module files and sources, toolchain.
go_stamp() { # moddir ldflags packages...
  local moddir=$1; shift
  printf '%s\n' "$@" | cat - "$moddir/go.mod" "$moddir/go.sum" "$moddir"/*.go | stamp_of
}

build_go() { # name moddir cachedir ldflags packages...
  local name=$1 moddir=$2 cache=$3; shift 3
  local ldflags=$1; shift
  local pkgs=("$@")
  local stamp; stamp=$(go_stamp "$moddir" "$ldflags" "${pkgs[@]}")
  local p ok=1
  for p in "${pkgs[@]}"; do [[ -x $cache/bin/$(basename "$p") ]] || ok=0; done
  if [[ $ok -eq 1 && -f $cache/.stamp && $(cat "$cache/.stamp") == "$stamp" ]]; then
    return 0
  fi
  log "building $name (${pkgs[*]##*/}) into $cache/bin — cold builds take minutes on 2 cores; log: $cache/build.log"
  local t0; t0=$(now)
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp/bin"
  # A private Go build cache, removed once the binaries are cached: it holds ~3 GB
  # after a Kubernetes build, and nothing reuses it until the next version bump.
  if ! (cd "$moddir" && GOCACHE="$cache.tmp/go-build" go_env go build -p "${TESTBED_GO_BUILD_P:-2}" -trimpath -ldflags "$ldflags" \
          -o "$cache.tmp/bin/" "${pkgs[@]}") >"$cache.tmp/build.log" 2>&1; then
    tail -n 40 "$cache.tmp/build.log" >&2
    die "building $name failed (log: $cache.tmp/build.log)"
  fi
  local secs; secs=$(elapsed "$t0")
  chmod -R u+w "$cache.tmp/go-build" 2>/dev/null || true
  rm -rf "$cache.tmp/go-build"
  echo "$stamp" >"$cache.tmp/.stamp"
  echo "$(date -u +%FT%TZ) $name built in ${secs}s" >>"$cache.tmp/build.log"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  echo "$(date -u +%FT%TZ) $name ${pkgs[*]##*/} ${secs}s" >>"$CACHE_ROOT/build-times.log"
  BUILT+=("$name in ${secs}s")
}

# The control plane's and the node's Kubernetes commands: one build, so the
# packages they share are compiled once.
KUBE_PKGS=(
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kubectl
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubelet
  k8s.io/kubernetes/cmd/kube-proxy
)

# The cache directory of this version's Kubernetes build carries the first
# characters of its stamp, so checkouts whose module files differ (a branch that
# adds a command, a toolchain update) keep a build each instead of rebuilding
# over one another's.
kube_cache_dir() {
  local stamp; stamp=$(go_stamp "$KUBE_MOD_DIR" "$(kube_ldflags)" "${KUBE_PKGS[@]}")
  echo "$CACHE_ROOT/kubernetes-$KUBERNETES_VERSION-${stamp:0:8}"
}

build_kube() {
  KUBE_CACHE=$(kube_cache_dir)
  build_go "kubernetes $KUBERNETES_VERSION" "$KUBE_MOD_DIR" "$KUBE_CACHE" "$(kube_ldflags)" "${KUBE_PKGS[@]}"
}

build_etcd() {
  build_go "etcd $ETCD_VERSION" "$ETCD_MOD_DIR" "$ETCD_CACHE" "-s -w" \
    referral-operator/testbed/controlplane/etcd
}

# ---- the node's own builds (its Kubernetes commands are in build_kube) ----

build_node_go() {
  build_go "kube-router $KUBE_ROUTER_VERSION" "$NODE_SRC/kube-router" "$KUBE_ROUTER_CACHE" "-s -w" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
  build_go "coredns $COREDNS_VERSION" "$NODE_SRC/coredns" "$COREDNS_CACHE" "-s -w" \
    referral-operator/testbed/node/coredns
  build_go "local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION" "$NODE_SRC/local-path" "$LOCAL_PATH_CACHE" "-s -w" \
    github.com/rancher/local-path-provisioner
  build_go "stand-in worker" "$NODE_SRC/worker" "$WORKER_CACHE" "-s -w" \
    referral-operator/testbed/node/worker
}

# The pod sandbox's pause binary, from the kubernetes module's own pause.c,
# with the flags of its build/pause/Makefile.
build_pause() {
  local src tag stamp
  src=$(cd "$KUBE_MOD_DIR" && go_env go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause
  tag=$(sed -n 's/^TAG ?= *//p' "$src/Makefile")
  [[ -n $tag ]] || die "no TAG in $src/Makefile"
  PAUSE_CACHE="$CACHE_ROOT/pause-$tag"
  stamp=$( { gcc --version | head -n1; cat "$src/linux/pause.c"; } | sha256sum | cut -c1-16)
  if [[ -x $PAUSE_CACHE/bin/pause && $(cat "$PAUSE_CACHE/.stamp" 2>/dev/null) == "$stamp" ]]; then return 0; fi
  command -v gcc >/dev/null || die "gcc is needed to build the pause binary"
  rm -rf "$PAUSE_CACHE.tmp" && mkdir -p "$PAUSE_CACHE.tmp/bin"
  gcc -Os -Wall -Werror -static "-DVERSION=v$tag-referral-testbed" -o "$PAUSE_CACHE.tmp/bin/pause" "$src/linux/pause.c" ||
    die "compiling $src/linux/pause.c failed (a static glibc is in Debian's libc6-dev)"
  strip "$PAUSE_CACHE.tmp/bin/pause"
  echo "$stamp" >"$PAUSE_CACHE.tmp/.stamp"
  rm -rf "$PAUSE_CACHE" && mv "$PAUSE_CACHE.tmp" "$PAUSE_CACHE"
  BUILT+=("pause $tag")
}

build_s3() {
  local v="-X main.Version=$VERSITYGW_VERSION -X main.Build=module -X main.BuildTime=none"
  build_go "versitygw $VERSITYGW_VERSION" "$S3_MOD_DIR" "$S3_CACHE" "-s -w $v" \
    github.com/versity/versitygw/cmd/versitygw
}

build_mongo() {
  local stamp
  stamp=$(find "$MONGO_PROJECT_DIR/pom.xml" "$MONGO_PROJECT_DIR/src" -type f | sort | xargs cat |
          { cat; echo "$MONGO_JAVA_SERVER_VERSION"; } | stamp_of)
  # Named by its stamp, as the Kubernetes build: a checkout with other sources (and
  # a bed it started, which reads the jar) keeps its own.
  MONGO_CACHE="$CACHE_ROOT/mongo-java-server-$MONGO_JAVA_SERVER_VERSION-${stamp:0:8}"
  if [[ -f $MONGO_CACHE/mongo-server.jar && -f $MONGO_CACHE/.stamp && $(cat "$MONGO_CACHE/.stamp") == "$stamp" ]]; then
    return 0
  fi
  local pom_default
  pom_default=$(sed -n 's:.*<mongo-java-server.version>\(.*\)</mongo-java-server.version>.*:\1:p' "$MONGO_PROJECT_DIR/pom.xml")
  [[ $pom_default == "$MONGO_JAVA_SERVER_VERSION" ]] ||
    log "warning: mongo-server/pom.xml default $pom_default != versions.env $MONGO_JAVA_SERVER_VERSION (versions.env wins; run sync-versions)"
  log "building mongo-server (mongo-java-server $MONGO_JAVA_SERVER_VERSION) into $MONGO_CACHE"
  local t0; t0=$(now)
  rm -rf "$MONGO_CACHE.tmp" && mkdir -p "$MONGO_CACHE.tmp"
  local mvn=(mvn -B -q -f "$MONGO_PROJECT_DIR/pom.xml" package
             "-Dmongo-java-server.version=$MONGO_JAVA_SERVER_VERSION"
             "-Dmongo-server.build.dir=$MONGO_CACHE.tmp/build")
  # Offline first (fast, works once ~/.m2 is populated); online otherwise.
  if ! "${mvn[@]}" -o >"$MONGO_CACHE.tmp/build.log" 2>&1; then
    if ! "${mvn[@]}" >>"$MONGO_CACHE.tmp/build.log" 2>&1; then
      tail -n 40 "$MONGO_CACHE.tmp/build.log" >&2
      die "building mongo-server failed (log: $MONGO_CACHE.tmp/build.log)"
    fi
  fi
  mv "$MONGO_CACHE.tmp/build/mongo-server.jar" "$MONGO_CACHE.tmp/build/lib" "$MONGO_CACHE.tmp/"
  rm -rf "$MONGO_CACHE.tmp/build"
  local secs; secs=$(elapsed "$t0")
  echo "$stamp" >"$MONGO_CACHE.tmp/.stamp"
  rm -rf "$MONGO_CACHE" && mv "$MONGO_CACHE.tmp" "$MONGO_CACHE"
  echo "$(date -u +%FT%TZ) mongo-server $MONGO_JAVA_SERVER_VERSION ${secs}s" >>"$CACHE_ROOT/build-times.log"
  BUILT+=("mongo-server $MONGO_JAVA_SERVER_VERSION in ${secs}s")
}

cmd_install() {
  mkdir -p "$CACHE_ROOT"
  local t0; t0=$(now)
  BUILT=()
  apt_install_missing
  # One builder at a time per cache (parallel test runs, two checkouts...).
  exec 9>"$CACHE_ROOT/.lock"
  flock 9
  if [[ -n ${KUBE_MOD_GENERATED:-} ]]; then generated_kube_module; fi
  check_go_mods
  build_kube
  build_etcd
  build_s3
  build_mongo
  build_node_go
  build_pause
  flock -u 9
  if [[ ${#BUILT[@]} -gt 0 ]]; then
    log "built: $(printf "%s; " "${BUILT[@]}")(install took $(elapsed "$t0")s)"
  else
    log "install: everything cached under $CACHE_ROOT ($(elapsed "$t0")s)"
  fi
}

# ------------------------------------------------------------------ start ---

state_dir() { echo "${1:-${TESTBED_DIR:-/tmp/referral-testbed}}"; }

# Start time (clock ticks since boot) of a PID: guards against PID reuse.
proc_starttime() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }

pid_alive() { # name -> 0 if the process recorded for name is still ours
  local name=$1 pid st
  [[ -f $DIR/pids/$name.pid ]] || return 1
  pid=$(cat "$DIR/pids/$name.pid")
  [[ -n $pid && -d /proc/$pid ]] || return 1
  # An exited process waits as a zombie until its parent (init, since start
  # detaches them) reaps it, which can take seconds: it is gone all the same.
  [[ $(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
  st=$(proc_starttime "$pid")
  [[ ! -f $DIR/pids/$name.starttime || $st == "$(cat "$DIR/pids/$name.starttime")" ]]
}

free_ports() { # n -> n distinct free loopback ports
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

launch() { # name cmd... : background, detached, logs to $DIR/logs/name.log
  local name=$1; shift
  echo "+ $*" >"$DIR/logs/$name.log"
  # For `restart`: the arguments exactly (no secret is ever an argument here).
  mkdir -p "$DIR/cmdline" && printf '%s\0' "$@" >"$DIR/cmdline/$name"
  if [[ -n ${NODE_LOCK_FD:-} && $name != node-lock ]]; then
    # Only the holder keeps the node bed's lock open.
    setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 {NODE_LOCK_FD}>&- &
  else
    setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
  fi
  local pid=$!
  node_adopt "$pid"
  echo "$pid" >"$DIR/pids/$name.pid"
  local st=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do st=$(proc_starttime "$pid") && [[ -n $st ]] && break; sleep 0.05; done
  echo "$st" >"$DIR/pids/$name.starttime"
}

fail_start() { # name reason
  log "ERROR: $1 failed to start: $2"
  if [[ -f $DIR/logs/$1.log ]]; then
    log "---- last 40 lines of $DIR/logs/$1.log ----"
    tail -n 40 "$DIR/logs/$1.log" >&2
    log "----"
  fi
  exit 1
}

# TERM to each, then KILL to those still there after TESTBED_STOP_TIMEOUT; processes
# of the bed by their PID files only.
stop_procs() { # name...
  local n pid stopping=()
  for n in "$@"; do
    if pid_alive "$n"; then
      kill -TERM "$(cat "$DIR/pids/$n.pid")" 2>/dev/null || true
      stopping+=("$n")
    fi
  done
  local deadline=$(( $(date +%s) + ${TESTBED_STOP_TIMEOUT:-15} ))
  for n in "${stopping[@]}"; do
    while pid_alive "$n" && [[ $(date +%s) -lt $deadline ]]; do sleep 0.1; done
    if pid_alive "$n"; then
      pid=$(cat "$DIR/pids/$n.pid")
      log "$n (pid $pid) did not exit on TERM; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      while pid_alive "$n"; do sleep 0.1; done
    fi
    log "stopped $n"
  done
}
stop_proc() { stop_procs "$1"; }

wait_for() { # name timeout check-cmd...
  local name=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  while true; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    pid_alive "$name" || fail_start "$name" "process exited"
    [[ $(date +%s) -lt $deadline ]] || fail_start "$name" "not ready after ${timeout}s"
    sleep 0.2
  done
}

gen_pki() {
  local pki=$DIR/pki
  mkdir -p "$pki"
  mkca() { # name CN
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout "$pki/$1.key" -out "$pki/$1.crt" \
      -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  }
  sign() { # ca name subject extensions
    openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$pki/$2.key" -out "$pki/$2.csr" -subj "$3" 2>/dev/null
    printf '%s\n' "$4" >"$pki/$2.ext"
    openssl x509 -req -in "$pki/$2.csr" -CA "$pki/$1.crt" -CAkey "$pki/$1.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$pki/$2.ext" -out "$pki/$2.crt" 2>/dev/null
    rm -f "$pki/$2.csr" "$pki/$2.ext"
  }
  mkca ca referral-testbed-ca
  sign ca apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_HOST_IP"
  local client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign ca admin "/O=system:masters/CN=admin" "$client"
  sign ca controller-manager "/CN=system:kube-controller-manager" "$client"
  # Front proxy (aggregation layer) CA + client: without it the apiserver
  # publishes no requestheader CA and the controller-manager logs errors.
  mkca front-proxy-ca referral-testbed-front-proxy-ca
  sign front-proxy-ca front-proxy-client "/CN=front-proxy-client" "$client"
  # Service-account token signing key pair.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
}

write_kubeconfig() { # file user cert key server
  local b64="base64 -w0"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: referral-testbed
  cluster:
    server: $5
    certificate-authority-data: $($b64 <"$DIR/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 <"$3")
    client-key-data: $($b64 <"$4")
contexts:
- name: $2@referral-testbed
  context:
    cluster: referral-testbed
    user: $2
current-context: $2@referral-testbed
EOF
  chmod 600 "$1"
}

etcd_shm_dir() { echo "/dev/shm/referral-testbed-etcd-$(printf '%s' "$DIR" | sha256sum | cut -c1-12)"; }

# Audit policy for --audit-log: one Metadata line per write request (user, verb,
# resource, name, response code) by anyone, and per get or list by a ServiceAccount
# outside kube-system (an operator under test; the controller-manager's reads are
# left out), nothing for watches, so a benchmark can count who wrote and read what
# without the log growing with every watch.
write_audit_policy() { # file
  cat >"$1" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
    verbs: ["get", "list"]
  - level: None
EOF
}

cmd_start() {
  local arg dir_arg="" audit=0
  NODE_ON=1
  [[ ${TESTBED_NODE:-1} == 0 ]] && NODE_ON=""
  for arg in "$@"; do
    case $arg in
      --audit-log) audit=1 ;;
      --no-node) NODE_ON="" ;;
      -*) die "start: unknown option $arg (known: --audit-log, --no-node)" ;;
      *) dir_arg=$arg ;;
    esac
  done
  DIR=$(state_dir "$dir_arg")
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  local n
  for n in "${CP_PROCS[@]}" "${NODE_PROCS[@]}" node-lock; do
    pid_alive "$n" && die "a test bed is already running in $DIR ($n pid $(cat "$DIR/pids/$n.pid")); run: $0 stop $DIR"
  done
  if [[ -n $NODE_ON ]]; then
    [[ $(id -u) -eq 0 ]] || die "the node needs root (network namespaces, cgroups, containerd); start a control-plane-only bed with --no-node"
    PROCS=("${NODE_PROCS[@]}" "${CP_PROCS[@]}")
  fi
  local t_all; t_all=$(now)
  cmd_install
  local t0; t0=$(now)

  # Only our own files under DIR are reset.
  rm -rf "${DIR:?}/pki" "$DIR/logs" "$DIR/pids" "$DIR/redis" "$DIR/s3" "$DIR/kubeconfig" "$DIR/env" "${DIR:?}/bin" \
         "$DIR/controller-manager.kubeconfig" "$DIR/ports" "$DIR/audit-policy.yaml" "$DIR/node-on"
  mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/redis" "$DIR/s3/$S3_BUCKET"
  local shm; shm=$(etcd_shm_dir)
  rm -rf "$shm"; echo "$shm" >"$DIR/etcd-data-dir"

  # From here on, a failure stops whatever was started.
  trap 'rc=$?; if [[ $rc -ne 0 ]]; then log "start failed; stopping what was started"; cmd_stop "$DIR" >&2 || true; fi' EXIT

  gen_pki
  # The address the servers listen on: loopback, or with a node the host's end
  # of the node's link, which pods reach too.
  local host=127.0.0.1
  if [[ -n $NODE_ON ]]; then
    node_lock_acquire
    touch "$DIR/node-on"
    node_teardown_leftovers
    node_cgroups_up
    launch node-lock sleep infinity
    node_start_early
    host=$NODE_HOST_IP
  fi
  local ports etcd_port etcd_peer api_port kcm_port mongo_port redis_port sched_port s3_port
  ports=$(free_ports 8)
  read -r etcd_port etcd_peer api_port kcm_port mongo_port redis_port sched_port s3_port <<<"$ports"
  cat >"$DIR/ports" <<EOF
etcd=$etcd_port
etcd-peer=$etcd_peer
kube-apiserver=$api_port
kube-controller-manager=$kcm_port
mongo=$mongo_port
redis=$redis_port
kube-scheduler=$sched_port
s3=$s3_port
EOF
  local api_url="https://$host:$api_port"
  local audit_flags=()
  if [[ $audit -eq 1 ]]; then
    write_audit_policy "$DIR/audit-policy.yaml"
    audit_flags=(--audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/logs/audit.log"
                 --audit-log-format json --audit-log-mode blocking --audit-log-maxsize 0)
  fi
  write_kubeconfig "$DIR/kubeconfig" admin "$DIR/pki/admin.crt" "$DIR/pki/admin.key" "$api_url"
  write_kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager \
    "$DIR/pki/controller-manager.crt" "$DIR/pki/controller-manager.key" "$api_url"

  # --- etcd (data in RAM, no fsync: a test bed, not a cluster) ---
  launch etcd "$ETCD_CACHE/bin/etcd" \
    --name testbed --data-dir "$shm" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "testbed=http://127.0.0.1:$etcd_peer" --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn
  # Redis and mongo need nothing from the control plane: start them now so
  # their start-up overlaps with the apiserver's.
  # Off loopback, Redis' protected mode refuses clients without a password; the
  # host's end of the node's link is reachable from this machine and its pods only.
  launch redis redis-server --port "$redis_port" --bind "$host" --protected-mode "$([[ $host == 127.0.0.1 ]] && echo yes || echo no)" \
    --save '' --appendonly no --daemonize no --dir "$DIR/redis" --logfile ''
  # Fresh credentials each start, handed over in the environment (never on the
  # command line, where any process could read them); the posix backend keeps
  # each bucket as a directory under DIR/s3. Debug logging writes each request's
  # headers (Authorization masked) to logs/s3.log, where a test can see what
  # reached the server (server-side encryption headers).
  local s3_access s3_secret
  s3_access="refop$(openssl rand -hex 6)"
  s3_secret=$(openssl rand -hex 20)
  ROOT_ACCESS_KEY_ID=$s3_access ROOT_SECRET_ACCESS_KEY=$s3_secret \
    launch s3 "$S3_CACHE/bin/versitygw" --port "$host:$s3_port" --quiet --log-level debug posix "$DIR/s3"
  # shellcheck disable=SC2086
  launch mongo java ${TESTBED_MONGO_JAVA_OPTS:--Xms32m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto} \
    -jar "$MONGO_CACHE/mongo-server.jar" "$mongo_port" "$MONGO_SERVER_VERSION" "$host"

  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

  # --- kube-apiserver ---
  # Without a node it advertises loopback, which Endpoints may not hold, so the
  # `kubernetes` Service gets none; with a node, pods reach it on the host's end
  # of the link, and its endpoint is kept the usual way.
  local node_flags=(--endpoint-reconciler-type none)
  if [[ -n $NODE_ON ]]; then
    node_flags=(--kubelet-client-certificate "$DIR/pki/apiserver-kubelet-client.crt"
                --kubelet-client-key "$DIR/pki/apiserver-kubelet-client.key"
                --kubelet-preferred-address-types InternalIP)
  fi
  launch kube-apiserver "$KUBE_CACHE/bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$host" --advertise-address "$host" --secure-port "$api_port" \
    --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
    --client-ca-file "$DIR/pki/ca.crt" \
    --requestheader-client-ca-file "$DIR/pki/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$DIR/pki/front-proxy-client.crt" \
    --proxy-client-key-file "$DIR/pki/front-proxy-client.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$DIR/pki/sa.pub" \
    --service-account-signing-key-file "$DIR/pki/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged=false \
    "${node_flags[@]}" \
    --cert-dir "$DIR/pki/apiserver-generated" \
    --profiling="${TESTBED_APISERVER_PROFILING:-false}" \
    "${audit_flags[@]}" \
    --v "${TESTBED_APISERVER_V:-1}"
  local curl_admin=(curl -fsS --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key")
  wait_for kube-apiserver "$READY_TIMEOUT" "${curl_admin[@]}" "$api_url/readyz"

  # --- kube-controller-manager ---
  # No cloud and no node CIDRs here: off with the controllers for them, those this
  # version still has (1.37 dropped the cloud ones, and naming an unknown one is fatal).
  local kcm_controllers="*" known
  known=$("$KUBE_CACHE/bin/kube-controller-manager" --help 2>&1 | sed -n 's/.*All controllers: //p')
  for c in cloud-node-lifecycle-controller service-lb-controller node-route-controller node-ipam-controller; do
    [[ ", $known," == *", $c,"* ]] && kcm_controllers+=",-$c"
  done
  launch kube-controller-manager "$KUBE_CACHE/bin/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" \
    --cert-dir "$DIR/pki/controller-manager-generated" \
    --leader-elect=false \
    --controllers "${TESTBED_KCM_CONTROLLERS:-$kcm_controllers}" \
    --service-account-private-key-file "$DIR/pki/sa.key" \
    --root-ca-file "$DIR/pki/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file "$DIR/pki/ca.crt" --cluster-signing-key-file "$DIR/pki/ca.key" \
    --cluster-name referral-testbed \
    --allocate-node-cidrs=false \
    --profiling=false \
    --v "${TESTBED_KCM_V:-1}"
  wait_for kube-controller-manager "$READY_TIMEOUT" curl -fsSk "https://127.0.0.1:$kcm_port/healthz"

  wait_for redis 30 bash -c "[[ \$(redis-cli -h '$host' -p '$redis_port' ping) == PONG ]]"
  # Any HTTP answer (403 to an anonymous request) means the gateway is serving.
  wait_for s3 30 curl -sS -o /dev/null "http://$host:$s3_port/"
  wait_for mongo 60 bash -c "grep -q '^ready' '$DIR/logs/mongo.log' && exec 3<>/dev/tcp/$host/$mongo_port"

  if [[ -n $NODE_ON ]]; then node_start_late "$api_url" "$sched_port"; fi

  cat >"$DIR/env" <<EOF
export TESTBED_DIR='$DIR'
export KUBECONFIG='$DIR/kubeconfig'
export REFOP_TEST_MONGODB_URI='mongodb://$host:$mongo_port'
export REFOP_TEST_REDIS_URL='redis://$host:$redis_port'
export TESTBED_APISERVER_URL='$api_url'
export TESTBED_KUBECTL='$KUBE_CACHE/bin/kubectl'
export TESTBED_ETCD_ENDPOINT='http://127.0.0.1:$etcd_port'
export REFOP_TEST_S3_ENDPOINT='http://$host:$s3_port'
export REFOP_TEST_S3_BUCKET='$S3_BUCKET'
export REFOP_TEST_S3_REGION='us-east-1'
export REFOP_TEST_S3_ACCESS_KEY_ID='$s3_access'
export REFOP_TEST_S3_SECRET_ACCESS_KEY='$s3_secret'
export REFOP_TEST_S3_LOG='$DIR/logs/s3.log'
# kubectl of the bed's own Kubernetes version first (the e2e suite runs \`kubectl\`).
export PATH='$DIR/bin':"\$PATH"
EOF
  mkdir -p "$DIR/bin" && ln -sf "$KUBE_CACHE/bin/kubectl" "$DIR/bin/kubectl"
  if [[ $audit -eq 1 ]]; then echo "export TESTBED_AUDIT_LOG='$DIR/logs/audit.log'" >>"$DIR/env"; fi
  if [[ -n $NODE_ON ]]; then
    cat >>"$DIR/env" <<EOF
export TESTBED_NODE='$NODE_NAME'
export TESTBED_CONTAINERD_ADDRESS='$DIR/node/containerd.sock'
export TESTBED_STORAGE_CLASS='local-path'
export TESTBED_HOST_IP='$NODE_HOST_IP'
export TESTBED_WORKER_IMAGE='$TESTBED_WORKER_IMAGE'
export TESTBED_WORKER_IMAGE_NEXT='$TESTBED_WORKER_IMAGE_NEXT'
export TESTBED_REDIS_IMAGE='$TESTBED_REDIS_IMAGE'
export TESTBED_BUSYBOX_IMAGE='$TESTBED_BUSYBOX_IMAGE'
EOF
  fi
  trap - EXIT
  log "started in $DIR in $(elapsed "$t0")s (total incl. install check $(elapsed "$t_all")s):"
  log "  kube-apiserver $api_url  etcd 127.0.0.1:$etcd_port  controller-manager 127.0.0.1:$kcm_port"
  log "  mongo $host:$mongo_port  redis $host:$redis_port  s3 http://$host:$s3_port (bucket $S3_BUCKET)"
  log "  source $DIR/env   # KUBECONFIG, REFOP_TEST_MONGODB_URI, REFOP_TEST_REDIS_URL, REFOP_TEST_S3_*, TESTBED_DIR"
}

# ------------------------------------------------------------------- stop ---

cmd_stop() {
  DIR=$(state_dir "${1:-}")
  [[ -d $DIR ]] || { log "nothing to stop: $DIR does not exist"; return 0; }
  DIR=$(cd "$DIR" && pwd)
  local n
  if [[ -f $DIR/node-on ]]; then PROCS=("${NODE_PROCS[@]}" "${CP_PROCS[@]}"); NODE_ON=1; fi
  # Record each process's peak RSS before it is gone (the figure to report
  # for a test-suite run): $DIR/logs/peak-memory-at-stop.txt.
  for n in "${PROCS[@]}"; do
    if pid_alive "$n"; then
      cmd_peak_memory "$DIR" >"$DIR/logs/peak-memory-at-stop.txt" 2>&1 || true
      sed 's/^/  /' "$DIR/logs/peak-memory-at-stop.txt" >&2
      break
    fi
  done
  if [[ -f $DIR/node-on ]]; then
    node_stop
  fi
  # The API server and controller-manager first: on TERM the API server removes
  # its endpoint lease, which needs etcd still up.
  stop_procs kube-controller-manager kube-apiserver
  stop_procs mongo redis s3 etcd
  # The node bed's lock goes last: until here, its resources are still ours.
  stop_proc node-lock
  if [[ -n ${NODE_ON:-} ]]; then node_cgroups_down; fi
  rm -f "$DIR"/pids/*.pid "$DIR"/pids/*.starttime "$DIR/env" "$DIR/node-on"
  if [[ -f $DIR/etcd-data-dir ]]; then
    local shm; shm=$(cat "$DIR/etcd-data-dir")
    [[ $shm == /dev/shm/referral-testbed-etcd-* ]] && rm -rf "$shm"
    rm -f "$DIR/etcd-data-dir"
  fi
  return 0
}

# ---------------------------------------------------------------- restart ---

# Stops etcd or the API server of a running bed, waits, and starts it again with the
# arguments it had (plus ARGS, which a later restart keeps), then waits until it
# serves. For fault tests (tests/e2e/faults.rs) in a bed of their own: every client
# of the bed sees the outage.
cmd_restart() { # DIR NAME [--down SECONDS] [ARG...]
  DIR=$(state_dir "${1:-}")
  [[ -d $DIR ]] || die "restart: no test bed in $DIR"
  DIR=$(cd "$DIR" && pwd)
  local name=${2:-} down=0
  [[ $# -ge 2 ]] && shift 2 || shift $#
  if [[ ${1:-} == --down ]]; then down=${2:?--down needs seconds}; shift 2; fi
  case $name in
    etcd | kube-apiserver) ;;
    *) die "restart: etcd or kube-apiserver, not '${name}'" ;;
  esac
  [[ -f $DIR/cmdline/$name ]] || die "restart: no recorded command line for $name in $DIR (bed started by an older testbed.sh)"
  pid_alive "$name" || die "restart: $name is not running in $DIR"
  [[ -f $DIR/node-on ]] && NODE_ON=1
  local args=() t0
  mapfile -d '' args <"$DIR/cmdline/$name"
  t0=$(now)
  # The API server stops listening at once on TERM but its process lingers (15 s
  # here): KILL after 2 s, so the outage lasts what the caller asked for.
  TESTBED_STOP_TIMEOUT=2 stop_proc "$name"
  sleep "$down"
  launch "$name" "${args[@]}" "$@"
  case $name in
    etcd) wait_for etcd 30 curl -fsS "http://127.0.0.1:$(port_of etcd)/health" ;;
    kube-apiserver)
      wait_for kube-apiserver "$READY_TIMEOUT" curl -fsS --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" \
        --key "$DIR/pki/admin.key" "https://$(listen_host):$(port_of kube-apiserver)/readyz" ;;
  esac
  log "restarted $name after ${down}s down; serving again $(elapsed "$t0")s after the stop"
}

# ----------------------------------------------------------------- status ---

port_of() { sed -n "s/^$1=//p" "$DIR/ports" 2>/dev/null; }
listen_host() { if [[ -f $DIR/node-on ]]; then echo "$NODE_HOST_IP"; else echo 127.0.0.1; fi; }

cmd_status() {
  DIR=$(state_dir "${1:-}")
  [[ -d $DIR ]] || { echo "not running (no $DIR)"; return 1; }
  DIR=$(cd "$DIR" && pwd)
  if [[ -f $DIR/node-on ]]; then PROCS=("${NODE_PROCS[@]}" "${CP_PROCS[@]}"); fi
  local n up=0 total=0 health
  for n in "${PROCS[@]}"; do
    total=$((total + 1))
    if pid_alive "$n"; then
      up=$((up + 1))
      health=""
      case $n in
        kube-apiserver)
          health=$(curl -fsS --max-time 5 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
                   "https://$(listen_host):$(port_of kube-apiserver)/readyz" 2>&1 || true) ;;
        kube-controller-manager)
          health=$(curl -fsSk --max-time 5 "https://127.0.0.1:$(port_of kube-controller-manager)/healthz" 2>&1 || true) ;;
        etcd) health=$(curl -fsS --max-time 5 "http://127.0.0.1:$(port_of etcd)/health" 2>&1 || true) ;;
        redis) health=$(redis-cli -h "$(listen_host)" -p "$(port_of redis)" ping 2>&1 || true) ;;
        s3) health=$(curl -sS --max-time 5 -o /dev/null -w 'http %{http_code}' "http://$(listen_host):$(port_of s3)/" 2>&1 || true) ;;
        mongo) health=$( (exec 3<>"/dev/tcp/$(listen_host)/$(port_of mongo)") 2>/dev/null && echo "tcp ok" || echo "tcp FAILED") ;;
        kube-scheduler) health=$(curl -fsSk --max-time 5 "https://127.0.0.1:$(port_of kube-scheduler)/healthz" 2>&1 || true) ;;
        kubelet) health=$(nsexec curl -fsS --max-time 5 http://127.0.0.1:10248/healthz 2>&1 || true) ;;
        kube-proxy) health=$(nsexec curl -fsS --max-time 5 http://127.0.0.1:10256/healthz >/dev/null 2>&1 && echo ok || echo FAILED) ;;
        kube-router) health=$(nsexec curl -fsS --max-time 5 http://127.0.0.1:20244/healthz 2>&1 || true) ;;
        containerd) health=$(ctr_ version >/dev/null 2>&1 && echo ok || echo FAILED) ;;
      esac
      printf '%-24s running pid %-8s port %-6s %s\n' "$n" "$(cat "$DIR/pids/$n.pid")" "$(port_of "$n")" "$health"
    else
      printf '%-24s not running\n' "$n"
    fi
  done
  [[ $up -eq $total && -f $DIR/env ]] || return 1
  echo "env file: $DIR/env"
  cat "$DIR/env"
}

cmd_peak_memory() {
  DIR=$(state_dir "${1:-}")
  DIR=$(cd "$DIR" && pwd)
  if [[ -f $DIR/node-on ]]; then PROCS=("${NODE_PROCS[@]}" "${CP_PROCS[@]}"); fi
  local n pid rss hwm sum_rss=0 sum_hwm=0 cp_rss=0 cp_hwm=0
  printf '%-24s %8s %12s %12s\n' process pid "VmRSS(MiB)" "VmHWM(MiB)"
  for n in "${PROCS[@]}"; do
    if pid_alive "$n"; then
      pid=$(cat "$DIR/pids/$n.pid")
      rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
      hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
      awk -v n="$n" -v p="$pid" -v r="$rss" -v h="$hwm" 'BEGIN { printf "%-24s %8s %12.1f %12.1f\n", n, p, r / 1024, h / 1024 }'
      sum_rss=$((sum_rss + rss)); sum_hwm=$((sum_hwm + hwm))
      case $n in kube-apiserver|kube-controller-manager|kube-scheduler|etcd) cp_rss=$((cp_rss + rss)); cp_hwm=$((cp_hwm + hwm)) ;; esac
    else
      printf '%-24s %8s\n' "$n" "-"
    fi
  done
  printf '%-24s %8s %12d %12d\n' "control plane (sum)" "" $((cp_rss / 1024)) $((cp_hwm / 1024))
  printf '%-24s %8s %12d %12d\n' "all (sum)" "" $((sum_rss / 1024)) $((sum_hwm / 1024))
  echo "(VmHWM is each process's own peak RSS; the sums of peaks are an upper bound of the joint peak)"
  if [[ -f $DIR/node-on ]]; then node_peak_memory; fi
}

# --------------------------------------------------------------- selftest ---

# Proves the running test bed works: API reachable, garbage collector,
# deployment/replicaset controllers and service-account controllers running,
# RBAC admin rights, Redis and the MongoDB-wire server answering.
cmd_selftest() {
  DIR=$(state_dir "${1:-}")
  DIR=$(cd "$DIR" && pwd)
  [[ -f $DIR/env ]] || die "no $DIR/env: start the test bed first"
  # shellcheck disable=SC1091
  source "$DIR/env"
  local k=("$TESTBED_KUBECTL" --kubeconfig "$KUBECONFIG") ns="testbed-selftest-$$" uid ok
  local t0; t0=$(now)
  "${k[@]}" get ns >/dev/null
  "${k[@]}" create namespace "$ns" >/dev/null
  "${k[@]}" -n "$ns" create configmap owner --from-literal=k=v >/dev/null
  uid=$("${k[@]}" -n "$ns" get configmap owner -o jsonpath='{.metadata.uid}')
  printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata:' '  name: dependent' \
    '  ownerReferences:' "  - {apiVersion: v1, kind: ConfigMap, name: owner, uid: \"$uid\"}" \
    'data: {k: "v"}' | "${k[@]}" -n "$ns" apply -f - >/dev/null
  "${k[@]}" -n "$ns" delete configmap owner >/dev/null
  ok=0
  for _ in $(seq 1 120); do
    "${k[@]}" -n "$ns" get configmap dependent >/dev/null 2>&1 || { ok=1; break; }
    sleep 0.5
  done
  [[ $ok -eq 1 ]] || die "selftest: garbage collector did not delete the dependent ConfigMap within 60s"
  echo "ok   garbage collector deleted the dependent ConfigMap"
  "${k[@]}" -n "$ns" create deployment web --image=registry.invalid/none:1 --replicas=1 >/dev/null
  ok=0
  for _ in $(seq 1 120); do
    [[ -n $("${k[@]}" -n "$ns" get replicasets -l app=web -o name 2>/dev/null) ]] && { ok=1; break; }
    sleep 0.5
  done
  [[ $ok -eq 1 ]] || die "selftest: no ReplicaSet for the Deployment within 60s"
  echo "ok   deployment controller created a ReplicaSet"
  ok=0
  for _ in $(seq 1 60); do
    "${k[@]}" -n "$ns" get serviceaccount default >/dev/null 2>&1 &&
      "${k[@]}" -n "$ns" get configmap kube-root-ca.crt >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.5
  done
  [[ $ok -eq 1 ]] || die "selftest: no default ServiceAccount / kube-root-ca.crt in the new namespace"
  echo "ok   serviceaccount + root-ca publisher controllers ran"
  [[ $("${k[@]}" auth can-i '*' '*') == yes ]] || die "selftest: admin is not cluster-admin"
  echo "ok   admin client cert has cluster-admin rights (system:masters)"
  "${k[@]}" delete namespace "$ns" --wait=false >/dev/null
  [[ $(redis-cli -u "$REFOP_TEST_REDIS_URL" ping) == PONG ]] || die "selftest: redis did not answer PONG"
  echo "ok   redis PONG"
  local mport=${REFOP_TEST_MONGODB_URI##*:} mhost=${REFOP_TEST_MONGODB_URI#mongodb://}
  mhost=${mhost%:*}
  (exec 3<>"/dev/tcp/$mhost/$mport") 2>/dev/null || die "selftest: mongo port $mport not accepting connections"
  echo "ok   mongo-java-server accepts connections on $mport"
  # An unsigned request must be refused: the gateway checks signatures.
  local code
  code=$(curl -sS -o /dev/null -w '%{http_code}' "$REFOP_TEST_S3_ENDPOINT/$REFOP_TEST_S3_BUCKET/") ||
    die "selftest: the S3 server at $REFOP_TEST_S3_ENDPOINT does not answer"
  [[ $code == 403 ]] || die "selftest: an anonymous S3 request got HTTP $code, expected 403"
  echo "ok   versitygw answers and refuses an unsigned request (403)"
  if [[ -n ${TESTBED_NODE:-} ]]; then
    local nodens="testbed-node-selftest-$$"
    "${k[@]}" create namespace "$nodens" >/dev/null
    node_selftest "$nodens" "${k[@]}"
    "${k[@]}" delete namespace "$nodens" --wait=false >/dev/null
  fi
  echo "selftest passed in $(elapsed "$t0")s"
}

# ------------------------------------------------------------ load-image ---

# Loads image archives (docker-archive or OCI, e.g. from scripts/build-images.sh
# operator) into the running node's containerd.
cmd_load_image() {
  DIR=$(state_dir "${1:-}")
  [[ $# -ge 2 ]] || die "usage: $0 load-image DIR ARCHIVE..."
  shift
  DIR=$(cd "$DIR" && pwd)
  if [[ ! -f $DIR/node-on ]] || ! pid_alive containerd; then die "no node runs in $DIR"; fi
  node_import "$@"
  log "loaded $*"
}

# ---------------------------------------------------------- sync-versions ---

# Points the kube wrapper module in `moddir` at k8s.io/kubernetes KUBERNETES_VERSION:
# a `replace` for every k8s.io/* v0.0.0 requirement of its go.mod, then tidy.
sync_kube_module() { # moddir
  local moddir=$1
  local sv; sv=$(staging_version)
  local genv=(env GOTOOLCHAIN=local GOFLAGS=-mod=mod GOWORK=off)
  log "kube wrapper -> k8s.io/kubernetes $KUBERNETES_VERSION, staging modules $sv"
  local dir
  dir=$("${genv[@]}" go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  local staging
  staging=$(awk '/^require \(/ { r = 1; next } r && /^\)/ { r = 0 } r && $2 == "v0.0.0" { print $1 }' "$dir/go.mod")
  [[ -n $staging ]] || die "found no k8s.io/* v0.0.0 requirements in $dir/go.mod"
  (
    cd "$moddir"
    local old args=()
    for old in $(go mod edit -json | python3 -c 'import json,sys; [print(r["Old"]["Path"]) for r in (json.load(sys.stdin).get("Replace") or [])]'); do
      args+=("-dropreplace=$old")
    done
    args+=("-require=k8s.io/kubernetes@$KUBERNETES_VERSION")
    go mod edit "${args[@]}"
    local m
    { echo; echo "replace ("; for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$sv"; done; echo ")"; } >>go.mod
    go mod edit -fmt
    "${genv[@]}" go mod tidy
  )
}

# TESTBED_KUBERNETES_VERSION (scripts/test-matrix.sh) builds another Kubernetes than
# versions.env names, from a wrapper module generated under the cache: the
# checked-in one with its go.mod pointed at that version.
generated_kube_module() {
  local moddir=$KUBE_MOD_DIR
  local want; want=$( { cat "$E2E_DIR/controlplane/kube/tools.go"; echo "$KUBERNETES_VERSION"; go version; } | sha256sum | cut -c1-16)
  [[ -f $moddir/.generated && $(cat "$moddir/.generated") == "$want" ]] && return 0
  log "generating the kube wrapper module for $KUBERNETES_VERSION in $moddir"
  rm -rf "$moddir" && mkdir -p "$moddir"
  cp "$E2E_DIR/controlplane/kube/tools.go" "$moddir/"
  printf 'module referral-operator/testbed/controlplane/kube\n\ngo 1.25.0\n' >"$moddir/go.mod"
  sync_kube_module "$moddir" >&2
  echo "$want" >"$moddir/.generated"
}

cmd_sync_versions() {
  command -v go >/dev/null 2>&1 || die "go not found"
  sync_kube_module "$KUBE_MOD_DIR"
  log "etcd wrapper -> go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  (cd "$ETCD_MOD_DIR" && go mod edit "-require=go.etcd.io/etcd/server/v3@$ETCD_VERSION" && "${genv[@]}" go mod tidy)
  log "s3server wrapper -> github.com/versity/versitygw $VERSITYGW_VERSION"
  (cd "$S3_MOD_DIR" && go mod edit "-require=github.com/versity/versitygw@$VERSITYGW_VERSION" && "${genv[@]}" go mod tidy)
  log "mongo-server pom default -> $MONGO_JAVA_SERVER_VERSION"
  sed -i "s:<mongo-java-server.version>.*</mongo-java-server.version>:<mongo-java-server.version>$MONGO_JAVA_SERVER_VERSION</mongo-java-server.version>:" \
    "$MONGO_PROJECT_DIR/pom.xml"
  log "done; commit versions.env, controlplane/*/go.mod, controlplane/*/go.sum, s3server/go.mod, s3server/go.sum, mongo-server/pom.xml"
}

# ------------------------------------------------------------------- main ---

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
  exit 2
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
  install) cmd_install ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  status) cmd_status "$@" ;;
  restart) cmd_restart "$@" ;;
  peak-memory) cmd_peak_memory "$@" ;;
  selftest) cmd_selftest "$@" ;;
  load-image) cmd_load_image "$@" ;;
  sync-versions) cmd_sync_versions ;;
  *) usage ;;
esac
