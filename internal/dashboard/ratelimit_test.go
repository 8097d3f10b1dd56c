package dashboard

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/history"
)

// countingStore is a HistoryStore that answers at once and counts queries.
type countingStore struct {
	mu   sync.Mutex
	n    int
	down bool // not open (ErrNotOpen)
}

func (c *countingStore) Ready() bool        { return !c.down }
func (c *countingStore) Mode() history.Mode { return history.Mode("partitions") }
func (c *countingStore) Series(context.Context, history.SeriesQuery) (history.Series, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return history.Series{}, nil
}
func (c *countingStore) Alerts(context.Context, history.AlertQuery) ([]history.AlertRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return nil, nil
}
func (c *countingStore) KPIs(context.Context, history.KPIQuery) ([]history.KPIPoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return nil, nil
}

// countingCommander is a Commander whose audit trail answers at once,
// empty, and counts its reads; it sends nothing.
type countingCommander struct{ n int }

func (c *countingCommander) Send(context.Context, CommandRequest) (*command.Result, error) {
	return nil, errors.New("no sends")
}
func (c *countingCommander) Audit(context.Context, string, string, uint64, int) (AuditPage, error) {
	c.n++
	return AuditPage{}, nil
}
func (c *countingCommander) Sends() bool                                           { return false }
func (c *countingCommander) Refused(context.Context, CommandRequest, string) error { return nil }

// Review (session 6): the audit trail and the history queries, each a read
// of the audit stream or of PostgreSQL, had no rate limit: one client could
// keep the database busy. Each client has a bucket now: beyond it 429 with
// Retry-After, counted; another client is not affected; a trusted proxy's
// X-Forwarded-For names the client, anyone else's is ignored; the bucket
// refills with time.
func TestRateLimitPerClient(t *testing.T) {
	now := time.Date(2026, 11, 30, 16, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	limited := map[string]int{}
	store := &countingStore{}
	rl := RateLimit{PerSecond: 0.5, Burst: 3, Now: clock, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")},
		OnLimited: func(e string) { mu.Lock(); limited[e]++; mu.Unlock() }}
	audits := &countingCommander{}
	srv := New(&fleet{}, NewLive(nil), Options{History: store, Commands: audits, RateLimit: rl})
	get := func(path, from, xff string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = from + ":40000"
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	series := "/api/v1/history/series?site=s1&asset=a1&signal=p"
	for i := range 3 {
		if rec := get(series, "192.0.2.1", ""); rec.Code != http.StatusOK {
			t.Fatalf("request %d within the burst: %d %s", i, rec.Code, rec.Body)
		}
	}
	rec := get("/api/v1/history/alerts", "192.0.2.1", "")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "2" ||
		!strings.Contains(rec.Body.String(), "rate limit: at most 0.5 history requests per second per client (burst 3); retry in 2 s") {
		t.Fatalf("4th request: %d Retry-After %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if store.n != 3 {
		t.Fatalf("%d queries reached the store, want 3", store.n)
	}
	// another client has its own bucket; a header from an untrusted peer
	// does not make it someone else
	if rec := get(series, "192.0.2.2", ""); rec.Code != http.StatusOK {
		t.Fatalf("another client: %d", rec.Code)
	}
	if rec := get(series, "192.0.2.1", "198.51.100.7"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("spoofed X-Forwarded-For from an untrusted peer: %d", rec.Code)
	}
	// behind the trusted proxy each client is counted apart
	for i := range 3 {
		if rec := get(series, "10.9.0.1", "198.51.100.7, 10.9.0.2"); rec.Code != http.StatusOK {
			t.Fatalf("client behind the proxy, request %d: %d", i, rec.Code)
		}
	}
	if rec := get(series, "10.9.0.1", "198.51.100.7, 10.9.0.2"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("client behind the proxy beyond its burst: %d", rec.Code)
	}
	if rec := get(series, "10.9.0.1", "198.51.100.8"); rec.Code != http.StatusOK {
		t.Fatalf("another client behind the proxy: %d", rec.Code)
	}
	// the audit trail is limited the same way
	for range 3 {
		get("/api/v1/assets/s1/a1/audit", "192.0.2.3", "")
	}
	if rec := get("/api/v1/assets/s1/a1/audit", "192.0.2.3", ""); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("audit beyond the burst: %d", rec.Code)
	}
	if audits.n != 3 {
		t.Fatalf("%d reads of the audit stream, want 3", audits.n)
	}
	// cheap endpoints are not limited
	for range 10 {
		if rec := get("/api/v1/history/status", "192.0.2.1", ""); rec.Code != http.StatusOK {
			t.Fatalf("status: %d", rec.Code)
		}
	}
	mu.Lock()
	if limited["history"] != 3 || limited["audit"] != 1 {
		t.Errorf("counted %v, want history 3, audit 1", limited)
	}
	now = now.Add(2 * time.Second) // one token back
	mu.Unlock()
	if rec := get(series, "192.0.2.1", ""); rec.Code != http.StatusOK {
		t.Fatalf("after the refill: %d", rec.Code)
	}
}

// The limiter's table is bounded: beyond MaxRateClients active clients
// new ones share one bucket; full (idle) buckets are dropped for room.
func TestRateLimitClientsBounded(t *testing.T) {
	now := time.Date(2026, 11, 30, 16, 0, 0, 0, time.UTC)
	l := newLimiter(RateLimit{PerSecond: 1, Burst: 1, Now: func() time.Time { return now }})
	for i := range MaxRateClients {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("client %d refused", i)
		}
	}
	if ok, _ := l.allow(netip.MustParseAddr("192.0.2.1")); !ok {
		t.Fatal("first new client beyond the bound: refused (the shared bucket is full)")
	}
	if ok, _ := l.allow(netip.MustParseAddr("192.0.2.2")); ok {
		t.Fatal("second new client beyond the bound got a bucket of its own")
	}
	if len(l.clients) != MaxRateClients {
		t.Fatalf("%d clients held", len(l.clients))
	}
	now = now.Add(2 * time.Second) // every bucket full again: dropped for room
	if ok, _ := l.allow(netip.MustParseAddr("192.0.2.3")); !ok || len(l.clients) != 1 {
		t.Fatalf("after the idle time: allowed %v, %d clients held", ok, len(l.clients))
	}
}

// IPv6 clients are keyed by their /64 (review2 F4): the addresses of one
// /64 share a bucket, another /64 has its own. IPv4 is per address.
func TestRateLimitIPv6Per64(t *testing.T) {
	l := newLimiter(RateLimit{PerSecond: 1, Burst: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	key := func(remote, xff string) netip.Addr {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		k, err := clientKey(r, l.cfg.TrustedProxies)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	a, b := key("[2001:db8:1:2::1]:4000", ""), key("[2001:db8:1:2:ffff::9]:4001", "")
	c, d := key("127.0.0.1:5000", "2001:db8:1:2::77"), key("127.0.0.1:5000", "2001:db8:1:3::1")
	if a != b || a != c || a == d || a != netip.MustParseAddr("2001:db8:1:2::") {
		t.Fatalf("keys %v %v %v %v: want one per /64", a, b, c, d)
	}
	if ok, _ := l.allow(a); !ok {
		t.Fatal("first request refused")
	}
	if ok, _ := l.allow(b); ok {
		t.Fatal("another address of the same /64 got a bucket of its own")
	}
	if ok, _ := l.allow(d); !ok {
		t.Fatal("another /64 refused")
	}
	if x, y := key("192.0.2.1:1", ""), key("192.0.2.2:1", ""); x == y || x != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("IPv4 keys %v %v: want one per address", x, y)
	}
	if x := key("[::ffff:192.0.2.1]:1", ""); x != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("IPv4-mapped key %v", x)
	}
}

// The limit is on the reads (the audit stream, PostgreSQL): a request
// answered without one costs no token. A collector without an audit
// stream answers the audit trail 503, and a request with bad parameters
// gets 400; before, each of them took a token, so a dashboard polling the
// audit of a collector without commands used up its client's history
// charts. Once the client's token is spent on a read, the next read gets
// 429, not the 503 or 400 answers that do no read.
func TestRateLimitTakesTokensOnlyForReads(t *testing.T) {
	now := time.Date(2026, 11, 30, 16, 0, 0, 0, time.UTC)
	limited := 0
	store := &countingStore{}
	srv := New(&fleet{}, NewLive(nil), Options{History: store,
		RateLimit: RateLimit{PerSecond: 0.01, Burst: 1, Now: func() time.Time { return now }, OnLimited: func(string) { limited++ }}})
	get := func(path string) int {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr = "192.0.2.7:40000"
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec.Code
	}
	const series = "/api/v1/history/series?site=s1&asset=a1&signal=p"
	for i := range 3 {
		if code := get("/api/v1/assets/s1/a1/audit"); code != http.StatusServiceUnavailable {
			t.Fatalf("audit without an audit stream, request %d: %d, want 503", i, code)
		}
		if code := get("/api/v1/history/series?site=s1&asset=a1"); code != http.StatusBadRequest {
			t.Fatalf("history without a signal, request %d: %d, want 400", i, code)
		}
		if code := get("/api/v1/assets/s1/a1/audit?limit=0"); code != http.StatusBadRequest {
			t.Fatalf("audit with a bad limit, request %d: %d, want 400", i, code)
		}
	}
	if code := get(series); code != http.StatusOK {
		t.Fatalf("the first read after answers without one: %d, want 200 (a token was taken by them)", code)
	}
	if code := get(series); code != http.StatusTooManyRequests {
		t.Fatalf("the second read: %d, want 429", code)
	}
	if code := get("/api/v1/assets/s1/a1/audit"); code != http.StatusServiceUnavailable {
		t.Fatalf("audit without an audit stream beyond the limit: %d, want 503", code)
	}
	if store.n != 1 || limited != 1 {
		t.Fatalf("%d queries reached the store, %d refused; want 1 and 1", store.n, limited)
	}
	// a history database not open yet: 503 without a read, whatever the bucket
	store.down = true
	for i := range 3 {
		if code := get(series); code != http.StatusServiceUnavailable {
			t.Fatalf("history not open, request %d: %d, want 503", i, code)
		}
	}
	if store.n != 1 || limited != 1 {
		t.Fatalf("%d queries reached the store, %d refused; want 1 and 1", store.n, limited)
	}
}

// TestForwardedForWithPort (review4 F8): X-Forwarded-For entries with a
// port or brackets name their address; an entry that is no address is an
// error (the request gets 400), never the proxy's own bucket.
func TestForwardedForWithPort(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	for _, c := range []struct{ xff, want string }{
		{"10.0.0.7:1234", "10.0.0.7"},
		{"10.0.0.7", "10.0.0.7"},
		{" [2001:db8::1]:5678", "2001:db8::"},
		{"[2001:db8::1]", "2001:db8::"},
		{"10.0.0.8, 127.0.0.1:80", "10.0.0.8"},
		{"[::ffff:10.0.0.9]:443", "10.0.0.9"},
		{"garbage", ""},
		{"10.0.0.7:port", ""},
		{"unknown, 10.0.0.1", "10.0.0.1"}, // only the hops up to the client are read
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "127.0.0.1:4000"
		r.Header.Set("X-Forwarded-For", c.xff)
		k, err := clientKey(r, trusted)
		if c.want == "" {
			if err == nil || !strings.Contains(err.Error(), "not an IP address") {
				t.Errorf("%q: key %v err %v, want an error", c.xff, k, err)
			}
			continue
		}
		if err != nil || k != netip.MustParseAddr(c.want) {
			t.Errorf("%q: key %v err %v, want %s", c.xff, k, err, c.want)
		}
	}
}
