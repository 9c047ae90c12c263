#!/usr/bin/env bash
# Runs every test of referral-operator on a fresh machine:
#   1. installs the tools the tests use (Debian's prometheus for promtool, lua5.1
#      and lua-yaml, redis-server, stunnel4 and openssl; the kubernetes-validate,
#      pytest, helm-python-sdk and pyyaml Python packages), skipping what is already
#      there;
#   2. starts building the operator image in the background (scripts/build-images.sh
#      operator: a static musl release binary in the release Dockerfile, with
#      buildah);
#   3. checks formatting and clippy, runs the chart and Argo CD tests (pytest), and
#      the unit and integration tests that need no bed, while the image builds;
#   4. still while the image builds, compiles the test targets that need the bed,
#      and builds (cached) and starts the e2e test bed: kube-apiserver + etcd + kube-controller-manager, a
#      MongoDB-wire server, Redis, an S3-compatible server (versitygw), and a real node (kubelet, containerd, CNI,
#      kube-proxy, kube-router, CoreDNS, local-path provisioner); then loads the
#      operator image into the node;
#   5. runs the tests that need the bed (e2e, and the MongoDB, S3 and leader
#      election tests), then stops the bed. A failing test does not stop the run:
#      every target runs, and the script fails at the end.
#      The faults that restart an API server (tests/e2e/faults.rs, faults 2 and 9)
#      run in a control-plane bed of their own (scripts/faults-table.sh
#      --disruptive-only), in the background from step 4 on.
#
# One node bed runs on a machine at a time: this waits for /tmp/referral-node-bed.lock
# (up to REFOP_NODE_LOCK_WAIT seconds, default 3600), or uses the caller's when run
# as `flock /tmp/referral-node-bed.lock scripts/test-all.sh`.
#
# MONGODB_URI set to a real MongoDB runs the MongoDB tests (tests/mongo_checks.rs,
# tests/backup_native.rs) a second time against it.
# REFOP_SKIP_E2E=1 skips the image and the bed (steps 2 and 4), and the e2e tests for a quick local loop (each e2e
# test then prints SKIPPED). KUBECONFIG pointing at your own cluster skips starting
# the bed but still runs e2e against that cluster (set REFOP_USE_KUBECONFIG=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

log() { printf '[test-all %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$(date +%s)

# ---------------------------------------------------------------- tools ---
apt_install() { # packages...
  local policy=/usr/sbin/policy-rc.d added=0 rc=0
  # Packages such as prometheus start a system service from their postinst:
  # a policy that refuses service starts keeps the machine quiet.
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; added=1; fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 install --no-install-recommends "$@")
  "${apt[@]}" >/tmp/refop-apt.log 2>&1 || {
    env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update >>/tmp/refop-apt.log 2>&1 &&
      "${apt[@]}" >>/tmp/refop-apt.log 2>&1
  } || rc=$?
  [[ $added -eq 1 ]] && rm -f "$policy"
  if [[ $rc -ne 0 ]]; then tail -n 30 /tmp/refop-apt.log >&2; log "apt-get install $* failed"; exit 1; fi
}

if ! command -v promtool >/dev/null; then
  log "installing promtool (Debian package prometheus)"
  apt_install prometheus
fi
if ! command -v lua5.1 >/dev/null || ! lua5.1 -e 'require("lyaml")' >/dev/null 2>&1; then
  log "installing lua5.1 and lua-yaml (Debian), for the Argo CD health check tests"
  apt_install lua5.1 lua-yaml
fi
if ! python3 -c 'import pytest, helm_python, yaml' >/dev/null 2>&1; then
  log "installing pytest, helm-python-sdk (Helm v4's engine) and pyyaml (PyPI)"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    "pytest>=8" "helm-python-sdk==0.2.2" "pyyaml>=6"
fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  log "installing redis-server and redis-tools (the backup and restore script tests and the Redis probe tests run them)"
  apt_install redis-server redis-tools
fi
if ! command -v stunnel >/dev/null || ! command -v openssl >/dev/null; then
  log "installing stunnel4 and openssl (the MongoDB TLS tests put stunnel in front of the MongoDB-wire server)"
  apt_install stunnel4 openssl
fi
if ! command -v kubernetes-validate >/dev/null; then
  log "installing kubernetes-validate (PyPI)"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "kubernetes-validate==1.37.0"
fi

# ---------------------------------------------------- operator image ---
# The image's release build (fat LTO in one codegen unit: one core for minutes)
# runs in the background from here on, beside the lint, the chart tests and the
# tests that need no bed, which keep the other core busy. Cargo locks each build
# directory on its own (target/debug, target/release, target/<musl>/release), so
# the two builds share CARGO_TARGET_DIR without waiting for each other.
use_bed=0
[[ ${REFOP_SKIP_E2E:-0} != 1 && ${REFOP_USE_KUBECONFIG:-0} != 1 ]] && use_bed=1
image_pid=""
if [[ $use_bed == 1 ]]; then
  image_out=$(mktemp)
  log "building the operator image in the background (scripts/build-images.sh operator)"
  image_start=$(date +%s)
  scripts/build-images.sh operator >"$image_out" &
  image_pid=$!
  # On a failure before the wait, the build (cargo is a grandchild) stops too.
  kill_tree() { local child; for child in $(pgrep -P "$1"); do kill_tree "$child"; done; kill "$1" 2>/dev/null || true; }
  trap '[[ -n $image_pid ]] && kill_tree "$image_pid"; rm -f "$image_out"' EXIT
fi

# ----------------------------------------------------------------- lint ---
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

# ---------------------------------------------------- chart and Argo CD ---
log "pytest tests/chart tests/argocd"
python3 -m pytest -q -p no:cacheprovider tests/chart tests/argocd

# ------------------------------------------------- tests without a bed ---
# The test targets that talk to the bed's servers (the API server, the node, the
# MongoDB-wire and S3 servers); every other target runs first, while the image
# builds. A target missing from this list that needs the bed fails loudly here
# (its tests say which variable is unset), it is never skipped.
bed_targets=(e2e backup_native leader_election mongo_checks mongo_tls)
mapfile -t free_targets < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
bed = set(sys.argv[1:])
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if "test" in target["kind"] and target["name"] not in bed:
            print(target["name"])
' "${bed_targets[@]}")
failed=0
log "cargo test: unit tests and ${#free_targets[@]} test targets that need no bed"
free_args=()
for target in "${free_targets[@]}"; do free_args+=(--test "$target"); done
cargo test --lib --bins "${free_args[@]}" --no-fail-fast || failed=1
cargo test --doc --quiet || failed=1

# ---------------------------------------------------------------- bed ---
bed_args=()
for target in "${bed_targets[@]}"; do bed_args+=(--test "$target"); done
if [[ $use_bed == 1 ]]; then
  # Still while the image builds: compile the test targets that need the bed, and
  # start the beds (neither needs the image until it is loaded into the node).
  log "compiling the test targets that need the bed (${bed_targets[*]})"
  cargo test "${bed_args[@]}" --no-run --quiet

  # The node bed's lock: the caller's (flock LOCK scripts/test-all.sh), or ours.
  node_lock=/tmp/referral-node-bed.lock
  lock_fd=""
  for link in /proc/$$/fd/*; do
    [[ $(readlink "$link" 2>/dev/null) == "$node_lock" ]] && { lock_fd=${link##*/}; break; }
  done
  if [[ -z $lock_fd ]]; then
    exec {lock_fd}>>"$node_lock"
    if ! flock -n "$lock_fd"; then
      log "waiting for the node bed ($node_lock is held; last started in $(cat /tmp/referral-node-bed.owner 2>/dev/null || echo '?'))"
      flock -w "${REFOP_NODE_LOCK_WAIT:-3600}" "$lock_fd" || { log "the node bed stayed busy; giving up"; exit 1; }
    fi
  fi

  export TESTBED_DIR=${TESTBED_DIR:-/tmp/referral-testbed-$$}
  # Faults 2 and 9 (tests/e2e/faults.rs) restart an API server and stop its etcd:
  # in a control-plane bed of their own, beside the main run (they mostly wait, on
  # outages and back-offs), never in the shared bed.
  faults_dir=$TESTBED_DIR-faults
  faults_log=$faults_dir.log
  faults_pid=""
  stop_beds() {
    [[ -n $image_pid ]] && kill_tree "$image_pid"
    rm -f "$image_out"
    if [[ -n $faults_pid ]] && kill -0 "$faults_pid" 2>/dev/null; then
      kill -TERM -- "-$faults_pid" 2>/dev/null || true
      wait "$faults_pid" 2>/dev/null || true
    fi
    "$root/tests/e2e/testbed.sh" stop "$faults_dir" >/dev/null 2>&1 || true
    log "stopping the test bed"
    "$root/tests/e2e/testbed.sh" peak-memory "$TESTBED_DIR" >&2 || true
    "$root/tests/e2e/testbed.sh" stop "$TESTBED_DIR" >&2 || true
  }
  trap stop_beds EXIT
  log "faults 2 and 9 in a bed of their own ($faults_dir), in the background: $faults_log"
  faults_start=$(date +%s)
  # A session of its own: if this script ends early, the whole run is ended at once.
  TESTBED_DIR=$faults_dir setsid scripts/faults-table.sh --disruptive-only >"$faults_log" 2>&1 &
  faults_pid=$!
  log "starting the test bed in $TESTBED_DIR"
  bed_start=$(date +%s)
  tests/e2e/testbed.sh start "$TESTBED_DIR"
  log "test bed up in $(( $(date +%s) - bed_start ))s"
  # shellcheck disable=SC1091
  source "$TESTBED_DIR/env"

  log "waiting for the operator image"
  wait "$image_pid" || { image_pid=""; log "scripts/build-images.sh operator failed"; exit 1; }
  image_pid=""
  images=$(cat "$image_out")
  eval "$(printf '%s\n' "$images" | sed -n 's/^\(REFOP_OPERATOR_IMAGE[A-Z_]*=.*\)$/export \1/p')"
  log "operator image $REFOP_OPERATOR_IMAGE ready $(( $(date +%s) - image_start ))s after its build started"
  tests/e2e/testbed.sh load-image "$TESTBED_DIR" "$REFOP_OPERATOR_IMAGE_ARCHIVE"
  # The node's tests fail, instead of skipping, when the bed has no node.
  export REFOP_REQUIRE_NODE=1
fi

# ------------------------------------------------------ tests on the bed ---
log "cargo test: the targets that need the bed (${bed_targets[*]})"
cargo test "${bed_args[@]}" --no-fail-fast || failed=1
if [[ -n ${faults_pid:-} ]]; then
  faults_status=0
  wait "$faults_pid" || faults_status=$?
  log "faults 2 and 9 (own bed) done, $(( $(date +%s) - faults_start ))s after they started:"
  sed -n '/^| fault/,$p' "$faults_log" >&2
  if [[ $faults_status != 0 ]]; then
    tail -n 40 "$faults_log" >&2
    log "faults 2 and 9 failed (exit $faults_status); the whole output is in $faults_dir/faults.log"
    failed=1
  fi
fi
if [[ -n ${MONGODB_URI:-} ]]; then
  # A real MongoDB of the user's: the MongoDB tests once more, against it. They
  # write only to databases named it_<test>_<pid>, which they drop.
  log "MONGODB_URI is set: the MongoDB tests again, against that server"
  REFOP_TEST_MONGODB_URI=$MONGODB_URI cargo test --test mongo_checks --no-fail-fast || failed=1
  # With what mongo-java-server cannot store (views, collection options, code with
  # scope, user binary subtypes) in the round trip.
  REFOP_TEST_MONGODB_URI=$MONGODB_URI REFOP_TEST_MONGODB_REAL=1 cargo test --test backup_native --no-fail-fast || failed=1
fi
if [[ $failed != 0 ]]; then
  log "some tests FAILED (above) after $(( $(date +%s) - start ))s"
  exit 1
fi
log "all tests passed in $(( $(date +%s) - start ))s"
