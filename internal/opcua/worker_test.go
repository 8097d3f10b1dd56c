package opcua

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

func (r *recorder) lostErrors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.cycles {
		if c.Lost {
			out = append(out, fmt.Sprint(c.Err))
		}
	}
	return out
}

// processAlive reports whether pid names a live (not zombie) process.
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestWorkerDeliversSameSamplesAsInProcess runs the subscribe-and-poll
// scenario of client_test.go both ways: the samples, source timestamps,
// units, status and metrics the Source gives must not depend on where the
// session runs.
func TestWorkerDeliversSameSamplesAsInProcess(t *testing.T) {
	for _, iso := range []string{IsolationNone, IsolationProcess, IsolationEndpoint} {
		t.Run(iso, func(t *testing.T) {
			f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
			cfg := baseConfig(t, f)
			cfg.Isolation = iso
			points := pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure")
			points = append(points, pointsFor(f, "bf-2", ModePoll, "top_gas_co")...)
			for i := range points {
				points[i].UnitFromNode = true
			}
			reg := prometheus.NewRegistry()
			c, err := New("dev-1", cfg, points, testLog(t), NewMetrics(reg))
			if err != nil {
				t.Fatal(err)
			}
			var umu sync.Mutex
			var units []NodeUnit
			c.OnUnits(func(us []NodeUnit) {
				umu.Lock()
				units = us
				umu.Unlock()
			})
			rec := newRecorder()
			runClient(t, c, rec)
			wait.For(t, 20*time.Second, "initial values", func() bool {
				return rec.has(0, telemetry.QualityGood, 1183.5) && rec.has(1, telemetry.QualityGood, 210) && rec.has(2, telemetry.QualityGood, 22.5)
			})
			if err := f.Set("bf-2", "top_pressure", 212.25, time.UnixMilli(1763812345101)); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 10*time.Second, "changed value", func() bool { return rec.has(1, telemetry.QualityGood, 212.25) })
			if u, _ := rec.get(1); u.TS != 1763812345101 || u.Status != 0 {
				t.Fatalf("update %+v: want TS 1763812345101 status 0", u)
			}
			umu.Lock()
			got := units
			umu.Unlock()
			if len(got) != 3 || got[0].UCUM != "Cel" || got[1].UCUM != "kPa" || got[2].UCUM != "%" || !got[0].HasRange || got[0].Max != 1350 {
				t.Fatalf("units %+v", got)
			}
			wait.For(t, 10*time.Second, "status and metrics forwarded", func() bool {
				st := c.Status()
				return st.Connected && st.Sessions == 1 && st.Limits.MaxNodesPerRead == DefaultOperationLimit &&
					testutil.ToFloat64(c.m.readOK) > 0 && testutil.ToFloat64(c.m.notifications) > 0 &&
					testutil.ToFloat64(c.m.state) == StateConnected
			})
			if st := c.Status(); (iso != IsolationNone) != (st.WorkerPID > 0 && st.WorkerPID != os.Getpid()) {
				t.Fatalf("isolation %s: worker pid %d (this process %d)", iso, st.WorkerPID, os.Getpid())
			}
			if n := rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }); n != 0 {
				t.Fatalf("%d Lost cycles: %v", n, rec.lostErrors())
			}
		})
	}
}

// TestWorkerDeliversSameNonFiniteAsInProcess is the same scenario with
// NaN and infinite EURanges (at session start, and one appearing
// mid-session) and NaN and infinite values, subscribed, polled and read on
// command: a worker must deliver what the in-process session delivers
// (ranges as the node reports them, such values Bad as type mismatches),
// and go on delivering. A NaN range used to stop a worker's output for
// good, silently.
func TestWorkerDeliversSameNonFiniteAsInProcess(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	type outcome struct{ units, read string }
	var want outcome
	for _, iso := range []string{IsolationNone, IsolationProcess, IsolationEndpoint} {
		t.Run(iso, func(t *testing.T) {
			f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
			if err := errors.Join(f.SetRange("bf-2", "hot_blast_temp", nan, nan), f.SetRange("bf-2", "top_pressure", -inf, inf)); err != nil {
				t.Fatal(err)
			}
			cfg := baseConfig(t, f)
			cfg.Isolation = iso
			cfg.UnitCheckInterval = UnitCheck(50 * time.Millisecond)
			points := pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure")
			points = append(points, pointsFor(f, "bf-2", ModePoll, "top_gas_co")...)
			for i := range points {
				points[i].UnitFromNode = true
			}
			c, err := New("dev-1", cfg, points, testLog(t), NewMetrics(prometheus.NewRegistry()))
			if err != nil {
				t.Fatal(err)
			}
			var umu sync.Mutex
			var units []NodeUnit
			c.OnUnits(func(us []NodeUnit) {
				umu.Lock()
				units = us
				umu.Unlock()
			})
			unitsNow := func() []NodeUnit {
				umu.Lock()
				defer umu.Unlock()
				return units
			}
			rec := newRecorder()
			runClient(t, c, rec)
			wait.For(t, 20*time.Second, "initial values", func() bool {
				return rec.has(0, telemetry.QualityGood, 1183.5) && rec.has(1, telemetry.QualityGood, 210) && rec.has(2, telemetry.QualityGood, 22.5)
			})
			if got := unitsNow(); len(got) != 3 || !got[0].HasRange || !math.IsNaN(got[0].Min) || !math.IsNaN(got[0].Max) ||
				!math.IsInf(got[1].Min, -1) || !math.IsInf(got[1].Max, 1) || got[1].UCUM != "kPa" || got[2].Max != 40 {
				t.Fatalf("units %+v", got)
			}
			// a range turning NaN mid-session (the polled point's units
			// are read again every UnitCheckInterval)
			if err := f.SetRange("bf-2", "top_gas_co", nan, inf); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 10*time.Second, "NaN range mid-session", func() bool {
				got := unitsNow()
				return len(got) == 3 && math.IsNaN(got[2].Min) && math.IsInf(got[2].Max, 1)
			})
			now := time.Now()
			if err := errors.Join(f.Set("bf-2", "hot_blast_temp", -inf, now), f.Set("bf-2", "top_pressure", nan, now),
				f.Set("bf-2", "top_gas_co", inf, now)); err != nil {
				t.Fatal(err)
			}
			mismatch := func(i int) bool {
				u, ok := rec.get(i)
				return ok && u.Quality == telemetry.QualityBad && u.Status == statusTypeMismatch && u.Num == 0 && !u.Silent
			}
			wait.For(t, 10*time.Second, "non-finite values bad", func() bool { return mismatch(0) && mismatch(1) && mismatch(2) })
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			s, err := c.ReadPoint(ctx, 1)
			if s.TS == 0 {
				t.Fatalf("read %+v: no source time", s)
			}
			s.TS = 0 // the time it was read
			got := outcome{units: fmt.Sprintf("%+v", unitsNow()), read: fmt.Sprintf("%+v %v", s, err)}
			if err := f.Set("bf-2", "top_pressure", 212.25, time.Now()); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 10*time.Second, "finite value again", func() bool { return rec.has(1, telemetry.QualityGood, 212.25) })
			if n := rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }); n != 0 {
				t.Fatalf("%d Lost cycles: %v", n, rec.lostErrors())
			}
			if iso == IsolationNone {
				want = got
				return
			}
			if got != want {
				t.Fatalf("isolation %s:\n got %+v\nwant %+v (in process)", iso, got, want)
			}
		})
	}
}

// TestWorkerKilledMidRunIsLostAndRestarted kills the worker with SIGKILL
// (what the OOM killer does): a Lost cycle with every point Stale and an
// error wrapping ErrWorkerExited, then a new worker and good values.
func TestWorkerKilledMidRunIsLostAndRestarted(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.Isolation = IsolationProcess
	c, err := New("dev-1", cfg, pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "values", func() bool { return rec.has(1, telemetry.QualityGood, 210) })
	pid := c.Status().WorkerPID
	if pid <= 0 {
		t.Fatalf("no worker pid in %+v", c.Status())
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "a Lost cycle for the killed worker", func() bool {
		return rec.countCycles(func(cy sample.Cycle) bool {
			return cy.Lost && errors.Is(cy.Err, ErrWorkerExited) && !errors.Is(cy.Err, ErrPanic) && strings.Contains(cy.Err.Error(), "killed")
		}) == 1
	})
	if rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityStale }) < 2 {
		t.Fatal("the Lost cycle did not mark both points stale")
	}
	if err := f.Set("bf-2", "top_pressure", 214.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "values from a new worker", func() bool {
		st := c.Status()
		return rec.has(1, telemetry.QualityGood, 214.5) && st.WorkerStarts == 2 && st.WorkerPID != pid && st.Connected
	})
	if n := testutil.ToFloat64(c.m.m.workerExits.WithLabelValues("dev-1", "exit")); n != 1 {
		t.Fatalf("worker exits (cause exit) = %v, want 1", n)
	}
	if processAlive(pid) {
		t.Fatalf("killed worker %d still alive", pid)
	}
}

// TestSilentWorkerIsKilledAndRestarted stops the worker (SIGSTOP: a
// wedged worker, its sessions up as far as it last said): after the
// group's silence limit it is killed, its device gets a Lost cycle naming
// the silence, and a new worker delivers again.
func TestSilentWorkerIsKilledAndRestarted(t *testing.T) {
	setSilence(t, 4*workerHeartbeat)
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.Isolation = IsolationEndpoint
	c, err := New("dev-1", cfg, pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp", "top_pressure"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "values", func() bool { return rec.has(1, telemetry.QualityGood, 210) && c.Status().Connected })
	pid := c.Status().WorkerPID
	if pid <= 0 {
		t.Fatalf("no worker pid in %+v", c.Status())
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	wait.For(t, 30*time.Second, "a Lost cycle for the silent worker", func() bool {
		return rec.countCycles(func(cy sample.Cycle) bool {
			return cy.Lost && errors.Is(cy.Err, ErrWorkerExited) && errors.Is(cy.Err, errWorkerSilent)
		}) == 1
	})
	if err := f.Set("bf-2", "top_pressure", 214.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "values from a new worker", func() bool {
		st := c.Status()
		return rec.has(1, telemetry.QualityGood, 214.5) && st.WorkerStarts == 2 && st.WorkerPID != pid && st.Connected
	})
	wait.For(t, 10*time.Second, "the silent worker gone", func() bool { return !processAlive(pid) })
}

// wedgeEnv names, in a test's environment, the device whose cycles its
// workers block (TestMain sets wedgeForTest in the worker).
const wedgeEnv = "SMELTER_OPCUA_TEST_WEDGE"

// setSilence sets new groups' silence limit for the test.
func setSilence(t *testing.T, d time.Duration) {
	groups.mu.Lock()
	groups.silence = d
	groups.mu.Unlock()
	t.Cleanup(func() {
		groups.mu.Lock()
		groups.silence = workerSilence
		groups.mu.Unlock()
	})
}

// wedgedSetup: the workers of the test wedge device dev-wedged, the
// silence limit is 2 s, and a front with the device's config (a polled
// device's limit: 3 x (50 ms + 1 s)).
func wedgedSetup(t *testing.T, isolation string) (*opcuafront.Front, Config) {
	t.Helper()
	t.Setenv(wedgeEnv, "dev-wedged")
	setSilence(t, 2*time.Second)
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.Isolation = isolation
	cfg.RequestTimeout = time.Second
	return f, cfg
}

// TestWedgedDeviceRestartsAlone: one device of an endpoint's worker stops
// emitting while its session is up and the worker goes on (its heartbeat,
// the other device's cycles). After the device's silence limit that device
// alone is restarted in the same worker: it gets Lost cycles naming it (its
// points Stale once), the other device keeps its values, no Lost cycle,
// and the worker is not replaced (review15 F4: the whole worker used to be
// killed, its healthy devices published stale, then dead). A worker whose
// every device is silent is still killed (TestWedgedWorkerOfOneIsKilled).
func TestWedgedDeviceRestartsAlone(t *testing.T) {
	f, cfg := wedgedSetup(t, IsolationEndpoint)
	okc, err := New("dev-ok", cfg, pointsFor(f, "bf-2", ModeSubscribe, "top_pressure"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	wc, err := New("dev-wedged", cfg, pointsFor(f, "bf-2", ModePoll, "top_gas_co"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	okRec, wRec := newRecorder(), newRecorder()
	runClient(t, okc, okRec)
	runClient(t, wc, wRec)
	wait.For(t, 30*time.Second, "the other device's values", func() bool { return okRec.has(0, telemetry.QualityGood, 210) })
	pid := okc.Status().WorkerPID
	wait.For(t, 30*time.Second, "two Lost cycles naming the wedged device (restarted, wedged again)", func() bool {
		return wRec.countCycles(func(cy sample.Cycle) bool {
			return cy.Lost && errors.Is(cy.Err, errDeviceSilent) && !errors.Is(cy.Err, ErrWorkerExited) && strings.Contains(cy.Err.Error(), "dev-wedged")
		}) >= 2
	})
	if n := wRec.count(func(s sample.Sample) bool { return s.Quality != telemetry.QualityStale }); n != 0 {
		t.Fatalf("the wedged device emitted %d samples that are not stale", n)
	}
	if n := wRec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityStale }); n != 1 {
		t.Fatalf("the wedged device's point went stale %d times, want once for the outage", n)
	}
	if err := f.Set("bf-2", "top_pressure", 214.5, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the other device's new value", func() bool { return okRec.has(0, telemetry.QualityGood, 214.5) })
	if n := okRec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }); n != 0 {
		t.Fatalf("the healthy device had %d Lost cycles: %v", n, okRec.lostErrors())
	}
	if st, wst := okc.Status(), wc.Status(); st.WorkerPID != pid || st.WorkerStarts != 1 || wst.WorkerPID != pid || wst.WorkerStarts != 1 {
		t.Fatalf("worker replaced: ok %+v, wedged %+v, pid was %d", st, wst, pid)
	}
}

// TestWedgedWorkerOfOneIsKilled: a wedged device alone in its worker
// (isolation process) has its worker killed and restarted, as the worker
// itself may be what is wedged.
func TestWedgedWorkerOfOneIsKilled(t *testing.T) {
	f, cfg := wedgedSetup(t, IsolationProcess)
	wc, err := New("dev-wedged", cfg, pointsFor(f, "bf-2", ModePoll, "top_gas_co"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, wc, rec)
	wait.For(t, 30*time.Second, "a Lost cycle of the killed worker naming the wedged device", func() bool {
		return rec.countCycles(func(cy sample.Cycle) bool {
			return cy.Lost && errors.Is(cy.Err, ErrWorkerExited) && errors.Is(cy.Err, errDeviceSilent)
		}) >= 1 && wc.Status().WorkerStarts >= 2
	})
}

// TestWorkerStopsWhenItCannotSend: a frame the worker cannot send (here
// its stdout fails after the hello) stops it with exit status 1 and an
// ERROR line, although its stdin stays open: it used to wait on stdin
// for good, its sessions closed, while the gateway waited for its frames.
func TestWorkerStopsWhenItCannotSend(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.Isolation = IsolationNone
	var in bytes.Buffer
	if err := writeFrame(&in, &wireMsg{Kind: msgConfig, Config: &workerConfig{ID: "dev-1", Config: cfg,
		Points: pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp")}}); err != nil {
		t.Fatal(err)
	}
	stdinR, stdinW := io.Pipe()
	t.Cleanup(func() { _ = stdinW.Close() })
	go func() { _, _ = stdinW.Write(in.Bytes()) }()
	out := &failingWriter{ok: 1}
	var stderr logtest.Buffer
	code := make(chan int, 1)
	go func() { code <- workerMain(t.Context(), stdinR, out, &stderr, func() {}) }()
	select {
	case c := <-code:
		if c != 1 {
			t.Fatalf("exit %d, want 1", c)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the worker did not stop; stderr:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), `"level":"ERROR","msg":"opc ua worker: cannot send a frame to the gateway; stopping the worker"`) {
		t.Fatalf("no ERROR line in stderr:\n%s", stderr.String())
	}
}

// failingWriter accepts ok writes, then fails.
type failingWriter struct {
	mu sync.Mutex
	ok int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ok == 0 {
		return 0, io.ErrClosedPipe
	}
	w.ok--
	return len(p), nil
}

// TestWorkerStopsWithRun: when Run's ctx ends the worker is gone before
// Run returns.
func TestWorkerStopsWithRun(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.Isolation = IsolationProcess
	c, err := New("dev-1", cfg, pointsFor(f, "bf-2", ModePoll, "hot_blast_temp"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, rec.emit) }()
	wait.For(t, 20*time.Second, "values", func() bool { return rec.has(0, telemetry.QualityGood, 1183.5) })
	pid := c.Status().WorkerPID
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if processAlive(pid) {
		t.Fatalf("worker %d outlived Run", pid)
	}
	if n := rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }); n != 0 {
		t.Fatalf("a requested stop emitted %d Lost cycles: %v", n, rec.lostErrors())
	}
}

// TestWorkerDiesWithItsParent kills (SIGKILL, no cleanup) a helper process
// that runs a device with isolation process: its worker must be gone
// within a deadline, no orphan left.
func TestWorkerDiesWithItsParent(t *testing.T) {
	if os.Getenv("SMELTER_WORKER_PARENT") != "" {
		workerParent(t, os.Getenv("SMELTER_WORKER_PARENT"))
		return
	}
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cmd := exec.Command(os.Args[0], "-test.run=^TestWorkerDiesWithItsParent$")
	cmd.Env = append(os.Environ(), "SMELTER_WORKER_PARENT="+f.Endpoint()+" "+f.NodeID("bf-2", "hot_blast_temp"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	pid := 0
	for pid == 0 && sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "WORKER "); ok {
			pid, _ = strconv.Atoi(s)
		}
	}
	if pid <= 0 || !processAlive(pid) {
		t.Fatalf("helper reported no live worker (pid %d, scan err %v)", pid, sc.Err())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	wait.For(t, 10*time.Second, "the orphaned worker gone", func() bool { return !processAlive(pid) })
}

// workerParent runs one device through a worker and prints the worker's
// pid once values arrive, then waits to be killed.
func workerParent(t *testing.T, arg string) {
	endpoint, node, _ := strings.Cut(arg, " ")
	cfg := Config{Endpoint: endpoint, DataDir: t.TempDir(), PublishInterval: 50 * time.Millisecond, Isolation: IsolationProcess}
	c, err := New("dev-1", cfg, []Point{{NodeID: node, Mode: ModePoll, PollInterval: 50 * time.Millisecond}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	go func() { _ = c.Run(t.Context(), rec.emit) }()
	wait.For(t, 20*time.Second, "values", func() bool { return rec.has(0, telemetry.QualityGood, 1183.5) })
	fmt.Printf("WORKER %d\n", c.Status().WorkerPID)
	<-t.Context().Done() // until killed
}

// TestWorkerErrorsKeepTheirIdentity: the errors a worker reports (a
// cycle's, a command's) answer errors.Is and errors.As in the parent as
// they did in the worker, with the worker's text.
func TestWorkerErrorsKeepTheirIdentity(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		is   []error
	}{
		{"session lost", fmt.Errorf("opcua: watchdog read: %w", ErrSessionLost), []error{ErrSessionLost}},
		{"panic", fmt.Errorf("%w: poll: boom", ErrPanic), []error{ErrPanic}},
		{"untrusted", fmt.Errorf("connect: %w", ErrUntrusted), []error{ErrUntrusted}},
		{"status code", fmt.Errorf("opcua: poll read of 3 nodes: %w", ua.StatusBadTooManyOperations), []error{ua.StatusBadTooManyOperations}},
		{"point status", &StatusError{Index: 4, Status: ua.StatusBadNodeIDUnknown}, []error{ua.StatusBadNodeIDUnknown}},
		{"wrapped point status", fmt.Errorf("opcua: write ns=1;s=x: %w", &StatusError{Index: 1, Status: ua.StatusBadOutOfRange}), []error{ua.StatusBadOutOfRange}},
		{"no session", fmt.Errorf("opcua: device d: %w", ErrNoSession), []error{ErrNoSession}},
		{"type mismatch", fmt.Errorf("opcua: write ns=1;s=x: %w: 1.5 is not an integer", ErrTypeMismatch), []error{ErrTypeMismatch}},
		{"not readable", fmt.Errorf("opcua: point 2: %w", driver.ErrNotReadable), []error{driver.ErrNotReadable}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := writeFrame(&b, &wireMsg{Kind: msgCycle, Cycle: toWireCycle(&sample.Cycle{Lost: true, Err: tc.err})}); err != nil {
				t.Fatal(err)
			}
			var m wireMsg
			if err := readFrame(&b, &m); err != nil {
				t.Fatal(err)
			}
			got := m.Cycle.cycle().Err
			if got.Error() != tc.err.Error() {
				t.Fatalf("text %q, want %q", got, tc.err)
			}
			for _, want := range tc.is {
				if !errors.Is(got, want) {
					t.Fatalf("%v does not match %v", got, want)
				}
			}
			if errors.Is(got, ErrWorkerExited) {
				t.Fatalf("%v matches ErrWorkerExited", got)
			}
			var se *StatusError
			if errors.As(tc.err, &se) {
				var gse *StatusError
				if !errors.As(got, &gse) || *gse != *se {
					t.Fatalf("StatusError lost: %#v", got)
				}
			}
		})
	}
}

// TestWorkerRefusesBadFrames: a frame length out of range is an error
// naming the header, not an allocation.
func TestWorkerRefusesBadFrames(t *testing.T) {
	var m wireMsg
	err := readFrame(strings.NewReader("=== RUN   TestX\n"), &m)
	if err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("err %v", err)
	}
	if code := WorkerMain(t.Context(), strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
		t.Fatalf("WorkerMain without configuration: exit %d, want 2", code)
	}
}

// TestIdleWorkerRSS measures the resident memory of one idle worker (a
// session up, one subscribed node) for docs/benchmarks.md: the test
// binary carries more code than smelter-gateway, so this is an upper
// bound.
func TestIdleWorkerRSS(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	cfg := baseConfig(t, f)
	cfg.Isolation = IsolationProcess
	c, err := New("dev-1", cfg, pointsFor(f, "bf-2", ModeSubscribe, "hot_blast_temp"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 20*time.Second, "values", func() bool { return rec.has(0, telemetry.QualityGood, 1183.5) })
	rss, err := vmRSS(c.Status().WorkerPID)
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 {
		t.Fatalf("VmRSS %d kB", rss)
	}
	t.Logf("idle worker VmRSS: %d kB", rss)
}

// vmRSS reads VmRSS (kB) from /proc/<pid>/status.
func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, errors.New("no VmRSS")
}

// TestWatchParentCancelsWhenReparented: the worker's second line of
// defence, for a parent that died while the worker's stdin stayed open.
func TestWatchParentCancelsWhenReparented(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchParent(ctx, cancel, os.Getppid()+1, time.Millisecond) // not our parent: as if re-parented
	}()
	<-done
	if ctx.Err() == nil {
		t.Fatal("watchParent returned without cancelling")
	}
}

// TestWorkerEnv: a worker gets WorkerEnv and GOGC=WorkerGOGC, unless the
// gateway's environment sets GOGC, which it then inherits unchanged.
func TestWorkerEnv(t *testing.T) {
	env := workerEnv([]string{"PATH=/bin", "SMELTER_X=1"})
	if !slices.Contains(env, WorkerEnv+"=1") || !slices.Contains(env, "GOGC="+WorkerGOGC) || !slices.Contains(env, "PATH=/bin") {
		t.Fatalf("env %v", env)
	}
	env = workerEnv([]string{"PATH=/bin", "GOGC=200"})
	if !slices.Contains(env, "GOGC=200") || slices.Contains(env, "GOGC="+WorkerGOGC) {
		t.Fatalf("env with GOGC set: %v", env)
	}
}

// TestStderrTailKeepsLastError: the worker's last ERROR line (message and
// err) is kept for its death report; other levels and non-JSON lines are
// not.
func TestStderrTailKeepsLastError(t *testing.T) {
	in := strings.Join([]string{
		`{"time":"t","level":"ERROR","msg":"first","err":"e1"}`,
		`{"time":"t","level":"ERROR","msg":"opc ua worker: cannot send a frame to the gateway; stopping the worker","device":"d","err":"opcua: worker frame units: boom"}`,
		`{"time":"t","level":"WARN","msg":"later warning","err":"w"}`,
		`not json`,
	}, "\n")
	var st stderrTail
	st.consume(t.Context(), strings.NewReader(in), func(string) *slog.Logger { return slog.New(slog.DiscardHandler) })
	want := "opc ua worker: cannot send a frame to the gateway; stopping the worker: opcua: worker frame units: boom"
	if got := st.lastErr(); got != want {
		t.Fatalf("last error %q, want %q", got, want)
	}
}
