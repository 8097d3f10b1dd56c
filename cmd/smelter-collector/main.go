// Command smelter-collector evaluates anomaly rules and energy KPIs on the
// Smelter telemetry stream.
//
//	smelter-collector -config configs/collector.yaml      run
//	smelter-collector -config configs/collector.yaml -t   check config and rules
//	smelter-collector tail -url nats://127.0.0.1:4222     print the live stream
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/procs"
	"github.com/smelterio/smelter/internal/secret"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/version"
)

func main() {
	if version.Command("smelter-collector", os.Args[1:], os.Stdout) {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the command line: it returns the exit code (0 ok, 1 failure, 2
// usage).
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "tail" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := tail(ctx, args[1:], stdout, stderr); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintln(stderr, "smelter-collector tail:", err)
			return 1
		}
		return 0
	}
	fs := flag.NewFlagSet("smelter-collector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "configs/collector.yaml", "configuration file")
	check := fs.Bool("t", false, "check the configuration and rule files, print every error as file:line: field: reason, then exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: smelter-collector [-config FILE] [-t]
       smelter-collector tail [-config FILE] [-url URL] [-subject FILTER] [-kind KINDS] [-creds FILE]
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg, err := collector.LoadConfig(*cfgPath)
	if err != nil {
		printConfigErrors(stderr, err)
		return 1
	}
	if *check {
		return checkConfig(cfg, *cfgPath, stdout, stderr)
	}
	set, err := cfg.LoadRules(catalog.Default())
	if err != nil {
		printConfigErrors(stderr, err)
		return 1
	}
	// the Sparkplug mapping is checked before anything starts
	if _, err := cfg.LoadSparkplugMapping(catalog.Default()); err != nil {
		printConfigErrors(stderr, err)
		return 1
	}
	log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintln(stderr, "smelter-collector:", err)
		return 1
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c, err := collector.New(cfg, set, log, reg)
	if err != nil {
		fmt.Fprintln(stderr, "smelter-collector:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pc := startProcs(cfg, log, reg)
	procsDone := make(chan struct{})
	go func() { _ = pc.Run(ctx); close(procsDone) }() // Run returns nil when ctx ends
	defer func() { stop(); <-procsDone }()
	log.Info("smelter-collector starting", "rules", len(set.Rules))
	go func() {
		<-ctx.Done()
		log.Info("smelter-collector stopping: finishing the cycles in progress")
	}()
	if err := c.Run(ctx); err != nil {
		log.Error("smelter-collector stopped", "err", err)
		return 1
	}
	log.Info("smelter-collector stopped")
	return 0
}

// startProcs puts the configuration's max_procs in force (a fixed
// GOMAXPROCS at once; auto from one P, raised by the Controller's Run when
// the collector is busy; GOMAXPROCS in the environment wins) and returns
// the Controller, whose metric smelter_collector_max_procs_changes_total
// is on reg.
func startProcs(cfg collector.Config, log *slog.Logger, reg prometheus.Registerer) *procs.Controller {
	pc := procs.New(log, reg, "smelter_collector")
	pc.Apply(cfg.Procs(), "max_procs")
	return pc
}

// checkConfig is -t: every local problem at once (secrets, TLS and rule
// files, Config.CheckLocal), then the rules; a missing rule file is said
// once, at its line.
func checkConfig(cfg collector.Config, path string, stdout, stderr io.Writer) int {
	local := cfg.CheckLocal()
	set, err := cfg.LoadRules(catalog.Default())
	_, merr := cfg.LoadSparkplugMapping(catalog.Default()) // the Sparkplug mapping file, if any
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
	}
	if local == nil && err == nil && merr == nil {
		for _, w := range cfg.SignalBoundWarnings(set, catalog.Default()) {
			fmt.Fprintf(stderr, "%s: warning: %s\n", path, w)
		}
		fmt.Fprintf(stdout, "%s: ok (%d rules)\n", path, len(set.Rules))
		return 0
	}
	if local != nil && strings.Contains(local.Error(), "rules.files[") {
		err = nil // a missing rule file is said once, at its line
	}
	var all confload.Errors
	for _, e := range []error{local, err, merr} {
		if e == nil {
			continue
		}
		if es := confload.AsErrors(e); es != nil {
			all = append(all, es...)
		} else {
			fmt.Fprintln(stderr, "smelter-collector:", e)
		}
	}
	if len(all) > 0 {
		printConfigErrors(stderr, all)
	}
	return 1
}

// printConfigErrors writes every configuration error on a line of its own
// (file:line: field: reason) and their count, then the verdict.
func printConfigErrors(w io.Writer, err error) {
	es := confload.AsErrors(err)
	if es == nil {
		fmt.Fprintln(w, "smelter-collector:", err)
		return
	}
	for _, e := range es {
		fmt.Fprintln(w, e.Error())
	}
	fmt.Fprintf(w, "%d error(s): the configuration is invalid\n", len(es))
}

// tail prints every message on the subject filter, one line each, until
// ctx ends (nil) or the server refuses a subscription or closes the
// connection (an error).
func tail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "collector configuration file: connect with its nats: block (url, username and password_env/password_file, token_file, creds_file, tls)")
	url := fs.String("url", "", "NATS server URL, without credentials (default: the -config file's nats.url, else "+nats.DefaultURL+")")
	subject := fs.String("subject", "smelter.v1.>", "subject filter")
	kinds := fs.String("kind", "", "comma-separated kinds to show (data,birth,death,alert,kpi,status); each is subscribed to on its own\n(smelter.v1.*.*.*.<kind> within -subject), so a user allowed only those subjects can tail them; empty: all of -subject")
	creds := fs.String("creds", "", "NATS credentials file")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: smelter-collector tail [flags]\n\nPrints every message on the subject filter, one line each. With -config it connects as the collector\n"+
			"does (credentials and TLS of the file's nats: block), so no secret goes on the command line.\n"+
			"With the shipped NATS accounts (deploy/nats/smelter-accounts.conf) the collector's user may tail\n"+
			"alert, kpi and status; other kinds need a user allowed to subscribe to them (docs/collector.md).\n\nExamples:\n"+
			"  smelter-collector tail -url nats://127.0.0.1:4222 -subject 'smelter.v1.*.air_compressor.>' -kind data,alert\n"+
			"  smelter-collector tail -config /etc/smelter/collector.yaml -kind alert,kpi\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := collector.CheckURL("-url", *url, "-creds FILE, or -config with the collector's nats: block (username and password_env or password_file, token_file, creds_file)"); err != nil {
		return err
	}
	subjects, err := tailSubjects(*subject, *kinds)
	if err != nil {
		return err
	}
	asyncErrs := make(chan error, 16)
	opts := []nats.Option{nats.Name("smelter-collector-tail"),
		// nats.go's own handler writes a raw line to stderr and tail ran on
		// with nothing subscribed: a refusal ends tail, naming the subject
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				err = fmt.Errorf("%w (subscription on %s)", err, sub.Subject)
			}
			select {
			case asyncErrs <- err:
			default: // tail is ending on an earlier one
			}
		})}
	target := nats.DefaultURL
	if *cfgPath != "" {
		cfg, err := collector.LoadConfig(*cfgPath)
		if err != nil {
			return err // file:line: field: reason, no value of a secret
		}
		u, auth, err := cfg.NATSOptions()
		if err != nil {
			return fmt.Errorf("%s: %w", *cfgPath, err)
		}
		if u == "" && *url == "" {
			return fmt.Errorf("%s: nats.url is empty (the collector's embedded server): give -url", *cfgPath)
		}
		target, opts = u, append(opts, auth...)
	}
	if *url != "" {
		target = *url
	}
	if *creds != "" {
		opts = append(opts, nats.UserCredentials(*creds))
	}
	closed := make(chan struct{})
	opts = append(opts, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	nc, err := nats.Connect(target, opts...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", secret.RedactURL(target), err)
	}
	defer nc.Close()
	ch := make(chan *nats.Msg, 1024)
	for _, s := range subjects {
		sub, err := nc.ChanSubscribe(s, ch)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", s, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-asyncErrs:
			if s, ok := refusedSubscription(err, subjects); ok {
				return fmt.Errorf("the NATS server refused the subscription to %s (permissions violation): allow this user to subscribe to %s, "+
					"or connect as a user who may (with the shipped accounts, deploy/nats/smelter-accounts.conf, user collector "+
					"may subscribe to smelter.v1.*.*.*.alert, .kpi and smelter.v1.*._gateway.*.status: tail -kind alert,kpi,status)", s, s)
			}
			fmt.Fprintln(stderr, "smelter-collector tail: nats:", strings.TrimPrefix(err.Error(), "nats: "))
		case <-closed:
			if err := nc.LastError(); err != nil {
				return fmt.Errorf("connection to %s closed: %w", secret.RedactURL(nc.ConnectedUrl()), err)
			}
			return errors.New("connection closed")
		case m := <-ch:
			fmt.Fprintf(stdout, "%s %s %s\n", time.Now().Format("15:04:05.000"), m.Subject, m.Data)
		}
	}
}

// tailSubjects returns what tail subscribes to: filter as it is without
// kinds, else filter's intersection with smelter.v1.*.*.*.<kind> for each
// kind (a comma-separated list), so that the server, not tail, filters
// and a user allowed only those subjects may tail them. Messages are
// published on the 6-token subjects; a partition token is only in the
// subject the telemetry stream stores (docs/collector.md).
func tailSubjects(filter, kinds string) ([]string, error) {
	var ks []string
	for _, k := range strings.Split(kinds, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !telemetry.ValidToken(k) {
			return nil, fmt.Errorf("-kind: %q is not a kind (data, birth, death, alert, kpi, status)", k)
		}
		if !slices.Contains(ks, k) {
			ks = append(ks, k)
		}
	}
	if len(ks) == 0 {
		return []string{filter}, nil
	}
	var out []string
	for _, k := range ks {
		layout := telemetry.KindFilter("*", telemetry.Kind(k))
		if telemetry.Kind(k) == telemetry.KindStatus { // only gateways publish it (class _gateway), all a user may be allowed
			layout = telemetry.Subject("*", telemetry.GatewayClass, "*", telemetry.KindStatus)
		}
		if s, ok := intersect(filter, layout); ok {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-subject %s holds no subject of kind %s (smelter.v1.<site>.<class>.<asset>.<kind>)", filter, strings.Join(ks, ", "))
	}
	return out, nil
}

// intersect returns the filter matching exactly the subjects both filter
// and layout (tokens and '*', no '>') match, and whether there are any.
func intersect(filter, layout string) (string, bool) {
	ft, lt := strings.Split(filter, "."), strings.Split(layout, ".")
	out := make([]string, 0, len(lt))
	for i, l := range lt {
		if i == len(ft) {
			return "", false // filter is shorter
		}
		switch f := ft[i]; {
		case f == ">":
			return strings.Join(append(out, lt[i:]...), "."), true
		case f == "*" || f == l:
			out = append(out, l)
		case l == "*":
			out = append(out, f)
		default:
			return "", false
		}
	}
	return strings.Join(out, "."), len(ft) == len(lt)
}

// refusedSubscription returns which of subjects err, a permissions
// violation, refuses a subscription to.
func refusedSubscription(err error, subjects []string) (string, bool) {
	if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(strings.ToLower(err.Error()), "subscription to") {
		return "", false
	}
	for _, s := range subjects {
		if strings.Contains(err.Error(), `"`+s+`"`) {
			return s, true
		}
	}
	return "", false
}
