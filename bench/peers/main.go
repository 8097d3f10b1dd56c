// Command peers runs smelter-gateway and Telegraf one after the other on the
// same Modbus TCP (libmodbus) and OPC UA (node-opcua) servers and prints, for
// each: points/s offered and delivered, CPU-seconds per million points
// delivered, and RSS (median while running, peak). make bench-peers builds
// what it needs and runs it; docs/benchmarks.md, "Side by side with
// Telegraf", has the figures and what each side does.
//
//	go run ./bench/peers -gateway bin/smelter-gateway -telegraf bench/peers/.bin/telegraf-v1.37.2 \
//	    -modbus-server bench/peers/.bin/modbus-server [-steps 10000,50000] [-opcua=false]
//
// Each side gets its own embedded nats-server on a random loopback port (the
// gateway publishes to JetStream and waits for every PubAck; Telegraf's
// outputs.nats publishes core NATS); a subscriber in this process counts the
// points that reach the broker. CPU and memory are read from /proc for the
// agent's whole process tree (the gateway's OPC UA session workers included)
// over the measured window, after a warm-up.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/smelterio/smelter/internal/brokers"
)

// options are the command line.
type options struct {
	gateway, telegraf, modbusServer string
	opcuaScript, nodePath           string
	steps                           []int
	registers, devicesPerServer     int
	interval                        time.Duration
	opcua                           bool
	opcuaNodes, opcuaServers        int
	opcuaSessions                   int
	opcuaIsolation                  string
	startTimeout, warmup, duration  time.Duration
	opcuaWarmup, opcuaDuration      time.Duration
	sides                           []string
	out                             string
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.StringVar(&o.gateway, "gateway", "bin/smelter-gateway", "smelter-gateway binary")
	fs.StringVar(&o.telegraf, "telegraf", "", "Telegraf binary (make bench-peers builds it)")
	fs.StringVar(&o.modbusServer, "modbus-server", "bench/peers/.bin/modbus-server", "libmodbus server binary (bench/peers/modbus/server.c)")
	fs.StringVar(&o.opcuaScript, "opcua-server", "bench/peers/opcua/server.js", "node-opcua server script")
	fs.StringVar(&o.nodePath, "node-path", "deploy/opcua-interop/node_modules", "node_modules holding node-opcua")
	steps := fs.String("steps", "10000,50000,100000,200000", "Modbus steps, points/s offered (comma-separated; each a multiple of registers x 1/interval)")
	fs.IntVar(&o.registers, "registers", 100, "holding registers per Modbus device, read as one request")
	fs.IntVar(&o.devicesPerServer, "devices-per-server", 5, "Modbus devices (connections, unit ids 1..n) per libmodbus server")
	fs.DurationVar(&o.interval, "interval", 100*time.Millisecond, "poll interval (Modbus) and sampling/publishing interval (OPC UA)")
	fs.BoolVar(&o.opcua, "opcua", true, "run the OPC UA step too")
	fs.IntVar(&o.opcuaNodes, "opcua-nodes", 20000, "OPC UA nodes in all, each changing every -interval")
	fs.IntVar(&o.opcuaServers, "opcua-servers", 2, "node-opcua server processes")
	fs.IntVar(&o.opcuaSessions, "opcua-sessions", 10, "sessions (devices, opcua_listener inputs) per server, each subscribed to its own nodes/servers/sessions of them (node-opcua sends at most 1,000 notifications per publish)")
	fs.StringVar(&o.opcuaIsolation, "opcua-isolation", "none", "the gateway's opcua.isolation: none (sessions in its process, as Telegraf) or process (a worker process per device, its default)")
	fs.DurationVar(&o.startTimeout, "start-timeout", 3*time.Minute, "how long an agent may take to deliver its first point")
	fs.DurationVar(&o.warmup, "warmup", 10*time.Second, "time after the first point delivered before measuring")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "measured window per side and step")
	fs.DurationVar(&o.opcuaWarmup, "opcua-warmup", 30*time.Second, "-warmup of the OPC UA step (Telegraf drains what it buffered while its inputs started)")
	fs.DurationVar(&o.opcuaDuration, "opcua-duration", 60*time.Second, "-duration of the OPC UA step")
	sides := fs.String("sides", "smelter,telegraf", "which agents, in order")
	fs.StringVar(&o.out, "out", "bench/peers/out", "folder for the results (markdown), configs and logs")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for s := range strings.SplitSeq(*steps, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			return o, fmt.Errorf("-steps: %q is not a positive number of points/s", s)
		}
		o.steps = append(o.steps, v)
	}
	for s := range strings.SplitSeq(*sides, ",") {
		switch s = strings.TrimSpace(s); s {
		case "smelter", "telegraf":
			o.sides = append(o.sides, s)
		default:
			return o, fmt.Errorf("-sides: %q is neither smelter nor telegraf", s)
		}
	}
	switch {
	case o.registers < 1 || o.registers > 125:
		return o, fmt.Errorf("-registers: %d is not 1..125 (one Modbus read)", o.registers)
	case o.devicesPerServer < 1 || o.devicesPerServer > 247:
		return o, fmt.Errorf("-devices-per-server: %d is not 1..247", o.devicesPerServer)
	case o.interval < 10*time.Millisecond:
		return o, fmt.Errorf("-interval: %v is below 10ms", o.interval)
	case o.opcua && (o.opcuaServers < 1 || o.opcuaSessions < 1 || o.opcuaNodes < o.opcuaServers*o.opcuaSessions || o.opcuaNodes/o.opcuaServers > 100000):
		return o, fmt.Errorf("-opcua-nodes %d / -opcua-servers %d / -opcua-sessions %d: want 1..100000 nodes per server and at least one per session",
			o.opcuaNodes, o.opcuaServers, o.opcuaSessions)
	case o.opcuaIsolation != "none" && o.opcuaIsolation != "process":
		return o, fmt.Errorf("-opcua-isolation: %q is neither none nor process", o.opcuaIsolation)
	case slices.Contains(o.sides, "telegraf") && o.telegraf == "":
		return o, errors.New("-telegraf: missing (make bench-peers builds it)")
	}
	// The agents run in their own folders: binaries by absolute path.
	for _, p := range []*string{&o.gateway, &o.telegraf, &o.modbusServer, &o.opcuaScript, &o.nodePath} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return o, err
		}
		*p = abs
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	stamp := time.Now().UTC().Format("20060102T150405Z")
	outDir, err := filepath.Abs(filepath.Join(o.out, stamp))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	env := describeEnv(ctx, o)
	fmt.Print(env.markdown())
	fmt.Printf("\nconfigs and logs: %s\n\n", outDir)
	var rows []result
	report := func() error {
		env.loadEnd = loadavg()
		md := env.markdown() + "\n" + table(rows)
		return os.WriteFile(filepath.Join(outDir, "results.md"), []byte(md), 0o644)
	}
	for _, rate := range o.steps {
		perDevice := float64(o.registers) * float64(time.Second) / float64(o.interval)
		devices := int(float64(rate)/perDevice + 0.5)
		if devices < 1 {
			return fmt.Errorf("-steps %d: below one device (%g points/s)", rate, perDevice)
		}
		w := workload{name: fmt.Sprintf("Modbus %dk", rate/1000), nominal: float64(devices) * perDevice,
			detail: fmt.Sprintf("%d devices x %d registers / %v on %d libmodbus servers", devices, o.registers, o.interval,
				(devices+o.devicesPerServer-1)/o.devicesPerServer)}
		r, err := runModbus(ctx, o, w, devices, filepath.Join(outDir, strings.ReplaceAll(w.name, " ", "-")))
		rows = append(rows, r...)
		if err != nil {
			return errors.Join(err, report())
		}
		if err := report(); err != nil {
			return err
		}
	}
	if o.opcua {
		w := workload{name: fmt.Sprintf("OPC UA %dk nodes", o.opcuaNodes/1000),
			nominal: float64(o.opcuaNodes) * float64(time.Second) / float64(o.interval),
			detail: fmt.Sprintf("%d nodes changing every %v on %d node-opcua servers, %d sessions each; gateway isolation %s",
				o.opcuaNodes, o.interval, o.opcuaServers, o.opcuaSessions, o.opcuaIsolation)}
		r, err := runOPCUA(ctx, o, w, filepath.Join(outDir, "opcua"))
		rows = append(rows, r...)
		if err != nil {
			return errors.Join(err, report())
		}
	}
	if err := report(); err != nil {
		return err
	}
	fmt.Printf("\n%s\nwritten to %s\n", table(rows), filepath.Join(outDir, "results.md"))
	failed := 0
	for _, r := range rows {
		if r.failed {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d runs failed (the table's notes say why)", failed, len(rows))
	}
	return nil
}

// workload is one step of the table.
type workload struct {
	name    string
	nominal float64 // points/s the servers are polled or sampled for
	detail  string
}

func runModbus(ctx context.Context, o options, w workload, devices int, dir string) ([]result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "servers.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	nsrv := (devices + o.devicesPerServer - 1) / o.devicesPerServer
	servers, err := startModbus(ctx, o.modbusServer, nsrv, o.registers, logf)
	if err != nil {
		return nil, err
	}
	defer stopAll(servers)
	devs := make([]modbusDevice, devices)
	for i := range devs {
		devs[i] = modbusDevice{addr: servers[i/o.devicesPerServer].addr, unit: i%o.devicesPerServer + 1}
	}
	offered := func(time.Duration) float64 { return w.nominal }
	return runSides(ctx, o, w, dir, offered, func(side, sdir, url string) (string, error) {
		if side == "smelter" {
			return writeSmelterModbus(sdir, url, devs, o.registers, o.interval)
		}
		return writeTelegrafModbus(sdir, url, telegrafSubject, devs, o.registers, o.interval)
	})
}

func runOPCUA(ctx context.Context, o options, w workload, dir string) ([]result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "servers.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	per := o.opcuaNodes / o.opcuaServers
	servers, err := startOPCUA(ctx, o.opcuaScript, o.nodePath, filepath.Join(dir, "pki"), o.opcuaServers, per, o.interval, logf)
	if err != nil {
		return nil, err
	}
	defer stopAll(servers)
	var devs []opcuaDevice
	for _, s := range servers {
		for k := range o.opcuaSessions {
			first, last := k*per/o.opcuaSessions, (k+1)*per/o.opcuaSessions
			devs = append(devs, opcuaDevice{endpoint: s.addr, first: first, nodes: last - first})
		}
	}
	// Offered: the values the servers really set in the window (node-opcua
	// falls behind its interval when the machine is busy).
	var start atomic.Int64
	offered := func(window time.Duration) float64 {
		if window == 0 {
			start.Store(updates(servers))
			return 0
		}
		return float64(updates(servers)-start.Load()) / window.Seconds()
	}
	o.warmup, o.duration = o.opcuaWarmup, o.opcuaDuration
	return runSides(ctx, o, w, dir, offered, func(side, sdir, url string) (string, error) {
		if side == "smelter" {
			return writeSmelterOPCUA(sdir, url, devs, o.interval, o.opcuaIsolation)
		}
		return writeTelegrafOPCUA(sdir, url, telegrafSubject, devs, o.interval)
	})
}

const telegrafSubject = "telegraf.peers"

// runSides runs each side in turn on the running servers. offered(0) marks
// the start of a window, offered(d) returns the points/s offered over the
// window of length d.
func runSides(ctx context.Context, o options, w workload, dir string, offered func(time.Duration) float64,
	write func(side, dir, natsURL string) (string, error)) ([]result, error) {
	var rows []result
	for _, side := range o.sides {
		fmt.Printf("== %s, %s (%s)\n", w.name, side, w.detail)
		r, err := runSide(ctx, o, side, filepath.Join(dir, side), offered, write)
		r.workload, r.side = w.name, side
		if err != nil {
			r.note, r.failed = err.Error(), true
			fmt.Printf("   failed: %v\n", err)
		} else {
			fmt.Printf("   %s\n", r.line())
		}
		rows = append(rows, r)
		if ctx.Err() != nil {
			return rows, ctx.Err()
		}
	}
	return rows, nil
}

func runSide(ctx context.Context, o options, side, dir string, offered func(time.Duration) float64,
	write func(side, dir, natsURL string) (string, error)) (r result, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	store, err := os.MkdirTemp("", "peers-nats-")
	if err != nil {
		return r, err
	}
	defer func() { _ = os.RemoveAll(store) }()
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: store})
	if err != nil {
		return r, err
	}
	defer ns.Shutdown()
	cfg, err := write(side, dir, ns.URL())
	if err != nil {
		return r, err
	}
	// the gateway's spool: gigabytes at 200k points/s
	defer func() { _ = os.RemoveAll(filepath.Join(dir, "data")) }()

	nc, err := nats.Connect(ns.URL())
	if err != nil {
		return r, err
	}
	defer nc.Close()
	var points, msgs atomic.Int64
	subject, count := "smelter.v1.*.*.*.data", smelterPoints
	if side == "telegraf" {
		subject, count = telegrafSubject, telegrafPoints
	}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		points.Add(int64(count(m.Data)))
		msgs.Add(1)
	})
	if err != nil {
		return r, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return r, err
	}
	if err := nc.Flush(); err != nil {
		return r, err
	}

	logf, err := os.Create(filepath.Join(dir, side+".log"))
	if err != nil {
		return r, err
	}
	defer logf.Close()
	var cmd *exec.Cmd
	if side == "smelter" {
		cmd = exec.CommandContext(ctx, o.gateway, "run", "-config", cfg)
	} else {
		cmd = exec.CommandContext(ctx, o.telegraf, "--config", cfg)
	}
	// interrupted: SIGTERM (both flush and exit on it), SIGKILL 20 s later
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return r, err
	}
	exited := make(chan struct{}) // closed when Wait returned waitErr
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		if serr := stopAgent(cmd, exited); serr != nil && err == nil {
			err = serr
		}
	}()

	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("%s exited early (%w); its log: %s", side, waitErr, logf.Name())
		case <-time.After(d):
			return nil
		}
	}
	// Telegraf starts its service inputs (opcua_listener) one after the
	// other and writes nothing before all are up: wait for the first point.
	started := time.Now()
	for points.Load() == 0 {
		if time.Since(started) > o.startTimeout {
			return r, fmt.Errorf("no point delivered within %v of the start; its log: %s", o.startTimeout, logf.Name())
		}
		if err := sleep(100 * time.Millisecond); err != nil {
			return r, err
		}
	}
	r.firstPoint = time.Since(started)
	if err := sleep(o.warmup); err != nil {
		return r, err
	}
	s0, err := sampleTree(cmd.Process.Pid)
	if err != nil {
		return r, err
	}
	p0, t0 := points.Load(), time.Now()
	offered(0)
	var rss []int64
	last := s0
	for time.Since(t0) < o.duration {
		if err := sleep(time.Second); err != nil {
			return r, err
		}
		if last, err = sampleTree(cmd.Process.Pid); err != nil {
			return r, err
		}
		rss = append(rss, last.rss)
	}
	window := time.Since(t0)
	r.offered = offered(window)
	delivered := points.Load() - p0
	r.delivered = float64(delivered) / window.Seconds()
	cpu := last.cpu - s0.cpu
	r.cores = cpu.Seconds() / window.Seconds()
	if delivered > 0 {
		r.cpuPerM = cpu.Seconds() / (float64(delivered) / 1e6)
	}
	slices.Sort(rss)
	r.rssMedian = rss[len(rss)/2]
	r.rssPeak = max(last.hwm, rss[len(rss)-1])
	r.procs = last.procs
	if d, _ := sub.Dropped(); d > 0 {
		r.note = fmt.Sprintf("the counting subscriber dropped %d messages", d)
	}
	return r, nil
}

// stopAgent stops the agent with SIGTERM (both flush and exit on it), and
// kills its process group if it is still there after 20 s.
func stopAgent(cmd *exec.Cmd, exited <-chan struct{}) error {
	select {
	case <-exited:
		return nil // already gone: reported by the caller
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return fmt.Errorf("%s did not stop within 20 s of SIGTERM: killed", filepath.Base(cmd.Path))
	}
	// The gateway's session workers stop with it; anything left in the
	// group is killed.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	return nil
}

// natsVersion is the embedded nats-server's version.
func natsVersion() string { return server.VERSION }

func goVersion() string { return runtime.Version() }
