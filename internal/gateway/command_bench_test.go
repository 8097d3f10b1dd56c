package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/command"
	"github.com/smelterio/smelter/internal/gwconfig"
)

// BenchmarkCommandLatency measures a command from the sender's publish to
// its "verified" answer, over real sockets: NATS request on loopback,
// signature check, three audit records each acknowledged by JetStream
// (file store), the id recorded and synced twice, a Modbus read, write and
// read-back against a Modbus TCP server on loopback. It reports the p50
// and p99 of the iterations (docs/benchmarks.md).
func BenchmarkCommandLatency(b *testing.B) {
	r := newCmdRig(b, "operator")
	startQuiet(b, r.cfg)
	r.waitListening(b)
	benchCommands(b, r, func(c *command.Command) command.Result { return *r.send(b, c) })
}

// startQuiet runs a gateway without logs until b ends.
func startQuiet(b testing.TB, cfg *gwconfig.Config) {
	g, err := New(cfg, Options{DrainTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
}

// benchCommands times signed commands that alternate the setpoint between
// 0.70 and 0.75 MPa, each sent with send until verified, and reports the
// p50 and p99 in ms.
func benchCommands(b *testing.B, r *cmdRig, send func(*command.Command) command.Result) {
	var lat []time.Duration
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		v := 0.7 + 0.05*float64(i%2)
		c := r.signed(b, r.cmd(fmt.Sprintf("bench-%d", i), "generic.sp-1", "pressure_setpoint", command.Num(v), "MPa"))
		start := time.Now()
		res := send(c)
		lat = append(lat, time.Since(start))
		if res.Verdict != command.Verified {
			b.Fatalf("%+v", res)
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
