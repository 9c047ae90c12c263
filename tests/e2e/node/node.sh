# shellcheck shell=bash
# The test bed's node: sourced by tests/e2e/testbed.sh, which calls node_* from
# start, stop, status, peak-memory and selftest. See tests/e2e/TESTBED.md.
#
# Layout. The node lives in its own network namespace, NODE_NETNS, joined to the
# host by a veth pair: the host's end (NODE_HOST_IP) is where the API server,
# the MongoDB-wire server and Redis listen; the node's end is NODE_IP. containerd,
# the kubelet, kube-proxy and kube-router run inside that namespace (nsenter
# --net, so they keep the host's mounts and cgroups); pods get their own
# namespaces, on the bridge NODE_BRIDGE, from the Debian CNI plugins. Every
# iptables rule, ipset, route, bridge and veth the node makes is inside
# NODE_NETNS, so deleting it removes them all; the host's only change is two
# routes on the host's veth end (gone with it). Files (containerd's root and
# state, pod network namespaces, the kubelet's root, pod logs, volumes) are under
# DIR/node. Cgroups: /NODE_CGROUP in every v1 hierarchy (the kubelet's
# cgroupRoot for pods, and bed/ for the bed's own processes).
#
# One node bed per machine: start takes NODE_LOCK (or uses the caller's, when it
# holds it through `flock NODE_LOCK COMMAND`) and a holder process keeps it until
# stop.

NODE_NAME=referral-node
NODE_NETNS=referral-node
NODE_HOST_IF=rtb-host
NODE_IF=rtb-node
NODE_HOST_IP=10.201.0.1
NODE_IP=10.201.0.2
NODE_BRIDGE=rtb0
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
NODE_CGROUP=referral-testbed
NODE_LOCK=/tmp/referral-node-bed.lock
NODE_OWNER=/tmp/referral-node-bed.owner
NODE_READY_TIMEOUT=${TESTBED_NODE_READY_TIMEOUT:-240}

nsexec() { nsenter "--net=/var/run/netns/$NODE_NETNS" "$@"; }

# ------------------------------------------------------------------ lock ---

# Takes the node bed's lock for DIR. A caller that runs us under
# `flock NODE_LOCK ...` passes its open descriptor down: flock on that same open
# file succeeds, and the lock stays the caller's. Otherwise we open it and fail
# at once when another bed holds it.
node_lock_acquire() {
  local link
  NODE_LOCK_FD=""
  for link in /proc/$$/fd/*; do
    if [[ $(readlink "$link" 2>/dev/null) == "$NODE_LOCK" ]]; then NODE_LOCK_FD=${link##*/}; break; fi
  done
  if [[ -z $NODE_LOCK_FD ]]; then
    exec {NODE_LOCK_FD}>>"$NODE_LOCK"
  fi
  NODE_PREV_OWNER=$(cat "$NODE_OWNER" 2>/dev/null || true)
  if ! flock -n "$NODE_LOCK_FD"; then
    die "the node bed is in use ($NODE_LOCK is held; last started in ${NODE_PREV_OWNER:-an unknown directory}). Only one node bed runs on a machine: stop that one (tests/e2e/testbed.sh stop ${NODE_PREV_OWNER:-DIR}), wait your turn with \`flock $NODE_LOCK COMMAND\`, or start a control-plane-only bed with --no-node"
  fi
  echo "$DIR" >"$NODE_OWNER"
}

# ---------------------------------------------------------------- network ---

node_network_up() {
  ip netns add "$NODE_NETNS"
  ip link add "$NODE_HOST_IF" type veth peer name "$NODE_IF"
  ip link set "$NODE_IF" netns "$NODE_NETNS"
  ip addr add "$NODE_HOST_IP/30" dev "$NODE_HOST_IF"
  ip link set "$NODE_HOST_IF" up
  nsexec ip link set lo up
  nsexec ip addr add "$NODE_IP/30" dev "$NODE_IF"
  nsexec ip link set "$NODE_IF" up
  # The node routes for its pods; bridged pod-to-pod traffic goes through
  # iptables, so kube-proxy's and kube-router's rules see it. Both are per
  # network namespace.
  nsexec sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  # Host to pods and Service IPs (tests reach a pod's port directly).
  ip route add "$CLUSTER_CIDR" via "$NODE_IP" dev "$NODE_HOST_IF"
  ip route add "$SERVICE_CIDR" via "$NODE_IP" dev "$NODE_HOST_IF"
  mkdir -p "$DIR/node/cni/net.d" "$DIR/node/cni/ipam"
  cat >"$DIR/node/cni/net.d/10-referral-testbed.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "referral-testbed",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$DIR/node/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# -------------------------------------------------------------- cgroups ---

node_cgroup_dirs() { # every v1 hierarchy's NODE_CGROUP directory
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [[ -f $hierarchy/cgroup.procs ]] && echo "${hierarchy%/}/$NODE_CGROUP"
  done
}

node_cgroups_up() {
  [[ -f /sys/fs/cgroup/memory/cgroup.procs ]] ||
    die "the node needs cgroup v1 hierarchies under /sys/fs/cgroup (memory, cpu, pids...): none found"
  local dir parent
  for dir in $(node_cgroup_dirs); do
    parent=${dir%/*}
    mkdir -p "$dir/bed"
    if [[ -f $parent/cpuset.cpus ]]; then
      # A cpuset cgroup takes no task until it has CPUs and memory nodes.
      cat "$parent/cpuset.cpus" >"$dir/cpuset.cpus"; cat "$parent/cpuset.mems" >"$dir/cpuset.mems"
      cat "$parent/cpuset.cpus" >"$dir/bed/cpuset.cpus"; cat "$parent/cpuset.mems" >"$dir/bed/cpuset.mems"
    fi
  done
}

# Moves a process of the bed into NODE_CGROUP/bed (memory and CPU accounting:
# peak-memory reads the whole node bed's peak from there).
node_adopt() { # pid
  local dir
  [[ -n ${NODE_ON:-} ]] || return 0
  for dir in $(node_cgroup_dirs); do
    [[ -f $dir/bed/cgroup.procs ]] && { echo "$1" >"$dir/bed/cgroup.procs"; } 2>/dev/null
  done
  return 0
}

# ------------------------------------------------------------------ pki ---

node_pki() {
  # sign (from gen_pki) writes under $pki.
  # shellcheck disable=SC2034
  local pki=$DIR/pki client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign ca kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  sign ca kube-proxy "/CN=system:kube-proxy" "$client"
  sign ca kube-scheduler "/CN=system:kube-scheduler" "$client"
  sign ca kube-router "/CN=referral-testbed:kube-router" "$client"
  sign ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  chmod 600 "$DIR"/pki/*.key
}

# ------------------------------------------------------------ containerd ---

node_containerd_config() {
  local n=$DIR/node
  mkdir -p "$n/containerd/root" "$n/containerd/state" "$n/containerd/opt" "$n/runc"
  cat >"$n/containerd.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$n/containerd.sock"

[ttrpc]
  address = ""

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$n/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$TESTBED_PAUSE_IMAGE"
  # This machine refuses a negative oom_score_adj; without this, every sandbox
  # fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$n/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$n/cni/net.d"
    max_conf_num = 1
EOF
}

ctr_() { ctr --address "$DIR/node/containerd.sock" --namespace k8s.io "$@"; }

# Loads the test bed's images (scripts/build-images.sh testbed) and any given
# archives into containerd; nothing is ever pulled.
node_import() { # archives...
  local archive
  for archive in "$@"; do
    ctr_ images import --no-unpack=false "$archive" >>"$DIR/logs/image-import.log" 2>&1 ||
      { tail -n 20 "$DIR/logs/image-import.log" >&2; die "ctr images import $archive failed"; }
  done
}

# ---------------------------------------------------------- kube configs ---

node_configs() {
  local n=$DIR/node api_url=$1
  write_kubeconfig "$n/kubelet.kubeconfig" "system:node:$NODE_NAME" "$DIR/pki/kubelet.crt" "$DIR/pki/kubelet.key" "$api_url"
  write_kubeconfig "$n/kube-proxy.kubeconfig" system:kube-proxy "$DIR/pki/kube-proxy.crt" "$DIR/pki/kube-proxy.key" "$api_url"
  write_kubeconfig "$n/kube-scheduler.kubeconfig" system:kube-scheduler "$DIR/pki/kube-scheduler.crt" "$DIR/pki/kube-scheduler.key" "$api_url"
  write_kubeconfig "$n/kube-router.kubeconfig" referral-testbed:kube-router "$DIR/pki/kube-router.crt" "$DIR/pki/kube-router.key" "$api_url"
  mkdir -p "$n/kubelet" "$n/pod-logs" "$n/local-path"
  # No host search domains or resolvers reach pods: the bed's DNS is CoreDNS only.
  : >"$n/resolv.conf"
  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 only; kubelet >= 1.35 refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
containerRuntimeEndpoint: unix://$n/containerd.sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $n/resolv.conf
podLogsDir: $n/pod-logs
failSwapOn: false
# The test bed's images are imported once per start and must never be collected.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A busy development disk must not taint the node.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
# Secret and ConfigMap volumes refresh within seconds, as tests rotate them.
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
EOF
  cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $n/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false}
# 0: leave the machine-wide conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

node_addons() { # kubectl...
  sed -e "s|@COREDNS_IMAGE@|$TESTBED_COREDNS_IMAGE|g" \
      -e "s|@LOCAL_PATH_IMAGE@|$TESTBED_LOCAL_PATH_IMAGE|g" \
      -e "s|@BUSYBOX_IMAGE@|$TESTBED_BUSYBOX_IMAGE|g" \
      -e "s|@DNS_IP@|$DNS_IP|g" \
      -e "s|@LOCAL_PATH_DIR@|$DIR/node/local-path|g" \
      "$NODE_SRC/addons.yaml" >"$DIR/node/addons.yaml"
  "$@" apply -f "$DIR/node/addons.yaml" >"$DIR/logs/addons.log" 2>&1 ||
    { cat "$DIR/logs/addons.log" >&2; die "applying tests/e2e/node/addons.yaml failed"; }
}

# ---------------------------------------------------------------- start ---

# Before the control plane (with the lock held, leftovers cleaned and cgroups
# made): images built, network, containerd started and loading them.
node_start_early() {
  local images
  images=$(REFOP_PAUSE_DIR=$PAUSE_CACHE "$E2E_DIR/../../scripts/build-images.sh" testbed) ||
    die "scripts/build-images.sh testbed failed"
  eval "$(printf '%s\n' "$images" | sed 's/^/export /')"
  # The stand-in worker under a second tag: an image change that really rolls out.
  export TESTBED_WORKER_IMAGE_NEXT=${TESTBED_WORKER_IMAGE%:*}:2
  node_network_up
  node_pki
  node_containerd_config
  launch containerd nsenter "--net=/var/run/netns/$NODE_NETNS" containerd --config "$DIR/node/containerd.toml"
  local deadline=$(( $(date +%s) + 30 ))
  until ctr_ version >/dev/null 2>&1; do
    pid_alive containerd || fail_start containerd "process exited"
    [[ $(date +%s) -lt $deadline ]] || fail_start containerd "no answer on $DIR/node/containerd.sock after 30s"
    sleep 0.2
  done
  # Loading the images overlaps with the control plane's start.
  ( node_import "$TESTBED_PAUSE_ARCHIVE" "$TESTBED_COREDNS_ARCHIVE" "$TESTBED_LOCAL_PATH_ARCHIVE" \
      "$TESTBED_BUSYBOX_ARCHIVE" "$TESTBED_REDIS_ARCHIVE" "$TESTBED_WORKER_ARCHIVE" &&
    ctr_ images tag --force "$TESTBED_WORKER_IMAGE" "$TESTBED_WORKER_IMAGE_NEXT" >/dev/null ) \
    </dev/null >>"$DIR/logs/image-import.log" 2>&1 &
  NODE_IMPORT_PID=$!
}

# Once the API server answers: scheduler, kubelet, kube-proxy, kube-router and
# the add-ons; then wait until the node is Ready and a pod resolves a Service name.
node_start_late() { # api_url sched_port
  local api_url=$1 sched_port=$2
  local k=("$KUBE_CACHE/bin/kubectl" --kubeconfig "$DIR/kubeconfig")
  node_configs "$api_url"
  node_addons "${k[@]}"
  launch kube-scheduler "$KUBE_CACHE/bin/kube-scheduler" \
    --kubeconfig "$DIR/node/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/node/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/node/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --v 1
  wait "$NODE_IMPORT_PID" || { tail -n 20 "$DIR/logs/image-import.log" >&2; die "importing the test bed's images failed"; }
  launch kubelet nsenter "--net=/var/run/netns/$NODE_NETNS" "$KUBE_CACHE/bin/kubelet" \
    --config "$DIR/node/kubelet.yaml" --kubeconfig "$DIR/node/kubelet.kubeconfig" \
    --root-dir "$DIR/node/kubelet" --cert-dir "$DIR/node/kubelet/pki" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v "${TESTBED_KUBELET_V:-1}"
  launch kube-proxy nsenter "--net=/var/run/netns/$NODE_NETNS" "$KUBE_CACHE/bin/kube-proxy" \
    --config "$DIR/node/kube-proxy.yaml" --v 1
  wait_for kube-scheduler "$READY_TIMEOUT" curl -fsSk "https://127.0.0.1:$sched_port/healthz"
  wait_for kubelet "$NODE_READY_TIMEOUT" "${k[@]}" get node "$NODE_NAME"
  # kube-router reads the Node object at start.
  launch kube-router nsenter "--net=/var/run/netns/$NODE_NETNS" "$KUBE_ROUTER_CACHE/bin/kube-router" \
    --kubeconfig "$DIR/node/kube-router.kubeconfig" --hostname-override "$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --enable-ipv4=true --enable-ipv6=false --service-cluster-ip-range "$SERVICE_CIDR" \
    --health-port 20244 --metrics-port 0 --v 1
  wait_for kubelet "$NODE_READY_TIMEOUT" node_is_ready "${k[@]}"
  wait_for kube-proxy 60 nsexec curl -fsS http://127.0.0.1:10256/healthz
  wait_for kube-router 60 nsexec curl -fsS http://127.0.0.1:20244/healthz
  log "node $NODE_NAME Ready; waiting for CoreDNS and the provisioner"
  wait_for kubelet "$NODE_READY_TIMEOUT" "${k[@]}" -n kube-system wait --for=condition=Available deployment/coredns --timeout=5s
  wait_for kubelet "$NODE_READY_TIMEOUT" "${k[@]}" -n local-path-storage wait --for=condition=Available \
    deployment/local-path-provisioner --timeout=5s
  node_dns_check "${k[@]}"
}

node_is_ready() { # kubectl...
  [[ $("$@" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# A pod resolves a Service name through CoreDNS (kube-proxy's DNAT of the
# kube-dns Service IP included).
node_dns_check() { # kubectl...
  local pod="dns-check-$$"
  "$@" -n default run "$pod" --image="$TESTBED_BUSYBOX_IMAGE" --image-pull-policy=Never --restart=Never \
    --overrides='{"spec": {"activeDeadlineSeconds": 120}}' --command -- \
    sh -c 'until nslookup kubernetes.default.svc.cluster.local; do sleep 1; done' >/dev/null
  local phase="" deadline=$(( $(date +%s) + 120 ))
  while [[ $(date +%s) -lt $deadline ]]; do
    phase=$("$@" -n default get pod "$pod" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    [[ $phase == Succeeded || $phase == Failed ]] && break
    sleep 0.5
  done
  if [[ $phase != Succeeded ]]; then
    "$@" -n default logs "$pod" >&2 || true
    die "a pod could not resolve kubernetes.default.svc.cluster.local (pod phase: ${phase:-none})"
  fi
  "$@" -n default delete pod "$pod" --wait=false >/dev/null
}

# ----------------------------------------------------------------- stop ---

# The node's own teardown, before the control plane stops: the kubelet first (so
# nothing restarts), every container and sandbox, containerd and its shims, the
# node's daemons; then mounts, the network namespace (and with it every rule,
# set, bridge and veth) and files. Cgroups go at the very end (node_cgroups_down),
# once the control plane, which shares them, has stopped. Safe to run twice.
node_stop() {
  stop_procs kubelet
  stop_procs kube-router kube-proxy kube-scheduler
  local id ids=""
  if pid_alive containerd; then
    ids=$(ctr_ containers ls -q 2>/dev/null || true)
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true; done
    for id in $ids; do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop_procs containerd
  # libcni caches each sandbox's results by network and container ID.
  for id in $ids; do rm -f "/var/lib/cni/results/referral-testbed-$id-"* "/var/lib/cni/results/cni-loopback-$id-"*; done
  node_teardown "$DIR"
}

kill_cgroup_tree() { # a cgroup directory of the pids hierarchy: SIGKILL every process in it
  local cg=$1 pids
  [[ -d $cg ]] || return 0
  for _ in 1 2 3 4 5; do
    pids=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    [[ -z $pids ]] && return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.3
  done
}

# What the runtime leaves to the system: shims of the bed's containerd, processes
# left in its pods' cgroups, mounts under DIR/node, the network namespace and the
# host's veth end, CNI result caches, /var/log/containers links into DIR/node.
node_teardown() { # dir
  local dir=$1 pid mount
  # Shims of this bed's containerd (matched by its socket, an argument of theirs).
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $dir/node/containerd.sock" 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  kill_cgroup_tree "/sys/fs/cgroup/pids/$NODE_CGROUP/kubepods"
  # Mounts under DIR/node (rootfs, netns bind mounts, volumes), deepest first.
  if [[ -d $dir/node ]]; then
    for _ in 1 2 3; do
      local mounts
      mounts=$(awk -v p="$dir/node/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
      [[ -z $mounts ]] && break
      for mount in $mounts; do umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true; done
    done
  fi
  if [[ -e /var/run/netns/$NODE_NETNS ]]; then ip netns delete "$NODE_NETNS" 2>/dev/null || true; fi
  if ip link show "$NODE_HOST_IF" >/dev/null 2>&1; then ip link delete "$NODE_HOST_IF" 2>/dev/null || true; fi
  rm -f /var/lib/cni/results/referral-testbed-* 2>/dev/null || true
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$dir/node/*" -delete 2>/dev/null || true
  fi
  # Files last, and only when nothing is mounted below them any more.
  if [[ -d $dir/node ]] && ! awk -v p="$dir/node/" 'index($5, p) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    rm -rf --one-file-system "$dir/node"
  fi
  return 0
}

# The bed's cgroups, once everything it started has stopped; a process still in
# them is one of the bed's (a child a daemon left), and is killed.
node_cgroups_down() {
  kill_cgroup_tree "/sys/fs/cgroup/pids/$NODE_CGROUP"
  local cg
  for cg in $(node_cgroup_dirs); do
    [[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}

# Called once the lock is held. A bed that was killed without stop leaves its
# namespace, cgroups or processes behind; as only one node bed can exist, what is
# there is a former one's, and is cleaned up, unless its processes still run.
node_teardown_leftovers() {
  local old=$NODE_PREV_OWNER n
  if [[ -n $old && $old != "$DIR" && -d $old/pids ]]; then
    for n in "${NODE_PROCS[@]}" "${CP_PROCS[@]}"; do
      if DIR=$old pid_alive "$n"; then
        die "the node bed in $old still runs ($n) although nothing holds $NODE_LOCK; stop it first: $0 stop $old"
      fi
    done
  fi
  if [[ -e /var/run/netns/$NODE_NETNS ]] || ip link show "$NODE_HOST_IF" >/dev/null 2>&1 ||
     [[ -d /sys/fs/cgroup/pids/$NODE_CGROUP ]]; then
    log "a former node bed (${old:-unknown}) left its network namespace or cgroups behind; cleaning them up"
    [[ -n $old ]] && node_teardown "$old"
    node_teardown "$DIR"
    node_cgroups_down
    [[ ! -e /var/run/netns/$NODE_NETNS ]] || die "cannot remove the network namespace $NODE_NETNS a former bed left"
    [[ ! -d /sys/fs/cgroup/pids/$NODE_CGROUP ]] || die "cannot remove /sys/fs/cgroup/*/$NODE_CGROUP a former bed left"
  fi
}

# --------------------------------------------------------- peak memory ---

# The node bed's joint peak: every process it started and every pod share
# NODE_CGROUP, whose memory peak counts them together (page cache included).
node_peak_memory() {
  local cg=/sys/fs/cgroup/memory/$NODE_CGROUP
  [[ -f $cg/memory.max_usage_in_bytes ]] || return 0
  local peak usage rss pods_peak
  peak=$(cat "$cg/memory.max_usage_in_bytes"); usage=$(cat "$cg/memory.usage_in_bytes")
  rss=$(awk '$1 == "total_rss" { print $2 }' "$cg/memory.stat")
  pods_peak=$(cat "$cg/kubepods/memory.max_usage_in_bytes" 2>/dev/null || echo 0)
  awk -v p="$peak" -v u="$usage" -v r="$rss" -v q="$pods_peak" 'BEGIN {
    printf "%-24s %8s %12.1f %12.1f   (cgroup %s: every process of the bed and every pod; page cache included)\n", "node bed (cgroup)", "", u / 1048576, p / 1048576, "'"$NODE_CGROUP"'"
    printf "%-24s %8s %12.1f %12s   (resident memory now, no page cache)\n", "node bed rss", "", r / 1048576, "-"
    printf "%-24s %8s %12s %12.1f   (the pods alone, page cache included)\n", "pods (cgroup)", "", "-", q / 1048576 }'
}

# ------------------------------------------------------------- selftest ---

# A client pod runs the stand-in worker's client command (`get URL TRIES` or
# `connect HOST:PORT TRIES`) and must end as `expect` says: Succeeded when an
# attempt worked, Failed when none did.
node_client_pod() { # namespace name labels expect command target tries kubectl...
  local ns=$1 name=$2 labels=$3 expect=$4 command=$5 target=$6 tries=$7; shift 7
  "$@" -n "$ns" run "$name" --image="$TESTBED_WORKER_IMAGE" --image-pull-policy=Never --restart=Never \
    --labels="$labels" --command -- /worker "$command" "$target" "$tries" >/dev/null
  local phase="" deadline=$(( $(date +%s) + 100 ))
  while [[ $(date +%s) -lt $deadline ]]; do
    phase=$("$@" -n "$ns" get pod "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    [[ $phase == Succeeded || $phase == Failed ]] && break
    sleep 0.5
  done
  local logs; logs=$("$@" -n "$ns" logs "$name" 2>&1 || true)
  if [[ $phase != "$expect" || ${logs,,} != *"$command $target"* ]]; then
    printf '%s\n' "$logs" >&2
    die "selftest: pod $name ended ${phase:-nowhere}, expected $expect"
  fi
}

# Proves the node runs what the e2e suite needs: a Deployment becomes available
# through real readiness probes, a pod reaches it by Service name (DNS and
# kube-proxy), a NetworkPolicy refuses a pod it does not admit and lets in one it
# does (kube-router), and a PersistentVolumeClaim is provisioned and written.
node_selftest() { # namespace kubectl...
  local ns=$1; shift
  "$@" -n "$ns" create deployment echo --image="$TESTBED_WORKER_IMAGE" --replicas=2 --port=3000 >/dev/null
  "$@" -n "$ns" patch deployment echo --type=json -p '[{"op": "add", "path": "/spec/template/spec/containers/0/readinessProbe",
    "value": {"httpGet": {"path": "/readyz", "port": 3000}, "periodSeconds": 1}},
    {"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"}]' >/dev/null
  "$@" -n "$ns" expose deployment echo --port=80 --target-port=3000 >/dev/null
  "$@" -n "$ns" wait --for=condition=Available deployment/echo --timeout=120s >/dev/null ||
    die "selftest: the stand-in worker Deployment did not become available"
  echo "ok   a Deployment of the stand-in worker became Available through real readiness probes"
  node_client_pod "$ns" svc-client run=svc-client Succeeded get "http://echo.$ns.svc.cluster.local/healthz" 20 "$@"
  echo "ok   a pod reached it by Service name (CoreDNS, kube-proxy)"
  printf '%s\n' 'apiVersion: networking.k8s.io/v1' 'kind: NetworkPolicy' 'metadata: {name: echo-clients}' \
    'spec:' '  podSelector: {matchLabels: {app: echo}}' '  policyTypes: [Ingress]' \
    '  ingress: [{from: [{podSelector: {matchLabels: {access: "yes"}}}]}]' | "$@" -n "$ns" apply -f - >/dev/null
  # kube-router applies a policy within a second or two of seeing it; the refused
  # client starts after that and must fail every attempt.
  sleep 3
  node_client_pod "$ns" denied run=denied Failed connect "echo:80" 3 "$@"
  node_client_pod "$ns" admitted run=admitted,access=yes Succeeded connect "echo:80" 10 "$@"
  echo "ok   a NetworkPolicy refused a pod it does not admit and let in one it does (kube-router)"
  printf '%s\n' 'apiVersion: v1' 'kind: PersistentVolumeClaim' 'metadata: {name: data}' \
    'spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Mi}}}' | "$@" -n "$ns" apply -f - >/dev/null
  "$@" -n "$ns" run writer --image="$TESTBED_BUSYBOX_IMAGE" --image-pull-policy=Never --restart=Never \
    --overrides='{"spec": {"activeDeadlineSeconds": 90, "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
      "containers": [{"name": "writer", "image": "'"$TESTBED_BUSYBOX_IMAGE"'", "imagePullPolicy": "Never",
      "command": ["sh", "-c", "echo hello >/data/file && cat /data/file"], "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}' \
    >/dev/null
  "$@" -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pod/writer --timeout=120s >/dev/null ||
    die "selftest: the pod writing to a provisioned volume did not succeed"
  [[ $("$@" -n "$ns" get pvc data -o jsonpath='{.status.phase}') == Bound ]] || die "selftest: the claim is not Bound"
  echo "ok   a PersistentVolumeClaim was provisioned (local-path) and written by a pod"
}
