// Command stamped prints its own version.Info; version_test.go builds it with
// and without -ldflags -X stamps.
package main

import (
	"os"

	"github.com/smelterio/smelter/internal/version"
)

func main() {
	if !version.Command("stamped", os.Args[1:], os.Stdout) {
		os.Exit(2)
	}
}
