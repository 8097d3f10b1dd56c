package dashboard

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit limits the API's expensive requests per client (docs/api.md,
// "Rate limits"): the command audit trail (a read of the audit stream) and
// the PostgreSQL history queries. Each client has a token bucket of Burst
// requests refilled at PerSecond (golang.org/x/time/rate); a request
// beyond it gets 429 with Retry-After. PerSecond 0 turns the limit off.
type RateLimit struct {
	PerSecond float64
	Burst     int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed: a request from one of them is the client's that the header
	// names last before the trusted hops. Anyone else's header is ignored
	// (a client could name any address), so the client is its connection's
	// address.
	TrustedProxies []netip.Prefix
	// OnLimited is called with the endpoint's name (audit, history) for
	// every refused request (the collector counts them in
	// smelter_collector_http_rate_limited_total).
	OnLimited func(endpoint string)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// MaxRateClients bounds the clients the limiter keeps a bucket for. A
// bucket that refilled completely is dropped (it is the same as a new
// one), so only clients active within the last Burst/PerSecond seconds
// count; beyond the bound the clients not yet known share one bucket, so
// many addresses cannot buy unlimited requests or memory.
const MaxRateClients = 10000

// limiter holds one bucket per client.
type limiter struct {
	cfg RateLimit

	mu       sync.Mutex
	clients  map[netip.Addr]*rate.Limiter
	overflow *rate.Limiter
}

func newLimiter(cfg RateLimit) *limiter {
	if cfg.PerSecond <= 0 {
		return nil
	}
	if cfg.Burst < 1 {
		cfg.Burst = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &limiter{cfg: cfg, clients: map[netip.Addr]*rate.Limiter{},
		overflow: rate.NewLimiter(rate.Limit(cfg.PerSecond), cfg.Burst)}
}

// bucket returns the client's bucket; l.mu is held.
func (l *limiter) bucket(c netip.Addr, now time.Time) *rate.Limiter {
	if b, ok := l.clients[c]; ok {
		return b
	}
	if len(l.clients) >= MaxRateClients {
		for k, b := range l.clients { // a full bucket is a new one: drop it
			if b.TokensAt(now) >= float64(l.cfg.Burst) {
				delete(l.clients, k)
			}
		}
	}
	if len(l.clients) >= MaxRateClients {
		return l.overflow
	}
	b := rate.NewLimiter(rate.Limit(l.cfg.PerSecond), l.cfg.Burst)
	l.clients[c] = b
	return b
}

// allow takes a token of client c's bucket; when none is left it returns
// false and how long until one is.
func (l *limiter) allow(c netip.Addr) (bool, time.Duration) {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.bucket(c, now).ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// clientKey is the key a request is counted against (rate limits, the
// event streams' per-client cap): its address (see clientAddr), an IPv6
// address cut to its /64 (review2 F4: one host holds a /64, RFC 4291's
// interface-id split, and per /128 it could fill every bucket,
// MaxRateClients, alone). The error names an X-Forwarded-For entry that
// is not an address.
func clientKey(r *http.Request, trusted []netip.Prefix) (netip.Addr, error) {
	a, err := clientAddr(r, trusted)
	if a.Is6() {
		p, _ := a.Prefix(64) // cannot fail for an IPv6 address
		return p.Addr(), err
	}
	return a, err
}

// clientAddr is the address a request is counted against: its
// connection's, or, from a trusted proxy, the last address of
// X-Forwarded-For that is not itself a trusted proxy. An entry may carry
// a port (1.2.3.4:5678, [2001:db8::1]:5678, as some load balancers write
// it) or brackets; an entry that is not an address at all (unknown, an
// obfuscated RFC 7239 identifier) is an error (review4 F8): keying the
// request by the proxy instead would put every such client in one bucket.
func clientAddr(r *http.Request, trusted []netip.Prefix) (netip.Addr, error) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, perr := netip.ParseAddr(host)
	if perr != nil {
		return netip.Addr{}, nil //nolint:nilerr // not a client's doing (a unix socket, a test): one bucket for whatever this is
	}
	addr = addr.Unmap()
	if !isTrusted(addr, trusted) {
		return addr, nil
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			return addr, fmt.Errorf("entry %q is not an IP address (with or without a port)", clip(strings.TrimSpace(hops[i]), 64))
		}
		if !isTrusted(a, trusted) {
			return a, nil
		}
	}
	return addr, nil
}

// parseHop parses an X-Forwarded-For entry: an address, an address with a
// port, or a bracketed IPv6 address with or without a port.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// take takes a token of the request's client for a read of endpoint
// (audit, history), called by a handler right before the read: a request
// answered without one (400 for its parameters, 503 when the collector
// has no audit stream) costs no token, since the limit is on the reads
// (docs/api.md, "Rate limits"). Beyond the client's rate it answers 429
// with Retry-After (whole seconds, at least 1), counts the refusal under
// endpoint and returns false: the handler returns without the read.
func (s *Server) take(w http.ResponseWriter, r *http.Request, endpoint string) bool {
	l := s.limit
	if l == nil {
		return true
	}
	c, err := clientKey(r, l.cfg.TrustedProxies)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "X-Forwarded-For", err.Error())
		return false
	}
	ok, wait := l.allow(c)
	if ok {
		return true
	}
	if l.cfg.OnLimited != nil {
		l.cfg.OnLimited(endpoint)
	}
	secs := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeErr(w, http.StatusTooManyRequests, "", fmt.Sprintf("rate limit: at most %g %s requests per second per client (burst %d); retry in %d s",
		l.cfg.PerSecond, endpoint, l.cfg.Burst, secs))
	return false
}
