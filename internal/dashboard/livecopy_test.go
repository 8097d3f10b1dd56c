package dashboard

import (
	"testing"
	"time"
	"unsafe"

	"github.com/smelterio/smelter/internal/telemetry"
)

// The collector decodes a batch over the NATS client's message payload, so
// the batch's strings are views into it: the store must keep copies, or one
// payload per asset (and per gateway) stays alive with it. A gateway that
// moves to another asset is still counted once per asset.
func TestObserveBatchKeepsNoViewOfThePayload(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	l := NewLive(func() time.Time { return now })
	payload := []byte("gw-1s1m-1sig_00Vacme_")
	view := func(from, to int) string { return unsafe.String(&payload[from], to-from) }
	b := &telemetry.Batch{Gateway: view(0, 4), Seq: 1, TSGW: now.UnixMilli(),
		Asset:    telemetry.Asset{ID: view(6, 9), Class: "motor", Path: []string{view(16, 20), view(4, 6), view(20, 21), view(20, 21), view(20, 21)}},
		Readings: []telemetry.Reading{{Signal: view(9, 15), Value: 1, Unit: view(15, 16), TS: now.UnixMilli()}}}
	for i := range 3 {
		b.Seq, b.TSGW, b.Readings[0].TS = uint64(i+1), now.UnixMilli()+int64(i)*1000, now.UnixMilli()+int64(i)*1000
		l.ObserveBatch(b)
	}
	lo, hi := uintptr(unsafe.Pointer(&payload[0])), uintptr(unsafe.Pointer(&payload[len(payload)-1]))
	inPayload := func(what, s string) {
		if p := uintptr(unsafe.Pointer(unsafe.StringData(s))); len(s) > 0 && p >= lo && p <= hi {
			t.Errorf("%s %q is a view into the payload", what, s)
		}
	}
	l.mu.Lock()
	for k, a := range l.assets {
		inPayload("asset key site", k[0])
		inPayload("asset key id", k[1])
		inPayload("asset's gateway", a.gateway)
		for name, s := range a.series {
			inPayload("series key", name)
			inPayload("series name", s.name)
			inPayload("series unit", s.unit)
		}
	}
	for id, g := range l.gateways {
		inPayload("gateway key", id)
		inPayload("gateway id", g.id)
		inPayload("gateway site", g.site)
		for k := range g.assets {
			inPayload("gateway's asset site", k[0])
			inPayload("gateway's asset id", k[1])
		}
	}
	l.mu.Unlock()
	if gws := l.Gateways(); len(gws) != 1 || gws[0].ID != "gw-1" || gws[0].Batches != 3 || gws[0].Assets != 1 || gws[0].Site != "s1" {
		t.Fatalf("gateways %+v", gws)
	}
	// the asset now comes from another gateway: both list it
	b.Gateway = "gw-2"
	b.Seq = 4
	l.ObserveBatch(b)
	if gws := l.Gateways(); len(gws) != 2 || gws[1].ID != "gw-2" || gws[1].Assets != 1 || gws[1].Batches != 1 || gws[0].Batches != 3 {
		t.Fatalf("gateways after the move %+v", gws)
	}
	if ts, gw := l.Received("s1", "m-1"); gw != "gw-2" || ts != now.UnixMilli() {
		t.Fatalf("received %d from %q", ts, gw)
	}
}

// A reading finds its series through the previous batch's order when the
// name matches at the same index, through the map otherwise: batches whose
// signals change order, appear and disappear keep every signal's own
// history.
func TestObserveBatchSignalOrderChanges(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	l := NewLive(func() time.Time { return now })
	orders := [][]string{{"a", "b", "c"}, {"c", "a", "b"}, {"a", "b", "c"}, {"b"}, {"d", "a", "b", "c"}, {"a", "b", "c"}}
	want := map[string][]float64{}
	base := now.UnixMilli() - 100_000
	for i, order := range orders {
		ts := base + int64(i)*1000
		b := &telemetry.Batch{Gateway: "gw-1", Seq: uint64(i + 1), TSGW: ts, Asset: telemetry.Asset{ID: "m-1", Class: "motor", Path: []string{"acme", "s1", "_", "_", "_"}}}
		for j, sig := range order {
			v := float64(100*i + j)
			b.Readings = append(b.Readings, telemetry.Reading{Signal: sig, Value: v, Unit: "V", TS: ts})
			want[sig] = append(want[sig], v)
		}
		l.ObserveBatch(b)
	}
	pts, _, _, ok := l.History("s1", "m-1", nil, 0)
	if !ok || len(pts) != 4 {
		t.Fatalf("history of %d signals (%v)", len(pts), ok)
	}
	for sig, vs := range want {
		var got []float64
		for _, p := range pts[sig] {
			if p.V != nil && p.N > 0 {
				got = append(got, *p.V)
			}
		}
		if len(got) < len(vs) || !equalTail(got, vs) {
			t.Errorf("%s: history %v, want %v", sig, got, vs)
		}
	}
	if st := l.Stats(); st.Series != 4 {
		t.Fatalf("%d series, want 4", st.Series)
	}
}

func equalTail(got, want []float64) bool {
	got = got[len(got)-len(want):]
	for i := range want {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
