package modbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/wait"
)

// sharedUnits starts the sources of units on one link to addr (one group
// each, every address its own request) and returns their recorders and a
// function that stops them all.
func sharedUnits(t *testing.T, pool *Pool, tr Transport, addr string, units []sharedUnit) ([]*recorder, func()) {
	t.Helper()
	recs := make([]*recorder, len(units))
	srcs := make([]*Source, len(units))
	for i, u := range units {
		cfg := testConfig(tr, addr, u.unit)
		cfg.MaxGap = 0
		if u.cfg != nil {
			u.cfg(&cfg)
		}
		g := Group{Interval: u.interval, Points: regs(Uint16, u.addrs...)}
		want := map[int]float64{}
		for j, a := range u.addrs {
			g.Index = append(g.Index, j)
			want[j] = holdingValue(a)
		}
		var err error
		if srcs[i], err = pool.Source(u.id, cfg, []Group{g}); err != nil {
			t.Fatal(err)
		}
		recs[i] = &recorder{t: t, want: want}
	}
	// every unit is on the link before the first read
	var stops []func()
	for i, src := range srcs {
		stops = append(stops, recs[i].run(src))
	}
	return recs, func() {
		for _, stop := range stops {
			stop()
		}
	}
}

type sharedUnit struct {
	id       string
	unit     uint8
	interval time.Duration
	addrs    []uint16
	cfg      func(*Config)
}

// slowUnitServer starts a Modbus TCP server whose unit 1 answers after
// delay (every other unit at once) and an empty pool.
func slowUnitServer(t *testing.T, delay time.Duration) (*modbustest.Bank, *modbustest.Server, *Pool) {
	t.Helper()
	bank := modbustest.NewBank()
	fillBank(bank)
	srv := modbustest.StartServer(t, bank)
	bank.SetUnitDelay(1, delay)
	pool := NewPool(testLogger(t), nil)
	t.Cleanup(func() { _ = pool.Close() })
	return bank, srv, pool
}

func overran(c sample.Cycle) bool { return c.Duration > c.Interval }

// TestSharedLinkTurns: a slow unit that overruns its interval every time
// (four requests of 60 ms each, every 100 ms) and a fast unit on one
// connection. The fast unit reads its whole group in one turn: none of the
// slow unit's requests comes between two of its requests, however long
// the slow unit has been reading back to back. Before, the connection's
// semaphore served requests first come, first served: the slow unit, always
// queued again at once, got every other request, so each of the fast unit's
// requests waited for one of its 60 ms requests and the fast unit overran too.
func TestSharedLinkTurns(t *testing.T) {
	bank, srv, pool := slowUnitServer(t, 60*time.Millisecond)
	fast := []uint16{10, 60, 110, 160}
	recs, stop := sharedUnits(t, pool, TCP, srv.Addr, []sharedUnit{
		{"slow", 1, 100 * time.Millisecond, []uint16{0, 50, 100, 150}, nil},
		{"fast", 2, 100 * time.Millisecond, fast, nil},
	})
	wait.For(t, 20*time.Second, "8 cycles of the fast unit while the slow one reads", func() bool {
		return len(recs[1].snapshot()) >= 8
	})
	stop()
	reqs := bank.Requests()
	// Until the slow unit has used the link more than the fast one (its
	// first request), the fast unit rightly lets it go first.
	from := slices.IndexFunc(reqs, func(r modbustest.Request) bool { return r.Unit == 1 })
	cycles := 0
	for i, r := range reqs {
		if i <= from || r.Unit != 2 || r.Address != fast[0] {
			continue
		}
		var got []string
		for j := i; j < len(reqs) && j < i+len(fast); j++ {
			got = append(got, fmt.Sprintf("unit %d @%d", reqs[j].Unit, reqs[j].Address))
		}
		if len(got) < len(fast) {
			break // cut short by the end of the test
		}
		want := fmt.Sprintf("[unit 2 @%d unit 2 @%d unit 2 @%d unit 2 @%d]", fast[0], fast[1], fast[2], fast[3])
		if g := "[" + strings.Join(got, " ") + "]"; g != want {
			t.Errorf("requests from the fast unit's cycle on: %s, want its four requests in a row", g)
		}
		cycles++
	}
	if cycles < 5 {
		t.Fatalf("%d complete cycles of the fast unit in the request log", cycles)
	}
	slow := 0
	for _, r := range reqs {
		if r.Unit == 1 {
			slow++
		}
	}
	if slow < 8 {
		t.Fatalf("the slow unit sent %d requests meanwhile: it must keep reading", slow)
	}
}

// TestSharedLinkOverrunNamesTheBusyUnit: a unit whose one request takes
// 250 ms (read every second: it fits its interval) and a fast unit read
// every 100 ms share a connection. The fast unit's cycles that overrun
// waited for the slow unit's request: they name the slow unit as the one
// that used the link, not the fast unit itself; the slow unit's cycles
// name the slow unit. (A fast cycle may still name itself when its own
// exchanges took most of it: a loaded machine; then they took a good part
// of its interval.)
func TestSharedLinkOverrunNamesTheBusyUnit(t *testing.T) {
	_, srv, pool := slowUnitServer(t, 250*time.Millisecond)
	recs, stop := sharedUnits(t, pool, TCP, srv.Addr, []sharedUnit{
		{"slow", 1, time.Second, []uint16{0}, nil},
		{"fast", 2, 100 * time.Millisecond, []uint16{10, 60}, nil},
	})
	wait.For(t, 20*time.Second, "3 overruns of the fast unit naming the slow unit", func() bool {
		n := 0
		for _, c := range recs[1].snapshot() {
			if overran(c) && c.LinkBusiest == "slow" && c.LinkBusiestTime > 0 {
				n++
			}
		}
		return n >= 3
	})
	stop()
	for _, c := range recs[1].snapshot() {
		if overran(c) && c.LinkBusiest != "slow" && (c.LinkBusiest != "fast" || c.LinkBusiestTime < c.Interval/2) {
			t.Errorf("fast unit's cycle took %v of its %v: LinkBusiest %q (%v), want the slow unit",
				c.Duration, c.Interval, c.LinkBusiest, c.LinkBusiestTime)
		}
	}
	for _, c := range recs[0].snapshot() {
		if c.LinkBusiest != "slow" {
			t.Errorf("slow unit's cycle (%v): LinkBusiest %q (%v), want itself", c.Duration, c.LinkBusiest, c.LinkBusiestTime)
		}
	}
}

// TestSilenceWaitChargedToTheFailingUnit: on an RTU line, after a unit's
// request timed out, the next request waits for the line to fall silent
// (its late reply included). That wait is the failing unit's doing: a
// fast unit whose cycle paid for it names the failing unit as the one that
// used the link, not itself.
func TestSilenceWaitChargedToTheFailingUnit(t *testing.T) {
	_, srv, pool := slowUnitServer(t, 150*time.Millisecond) // after the 100 ms timeout: a late reply
	br := modbustest.StartBridge(t, srv.Addr, modbustest.RTU)
	short := func(c *Config) {
		c.Timeout = 100 * time.Millisecond
		c.Silence = 200 * time.Millisecond
	}
	recs, stop := sharedUnits(t, pool, RTUOverTCP, br.Addr, []sharedUnit{
		{"late", 1, 100 * time.Millisecond, []uint16{0}, short},
		{"fast", 2, 100 * time.Millisecond, []uint16{10}, short},
	})
	// The fast unit's cycles much longer than its own exchange, after the
	// end of the late unit's first timeout (connected, the connect's wait,
	// nobody's doing, over), waited for the silence after a timeout.
	paying := func() []sample.Cycle {
		var first time.Time
		for _, c := range recs[0].snapshot() {
			if errors.Is(c.Err, StatusTimeout) {
				first = c.Start.Add(c.Duration)
				break
			}
		}
		var out []sample.Cycle
		for _, c := range recs[1].snapshot() {
			if !first.IsZero() && c.Start.After(first) && c.Duration >= 150*time.Millisecond {
				out = append(out, c)
			}
		}
		return out
	}
	wait.For(t, 20*time.Second, "3 cycles of the fast unit that waited for a silent line", func() bool {
		return len(paying()) >= 3
	})
	stop()
	for _, c := range paying() {
		if c.LinkBusiest != "late" {
			t.Errorf("fast unit's cycle took %v (err %v): LinkBusiest %q (%v), want the late unit", c.Duration, c.Err, c.LinkBusiest, c.LinkBusiestTime)
		}
	}
}

// TestTurnsCancelWhileWaiting: a device that stops waiting for its turn
// (its context ends) leaves the queue, and one whose turn came just as it
// stopped passes the turn on: the link is never left held by nobody.
func TestTurnsCancelWhileWaiting(t *testing.T) {
	var tr turns
	a, b := tr.join("a"), tr.join("b")
	free := func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.holder == nil && len(tr.waiting) == 0
	}
	waiting := func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.waiting) == 1
	}
	for i := range 200 {
		if err := tr.acquire(t.Context(), a); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- tr.acquire(ctx, b) }()
		wait.For(t, 5*time.Second, "b waiting", waiting)
		if i == 0 {
			cancel() // b gives up while a holds the link
		} else {
			go cancel() // b gives up as a hands it the link
		}
		tr.release(a)
		err := <-done
		cancel()
		switch {
		case err == nil:
			tr.release(b)
		case !errors.Is(err, StatusCanceled):
			t.Fatalf("acquire = %v", err)
		}
		if !free() {
			t.Fatalf("round %d: the link is held or waited for after both gave it up", i)
		}
	}
}

// BenchmarkSharedLinkTCP: four units behind one Modbus TCP address (one
// connection), each read by its own goroutine as their pollers do; an op
// is one read of one unit (one request of 10 registers).
func BenchmarkSharedLinkTCP(b *testing.B) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(b, bank)
	pool := NewPool(nil, nil)
	b.Cleanup(func() { _ = pool.Close() })
	var readers []*reader
	for unit := uint8(1); unit <= 4; unit++ {
		cfg := Config{Transport: TCP, Address: srv.Addr, UnitID: unit}
		cfg.SetDefaults()
		plan, err := NewPlan(regs(Uint16, seq(0, 10, 1)...), cfg)
		if err != nil {
			b.Fatal(err)
		}
		readers = append(readers, newReader(pool, fmt.Sprintf("unit-%d", unit), cfg, plan))
	}
	var next atomic.Int32
	b.SetParallelism(2) // 4 goroutines on 2 cores
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := readers[int(next.Add(1)-1)%len(readers)]
		ctx := context.Background()
		for pb.Next() {
			r.Read(ctx)
			if !isGood(r.out[0]) {
				b.Error(r.res.err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
}

// TestProgressWhileWaitingForTheLink: a device that holds the link or
// waits for it sees the link's progress (a turn granted, an exchange's
// marks); a device doing neither sees none (zero), nor does one once its
// turn ended. The gateway's stall watch relies on both: a read queued
// behind other units' timeouts is alive, a device stuck elsewhere is not.
func TestProgressWhileWaitingForTheLink(t *testing.T) {
	var tr turns
	a, b, c := tr.join("a"), tr.join("b"), tr.join("c")
	if !tr.progress(a).IsZero() {
		t.Fatal("progress before any turn")
	}
	if err := tr.acquire(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if tr.progress(a).IsZero() {
		t.Fatal("the holder sees no progress")
	}
	got := make(chan error, 1)
	go func() { got <- tr.acquire(context.Background(), b) }()
	wait.For(t, 10*time.Second, "b waiting, seeing the link's progress", func() bool { return !tr.progress(b).IsZero() })
	p0 := tr.progress(b)
	wait.For(t, 10*time.Second, "the holder's marks seen by the waiter", func() bool {
		tr.mark()
		return tr.progress(b).After(p0)
	})
	if !tr.progress(c).IsZero() {
		t.Error("a device neither holding nor waiting sees progress")
	}
	tr.release(a)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if !tr.progress(a).IsZero() || tr.progress(b).IsZero() {
		t.Errorf("after the hand-over: a %v (want zero), b %v (want set)", tr.progress(a), tr.progress(b))
	}
	tr.release(b)
}

// TestProgressBound: a Source's progress bound is its link's longest wait:
// the timeout on Modbus TCP, timeout + 11 x silence + t3.5 on RTU.
func TestProgressBound(t *testing.T) {
	pool := NewPool(nil, nil)
	defer pool.Close()
	for _, tc := range []struct {
		cfg  Config
		want time.Duration
	}{
		{Config{Transport: TCP, Address: "127.0.0.1:1", Timeout: 2 * time.Second}, 2 * time.Second},
		{Config{Transport: RTUOverTCP, Address: "127.0.0.1:2", Timeout: time.Second, Silence: 100 * time.Millisecond}, 2100 * time.Millisecond},
		{Config{Transport: RTU, Address: "/dev/null", Timeout: time.Second, Silence: 100 * time.Millisecond, Serial: SerialConfig{Baud: 9600}},
			2100*time.Millisecond + t35(9600)},
	} {
		tc.cfg.SetDefaults()
		src, err := pool.Source("d-"+string(tc.cfg.Transport), tc.cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		last, bound := src.Progress()
		if !last.IsZero() || bound != tc.want {
			t.Errorf("%s: Progress() = %v, %v; want zero, %v", tc.cfg.Transport, last, bound, tc.want)
		}
	}
}

// TestTurnsHealthyBehindSilentUnits: units that fall silent together come
// due at the same tick of the pool's grid as a healthy device on their
// link, all back from idle, so levelled at the floor: the healthy device's
// read waits for one request of each silent unit (the one in flight, then
// the ones queued before it), each timing out on a real link: k x step
// with k silent units, the wait in the gap validate's slow-death warning
// gives and births announce (sharedGap).
func TestTurnsHealthyBehindSilentUnits(t *testing.T) {
	var tr turns
	const k = 4
	silent := make([]*share, k)
	for i := range silent {
		silent[i] = tr.join(fmt.Sprintf("silent%d", i))
	}
	healthy := tr.join("healthy")
	queued := func(n int) func() bool {
		return func() bool {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			return len(tr.waiting) == n
		}
	}
	if err := tr.acquire(t.Context(), silent[0]); err != nil { // its request in flight
		t.Fatal(err)
	}
	granted := make(chan *share, k+1)
	for i, s := range append(silent[1:], healthy) {
		go func() {
			if err := tr.acquire(t.Context(), s); err != nil {
				t.Error(err)
			}
			granted <- s
		}()
		wait.For(t, 5*time.Second, fmt.Sprintf("%d devices waiting", i+1), queued(i+1))
	}
	var order []string
	holder := silent[0]
	for range k {
		tr.release(holder) // its request timed out
		holder = <-granted
		order = append(order, holder.id)
	}
	tr.release(holder)
	if want := []string{"silent1", "silent2", "silent3", "healthy"}; !slices.Equal(order, want) {
		t.Fatalf("turns after silent0's request: %v, want %v: the healthy device waits for one request of each silent unit", order, want)
	}
}

// TestTurnsLend: a unit in doubt holding the link lends it (turns.lend) to
// the waiting device of another unit that has used the link least, for one
// turn, and gets it back when that turn ends (released or yielded), before
// any other waiting device however little it used the link. It never
// lends to a device of its own unit, nor while the link is being closed;
// with nobody to lend to it keeps the link at once. While it lends it
// still sees the link's progress. watch wakes it once when a device it may
// lend to comes to wait, not for one of its own unit.
func TestTurnsLend(t *testing.T) {
	var tr turns
	a := tr.joinUnit("a", 1, nil)
	same := tr.joinUnit("a-other-group", 1, nil)
	b, c := tr.joinUnit("b", 2, nil), tr.joinUnit("c", 3, nil)
	ctx := t.Context()
	nWaiting := func(n int) func() bool {
		return func() bool {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			return len(tr.waiting) == n
		}
	}
	holder := func() *share {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.holder
	}
	if err := tr.acquire(ctx, a); err != nil {
		t.Fatal(err)
	}
	if tr.lend(a) {
		t.Fatal("lent with nobody waiting")
	}
	var woken atomic.Int32
	if !tr.watch(a, func() { woken.Add(1) }) {
		t.Fatal("watch refused with nobody waiting")
	}
	granted := map[*share]chan struct{}{}
	wait1 := func(s *share) {
		ch := make(chan struct{})
		granted[s] = ch
		go func() {
			if err := tr.acquire(ctx, s); err != nil {
				t.Error(err)
			}
			close(ch)
		}()
	}
	wait1(same)
	wait.For(t, 5*time.Second, "a's other group waiting", nWaiting(1))
	if woken.Load() != 0 || tr.lend(a) {
		t.Fatal("woken for, or lent to, a device of the unit in doubt itself")
	}
	b.vuse, c.vuse = 10*time.Millisecond, 1*time.Millisecond
	wait1(b)
	wait.For(t, 5*time.Second, "b waiting", nWaiting(2))
	if woken.Load() != 1 {
		t.Fatalf("watch woke %d times when b came to wait, want once", woken.Load())
	}
	tr.unwatch()
	wait1(c)
	wait.For(t, 5*time.Second, "c waiting", nWaiting(3))
	// c has used the link least: it borrows first
	back := make(chan bool, 1)
	go func() { back <- tr.lend(a) }()
	<-granted[c]
	if h := holder(); h != c {
		t.Fatalf("holder %v while lent, want c", h)
	}
	if tr.progress(a).IsZero() {
		t.Fatal("the lender sees no progress while it lends")
	}
	select {
	case <-back:
		t.Fatal("lend returned while c holds the link")
	default:
	}
	// c yields to a device that used less: the link goes back to a, not to b
	c.vuse = time.Hour
	b.vuse = 0
	tr.release(c)
	if !<-back {
		t.Fatal("lend = false after lending")
	}
	if h := holder(); h != a {
		t.Fatalf("holder %v after the borrower's turn, want the lender a", h)
	}
	// the next lend goes to b (same is never a borrower)
	go func() { back <- tr.lend(a) }()
	<-granted[b]
	tr.release(b)
	if !<-back || holder() != a {
		t.Fatal("the link did not come back to a after b's turn")
	}
	// closing: never lent (the link would be gone when it came back)
	closing := make(chan struct{})
	go func() {
		_ = tr.acquire(context.Background(), nil)
		close(closing)
	}()
	wait.For(t, 5*time.Second, "the close waiting", nWaiting(2))
	if tr.lend(a) {
		t.Fatal("lent while the link is being closed")
	}
	tr.release(a) // the close goes first
	<-closing
	tr.release(nil)
	<-granted[same]
	tr.release(same)
}
