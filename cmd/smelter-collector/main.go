// Command smelter-collector evaluates anomaly rules and energy KPIs on the
// Smelter telemetry stream.
//
//	smelter-collector -config configs/collector.yaml      run
//	smelter-collector -config configs/collector.yaml -t   check config and rules
//	smelter-collector tail -url nats://127.0.0.1:4222     print the live stream
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/version"
)

func main() {
	if version.Command("smelter-collector", os.Args[1:], os.Stdout) {
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "tail" {
		if err := tail(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "smelter-collector tail:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "smelter-collector:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("smelter-collector", flag.ExitOnError)
	cfgPath := fs.String("config", "configs/collector.yaml", "configuration file")
	check := fs.Bool("t", false, "check the configuration and rule files, then exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: smelter-collector [-config FILE] [-t]
       smelter-collector tail [-url URL] [-subject FILTER] [-kind KINDS] [-creds FILE]
       smelter-collector version

Consumes the normalized stream, runs anomaly rules and energy KPIs, publishes alerts and
KPIs, and serves the HTTP API and dashboard. With nats.url empty it starts an embedded
NATS server with JetStream.

Examples:
  smelter-collector -config configs/collector.yaml -t     check the config and rule files
  smelter-collector -config configs/collector.yaml        run
  smelter-collector tail -url nats://127.0.0.1:4222 -kind alert,kpi

`)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])

	cfg, err := collector.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		return err
	}
	if *check {
		fmt.Printf("%s: ok (%d rules)\n", *cfgPath, len(set.Rules))
		return nil
	}
	log := newLogger(cfg.Log.Level, cfg.Log.Format)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c, err := collector.New(cfg, set, log, reg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("smelter-collector starting", "rules", len(set.Rules))
	return c.Run(ctx)
}

func newLogger(level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" || format == "auto" && !isTerminal() {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func isTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// tail prints every message on the subject filter, one line each.
func tail(args []string) error {
	fs := flag.NewFlagSet("tail", flag.ExitOnError)
	url := fs.String("url", nats.DefaultURL, "NATS server URL")
	subject := fs.String("subject", "smelter.v1.>", "subject filter")
	kinds := fs.String("kind", "", "comma-separated kinds to show (data,birth,death,alert,kpi,status); empty: all")
	creds := fs.String("creds", "", "NATS credentials file")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: smelter-collector tail [flags]\n\nPrints every message on the subject filter, one line each.\n\nExample:\n  smelter-collector tail -url nats://127.0.0.1:4222 -subject 'smelter.v1.*.air_compressor.>' -kind data,alert\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	opts := []nats.Option{nats.Name("smelter-collector-tail")}
	if *creds != "" {
		opts = append(opts, nats.UserCredentials(*creds))
	}
	nc, err := nats.Connect(*url, opts...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", *url, err)
	}
	defer nc.Close()
	want := map[string]bool{}
	for _, k := range strings.Split(*kinds, ",") {
		if k != "" {
			want[k] = true
		}
	}
	ch := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(*subject, ch)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", *subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			kind := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
			if len(want) > 0 && !want[kind] {
				continue
			}
			fmt.Printf("%s %s %s\n", time.Now().Format("15:04:05.000"), m.Subject, m.Data)
		}
	}
}
