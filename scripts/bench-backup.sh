#!/usr/bin/env bash
# Benchmark of the native dump and restore (issue 17): `referral-operator bench backup`
# against a mongo-java-server of its own (the test bed's jar, memory backend, with a
# heap large enough for 5,000,000 documents and the JIT the test bed turns off for a
# fast start), dumps to a folder on disk. Prints, per size, documents/s and MB/s of
# the plain cursor read (the limit), the dump, the verify and the restore, the peak
# RSS of each, and the dump/read ratio (target >= 0.8).
#
# Usage: scripts/bench-backup.sh [--docs 1000000,5000000] [--bin PATH] [--heap 14g]
#          [--dir DIR] [--uri URI]
#   --docs LIST   collection sizes (1000000,5000000)
#   --bin PATH    an already built binary instead of `cargo build --release`
#                 (figures are only meaningful for a release build)
#   --heap SIZE   the MongoDB server's -Xmx (14g: it holds every document as Java
#                 objects, several hundred bytes each)
#   --dir DIR     where the dumps go (a temporary folder)
#   --uri URI     measure against this server instead of starting one (MONGODB_URI
#                 of a real MongoDB; the scratch database refop_bench_backup is dropped)
#   --gzip-level N  the dump's gzip level (its default when absent)
# Not part of CI: it takes many minutes and most of two cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

DOCS=1000000,5000000 BIN="" HEAP=14g DIR="" URI="" LEVEL=""
die() { printf 'bench-backup: %s\n' "$*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --docs) DOCS=${2:?--docs needs a list}; shift 2 ;;
    --bin) BIN=${2:?--bin needs a path}; shift 2 ;;
    --heap) HEAP=${2:?--heap needs a size}; shift 2 ;;
    --dir) DIR=${2:?--dir needs a directory}; shift 2 ;;
    --uri) URI=${2:?--uri needs a connection string}; shift 2 ;;
    --gzip-level) LEVEL=${2:?--gzip-level needs 1-9}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $DOCS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--docs $DOCS is not a list of positive numbers"
[[ $HEAP =~ ^[1-9][0-9]*[mg]$ ]] || die "--heap $HEAP is not a size such as 14g"

log() { printf '[bench-backup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -z $BIN ]]; then
  log "building the operator (release)"
  nice -n 10 cargo build --release --quiet --bin referral-operator
  BIN=${CARGO_TARGET_DIR:-$root/target}/release/referral-operator
fi
[[ -x $BIN ]] || die "$BIN is not an executable"

work=$(mktemp -d /tmp/refop-bench-backup.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [[ -z $URI ]]; then
  # The test bed's install builds and caches the server's jar.
  tests/e2e/testbed.sh install
  # shellcheck source=../tests/e2e/versions.env
  source tests/e2e/versions.env
  jar="${REFOP_CACHE_DIR:-$HOME/.cache/referral-operator}/mongo-java-server-$MONGO_JAVA_SERVER_VERSION/mongo-server.jar"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log "starting mongo-java-server $MONGO_JAVA_SERVER_VERSION on 127.0.0.1:$port (-Xmx$HEAP, G1, full JIT)"
  java "-Xms1g" "-Xmx$HEAP" -XX:+UseG1GC -jar "$jar" "$port" "$MONGO_SERVER_VERSION" >"$work/mongo.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 150); do
    grep -q '^ready' "$work/mongo.log" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/mongo.log" >&2; die "the MongoDB server did not start"; }
    sleep 0.2
  done
  grep -q '^ready' "$work/mongo.log" || die "the MongoDB server was not ready after 30 s"
  URI="mongodb://127.0.0.1:$port"
fi

args=(bench backup --docs "$DOCS")
[[ -n $DIR ]] && args+=(--dir "$DIR")
[[ -n $LEVEL ]] && args+=(--gzip-level "$LEVEL")
log "running: referral-operator ${args[*]}"
MONGODB_URI=$URI "$BIN" "${args[@]}"
if [[ -n $server_pid ]]; then
  log "the MongoDB server's peak RSS: $(awk '/^VmHWM:/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$server_pid/status")"
fi
