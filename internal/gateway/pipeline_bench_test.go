package gateway

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
)

// The pipeline benchmark measures the whole gateway, poll to PubAck with
// both uplinks on, as the issue states it: one gateway polling 100 devices x
// 100 registers over loopback. The gateway runs in a child process (this
// test binary re-executed) so that its CPU time and RSS are measured alone;
// the Modbus servers and both brokers run in the parent.
//
//	go test -run '^$' -bench BenchmarkPipeline -benchtime 1x ./internal/gateway
//
// Environment: SMELTER_BENCH_DEVICES (100), SMELTER_BENCH_POINTS (100),
// SMELTER_BENCH_INTERVAL (100ms), SMELTER_BENCH_SECONDS (20).

const childEnv = "SMELTER_PIPELINE_CHILD"

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// childResult is what the child reports on stdout when it stops.
type childResult struct {
	P50, P99, Max float64 // data age seconds (read -> broker ack), NATS uplink
	Published     float64
}

// TestPipelineChild is the child process of BenchmarkPipeline; it does
// nothing in a normal test run.
func TestPipelineChild(t *testing.T) {
	path := os.Getenv(childEnv)
	if path == "" {
		t.Skip("child process of BenchmarkPipeline only")
	}
	cfg, err := gwconfig.Load(path, Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{DrainTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	secs, _ := strconv.Atoi(os.Getenv("SMELTER_CHILD_SECONDS"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
	defer cancel()
	if err := g.Run(ctx); err != nil {
		t.Fatal(err)
	}
	res := childResult{}
	mfs, err := g.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "smelter_gateway_data_age_seconds":
			for _, m := range mf.GetMetric() {
				if labelValue(m, "uplink") == "nats" {
					h := m.GetHistogram()
					res.P50 = quantile(h, 0.5)
					res.P99 = quantile(h, 0.99)
				}
			}
		case "smelter_gateway_published_total":
			for _, m := range mf.GetMetric() {
				if labelValue(m, "uplink") == "nats" {
					res.Published = m.GetCounter().GetValue()
				}
			}
		}
	}
	out, _ := json.Marshal(res)
	fmt.Printf("PIPELINE-RESULT %s\n", out)
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// quantile estimates a quantile from histogram buckets (upper bound of the
// bucket holding it, as Prometheus' histogram_quantile would bound it).
func quantile(h *dto.Histogram, q float64) float64 {
	total := float64(h.GetSampleCount())
	if total == 0 {
		return 0
	}
	bs := h.GetBucket()
	sort.Slice(bs, func(i, j int) bool { return bs[i].GetUpperBound() < bs[j].GetUpperBound() })
	prevBound, prevCount := 0.0, 0.0
	for _, b := range bs {
		c := float64(b.GetCumulativeCount())
		if c >= q*total {
			// linear interpolation inside the bucket
			if c == prevCount {
				return b.GetUpperBound()
			}
			return prevBound + (b.GetUpperBound()-prevBound)*(q*total-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = b.GetUpperBound(), c
	}
	return math.Inf(1)
}

func BenchmarkPipeline(b *testing.B) {
	devices := envInt("SMELTER_BENCH_DEVICES", 100)
	points := envInt("SMELTER_BENCH_POINTS", 100)
	seconds := envInt("SMELTER_BENCH_SECONDS", 20)
	interval := 100 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv("SMELTER_BENCH_INTERVAL")); err == nil {
		interval = v
	}
	dir := b.TempDir()

	// devices: one Modbus TCP server each, 100 float32-free uint16 registers
	// read as one request (int16 points scaled x0.1 to a canonical unit).
	var tpl strings.Builder
	tpl.WriteString("template: bench\nclass: generic\npoints:\n")
	for i := range points {
		fmt.Fprintf(&tpl, "  - {signal: s%03d, table: holding, address: %d, type: int16, scale: 0.1, unit: kW}\n", i, i)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(tpl.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	nsrv, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		b.Fatal(err)
	}
	defer nsrv.Shutdown()
	msrv, err := brokers.StartMQTT(brokers.MQTTOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = msrv.Close() }()

	var cfg strings.Builder
	fmt.Fprintf(&cfg, "gateway: {id: gw-bench, site: bench, data_dir: ./data}\nhttp: {listen: \"off\"}\nlog: {level: warn}\n%s", os.Getenv("SMELTER_BENCH_EXTRA"))
	fmt.Fprintf(&cfg, "uplinks:\n  nats: {url: %q, max_pending: 1024}\n  mqtt: {url: %q, max_inflight: 1024}\ndevices:\n", nsrv.URL(), msrv.URL())
	for d := range devices {
		bank := modbustest.NewBank()
		regs := make([]byte, 2*points)
		for i := range points {
			binary.BigEndian.PutUint16(regs[2*i:], uint16(1000+i))
		}
		bank.SetBytes(modbustest.HoldingRegisters, 0, regs)
		srv := modbustest.StartServer(b, bank)
		fmt.Fprintf(&cfg, "  - {id: dev-%03d, class: generic, poll_interval: %s, template: bench.yaml, modbus: {address: %q, unit_id: 1}}\n",
			d, interval, srv.Addr)
	}
	cfgPath := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}

	// consumer: count readings that reached JetStream and MQTT
	nc, err := nats.Connect(nsrv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()

	b.ResetTimer()
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPipelineChild$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"="+cfgPath, "SMELTER_CHILD_SECONDS="+strconv.Itoa(seconds))
		var out strings.Builder
		cmd.Stdout = &out
		cmd.Stderr = &out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("child: %v\n%s", err, out.String())
		}
		wall := time.Since(start)
		var res childResult
		for _, line := range strings.Split(out.String(), "\n") {
			if rest, ok := strings.CutPrefix(line, "PIPELINE-RESULT "); ok {
				if err := json.Unmarshal([]byte(rest), &res); err != nil {
					b.Fatal(err)
				}
			}
		}
		js, _ := jetstream.New(nc)
		st, err := js.Stream(context.Background(), "SMELTER")
		if err != nil {
			b.Fatal(err)
		}
		info, _ := st.Info(context.Background())
		cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		pointsDone := res.Published * float64(points) // batches of the data kind dominate: births are a handful
		b.ReportMetric(pointsDone/float64(seconds), "points/s")
		b.ReportMetric(cpu.Seconds()/(pointsDone/1e6), "cpu-s/Mpoints")
		if ru != nil {
			b.ReportMetric(float64(ru.Maxrss)/1024, "maxrss-MB")
		}
		b.ReportMetric(res.P50*1000, "age-p50-ms")
		b.ReportMetric(res.P99*1000, "age-p99-ms")
		b.ReportMetric(float64(info.State.Msgs), "stream-msgs")
		b.Logf("wall %v, child cpu %v, published %v batches, stream %d msgs", wall, cpu, res.Published, info.State.Msgs)
	}
}
