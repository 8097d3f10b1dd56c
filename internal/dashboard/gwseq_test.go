package dashboard

import (
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// review11 F6: one message with a forged huge seq pinned its gateway's
// last_seq, and the gateway's real batches then never followed it: its
// data clock no longer followed its clock stepping back. A seq no gateway
// could have numbered by now (2^53-1, the largest the collector accepts)
// is counted and not taken, from a batch, a birth or a death; a forged seq
// below that bound (the collector's clock in Unix microseconds) is given
// up at the gateway's next live batch, more than the seq window behind
// it. A historical batch (the spool's replay, behind live data) or a
// backlog batch leaves it.
func TestForgedSeqDoesNotPinLastSeq(t *testing.T) {
	wall := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	l := NewLive(func() time.Time { return wall })
	live := func(b *telemetry.Batch) {
		l.ObserveBatchClock(b, false, Clock{TSGW: b.TSGW, Arrival: wall.UnixMilli(), Live: true})
		wall = wall.Add(time.Second)
	}
	gw := func() GatewayView {
		for _, g := range l.Gateways() {
			if g.ID == "gw-1" {
				return g
			}
		}
		t.Fatal("gw-1 not listed")
		return GatewayView{}
	}
	for seq := uint64(1); seq <= 5; seq++ {
		live(batch(seq, wall.UnixMilli(), 1))
	}
	const forged = 1<<53 - 1
	live(batch(forged, wall.UnixMilli(), 1))
	asset := telemetry.AssetJSON{ID: "m-1", Class: "motor", Path: []string{"acme", "s1", "_", "_", "_"}}
	l.ObserveBirth(&telemetry.Birth{Gateway: "gw-1", Seq: forged, Asset: asset})
	l.ObserveDeath(&telemetry.Death{Gateway: "gw-1", Seq: forged, Asset: asset})
	if g := gw(); g.LastSeq != 5 || g.SeqSuspectTotal != 3 {
		t.Fatalf("after 3 messages of seq 2^53-1: last_seq %d seq_suspect_total %d, want 5 and 3", g.LastSeq, g.SeqSuspectTotal)
	}
	// the gateway's clock steps back: its next batch is followed
	stepped := wall.UnixMilli() - 120_000
	live(batch(6, stepped, 1))
	if g := gw(); g.LastSeq != 6 || g.LastTSGW != stepped {
		t.Fatalf("after the step back: last_seq %d last_ts_gw %d, want 6 and %d", g.LastSeq, g.LastTSGW, stepped)
	}

	// a forged seq the bound cannot tell (a spool created now would start
	// there) is taken, and given up at the next live batch
	plausible := uint64(wall.UnixMicro())
	live(batch(plausible, wall.UnixMilli(), 1))
	if g := gw(); g.LastSeq != plausible || g.SeqSuspectTotal != 3 {
		t.Fatalf("a seq at the clock in microseconds: last_seq %d seq_suspect_total %d, want %d and 3", g.LastSeq, g.SeqSuspectTotal, plausible)
	}
	hist := batch(2, wall.UnixMilli(), 1)
	hist.Historical = true
	live(hist)
	l.ObserveBatchClock(batch(3, wall.UnixMilli(), 1), false, Clock{TSGW: wall.UnixMilli(), Arrival: wall.UnixMilli()}) // a backlog
	if g := gw(); g.LastSeq != plausible {
		t.Fatalf("a historical or backlog batch far behind moved last_seq to %d", g.LastSeq)
	}
	live(batch(7, wall.UnixMilli(), 1))
	if g := gw(); g.LastSeq != 7 {
		t.Fatalf("the gateway's next live batch: last_seq %d, want 7", g.LastSeq)
	}
	stepped = wall.UnixMilli() - 60_000
	live(batch(8, stepped, 1))
	if g := gw(); g.LastSeq != 8 || g.LastTSGW != stepped {
		t.Fatalf("a second step back: last_seq %d last_ts_gw %d, want 8 and %d", g.LastSeq, g.LastTSGW, stepped)
	}
	// within the seq window behind: a redelivery, not taken
	live(batch(8+DefaultSeqWindow, wall.UnixMilli(), 1))
	live(batch(9, wall.UnixMilli(), 1))
	if g := gw(); g.LastSeq != 8+DefaultSeqWindow {
		t.Fatalf("a batch within the window behind moved last_seq to %d", g.LastSeq)
	}
}
