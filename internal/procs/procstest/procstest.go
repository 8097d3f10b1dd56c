// Package procstest prepares the process for a test that applies
// max_procs (internal/procs).
package procstest

import (
	"os"
	"runtime"
	"testing"
)

// Default removes GOMAXPROCS from the environment for t's duration (so
// max_procs is not overridden), puts the runtime's default GOMAXPROCS in
// force again when t ends and now, and returns that default.
func Default(t testing.TB) int {
	t.Helper()
	t.Setenv("GOMAXPROCS", "")
	if err := os.Unsetenv("GOMAXPROCS"); err != nil {
		t.Fatal(err)
	}
	runtime.SetDefaultGOMAXPROCS()
	t.Cleanup(runtime.SetDefaultGOMAXPROCS)
	return runtime.GOMAXPROCS(0)
}
