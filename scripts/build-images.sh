#!/usr/bin/env bash
# Builds the container images of the project and of its test bed, here, with no
# container engine and no registry: buildah (Debian) builds each from a
# Containerfile into its own storage under the cache, and writes a
# docker-archive that `ctr images import` loads into the test bed's containerd.
#
#   scripts/build-images.sh testbed     the test bed's images (below); prints
#                                       NAME=ARCHIVE lines and writes them to
#                                       $CACHE/images/testbed.env
#   scripts/build-images.sh operator    the operator image, from the release
#                                       Dockerfile with a static musl binary built
#                                       here; prints REFOP_OPERATOR_IMAGE=... and
#                                       REFOP_OPERATOR_IMAGE_ARCHIVE=...
#
# The operator image: `cargo build --release --locked --target
# x86_64-unknown-linux-musl` (the Dockerfile's own command), then the Dockerfile
# itself with BINARY_FROM=prebuilt (its stage that takes that binary instead of
# compiling in rust:bookworm, which no registry serves here) and BASE_IMAGE set to
# static-base, the distroless/static equivalent made here from Debian's files.
# Everything else (layout, user 65532, entrypoint, labels) is the release's.
#
# Test bed images (tests/e2e/images/*/Containerfile), all from binaries that
# tests/e2e/testbed.sh install builds and caches:
#   static-base   distroless/static-debian12:nonroot's files, from Debian
#   pause         Kubernetes' pause.c, static
#   busybox       Debian's busybox-static (helper and client pods)
#   redis         Debian's redis-server + redis-cli and their libraries, user 999
#   worker        the stand-in for the user's application (tests/e2e/node/worker)
#   coredns       the cluster DNS
#   local-path    the PersistentVolume provisioner
#
# Each archive is rebuilt only when a stamp of its inputs changes. Knobs:
# REFOP_CACHE_DIR (default ~/.cache/referral-operator), CARGO_TARGET_DIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
E2E_DIR="$ROOT/tests/e2e"
# shellcheck source=../tests/e2e/versions.env
source "$E2E_DIR/versions.env"
CACHE_ROOT="${REFOP_CACHE_DIR:-$HOME/.cache/referral-operator}"
IMAGES="$CACHE_ROOT/images"
STORAGE=(--root "$IMAGES/buildah/storage" --runroot "$IMAGES/buildah/run" --storage-driver vfs)
MUSL_TARGET=x86_64-unknown-linux-musl

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# What the images are built from: Debian's buildah, busybox-static and Redis.
need_packages() {
  local missing=() p
  for p in buildah busybox-static redis-server redis-tools ca-certificates tzdata; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "apt-get install ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d added=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; added=1; fi
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 install --no-install-recommends "${missing[@]}")
  local rc=0
  "${apt[@]}" >"$IMAGES/apt.log" 2>&1 || {
    env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update >>"$IMAGES/apt.log" 2>&1 &&
      "${apt[@]}" >>"$IMAGES/apt.log" 2>&1
  } || rc=$?
  [[ $added -eq 1 ]] && rm -f "$policy"
  [[ $rc -eq 0 ]] || { tail -n 20 "$IMAGES/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
}

buildah_() { buildah "${STORAGE[@]}" "$@"; }

# build NAME REF CONTEXT_DIR CONTAINERFILE STAMP [buildah bud args...]
# -> ARCHIVE path on stdout. Skips the build when ARCHIVE's stamp matches.
build() {
  local name=$1 ref=$2 context=$3 file=$4 stamp=$5; shift 5
  local archive="$IMAGES/$name.tar"
  if [[ -f $archive && $(cat "$archive.stamp" 2>/dev/null) == "$stamp $ref" ]]; then
    echo "$archive"; return 0
  fi
  log "building $ref"
  buildah_ bud --quiet --pull=never --timestamp 0 --layers=false -f "$file" -t "$ref" "$@" "$context" >"$IMAGES/$name.build.log" 2>&1 ||
    { cat "$IMAGES/$name.build.log" >&2; die "buildah bud $ref failed"; }
  rm -f "$archive.tmp"
  buildah_ push --quiet "$ref" "docker-archive:$archive.tmp:$ref" >>"$IMAGES/$name.build.log" 2>&1 ||
    { cat "$IMAGES/$name.build.log" >&2; die "buildah push $ref failed"; }
  mv "$archive.tmp" "$archive"
  echo "$stamp $ref" >"$archive.stamp"
  echo "$archive"
}

hash_files() { # files or dirs... -> hash of their content, names and modes
  local f
  for f in "$@"; do
    if [[ -d $f ]]; then
      (cd "$f" && find . \( -type f -o -type l \) -printf '%p %m %l\n' | sort && find . -type f -print0 | sort -z | xargs -0r cat)
    else
      cat "$f"
    fi
  done | sha256sum | cut -c1-16
}

# A fresh build context under the cache.
context() { # name -> dir
  local dir="$IMAGES/context/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  echo "$dir"
}

cached_bin() { # cache-dir binary -> path, or die saying what builds it
  local path="$1/bin/$2"
  [[ -x $path ]] || die "$path is missing: run tests/e2e/testbed.sh install first"
  echo "$path"
}

# ------------------------------------------------------------ test bed ---

static_base() {
  local ctx; ctx=$(context static-base)
  mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/usr/share" "$ctx/rootfs/tmp" "$ctx/rootfs/root" "$ctx/home/nonroot"
  chmod 1777 "$ctx/rootfs/tmp"; chmod 700 "$ctx/rootfs/root" "$ctx/home/nonroot"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
  cp -a /usr/share/zoneinfo "$ctx/rootfs/usr/share/"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$ctx/rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' >"$ctx/rootfs/etc/group"
  echo 'hosts: files dns' >"$ctx/rootfs/etc/nsswitch.conf"
  cp "$E2E_DIR/images/static-base/Containerfile" "$ctx/"
  STATIC_BASE=localhost/referral-testbed/static-base:debian12
  build static-base "$STATIC_BASE" "$ctx" "$ctx/Containerfile" "$(hash_files "$ctx")" >/dev/null
  # Later images build FROM it by name: make sure buildah's storage still has it.
  buildah_ inspect --type image "$STATIC_BASE" >/dev/null 2>&1 ||
    { rm -f "$IMAGES/static-base.tar.stamp"; build static-base "$STATIC_BASE" "$ctx" "$ctx/Containerfile" "$(hash_files "$ctx")" >/dev/null; }
  STATIC_BASE_STAMP=$(hash_files "$ctx")
}

# A Containerfile FROM static-base plus one binary.
on_static_base() { # name ref binary-path
  local name=$1 ref=$2 bin=$3 ctx
  ctx=$(context "$name")
  cp "$bin" "$ctx/"
  cp "$E2E_DIR/images/$name/Containerfile" "$ctx/"
  build "$name" "$ref" "$ctx" "$ctx/Containerfile" "$(hash_files "$ctx")-$STATIC_BASE_STAMP" --build-arg "BASE_IMAGE=$STATIC_BASE"
}

pause_image() {
  local dir tag ctx
  # testbed.sh names the one its Kubernetes version builds; else the newest.
  dir=${REFOP_PAUSE_DIR:-$(find "$CACHE_ROOT" -maxdepth 1 -name 'pause-*' ! -name '*.tmp' | sort -V | tail -n1)}
  [[ -n $dir && -d $dir ]] || die "no pause build under $CACHE_ROOT: run tests/e2e/testbed.sh install first"
  tag=${dir##*/pause-}
  ctx=$(context pause)
  cp "$(cached_bin "$dir" pause)" "$ctx/pause"
  cp "$E2E_DIR/images/pause/Containerfile" "$ctx/"
  echo "TESTBED_PAUSE_IMAGE=localhost/referral-testbed/pause:$tag"
  echo "TESTBED_PAUSE_ARCHIVE=$(build pause "localhost/referral-testbed/pause:$tag" "$ctx" "$ctx/Containerfile" "$(hash_files "$ctx")")"
}

busybox_image() {
  local ctx version applet
  ctx=$(context busybox)
  version=$(dpkg-query -W -f '${Version}' busybox-static | sed 's/^[0-9]*://; s/-.*//')
  mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
  chmod 1777 "$ctx/rootfs/tmp"
  cp /bin/busybox "$ctx/rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$ctx/rootfs/bin/$applet"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$ctx/rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$ctx/rootfs/etc/group"
  cp "$E2E_DIR/images/busybox/Containerfile" "$ctx/"
  echo "TESTBED_BUSYBOX_IMAGE=localhost/referral-testbed/busybox:$version"
  echo "TESTBED_BUSYBOX_ARCHIVE=$(build busybox "localhost/referral-testbed/busybox:$version" "$ctx" "$ctx/Containerfile" "$(hash_files "$ctx")")"
}

redis_image() {
  local ctx version bin lib
  ctx=$(context redis)
  version=$(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
  mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/data"
  chmod 1777 "$ctx/rootfs/tmp"
  for bin in redis-server redis-cli; do
    cp -L "$(command -v "$bin")" "$ctx/rootfs/usr/bin/$bin"
    # The libraries the dynamic loader resolves for it, at the same paths.
    for lib in $(ldd "$(command -v "$bin")" | awk '/=> \// { print $3 } /^[ \t]*\/lib/ { print $1 }'); do
      mkdir -p "$ctx/rootfs$(dirname "$lib")"
      cp -L "$lib" "$ctx/rootfs$lib"
    done
  done
  cp /bin/busybox "$ctx/rootfs/bin/busybox"
  ln -s busybox "$ctx/rootfs/bin/sh"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'redis:x:999:999:redis:/data:/sbin/nologin' >"$ctx/rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'redis:x:999:' >"$ctx/rootfs/etc/group"
  cp "$E2E_DIR/images/redis/Containerfile" "$ctx/"
  echo "TESTBED_REDIS_IMAGE=localhost/referral-testbed/redis:$version"
  echo "TESTBED_REDIS_ARCHIVE=$(build redis "localhost/referral-testbed/redis:$version" "$ctx" "$ctx/Containerfile" "$(hash_files "$ctx")")"
}

cmd_testbed() {
  local out
  static_base
  out=$(
    pause_image
    busybox_image
    redis_image
    ref=localhost/referral-testbed/worker:1
    echo "TESTBED_WORKER_IMAGE=$ref"
    echo "TESTBED_WORKER_ARCHIVE=$(on_static_base worker "$ref" "$(cached_bin "$CACHE_ROOT/standin-worker" worker)")"
    ref=localhost/referral-testbed/coredns:$COREDNS_VERSION
    echo "TESTBED_COREDNS_IMAGE=$ref"
    echo "TESTBED_COREDNS_ARCHIVE=$(on_static_base coredns "$ref" \
      "$(cached_bin "$CACHE_ROOT/coredns-$COREDNS_VERSION" coredns)")"
    ref=localhost/referral-testbed/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION
    echo "TESTBED_LOCAL_PATH_IMAGE=$ref"
    echo "TESTBED_LOCAL_PATH_ARCHIVE=$(on_static_base local-path "$ref" \
      "$(cached_bin "$CACHE_ROOT/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION" local-path-provisioner)")"
  )
  printf '%s\n' "$out" >"$IMAGES/testbed.env"
  printf '%s\n' "$out"
}

# ------------------------------------------------------------ operator ---

cmd_operator() {
  command -v cargo >/dev/null || die "cargo is needed"
  if ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
    log "rustup target add $MUSL_TARGET"
    rustup target add "$MUSL_TARGET" >&2
  fi
  # ring's C code is compiled for musl with musl-gcc.
  if ! command -v musl-gcc >/dev/null; then
    local policy=/usr/sbin/policy-rc.d added=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; added=1; fi
    env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 install --no-install-recommends musl-tools >&2 ||
      { env DEBIAN_FRONTEND=noninteractive apt-get -q update >&2 &&
        env DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends musl-tools >&2; } ||
      { [[ $added -eq 1 ]] && rm -f "$policy"; die "apt-get install musl-tools failed"; }
    [[ $added -eq 1 ]] && rm -f "$policy"
  fi
  local target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
  log "cargo build --release --locked --bin referral-operator --target $MUSL_TARGET (target dir $target_dir)"
  local t0=$SECONDS
  (cd "$ROOT" && cargo build --release --locked --quiet --bin referral-operator --target "$MUSL_TARGET" >&2)
  local bin="$target_dir/$MUSL_TARGET/release/referral-operator"
  [[ -x $bin ]] || die "cargo produced no $bin"
  if file "$bin" | grep -q 'dynamically linked'; then die "$bin is not static: $(file "$bin")"; fi
  log "binary built in $((SECONDS - t0))s: $(du -h "$bin" | cut -f1)"

  # The images' lock only now: cargo locks its own target dir, and a checkout's
  # release build (up to ~18 min on a busy machine) must not hold up another
  # checkout's bed, whose start waits here for the test bed images.
  images_lock
  static_base
  local version hash ctx ref
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
  ctx=$(context operator)
  mkdir -p "$ctx/prebuilt"
  cp "$bin" "$ctx/prebuilt/referral-operator"
  ln -s referral-operator "$ctx/prebuilt/kubectl-referral"
  hash=$(hash_files "$ctx" "$ROOT/Dockerfile")
  ref="localhost/referral-operator:v$version-${hash:0:12}"
  mkdir -p "$IMAGES/operator"
  local archive
  archive=$(IMAGES="$IMAGES/operator" build "$hash" "$ref" "$ctx" "$ROOT/Dockerfile" "$hash-$STATIC_BASE_STAMP" \
    --build-arg BINARY_FROM=prebuilt --build-arg "BASE_IMAGE=$STATIC_BASE")
  # Keep the five newest operator archives (each checkout builds its own).
  ls -t "$IMAGES"/operator/*.tar 2>/dev/null | tail -n +6 | while read -r old; do rm -f "$old" "$old.stamp" "${old%.tar}.build.log"; done
  echo "REFOP_OPERATOR_IMAGE=$ref"
  echo "REFOP_OPERATOR_IMAGE_ARCHIVE=$archive"
}

# One buildah storage and one context directory under the cache, shared by every
# checkout: one build at a time.
images_lock() {
  exec 8>"$IMAGES/.lock"
  flock 8
}

mkdir -p "$IMAGES"
cmd=${1:-}
case $cmd in
  testbed)
    need_packages
    images_lock
    cmd_testbed
    ;;
  operator)
    need_packages
    cmd_operator
    ;;
  *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
