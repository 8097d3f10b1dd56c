package collector

import (
	"fmt"
	"testing"
)

// The assignment is even (at most ceil(N/members) each) and a member
// leaving moves only its own partitions.
func TestAssignBalancedAndStable(t *testing.T) {
	three := assign([]string{"r1", "r2", "r3"}, 12)
	load := map[string]int{}
	for _, m := range three {
		load[m]++
	}
	if len(three) != 12 || load["r1"] != 4 || load["r2"] != 4 || load["r3"] != 4 {
		t.Fatalf("uneven: %v", load)
	}
	two := assign([]string{"r1", "r3"}, 12)
	moved := 0
	for p, m := range three {
		if m != "r2" && two[p] != m {
			moved++
		}
		if two[p] == "r2" {
			t.Fatalf("partition %d still on the gone member", p)
		}
	}
	if moved > 2 {
		t.Fatalf("%d partitions of live members moved: %v -> %v", moved, three, two)
	}
	if fmt.Sprint(assign([]string{"r1", "r3"}, 12)) != fmt.Sprint(two) {
		t.Fatal("not deterministic")
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		have string
		ok   bool
	}{{"2.9.10", false}, {"2.10.22", false}, {"2.11.0", true}, {"2.11.0-beta.1", true}, {"2.15.2", true}, {"3.0.0", true}, {"", false}} {
		if got := versionAtLeast(c.have, minPartitionVersion); got != c.ok {
			t.Errorf("%q >= %s: %v", c.have, minPartitionVersion, got)
		}
	}
}
