package collector

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/smelterio/smelter/internal/natswire"
)

// TestMain runs the package's tests with the pull connections' read chunks
// guarded (natswire.SetGuard): a string or slice of a message kept past
// its cycle, which in production would later show another message's
// bytes, faults at its first read instead. The benchmark's collector
// process (TestIngestChild) runs as production does.
func TestMain(m *testing.M) {
	guard := os.Getenv(ingestChildEnv) == ""
	natswire.SetGuard(guard)
	code := m.Run()
	if guard && code == 0 && natswire.Guarded() == 0 && !testing.Short() && !onlySome() {
		fmt.Fprintln(os.Stderr, "collector tests: no pull chunk was released in guard mode: the guard checked nothing")
		code = 1
	}
	os.Exit(code)
}

// onlySome reports whether -test.run or -test.bench narrowed the run (a
// few tests may never release a chunk).
func onlySome() bool {
	run, bench := flag.Lookup("test.run"), flag.Lookup("test.bench")
	return (run != nil && run.Value.String() != "") || (bench != nil && bench.Value.String() != "")
}

// heapChunks makes the pull connections dialed in the rest of the test
// read into chunks of the Go heap, not guarded ones (a test that asks the
// garbage collector, through weak pointers, whether a chunk is still
// referenced).
func heapChunks(t *testing.T) {
	natswire.SetGuard(false)
	t.Cleanup(func() { natswire.SetGuard(os.Getenv(ingestChildEnv) == "") })
}
