#!/usr/bin/env bash
# The fault suite (tests/e2e/faults.rs, issue 20) as a table: for each fault, seconds
# until the system converged again after the fault ended (against the 30 s target),
# the operator's API writes during the fault (from the kube-apiserver's audit log,
# Lease renewals left out), and what was lost. The tests fail when recovery breaks
# or something is lost; this script only runs them one at a time (so one fault's
# load does not slow another's figure) and gathers the rows they print.
#
# Usage: scripts/faults-table.sh [--testbed DIR] [--keep] [-- CARGO TEST ARGS]
#   --testbed DIR   use the test bed already running in DIR (started with
#                   `tests/e2e/testbed.sh start DIR --audit-log`, with or without the
#                   node); without its audit log the writes column says "not counted".
#                   Default: start a control-plane bed (--no-node --audit-log) in
#                   ${TESTBED_DIR:-/tmp/tb-faults} and stop it at the end. None of
#                   these faults needs a pod to run.
#   --keep          leave the bed this script started running
#   --disruptive    with --testbed: run faults 2 and 9 there too (they restart its
#                   API server and etcd; nothing else may use the bed meanwhile)
# Faults 2 (API server restart, etcd stopped) and 9 (API throttling) stop or restart
# the bed's API server, so they run only in a bed of this script's own (or with
# --disruptive), never in the shared bed of `scripts/test-all.sh`, where they skip
# saying so (REFOP_FAULTS_DISRUPTIVE=1 turns them on).
# Takes about 8 minutes on 2 cores (fault 3 alone keeps MongoDB down for 60 s;
# REFOP_FAULT_MONGO_DOWN_SECS changes that). The whole output is kept in DIR/faults.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

DIR="" OWN_BED=1 KEEP=0 DISRUPTIVE=0
die() { printf 'faults-table: %s\n' "$*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --testbed) DIR=${2:?--testbed needs a directory}; OWN_BED=0; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --disruptive) DISRUPTIVE=1; shift ;;
    --) shift; break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ -n $DIR ]] || DIR=${TESTBED_DIR:-/tmp/tb-faults}

cleanup() {
  if [[ $OWN_BED == 1 ]]; then
    if [[ $KEEP == 1 ]]; then
      printf 'faults-table: test bed left running: tests/e2e/testbed.sh stop %s\n' "$DIR" >&2
    else
      "$root/tests/e2e/testbed.sh" stop "$DIR" >/dev/null 2>&1 || true
    fi
  fi
}
trap cleanup EXIT
if [[ $OWN_BED == 1 ]]; then
  TESTBED_DIR=$DIR tests/e2e/testbed.sh start "$DIR" --no-node --audit-log >&2
fi
[[ -f $DIR/env ]] || die "no test bed in $DIR (no $DIR/env)"
# shellcheck disable=SC1091
source "$DIR/env"
[[ -n ${TESTBED_AUDIT_LOG:-} ]] ||
  printf 'faults-table: %s has no audit log: writes are not counted (start it with --audit-log)\n' "$DIR" >&2

[[ $OWN_BED == 1 ]] && DISRUPTIVE=1
export REFOP_FAULTS_DISRUPTIVE=$DISRUPTIVE

out=$DIR/faults.log
status=0
cargo test --test e2e faults::fault_ "$@" -- --nocapture --test-threads=1 >"$out" 2>&1 || status=$?

# With --nocapture a row can follow the harness's "test NAME ... " on the same line.
rows=$(grep -ao $'FAULT-TABLE\t.*' "$out" | cut -f2- | sort -t. -k1,1n || true)
{
  printf 'fault\tseconds to converge after the fault\toperator writes during the fault\tlost\n'
  printf '%s\n' "$rows"
} | awk -F'\t' 'NF { printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4; if (NR == 1) print "| --- | --- | --- | --- |" }'
summary=$(grep -a '^test result:' "$out" | tail -1 || true)
printf '\n%s\nfull output in %s\n' "${summary:-no test result (see the log)}" "$out"
if [[ $status != 0 ]]; then
  printf 'FAILED (cargo test exit %s): %s\n' "$status" "$(grep -a 'FAILED\|panicked' "$out" | head -5)" >&2
fi
exit "$status"
