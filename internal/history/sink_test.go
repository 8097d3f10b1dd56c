package history

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
)

// pgProxy forwards TCP to PostgreSQL; Down closes the listener and every
// connection (the database is gone for the sink), Up listens again on the
// same port.
type pgProxy struct {
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func startProxy(t *testing.T, target string) *pgProxy {
	t.Helper()
	p := &pgProxy{target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.Down)
	return p
}

// proxiedStore opens a test store connected through a proxy to the test
// database, or skips.
func proxiedStore(t *testing.T) (*pgProxy, *Store) {
	t.Helper()
	dsn := testDSN(t)
	cfg, err := pgxParse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, cfg)
	return proxy, testStore(t, replaceHost(t, dsn, proxy.addr), nil)
}

func (p *pgProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

func (p *pgProxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *pgProxy) Up(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSinkDatabaseOutageLosesNothing: the sink stores what the stream
// holds; the database goes away (every connection cut, the port closed)
// while batches keep arriving; they wait in the stream (acknowledged only
// after a commit), and when the database is back the sink catches up:
// every batch stored exactly once, nothing left pending. The same batches
// published again (a gateway replay with the same Nats-Msg-Id window
// passed) add nothing.
func TestSinkDatabaseOutageLosesNothing(t *testing.T) {
	proxy, store := proxiedStore(t)
	js := startStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	sink := NewSink(store, js, SinkOptions{Stream: "SMELTER", Consumer: "hist", Batch: 50, Flush: 50 * time.Millisecond, Metrics: m})
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	t0 := time.Now().UTC().Add(-time.Hour).UnixMilli()
	publish := func(from, to int) {
		for seq := from; seq <= to; seq++ {
			b := &telemetry.Batch{Gateway: "gw1", Seq: uint64(seq), Asset: testAsset, TSGW: t0 + int64(seq),
				Readings: []telemetry.Reading{{Signal: "pressure", Value: float64(seq) / 8, TS: t0 + int64(seq)}}}
			if _, err := js.Publish(ctx, telemetry.AssetSubject(testAsset, telemetry.KindData), b.AppendJSON(nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func() int64 {
		var n int64
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		defer qcancel()
		if err := store.db().QueryRow(qctx, "SELECT count(*) FROM readings").Scan(&n); err != nil {
			return -1
		}
		return n
	}
	publish(1, 200)
	waitFor(t, "200 readings stored", 30*time.Second, func() bool { return count() == 200 })

	proxy.Down()
	errsBefore := testutil.ToFloat64(m.errors.WithLabelValues("write"))
	publish(201, 500)
	// the sink fails to write several times while the batches wait
	waitFor(t, "write errors during the outage", 30*time.Second, func() bool {
		return testutil.ToFloat64(m.errors.WithLabelValues("write")) >= errsBefore+3
	})
	cons, err := js.Consumer(ctx, "SMELTER", "hist")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending+uint64(info.NumAckPending) == 0 || info.NumAckPending > 50 {
		t.Fatalf("during the outage: pending %d, ack pending %d (want the backlog in the stream, at most one fetch held)", info.NumPending, info.NumAckPending)
	}
	if testutil.ToFloat64(m.up) != 0 {
		t.Fatal("smelter_history_up is 1 during the outage")
	}

	proxy.Up(t)
	waitFor(t, "500 readings stored after the outage", 60*time.Second, func() bool { return count() == 500 })
	waitFor(t, "consumer drained", 30*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	// the same batches once more: stored nothing twice
	publish(1, 500)
	waitFor(t, "republished batches seen", 30*time.Second, func() bool { return sink.Stored() >= 1000 })
	if n := count(); n != 500 {
		t.Fatalf("%d readings after republishing, want 500", n)
	}
	var sum float64
	if err := store.db().QueryRow(ctx, "SELECT sum(value) FROM readings").Scan(&sum); err != nil || sum != 500*501/2/8.0 {
		t.Fatalf("sum %v %v", sum, err)
	}
	if d := testutil.ToFloat64(m.duplicates); d != 500 {
		t.Fatalf("duplicates %v, want 500", d)
	}
	if r := testutil.ToFloat64(m.rows.WithLabelValues("readings")); r != 500 {
		t.Fatalf("rows metric %v", r)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// pgxParse returns host:port of the PostgreSQL a DSN names.
func pgxParse(dsn string) (string, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(cfg.Host, "/") {
		return "", errors.New("the DSN names a Unix socket; the outage test needs TCP")
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), nil
}

// replaceHost points dsn at addr (host:port).
func replaceHost(t *testing.T, dsn, addr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = addr
		return u.String()
	}
	return dsn + " host=" + host + " port=" + port
}

// TestReplicaSinksShareConsumer: three sinks (as three collector replicas)
// pull from one durable consumer and write at once; every batch is stored
// once and the rollups count each reading once.
func TestReplicaSinksShareConsumer(t *testing.T) {
	dsn := testDSN(t)
	first := testStore(t, dsn, nil)
	js := startStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sinks := make([]*Sink, 3)
	done := make(chan struct{}, len(sinks))
	for i := range sinks {
		st := first
		if i > 0 { // a store of its own on the same schema, as another process
			var err error
			st, err = New(Options{DSN: secret.New(dsn), Schema: first.Schema(), Retention: DefaultRetention()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(st.Close)
		}
		sinks[i] = NewSink(st, js, SinkOptions{Stream: "SMELTER", Consumer: "hist", Batch: 7, Flush: 20 * time.Millisecond})
		go func() { _ = sinks[i].Run(ctx); done <- struct{}{} }()
	}
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Minute).UnixMilli()
	const n = 600
	for seq := 1; seq <= n; seq++ {
		a := testAsset
		a.ID = fmt.Sprintf("comp_%d", seq%5)
		b := &telemetry.Batch{Gateway: "gw1", Seq: uint64(seq), Asset: a, TSGW: t0 + int64(seq)*100,
			Readings: []telemetry.Reading{{Signal: "pressure", Value: 1, TS: t0 + int64(seq)*100}}}
		if _, err := js.Publish(ctx, telemetry.AssetSubject(a, telemetry.KindData), b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
		if seq%200 == 0 { // some batches twice
			if _, err := js.Publish(ctx, telemetry.AssetSubject(a, telemetry.KindData), b.AppendJSON(nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, "every message stored", 60*time.Second, func() bool {
		var total int64
		for _, s := range sinks {
			total += s.Stored()
		}
		return total == n+3
	})
	var rows, cnt int64
	if err := first.db().QueryRow(ctx, "SELECT (SELECT count(*) FROM readings), (SELECT sum(count) FROM rollup_1m)").Scan(&rows, &cnt); err != nil || rows != n || cnt != n {
		t.Fatalf("readings %d, rollup count %d, %v", rows, cnt, err)
	}
	busy := 0
	for _, s := range sinks {
		if s.Stored() > 0 {
			busy++
		}
	}
	t.Logf("%d of %d sinks wrote", busy, len(sinks))
	cancel()
	for range sinks {
		<-done
	}
}

// TestSinkRecreatesDeletedConsumer: an operator deletes the history
// consumer (to replay the stream after a restore); the sink creates it
// again, the new consumer delivers the whole stream and the ledger skips
// what is stored.
func TestSinkRecreatesDeletedConsumer(t *testing.T) {
	st := testStore(t, testDSN(t), nil)
	js := startStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, _ := NewMetrics(nil)
	sink := NewSink(st, js, SinkOptions{Stream: "SMELTER", Consumer: "hist", Batch: 10, Flush: 20 * time.Millisecond, Metrics: m})
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	publish := func(from, to int) {
		for seq := from; seq <= to; seq++ {
			b := &telemetry.Batch{Gateway: "gw1", Seq: uint64(seq), Asset: testAsset, TSGW: t0 + int64(seq),
				Readings: []telemetry.Reading{{Signal: "pressure", Value: 1, TS: t0 + int64(seq)}}}
			if _, err := js.Publish(ctx, telemetry.AssetSubject(testAsset, telemetry.KindData), b.AppendJSON(nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(1, 10)
	waitFor(t, "10 stored", 30*time.Second, func() bool { return sink.Stored() == 10 })
	if err := js.DeleteConsumer(ctx, "SMELTER", "hist"); err != nil {
		t.Fatal(err)
	}
	publish(11, 20)
	waitFor(t, "the whole stream again through a new consumer", 30*time.Second, func() bool { return sink.Stored() == 30 })
	var n int64
	if err := st.db().QueryRow(ctx, "SELECT count(*) FROM readings").Scan(&n); err != nil || n != 20 {
		t.Fatalf("readings %d %v", n, err)
	}
	if d := testutil.ToFloat64(m.duplicates); d != 10 {
		t.Fatalf("duplicates %v", d)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// startStream starts an embedded nats-server with JetStream and the stream
// SMELTER on smelter.v1.>, all closed at the end of the test.
func startStream(t testing.TB, opts ...jetstream.JetStreamOpt) jetstream.JetStream {
	t.Helper()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "SMELTER", Subjects: []string{"smelter.v1.>"}}); err != nil {
		t.Fatal(err)
	}
	return js
}

// TestSinkSkipsPoisonMessages: a batch the database refuses (a NUL byte in
// a text value) among good ones is acknowledged and counted, not retried
// for ever; a reading dated in year 9999 is not stored and creates no
// partition; the good batches of the same fetch are stored.
func TestSinkSkipsPoisonMessages(t *testing.T) {
	st := testStore(t, testDSN(t), nil)
	js := startStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	for seq := 1; seq <= 7; seq++ {
		r := telemetry.Reading{Signal: "pressure", Value: float64(seq), TS: t0 + int64(seq)}
		switch seq {
		case 3:
			r = telemetry.Reading{Signal: "label", Text: "a\x00b", NoValue: true, TS: t0 + int64(seq)}
		case 5:
			r.TS = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
		}
		b := &telemetry.Batch{Gateway: "gw1", Seq: uint64(seq), Asset: testAsset, TSGW: t0 + int64(seq), Readings: []telemetry.Reading{r}}
		if _, err := js.Publish(ctx, telemetry.AssetSubject(testAsset, telemetry.KindData), b.AppendJSON(nil)); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := NewMetrics(nil)
	sink := NewSink(st, js, SinkOptions{Stream: "SMELTER", Consumer: "hist", Batch: 100, Flush: 50 * time.Millisecond, Metrics: m})
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	waitFor(t, "all 7 acknowledged", 30*time.Second, func() bool { return sink.Stored() == 7 })
	var n int64
	if err := st.db().QueryRow(ctx, "SELECT count(*) FROM readings").Scan(&n); err != nil || n != 5 {
		t.Fatalf("readings %d %v", n, err)
	}
	if mal, exp := testutil.ToFloat64(m.malformed), testutil.ToFloat64(m.expired); mal != 1 || exp != 1 {
		t.Fatalf("malformed %v, expired %v", mal, exp)
	}
	parts, _ := st.Partitions(ctx, "readings")
	for _, p := range parts {
		if strings.Contains(p, "9999") {
			t.Fatalf("partition %s created for a year-9999 reading", p)
		}
	}
	cancel()
	<-done
}

// TestUnavailableWhileDatabaseDown: a query while the database cannot be
// reached is Unavailable (the API's 503 "history database unavailable"),
// a query the database refuses is not (review of #14, finding 5).
func TestUnavailableWhileDatabaseDown(t *testing.T) {
	proxy, store := proxiedStore(t)
	ctx := context.Background()
	q := SeriesQuery{Site: "plant1", Asset: "comp_1", Signal: "pressure", From: time.Now().Add(-time.Hour), To: time.Now()}
	if _, err := store.Series(ctx, q); err != nil {
		t.Fatal(err)
	}
	_, err := store.db().Exec(ctx, "SELECT * FROM no_such_table")
	if err == nil || Unavailable(err) {
		t.Fatalf("a refused query: %v, unavailable %v", err, Unavailable(err))
	}
	proxy.Down()
	_, err = store.Series(ctx, q)
	if err == nil || !Unavailable(err) {
		t.Fatalf("a query while the database is down: %v, unavailable %v", err, Unavailable(err))
	}
	if !Unavailable(ErrNotOpen) || Unavailable(nil) {
		t.Fatal("ErrNotOpen / nil")
	}
}
