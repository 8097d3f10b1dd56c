//go:build !unix

package procs

import "time"

// processCPU is unknown here: auto keeps the runtime's default.
func processCPU() (time.Duration, bool) { return 0, false }
