// Command smelter-gateway polls industrial equipment, normalizes every
// reading, spools it durably and publishes it to NATS JetStream and MQTT.
//
// Usage:
//
//	smelter-gateway run -config gateway.yaml
//	smelter-gateway validate gateway.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/memlimit"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/procs"
	"github.com/smelterio/smelter/internal/version"
)

const usage = `smelter-gateway: industrial telemetry gateway (Modbus -> spool -> NATS JetStream / MQTT)

Commands:
  run -config FILE          poll devices and publish (SIGINT/SIGTERM: stop polling, flush, exit; SIGHUP: reload FILE)
  validate FILE             check a configuration and its templates; print every error as file:line: field: reason
  scan modbus ADDRESS       probe which unit ids answer and map their readable registers
  browse ENDPOINT           walk an OPC UA server's address space; -write-config writes a device config
  endpoints ENDPOINT        list the security policies and logins an OPC UA server offers
  command keygen|send       create a command signing key; sign and send a command (docs/commands.md)
  version                   print the version, commit, build date and Go version
  help                      this text

Every command takes -h for its flags.

Examples:
  smelter-gateway validate configs/gateway.example.yaml
  smelter-gateway run -config /etc/smelter/gateway.yaml
  smelter-gateway scan modbus 192.168.1.20:502 -units 1-10
  smelter-gateway scan modbus /dev/ttyUSB0 -transport rtu -baud 9600 -parity N -units 1-32
  smelter-gateway endpoints opc.tcp://10.0.0.7:4840
  smelter-gateway browse opc.tcp://10.0.0.7:4840 -depth 4 -write-config cnc-7.yaml

Docs: docs/configuration.md, docs/schema.md, docs/operations.md
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if version.Command("smelter-gateway", args, stdout) {
		return 0
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "scan":
		return cmdScan(args[1:], stdout, stderr)
	case "browse":
		return cmdBrowse(args[1:], stdout, stderr)
	case "endpoints":
		return cmdEndpoints(args[1:], stdout, stderr)
	case opcua.WorkerCommand:
		// hidden: an OPC UA session worker, started by this binary itself
		// per endpoint (isolation endpoint) or device (isolation process), docs/opcua.md
		return opcua.WorkerMain(context.Background(), os.Stdin, stdout, stderr)
	case "command":
		return cmdCommand(args[1:], stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "smelter-gateway: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	offline := fs.Bool("offline", false, "skip the checks of this machine: secrets (password_env variables, password, token and creds files) and TLS files")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: smelter-gateway validate [-offline] FILE\n\nChecks FILE and every template it names, and (unless -offline) the secrets\nand TLS files it names on this machine, without connecting anything;\nexits 1 on any error.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	memlimit.Loading() // the peak of a large file's YAML tree, as in run
	cfg, err := gwconfig.Load(fs.Arg(0), gateway.Drivers()...)
	if cfg != nil && !*offline {
		if lerr := cfg.CheckLocal(); lerr != nil {
			err = append(confload.AsErrors(err), confload.AsErrors(lerr)...).Sorted()
		}
	}
	if cfg != nil {
		// warnings too when there are errors: a file is often fixed in one go
		for _, w := range cfg.Warnings {
			fmt.Fprintf(stderr, "warning: %v\n", w)
		}
	}
	if err != nil {
		printConfigErrors(stderr, err)
		return 1
	}
	points := 0
	assets := map[string]bool{}
	for _, d := range cfg.Devices {
		points += d.Norm.Len()
		assets[d.Asset.ID] = true
	}
	devices := plural(len(assets), "device")
	if len(assets) != len(cfg.Devices) { // devices with sources
		devices += " (" + plural(len(cfg.Devices), "source") + ")"
	}
	fmt.Fprintf(stdout, "%s: ok (gateway %s, %s, %s, %s)\n", fs.Arg(0), cfg.ID, devices, plural(points, "point"), plural(len(cfg.Warnings), "warning"))
	return 0
}

// plural writes n and the noun, with an s unless n is 1: "1 device", "2 sources".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func printConfigErrors(w io.Writer, err error) {
	if es := confload.AsErrors(err); es != nil {
		for _, e := range es {
			fmt.Fprintln(w, e.Error())
		}
		fmt.Fprintf(w, "%d error(s)\n", len(es))
		return
	}
	fmt.Fprintln(w, err)
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "gateway.yaml", "configuration file")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: smelter-gateway run -config FILE\n\nSIGINT/SIGTERM stop (polling stops, spooled data is flushed);\nSIGHUP reloads FILE: the new configuration is validated and checked\n(secrets and TLS files read, http.listen bound) before the running one\nstops; one that passes replaces it (the spool, its cursors and the metrics\ncarry over), one that fails is refused and the running configuration stays.\n\nhttp.listen is bound and the data directory locked before any uplink connects.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Loading and compiling a 20,000-point configuration holds its YAML
	// tree (~40 MB live) until gateway.New drops it: at Go's 100 the heap
	// doubled over it (VmHWM 103 MB; docs/benchmarks.md, "OPC UA memory,
	// third pass"), at the steady 50 it grew by half (87-92 MB, the
	// gateway's peak), so loading runs at memlimit.LoadGCPercent (GOGC
	// wins; "OPC UA set-up peak"). build applies gateway.gc_percent (or the
	// default) once the tree is gone.
	memlimit.Loading()
	cfg, err := gwconfig.Load(*config, gateway.Drivers()...)
	if err != nil {
		printConfigErrors(stderr, err)
		fmt.Fprintln(stderr, "smelter-gateway: not starting: the configuration is invalid")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// One metrics registry for the process: counters survive reloads.
	reg := prometheus.NewRegistry()
	// the Go runtime's and the process's own series (go_gc_duration_seconds,
	// go_memstats_*, process_cpu_seconds_total, process_resident_memory_bytes):
	// what tuning gateway.memory_limit and gc_percent watches
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mx := gateway.NewMetrics(reg)
	rt := &runtimeSettings{procs: procs.New(slog.New(slog.DiscardHandler), reg, "smelter_gateway")}
	gen, err := build(ctx, cfg, stderr, mx, nil, rt)
	if err != nil {
		fmt.Fprintln(stderr, "smelter-gateway: not starting:", err)
		return 1
	}
	// max_procs: auto watches the process's CPU for the process's lifetime
	procsCtx, stopProcs := context.WithCancel(ctx)
	procsDone := make(chan struct{})
	go func() { _ = rt.procs.Run(procsCtx); close(procsDone) }() // Run returns nil when its ctx ends
	defer func() { stopProcs(); <-procsDone }()
	for {
		next, err := gen.runUntilReload(ctx, *config, stderr, mx, hup, rt)
		if err != nil {
			gen.log.Error("stopped", "err", err)
			return 1
		}
		if next == nil {
			gen.log.Info("stopped")
			return 0
		}
		next.log.Info("configuration reloaded: running it", "devices", len(next.cfg.Devices))
		gen = next
	}
}

// generation is one configuration's gateway, built and checked before it
// runs: its logger, and the HTTP front it serves on (bound before any
// uplink connects; kept across a reload that keeps http.listen).
type generation struct {
	cfg   *gwconfig.Config
	log   *slog.Logger
	g     *gateway.Gateway
	front *front // nil without http.listen
}

// front is a bound HTTP listener serving the running generation's handler.
type front struct {
	ln      net.Listener
	h       atomic.Pointer[http.Handler]
	started bool
	cancel  context.CancelFunc
	done    chan error
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) { (*f.h.Load()).ServeHTTP(w, r) }

// serve points the front at h and starts serving when not yet started.
func (f *front) serve(ctx context.Context, h http.Handler, log *slog.Logger) {
	f.h.Store(&h)
	if f.started {
		return
	}
	f.started = true
	log.Info("http listening", "addr", f.ln.Addr().String())
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- gateway.ServeListener(sctx, f.ln, f) }()
}

// stop shuts the server down (or closes a listener never served).
func (f *front) stop() error {
	if !f.started {
		return f.ln.Close()
	}
	f.cancel()
	return <-f.done
}

// build makes the gateway of cfg and fully checks it before anything runs:
// the secrets and TLS files are read (gateway.New) and http.listen is bound
// (or taken over from prev when unchanged). It connects nothing; on error
// it leaves prev untouched.
// runtimeSettings are the process's runtime controls kept across reloads
// (nil in tests that build without them).
type runtimeSettings struct {
	procs *procs.Controller
}

func build(ctx context.Context, cfg *gwconfig.Config, stderr io.Writer, mx *gateway.Metrics, prev *generation, rt *runtimeSettings) (*generation, error) {
	log, err := logging.New(stderr, cfg.Raw.Log.Level, cfg.Raw.Log.Format)
	if err != nil {
		return nil, err
	}
	log = log.With("gateway", cfg.ID)
	g, err := gateway.New(cfg, gateway.Options{Logger: log, Metrics: mx})
	if err != nil {
		return nil, err
	}
	gen := &generation{cfg: cfg, log: log, g: g}
	addr := cfg.Raw.HTTP.Listen
	switch {
	case addr == "":
	case prev != nil && prev.front != nil && prev.cfg.Raw.HTTP.Listen == addr:
		gen.front = prev.front // the same address: the running listener carries over
	default:
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("http.listen: %w", err)
		}
		gen.front = &front{ln: ln}
	}
	// the runtime's memory and GOMAXPROCS settings change only with a
	// configuration that runs (a refused reload leaves the running ones)
	applyMemory(cfg, log)
	if rt != nil {
		rt.procs.SetLogger(log)
		rt.procs.Apply(cfg.MaxProcs, "gateway.max_procs")
	}
	// Loading is over: gateway.New dropped the configuration's YAML tree
	// (tens of MB for 20,000 points). Hand the pages it held back to the
	// system now; the runtime's background scavenger returns them only
	// slowly, and at 20 OPC UA devices x 1,000 nodes they were still in
	// the gateway's RSS a minute later (docs/benchmarks.md, "OPC UA
	// memory, third pass"). One collection, once per configuration.
	debug.FreeOSMemory()
	return gen, nil
}

// applyMemory applies gateway.memory_limit and gateway.gc_percent (the
// environment's GOMEMLIMIT and GOGC win) and logs what is in force when it
// is not the default. It also samples allocations for the heap profile only
// where http.pprof can serve it (memlimit.ProfileHeap; GODEBUG's
// memprofilerate wins): sampling runs while a configuration loads, so a
// served profile holds the configuration's tables, and stops after it when
// nothing can read it.
func applyMemory(cfg *gwconfig.Config, log *slog.Logger) {
	if rate, src := memlimit.ProfileHeap(cfg.Raw.HTTP.PProf); src == memlimit.ProfileFromEnv {
		log.Info("heap profile rate", "bytes", rate, "from", string(src))
	}
	if lim, src := memlimit.Apply(cfg.MemoryLimit); lim > 0 || src == memlimit.FromEnv {
		log.Info("memory limit", "limit", memlimit.Format(lim), "from", string(src))
	}
	if pct, src := memlimit.ApplyGCPercent(cfg.GCPercent); src != memlimit.GCFromDefault {
		log.Info("gc percent", "percent", pct, "from", string(src))
		if v := os.Getenv(memlimit.GCEnvVar); src == memlimit.GCFromEnv && !memlimit.ValidGOGC(v) {
			log.Warn("GOGC is not a whole number or off: the Go runtime uses 100", "GOGC", v)
		}
	}
}

// runUntilReload runs the generation until ctx ends (it returns nil, nil)
// or SIGHUP brings a new configuration that builds and checks (it stops
// this gateway cleanly, flushing what it can, and returns the new one). A
// configuration that fails to load or build is logged and refused; the
// running gateway goes on.
func (gen *generation) runUntilReload(ctx context.Context, path string, stderr io.Writer, mx *gateway.Metrics, hup <-chan os.Signal, rt *runtimeSettings) (*generation, error) {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var httpDone <-chan error
	if gen.front != nil {
		gen.front.serve(ctx, gen.g.Handler(), gen.log)
		httpDone = gen.front.done
	}
	stopHTTP := func() {
		if gen.front != nil {
			if err := gen.front.stop(); err != nil {
				gen.log.Warn("http server", "err", err)
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- gen.g.Run(runCtx) }()
	for {
		select {
		case err := <-done:
			stopHTTP()
			if err != nil && !errors.Is(err, context.Canceled) {
				return nil, err
			}
			return nil, nil
		case err := <-httpDone:
			cancel()
			if rerr := <-done; rerr != nil && !errors.Is(rerr, context.Canceled) {
				gen.log.Error("gateway stopped", "err", rerr)
			}
			return nil, fmt.Errorf("http: %w", err)
		case <-hup:
			// the new configuration's tree, beside the running gateway's
			// heap, at the loading target; a refusal puts the running
			// target back, build applies the new one
			restore := memlimit.Loading()
			cfg, err := gwconfig.Load(path, gateway.Drivers()...)
			if err != nil {
				restore()
				gen.log.Error("reload refused: the new configuration is invalid; the running one stays", "file", path,
					"errors", err.Error())
				continue
			}
			if err := cfg.CheckLocal(); err != nil { // secrets, TLS and password files, as validate checks them
				restore()
				gen.log.Error("reload refused: the new configuration names files or variables that cannot be read; the running one stays",
					"file", path, "errors", err.Error())
				continue
			}
			next, err := build(ctx, cfg, stderr, mx, gen, rt)
			if err != nil {
				restore()
				gen.log.Error("reload refused: the new configuration cannot run; the running one stays", "file", path,
					"err", err.Error())
				continue
			}
			cancel()
			err = <-done
			if next.front != gen.front {
				stopHTTP()
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				if next.front != nil && next.front != gen.front {
					_ = next.front.stop()
				}
				return nil, err
			}
			return next, nil
		}
	}
}
