# syntax=docker/dockerfile:1
# opsplane container image: both binaries (opsplane-operator, opsplane-node-daemon) on a small
# Debian runtime, running as the non-root user opsplane (65532) by default.
#
# For builders with network access (docker build, buildah bud, kaniko):
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/opsplane/opsplane:0.1.0 .
# Without a docker daemon or registry access, scripts/build-image.sh assembles the same layout
# from binaries built on the host into an OCI archive (README.md, "Container image").
#
# The node-daemon's needs (set by the chart's DaemonSet, not by this image): it runs as root
# (the host files its probes read under /host and its state in /var/lib/opsplane belong to
# root), with hostNetwork (the node API on the node's address, NIC probes and IP tasks), and —
# only with disruptive tasks or service states enabled — hostPID plus nsenter from this image
# to run systemctl and the power commands in PID 1's namespaces, as kured does.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p opsplane-operator -p opsplane-node-daemon \
 && install -D -m 0755 target/release/opsplane-operator /out/opsplane-operator \
 && install -D -m 0755 target/release/opsplane-node-daemon /out/opsplane-node-daemon

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
# ca-certificates: https checks; tzdata: schedule time zones; util-linux (Essential, already
# present in the base) provides nsenter.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 opsplane \
 && useradd --uid 65532 --gid 65532 --home-dir /home/opsplane --create-home --shell /sbin/nologin opsplane \
 && install -d -o 65532 -g 65532 /var/lib/opsplane \
 && command -v nsenter
COPY --from=build /out/ /usr/local/bin/
LABEL org.opencontainers.image.title="opsplane" \
      org.opencontainers.image.description="opsplane operator and node-daemon" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/opsplane/opsplane" \
      org.opencontainers.image.url="https://opsplane.io" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="opsplane"
ENV HOME=/home/opsplane
USER 65532:65532
WORKDIR /
EXPOSE 8080/tcp 6666/tcp
CMD ["opsplane-operator"]
