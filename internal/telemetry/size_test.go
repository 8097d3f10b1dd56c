package telemetry

import (
	"testing"
	"unsafe"
)

// TestReadingSize: the small fields of a Reading share a word, 88 bytes on
// 64-bit instead of 104 (a gateway holds a cycle's readings per device in
// flight: issue 17, docs/benchmarks.md "OPC UA memory, sixth pass").
func TestReadingSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) == 8 && unsafe.Sizeof(Reading{}) != 88 {
		t.Fatalf("Reading is %d bytes, want 88", unsafe.Sizeof(Reading{}))
	}
}
