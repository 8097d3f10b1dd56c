package forward

import (
	"context"
	"testing"

	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
)

// limitOnly is an Uplink that is never published to: build only asks it
// for its limit.
type limitOnly int

func (limitOnly) Name() string { return "test" }
func (limitOnly) Ready() bool  { return true }
func (limitOnly) Publish(context.Context, []telemetry.Envelope) error {
	panic("not published in this test")
}
func (l limitOnly) MaxPayload() int { return int(l) }

// TestHistoricalIsWrittenByTheEncoder: a backlog batch marked historical is
// exactly what the encoder writes for a batch with Historical set (a text
// value holding the wire form's own keys changes nothing), under its
// whole-batch message id; a birth is sent as spooled, unmarked.
func TestHistoricalIsWrittenByTheEncoder(t *testing.T) {
	for _, text := range []string{"", `","historical":false,"readings":[`} {
		b := batch(3)
		b.Seq = 42
		b.Readings[0].Text = text
		plain := b.AppendJSON(nil)
		b.Historical = true
		want := b.AppendJSON(nil)
		birth := []byte(`{"schema":"smelter.birth/1"}`)
		recs := []spool.Record{{Seq: 42, Subject: dataSubj, Data: plain}, {Seq: 43, Subject: birthSubj, Data: birth}}
		s := newSender(New(limitOnly(0), nil, nil, Options{Gateway: gw}))
		s.build(recs, []item{{idx: 0, hist: true}, {idx: 1, hist: false}})
		if len(s.envs) != 2 {
			t.Fatalf("%d envelopes", len(s.envs))
		}
		if string(s.envs[0].Data) != string(want) || s.envs[0].MsgID != telemetry.MsgID(gw, 42) {
			t.Fatalf("historical batch %s:\n%s\nwant\n%s", s.envs[0].MsgID, s.envs[0].Data, want)
		}
		if string(s.envs[1].Data) != string(birth) {
			t.Fatalf("birth sent as %s", s.envs[1].Data)
		}
		if len(s.apps) != 2 || s.seqs[0] != 42 || s.seqs[1] != 43 {
			t.Fatalf("bookkeeping: apps %v seqs %v", s.apps, s.seqs)
		}
	}
}

// TestBuildSplitsToTheLimit: a batch over the uplink's limit becomes parts
// that each fit, under part message ids; one set-aside part is left out of
// a rebuild (the retry of a slice after a rejection).
func TestBuildSplitsToTheLimit(t *testing.T) {
	b := batch(100)
	b.Seq = 7
	data := b.AppendJSON(nil)
	const limit = 2048
	s := newSender(New(limitOnly(limit), nil, nil, Options{Gateway: gw}))
	recs := []spool.Record{{Seq: 7, Subject: dataSubj, Data: data}}
	s.build(recs, []item{{idx: 0}})
	if len(s.envs) < 2 {
		t.Fatalf("%d envelopes for a %d-byte batch under a %d-byte limit", len(s.envs), len(data), limit)
	}
	n := len(s.envs)
	for i, e := range s.envs {
		if len(e.Data) > limit {
			t.Fatalf("part %d is %d bytes", i+1, len(e.Data))
		}
		if want := telemetry.PartMsgID(gw, 7, i+1, n); e.MsgID != want {
			t.Fatalf("part %d id %q, want %q", i+1, e.MsgID, want)
		}
	}
	second := s.envs[1].MsgID
	s.f.setAside(7, second, "refused", 1, context.Canceled)
	s.build(recs, []item{{idx: 0}})
	if len(s.envs) != n-1 || s.index(second) >= 0 {
		t.Fatalf("rebuild: %d envelopes (want %d), set-aside part present: %v", len(s.envs), n-1, s.index(second) >= 0)
	}
	if len(s.apps) != 1 {
		t.Fatalf("apps %v: the record counts once", s.apps)
	}
	s.f.pruneAside(7)
	if s.f.isAside(second) {
		t.Fatal("set-aside id kept after the cursor passed it")
	}
}

// TestBuildKeepsNoStaleEnvelopes: a build after a larger one leaves no
// envelope beyond the new ones in the reused slice: a stale one kept its
// record's bytes (and the spool arena chunk they sit in) reachable.
func TestBuildKeepsNoStaleEnvelopes(t *testing.T) {
	s := newSender(New(limitOnly(0), nil, nil, Options{Gateway: gw}))
	var recs []spool.Record
	var items []item
	for i := range 20 {
		recs = append(recs, spool.Record{Seq: uint64(i + 1), Subject: birthSubj, Data: []byte(`{"schema":"smelter.birth/1"}`)})
		items = append(items, item{idx: i})
	}
	s.build(recs, items)
	s.build(recs[:1], items[:1])
	if len(s.envs) != 1 {
		t.Fatalf("%d envelopes", len(s.envs))
	}
	for i, e := range s.envs[1:cap(s.envs)] {
		if e.Data != nil || e.MsgID != "" {
			t.Fatalf("stale envelope %d (%s) still referenced", i+1, e.MsgID)
		}
	}
}
