package collector

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestReasonSeriesExistFromStart is review 2's finding 2: the shipped
// alert SmelterCollectorOwnershipLost takes increase() of
// smelter_collector_cycles_dropped_total, which missed a replica's first
// ownership loss because the series was created by it. Every reason of it
// and of smelter_collector_state_records_skipped_total is exported at 0
// before anything is counted.
func TestReasonSeriesExistFromStart(t *testing.T) {
	c := newCollector(t, Defaults())
	want := `
# HELP smelter_collector_cycles_dropped_total ` + helpOf(t, c, "smelter_collector_cycles_dropped_total") + `
# TYPE smelter_collector_cycles_dropped_total counter
smelter_collector_cycles_dropped_total{reason="fence"} 0
smelter_collector_cycles_dropped_total{reason="membership"} 0
smelter_collector_cycles_dropped_total{reason="pin"} 0
# HELP smelter_collector_state_records_skipped_total ` + helpOf(t, c, "smelter_collector_state_records_skipped_total") + `
# TYPE smelter_collector_state_records_skipped_total counter
smelter_collector_state_records_skipped_total{reason="other_partition"} 0
smelter_collector_state_records_skipped_total{reason="unreadable"} 0
`
	if err := testutil.GatherAndCompare(c.reg, strings.NewReader(want), "smelter_collector_cycles_dropped_total", "smelter_collector_state_records_skipped_total"); err != nil {
		t.Fatal(err)
	}
	// the shipped alert on malformed messages takes rate() > 0: every
	// reason's series is there before the first one counts
	if n := testutil.CollectAndCount(c.m.malformed); n != len(malformedReasons) {
		t.Errorf("malformed_total has %d series at start, want %d (one per reason)", n, len(malformedReasons))
	}
	// re-watches after a broker restart: both watches at 0 before the first
	if err := testutil.GatherAndCompare(c.reg, strings.NewReader(`
# HELP smelter_collector_rewatches_total `+helpOf(t, c, "smelter_collector_rewatches_total")+`
# TYPE smelter_collector_rewatches_total counter
smelter_collector_rewatches_total{watch="members"} 0
smelter_collector_rewatches_total{watch="state"} 0
`), "smelter_collector_rewatches_total"); err != nil {
		t.Fatal(err)
	}
}

func helpOf(t *testing.T, c *Collector, name string) string {
	t.Helper()
	mfs, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetHelp()
		}
	}
	t.Fatalf("%s not exported", name)
	return ""
}
