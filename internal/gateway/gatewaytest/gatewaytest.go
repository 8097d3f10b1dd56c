// Package gatewaytest runs a real smelter-gateway for tests of other
// packages (the command tool, the deploy files, the simulator fleet): the
// configuration written to a temporary directory, loaded with the
// gateway's own loader and drivers, run until the test ends.
package gatewaytest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
)

// Run writes cfgYAML to gateway.yaml in a new temporary directory (a
// relative data_dir lands there), loads it and runs the gateway until the
// test ends, failing the test if it does not load or Run fails. It returns
// the loaded configuration.
func Run(tb testing.TB, cfgYAML string) *gwconfig.Config {
	tb.Helper()
	cfg, _ := Start(tb, cfgYAML)
	return cfg
}

// Start is Run that also returns the running gateway (its Status).
func Start(tb testing.TB, cfgYAML string) (*gwconfig.Config, *gateway.Gateway) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(cfgYAML), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg, err := gwconfig.Load(path, gateway.Drivers()...)
	if err != nil {
		tb.Fatalf("gateway configuration:\n%v", err)
	}
	g, err := gateway.New(cfg, gateway.Options{DrainTimeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("gateway.Run: %v", err)
		}
	})
	return cfg, g
}
