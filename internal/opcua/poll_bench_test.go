package opcua

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// benchPollServer starts benchServer with n signals in a child process (so
// that the benchmark's allocations are the client's alone) and returns its
// endpoint.
func benchPollServer(b *testing.B, n int) string {
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

// BenchmarkPollRead1k is one poll cycle of a 1,000-point group (one Read
// request within the server's MaxNodesPerRead of 1,000) over loopback: the
// client's time and allocations per poll.
func BenchmarkPollRead1k(b *testing.B) {
	const n = 1000
	endpoint := benchPollServer(b, n)
	points := make([]Point, n)
	for i := range points {
		points[i] = Point{NodeID: fmt.Sprintf("ns=1;s=bench.s%05d", i), Mode: ModePoll, PollInterval: time.Second}
	}
	cfg := Config{Endpoint: endpoint, DataDir: b.TempDir(), RequestTimeout: 30 * time.Second, Isolation: IsolationNone}
	c, err := New("bench", cfg, points, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	cl, err := connect(ctx, &c.cfg, c.log, c.cfg.RequestTimeout)
	if err != nil {
		b.Fatal(err)
	}
	defer closeClient(cl)
	nodes, _, err := c.resolve(ctx, cl)
	if err != nil {
		b.Fatal(err)
	}
	lim, err := c.limits(ctx, cl)
	if err != nil {
		b.Fatal(err)
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	p := c.newPoller(cl, nodes, idx, lim)
	b.ReportAllocs()
	for b.Loop() {
		if err := p.read(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if p.ss[n-1].Index != n-1 || !p.ss[n-1].Quality.HasValue() {
		b.Fatalf("last sample %+v", p.ss[n-1])
	}
}
