// Command smelter-sim runs a fleet of simulated industrial devices (see
// docs/simulators.md).
//
//	smelter-sim -fleet configs/sim-fleet.yaml -scenario configs/scenarios/demo.yaml -seed 1 -speed 1 -http 127.0.0.1:0
//
// It prints every device with its Modbus address and unit id, its OPC UA
// endpoint and node ids (ns=1;s=<device>.<signal>), and a ship's NMEA 0183
// talker address.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/version"
	"github.com/smelterio/smelter/simulators/faults"
	"github.com/smelterio/smelter/simulators/fleet"
)

func main() {
	// gopcua's server prints start-up chatter ("New Node Set", "doing
	// objects.") through the standard logger; its real diagnostics reach
	// slog through the front's logger adapter.
	stdlog.SetOutput(io.Discard)
	if version.Command("smelter-sim", os.Args[1:], os.Stdout) {
		return
	}
	os.Exit(exitCode(run(os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitCode maps run's result to the process status: 0 for success and for
// -h/--help (the usage was printed, as the other binaries do), 2 for a bad
// flag (already reported by the flag package), 1 for any other error.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errFlags):
		return 2
	}
	fmt.Fprintln(stderr, "smelter-sim:", err)
	return 1
}

// errFlags marks a command line the flag package rejected (and reported).
var errFlags = errors.New("bad command line")

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("smelter-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: smelter-sim [flags]
       smelter-sim version

Runs a fleet of simulated industrial devices over Modbus TCP, RTU-over-TCP and OPC UA, and
ships' navigation as NMEA 0183 sentences (RMC, VTG, VHW, HDT, DPT over TCP or UDP), with
scripted and run-time faults, and prints the device table with real addresses.

Examples:
  smelter-sim -fleet configs/sim-fleet.yaml -t                         check the fleet file
  smelter-sim -fleet configs/sim-fleet.yaml -scenario configs/scenarios/demo.yaml -http 127.0.0.1:8089
  curl -X POST 127.0.0.1:8089/faults -d '{"device":"boiler-1","kind":"stuck","signal":"flue_o2"}'
  curl -X POST 127.0.0.1:8089/faults -d '{"device":"ship-1","kind":"silent","front":"nmea"}'   stop only the NMEA talker

`)
		fs.PrintDefaults()
	}
	fleetPath := fs.String("fleet", "configs/sim-fleet.yaml", "fleet file")
	scenario := fs.String("scenario", "", "fault scenario file (optional)")
	seed := fs.Int64("seed", -1, "random seed (default: the fleet file's)")
	speed := fs.Float64("speed", -1, "simulated seconds per wall second, 0 = manual (default: the fleet file's)")
	httpAddr := fs.String("http", "127.0.0.1:0", "control API and /metrics address (\"\" disables)")
	start := fs.String("start", "", "simulated start: a time of day today (10:00), an RFC 3339 time, or now (default: the fleet file's)")
	check := fs.Bool("t", false, "check the fleet (and scenario) and exit")
	logLevel := fs.String("log-level", "info", "debug | info | warn | error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errFlags, err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := fleet.Load(*fleetPath)
	if err != nil {
		return err
	}
	if *seed >= 0 {
		cfg.Seed = uint64(*seed)
	}
	if *speed >= 0 {
		cfg.Speed = *speed
	}
	if *start != "" {
		if cfg.Start, err = fleet.ParseStart(*start, time.Now(), time.Local); err != nil {
			return err
		}
	}
	if *scenario != "" {
		if cfg.Scenario, err = faults.LoadScenario(*scenario); err != nil {
			return err
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if *check {
		fmt.Fprintf(stdout, "%s: %d devices OK\n", *fleetPath, len(cfg.Devices))
		return nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := fleet.New(cfg, log, fleet.WithRegisterer(reg))
	if err := f.Start(ctx); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(f.Wait)
	if *httpAddr != "" {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", *httpAddr)
		if err != nil {
			stop()
			_ = f.Wait()
			return fmt.Errorf("-http: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("/", f.Handler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		fmt.Fprintf(stdout, "control API and /metrics on http://%s\n", ln.Addr())
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	if err := printDevices(stdout, f.Devices()); err != nil {
		log.Warn("could not print the device table", "err", err)
	}
	return g.Wait()
}

func printDevices(w io.Writer, ds []fleet.DeviceInfo) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tCLASS\tTRANSPORT\tADDRESS\tUNIT\tOPC UA ENDPOINT\tNODE IDS\tNMEA 0183\tTEMPLATE")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, d := range ds {
		nodes := ""
		if d.NodePrefix != "" {
			nodes = d.NodePrefix + "<signal>"
		}
		unit := "-"
		if d.Addr != "" {
			unit = fmt.Sprint(d.UnitID)
		}
		nm := ""
		if d.NMEA != "" {
			nm = d.NMEATransport + " " + d.NMEA
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Class, dash(d.Transport), dash(d.Addr), unit,
			dash(d.OPCUA), dash(nodes), dash(nm), dash(d.Template))
	}
	return tw.Flush()
}
