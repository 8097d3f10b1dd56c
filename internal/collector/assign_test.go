package collector

import (
	"fmt"
	"testing"
	"time"
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

// Every member holds floor(N/members) or one more, whatever the names and
// counts: 3 replicas on 4 partitions is 2/1/1 (a reviewer saw 2/2/0 with the
// old ceil(N/members) bound, one replica idle).
func TestAssignAsEvenAsPossible(t *testing.T) {
	for members := 1; members <= 7; members++ {
		for parts := 1; parts <= 24; parts++ {
			for _, prefix := range []string{"r-", "collector-", "g1-"} {
				var live []string
				for i := range members {
					live = append(live, fmt.Sprintf("%s%c", prefix, 'a'+i))
				}
				got := assign(live, parts)
				load := map[string]int{}
				for _, m := range got {
					load[m]++
				}
				if len(got) != parts {
					t.Fatalf("%v on %d: %d assigned", live, parts, len(got))
				}
				for _, m := range live {
					if l := load[m]; l < parts/members || l > (parts+members-1)/members {
						t.Fatalf("%v on %d partitions: %s holds %d: %v", live, parts, m, l, load)
					}
				}
			}
		}
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

// A record larger than the server's max_payload is not sent (it would fail
// every cycle and wedge the partition); it is reported instead.
func TestSnapshotSkipsRecordsOverTheLimit(t *testing.T) {
	c := newCollector(t, Defaults())
	sh := c.newShard(0)
	var cy cycle
	c.process(sh, subj, batchJSON(1, 1_763_812_345_000, 80), time.Now(), &cy)
	var big []string
	sh.mu.Lock()
	w, err := sh.snapshot(nil, 64, false, func(key string, n int) { big = append(big, fmt.Sprint(key, n > 64)) })
	sh.mu.Unlock()
	if err != nil || len(w) != 0 || len(big) != 1 || big[0] != "p0.site1.ac-1true" {
		t.Fatalf("writes %d, too big %v, err %v", len(w), big, err)
	}
}
