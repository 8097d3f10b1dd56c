package natswire

import (
	"strings"
	"testing"
	"unsafe"
)

// The interned subjects are bounded in bytes as well as in number: 64 KiB
// subjects (as long as a protocol line allows) from a hostile server kept
// up to 65,536 of them, 4 GiB; a subject seen again is the same string.
func TestInternBounded(t *testing.T) {
	var c Conn
	long := []byte(strings.Repeat("s", 60<<10))
	for i := range 1000 {
		long[0] = byte('a' + i%26)
		long[1] = byte('a' + i/26%26)
		long[2] = byte('a' + i/676%26)
		c.intern(long)
		if c.subjectBytes > maxSubjectBytes {
			t.Fatalf("after %d subjects: %d bytes interned, bound %d", i+1, c.subjectBytes, maxSubjectBytes)
		}
	}
	total := 0
	for s := range c.subjects {
		total += len(s)
	}
	if total != c.subjectBytes || total > maxSubjectBytes {
		t.Fatalf("%d bytes in the table, %d counted, bound %d", total, c.subjectBytes, maxSubjectBytes)
	}
	a, b := c.intern([]byte("smelter.v1.x")), c.intern([]byte("smelter.v1.x"))
	if a != b || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Fatal("not interned")
	}
}
