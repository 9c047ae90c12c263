# syntax=docker/dockerfile:1
# The operator image: one static binary (musl, rustls; no OpenSSL, no libc at run
# time) on distroless/static, running as the non-root user 65532. The same image
# runs the controller (`run`), the chain-check and backup Jobs, and, installed as
# kubectl-referral, the kubectl plugin.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/referral-operator:vX.Y.Z .
#
# docs/release.md has the whole release flow. Each platform is built natively (under
# emulation for the other architecture), so no cross toolchain is needed.
#
# The test bed builds this same file offline with buildah (scripts/build-images.sh):
# BINARY_FROM=prebuilt takes a static musl binary built outside instead of compiling
# in the rust image, and BASE_IMAGE names a distroless/static equivalent made there;
# everything else below is what a release gets.

ARG RUST_VERSION=1.89
# The final stage's base.
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot
# Where the binary comes from: `build` compiles it (the release); `prebuilt` copies
# prebuilt/referral-operator (and the kubectl-referral link) from the build context.
ARG BINARY_FROM=build

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The cache mounts keep the registry and build outputs between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=referral-operator-target \
    cargo build --release --locked --bin referral-operator --target "$(uname -m)-unknown-linux-musl" \
 && install -D -m 0755 "target/$(uname -m)-unknown-linux-musl/release/referral-operator" /out/referral-operator \
 && ln -s referral-operator /out/kubectl-referral

FROM scratch AS prebuilt
COPY prebuilt/ /out/

FROM ${BINARY_FROM} AS binary

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="referral-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs referral systems from one ReferralSystem resource" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /out/ /
USER 65532:65532
ENTRYPOINT ["/referral-operator"]
CMD ["run"]
