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
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging"
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
	cfg, err := gwconfig.Load(fs.Arg(0), gateway.Drivers()...)
	if err != nil {
		printConfigErrors(stderr, err)
		return 1
	}
	points := 0
	for _, d := range cfg.Devices {
		points += len(d.Signals)
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "warning: %v\n", w)
	}
	fmt.Fprintf(stdout, "%s: ok (gateway %s, %d devices, %d points, %d warning(s))\n", fs.Arg(0), cfg.ID, len(cfg.Devices), points, len(cfg.Warnings))
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
		fmt.Fprintln(stderr, "usage: smelter-gateway run -config FILE\n\nSIGINT/SIGTERM stop (polling stops, spooled data is flushed);\nSIGHUP reloads FILE: a valid new configuration replaces the running one\n(the spool and its cursors carry over), an invalid one is refused and the\nrunning configuration stays.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
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
	for {
		log, err := logging.New(stderr, cfg.Raw.Log.Level, cfg.Raw.Log.Format)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		log = log.With("gateway", cfg.ID)
		next, err := runUntilReload(ctx, cfg, log, *config, hup)
		if err != nil {
			log.Error("stopped", "err", err)
			return 1
		}
		if next == nil {
			log.Info("stopped")
			return 0
		}
		log.Info("configuration reloaded: restarting with it", "devices", len(next.Devices))
		cfg = next
	}
}

// runUntilReload runs one gateway until ctx ends (it returns nil, nil) or
// SIGHUP brings a valid new configuration (it stops this gateway cleanly,
// flushing what it can, and returns the new one). An invalid configuration
// is logged and refused; the running gateway goes on.
func runUntilReload(ctx context.Context, cfg *gwconfig.Config, log *slog.Logger, path string, hup <-chan os.Signal) (*gwconfig.Config, error) {
	g, err := gateway.New(cfg, gateway.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	eg, egCtx := errgroup.WithContext(runCtx)
	eg.Go(func() error { return g.Run(egCtx) })
	if addr := cfg.Raw.HTTP.Listen; addr != "" {
		eg.Go(func() error {
			return g.Serve(egCtx, addr, func(a net.Addr) { log.Info("http listening", "addr", a.String()) })
		})
	}
	done := make(chan error, 1)
	go func() { done <- eg.Wait() }()
	for {
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				return nil, err
			}
			return nil, nil
		case <-hup:
			next, err := gwconfig.Load(path, gateway.Drivers()...)
			if err != nil {
				log.Error("reload refused: the new configuration is invalid; the running one stays", "file", path,
					"errors", err.Error())
				continue
			}
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				return nil, err
			}
			return next, nil
		}
	}
}
