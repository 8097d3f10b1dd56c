package collector

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// pauser blocks a collector's loops (Collector.stall) while paused, the
// way SIGSTOP or a frozen VM stops the whole process: its workers, its
// heartbeat and its supervisor stop where they are; its NATS connection
// stays up.
type pauser struct {
	mu sync.Mutex
	ch chan struct{} // nil: running
}

func (p *pauser) stall() {
	p.mu.Lock()
	ch := p.ch
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (p *pauser) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == nil {
		p.ch = make(chan struct{})
	}
}

func (p *pauser) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch != nil {
		close(p.ch)
		p.ch = nil
	}
}

// commitLog records what every replica committed (Collector.onCommit).
type commitLog struct {
	mu     sync.Mutex
	seen   map[string]int   // gateway-seq -> commits
	last   map[string]int64 // asset -> newest committed ts_gw
	lastBy map[int]string   // partition -> replica of its newest commit
	errs   []string
	// per replica and asset: ts_gw of the newest commit
	by map[string]map[string]int64
}

func newCommitLog() *commitLog {
	return &commitLog{seen: map[string]int{}, last: map[string]int64{}, lastBy: map[int]string{}, by: map[string]map[string]int64{}}
}

func (l *commitLog) hook(replica string) func(int, []BatchRef) {
	return func(p int, bs []BatchRef) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.by[replica] == nil {
			l.by[replica] = map[string]int64{}
		}
		for _, b := range bs {
			id := b.Gateway + "-" + strconv.FormatUint(b.Seq, 10)
			a := b.Site + "." + b.Asset
			l.seen[id]++
			if l.seen[id] > 1 || b.TSGW <= l.last[a] {
				l.errs = append(l.errs, fmt.Sprintf("%s by %s (asset %s ts %d after %d, commit %d)", id, replica, a, b.TSGW, l.last[a], l.seen[id]))
			}
			l.last[a] = max(l.last[a], b.TSGW)
			l.by[replica][a] = max(l.by[replica][a], b.TSGW)
			l.lastBy[p] = replica
		}
	}
}

// reached returns a condition: replica committed a batch of every asset
// with a ts_gw of ts or later.
func (l *commitLog) reached(replica string, assets []string, ts int64) func() bool {
	return func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, a := range assets {
			if l.by[replica][a] < ts {
				return false
			}
		}
		return true
	}
}

// pausedReplica starts a partitioned replica whose loops block while ps is
// paused.
func pausedReplica(t *testing.T, url, id string, parts, fetch int, cl *commitLog, ps *pauser) *running {
	t.Helper()
	return startReplica(t, url, id, ClusterConfig{Partitions: parts, Replicas: 1, AckWait: Duration(2 * time.Second), PinnedTTL: Duration(time.Second),
		MemberTimeout: Duration(2 * time.Second), Fetch: fetch, CheckpointInterval: Duration(time.Second), RecordFormat: "binary"}, cl, ps, nil)
}

// startReplica starts a replica with cluster settings k whose loops block
// while ps is paused; set, if not nil, adjusts the collector before it
// runs.
func startReplica(t *testing.T, url, id string, k ClusterConfig, cl *commitLog, ps *pauser, set func(*Collector)) *running {
	t.Helper()
	cfg := Defaults()
	cfg.NATS.URL = url
	cfg.HTTP.Listen = ""
	cfg.DataDir = t.TempDir()
	cfg.Replica = id
	cfg.Cluster = k
	c := newCollector(t, cfg)
	if cl != nil {
		c.onCommit = cl.hook(id)
	}
	if ps != nil {
		c.stall = ps.stall
	}
	if set != nil {
		set(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	wait.For(t, 20*time.Second, "replica "+id+" ready", c.Ready)
	t.Cleanup(r.stop)
	if ps != nil {
		t.Cleanup(ps.resume) // before the stop (cleanups run last first)
	}
	return r
}

// feed publishes a batch of every asset (site s1, gateway gw-1) every
// interval until stop is called, and tells how many it published of each
// and the newest ts_gw.
type feed struct {
	mu     sync.Mutex
	count  map[string]uint64
	last   map[string]int64
	stopCh chan struct{}
	done   chan struct{}
}

func startFeed(t *testing.T, js jetstream.JetStream, assets []string, interval time.Duration) *feed {
	t.Helper()
	f := &feed{count: map[string]uint64{}, last: map[string]int64{}, stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		seq := uint64(0)
		for {
			ts := time.Now().UnixMilli()
			for i, id := range assets {
				seq++
				b := &telemetry.Batch{Gateway: "gw-1", Seq: seq, TSGW: ts, Asset: telemetry.Asset{ID: id, Class: "air_compressor", Path: []string{"acme", "s1", "_", "_", "_"}},
					Readings: []telemetry.Reading{{Signal: "discharge_temp", Value: 80 + float64((int(seq)+i)%5)*0.3, Unit: "Cel", TS: ts}, {Signal: "load_state", Value: 2, TS: ts},
						{Signal: "discharge_pressure", Value: 0.7 + float64(int(seq)%11)*0.001, Unit: "MPa", TS: ts},
						{Signal: "dew_point", Value: 3, Unit: "Cel", TS: ts}}}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := js.Publish(ctx, telemetry.Subject("s1", "air_compressor", id, telemetry.KindData), b.AppendJSON(nil),
					jetstream.WithMsgID("gw-1-"+strconv.FormatUint(seq, 10)))
				cancel()
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				f.mu.Lock()
				f.count["s1."+id]++
				f.last["s1."+id] = ts
				f.mu.Unlock()
			}
			select {
			case <-f.stopCh:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(f.stop)
	return f
}

// stored returns a condition: a batch of asset (site.id) with a ts_gw of
// ts or later was published.
func (f *feed) stored(asset string, ts int64) func() bool {
	return func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.last[asset] >= ts
	}
}

func (f *feed) stop() {
	select {
	case <-f.stopCh:
	default:
		close(f.stopCh)
	}
	<-f.done
}

// twoPartitionAssets returns n asset ids of site s1, half of them in each
// of 2 partitions.
func twoPartitionAssets(n int) []string {
	var out []string
	in := [2]int{}
	for i := 0; len(out) < n; i++ {
		id := fmt.Sprintf("ac-%02d", i)
		if p := partitionOf("s1", id, 2); in[p] < n/2 {
			in[p]++
			out = append(out, id)
		}
	}
	return out
}

// checkpointsCount waits until every asset's checkpoint counts each of
// its published batches once.
func checkpointsCount(t *testing.T, js jetstream.JetStream, f *feed, within time.Duration) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), "smelter-collector_state")
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	count, last := f.count, f.last
	f.mu.Unlock()
	var lag []string
	wait.For(t, within, "every batch evaluated once and checkpointed", func() bool {
		lag = lag[:0]
		done := 0
		for a, n := range count {
			site, id, _ := strings.Cut(a, ".")
			e, err := kv.Get(context.Background(), stateKey(partitionOf(site, id, 2), site, id))
			if err != nil {
				lag = append(lag, a+": "+err.Error())
				continue
			}
			rec, err := decodeRecord(e.Value())
			if err != nil {
				t.Fatal(err)
			}
			if rec.Rules.Batches > n {
				t.Fatalf("%s evaluated %d batches of %d", a, rec.Rules.Batches, n)
			}
			if rec.Rules.Batches == n && rec.Rules.LastTSGW == last[a] {
				done++
			} else {
				lag = append(lag, fmt.Sprintf("%s %d/%d", a, rec.Rules.Batches, n))
			}
		}
		return done == len(count)
	})
}

// TestPausedReplicaPublishesNothing is the review's reproduction (issue 17,
// session 5): one replica of a group of two is paused (every loop of it
// blocked, as SIGSTOP does) for longer than the membership timeout while
// data flows; the other takes its partition over. On resuming, the paused
// replica held its partition's state from before the pause and judged its
// own pause as the devices' silence: it published "sent nothing for ..."
// stale alerts for all its assets, which no clear followed, before its
// checkpoint was refused. Now it confirms its ownership (its membership
// did not lapse, its pin was not refused) before publishing and before
// judging silence, and drops the cycle and restarts the partition from the
// newest checkpoint instead; the replica that took the partition over
// judges silence only once it caught up with the partition. No alert
// message at all reaches the alert subjects, every batch is evaluated
// once and in order per asset, and the other replica evaluated the paused
// one's assets meanwhile.
func TestPausedReplicaPublishesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("replica test")
	}
	ns, js := embeddedJS(t)
	alerts := &alertLog{}
	alerts.subscribe(t, js.Conn()) // every alert message published, duplicates included

	cl := newCommitLog()
	ps := &pauser{}
	// more assets in a partition than a fetch holds: the replica taking a
	// partition over has not seen all of them after its first cycle
	r1 := pausedReplica(t, ns.URL(), "r1", 2, 16, cl, ps)
	r2 := pausedReplica(t, ns.URL(), "r2", 2, 16, cl, nil)
	assets := twoPartitionAssets(48)
	f := startFeed(t, js, assets, 500*time.Millisecond) // silence after 3 x 500 ms

	// the first replica up takes both partitions and gives one up once the
	// second joined: wait until each commits its own
	var p1 int
	wait.For(t, 30*time.Second, "one partition evaluated by each replica", func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.lastBy[0] == "" || cl.lastBy[1] == "" || cl.lastBy[0] == cl.lastBy[1] {
			return false
		}
		p1 = 0
		if cl.lastBy[1] == "r1" {
			p1 = 1
		}
		return true
	})
	var mine []string // r1's assets
	for _, id := range assets {
		if partitionOf("s1", id, 2) == p1 {
			mine = append(mine, "s1."+id)
		}
	}
	// settle: r1 keeps its partition for a few batches
	wait.For(t, 10*time.Second, "r1 evaluating its partition", cl.reached("r1", mine, time.Now().UnixMilli()+1))

	ps.pause()
	pausedAt := time.Now().UnixMilli()
	// paused well past member_timeout (2 s) and the silence (1.5 s): until
	// r2 took the partition over and evaluated batches stored 5 s into the
	// pause
	wait.For(t, 30*time.Second, "r2 took r1's partition over", cl.reached("r2", mine, pausedAt+5000))
	ps.resume()
	resumedAt := time.Now().UnixMilli()

	// the group settles again: r1 gets its partition back from r2 and
	// evaluates it from where r2 left it
	wait.For(t, 30*time.Second, "r1 evaluating its partition again", cl.reached("r1", mine, resumedAt+2000))
	f.stop()
	checkpointsCount(t, js, f, 30*time.Second)
	cl.mu.Lock()
	if len(cl.errs) > 0 {
		t.Errorf("batches committed twice or out of order: %v", cl.errs)
	}
	cl.mu.Unlock()
	alerts.mu.Lock()
	if len(alerts.all) > 0 {
		for _, a := range alerts.all {
			t.Errorf("alert published: %s %s %q", a.Key, a.State, a.Message)
		}
	}
	alerts.mu.Unlock()
	if n := counterVec(r1.c.m.dropped, "membership") + counterVec(r1.c.m.dropped, "pin"); n < 1 {
		t.Errorf("the paused replica dropped %v cycles, want its partition's given up", n)
	}
	if n := counterVec(r2.c.m.dropped, "membership") + counterVec(r2.c.m.dropped, "pin"); n != 0 {
		t.Errorf("the replica that ran on dropped %v cycles", n)
	}
}

// TestWorkerStallIsNotSilence: a worker that stalled (here blocked before
// its fetches for 3 s while its replica's membership stays current: a
// checkpoint stuck on a slow server would do the same) finds the batches
// stored meanwhile waiting in the stream, more than one fetch of them.
// Judged on the time it last received their batches, every asset past the
// first fetch had been silent for 3 s, twice its silence limit. Silence is
// judged again only once the worker caught up with its partition (a fetch
// finds fewer than cluster.fetch messages): no alert.
func TestWorkerStallIsNotSilence(t *testing.T) {
	ns, cfg := embeddedConfig(t)
	cfg.Cluster.Fetch = 16
	cfg.Cluster.AckWait = Duration(10 * time.Second) // the stall must not look like lost deliveries
	cl := newCommitLog()
	ps := &pauser{}
	c := newCollector(t, cfg)
	c.onCommit = cl.hook("r")
	c.beforeFetch = func(int) { ps.stall() }
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	wait.For(t, 20*time.Second, "collector ready", c.Ready)
	t.Cleanup(r.stop)
	t.Cleanup(ps.resume)

	js := jsClient(t, ns.URL())
	alerts := &alertLog{}
	alerts.subscribe(t, js.Conn())
	assets := twoPartitionAssets(48)
	f := startFeed(t, js, assets, 500*time.Millisecond) // silence after 3 x 500 ms
	all := make([]string, len(assets))
	for i, id := range assets {
		all[i] = "s1." + id
	}
	wait.For(t, 20*time.Second, "every asset evaluated", cl.reached("r", all, time.Now().UnixMilli()+1000))
	ps.pause()
	stalled := time.Now().UnixMilli()
	wait.For(t, 10*time.Second, "3 s of batches stored during the stall", f.stored("s1."+assets[len(assets)-1], stalled+3000))
	ps.resume()
	wait.For(t, 20*time.Second, "every asset evaluated after the stall", cl.reached("r", all, time.Now().UnixMilli()+2000))
	f.stop()
	alerts.mu.Lock()
	defer alerts.mu.Unlock()
	for _, a := range alerts.all {
		t.Errorf("alert published: %s %s %q", a.Key, a.State, a.Message)
	}
}
