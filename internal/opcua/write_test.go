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
	t.Log(werr)
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
