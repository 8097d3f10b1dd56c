package fleet

import (
	"context"
	"os"
	"testing"

	"github.com/smelterio/smelter/internal/opcua"
)

// TestMain serves OPC UA session workers (docs/opcua.md, "Session
// isolation"): the gateways these tests run start this test binary as
// their devices' workers, as smelter-gateway starts itself.
func TestMain(m *testing.M) {
	if os.Getenv(opcua.WorkerEnv) == "1" {
		os.Exit(opcua.WorkerMain(context.Background(), os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
