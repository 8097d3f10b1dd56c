package telemetry

import "testing"

// TestBatchFollows: seq orders one gateway's numbered messages, whatever
// their ts_gw; nothing orders another gateway's, or seq 0.
func TestBatchFollows(t *testing.T) {
	for _, c := range []struct {
		name    string
		b       Batch
		gateway string
		seq     uint64
		want    bool
	}{
		{"newer seq", Batch{Gateway: "gw-1", Seq: 8, TSGW: 1000}, "gw-1", 7, true},
		{"newer seq dated before", Batch{Gateway: "gw-1", Seq: 8, TSGW: 1}, "gw-1", 7, true},
		{"same seq", Batch{Gateway: "gw-1", Seq: 7}, "gw-1", 7, false},
		{"older seq", Batch{Gateway: "gw-1", Seq: 6}, "gw-1", 7, false},
		{"another gateway", Batch{Gateway: "gw-2", Seq: 8}, "gw-1", 7, false},
		{"seq 0", Batch{Gateway: "gw-1", Seq: 0}, "gw-1", 7, false},
		{"nothing recorded", Batch{Gateway: "gw-1", Seq: 8}, "gw-1", 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.b.Follows(c.gateway, c.seq); got != c.want {
				t.Fatalf("Follows(%q, %d) of %s-%d: %v, want %v", c.gateway, c.seq, c.b.Gateway, c.b.Seq, got, c.want)
			}
		})
	}
}
