package history

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestSinkAppliesSchemaBounds: the history holds what it stores to the same
// bounds as the collector (telemetry's limit table, docs/schema.md
// "Bounds"; before, it stored a 65-byte signal name, a 9-element path and
// births with a 65-byte label or 65 ratings, which the collector refuses): a batch with a path
// beyond the bounds and a birth with a label or nameplate beyond them are
// acknowledged and not stored, a reading with a signal name or unit beyond
// them is dropped with the rest of its batch stored, a text and a src are
// cut; every refusal is counted in smelter_history_refused_total{kind}.
func TestSinkAppliesSchemaBounds(t *testing.T) {
	st := testStore(t, testDSN(t), nil)
	js := startStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	subj := func(k telemetry.Kind) string { return telemetry.AssetSubject(testAsset, k) }
	long := strings.Repeat("x", telemetry.MaxSignalLen+1)
	var msgs [][2]string // subject, payload
	add := func(subject string, data []byte) { msgs = append(msgs, [2]string{subject, string(data)}) }
	// 1: good, a long text (cut), a long signal name and a unit with a space (both refused)
	b := &telemetry.Batch{Gateway: "gw1", Seq: 1, Asset: testAsset, TSGW: t0, Readings: []telemetry.Reading{
		{Signal: "pressure", Value: 1, Unit: "bar", TS: t0},
		{Signal: "label", Text: strings.Repeat("é", telemetry.MaxTextLen), NoValue: true, TS: t0},
		{Signal: long, Value: 2, TS: t0},
		{Signal: "temp", Value: 3, Unit: "deg C", TS: t0}}}
	add(subj(telemetry.KindData), b.AppendJSON(nil))
	// 2: a path of MaxPathElems+1 elements: refused whole
	deep := testAsset
	deep.Path = append(append([]string{}, testAsset.Path...), "a", "b", "c", "d")
	if len(deep.Path) <= telemetry.MaxPathElems {
		t.Fatalf("path of %d elements is within the bound", len(deep.Path))
	}
	add(subj(telemetry.KindData), (&telemetry.Batch{Gateway: "gw1", Seq: 2, Asset: deep, TSGW: t0,
		Readings: []telemetry.Reading{{Signal: "pressure", Value: 9, TS: t0 + 1}}}).AppendJSON(nil))
	birth := func(seq uint64, mod func(*telemetry.Birth)) []byte {
		bi := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw1", Seq: seq, TSGW: t0 + int64(seq), Protocol: "modbus",
			Asset: telemetry.AssetJSON(testAsset), Signals: []telemetry.SignalInfo{{Signal: "pressure", Unit: "bar", Src: "modbus:1:hr:0"}}}
		mod(bi)
		data, err := json.Marshal(bi)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	// 3: a good birth with a long src (cut); 4: a label beyond MaxLabelLen;
	// 5: more than MaxNameplate ratings (both refused)
	add(subj(telemetry.KindBirth), birth(3, func(bi *telemetry.Birth) { bi.Signals[0].Src = strings.Repeat("s", 1000) }))
	add(subj(telemetry.KindBirth), birth(4, func(bi *telemetry.Birth) {
		bi.Signals = append(bi.Signals, telemetry.SignalInfo{Signal: "state", Enum: []string{"off", strings.Repeat("l", telemetry.MaxLabelLen+1)}})
	}))
	add(subj(telemetry.KindBirth), birth(5, func(bi *telemetry.Birth) {
		bi.Nameplate = map[string]float64{}
		for i := range telemetry.MaxNameplate + 1 {
			bi.Nameplate[fmt.Sprintf("r%d", i)] = 1
		}
	}))
	for _, m := range msgs {
		if _, err := js.Publish(ctx, m[0], []byte(m[1])); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := NewMetrics(nil)
	for _, k := range RefusedKinds {
		if v := testutil.ToFloat64(m.refused.WithLabelValues(k)); v != 0 {
			t.Fatalf("refused{kind=%s} starts at %v", k, v)
		}
	}
	sink := NewSink(st, js, SinkOptions{Stream: "SMELTER", Consumer: "hist", Batch: 100, Flush: 50 * time.Millisecond, Metrics: m})
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	waitFor(t, "all acknowledged", 30*time.Second, func() bool { return sink.Stored() == int64(len(msgs)) })
	for kind, want := range map[string]float64{"batch": 1, "birth": 2, "reading": 2} {
		if got := testutil.ToFloat64(m.refused.WithLabelValues(kind)); got != want {
			t.Errorf("refused{kind=%s} %v, want %v", kind, got, want)
		}
	}
	if mal := testutil.ToFloat64(m.malformed); mal != 0 {
		t.Errorf("malformed %v: refusals by the bounds are counted apart", mal)
	}
	rows, err := st.db().Query(ctx, "SELECT signal, seq, coalesce(txt, '') FROM readings ORDER BY signal")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var sig, txt string
		var seq int64
		if err := rows.Scan(&sig, &seq, &txt); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s/%d/%d", sig, seq, len(txt)))
	}
	rows.Close()
	// the text is cut to MaxTextLen bytes at a character boundary ("é" is 2 bytes)
	if want := []string{fmt.Sprintf("label/1/%d", telemetry.MaxTextLen), "pressure/1/0"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("readings stored %v, want %v", got, want)
	}
	var n, ledger int64
	if err := st.db().QueryRow(ctx, "SELECT count(*), coalesce(sum(readings), 0) FROM batches").Scan(&n, &ledger); err != nil || n != 1 || ledger != 2 {
		t.Errorf("ledger: %d batches of %d readings (%v), want 1 of 2", n, ledger, err)
	}
	var seqs []int64
	var srcLen int
	brows, err := st.db().Query(ctx, "SELECT seq, length(signals->0->>'src') FROM births ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	for brows.Next() {
		var seq int64
		if err := brows.Scan(&seq, &srcLen); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	brows.Close()
	if fmt.Sprint(seqs) != "[3]" || srcLen != telemetry.MaxSrcLen {
		t.Errorf("births stored %v (src of %d bytes), want [3] with a src of %d", seqs, srcLen, telemetry.MaxSrcLen)
	}
	cancel()
	<-done
}
