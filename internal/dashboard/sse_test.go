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

	"github.com/smelterio/smelter/internal/collector/alert"
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

// next returns the stream's next event that match accepts (any other is
// skipped), failing the test after 10 s.
func (st *sseStream) next(tb testing.TB, what string, match func(SSEEvent) bool) SSEEvent {
	tb.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-st.evs:
			if !ok {
				tb.Fatalf("stream ended waiting for %s", what)
			}
			if match(e) {
				return e
			}
		case <-timeout:
			tb.Fatalf("no %s within 10 s", what)
		}
	}
}

func isGateways(e SSEEvent) bool { return strings.HasPrefix(e.Type, "gateways") }

// nextGateways returns the stream's next gateway event.
func (st *sseStream) nextGateways(tb testing.TB) SSEEvent {
	tb.Helper()
	return st.next(tb, "gateway event", isGateways)
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

func newSSEFixture(tb testing.TB, opts ...LiveOption) *sseFixture {
	f := &sseFixture{}
	f.clock.Store(time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC).UnixMilli())
	f.live = NewLive(func() time.Time { return time.UnixMilli(f.clock.Load()) }, opts...)
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
func (f *sseFixture) publish(gw string) { f.publishAsset(gw, "m-"+gw) }

// publishAsset records a batch of asset id through gateway gw.
func (f *sseFixture) publishAsset(gw, id string) {
	f.seq++
	now := f.clock.Load()
	f.live.ObserveBatch(&telemetry.Batch{Gateway: gw, Seq: f.seq, TSGW: now,
		Asset:    telemetry.Asset{ID: id, Class: "motor", Path: []string{"acme", "s1", "_", "_", "_"}},
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
	if e.Type != "gateways.snapshot" || len(snap.Gateways) != n || snap.Now != t0 || snap.SilentAfterMS != DefaultSilentAfter.Milliseconds() ||
		snap.RefreshMS != RefreshInterval.Milliseconds() {
		t.Fatalf("first gateway event %s: %d gateways, now %d (want %d), silent_after_ms %d, refresh_ms %d", e.Type, len(snap.Gateways), snap.Now, t0,
			snap.SilentAfterMS, snap.RefreshMS)
	}
	if !slices.IsSortedFunc(snap.Gateways, func(a, b GatewayView) int { return strings.Compare(a.ID, b.ID) }) {
		t.Error("snapshot not sorted by id")
	}

	// a tick without changes sends nothing; a batch of a new asset of
	// one gateway (a change its row shows): a delta of that gateway alone
	f.tick()
	f.clock.Add(1000)
	f.publishAsset(gwName(500), "m-extra")
	f.tick()
	e = st.nextGateways(t)
	d := decode[GatewayDeltaEvent](t, e)
	if e.Type != "gateways.delta" || !slices.Equal(ids(d.Changed), []string{gwName(500)}) || len(d.Removed) != 0 || d.Now != t0+1000 {
		t.Fatalf("after one batch: %s changed %v removed %v now %d, want a delta of %s at %d", e.Type, ids(d.Changed), d.Removed, d.Now, gwName(500), t0+1000)
	}
	if g := d.Changed[0]; g.Batches != 2 || g.Assets != 2 || g.LastRecv != t0+1000 || g.Status != "online" {
		t.Errorf("changed entry %+v: want 2 batches of 2 assets, last_recv %d, online", g, t0+1000)
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
	f.publishAsset("gw-flood-00000", "m-extra")
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

// gwClient is a client of a gateways=delta stream as the dashboard page
// is: a map by id kept from the snapshot and the deltas, and silence
// judged by itself on the server's clock.
type gwClient struct {
	gws         map[string]GatewayView
	silentAfter int64
	refreshMS   int64
	appearedAt  map[string]int  // tick of each gateway's last delta entry
	refreshGaps map[int]int     // ticks between two entries of a gateway publishing every tick -> count
	significant map[string]bool // gateways whose status changed
}

// status is the page's rule (app.js gwStatus): offline when the entry
// says so, silent when server time - last_recv exceeds silent_after_ms.
func (c *gwClient) status(id string, serverNow int64) string {
	g := c.gws[id]
	switch {
	case g.Status == "offline":
		return "offline"
	case serverNow-g.LastRecv > c.silentAfter:
		return "silent"
	}
	return "online"
}

// TestGatewayDeltaRefresh: every gateway of a fleet publishes every tick.
// A tick's delta holds the gateways whose row changed (one turned offline,
// the one offline before back online: in that same tick) and those whose
// refresh came up, about n x tick/RefreshInterval, each gateway once per
// RefreshInterval; not the whole list, as it did when every counter change
// went out at once. A client that applies the deltas and judges silence by
// itself (silent_after_ms on the server's clock) never calls a publishing
// gateway silent, however rarely under SilentAfter it publishes (10-29 s;
// held like the others, a message 25 s after the one before would reach
// the client after the threshold), holds no last_recv of a gateway that
// sent a newer message more than the bound gwpublish.go derives for one
// stream (holdLimit + RefreshInterval + a tick: 21 s at 30 s),
// and calls one that stopped silent when the server does.
// It runs at the default threshold and at the shortest one
// (http.gateway_silent_after), where the hold is shortest against it.
func TestGatewayDeltaRefresh(t *testing.T) {
	for _, silent := range []time.Duration{DefaultSilentAfter, MinSilentAfter} {
		t.Run(silent.String(), func(t *testing.T) { testGatewayDeltaRefresh(t, silent) })
	}
}

func testGatewayDeltaRefresh(t *testing.T, silent time.Duration) {
	f := newSSEFixture(t, WithSilentAfter(silent))
	const (
		n     = 1000
		slow  = refreshSlots // one a slot: some wait long for theirs
		ticks = 62
		tick  = int64(1000) // ms of the fixture's clock a stream tick
		stops = 7           // gwName(stops) publishes until tick 20
	)
	slowName := func(i int) string { return fmt.Sprintf("slow-%02d", i) }
	slowEvery := func(i int) int { return 10 + i%20 } // ticks
	last := map[string]int64{}                        // truth: each gateway's last message
	publish := func(gw string) {
		f.publish(gw)
		last[gw] = f.clock.Load()
	}
	for i := range slow {
		publish(slowName(i))
	}
	for i := range n {
		publish(gwName(i))
	}
	st := openStream(t, f.http, "gateways=delta")
	snap := decode[GatewaySnapshotEvent](t, st.nextGateways(t))
	c := &gwClient{gws: map[string]GatewayView{}, silentAfter: snap.SilentAfterMS, refreshMS: snap.RefreshMS,
		appearedAt: map[string]int{}, refreshGaps: map[int]int{}, significant: map[string]bool{}}
	for _, g := range snap.Gateways {
		c.gws[g.ID] = g
	}
	if c.refreshMS != RefreshInterval.Milliseconds() || len(c.gws) != n+slow || c.silentAfter != silent.Milliseconds() {
		t.Fatalf("snapshot: refresh_ms %d, silent_after_ms %d, %d gateways", c.refreshMS, c.silentAfter, len(c.gws))
	}
	perRefresh := int(c.refreshMS / tick)
	// a tick's delta: the slots that came up (10 of 50, 21 gateways
	// each), the two status changes, the slow gateways that published
	// (sent at once when their clients' last_recv is old)
	dueBound := (n + slow + refreshSlots - 1) / refreshSlots * (refreshSlots / perRefresh)
	offline := map[string]bool{} // truth: reported offline, no batch since
	// check compares the client's judgement with the truth at server time
	// now: a gateway is silent when its last message is more than
	// SilentAfter old. strict: the client must agree on every gateway;
	// else (the state it showed since the previous tick) it must not call
	// a gateway silent that is not, and the last_recv it holds of a
	// gateway that is not silent is at most lagBound old (gwpublish.go:
	// holdLimit + RefreshInterval + a tick, 9 s short of SilentAfter)
	// when it is not the gateway's last message.
	lagBound := (f.live.holdLimit() + RefreshInterval).Milliseconds() + tick
	maxLag := int64(0)
	check := func(k int, now int64, strict bool) {
		t.Helper()
		for id := range c.gws {
			want := "online"
			switch {
			case offline[id]:
				want = "offline"
			case now-last[id] > silent.Milliseconds():
				want = "silent"
			}
			if lag := now - c.gws[id].LastRecv; want != "silent" && c.gws[id].LastRecv != last[id] {
				maxLag = max(maxLag, lag)
				if lag > lagBound {
					t.Fatalf("tick %d: the client holds a last_recv of %s %d ms old, want at most %d (its last message %d ms old)",
						k, id, lag, lagBound, now-last[id])
				}
			}
			got := c.status(id, now)
			bad := got != want
			if !strict {
				bad = got == "silent" && want != "silent"
			}
			if !bad {
				continue
			}
			t.Fatalf("tick %d (strict %v): the client calls %s %s (its last_recv %d ms old), want %s (last message %d ms old)",
				k, strict, id, got, now-c.gws[id].LastRecv, want, now-last[id])
		}
	}
	prevFlap := ""
	maxChanged, maxBound := 0, 0
	for k := 1; k <= ticks; k++ {
		f.clock.Add(tick)
		now := f.clock.Load()
		// what the client showed since the previous tick, judged at this
		// moment, before this tick's messages
		check(k, now, false)
		for i := range n {
			if i != stops || k <= 20 {
				publish(gwName(i))
			}
		}
		bound := dueBound + 2
		for i := range slow {
			if k%slowEvery(i) == 0 {
				publish(slowName(i))
				bound++
			}
		}
		delete(offline, prevFlap) // its batch of this tick: online again
		flap := gwName(100 + k)
		f.live.ObserveStatus("s1", &telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: flap, Online: false})
		offline[flap] = true
		c.significant[flap] = true
		f.tick()
		e := st.nextGateways(t)
		if e.Type != "gateways.delta" {
			t.Fatalf("tick %d: %s", k, e.Type)
		}
		d := decode[GatewayDeltaEvent](t, e)
		byID := map[string]GatewayView{}
		for _, g := range d.Changed {
			byID[g.ID] = g
			c.gws[g.ID] = g
			if at, ok := c.appearedAt[g.ID]; ok && !c.significant[g.ID] && !strings.HasPrefix(g.ID, "slow-") && g.ID != gwName(stops) {
				c.refreshGaps[k-at]++
			}
			c.appearedAt[g.ID] = k
		}
		if byID[flap].Status != "offline" {
			t.Errorf("tick %d: %s reported offline, its delta entry %+v", k, flap, byID[flap])
		}
		if prevFlap != "" && byID[prevFlap].Status != "online" {
			t.Errorf("tick %d: %s back online with a batch, its delta entry %+v", k, prevFlap, byID[prevFlap])
		}
		if len(d.Changed) > bound || len(d.Removed) != 0 {
			t.Fatalf("tick %d: %d changed (%d bytes), %d removed, want at most %d (n/%d due for refresh, 2 status changes, the slow gateways' messages) of %d",
				k, len(d.Changed), e.Size, len(d.Removed), bound, perRefresh, n+slow)
		}
		maxChanged, maxBound = max(maxChanged, len(d.Changed)), max(maxBound, bound)
		check(k, d.Now, true)
		prevFlap = flap
	}
	// each gateway publishing every tick went out every RefreshInterval:
	// no more often (the bound above), no less (its counters' lag)
	for gap, count := range c.refreshGaps {
		if gap != perRefresh {
			t.Errorf("%d refreshes %d ticks after the gateway's previous entry, want %d", count, gap, perRefresh)
		}
	}
	if c.refreshGaps[perRefresh] < n {
		t.Errorf("refreshes: %v", c.refreshGaps)
	}
	if c.status(gwName(stops), f.clock.Load()) != "silent" {
		t.Errorf("%s stopped at tick 20: the client does not call it silent at tick %d", gwName(stops), ticks)
	}
	t.Logf("largest delta %d gateways of %d (bound %d); oldest last_recv a client held of a live gateway that sent a newer message %d ms (bound %d)",
		maxChanged, n+slow, maxBound, maxLag, lagBound)
}

// tickAndCollect makes the newest stream run one tick and returns the
// gateway events it sent (none when nothing was due). A marker event in
// the event log follows the tick: an alert event takes the stream's other
// path (no gateway work), so the marker comes after every byte of the
// tick and nothing of the next one.
func (f *sseFixture) tickAndCollect(tb testing.TB, st *sseStream) []SSEEvent {
	tb.Helper()
	f.tick()
	f.seq++
	marker := fmt.Sprintf("tick-marker-%d", f.seq)
	f.live.ObserveAlerts([]alert.Alert{{ID: marker, Rule: "marker"}})
	var out []SSEEvent
	for {
		e := st.next(tb, "tick marker", func(e SSEEvent) bool {
			return isGateways(e) || e.Type == "alert" && strings.Contains(e.Data, marker)
		})
		if !isGateways(e) {
			return out
		}
		out = append(out, e)
	}
}

// BenchmarkGatewayStreamBytes measures what one event stream sends per
// tick (1 s of the store's clock) for 10,000 gateways: the whole list
// (gateways=list, the only form before gateways=delta) against the delta.
// publishing is how many gateways send a batch each tick (10 different
// ones, or all); offline how many of them then report offline (a status
// change, sent at once; the one of the tick before is back online with
// its batch). bytes/tick counts every line of the tick's gateway events
// (a tick may have none); snapshot-bytes is the delta stream's snapshot
// at connect. A batch alone changes counters and times only: the delta
// holds it for the gateway's refresh (RefreshInterval), so with all
// publishing a tick carries about n/5 gateways, not n.
func BenchmarkGatewayStreamBytes(b *testing.B) {
	const n = 10_000
	for _, c := range []struct{ publishing, offline int }{{10, 0}, {n, 0}, {n, 10}} {
		for _, mode := range []string{"list", "delta"} {
			b.Run(fmt.Sprintf("publishing=%d/offline=%d/gateways=%s", c.publishing, c.offline, mode), func(b *testing.B) {
				f := newSSEFixture(b)
				for i := range n {
					f.publish(gwName(i))
				}
				st := openStream(b, f.http, "gateways="+mode)
				snapshot := 0
				for _, e := range f.tickAndCollect(b, st) {
					snapshot += e.Size
				}
				var sent, ticks, next, flap int
				b.ReportAllocs()
				for b.Loop() {
					f.clock.Add(1000)
					for range c.publishing {
						f.publish(gwName(next))
						next = (next + 997) % n // 997 is prime to n: 10 different gateways a tick
					}
					for range c.offline {
						f.live.ObserveStatus("s1", &telemetry.Status{Schema: telemetry.SchemaStatus, Gateway: gwName(flap), Online: false})
						flap = (flap + 1) % n
					}
					for _, e := range f.tickAndCollect(b, st) {
						sent += e.Size
					}
					ticks++
				}
				b.ReportMetric(float64(sent)/float64(ticks), "bytes/tick")
				if mode == "delta" {
					b.ReportMetric(float64(snapshot), "snapshot-bytes")
				}
			})
		}
	}
}
