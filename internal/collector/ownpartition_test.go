package collector

import (
	"hash/fnv"
	"strconv"
	"strings"
	"testing"
)

// partitionOf and ownPartition run for every message without allocating,
// and give what FNV-1a from hash/fnv and a split of the subject give.
func TestOwnPartitionMatchesSplitAndAllocatesNothing(t *testing.T) {
	ref := func(subject, tok string, n int) bool {
		p := strings.Split(subject, ".")
		if len(p) != 6 {
			return false
		}
		h := fnv.New32a()
		_, _ = h.Write([]byte(p[2] + p[4]))
		return tok == strconv.Itoa(int(h.Sum32()%uint32(n)))
	}
	subjects := []string{"smelter.v1.site1.motor.m-1.data", "smelter.v1.s.c.a.birth", "smelter.v1.site1.motor.m-1", "smelter.v1.site1.motor.m-1.data.x",
		"smelter.v1..motor..data", "a.b.c.d.e.f", "smelter.v1.site-ünïcode.pv_string.inv-3-str-17.data", ""}
	for i := range 200 {
		subjects = append(subjects, "smelter.v1.site"+strconv.Itoa(i%7)+".motor.m-"+strconv.Itoa(i)+".data")
	}
	for _, s := range subjects {
		for _, n := range []int{1, 2, 4, 16, 100, 1000} {
			for _, tok := range []string{"0", "1", "3", "15", "99", "999", "01", ""} {
				if got, want := ownPartition(s, tok, n), ref(s, tok, n); got != want {
					t.Errorf("ownPartition(%q, %q, %d) = %v, want %v", s, tok, n, got, want)
				}
			}
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		ownPartition("smelter.v1.site1.motor.m-1.data", "3", 4)
	})
	if allocs != 0 {
		t.Fatalf("ownPartition allocates %v times per call", allocs)
	}
}
