// Command smelter-demo runs all of Smelter on one machine: the simulator
// fleet (every equipment class), embedded NATS JetStream and MQTT brokers, a
// gateway polling every simulated device, and the collector with its
// dashboard. Everything binds free loopback ports; the URLs are printed.
// Ctrl-C stops it all cleanly. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/smelterio/smelter/internal/demo"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/version"
	"github.com/smelterio/smelter/simulators/fleet"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == opcua.WorkerCommand {
		// hidden: the embedded gateway's OPC UA session worker
		// (isolation endpoint or process, docs/opcua.md)
		os.Exit(opcua.WorkerMain(context.Background(), os.Stdin, os.Stdout, os.Stderr))
	}
	if version.Command("smelter-demo", os.Args[1:], os.Stdout) {
		return
	}
	fs := flag.NewFlagSet("smelter-demo", flag.ExitOnError)
	fleetPath := fs.String("fleet", "configs/sim-fleet.yaml", "simulator fleet file")
	scenario := fs.String("scenario", "configs/scenarios/demo.yaml", "fault scenario (\"\" for none)")
	dataDir := fs.String("data", ".demo", "data directory (spool, broker store, generated gateway config): empty or made by smelter-demo; each run replaces the previous run's state in it")
	speed := fs.Float64("speed", 0, "simulated seconds per wall second (0: the fleet file's)")
	start := fs.String("start", demo.DefaultStart, "plant clock at start: a time of day today (09:00), an RFC 3339 time, or now")
	level := fs.String("log-level", "warn", "debug | info | warn | error")
	sp := fs.Bool("sparkplug", false, "the gateway's MQTT uplink speaks Sparkplug B; the collector also ingests it (docs/sparkplug.md)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: smelter-demo [flags]\n       smelter-demo version\n\nRuns simulators, gateway, collector and dashboard with embedded brokers.\n\nExamples:\n  smelter-demo                      (what make demo runs)\n  smelter-demo -scenario configs/scenarios/opcua.yaml   OPC UA faults instead of the demo script\n  smelter-demo -start 14:00 -speed 10                    an afternoon, ten times faster than real time\n\nThe plant has its own clock: shifts, daylight and timestamps follow -start, not the wall clock.\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	// gopcua's server prints its address-space construction on the standard
	// logger; Smelter's own logs go through slog
	stdlog.SetOutput(io.Discard)
	log, err := logging.New(os.Stderr, *level, "text")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *scenario != "" {
		if _, err := os.Stat(*scenario); err != nil {
			fmt.Fprintf(os.Stderr, "smelter-demo: scenario %s: %v\n", *scenario, err)
			os.Exit(2)
		}
	}
	if err := demo.CheckSpeed(*speed); err != nil {
		fmt.Fprintln(os.Stderr, "smelter-demo:", err)
		os.Exit(2)
	}
	plantStart, err := fleet.ParseStart(*start, time.Now(), time.Local)
	if err != nil {
		fmt.Fprintln(os.Stderr, "smelter-demo:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := demo.New(demo.Options{FleetPath: *fleetPath, ScenarioPath: *scenario, DataDir: *dataDir, Speed: *speed,
		Start: plantStart, Seed: -1, Sparkplug: *sp, Log: log, Out: os.Stdout})
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "smelter-demo:", err)
		os.Exit(1)
	}
	fmt.Println("smelter-demo: stopped")
}
