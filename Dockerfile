# syntax=docker/dockerfile:1
# Container images of Tessera's two binaries, one target each:
#   make image            (docker, podman or buildah; tags $(IMAGE_REPO)/<binary>:$(VERSION))
#   docker build --target gpu-agent --build-arg VERSION=v0.1.0 -t ghcr.io/tessera-gpu/gpu-agent:v0.1.0 .
#
# Both bases are pinned by digest; the tag in front is for people, the digest
# is what is pulled. hack/update-image-digests.sh moves them to the digests the
# tags point at today (it needs registry access). The two share Debian 12's
# glibc 2.36: the binaries are built with cgo (go-nvml dlopens the driver's
# libnvidia-ml), and a binary built against a newer glibc would not start on
# the runtime base.
ARG GO_IMAGE=docker.io/library/golang:1.26-bookworm@sha256:b305420a68d0f229d91eb3b3ed9e519fcf2cf5461da4bef997bf927e8c0bfd2b
# distroless base: glibc, libssl, CA certificates, tzdata and /etc/passwd with
# root and nonroot (65532); no shell, no package manager.
ARG BASE_IMAGE=gcr.io/distroless/base-debian12@sha256:9e9b50d2048db3741f86a48d939b4e4cc775f5889b3496439343301ff54cdba8

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=v0.0.0-dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    make build VERSION=${VERSION}

# gpu-agent: one per GPU node (DaemonSet). It runs as root in a privileged
# container: NVML needs the /dev/nvidia* devices and creating MIG instances
# needs the MIG config capability. The NVIDIA Container Toolkit reads the
# variables below, as it does for NVIDIA's own device plugin and mig-manager
# images: it mounts the driver's libnvidia-ml.so.1 (the "utility" capability)
# into the image's library directory and refreshes its ld.so.cache, where
# go-nvml's dlopen finds it; on a node without the toolkit the agent starts
# with no GPU backend and says why.
FROM ${BASE_IMAGE} AS gpu-agent
ARG VERSION=v0.0.0-dev
LABEL org.opencontainers.image.title="tessera gpu-agent" \
      org.opencontainers.image.source="https://github.com/tessera-gpu/tessera" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /src/bin/gpu-agent /usr/bin/gpu-agent
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility \
    NVIDIA_MIG_CONFIG_DEVICES=all \
    NVIDIA_MIG_MONITOR_DEVICES=all
USER 0:0
ENTRYPOINT ["/usr/bin/gpu-agent"]

# gpu-scheduler: kube-scheduler with Tessera's plugins (Deployment). Needs no
# GPU and no privilege.
FROM ${BASE_IMAGE} AS gpu-scheduler
ARG VERSION=v0.0.0-dev
LABEL org.opencontainers.image.title="tessera gpu-scheduler" \
      org.opencontainers.image.source="https://github.com/tessera-gpu/tessera" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /src/bin/gpu-scheduler /usr/bin/gpu-scheduler
USER 65532:65532
ENTRYPOINT ["/usr/bin/gpu-scheduler"]
