package opcua

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// groupDevice is one device of TestEndpointWorkerIsSharedByItsDevices.
type groupDevice struct {
	c      *Client
	rec    *recorder
	cancel func()
	done   chan error
}

func startGroupDevice(t *testing.T, id string, cfg Config, points []Point) *groupDevice {
	t.Helper()
	c, err := New(id, cfg, points, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &groupDevice{c: c, rec: newRecorder(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- c.Run(ctx, d.rec.emit) }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *groupDevice) stop(t *testing.T) {
	d.cancel()
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		d.done <- nil // stop is idempotent
	case <-time.After(30 * time.Second):
		t.Error("Run did not return")
	}
}

func lostByWorker(rec *recorder) int {
	return rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost && errors.Is(cy.Err, ErrWorkerExited) })
}

// TestEndpointWorkerIsSharedByItsDevices: with isolation endpoint the two
// devices of one server share one worker process and the device of
// another server has its own; killing the shared worker makes both of its
// devices Lost (every point Stale) and restarts one worker for both, the
// other server's device untouched; a device that stops leaves the worker
// running for the other, and the worker ends with its last device.
func TestEndpointWorkerIsSharedByItsDevices(t *testing.T) {
	fa := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-1", Source: furnace()}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	fb := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-3", Source: furnace()})
	cfgA, cfgB := baseConfig(t, fa), baseConfig(t, fb)
	cfgA.Isolation, cfgB.Isolation = IsolationEndpoint, IsolationEndpoint
	a1 := startGroupDevice(t, "a1", cfgA, pointsFor(fa, "bf-1", ModeSubscribe, "hot_blast_temp", "top_pressure"))
	a2 := startGroupDevice(t, "a2", cfgA, pointsFor(fa, "bf-2", ModeSubscribe, "top_pressure"))
	b := startGroupDevice(t, "b", cfgB, pointsFor(fb, "bf-3", ModeSubscribe, "top_pressure"))
	wait.For(t, 30*time.Second, "values of every device", func() bool {
		return a1.rec.has(1, telemetry.QualityGood, 210) && a2.rec.has(0, telemetry.QualityGood, 210) && b.rec.has(0, telemetry.QualityGood, 210) &&
			a1.c.Status().Connected && a2.c.Status().Connected && b.c.Status().Connected
	})
	pa, pb := a1.c.Status().WorkerPID, b.c.Status().WorkerPID
	if pa <= 0 || pb <= 0 || a2.c.Status().WorkerPID != pa || pa == pb {
		t.Fatalf("worker pids a1 %d, a2 %d, b %d: want a1 and a2 in one worker, b in another", pa, a2.c.Status().WorkerPID, pb)
	}

	if err := syscall.Kill(pa, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "a Lost cycle for both devices of the killed worker", func() bool {
		return lostByWorker(a1.rec) == 1 && lostByWorker(a2.rec) == 1
	})
	if a1.rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityStale }) < 2 {
		t.Fatal("a1's Lost cycle did not mark both points stale")
	}
	if err := fa.Set("bf-1", "top_pressure", 214.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := fa.Set("bf-2", "top_pressure", 215.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "values from one new worker for both", func() bool {
		s1, s2 := a1.c.Status(), a2.c.Status()
		return a1.rec.has(1, telemetry.QualityGood, 214.5) && a2.rec.has(0, telemetry.QualityGood, 215.5) &&
			s1.WorkerStarts == 2 && s1.WorkerPID != pa && s1.WorkerPID == s2.WorkerPID && s1.Connected && s2.Connected
	})
	if n := lostByWorker(b.rec); n != 0 || b.c.Status().WorkerPID != pb || b.c.Status().WorkerExits != 0 {
		t.Fatalf("the other endpoint's device: %d Lost cycles, status %+v", n, b.c.Status())
	}
	if processAlive(pa) {
		t.Fatalf("killed worker %d still alive", pa)
	}

	// a1 stops: the worker goes on for a2
	pa = a2.c.Status().WorkerPID
	a1.stop(t)
	if err := fa.Set("bf-2", "top_pressure", 216.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "a2's value after a1 stopped", func() bool { return a2.rec.has(0, telemetry.QualityGood, 216.5) })
	if !processAlive(pa) || a2.c.Status().WorkerPID != pa || lostByWorker(a2.rec) != 1 {
		t.Fatalf("after a1 stopped: worker %d alive %v, a2 status %+v", pa, processAlive(pa), a2.c.Status())
	}
	a2.stop(t)
	if processAlive(pa) {
		t.Fatalf("worker %d outlived its last device", pa)
	}
}

// TestFrozenPublishStaysItsDevices (review15 F4, F5): two devices of one
// endpoint share a worker; the server stops answering Publish (the proxy
// drops every PublishResponse; the session lives, Reads are answered). The
// subscribed device must go stale at once on its own and reconnect,
// staying dead (no Replied cycle, so no birth) while nothing flows; its
// polled sibling keeps its good readings in the same worker, no Lost cycle.
// When Publish is answered again the frozen device reads good values.
// Before the fix the worker was killed as wedged after 2 s (the device's
// own watch took 3 publish timeouts): both devices Lost, every time.
//
// Faulted (review17 F3): the same with every Publish answered by a
// ServiceFault BadTimeout instead of nothing. Before the fix the faults
// counted as answers, so the device's own watch never fired: the worker
// restarted the device alone as silent every few seconds, each new
// instance marked the point stale again and began its backoff anew.
func TestFrozenPublishStaysItsDevices(t *testing.T) {
	for _, fault := range []bool{false, true} {
		t.Run(map[bool]string{false: "silent", true: "faulted"}[fault], func(t *testing.T) { testFrozenPublishStaysItsDevices(t, fault) })
	}
}

func testFrozenPublishStaysItsDevices(t *testing.T, fault bool) {
	setSilence(t, 2*time.Second)
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-1", Source: furnace()}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	p := startHostileProxy(t, strings.TrimPrefix(f.Endpoint(), "opc.tcp://"))
	p.noCraft.Store(true)
	p.faultPublish.Store(fault)
	p.dropPublish.Store(true)
	cfg := baseConfig(t, f)
	cfg.Endpoint = p.endpoint()
	cfg.Isolation = IsolationEndpoint
	cfg.KeepAlive = 250 * time.Millisecond // k = 5 as by default: keep-alive period 300 ms
	cfg.RequestTimeout = time.Second       // publish timeout max(1 s, 900 ms)
	frozen := startGroupDevice(t, "frozen", cfg, pointsFor(f, "bf-1", ModeSubscribe, "top_pressure"))
	polled := startGroupDevice(t, "polled", cfg, pointsFor(f, "bf-2", ModePoll, "top_pressure"))
	wait.For(t, 30*time.Second, "the polled device's values and the frozen device's Lost cycle", func() bool {
		return polled.rec.has(0, telemetry.QualityGood, 210) && frozen.rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }) >= 1
	})
	pid := polled.c.Status().WorkerPID
	if pid <= 0 || frozen.c.Status().WorkerPID != pid {
		t.Fatalf("worker pids: frozen %d, polled %d: want one shared worker", frozen.c.Status().WorkerPID, pid)
	}
	// several sessions of the frozen device, each lost to its silence
	wait.For(t, 30*time.Second, "the frozen device reconnected and lost its subscription 3 times", func() bool {
		return frozen.rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost && errors.Is(cy.Err, ErrPublishSilent) }) >= 3
	})
	if err := f.Set("bf-2", "top_pressure", 214.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the polled device's new value", func() bool { return polled.rec.has(0, telemetry.QualityGood, 214.5) })
	if n := polled.rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }); n != 0 {
		t.Fatalf("the polled sibling had %d Lost cycles (%v): the frozen device's failure reached it", n, polled.rec.lostErrors())
	}
	if st := polled.c.Status(); st.WorkerPID != pid || st.WorkerExits != 0 {
		t.Fatalf("the shared worker was replaced: %+v (pid was %d)", st, pid)
	}
	if n := frozen.rec.countCycles(func(cy sample.Cycle) bool { return cy.Replied }); n != 0 {
		t.Fatalf("the frozen device emitted %d Replied cycles: it would be born again without data", n)
	}
	if n := frozen.rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityStale }); n != 1 {
		t.Fatalf("the frozen device's point went stale %d times, want once for the whole outage", n)
	}
	if p.dropped.Load()+p.rewritten.Load() == 0 {
		t.Fatal("no PublishResponse dropped or faulted")
	}

	p.dropPublish.Store(false)
	if err := f.Set("bf-1", "top_pressure", 215.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the frozen device's values once Publish is answered", func() bool {
		return frozen.rec.has(0, telemetry.QualityGood, 215.5)
	})
	if n := polled.rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }); n != 0 {
		t.Fatalf("the polled sibling had %d Lost cycles", n)
	}
}

// TestFrozenPublishAfterInitialValues (review15 F5): a server answers the
// first Publish of each connection (the initial values) and then never
// again. The first session publishes its value and is lost to the
// subscription's silence; the sessions after it hold their one answer
// (probation) and emit nothing: no Replied cycle, so no birth per
// reconnect, the point stale once. When Publish is answered again the
// held values and new ones flow.
func TestFrozenPublishAfterInitialValues(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-1", Source: furnace()})
	p := startHostileProxy(t, strings.TrimPrefix(f.Endpoint(), "opc.tcp://"))
	p.noCraft.Store(true)
	p.passPublish.Store(1)
	p.dropPublish.Store(true)
	cfg := baseConfig(t, f)
	cfg.Endpoint = p.endpoint()
	cfg.Isolation = IsolationEndpoint
	cfg.KeepAlive = 250 * time.Millisecond
	cfg.RequestTimeout = time.Second
	d := startGroupDevice(t, "frozen", cfg, pointsFor(f, "bf-1", ModeSubscribe, "top_pressure"))
	lost := func() int {
		return d.rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost && errors.Is(cy.Err, ErrPublishSilent) })
	}
	wait.For(t, 30*time.Second, "the first session's value and its loss", func() bool {
		return d.rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityGood }) == 1 && lost() >= 1
	})
	replied := func() int { return d.rec.countCycles(func(cy sample.Cycle) bool { return cy.Replied }) }
	before := replied()
	wait.For(t, 60*time.Second, "3 more sessions lost to the silence", func() bool { return lost() >= 4 })
	if n := replied() - before; n != 0 {
		t.Fatalf("%d Replied cycles from sessions that got one Publish answer each: a birth per reconnect", n)
	}
	if n := d.rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityStale }); n != 1 {
		t.Fatalf("the point went stale %d times, want once", n)
	}
	if n := d.rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityGood }); n != 1 {
		t.Fatalf("%d good values, want only the first session's", n)
	}
	p.dropPublish.Store(false)
	if err := f.Set("bf-1", "top_pressure", 215.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 60*time.Second, "values once Publish is answered", func() bool { return d.rec.has(0, telemetry.QualityGood, 215.5) })
}

// TestOutageGoesOnInANewInstance (review17 F3): a device started again
// within an outage (its worker died, or it was restarted alone as silent)
// gets the outage's state: its losses mark nothing stale again and its
// backoff goes on from the attempts so far (here at backoff_max 1.5 s:
// 0.75-1.5 s apart), where a new outage's first loss marks the point stale
// and retries after backoff_min. Before the fix every instance began a new
// outage: stale again, retry in under a second (16 sessions in 6 minutes).
func TestOutageGoesOnInANewInstance(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: every connect fails at once
	for _, o := range []*outageState{nil, {StaleSent: true, Attempts: 20}} {
		cfg := Config{Endpoint: "opc.tcp://" + addr, DataDir: t.TempDir(), BackoffMin: 20 * time.Millisecond, BackoffMax: 1500 * time.Millisecond,
			PublishInterval: 50 * time.Millisecond, RequestTimeout: time.Second, Isolation: IsolationNone}
		c, err := New("dev-1", cfg, []Point{{NodeID: "ns=2;i=1"}}, testLog(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		c.outage = o
		rec := newRecorder()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx, rec.emit) }()
		wait.For(t, 20*time.Second, "two Lost cycles", func() bool { return lostCycles(rec) >= 2 })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		rec.mu.Lock()
		var at []time.Time
		for _, cy := range rec.cycles {
			if cy.Lost {
				at = append(at, cy.Start)
			}
		}
		rec.mu.Unlock()
		stale := rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityStale })
		gap := at[1].Sub(at[0])
		if o == nil {
			if stale != 1 || gap > 500*time.Millisecond {
				t.Fatalf("a new outage: %d stale samples, %v between its first losses; want 1 and backoff_min", stale, gap)
			}
			continue
		}
		if stale != 0 || gap < 700*time.Millisecond {
			t.Fatalf("an outage going on: %d stale samples (want 0), %v between losses (want backoff_max/2 or more)", stale, gap)
		}
	}
}
