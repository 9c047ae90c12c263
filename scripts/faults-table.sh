#!/usr/bin/env bash
# The fault suite (tests/e2e/faults.rs, issue 20) as a table: for each fault, seconds
# until the system converged again after the fault ended (against the 30 s target),
# the operator's API writes during the fault (from the kube-apiserver's audit log,
# Lease renewals left out), and what was lost. The tests fail when recovery breaks
# or something is lost; this script only runs them one at a time (so one fault's
# load does not slow another's figure) and gathers the rows they print.
#
# Usage: scripts/faults-table.sh [--testbed DIR] [--disruptive] [--keep] [-- CARGO TEST ARGS]
#   (none)            start a control-plane bed of this script's own (--no-node
#                     --audit-log) in ${TESTBED_DIR:-/tmp/tb-faults}, run every fault
#                     there (faults 2 and 9 included), stop it. ~8 min.
#   --testbed DIR     run the faults that leave the bed's API server alone on the bed
#                     already running in DIR (started with `tests/e2e/testbed.sh start
#                     DIR --audit-log`, with or without the node: fault 4 runs on the
#                     node only); without its audit log the writes column says "not
#                     counted".
#   --disruptive      with --testbed: also run faults 2 and 9, in a control-plane bed
#                     of their own (DIR-disruptive), started and stopped here.
#   --disruptive-only faults 2 and 9 only, in a control-plane bed of their own
#                     (${TESTBED_DIR:-/tmp/tb-faults}); scripts/test-all.sh runs this
#                     beside the e2e suite. ~2 min.
#   --keep            leave the beds this script started running
# Faults 2 (API server restart, etcd stopped) and 9 (API throttling) stop or restart
# the bed's API server and etcd, which every test sharing the bed would feel: they
# run only where REFOP_FAULTS_DISRUPTIVE=1 is set, which this script sets only in a
# bed of its own. The whole output is kept in DIR/faults.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

DIR="" GIVEN="" KEEP=0 DISRUPTIVE=0 ONLY_DISRUPTIVE=0
die() { printf 'faults-table: %s\n' "$*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --testbed) GIVEN=${2:?--testbed needs a directory}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --disruptive) DISRUPTIVE=1; shift ;;
    --disruptive-only) ONLY_DISRUPTIVE=1; shift ;;
    --) shift; break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
CARGO_ARGS=("$@")
[[ -n $GIVEN && $ONLY_DISRUPTIVE == 1 ]] && die "--disruptive-only starts a bed of its own; it takes no --testbed"

# The faults that restart the bed's API server or etcd.
DISRUPTIVE_TESTS=(faults::fault_api_server faults::fault_throttled)

started_beds=()
cleanup() {
  local bed
  for bed in "${started_beds[@]}"; do
    if [[ $KEEP == 1 ]]; then
      printf 'faults-table: test bed left running: tests/e2e/testbed.sh stop %s\n' "$bed" >&2
    else
      "$root/tests/e2e/testbed.sh" stop "$bed" >/dev/null 2>&1 || true
    fi
  done
}
trap cleanup EXIT

# own_bed DIR: a control-plane bed with an audit log, stopped at exit.
own_bed() {
  started_beds+=("$1")
  TESTBED_DIR=$1 TESTBED_NODE=0 tests/e2e/testbed.sh start "$1" --no-node --audit-log >&2
}

# run_faults DIR DISRUPTIVE LOG FILTER...: the fault tests whose names contain a FILTER
# on the bed in DIR, in a shell of their own so that one bed's variables never leak
# into another run; their output goes to LOG. Returns cargo test's status.
run_faults() {
  local dir=$1 disruptive=$2 log=$3
  shift 3
  [[ -f $dir/env ]] || die "no test bed in $dir (no $dir/env)"
  (
    # A bed without the node writes no TESTBED_NODE: drop a caller's.
    unset TESTBED_NODE TESTBED_WORKER_IMAGE TESTBED_WORKER_IMAGE_NEXT TESTBED_REDIS_IMAGE TESTBED_AUDIT_LOG
    # shellcheck disable=SC1091
    source "$dir/env"
    [[ -n ${TESTBED_AUDIT_LOG:-} ]] ||
      printf 'faults-table: %s has no audit log: writes are not counted (start it with --audit-log)\n' "$dir" >&2
    export REFOP_FAULTS_DISRUPTIVE=$disruptive
    cargo test --test e2e "${CARGO_ARGS[@]}" -- "$@" --nocapture --test-threads=1 >"$log" 2>&1
  )
}

status=0
logs=()
if [[ $ONLY_DISRUPTIVE == 1 ]]; then
  DIR=${TESTBED_DIR:-/tmp/tb-faults}
  own_bed "$DIR"
  logs+=("$DIR/faults.log")
  run_faults "$DIR" 1 "$DIR/faults.log" "${DISRUPTIVE_TESTS[@]}" || status=$?
elif [[ -z $GIVEN ]]; then
  DIR=${TESTBED_DIR:-/tmp/tb-faults}
  own_bed "$DIR"
  logs+=("$DIR/faults.log")
  run_faults "$DIR" 1 "$DIR/faults.log" faults::fault_ || status=$?
else
  DIR=$GIVEN
  logs+=("$DIR/faults.log")
  run_faults "$DIR" 0 "$DIR/faults.log" faults::fault_ || status=$?
  if [[ $DISRUPTIVE == 1 ]]; then
    own=${DIR%/}-disruptive
    own_bed "$own"
    logs+=("$own/faults.log")
    run_faults "$own" 1 "$own/faults.log" "${DISRUPTIVE_TESTS[@]}" || status=$?
  fi
fi

# With --nocapture a row can follow the harness's "test NAME ... " on the same line.
rows=$(cat "${logs[@]}" | grep -ao $'FAULT-TABLE\t.*' | cut -f2- | sort -t. -k1,1n || true)
{
  printf 'fault\tseconds to converge after the fault\toperator writes during the fault\tlost\n'
  printf '%s\n' "$rows"
} | awk -F'\t' 'NF { printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4; if (NR == 1) print "| --- | --- | --- | --- |" }'
printf '\n'
for log in "${logs[@]}"; do
  summary=$(grep -a '^test result:' "$log" | tail -1 || true)
  printf '%s: %s\n' "$log" "${summary:-no test result (see the log)}"
  grep -a '^SKIPPED' "$log" | sort -u || true
done
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $status != 0 ]]; then
  printf 'FAILED (cargo test exit %s): %s\n' "$status" "$(cat "${logs[@]}" | grep -a 'FAILED\|panicked' | head -5)" >&2
fi
exit "$status"
