package dashboard

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// smallBufListener gives every accepted connection a small send buffer,
// so that a client that stops reading blocks the server's writes after a
// few KB instead of the few MB loopback buffers take.
type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// stalledClient opens an event stream over a raw TCP connection with a
// small receive buffer and never reads it.
func stalledClient(tb testing.TB, addr, query string, header ...string) net.Conn {
	tb.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	req := "GET /api/v1/events?" + query + " HTTP/1.1\r\nHost: x\r\n"
	for i := 0; i+1 < len(header); i += 2 {
		req += header[i] + ": " + header[i+1] + "\r\n"
	}
	if _, err := c.Write([]byte(req + "\r\n")); err != nil {
		tb.Fatal(err)
	}
	return c
}

// streamServer serves live on a real socket with small send buffers.
func streamServer(tb testing.TB, live *Live, src Source, opts Options) (*Server, *httptest.Server) {
	tb.Helper()
	s := New(src, live, opts)
	hs := httptest.NewUnstartedServer(s)
	hs.Listener = smallBufListener{hs.Listener}
	hs.Start()
	tb.Cleanup(hs.Close)
	return s, hs
}

func fillGateways(l *Live, n int) {
	for i := range n {
		l.ObserveStatus("s1", &telemetry.Status{Gateway: gwName(i), Online: true})
	}
}

// TestStalledStreamClosed (review4 F3): a client that stops reading is
// closed once a write blocks for StreamWriteTimeout, in both gateway
// forms, and counted; the stream's slot is given back.
func TestStalledStreamClosed(t *testing.T) {
	live := NewLive(nil)
	fillGateways(live, 2000)
	s, hs := streamServer(t, live, &fleet{}, Options{Tick: 10 * time.Millisecond, StreamWriteTimeout: 200 * time.Millisecond})
	addr := hs.Listener.Addr().String()
	for _, q := range []string{"gateways=list", "gateways=delta"} {
		stalledClient(t, addr, q)
	}
	wait.For(t, 10*time.Second, "2 streams open", func() bool { return s.opts.Streams.Open() == 2 })
	i := 0
	wait.For(t, 30*time.Second, "stalled streams closed", func() bool {
		// gateway churn at every poll: the list streams have a list to send
		i++
		live.ObserveStatus("s1", &telemetry.Status{Gateway: gwName(i % 2000), Online: i%2 == 0})
		return s.opts.Streams.Open() == 0
	})
	if n := s.opts.Streams.TimedOut(); n != 2 {
		t.Errorf("timed out streams %d, want 2", n)
	}
}

// openStreamFrom opens an event stream as the client xff (the server
// trusts the test's loopback proxy); the response is closed at cleanup.
func openStreamFrom(t *testing.T, hs *httptest.Server, xff string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/v1/events", nil)
	req.Header.Set("X-Forwarded-For", xff)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestStreamCaps (review4 F3): beyond MaxStreamsPerClient for one client,
// or MaxStreams in all, a stream gets 503 with Retry-After, counted.
func TestStreamCaps(t *testing.T) {
	live := NewLive(nil)
	s, hs := streamServer(t, live, &fleet{}, Options{MaxStreams: 3, MaxStreamsPerClient: 2,
		RateLimit: RateLimit{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
	open := func(xff string) *http.Response { return openStreamFrom(t, hs, xff) }
	for _, xff := range []string{"10.0.0.1", "10.0.0.1:5000"} { // one client, with and without a port
		if r := open(xff); r.StatusCode != http.StatusOK {
			t.Fatalf("stream of %s: %d", xff, r.StatusCode)
		}
	}
	r := open("10.0.0.1")
	var body apiError
	_ = json.NewDecoder(r.Body).Decode(&body)
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || !strings.Contains(body.Error, "max_streams_per_client") {
		t.Errorf("third stream of one client: %d Retry-After %q %q", r.StatusCode, r.Header.Get("Retry-After"), body.Error)
	}
	if r := open("[2001:db8::1]:443"); r.StatusCode != http.StatusOK {
		t.Fatalf("stream of another client: %d", r.StatusCode)
	}
	if r := open("10.0.0.9"); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("stream beyond max_streams: %d", r.StatusCode)
	}
	if r := open("unknown"); r.StatusCode != http.StatusBadRequest {
		t.Errorf("X-Forwarded-For: unknown: %d, want 400", r.StatusCode)
	}
	if total, one := s.opts.Streams.Refused(); total != 2 || one != 1 {
		t.Errorf("refused %d (per client %d), want 2 (1)", total, one)
	}
}

// manualTicks makes every stream of f tick when the test says (tickAll),
// and shared events live for an hour: the test's ticks are the ticks.
type manualTicks struct {
	f     *sseFixture
	mu    sync.Mutex
	ticks []chan time.Time
}

func newManualTicks(f *sseFixture) *manualTicks {
	m := &manualTicks{f: f}
	f.srv.newTicker = func() (<-chan time.Time, func()) {
		ch := make(chan time.Time)
		m.mu.Lock()
		m.ticks = append(m.ticks, ch)
		m.mu.Unlock()
		return ch, func() {}
	}
	f.srv.opts.Tick = time.Hour
	return m
}

// open opens a stream and waits for it to take its ticker.
func (m *manualTicks) open(tb testing.TB, query string) *sseStream {
	tb.Helper()
	m.mu.Lock()
	n := len(m.ticks)
	m.mu.Unlock()
	st := openStream(tb, m.f.http, query)
	wait.For(tb, 10*time.Second, "stream open", func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.ticks) == n+1 })
	return st
}

// tickAll makes every open stream run one tick.
func (m *manualTicks) tickAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ch := range m.ticks {
		ch <- time.Now()
	}
}

// TestGatewayListEncodedOncePerTick (review4 F10): N list streams (and N
// delta streams connecting) cost one encoding of the list per tick, and
// receive the same bytes.
func TestGatewayListEncodedOncePerTick(t *testing.T) {
	f := newSSEFixture(t)
	m := newManualTicks(f)
	fillGateways(f.live, 200)
	const n = 8
	var sts []*sseStream
	for range n {
		sts = append(sts, m.open(t, "gateways=list"))
	}
	before := f.srv.opts.Streams.Encodes()
	for range 3 {
		f.publish("gw-x")
		m.tickAll()
		var first string
		for i, st := range sts {
			e := st.nextGateways(t)
			if i == 0 {
				first = e.Data
			} else if e.Data != first {
				t.Fatalf("stream %d got another list", i)
			}
		}
	}
	// one list per tick, and the first tick's assets event (shared too)
	if got := f.srv.opts.Streams.Encodes() - before; got != 3+1 {
		t.Errorf("%d encodings for 3 ticks of %d streams, want one list per tick", got, n)
	}
}

// TestFirstAssetsEventCarriesRestored (review4 F1): the first assets
// event lists every asset of the source, those restored from the state
// bucket that sent nothing since too, right after a start.
func TestFirstAssetsEventCarriesRestored(t *testing.T) {
	f := newSSEFixture(t)
	src := &fleet{}
	for i := range 5 {
		src.assets = append(src.assets, rules.AssetView{Site: "s1", ID: fmt.Sprintf("ac-%d", i), Class: "air_compressor"})
	}
	f.srv.src = src
	st := openStream(t, f.http, "gateways=delta")
	f.tick()
	e := st.next(t, "assets", func(e SSEEvent) bool { return e.Type == "assets" })
	if l := decode[[]AssetOut](t, e); len(l) != 5 {
		t.Errorf("first assets event of %d assets, want 5", len(l))
	}
}

// TestLastEventIDNotPlaced (review4 F4): an id the log cannot place (of
// another process, ahead of the log, malformed) gets resync; one of this
// log's gets the events after it and no resync.
func TestLastEventIDNotPlaced(t *testing.T) {
	f := newSSEFixture(t)
	for _, d := range []string{`{"n":1}`, `{"n":2}`} {
		f.live.mu.Lock()
		f.live.appendEvent("alert", []byte(d))
		f.live.mu.Unlock()
	}
	good := f.live.EventID(1)
	for _, id := range []string{"99999", "abc", "-1", f.live.epoch + "-3", "1-1", f.live.epoch + "-x", "18446744073709551616"} {
		st := openStream(t, f.http, "", "Last-Event-ID", id)
		st.next(t, "resync for "+id, func(e SSEEvent) bool { return e.Type == "resync" })
		st.cancel()
	}
	st := openStream(t, f.http, "", "Last-Event-ID", good)
	e := st.next(t, "the alert after "+good, func(e SSEEvent) bool { return e.Type == "alert" || e.Type == "resync" })
	if e.Type != "alert" || e.ID != f.live.EventID(2) {
		t.Errorf("after %s: %s id %s, want alert %s", good, e.Type, e.ID, f.live.EventID(2))
	}
}

// TestGatewaysEmptyIs400 (review4 F5).
func TestGatewaysEmptyIs400(t *testing.T) {
	f := newSSEFixture(t)
	resp, err := f.http.Client().Get(f.http.URL + "/api/v1/events?gateways=")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body apiError
	_ = json.NewDecoder(bufio.NewReader(resp.Body)).Decode(&body)
	if resp.StatusCode != http.StatusBadRequest || body.Field != "gateways" {
		t.Errorf("gateways=: %d %+v", resp.StatusCode, body)
	}
}

// BenchmarkGatewayListEvent is the cost of one whole-list gateways event
// at MaxGateways: what every gateways=list stream paid per tick with a
// change before the list was shared (review4 F10), and what one tick costs
// for all of them now.
func BenchmarkGatewayListEvent(b *testing.B) {
	live := NewLive(nil)
	fillGateways(live, MaxGateways)
	s := New(&fleet{}, live, Options{})
	b.ReportAllocs()
	for b.Loop() {
		out := &sseWriter{stats: s.opts.Streams}
		s.gwList = sharedEvent{} // each iteration encodes
		s.writeGatewayList(out, 0)
		b.SetBytes(int64(len(out.pending[0])))
	}
}

// TestAssetsEventsEncodedOncePerTick: the assets events after the first
// are encoded once per tick for every stream, whatever its gateways form
// (before, each stream encoded its own: streams x changed assets a tick),
// every stream receives the same bytes, and alert events keep their ids
// (the shared events carry none: a reconnect with the last id is placed).
// A stream that connects later joins: its events are shared from its
// second on.
func TestAssetsEventsEncodedOncePerTick(t *testing.T) {
	f := newSSEFixture(t)
	m := newManualTicks(f)
	var sts []*sseStream
	open := func(query string) { sts = append(sts, m.open(t, query)) }
	tickAll := m.tickAll
	src := &fleet{}
	f.srv.src = src
	publish := func(round, n int) {
		for i := range n {
			id := fmt.Sprintf("m-%d-%d", round, i)
			src.mu.Lock()
			src.assets = append(src.assets, rules.AssetView{Site: "s1", ID: id, Class: "motor"})
			src.mu.Unlock()
			f.publishAsset("gw-1", id)
		}
	}
	alertN := 0
	alertEvent := func() {
		alertN++
		f.live.mu.Lock()
		f.live.appendEvent("alert", fmt.Appendf(nil, `{"n":%d}`, alertN))
		f.live.mu.Unlock()
	}
	const n = 8
	for i := range n {
		open([]string{"gateways=list", "gateways=delta"}[i%2])
	}
	publish(0, 3)
	tickAll() // the first assets event: every asset, shared
	for _, st := range sts {
		st.next(t, "first assets event", func(e SSEEvent) bool { return e.Type == "assets" })
	}
	before := f.srv.opts.Streams.changeEncodes.Load()
	for round := 1; round <= 4; round++ {
		if round == 3 {
			// a new stream, whose first event (every asset, encoded now:
			// Tick is an hour here, not a second) is at another version,
			// joins the others at its second
			f.srv.allAssets = sharedEvent{}
			open("")
			publish(-1, 1) // an event for every stream: each has taken this tick when it is read
			tickAll()
			for _, st := range sts {
				st.next(t, "assets event", func(e SSEEvent) bool { return e.Type == "assets" })
			}
			before = f.srv.opts.Streams.changeEncodes.Load()
		}
		publish(round, 40) // more than 32: the path through Assets()
		alertEvent()
		for i, st := range sts { // the alert, at once, with the stream's id
			a := st.next(t, "the alert", func(e SSEEvent) bool { return e.Type == "alert" || e.Type == "assets" })
			if a.Type != "alert" || a.ID != f.live.EventID(uint64(alertN)) {
				t.Fatalf("round %d stream %d: %s id %q, want alert %s", round, i, a.Type, a.ID, f.live.EventID(uint64(alertN)))
			}
		}
		tickAll()
		var first string
		for i, st := range sts {
			e := st.next(t, "assets event", func(e SSEEvent) bool { return e.Type == "assets" || e.Type == "alert" || e.Type == "resync" })
			if e.Type != "assets" || e.ID != "" {
				t.Fatalf("round %d stream %d: %s event with id %q, want assets without id", round, i, e.Type, e.ID)
			}
			if i == 0 {
				first = e.Data
				got := decode[[]AssetOut](t, e)
				if len(got) != 40 || got[0].ID != fmt.Sprintf("m-%d-0", round) {
					t.Fatalf("round %d: assets event of %d assets, want the 40 changed", round, len(got))
				}
			} else if e.Data != first {
				t.Fatalf("round %d: stream %d got another assets event", round, i)
			}
		}
		if got := f.srv.opts.Streams.changeEncodes.Load() - before; got != 1 {
			t.Errorf("round %d: %d assets encodings for one tick of %d streams, want 1", round, got, len(sts))
		}
		before = f.srv.opts.Streams.changeEncodes.Load()
	}
	// a reconnect with the last id gets no resync: the shared events
	// carry no id
	st := openStream(t, f.http, "", "Last-Event-ID", f.live.EventID(uint64(alertN)))
	alertEvent()
	e := st.next(t, "the next alert", func(e SSEEvent) bool { return e.Type == "alert" || e.Type == "resync" })
	if e.Type != "alert" || e.ID != f.live.EventID(uint64(alertN)) {
		t.Errorf("after reconnect: %s %q, want alert %s", e.Type, e.ID, f.live.EventID(uint64(alertN)))
	}
}

// TestChangeChain: which stream versions an assets event serves, and
// where the next one is built from.
func TestChangeChain(t *testing.T) {
	var c changeChain
	st := &StreamStats{}
	cur := uint64(10)
	var built []uint64
	get := func(v uint64, tick time.Duration) (string, uint64) {
		data, to, _ := c.get(v, tick, &st.changeEncodes, func(from uint64) ([]byte, uint64, bool) {
			built = append(built, from)
			if from == cur {
				return nil, cur, true
			}
			return fmt.Appendf(nil, "(%d,%d]", from, cur), cur, true
		})
		return string(data), to
	}
	for _, s := range []struct {
		v         uint64
		cur       uint64 // the store's version at the call
		data      string
		to        uint64
		buildFrom int64 // -1: none, taken
	}{
		{5, 10, "(5,10]", 10, 5},    // the first stream builds
		{5, 12, "(5,10]", 10, -1},   // one at the same version takes it
		{7, 12, "(5,10]", 10, -1},   // and one inside it (a superset: 6-7 again)
		{10, 20, "(10,20]", 20, 10}, // at its end: the next
		{14, 21, "(10,20]", 20, -1}, // a new stream inside it joins
		{25, 30, "(20,30]", 30, 20}, // a new stream past the head: built from the head's end
		{3, 31, "(3,31]", 31, 3},    // behind every entry: its own backlog
		{3, 32, "(3,31]", 31, -1},   // shared with one at the same version
		{4, 33, "(4,33]", 33, 4},    // not with another
		{20, 34, "(20,30]", 30, -1}, // the chain goes on
		{30, 35, "(30,35]", 35, 30}, // ... from its head's end
		{31, 36, "(30,35]", 35, -1}, // the one that caught up joins it
		{35, 35, "", 35, 35},        // nothing changed: no event
		{35, 40, "(35,40]", 40, 35}, // the next change
		{33, 41, "(30,35]", 35, -1}, // one behind the head takes the chain's entry that serves it
		{40, 41, "(40,41]", 41, 40},
	} {
		cur = s.cur
		built = built[:0]
		data, to := get(s.v, time.Hour)
		want := []uint64{}
		if s.buildFrom >= 0 {
			want = []uint64{uint64(s.buildFrom)}
		}
		if data != s.data || to != s.to || !slices.Equal(built, want) {
			t.Errorf("at %d (store at %d): %q to %d, built from %v; want %q to %d, built from %v", s.v, s.cur, data, to, built, s.data, s.to, want)
		}
	}
	// an entry older than a tick is not taken
	built = built[:0]
	cur = 50
	if data, _ := get(40, time.Nanosecond); data != "(40,50]" || !slices.Equal(built, []uint64{40}) {
		t.Errorf("stale chain: %q built from %v", data, built)
	}
}

// TestGatewayDeltasEncodedOncePerTick: the gateways.delta events are
// encoded once per tick for every delta stream, the same bytes for each
// (before, each stream encoded its own).
func TestGatewayDeltasEncodedOncePerTick(t *testing.T) {
	f := newSSEFixture(t)
	m := newManualTicks(f)
	fillGateways(f.live, 200)
	const n = 6
	var sts []*sseStream
	for range n {
		st := m.open(t, "gateways=delta")
		st.next(t, "snapshot", func(e SSEEvent) bool { return e.Type == "gateways.snapshot" })
		sts = append(sts, st)
	}
	for round := range 3 {
		before := f.srv.opts.Streams.deltaEncodes.Load()
		gw := fmt.Sprintf("gw-new-%d", round) // a new gateway: in the next delta
		f.publish(gw)
		m.tickAll()
		var first string
		for i, st := range sts {
			e := st.nextGateways(t)
			if d := decode[GatewayDeltaEvent](t, e); e.Type != "gateways.delta" || !slices.Contains(ids(d.Changed), gw) {
				t.Fatalf("round %d stream %d: %s %v, want a delta with %s", round, i, e.Type, ids(d.Changed), gw)
			}
			if i == 0 {
				first = e.Data
			} else if e.Data != first {
				t.Fatalf("round %d: stream %d got another delta", round, i)
			}
		}
		if got := f.srv.opts.Streams.deltaEncodes.Load() - before; got != 1 {
			t.Errorf("round %d: %d delta encodings for one tick of %d streams, want 1", round, got, n)
		}
	}
}

// TestSharedDeltasKeepGatewaysOnline: with shared deltas a stream may
// send a delta encoded by another stream up to a tick before its own
// tick (changeChain), so a held last_recv reaches its client up to two
// ticks after its refresh slot. At the shortest threshold
// (MinSilentAfter) two streams, one ticking 900 ms after the other (it
// always sends the delta the first encoded), never call a gateway silent
// that is not, whatever its period (1-15 s), and the last_recv their
// clients hold of a gateway with a newer message is never older than
// gwpublish.go's bound: holdLimit + RefreshInterval + 2 ticks.
func TestSharedDeltasKeepGatewaysOnline(t *testing.T) {
	f := newSSEFixture(t, WithSilentAfter(MinSilentAfter))
	m := newManualTicks(f)
	const n = 300
	period := func(i int) int { return 1 + i%15 } // s
	last := map[string]int64{}
	publish := func(i int) {
		f.publish(gwName(i))
		last[gwName(i)] = f.clock.Load()
	}
	for i := range n {
		publish(i)
	}
	type client struct {
		gwClient
		st     *sseStream
		offset int64 // server clock - the test's clock at arrival
		maxLag int64
	}
	var cs []*client
	for range 2 {
		c := &client{gwClient: gwClient{gws: map[string]GatewayView{}}, st: m.open(t, "gateways=delta")}
		snap := decode[GatewaySnapshotEvent](t, c.st.nextGateways(t))
		c.silentAfter, c.offset = snap.SilentAfterMS, snap.Now-f.clock.Load()
		for _, g := range snap.Gateways {
			c.gws[g.ID] = g
		}
		cs = append(cs, c)
	}
	marker := 0
	tick := func(i int) { // stream i ticks; its client applies what it sent
		m.mu.Lock()
		ch := m.ticks[i]
		m.mu.Unlock()
		ch <- time.Now()
		marker++
		id := fmt.Sprintf("marker-%d", marker)
		f.live.ObserveAlerts([]alert.Alert{{ID: id, Rule: "marker"}})
		for {
			e := cs[i].st.next(t, "tick marker", func(e SSEEvent) bool { return isGateways(e) || e.Type == "alert" })
			if e.Type == "alert" {
				if strings.Contains(e.Data, id) {
					return
				}
				continue
			}
			d := decode[GatewayDeltaEvent](t, e)
			cs[i].offset = d.Now - f.clock.Load()
			for _, g := range d.Changed {
				cs[i].gws[g.ID] = g
			}
		}
	}
	bound := (f.live.holdLimit() + RefreshInterval).Milliseconds() + 2*1000
	check := func(sec, step int) {
		now := f.clock.Load()
		for k, c := range cs {
			for id, g := range c.gws {
				if c.status(id, now+c.offset) == "silent" {
					t.Fatalf("second %d step %d: client %d calls %s silent, its last message %d ms old (threshold %d)",
						sec, step, k, id, now-last[id], c.silentAfter)
				}
				if g.LastRecv != last[id] {
					c.maxLag = max(c.maxLag, now-g.LastRecv)
				}
			}
		}
	}
	for sec := 1; sec <= 45; sec++ {
		for step := range 10 { // 100 ms each; stream 0 ticks at 0, stream 1 at 9
			f.clock.Add(100)
			if step == 0 {
				for i := range n {
					if sec%period(i) == 0 {
						publish(i)
					}
				}
				tick(0)
			}
			if step == 9 {
				tick(1)
			}
			check(sec, step)
		}
	}
	for k, c := range cs {
		if c.maxLag > bound {
			t.Errorf("client %d held a last_recv %d ms old of a gateway with a newer message, bound %d", k, c.maxLag, bound)
		}
	}
	if cs[1].maxLag <= cs[0].maxLag {
		t.Errorf("the later stream's lag %d ms, the first's %d: it did not send the first's deltas", cs[1].maxLag, cs[0].maxLag)
	}
	t.Logf("largest lag of a held last_recv: %d ms (first stream), %d ms (later stream), bound %d", cs[0].maxLag, cs[1].maxLag, bound)
}

// TestStreamReserveForNewClients (review6 F7): once three quarters of
// MaxStreams are open, a client that already holds a stream is refused,
// so clients with none still get their first one; MaxStreams stays the
// limit for all.
func TestStreamReserveForNewClients(t *testing.T) {
	live := NewLive(nil)
	s, hs := streamServer(t, live, &fleet{}, Options{MaxStreams: 8, MaxStreamsPerClient: 16,
		RateLimit: RateLimit{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
	open := func(xff string) (int, string) {
		t.Helper()
		resp := openStreamFrom(t, hs, xff)
		var body apiError
		if resp.StatusCode != http.StatusOK {
			_ = json.NewDecoder(resp.Body).Decode(&body)
		}
		return resp.StatusCode, body.Error
	}
	// one host with two addresses takes 6 of 8: three quarters
	for i := range 6 {
		if code, msg := open("10.0.0." + strconv.Itoa(1+i%2)); code != http.StatusOK {
			t.Fatalf("stream %d of the host: %d %s", i, code, msg)
		}
	}
	for _, xff := range []string{"10.0.0.1", "10.0.0.2"} {
		if code, msg := open(xff); code != http.StatusServiceUnavailable || !strings.Contains(msg, "kept for clients that hold none") {
			t.Errorf("%s beyond three quarters: %d %q, want 503 (reserve)", xff, code, msg)
		}
	}
	if code, msg := open("10.0.0.3"); code != http.StatusOK {
		t.Fatalf("first stream of another client: %d %s", code, msg)
	}
	if code, _ := open("10.0.0.3"); code != http.StatusServiceUnavailable {
		t.Errorf("second stream of that client in the reserve: %d, want 503", code)
	}
	if code, msg := open("10.0.0.4"); code != http.StatusOK {
		t.Fatalf("first stream of a third client: %d %s", code, msg)
	}
	if code, msg := open("10.0.0.5"); code != http.StatusServiceUnavailable || !strings.Contains(msg, "http.max_streams)") {
		t.Errorf("beyond max_streams: %d %q", code, msg)
	}
	if total, one := s.opts.Streams.Refused(); total != 4 || one != 0 {
		t.Errorf("refused %d (per client %d), want 4 (0)", total, one)
	}
}
