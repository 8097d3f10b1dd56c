package dashboard

import "time"

// What an event stream's gateway deltas carry (gateways=delta). A change a
// user acts on (the gateway added, its site, its assets, a birth or death,
// its reported status, offline to online, its clock marked or no longer
// marked ahead or behind) is published at once: the next
// tick of every stream sends it. A change of counters and times only (a
// batch: last_seq, batches, last_ts_gw, last_recv, clock_offset_ms,
// clock_ahead_total) is held and published at
// the gateway's refresh slot, at most once per RefreshInterval: a fleet
// whose gateways all publish every second costs a stream about n x
// Tick/RefreshInterval entries a tick, not n. The slots are spread over the
// interval (gateways take them in turn as they appear), so the fleet does
// not refresh all in one tick.
//
// Silence. A client calls a gateway silent when server time - last_recv
// exceeds the store's SilentAfter (DefaultSilentAfter, 30 s, or the
// collector's http.gateway_silent_after, at least MinSilentAfter);
// holding last_recv must never let it do so for a gateway that keeps
// publishing. A held change waits at most RefreshInterval for its slot,
// then up to a stream tick (Options.Tick, 1 s) for the next delta to be
// built, and up to another for a stream to take that shared delta
// (changeChain: a delta is taken up to a tick after its encoding), carrying
// a last_recv no older than the held message. A change is held only when
// the last_recv its clients hold is at most holdLimit old; else it goes at
// once. So between two deltas the last_recv a client holds for a
// publishing gateway is at most holdLimit + RefreshInterval + 2 ticks old
// (15 + 5 + 2 = 22 s at the default 30 s; 17 s at the minimum 20 s) plus
// the event's transit (which delays the client's estimate of the server's
// clock, never advances it), inside SilentAfter: it never turns silent
// while messages arrive, and one that stops turns silent when its last
// message is SilentAfter old, as on the server (that message was sent
// within 22 s of it). TestGatewayDeltaRefresh checks both over a stretch
// of simulated time (one stream: one tick).

// RefreshInterval is the longest a gateway's counters and last_recv are
// held back from event stream deltas (gateways=delta) when nothing else
// about it changed: a client's counters lag by up to it (plus a tick).
// Sent to clients as refresh_ms in gateways.snapshot.
const RefreshInterval = 5 * time.Second

// refreshSlots is the number of time-wheel buckets RefreshInterval is cut
// into (100 ms each).
const refreshSlots = 50

// holdLimit is the age of the last_recv a gateway's clients hold beyond
// which its next change is published at once instead of held (see above):
// half the store's silence threshold.
func (l *Live) holdLimit() time.Duration { return l.silentAfter / 2 }

const slotMS = int64(RefreshInterval/time.Millisecond) / refreshSlots

// The lists a gateway is in, each through its own links.
const (
	byRecency = iota // Live.recent: last message, newest first (eviction)
	byPublish        // Live.published: last publication, newest first (deltas)
	inWheel          // Live.wheel[slot]: a held change waits for its slot
	nLists
)

type gwLink struct{ prev, next *gatewayLive }

// gwList is a doubly linked list of gateways through their links[k],
// front first.
type gwList struct {
	front, back *gatewayLive
	k           int
}

func (ls *gwList) pushFront(g *gatewayLive) {
	ln := &g.links[ls.k]
	ln.prev, ln.next = nil, ls.front
	if ls.front != nil {
		ls.front.links[ls.k].prev = g
	} else {
		ls.back = g
	}
	ls.front = g
}

// remove takes g out of the list; a gateway not in it is left alone.
func (ls *gwList) remove(g *gatewayLive) {
	ln := &g.links[ls.k]
	switch {
	case ln.prev != nil:
		ln.prev.links[ls.k].next = ln.next
	case ls.front == g:
		ls.front = ln.next
	default:
		return
	}
	if ln.next != nil {
		ln.next.links[ls.k].prev = ln.prev
	} else {
		ls.back = ln.prev
	}
	*ln = gwLink{}
}

// gatewayLook is what a gateway's row shows besides its counters and
// times: a change of it is published at once.
type gatewayLook struct {
	site           string
	assets         int
	births, deaths uint64
	lastDeath      string
	statusKnown    bool
	online         bool   // reported
	offline        bool   // shown offline
	clockSkew      string // its clock marked ahead or behind (gwclock.go)
}

func (g *gatewayLive) look(clockTol time.Duration) gatewayLook {
	look := gatewayLook{site: g.site, assets: len(g.assets), births: g.births, deaths: g.deaths, lastDeath: g.lastDeath,
		statusKnown: g.statusKnown, online: g.online, offline: g.offline()}
	if !look.offline { // an offline gateway's clock is not marked (GatewayView.ClockSkew)
		look.clockSkew = g.clk.skew(clockTol)
	}
	return look
}

// settle publishes gateway g's change at once when it shows (or g was
// never published) or when its clients' last_recv is older than
// holdLimit, and holds it for g's refresh slot otherwise. l.mu is held.
func (l *Live) settle(g *gatewayLive, now int64) {
	if g.pubVer == 0 || now-g.pubRecv > l.holdLimit().Milliseconds() || g.look(l.clockTol) != g.pubLook {
		l.publish(g)
		return
	}
	if !g.held {
		g.held = true
		l.wheel[g.slot].pushFront(g)
	}
}

// publish makes g's current state the next thing streams send of it.
func (l *Live) publish(g *gatewayLive) {
	if g.held {
		g.held = false
		l.wheel[g.slot].remove(g)
	}
	l.ver++
	g.pubVer, g.pubRecv, g.pubLook = l.ver, g.lastRecv, g.look(l.clockTol)
	l.published.remove(g)
	l.published.pushFront(g)
}

// advance publishes the held changes whose slots came up to wall time now
// (ms): the buckets passed since the last call, each once (all of them
// after a pause of RefreshInterval or more, or a clock set back).
func (l *Live) advance(now int64) {
	cur := now / slotMS
	from := max(l.wheelNext, cur-refreshSlots+1)
	if cur+1 < l.wheelNext { // the clock went back: wait for no slot
		from = cur - refreshSlots + 1
	}
	for a := from; a <= cur; a++ {
		b := &l.wheel[a%refreshSlots]
		for b.front != nil {
			l.publish(b.front)
		}
	}
	l.wheelNext = cur + 1
}
