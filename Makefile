# Smelter: the two commands on a fresh machine with Go are `make demo` and `make test`.
GO        ?= go
BIN       := bin
LINT_VER  := v2.15.0
GOBIN     := $(shell $(GO) env GOPATH)/bin
LINT      := $(GOBIN)/golangci-lint
CMDS      := smelter-gateway smelter-collector smelter-sim smelter-demo
BENCHTIME ?= 1x
PKGS      := ./...

.PHONY: all build test race check fmt vet lint bench bench-pipeline demo interop clean tools

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

## test: the README's test command: every unit and integration test, with the race detector.
test:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## interop: tests against the machine's Mosquitto (127.0.0.1:1883) and NATS JetStream (127.0.0.1:4222).
interop:
	SMELTER_INTEROP=1 $(GO) test -race -count=1 -run Interop -timeout 10m $(PKGS)

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

## demo: simulators (Modbus + OPC UA), gateway, collector with embedded brokers and dashboard.
demo: build
	$(BIN)/smelter-demo

clean:
	rm -rf $(BIN) .demo
