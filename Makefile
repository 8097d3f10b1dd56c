# Smelter: the two commands on a fresh machine with Go are `make demo` and `make test`.
GO        ?= go
BIN       := bin
LINT_VER  := v2.15.0
GOBIN     := $(shell $(GO) env GOPATH)/bin
LINT      := $(GOBIN)/golangci-lint
CMDS      := smelter-gateway smelter-collector smelter-sim smelter-demo
BENCHTIME ?= 1x
PKGS      := ./...

# Version stamps (internal/version): `smelter-gateway version` prints them.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
VPKG      := github.com/smelterio/smelter/internal/version
LDFLAGS   := -X $(VPKG).version=$(VERSION) -X $(VPKG).commit=$(COMMIT) -X $(VPKG).date=$(DATE)

# Cross builds and packages (docs/install.md). PLATFORMS: GOOS/GOARCH[/GOARM].
DIST      := dist
PLATFORMS ?= linux/amd64 linux/arm64 linux/arm/7
FORMATS   ?= deb rpm
NFPM_VER  := v2.45.2
NFPM      := $(CURDIR)/.tools/nfpm-$(NFPM_VER)/nfpm
PKG_VERSION ?= $(shell sh deploy/package/pkgversion.sh)

.PHONY: all build test race check fmt vet lint bench bench-pipeline bench-peers demo interop clean tools dist package

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# each_platform runs the shell commands $(1) once per platform of PLATFORMS with
# $$os, $$arch, $$arm (the GOARM level, empty off ARM) and $$dir (its dist/ folder).
define each_platform
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; arm=; \
		if [ "$$rest" != "$$arch" ]; then arm=$${rest#*/}; fi; \
		dir=$(DIST)/$${os}_$${arch}$${arm:+v$$arm}; \
		$(1) \
	done
endef

## dist: static binaries (CGO_ENABLED=0) for every platform in dist/<os>_<arch>[v<arm>]/.
dist:
	$(call each_platform, mkdir -p $$dir; echo "== $$dir"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" \
			-o $$dir/ $(addprefix ./cmd/,$(CMDS));)

$(NFPM):
	GOBIN=$(dir $(NFPM)) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VER)

## package: .deb and .rpm (FORMATS) for every platform of dist, into dist/ (nfpm arch: amd64, arm64, arm7);
## the manual pages of deploy/package/man are gzipped (-n: reproducible) next to the binaries.
package: dist $(NFPM)
	$(call each_platform, mkdir -p $$dir/man; \
		for m in deploy/package/man/*.1; do gzip -9nc $$m > $$dir/man/$$(basename $$m).gz; done; \
		sed -e "s|\$${SMELTER_PKG_VERSION}|$(PKG_VERSION)|" -e "s|\$${SMELTER_PKG_ARCH}|$$arch$$arm|" \
			-e "s|\$${SMELTER_DIST}|$$dir|" deploy/package/nfpm.yaml > $$dir/nfpm.yaml; \
		for f in $(FORMATS); do $(NFPM) package -f $$dir/nfpm.yaml -p $$f -t $(DIST)/; done;)

## test: the README's test command: every unit and integration test, with the race detector.
test:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## interop: tests against the machine's Mosquitto (127.0.0.1:1883) and NATS JetStream (127.0.0.1:4222).
interop:
	SMELTER_INTEROP=1 $(GO) test -race -count=1 -p 1 -run Interop -timeout 20m $(PKGS)

fmt:
	gofmt -l -w cmd internal simulators

vet:
	$(GO) vet $(PKGS)

$(LINT):
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(LINT_VER)

lint: $(LINT)
	$(LINT) run $(PKGS)

## check: the one gate: format, vet, lint, race tests.
check:
	@test -z "$$(gofmt -l cmd internal simulators)" || (echo "gofmt needed:"; gofmt -l cmd internal simulators; exit 1)
	$(MAKE) vet lint test

## bench: Go benchmarks of the hot paths (figures in docs/benchmarks.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 $(PKGS)

## bench-gateway: smelter-gateway's RSS and CPU under load, measured from outside (deploy/bench/gwload,
## docs/benchmarks.md): 100 Modbus TCP devices x 100 registers every 100 ms, both uplinks, the spool on.
## The gateway is built as `make dist` builds it. GWLOAD_FLAGS adds flags, e.g.
## GWLOAD_FLAGS='-proto opcua -devices 20 -servers 2 -points 1000' or '-memory-limit 40MiB'.
.PHONY: bench-gateway
bench-gateway:
	@mkdir -p $(BIN)/bench
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/bench/ ./cmd/smelter-gateway ./deploy/bench/gwload
	$(BIN)/bench/gwload -gateway $(BIN)/bench/smelter-gateway $(GWLOAD_FLAGS)

## bench-peers: smelter-gateway and Telegraf side by side on the same libmodbus and node-opcua
## servers (docs/benchmarks.md, "Side by side with Telegraf"); about 10 minutes, never part of
## test or check. Telegraf is built once from the Go module proxy at the version that
## bench/peers/telegraf/go.mod pins, with only the plugins used, and kept in bench/peers/.bin.
## PEERS_FLAGS passes flags to the driver (go run ./bench/peers -h), e.g. PEERS_FLAGS=-steps=10000.
PEERS         := bench/peers
PEERS_BIN     := $(PEERS)/.bin
TELEGRAF_VER  := $(shell awk '$$1 == "require" && $$2 == "github.com/influxdata/telegraf" {print $$3}' $(PEERS)/telegraf/go.mod)
TELEGRAF      := $(PEERS_BIN)/telegraf-$(TELEGRAF_VER)
TELEGRAF_TAGS := custom,inputs.modbus,inputs.opcua_listener,outputs.nats,serializers.json
PEERS_FLAGS   ?=

$(TELEGRAF): $(PEERS)/telegraf/go.mod $(PEERS)/telegraf/go.sum
	@mkdir -p $(PEERS_BIN)
	cd $(PEERS)/telegraf && $(GO) build -trimpath -tags $(TELEGRAF_TAGS) \
		-ldflags "-X github.com/influxdata/telegraf/internal.Version=$(TELEGRAF_VER:v%=%)" \
		-o $(CURDIR)/$@ github.com/influxdata/telegraf/cmd/telegraf || { \
		echo "bench-peers: could not build Telegraf $(TELEGRAF_VER) from the Go module proxy (error above): nothing measured"; exit 1; }

$(PEERS_BIN)/modbus-server: $(PEERS)/modbus/server.c
	@mkdir -p $(PEERS_BIN)
	@pkg-config --exists libmodbus || { echo "bench-peers: libmodbus is missing (apt-get install -y libmodbus-dev pkg-config)"; exit 1; }
	gcc -O2 -Wall -Wextra -o $@ $< $$(pkg-config --cflags --libs libmodbus)

bench-peers: build $(TELEGRAF) $(PEERS_BIN)/modbus-server
	@command -v node >/dev/null || { echo "bench-peers: node is missing (the OPC UA step runs node-opcua)"; exit 1; }
	@test -d deploy/opcua-interop/node_modules/node-opcua || npm ci --prefix deploy/opcua-interop --no-audit --no-fund
	$(GO) run ./$(PEERS) -gateway $(BIN)/smelter-gateway -telegraf $(TELEGRAF) -modbus-server $(PEERS_BIN)/modbus-server $(PEERS_FLAGS)

## demo: simulators (Modbus + OPC UA), gateway, collector with embedded brokers and dashboard.
demo: build
	$(BIN)/smelter-demo $(DEMO_FLAGS)

clean:
	rm -rf $(BIN) .demo $(DIST)
