# syntax=docker/dockerfile:1
# smelter-gateway: a static binary (CGO_ENABLED=0) on distroless/static, which
# carries CA certificates and tzdata and runs as the non-root user 65532.
# Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile \
#     --build-arg VERSION=$(git describe --tags --always --dirty) --build-arg COMMIT=$(git rev-parse HEAD) \
#     -t smelter-gateway .
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=unknown
ARG COMMIT=
ARG DATE=
ARG TARGETOS=linux
ARG TARGETARCH
ARG TARGETVARIANT
RUN set -e; arm=; case "$TARGETVARIANT" in v*) arm=${TARGETVARIANT#v};; esac; \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH GOARM=$arm go build -trimpath \
      -ldflags "-s -w -X github.com/smelterio/smelter/internal/version.version=$VERSION -X github.com/smelterio/smelter/internal/version.commit=$COMMIT -X github.com/smelterio/smelter/internal/version.date=$DATE" \
      -o /out/usr/bin/smelter-gateway ./cmd/smelter-gateway && \
    mkdir -p /out/var/lib/smelter /out/etc/smelter

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/usr/bin/smelter-gateway /usr/bin/smelter-gateway
COPY --from=build --chown=65532:65532 /out/var/lib/smelter /var/lib/smelter
CMD ["run", "-config", "/etc/smelter/gateway.yaml"]
USER 65532:65532
WORKDIR /var/lib/smelter
EXPOSE 9100
ENTRYPOINT ["/usr/bin/smelter-gateway"]
