package history

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/telemetry"
)

// benchBatches returns n data messages of one asset with perBatch signals
// each, one batch a second from t0 (Unix ms), sequence numbers from seq0.
func benchBatches(b *testing.B, n, perBatch int, t0 int64, seq0 uint64) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		ts := t0 + int64(i)*1000
		bt := &telemetry.Batch{Gateway: "gw1", Seq: seq0 + uint64(i), Asset: testAsset, TSGW: ts, Readings: make([]telemetry.Reading, perBatch)}
		for j := range bt.Readings {
			bt.Readings[j] = telemetry.Reading{Signal: fmt.Sprintf("sig_%02d", j), Value: float64(i*perBatch+j) * 0.25, TS: ts}
		}
		msgs[i] = batchMsg(b, bt)
	}
	return msgs
}

// BenchmarkWrite stores transactions of 500 batches of 20 readings (the
// sink's shape): rows/s is readings stored per second, with their rollups
// and ledger rows. It also reports the disk bytes per reading (readings
// table with its index and the ledger; rollups apart).
func BenchmarkWrite(b *testing.B) {
	s := testStore(b, testDSN(b), nil)
	ctx := context.Background()
	const batches, per = 500, 20
	t0 := time.Now().Add(-24 * time.Hour).UnixMilli()
	var seq uint64 = 1
	var rows int
	for b.Loop() {
		b.StopTimer()
		msgs := benchBatches(b, batches, per, t0+int64(seq)*1000, seq)
		seq += batches
		b.StartTimer()
		res, err := s.Write(ctx, msgs)
		if err != nil {
			b.Fatal(err)
		}
		rows += res.Rows["readings"]
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	var raw, roll int64
	if _, err := s.db().Exec(ctx, "VACUUM ANALYZE readings"); err != nil {
		b.Fatal(err)
	}
	err := s.db().QueryRow(ctx, `SELECT
		(SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass)
		+ pg_total_relation_size('batches'),
		(SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent IN ('rollup_1m'::regclass, 'rollup_1h'::regclass))`).Scan(&raw, &roll)
	if err != nil {
		b.Fatal(err)
	}
	if rows > 0 {
		b.ReportMetric(float64(raw)/float64(rows), "disk-B/reading")
		b.ReportMetric(float64(roll)/float64(rows), "rollup-B/reading")
	}
}

// BenchmarkSinkEndToEnd publishes b.N batches of 20 readings to a
// JetStream stream (embedded nats-server, file storage), then times the
// sink from start until every batch is stored and acknowledged:
// readings/s sustained from the stream into PostgreSQL.
func BenchmarkSinkEndToEnd(b *testing.B) {
	s := testStore(b, testDSN(b), nil)
	js := startStream(b, jetstream.WithPublishAsyncMaxPending(4096))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const per = 20
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	for i, m := range benchBatches(b, b.N, per, t0, 1) {
		if _, err := js.PublishAsync(m.Subject, m.Data); err != nil {
			b.Fatal(err)
		}
		if i%4096 == 4095 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	sink := NewSink(s, js, SinkOptions{Stream: "SMELTER", Consumer: "bench", Batch: 1000, Flush: 100 * time.Millisecond})
	b.ResetTimer()
	done := make(chan struct{})
	go func() { _ = sink.Run(ctx); close(done) }()
	for sink.Stored() < int64(b.N) {
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "readings/s")
	cancel()
	<-done
}

// BenchmarkSeries reads one signal over 1 day, 30 days and 1 year, each at
// the resolution PickResolution gives (1 day: 1-minute rollups, 1,440
// points; 30 days and 1 year: 1-hour rollups, 720 and 8,760 points), from
// tables holding a year of one reading every 10 s of that signal and two
// others (raw kept for 30 days), built with generate_series.
func BenchmarkSeries(b *testing.B) {
	s := testStore(b, testDSN(b), nil)
	ctx := context.Background()
	db := s.db()
	now := time.Now().UTC().Truncate(time.Hour)
	yearAgo := now.Add(-365 * 24 * time.Hour)
	var days, buckets []time.Time
	for t := yearAgo; t.Before(now.Add(time.Hour)); t = t.Add(24 * time.Hour) {
		buckets = append(buckets, t)
		if t.After(now.Add(-31 * 24 * time.Hour)) {
			days = append(days, t)
		}
	}
	days = append(days, now)
	for i, ts := range [][]time.Time{days, buckets, buckets} {
		if err := s.ensurePartitions(ctx, db, timeSeries[i], ts); err != nil {
			b.Fatal(err)
		}
	}
	for _, q := range []string{
		`INSERT INTO readings (site, asset, signal, ts, value, quality, status, gateway, seq)
		 SELECT 'plant1', 'comp_1', sig, t, random(), 0, 0, 'gw1', 0
		 FROM generate_series($1::timestamptz - interval '30 days', $1::timestamptz, interval '10 s') t, unnest(ARRAY['pressure','temp','power']) sig`,
		`INSERT INTO rollup_1m (site, asset, signal, bucket, min, max, sum, count, good, n)
		 SELECT 'plant1', 'comp_1', sig, t, 0, 1, 3, 6, 6, 6
		 FROM generate_series($1::timestamptz - interval '365 days', $1::timestamptz, interval '1 minute') t, unnest(ARRAY['pressure','temp','power']) sig`,
		`INSERT INTO rollup_1h (site, asset, signal, bucket, min, max, sum, count, good, n)
		 SELECT 'plant1', 'comp_1', sig, t, 0, 1, 180, 360, 360, 360
		 FROM generate_series($1::timestamptz - interval '365 days', $1::timestamptz, interval '1 hour') t, unnest(ARRAY['pressure','temp','power']) sig`,
		`ANALYZE`,
	} {
		args := []any{now}
		if q == "ANALYZE" {
			args = nil
		}
		if _, err := db.Exec(ctx, q, args...); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		span time.Duration
	}{{"1h", time.Hour}, {"1d", 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}, {"1y", 365 * 24 * time.Hour}} {
		b.Run(c.name, func(b *testing.B) {
			q := SeriesQuery{Site: "plant1", Asset: "comp_1", Signal: "pressure", From: now.Add(-c.span), To: now}
			var pts int
			for b.Loop() {
				ser, err := s.Series(ctx, q)
				if err != nil {
					b.Fatal(err)
				}
				pts = len(ser.Points)
			}
			b.ReportMetric(float64(pts), "points")
		})
	}
}
