package opcua

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// setpointSource is a source with one writable signal, as the fleet's
// compressor model is.
type setpointSource struct{ source }

func (s *setpointSource) Setpoints() []string { return []string{"unload_pressure_setpoint"} }

// TestWritePoint writes a writable node of the simulator's OPC UA front
// through a running client and reads it back, in process and through a
// session worker (isolation process); a read-only node answers
// BadNotWritable, a refused value the writer's status, and no session
// means no write.
func TestWritePoint(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) { testWritePoint(t, iso) })
	}
}

func testWritePoint(t *testing.T, iso string) {
	src := &setpointSource{source{class: "air_compressor", signals: []string{"discharge_pressure", "unload_pressure_setpoint"},
		values: []float64{0.7, 0.75}}}
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "ac-1", Source: src})
	var mu sync.Mutex
	var got []float64
	f.SetWriter(func(asset, signal string, v float64) ua.StatusCode {
		if v > 0.85 {
			return ua.StatusBadOutOfRange
		}
		mu.Lock()
		got = append(got, v)
		mu.Unlock()
		if err := f.Set(asset, signal, v, time.Now()); err != nil {
			return ua.StatusBadInternalError
		}
		return ua.StatusOK
	})
	cfg := baseConfig(t, f)
	cfg.Isolation = iso
	c, err := New("dev-1", cfg, pointsFor(f, "ac-1", ModePoll, "discharge_pressure", "unload_pressure_setpoint"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.WritePoint(ctx, 1, 0.7); !errors.Is(err, ErrNoSession) {
		t.Errorf("write without a session: %v", err)
	}
	runClient(t, c, newRecorder())
	wait.For(t, 10*time.Second, "a session", func() bool { return c.Status().Connected })
	if iso == IsolationProcess && (c.live.Load() != nil || c.wk.Load() == nil) {
		t.Fatal("isolation process: commands must go to the worker, not an in-process session")
	}

	held, err := c.WritePoint(ctx, 1, 0.66)
	if err != nil || held != 0.66 {
		t.Fatalf("write: %v %v", held, err)
	}
	smp, err := c.ReadPoint(ctx, 1)
	if err != nil || smp.Num != 0.66 {
		t.Fatalf("read back: %+v %v", smp, err)
	}
	mu.Lock()
	n := len(got)
	mu.Unlock()
	if n != 1 {
		t.Errorf("writer saw %d writes", n)
	}
	if _, err := c.WritePoint(ctx, 0, 0.5); !errors.Is(err, ua.StatusBadNotWritable) {
		t.Errorf("read-only node: %v", err)
	}
	_, err = c.WritePoint(ctx, 1, 0.9)
	var se *StatusError
	if !errors.Is(err, ua.StatusBadOutOfRange) || !errors.As(err, &se) || se.Index != 1 || !strings.Contains(err.Error(), "write ns=1;s=ac-1.unload_pressure_setpoint") {
		t.Errorf("refused value: %v", err)
	}
	writes := f.Writes()
	if _, err := c.WritePoint(ctx, 5, 1); err == nil || f.Writes() != writes {
		t.Errorf("unknown point: %v, %d writes", err, f.Writes()-writes)
	}
}

// TestConvertRefusesMismatch: values are converted to the node's DataType,
// and refused (before writing) when they do not fit.
func TestConvertRefusesMismatch(t *testing.T) {
	n := func(i uint32) *ua.NodeID { return ua.NewNumericNodeID(0, i) }
	ok := []struct {
		dt   uint32
		v    float64
		want any
	}{{id.Double, 0.1, 0.1}, {id.Float, 0.5, float32(0.5)}, {id.Int16, -3, int16(-3)}, {id.UInt32, 7, uint32(7)}, {id.Boolean, 1, true}}
	for _, c := range ok {
		if got, _, err := convert(n(c.dt), c.v); err != nil || got != c.want {
			t.Errorf("convert(%d, %v) = %v %v, want %v", c.dt, c.v, got, err, c.want)
		}
	}
	bad := []struct {
		dt uint32
		v  float64
	}{{id.Int16, 1.5}, {id.Int16, 40000}, {id.UInt16, -1}, {id.Boolean, 2}, {id.Float, 1e39}, {id.String, 1}}
	for _, c := range bad {
		if _, _, err := convert(n(c.dt), c.v); !errors.Is(err, ErrTypeMismatch) {
			t.Errorf("convert(%d, %v): %v, want ErrTypeMismatch", c.dt, c.v, err)
		}
	}
	if _, _, err := convert(ua.NewNumericNodeID(2, id.Double), 1); !errors.Is(err, ErrTypeMismatch) {
		t.Errorf("vendor data type: %v", err)
	}
}

// TestWorkerKilledDuringWrite: the session worker is killed (SIGKILL)
// while the server holds a write: the write fails at once as "outcome
// unknown" wrapping ErrWorkerExited, the server saw it exactly once (the
// driver never sends it again), and the next worker takes commands.
func TestWorkerKilledDuringWrite(t *testing.T) {
	src := &setpointSource{source{class: "air_compressor", signals: []string{"discharge_pressure", "unload_pressure_setpoint"},
		values: []float64{0.7, 0.75}}}
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "ac-1", Source: src})
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(hold) }) })
	f.SetWriter(func(asset, signal string, v float64) ua.StatusCode {
		if v == 0.7 { // the write the worker dies in
			held <- struct{}{}
			<-hold
		}
		if err := f.Set(asset, signal, v, time.Now()); err != nil {
			return ua.StatusBadInternalError
		}
		return ua.StatusOK
	})
	cfg := baseConfig(t, f)
	cfg.Isolation = IsolationProcess
	c, err := New("dev-1", cfg, pointsFor(f, "ac-1", ModePoll, "discharge_pressure", "unload_pressure_setpoint"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c, newRecorder())
	wait.For(t, 10*time.Second, "a session", func() bool { return c.Status().Connected })
	pid := c.Status().WorkerPID

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := c.WritePoint(ctx, 1, 0.7)
		done <- err
	}()
	select {
	case <-held:
	case err := <-done:
		t.Fatalf("the write returned before the server held it: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the write never reached the server")
	}
	writes := f.Writes()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var werr error
	select {
	case werr = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the write did not end with its worker")
	}
	if !errors.Is(werr, ErrWorkerExited) || !strings.Contains(werr.Error(), "outcome unknown") {
		t.Fatalf("write in a killed worker: %v", werr)
	}
	once.Do(func() { close(hold) })

	// a new worker takes commands; the lost write was never sent again
	wait.For(t, 15*time.Second, "a new worker's session", func() bool {
		st := c.Status()
		return st.Connected && st.WorkerPID != pid && st.WorkerPID != 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if v, err := c.WritePoint(ctx, 1, 0.66); err != nil || v != 0.66 {
		t.Fatalf("write through the new worker: %v %v", v, err)
	}
	if n := f.Writes() - writes; n != 1 {
		t.Errorf("%d writes reached the server after the kill, want the one new write (no resend)", n)
	}
}

// TestCallMethod calls methods of the simulator's OPC UA front, in process
// and through a session worker: a setter with the value as its Double
// argument (read back from the point's node), an action without argument
// on a point without a node (nothing to read back), a value the server
// refuses (BadInvalidArgument with BadOutOfRange for the argument), a
// method whose arguments do not match the configuration (refused before
// any call) and a method called on the wrong object.
func TestCallMethod(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) { testCallMethod(t, iso) })
	}
}

func testCallMethod(t *testing.T, iso string) {
	src := &setpointSource{source{class: "air_compressor", signals: []string{"discharge_pressure", "unload_pressure_setpoint"},
		values: []float64{0.7, 0.75}}}
	acked := 0
	var mu sync.Mutex
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "ac-1", Source: src, Actions: []opcuafront.Action{{Name: "acknowledge_fault",
		Do: func() ua.StatusCode {
			mu.Lock()
			acked++
			mu.Unlock()
			return ua.StatusOK
		}}}}, opcuafront.Asset{ID: "ac-2", Source: &setpointSource{source{class: "air_compressor", signals: []string{"unload_pressure_setpoint"}, values: []float64{0.75}}}})
	f.SetWriter(func(asset, signal string, v float64) ua.StatusCode {
		if v > 0.85 {
			return ua.StatusBadOutOfRange
		}
		if err := f.Set(asset, signal, v, time.Now()); err != nil {
			return ua.StatusBadInternalError
		}
		return ua.StatusOK
	})
	setter := &Method{Object: f.ObjectID("ac-1"), Method: f.MethodID("ac-1", "set_unload_pressure_setpoint")}
	pts := pointsFor(f, "ac-1", ModePoll, "discharge_pressure", "unload_pressure_setpoint")
	pts[1].Method = setter
	pts = append(pts,
		Point{Method: &Method{Object: f.ObjectID("ac-1"), Method: f.MethodID("ac-1", "acknowledge_fault"), Argument: ArgNone}},
		Point{NodeID: pts[1].NodeID, Mode: ModePoll, Method: &Method{Object: setter.Object, Method: setter.Method, Argument: ArgNone}},
		Point{NodeID: pts[1].NodeID, Mode: ModePoll, Method: &Method{Object: f.ObjectID("ac-2"), Method: setter.Method}})
	cfg := baseConfig(t, f)
	cfg.Isolation = iso
	c, err := New("dev-1", cfg, pts, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 10*time.Second, "a session", func() bool { return c.Status().Connected })
	ctx := context.Background()

	held, err := c.WritePoint(ctx, 1, 0.66)
	if err != nil || held != 0.66 {
		t.Fatalf("call the setter: %v %v", held, err)
	}
	if smp, err := c.ReadPoint(ctx, 1); err != nil || smp.Num != 0.66 {
		t.Fatalf("read back: %+v %v", smp, err)
	}
	if f.Calls() != 1 || f.Writes() != 0 {
		t.Errorf("%d calls, %d writes; want the one call", f.Calls(), f.Writes())
	}
	_, err = c.WritePoint(ctx, 1, 0.9)
	if !errors.Is(err, ua.StatusBadOutOfRange) || !strings.Contains(err.Error(), "BadInvalidArgument") {
		t.Errorf("refused value: %v", err)
	}
	if _, err := c.WritePoint(ctx, 2, 1); err != nil {
		t.Fatalf("call the action: %v", err)
	}
	mu.Lock()
	n := acked
	mu.Unlock()
	if n != 1 {
		t.Errorf("action ran %d times", n)
	}
	if _, err := c.ReadPoint(ctx, 2); !errors.Is(err, driver.ErrNotReadable) {
		t.Errorf("read an action point: %v", err)
	}
	calls := f.Calls()
	if _, err := c.WritePoint(ctx, 3, 1); !errors.Is(err, ErrTypeMismatch) || f.Calls() != calls {
		t.Errorf("argument none on a method that takes one: %v (%d calls)", err, f.Calls()-calls)
	}
	if _, err := c.WritePoint(ctx, 4, 0.7); !errors.Is(err, ua.StatusBadMethodInvalid) {
		t.Errorf("the method of another object: %v", err)
	}
	// the action point is never acquired: no sample names it
	if n := rec.count(func(s sample.Sample) bool { return s.Index == 2 }); n != 0 {
		t.Fatalf("%d samples for the action point", n)
	}
}

// TestMethodPointValidate: a method needs an object and a method node id
// in a valid form and a known argument mode; only a point with a method
// may go without a node.
func TestMethodPointValidate(t *testing.T) {
	cfg := Config{}
	cfg.SetDefaults()
	for name, tc := range map[string]struct {
		p    Point
		want string
	}{
		"no node, no method": {Point{}, "node_id: missing"},
		"no object":          {Point{Method: &Method{Method: "ns=2;s=M"}}, "write.method.object: missing"},
		"bad method id":      {Point{Method: &Method{Object: "ns=2;s=O", Method: "ns=x;s=M"}}, "write.method.method:"},
		"bad argument":       {Point{Method: &Method{Object: "ns=2;s=O", Method: "ns=2;s=M", Argument: "two"}}, `write.method.argument: "two" is not value or none`},
	} {
		t.Run(name, func(t *testing.T) {
			tc.p.SetDefaults(&cfg)
			err := tc.p.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	ok := Point{Method: &Method{Object: "ns=2;s=O", Method: "nsu=urn:x;s=M"}}
	ok.SetDefaults(&cfg)
	if err := ok.Validate(); err != nil || ok.Method.Argument != ArgValue {
		t.Fatalf("action point: %v, argument %q", err, ok.Method.Argument)
	}
}

// TestWriteTimeoutIsOutcomeUnknown: a server that holds a write beyond the
// caller's deadline fails it as "outcome unknown" (it may still apply it),
// in process and through a worker, which stays up and takes the next one.
func TestWriteTimeoutIsOutcomeUnknown(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationProcess} {
		t.Run(iso, func(t *testing.T) {
			src := &setpointSource{source{class: "air_compressor", signals: []string{"unload_pressure_setpoint"}, values: []float64{0.75}}}
			f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "ac-1", Source: src})
			release := make(chan struct{})
			var once sync.Once
			t.Cleanup(func() { once.Do(func() { close(release) }) })
			f.SetWriter(func(asset, signal string, v float64) ua.StatusCode {
				if v == 0.7 {
					<-release
				}
				return ua.StatusOK
			})
			cfg := baseConfig(t, f)
			cfg.Isolation = iso
			c, err := New("dev-1", cfg, pointsFor(f, "ac-1", ModePoll, "unload_pressure_setpoint"), testLog(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			runClient(t, c, newRecorder())
			wait.For(t, 10*time.Second, "a session", func() bool { return c.Status().Connected })
			pid := c.Status().WorkerPID
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			_, err = c.WritePoint(ctx, 0, 0.7)
			cancel()
			if err == nil || !strings.Contains(err.Error(), "outcome unknown") {
				t.Fatalf("held write: %v", err)
			}
			once.Do(func() { close(release) })
			wait.For(t, 10*time.Second, "the next write", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_, err := c.WritePoint(ctx, 0, 0.66)
				return err == nil
			})
			if c.Status().WorkerPID != pid {
				t.Errorf("worker %d replaced by %d after a timeout", pid, c.Status().WorkerPID)
			}
		})
	}
}
