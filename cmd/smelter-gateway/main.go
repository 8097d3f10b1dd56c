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
	"net"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging"
)

const usage = `smelter-gateway: industrial telemetry gateway (Modbus -> spool -> NATS JetStream / MQTT)

Commands:
  run -config FILE          poll devices and publish (SIGINT/SIGTERM: stop polling, flush, exit)
  validate FILE             check a configuration and its templates; print every error as file:line: field: reason
  scan modbus ADDRESS       probe which unit ids answer and map their readable registers
  browse ENDPOINT           walk an OPC UA server's address space; -write-config writes a device config
  endpoints ENDPOINT        list the security policies and logins an OPC UA server offers
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
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: smelter-gateway validate FILE\n\nChecks FILE and every template it names; exits 1 on any error.")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	cfg, err := gwconfig.Load(fs.Arg(0))
	if err != nil {
		printConfigErrors(stderr, err)
		return 1
	}
	points := 0
	for _, d := range cfg.Devices {
		points += len(d.Signals)
	}
	fmt.Fprintf(stdout, "%s: ok (gateway %s, %d devices, %d points)\n", fs.Arg(0), cfg.ID, len(cfg.Devices), points)
	return 0
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
		fmt.Fprintln(stderr, "usage: smelter-gateway run -config FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := gwconfig.Load(*config)
	if err != nil {
		printConfigErrors(stderr, err)
		fmt.Fprintln(stderr, "smelter-gateway: not starting: the configuration is invalid")
		return 1
	}
	log, err := logging.New(stderr, cfg.Raw.Log.Level, cfg.Raw.Log.Format)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log = log.With("gateway", cfg.ID)
	g, err := gateway.New(cfg, gateway.Options{Logger: log})
	if err != nil {
		log.Error("not starting", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.Run(ctx) })
	if addr := cfg.Raw.HTTP.Listen; addr != "" {
		eg.Go(func() error {
			return g.Serve(ctx, addr, func(a net.Addr) { log.Info("http listening", "addr", a.String()) })
		})
	}
	if err := eg.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}
