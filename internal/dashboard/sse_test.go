package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/telemetry"
)

// SSEEvent is one parsed Server-Sent Event and its size on the wire
// (every line of it with its newline, and the blank line that ends it).
// Exported for the package's external tests.
type SSEEvent struct {
	Type, ID, Data string
	Size           int
}

// ReadSSE parses the event stream body into out until the body ends or
// ctx is done, then closes out.
func ReadSSE(ctx context.Context, body io.Reader, out chan<- SSEEvent) {
	defer close(out)
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	var ev SSEEvent
	for sc.Scan() {
		line := sc.Text()
		ev.Size += len(line) + 1
		switch {
		case line == "":
			if ev.Type != "" || ev.Data != "" {
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
			ev = SSEEvent{}
		case strings.HasPrefix(line, "event: "):
			ev.Type = line[7:]
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "data: "):
			ev.Data = line[6:]
		}
	}
}

// sseStream is an open /api/v1/events stream over a real HTTP
// connection, parsed by its own goroutine.
type sseStream struct {
	evs    chan SSEEvent
	cancel context.CancelFunc
}

// openStream opens the stream with the query (without "?") and header
// (name, value pairs), and closes it with the test.
func openStream(tb testing.TB, srv *httptest.Server, query string, header ...string) *sseStream {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/events?"+query, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		tb.Fatalf("events?%s: %d", query, resp.StatusCode)
	}
	st := &sseStream{evs: make(chan SSEEvent, 16), cancel: cancel}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		ReadSSE(ctx, resp.Body, st.evs)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	return st
}

// nextGateways returns the stream's next gateway event (any other is
// skipped), failing the test after 10 s.
func (st *sseStream) nextGateways(tb testing.TB) SSEEvent {
	tb.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-st.evs:
			if !ok {
				tb.Fatal("stream ended waiting for a gateway event")
			}
			if strings.HasPrefix(e.Type, "gateways") {
				return e
			}
		case <-timeout:
			tb.Fatal("no gateway event within 10 s")
		}
	}
}

// sseFixture is a Live store on a settable wall clock, served by a real
// HTTP server whose event streams tick when the test says.
type sseFixture struct {
	clock atomic.Int64 // wall time, Unix ms
	live  *Live
	srv   *Server
	http  *httptest.Server
	seq   uint64
	mu    sync.Mutex
	ticks chan time.Time // the newest stream's
}

func newSSEFixture(tb testing.TB) *sseFixture {
	f := &sseFixture{}
	f.clock.Store(time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC).UnixMilli())
	f.live = NewLive(func() time.Time { return time.UnixMilli(f.clock.Load()) })
	f.srv = New(&fleet{}, f.live, Options{})
	f.srv.newTicker = func() (<-chan time.Time, func()) {
		ch := make(chan time.Time)
		f.mu.Lock()
		f.ticks = ch
		f.mu.Unlock()
		return ch, func() {}
	}
	f.http = httptest.NewServer(f.srv)
	tb.Cleanup(f.http.Close)
	return f
}

// publish records a batch of gateway gw's one asset at the fixture's clock.
func (f *sseFixture) publish(gw string) {
	f.seq++
	now := f.clock.Load()
	f.live.ObserveBatch(&telemetry.Batch{Gateway: gw, Seq: f.seq, TSGW: now,
		Asset:    telemetry.Asset{ID: "m-" + gw, Class: "motor", Path: []string{"acme", "s1", "_", "_", "_"}},
		Readings: []telemetry.Reading{{Signal: "power", Value: 1, Unit: "kW", TS: now}}})
}

// tick makes the newest open stream run one tick.
func (f *sseFixture) tick() {
	f.mu.Lock()
	ch := f.ticks
	f.mu.Unlock()
	ch <- time.Now()
}

func gwName(i int) string { return fmt.Sprintf("gw-%05d", i) }

func decode[T any](tb testing.TB, e SSEEvent) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal([]byte(e.Data), &v); err != nil {
		tb.Fatalf("%s event: %v: %.300s", e.Type, err, e.Data)
	}
	return v
}

func ids(gws []GatewayView) []string {
	out := make([]string, len(gws))
	for i, g := range gws {
		out[i] = g.ID
	}
	return out
}

// TestGatewayDeltaStream: with gateways=delta the stream sends the gateway
// list once at connect, then per tick only the gateways that changed and
// the ids evicted, each event of a size that does not grow with the list;
// a stream that fell behind the removal log gets a fresh snapshot
// (counted). Before, every tick with any change carried all 1,000
// gateways (~230 KB for one changed gateway).
func TestGatewayDeltaStream(t *testing.T) {
	f := newSSEFixture(t)
	const n = 1000
	for i := range n {
		f.publish(gwName(i))
	}
	t0 := f.clock.Load()
	st := openStream(t, f.http, "gateways=delta")

	e := st.nextGateways(t)
	snap := decode[GatewaySnapshotEvent](t, e)
	if e.Type != "gateways.snapshot" || len(snap.Gateways) != n || snap.Now != t0 || snap.SilentAfterMS != SilentAfter.Milliseconds() {
		t.Fatalf("first gateway event %s: %d gateways, now %d (want %d), silent_after_ms %d", e.Type, len(snap.Gateways), snap.Now, t0, snap.SilentAfterMS)
	}
	if !slices.IsSortedFunc(snap.Gateways, func(a, b GatewayView) int { return strings.Compare(a.ID, b.ID) }) {
		t.Error("snapshot not sorted by id")
	}

	// a tick without changes sends nothing; one gateway's batch: a delta
	// of that gateway alone
	f.tick()
	f.clock.Add(1000)
	f.publish(gwName(500))
	f.tick()
	e = st.nextGateways(t)
	d := decode[GatewayDeltaEvent](t, e)
	if e.Type != "gateways.delta" || !slices.Equal(ids(d.Changed), []string{gwName(500)}) || len(d.Removed) != 0 || d.Now != t0+1000 {
		t.Fatalf("after one batch: %s changed %v removed %v now %d, want a delta of %s at %d", e.Type, ids(d.Changed), d.Removed, d.Now, gwName(500), t0+1000)
	}
	if g := d.Changed[0]; g.Batches != 2 || g.LastRecv != t0+1000 || g.Status != "online" {
		t.Errorf("changed entry %+v: want 2 batches, last_recv %d, online", g, t0+1000)
	}
	// O(1), not O(n): one entry of ~200 bytes against the snapshot's n
	if e.Size > 1024 || e.Size*100 > snapSize(t, snap) {
		t.Errorf("delta of one gateway is %d bytes (snapshot of %d: %d bytes)", e.Size, n, snapSize(t, snap))
	}

	// fill the list to its bound (one delta of the new ones), then a new
	// id evicts the gateway seen least recently: a removal
	for i := n; i < MaxGateways; i++ {
		f.publish(gwName(i))
	}
	f.tick()
	if d := decode[GatewayDeltaEvent](t, st.nextGateways(t)); len(d.Changed) != MaxGateways-n || len(d.Removed) != 0 {
		t.Fatalf("fill: %d changed, %d removed, want %d and 0", len(d.Changed), len(d.Removed), MaxGateways-n)
	}
	f.publish("gw-new")
	f.tick()
	e = st.nextGateways(t)
	d = decode[GatewayDeltaEvent](t, e)
	if e.Type != "gateways.delta" || !slices.Equal(ids(d.Changed), []string{"gw-new"}) || !slices.Equal(d.Removed, []string{gwName(0)}) {
		t.Fatalf("eviction: %s changed %v removed %v, want gw-new added and %s removed", e.Type, ids(d.Changed), d.Removed, gwName(0))
	}

	// the stream falls behind: more evictions than the removal log keeps
	// before its next tick (a client whose writes blocked): a fresh
	// snapshot, counted, and deltas again after it
	for i := range RemovalLog + 1 {
		f.publish(fmt.Sprintf("gw-flood-%05d", i))
	}
	f.tick()
	e = st.nextGateways(t)
	if e.Type != "gateways.snapshot" {
		t.Fatalf("after %d evictions between two ticks: %s, want gateways.snapshot", RemovalLog+1, e.Type)
	}
	snap = decode[GatewaySnapshotEvent](t, e)
	held := ids(snap.Gateways)
	if len(held) != MaxGateways || !slices.Contains(held, fmt.Sprintf("gw-flood-%05d", RemovalLog)) || slices.Contains(held, gwName(1)) {
		t.Errorf("lag snapshot: %d gateways, newest held %v, oldest evicted %v", len(held),
			slices.Contains(held, fmt.Sprintf("gw-flood-%05d", RemovalLog)), !slices.Contains(held, gwName(1)))
	}
	if got := f.live.Stats().GatewayResyncs; got != 1 {
		t.Errorf("GatewayResyncs %d, want 1", got)
	}
	f.publish("gw-flood-00000")
	f.tick()
	if d := decode[GatewayDeltaEvent](t, st.nextGateways(t)); !slices.Equal(ids(d.Changed), []string{"gw-flood-00000"}) || len(d.Removed) != 0 {
		t.Errorf("after the lag snapshot: changed %v removed %v", ids(d.Changed), d.Removed)
	}
}

func snapSize(tb testing.TB, s GatewaySnapshotEvent) int {
	b, err := json.Marshal(s)
	if err != nil {
		tb.Fatal(err)
	}
	return len(b)
}

// TestGatewayStreamModes: a reconnect carrying Last-Event-ID starts from a
// snapshot with gateways=delta; without the parameter (or with
// gateways=list) the stream keeps the whole-list gateways event; any other
// value is a 400 naming the parameter.
func TestGatewayStreamModes(t *testing.T) {
	f := newSSEFixture(t)
	f.publish("gw-a")
	f.publish("gw-b")
	e := openStream(t, f.http, "gateways=delta", "Last-Event-ID", "7").nextGateways(t)
	if s := decode[GatewaySnapshotEvent](t, e); e.Type != "gateways.snapshot" || len(s.Gateways) != 2 {
		t.Errorf("reconnect with Last-Event-ID: %s of %d gateways, want a snapshot of 2", e.Type, len(s.Gateways))
	}
	for _, q := range []string{"", "gateways=list"} {
		st := openStream(t, f.http, q)
		f.publish("gw-a")
		f.tick()
		e := st.nextGateways(t)
		if l := decode[[]GatewayView](t, e); e.Type != "gateways" || len(l) != 2 {
			t.Errorf("events?%s: %s of %d gateways, want the list of 2", q, e.Type, len(l))
		}
		st.cancel()
	}
	resp, err := f.http.Client().Get(f.http.URL + "/api/v1/events?gateways=diff")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body apiError
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusBadRequest || body.Field != "gateways" || !strings.Contains(body.Error, "want list or delta") {
		t.Errorf("gateways=diff: %d %+v", resp.StatusCode, body)
	}
}

// BenchmarkGatewayStreamBytes measures what one event stream sends per
// tick for 10,000 gateways of which 10 (or all) send a batch per tick: the
// whole list (gateways=list, the only form before gateways=delta) against
// the delta. bytes/tick counts every line of the tick's gateway event;
// snapshot-bytes is the delta stream's snapshot at connect.
func BenchmarkGatewayStreamBytes(b *testing.B) {
	const n = 10_000
	for _, changing := range []int{10, n} {
		for _, mode := range []string{"list", "delta"} {
			b.Run(fmt.Sprintf("changing=%d/gateways=%s", changing, mode), func(b *testing.B) {
				f := newSSEFixture(b)
				for i := range n {
					f.publish(gwName(i))
				}
				st := openStream(b, f.http, "gateways="+mode)
				snapshot := 0
				if mode == "delta" {
					snapshot = st.nextGateways(b).Size
				}
				var sent, ticks, next int
				b.ReportAllocs()
				for b.Loop() {
					f.clock.Add(1000)
					for range changing {
						f.publish(gwName(next))
						next = (next + 997) % n // 997 is prime to n: 10 different gateways a tick
					}
					f.tick()
					e := st.nextGateways(b)
					sent += e.Size
					ticks++
				}
				b.ReportMetric(float64(sent)/float64(ticks), "bytes/tick")
				if snapshot > 0 {
					b.ReportMetric(float64(snapshot), "snapshot-bytes")
				}
			})
		}
	}
}
