# syntax=docker/dockerfile:1
#
# nfs-provisioner image. Multi-arch with buildx, e.g.
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     --build-arg BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
#     -t ghcr.io/kube-nfs/nfs-provisioner:v0.1.0 .
#
# The binary is built on the build machine's platform and cross-compiled for
# the target (pure Go, CGO_ENABLED=0), so no emulation is needed.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
ARG BUILD_DATE=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY cmd/ cmd/
COPY pkg/ pkg/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w \
        -X github.com/kube-nfs/nfs-provisioner/pkg/version.Version=${VERSION} \
        -X github.com/kube-nfs/nfs-provisioner/pkg/version.Commit=${COMMIT} \
        -X github.com/kube-nfs/nfs-provisioner/pkg/version.BuildDate=${BUILD_DATE}" \
      -o /out/nfs-provisioner ./cmd/nfs-provisioner

# distroless/static: CA certificates, tzdata and /etc/passwd, no shell, no
# package manager. The binary needs nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="nfs-provisioner" \
      org.opencontainers.image.description="Dynamic provisioner for an existing NFS export, one directory per claim" \
      org.opencontainers.image.source="https://github.com/kube-nfs/nfs-provisioner" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/nfs-provisioner /nfs-provisioner
# USER: the image defaults to the unprivileged "nonroot" user (65532), the
# safe choice for anyone running it without a security context. On an export
# with no_root_squash the provisioner must run as root to create directories in
# a root-owned export and to chown them (StorageClass uid/gid): the Helm chart
# and deploy/ therefore set runAsUser: 0 explicitly, with every capability
# dropped except CHOWN, DAC_OVERRIDE, FOWNER and FSETID. With plain Docker use
# `--user 0`. See charts/nfs-provisioner/README.md, "Running as root".
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/nfs-provisioner"]
