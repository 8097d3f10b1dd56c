package ingest

import (
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// TestSentAtLead: the lead of a gateway's clock is its Smelter-Sent-At
// minus the arrival; inside the tolerance it is 0 (delivery, not a clock),
// beyond it the lead ahead (a lead behind moves nothing); a header that is malformed, before
// the message's ts_gw, or beyond max_future ahead is ignored with its
// reason.
func TestSentAtLead(t *testing.T) {
	arrival := time.UnixMilli(1_763_812_345_000)
	ms := func(d time.Duration) string {
		return string(telemetry.AppendSentAt(nil, arrival.Add(d).UnixMilli()))
	}
	tsgw := arrival.Add(-10 * time.Minute).UnixMilli()
	tol, maxFuture := 2*time.Second, 5*time.Minute
	for _, tc := range []struct {
		name, sentAt string
		tsgw         int64
		lead         int64
		reason       string
	}{
		{"absent", "", tsgw, 0, ""},
		{"4 min fast", ms(4 * time.Minute), tsgw, 240_000, ""},
		{"1 min slow: not moved", ms(-time.Minute), tsgw, 0, ""},
		{"inside the tolerance ahead", ms(2 * time.Second), tsgw, 0, ""},
		{"inside the tolerance behind (delivery)", ms(-1500 * time.Millisecond), tsgw, 0, ""},
		{"just beyond the tolerance", ms(2001 * time.Millisecond), tsgw, 2001, ""},
		{"at max_future", ms(5 * time.Minute), tsgw, 300_000, ""},
		{"beyond max_future ahead", ms(5*time.Minute + time.Millisecond), tsgw, 0, SentAtBeyondMaxFuture},
		{"far behind: not moved, not ignored", ms(-6 * time.Minute), tsgw, 0, ""},
		{"before ts_gw", ms(4 * time.Minute), arrival.Add(4*time.Minute + time.Millisecond).UnixMilli(), 0, SentAtBeforeTSGW},
		{"at ts_gw", ms(4 * time.Minute), arrival.Add(4 * time.Minute).UnixMilli(), 240_000, ""},
		{"not a number", "soon", tsgw, 0, SentAtMalformed},
		{"negative", "-1763812345000", tsgw, 0, SentAtMalformed},
		{"fraction", ms(4*time.Minute) + ".5", tsgw, 0, SentAtMalformed},
		{"too many digits", "17638123450000000", tsgw, 0, SentAtMalformed},
		{"zero", "0", tsgw, 0, SentAtMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lead, reason := SentAtLead(tc.sentAt, tc.tsgw, arrival, tol, maxFuture)
			if lead != tc.lead || reason != tc.reason {
				t.Fatalf("SentAtLead(%q) = %d, %q; want %d, %q", tc.sentAt, lead, reason, tc.lead, tc.reason)
			}
		})
	}
}

// TestShiftBatch: ts_gw and the gateway-stamped readings (Modbus, NMEA)
// move back by the lead, keeping their spacing; an OPC UA reading's
// device time stays, and so does a missing time.
func TestShiftBatch(t *testing.T) {
	b := &telemetry.Batch{TSGW: 1_000_000, Readings: []telemetry.Reading{
		{Signal: "a", TS: 999_000, Src: "modbus:1:hr:0"},
		{Signal: "b", TS: 999_500, Src: "nmea:RMC"},
		{Signal: "c", TS: 990_000, Src: "opcua:ns=2;s=x"},
		{Signal: "d", TS: 998_000},
		{Signal: "e", TS: 0, Src: "modbus:1:hr:2"},
	}}
	if moved := ShiftBatch(b, 240_000); moved != 2 {
		t.Fatalf("moved %d readings, want 2", moved)
	}
	want := []int64{759_000, 759_500, 990_000, 998_000, 0}
	for i, r := range b.Readings {
		if r.TS != want[i] {
			t.Errorf("reading %s ts %d, want %d", r.Signal, r.TS, want[i])
		}
	}
	if b.TSGW != 760_000 {
		t.Errorf("ts_gw %d, want 760000", b.TSGW)
	}
	ShiftBatch(b, -60_000) // a negative lead moves forward (SentAtLead never gives one)
	if b.TSGW != 820_000 || b.Readings[0].TS != 819_000 {
		t.Errorf("behind: ts_gw %d, modbus ts %d; want 820000, 819000", b.TSGW, b.Readings[0].TS)
	}
	tsgw := int64(5)
	ShiftTSGW(&tsgw, 240_000)
	if tsgw != 1 {
		t.Errorf("ts_gw 5 shifted by 240000: %d, want 1 (kept positive)", tsgw)
	}
}
