#!/usr/bin/env bash
# Runs the e2e suite on the test bed's node once per Kubernetes version and prints
# a table (Markdown) of what passed:
#
#   scripts/test-matrix.sh [v1.33.13 v1.34.4 ...]
#
# Without arguments: the newest patch of each minor from 1.33 to 1.37 that the Go
# module proxy serves. Each version's control plane and node are built from its
# own k8s.io/kubernetes module (tests/e2e/testbed.sh, TESTBED_KUBERNETES_VERSION)
# and cached by version: a cold build takes 10-20 minutes on 2 cores, so a first
# full run takes an hour or more. The operator image is built once
# (scripts/build-images.sh operator). The node bed's lock is taken as
# scripts/test-all.sh does. Logs: REFOP_MATRIX_LOGS (default /tmp/referral-matrix);
# the table is also written to REFOP_MATRIX_LOGS/matrix.md. Exit 0 only when every
# version passed. docs/test-matrix.md records the results and what CI runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

logs=${REFOP_MATRIX_LOGS:-/tmp/referral-matrix}
mkdir -p "$logs"
log() { printf '[test-matrix %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

versions=("$@")
if [[ ${#versions[@]} -eq 0 ]]; then
  mapfile -t versions < <(cd /tmp && GOFLAGS=-mod=mod go list -m -versions k8s.io/kubernetes | tr ' ' '\n' |
    grep -E '^v1\.3[3-7]\.[0-9]+$' | sort -V |
    awk -F. '{ last[$1 "." $2] = $0 } END { for (m in last) print last[m] }' | sort -V)
fi
[[ ${#versions[@]} -gt 0 ]] || { log "no versions to run"; exit 2; }
log "versions: ${versions[*]}"

images=$(scripts/build-images.sh operator)
eval "$(printf '%s\n' "$images" | sed -n 's/^\(REFOP_OPERATOR_IMAGE[A-Z_]*=.*\)$/export \1/p')"
log "operator image $REFOP_OPERATOR_IMAGE"
cargo test --test e2e --no-run --quiet 2>"$logs/cargo-build.log" || { tail -n 30 "$logs/cargo-build.log" >&2; exit 1; }

node_lock=/tmp/referral-node-bed.lock
lock_fd=""
for link in /proc/$$/fd/*; do
  [[ $(readlink "$link" 2>/dev/null) == "$node_lock" ]] && { lock_fd=${link##*/}; break; }
done
if [[ -z $lock_fd ]]; then
  exec {lock_fd}>>"$node_lock"
  if ! flock -n "$lock_fd"; then
    log "waiting for the node bed ($node_lock is held)"
    flock -w "${REFOP_NODE_LOCK_WAIT:-3600}" "$lock_fd" || { log "the node bed stayed busy; giving up"; exit 1; }
  fi
fi

rows=()
failures=0
for version in "${versions[@]}"; do
  dir="/tmp/referral-matrix-bed-$version"
  build_start=$(date +%s)
  if ! TESTBED_KUBERNETES_VERSION=$version tests/e2e/testbed.sh install >"$logs/$version-install.log" 2>&1; then
    rows+=("| $version | build failed (see $logs/$version-install.log) | | | |")
    failures=$((failures + 1)); continue
  fi
  build_secs=$(( $(date +%s) - build_start ))
  start=$(date +%s)
  if ! TESTBED_KUBERNETES_VERSION=$version tests/e2e/testbed.sh start "$dir" >"$logs/$version-start.log" 2>&1; then
    tests/e2e/testbed.sh stop "$dir" >>"$logs/$version-start.log" 2>&1 || true
    rows+=("| $version | ${build_secs}s | start failed (see $logs/$version-start.log) | | |")
    failures=$((failures + 1)); continue
  fi
  start_secs=$(( $(date +%s) - start ))
  suite_start=$(date +%s)
  (
    # shellcheck disable=SC1091
    source "$dir/env"
    tests/e2e/testbed.sh load-image "$dir" "$REFOP_OPERATOR_IMAGE_ARCHIVE"
    REFOP_REQUIRE_NODE=1 cargo test --test e2e --no-fail-fast 2>&1
  ) >"$logs/$version-e2e.log" 2>&1 || true
  suite_secs=$(( $(date +%s) - suite_start ))
  tests/e2e/testbed.sh stop "$dir" >"$logs/$version-stop.log" 2>&1 || true
  result=$(grep -E '^test result:' "$logs/$version-e2e.log" | tail -n1 || true)
  passed=$(sed -n 's/.* \([0-9]*\) passed.*/\1/p' <<<"$result")
  failed=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$result")
  if [[ -z $result || ${failed:-1} != 0 ]]; then
    failures=$((failures + 1))
    names=$(grep -E '^test .* FAILED$' "$logs/$version-e2e.log" | sed 's/^test \(.*\) \.\.\. FAILED$/\1/' | tr '\n' ' ')
    rows+=("| $version | ${build_secs}s | ${start_secs}s | ${passed:-?} passed, ${failed:-?} failed: ${names:-no result, see $logs/$version-e2e.log} | ${suite_secs}s |")
  else
    rows+=("| $version | ${build_secs}s | ${start_secs}s | all ${passed} passed | ${suite_secs}s |")
  fi
  log "$version: ${rows[-1]}"
done

{
  echo "| Kubernetes | install (build, or cache check) | bed start | e2e suite on the node | suite time |"
  echo "| --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
} | tee "$logs/matrix.md"
exit $(( failures > 0 ))
