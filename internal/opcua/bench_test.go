package opcua

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// TestMain doubles as the benchmark's server process: the OPC UA front runs
// in a child so that the parent's CPU time is the client's alone. It is
// also the session worker when the driver re-executes the test binary
// (isolation process): the same entry point as smelter-gateway's hidden
// opcua-worker command.
func TestMain(m *testing.M) {
	pinWriteForTest = blockedPinWrite // in the workers too
	if os.Getenv(WorkerEnv) == "1" {
		if dev := os.Getenv(wedgeEnv); dev != "" {
			wedgeForTest = func(ctx context.Context, id string) {
				if id == dev {
					<-ctx.Done()
				}
			}
		}
		os.Exit(WorkerMain(context.Background(), os.Stdin, os.Stdout, os.Stderr))
	}
	if n, _ := strconv.Atoi(os.Getenv("SMELTER_OPCUA_BENCH_SERVER")); n > 0 {
		benchServer(n)
		return
	}
	os.Exit(m.Run())
}

// benchServer serves n signals that all change every second until stdin closes.
func benchServer(n int) {
	src := &source{class: "generic"}
	for i := range n {
		src.signals = append(src.signals, fmt.Sprintf("s%05d", i))
		src.values = append(src.values, float64(i))
	}
	f, err := opcuafront.New(opcuafront.Config{Limits: opcuafront.Limits{MaxMonitoredItemsPerCall: 1000, MaxNodesPerRead: 1000}},
		[]opcuafront.Asset{{ID: "bench", Source: src}}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := f.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(f.Endpoint())
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		cancel()
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for round := 1.0; ; round++ {
		select {
		case <-ctx.Done():
			_ = f.Stop()
			return
		case now := <-t.C:
			for i := range src.values {
				src.values[i] = float64(i) + round/1000
			}
			f.Refresh(now)
		}
	}
}

// benchServerProcess starts benchServer with n signals in a child process (so
// that the benchmark's allocations are the client's alone) and returns its
// endpoint.
func benchServerProcess(b *testing.B, n int) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SMELTER_OPCUA_BENCH_SERVER="+strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	return line[:len(line)-1]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSubscribe10k: one client subscribed to 10,000 monitored items that
// change every second. One iteration is one second of traffic; reported:
// notifications/s received and the client's CPU in cores.
func BenchmarkSubscribe10k(b *testing.B) { benchSubscribe10k(b, IsolationNone) }

// BenchmarkSubscribe10kIsolated is the same load through a session
// worker: cpu-cores is the gateway's process, worker-cores the worker's.
func BenchmarkSubscribe10kIsolated(b *testing.B) { benchSubscribe10k(b, IsolationProcess) }

func benchSubscribe10k(b *testing.B, isolation string) {
	const n = 10000
	endpoint := benchServerProcess(b, n)
	points := make([]Point, n)
	for i := range points {
		points[i] = Point{NodeID: fmt.Sprintf("ns=1;s=bench.s%05d", i), SamplingInterval: time.Second}
	}
	cfg := Config{Endpoint: endpoint, DataDir: b.TempDir(), PublishInterval: 500 * time.Millisecond, RequestTimeout: 30 * time.Second, Isolation: isolation}
	c, err := New("bench", cfg, points, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx, func(cyc *sample.Cycle) { got.Add(int64(len(cyc.Samples))) })
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(60 * time.Second)
	for got.Load() < 2*n { // initial values plus one full change round
		if time.Now().After(deadline) {
			b.Fatalf("only %d notifications after 60s", got.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportAllocs()
	wpid := c.Status().WorkerPID
	start, cpu0, w0, n0 := time.Now(), cpuTime(), procCPU(wpid), got.Load()
	for b.Loop() {
		next := time.Now().Add(time.Second)
		time.Sleep(time.Until(next))
	}
	wall := time.Since(start).Seconds()
	b.ReportMetric(float64(got.Load()-n0)/wall, "notifications/s")
	b.ReportMetric((cpuTime()-cpu0).Seconds()/wall, "cpu-cores")
	if wpid > 0 {
		b.ReportMetric((procCPU(wpid)-w0).Seconds()/wall, "worker-cores")
	}
}

// procCPU is the user+system CPU time of process pid from /proc/<pid>/stat
// (clock ticks of 10 ms, the Linux USER_HZ); 0 for pid 0.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// after the command: state is field 3, utime 14 and stime 15
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

func BenchmarkToSample(b *testing.B) {
	dvs := benchDataValues()
	b.ReportAllocs()
	var sink sample.Sample
	for b.Loop() {
		for i, dv := range dvs {
			sink = toSample(i, dv)
		}
	}
	_ = sink
}

func benchDataValues() []*ua.DataValue {
	out := make([]*ua.DataValue, 100)
	for i := range out {
		out[i] = &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueStatusCode | ua.DataValueSourceTimestamp,
			Value: ua.MustVariant(float64(i)), SourceTimestamp: time.Now()}
	}
	return out
}
