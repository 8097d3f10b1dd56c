// Package demo wires the whole of Smelter on one machine: the simulator
// fleet, embedded NATS (JetStream) and MQTT brokers, a gateway polling every
// simulated device, and the collector with its dashboard. `make demo` runs it
// through cmd/smelter-demo; the end-to-end test runs the same wiring
// headless. Every listener binds 127.0.0.1 on a free port, so nothing assumes
// standard ports are free.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector"
	"github.com/smelterio/smelter/internal/gateway"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/nmea"
	"github.com/smelterio/smelter/internal/opcua"
	"github.com/smelterio/smelter/internal/uplink/mqtt"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
	"github.com/smelterio/smelter/simulators/faults"
	"github.com/smelterio/smelter/simulators/fleet"
)

// Options configure a demo run.
type Options struct {
	FleetPath    string // default configs/sim-fleet.yaml
	ScenarioPath string // optional fault scenario
	// DataDir holds one run's state (default a temporary directory,
	// removed at the end). A run starts fresh: the previous run's broker
	// store, collector checkpoints and gateway spool are removed first
	// (claimDataDir), since their times belong to that run's plant clock; a
	// directory smelter-demo did not create is refused.
	DataDir      string
	Speed        float64
	Seed         int64         // < 0: the fleet file's
	PollInterval time.Duration // gateway poll interval (default 1s)
	// Start overrides the fleet's simulated start time (the plant clock;
	// fleet.ParseStart reads the -start flag). The models read its time of day in
	// Start's location: production shifts, PV daylight.
	Start time.Time
	// SimClock keeps the fleet file's start when Start is zero; otherwise
	// the plant clock starts at the wall clock's now. Either way the
	// gateway stamps batches with the plant clock and reports its rate, so
	// a plant run faster than real time (Speed > 1) looks to the collector
	// like real hours passing: OPC UA source times and gateway times come
	// from one clock, rule delays and KPI windows elapse in plant time.
	SimClock bool
	// OPCUADevices are read over OPC UA (username login) instead of Modbus
	// when the fleet serves them over both; nil means DefaultOPCUADevices.
	OPCUADevices []string
	// Sparkplug makes the gateway's MQTT uplink speak Sparkplug B and adds
	// the collector's Sparkplug source (sparkplug.go, docs/sparkplug.md).
	Sparkplug bool
	// Collector, when set, adjusts the collector configuration (windows,
	// rule files) before it starts.
	Collector func(*collector.Config)
	Log       *slog.Logger
	Out       io.Writer // where the URLs are printed; nil: nowhere
}

// URLs are the addresses a demo run serves.
type URLs struct {
	NATS, MQTT string
	Gateway    string // gateway status page
	Simulator  string // simulator control API
	Dashboard  string // collector dashboard ("" when the collector is not wired)
	// OperatorTokenFile holds the bearer token of the demo's operator, who
	// may send commands from the dashboard (commands.go; new every run).
	OperatorTokenFile string
}

// Demo is one run.
type Demo struct {
	opts  Options
	mu    sync.Mutex
	urls  URLs
	fleet *fleet.Fleet
	gw    *gateway.Gateway
	col   *collector.Collector
	ready chan struct{}
}

// New prepares a demo; it does no I/O.
func New(opts Options) *Demo {
	if opts.FleetPath == "" {
		opts.FleetPath = "configs/sim-fleet.yaml"
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Demo{opts: opts, ready: make(chan struct{})}
}

// Ready is closed once everything is up.
func (d *Demo) Ready() <-chan struct{} { return d.ready }

// URLs returns the serving addresses (valid after Ready).
func (d *Demo) URLs() URLs {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.urls
}

// Fleet returns the simulator fleet (valid after Ready), for fault injection.
func (d *Demo) Fleet() *fleet.Fleet { return d.fleet }

// Gateway returns the running gateway (valid after Ready).
func (d *Demo) Gateway() *gateway.Gateway { return d.gw }

// Collector returns the running collector (valid after Ready).
func (d *Demo) Collector() *collector.Collector { return d.col }

// waitAddr waits until get returns a non-empty address.
func waitAddr(ctx context.Context, get func() string) (string, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	timeout := time.After(30 * time.Second)
	for {
		if a := get(); a != "" {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-timeout:
			return "", errors.New("not listening after 30 s")
		case <-t.C:
		}
	}
}

// CheckSpeed reports why v is no -speed for the demo: it must be a finite
// number from 0 (the fleet file's speed) to 1e6 simulated seconds per wall
// second.
func CheckSpeed(v float64) error {
	if math.IsNaN(v) || v < 0 || v > 1e6 {
		return fmt.Errorf("speed: %v is not a number from 0 to 1e6 (simulated seconds per wall second; 0: the fleet file's)", v)
	}
	return nil
}

// Run starts everything and blocks until ctx ends, then stops it all.
// Errors: CheckSpeed's for a bad Options.Speed, and any start-up failure.
func (d *Demo) Run(ctx context.Context) error {
	if err := CheckSpeed(d.opts.Speed); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	log := d.opts.Log
	dataDir := d.opts.DataDir
	if dataDir == "" {
		tmp, err := os.MkdirTemp("", "smelter-demo-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		dataDir = tmp
	}
	// the generated gateway config lives in dataDir and names files in it:
	// make them absolute so they resolve the same from there
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return err
	}
	if err := claimDataDir(dataDir); err != nil {
		return err
	}

	// simulators
	fcfg, err := fleet.Load(d.opts.FleetPath)
	if err != nil {
		return err
	}
	if d.opts.Seed >= 0 {
		fcfg.Seed = uint64(d.opts.Seed)
	}
	if d.opts.Speed > 0 {
		fcfg.Speed = d.opts.Speed
	}
	if !d.opts.Start.IsZero() {
		fcfg.Start = d.opts.Start
	} else if !d.opts.SimClock {
		// without the simulated clock the gateway's clock is the wall clock
		// (it stamps Modbus readings at their replies' arrival on it) and OPC
		// UA readings carry the server's SourceTimestamp, the fleet's clock:
		// start the fleet at the wall clock to keep the two together
		fcfg.Start = time.Now()
	}
	if d.opts.ScenarioPath != "" {
		if fcfg.Scenario, err = faults.LoadScenario(d.opts.ScenarioPath); err != nil {
			return err
		}
	}
	if err := fcfg.Validate(); err != nil {
		return err
	}
	// Everything started from here on stops before Run returns, also when
	// the setup fails half way: the goroutines first, then the brokers.
	runCtx, cancel := context.WithCancel(ctx)
	eg, ctx := errgroup.WithContext(runCtx)
	var closers []func()
	fl := fleet.New(fcfg, log.With("component", "sim"))
	defer func() {
		cancel()
		_ = eg.Wait()
		_ = fl.Wait()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	if err := fl.Start(ctx); err != nil {
		return err
	}
	d.fleet = fl
	simURL, err := serveHTTP(ctx, eg, "simulator", fl.Handler())
	if err != nil {
		return err
	}

	// brokers
	nb, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dataDir, "nats")})
	if err != nil {
		return err
	}
	closers = append(closers, nb.Shutdown)
	mb, err := brokers.StartMQTT(brokers.MQTTOptions{KeepSessions: true})
	if err != nil {
		return err
	}
	closers = append(closers, func() { _ = mb.Close() })

	// collector on the same broker, with its HTTP API and dashboard
	ccfg := collector.Defaults()
	ccfg.DataDir = filepath.Join(dataDir, "collector")
	ccfg.NATS.URL = nb.URL()
	ccfg.HTTP.Listen = "127.0.0.1:0"
	// short KPI windows so the energy page fills within the demo's first
	// minutes; duty-cycle KPIs keep long windows to stay meaningful
	// the plant clock runs ahead of the wall clock (-start, -speed): the
	// collector's future-timestamp check would replace every time by the
	// arrival time
	ccfg.MaxFuture = 0
	// ... and its gateway's measured clock offset is the plant clock's
	// lead, by design: shown on the gateways page, not marked as a fault
	ccfg.HTTP.GatewayClockTolerance = 0
	ccfg.KPI.Window = collector.Duration(kpiWindow(fcfg.Speed))
	ccfg.KPI.Windows = map[string]collector.Duration{"engineering_machine": collector.Duration(time.Hour),
		"cnc_machine": collector.Duration(30 * time.Minute),
		// a performance ratio needs >= 0.02 kWh/m2 of irradiation per window:
		// 2 minutes of a winter morning's ~500 W/m2 hold 0.017
		"pv_string": collector.Duration(max(kpiWindow(fcfg.Speed), 10*time.Minute))}
	// commands out of the box: the collector signs operators' commands
	// with a key the gateway trusts (commands.go)
	gwCmds, colCmds, err := demoCommands(dataDir)
	if err != nil {
		return err
	}
	ccfg.Commands = colCmds
	if d.opts.Sparkplug { // sparkplug.go
		if err := sparkplugCollector(&ccfg, fl.Devices(), mb.URL(), dataDir); err != nil {
			return err
		}
	}
	if d.opts.Collector != nil {
		d.opts.Collector(&ccfg)
	}
	set, err := ccfg.LoadRules(catalog.Default())
	if err != nil {
		return err
	}
	col, err := collector.New(ccfg, set, log.With("component", "collector"), prometheus.NewRegistry())
	if err != nil {
		return err
	}
	d.col = col
	eg.Go(func() error { return col.Run(ctx) })

	// gateway, configured from the fleet's real addresses
	cfgPath := filepath.Join(dataDir, "gateway.yaml")
	uaDevs := d.opts.OPCUADevices
	if uaDevs == nil {
		uaDevs = DefaultOPCUADevices
	}
	ua, err := d.opcuaPoints(fl, uaDevs, dataDir)
	if err != nil {
		return err
	}
	poll := d.opts.PollInterval
	if poll <= 0 {
		poll = pollInterval(fcfg.Speed)
	}
	devs, err := engineTemplates(fl.Devices(), dataDir)
	if err != nil {
		return err
	}
	gfile, err := GatewayConfig(devs, nb.URL(), mb.URL(), poll, ua)
	if err != nil {
		return err
	}
	gfile.Commands = gwCmds
	gdata, err := MarshalGatewayConfig(gfile)
	if err != nil {
		return err
	}
	if err := writeFresh(cfgPath, gdata); err != nil {
		return err
	}
	gcfg, err := gwconfig.Load(cfgPath, gateway.Drivers()...)
	if err != nil {
		return fmt.Errorf("demo: generated gateway config %s: %w", cfgPath, err)
	}
	if d.opts.Sparkplug { // sparkplug.go
		if err := sparkplugGateway(gcfg); err != nil {
			return err
		}
	}
	// one data clock: the OPC UA front stamps SourceTimestamps with the
	// plant clock, so the gateway must too (issue 11: at -speed 10 a wall
	// clock here put OPC UA readings hours in the future and made every
	// change-only signal look stale)
	gopts := gateway.Options{Logger: log.With("component", "gateway"), Now: fl.Now, ClockRate: fcfg.Speed}
	gw, err := gateway.New(gcfg, gopts)
	if err != nil {
		return err
	}
	d.gw = gw
	eg.Go(func() error { return gw.Run(ctx) })
	gwURL, err := serveHTTP(ctx, eg, "gateway", gw.Handler())
	if err != nil {
		return err
	}

	dash, err := waitAddr(ctx, col.HTTPAddr)
	if err != nil {
		return fmt.Errorf("demo: collector http: %w", err)
	}
	d.mu.Lock()
	d.urls = URLs{NATS: nb.URL(), MQTT: mb.URL(), Gateway: gwURL, Simulator: simURL, Dashboard: "http://" + dash + "/",
		OperatorTokenFile: colCmds.Operators[0].TokenFile}
	urls := d.urls
	d.mu.Unlock()
	if d.opts.Out != nil {
		fmt.Fprintf(d.opts.Out, "\nSmelter demo is running (Ctrl-C stops it):\n")
		if urls.Dashboard != "" {
			fmt.Fprintf(d.opts.Out, "  dashboard        %s\n", urls.Dashboard)
			if tok, err := os.ReadFile(urls.OperatorTokenFile); err == nil {
				// the dashboard listens on loopback only and the token is
				// new every run: a demo secret, fine to show here
				fmt.Fprintf(d.opts.Out, "  as operator      %s?token=%s\n", urls.Dashboard, strings.TrimSpace(string(tok)))
				fmt.Fprintf(d.opts.Out, "                   (sends commands; demo secret, this run and this machine only: %s)\n", urls.OperatorTokenFile)
			}
		}
		fmt.Fprintf(d.opts.Out, "  gateway status   %s\n  simulator API    %s/devices\n  NATS (JetStream) %s\n  MQTT             %s\n  gateway config   %s\n",
			urls.Gateway, urls.Simulator, urls.NATS, urls.MQTT, cfgPath)
		fmt.Fprintf(d.opts.Out, "  plant clock      started %s, %gx real time\n\n", fcfg.Start.Format("2006-01-02 15:04 MST"), fcfg.Speed)
	}
	close(d.ready)
	<-ctx.Done()
	err = eg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil // the deferred stop waits for the fleet (its own error is logged by it)
}

// serveHTTP serves h on a free loopback port until ctx ends.
func serveHTTP(ctx context.Context, eg *errgroup.Group, name string, h http.Handler) (string, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("demo: %s http: %w", name, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	eg.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	eg.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return "http://" + ln.Addr().String(), nil
}

// DefaultOPCUADevices are the demo assets the gateway reads over OPC UA:
// the machines that typically speak it (CNC, turbine and PV controllers,
// the furnace's DCS); the rest are read over Modbus.
var DefaultOPCUADevices = []string{"cnc-1", "wt-1", "bf-1", "pv-1", "pv-2", "pv-3", "pv-4"}

// UADevice is how the generated config reads one device over OPC UA.
type UADevice struct {
	Endpoint     string
	User         string
	PasswordFile string
	TrustDir     string // holds the simulator server's certificate
	Signals      []string
	NodePrefix   string
}

// opcuaPoints prepares the OPC UA side of the chosen devices: their signals
// and a password file for the simulator's demo login.
func (d *Demo) opcuaPoints(fl *fleet.Fleet, ids []string, dataDir string) (map[string]UADevice, error) {
	out := map[string]UADevice{}
	for _, id := range ids {
		info, ok := fl.Device(id)
		if !ok || info.OPCUA == "" {
			continue
		}
		vals, _, err := fl.Values(id)
		if err != nil {
			return nil, err
		}
		// the namespace by URI, as browse -write-config writes it: an
		// index may name another node after a server restart (review F3)
		prefix := info.NodePrefix
		if info.OPCUANamespace != "" {
			prefix = opcua.ByURI(info.NodePrefix, []string{1: info.OPCUANamespace})
		}
		ud := UADevice{Endpoint: info.OPCUA, NodePrefix: prefix, Signals: sortedKeys(vals),
			TrustDir: filepath.Join(dataDir, "opcua-trusted")}
		// trust the simulator's server certificate, as an operator would
		// after checking its thumbprint
		if der := fl.OPCUACertificate(id); len(der) > 0 {
			if err := os.MkdirAll(ud.TrustDir, 0o750); err != nil {
				return nil, err
			}
			if err := writeFresh(filepath.Join(ud.TrustDir, info.OPCUAServer+".der"), der); err != nil {
				return nil, err
			}
		}
		if len(info.OPCUAUsers) > 0 {
			user := info.OPCUAUsers[0]
			if pw, ok := fl.OPCUAPassword(id, user); ok {
				ud.User = user
				ud.PasswordFile = filepath.Join(dataDir, "opcua-"+info.OPCUAServer+".pass")
				if err := writeFresh(ud.PasswordFile, []byte(pw)); err != nil {
					return nil, err
				}
			}
		}
		out[id] = ud
	}
	return out, nil
}

// GatewayConfig builds the gateway configuration polling every simulated
// device at its real address, over OPC UA for the devices in ua and Modbus
// for the rest, publishing to both brokers. It is built from the gateway's
// own config structs (gwconfig.File); MarshalGatewayConfig writes it.
func GatewayConfig(devs []fleet.DeviceInfo, natsURL, mqttURL string, poll time.Duration, ua map[string]UADevice) (*gwconfig.File, error) {
	if poll <= 0 {
		poll = time.Second
	}
	var f gwconfig.File
	f.Gateway.ID, f.Gateway.Enterprise, f.Gateway.Site, f.Gateway.DataDir = "gw-demo-01", "acme", "demo", "./gateway"
	f.HTTP.Listen = "off" // the demo serves the status page itself
	f.Uplinks.NATS = &natsjs.Config{URL: natsURL}
	f.Uplinks.MQTT = &mqtt.Config{URL: mqttURL}
	for _, d := range devs {
		dev := gwconfig.DeviceFile{ID: d.ID, Class: d.Class, PollInterval: poll, Nameplate: d.Nameplate}
		if d.NMEA == "" {
			if ok, err := engineBlock(&dev, d, poll, ua); err != nil || !ok {
				if err != nil {
					return nil, err
				}
				continue
			}
			f.Devices = append(f.Devices, dev)
			continue
		}
		// a ship: the engine over Modbus or OPC UA, navigation over NMEA
		// 0183, both feeding the one asset (gwconfig.DeviceFile.Sources)
		eng := gwconfig.SourceFile{Name: "engine"}
		ok, err := engineBlock(&eng, d, poll, ua)
		if err != nil {
			return nil, err
		}
		if ok {
			dev.Sources = append(dev.Sources, eng)
		}
		nav, err := navSource(d, poll)
		if err != nil {
			return nil, err
		}
		dev.Sources = append(dev.Sources, nav)
		f.Devices = append(f.Devices, dev)
	}
	return &f, nil
}

// blockTarget is a device entry or one of its sources.
type blockTarget interface {
	SetBlock(driver string, v any) error
	AddPoint(p any) error
}

// engineBlock sets d's Modbus or OPC UA block and points on t (a device
// entry, or a ship's engine source, whose template engineTemplates left
// without the navigation registers): over OPC UA for the devices in ua.
// It reports false for a device served by neither.
func engineBlock(t blockTarget, d fleet.DeviceInfo, poll time.Duration, ua map[string]UADevice) (bool, error) {
	if u, ok := ua[d.ID]; ok {
		cfg := opcua.Config{Endpoint: u.Endpoint, PublishInterval: poll, TrustDir: u.TrustDir}
		if u.User != "" {
			cfg.Auth = opcua.AuthConfig{Mode: "username", Username: u.User, PasswordFile: u.PasswordFile}
		}
		if err := t.SetBlock("opcua", cfg); err != nil {
			return false, err
		}
		for _, sig := range u.Signals {
			if _, nav := navPoints[sig]; nav && d.NMEA != "" {
				continue // read over NMEA
			}
			p := opcua.PointFile{PointFile: gwconfig.PointFile{Signal: sig}, NodeID: u.NodePrefix + sig, SamplingInterval: poll}
			if err := t.AddPoint(p); err != nil {
				return false, err
			}
		}
		return true, nil
	}
	if d.Addr == "" {
		return false, nil
	}
	tpl := d.Template // already resolved against the fleet file
	if abs, err := filepath.Abs(tpl); err == nil {
		tpl = abs
	}
	switch t := t.(type) {
	case *gwconfig.DeviceFile:
		t.Template = tpl
	case *gwconfig.SourceFile:
		t.Template = tpl
	}
	transport := modbus.Transport(d.Transport)
	if transport == "" {
		transport = modbus.TCP
	}
	return true, t.SetBlock("modbus", modbus.Config{Transport: transport, Address: d.Addr, UnitID: d.UnitID})
}

// navPoints are the ship signals the demo reads over NMEA 0183, by the
// sentence quantity that carries them (the simulators' talker sends
// RMC, VTG, VHW, HDT and DPT).
var navPoints = map[string]string{
	"latitude": "RMC.latitude", "longitude": "RMC.longitude", "sog": "RMC.sog", "cog": "RMC.cog",
	"heading": "HDT.heading", "stw": "VHW.stw", "water_depth": "DPT.depth_below_keel",
}

// navTalkerInterval is the simulators' NMEA talker's default period (wall
// time); the nav source reports every two, so no cycle falls between two
// bursts and reads a point as silent.
const navTalkerInterval = time.Second

// navSource is a ship's navigation source: its NMEA 0183 talker.
func navSource(d fleet.DeviceInfo, poll time.Duration) (gwconfig.SourceFile, error) {
	nav := gwconfig.SourceFile{Name: "nav", PollInterval: max(poll, 2*navTalkerInterval)}
	transport := nmea.TCP
	if d.NMEATransport == nmea.UDP {
		transport = nmea.UDP
	}
	if err := nav.SetBlock("nmea", nmea.Config{Transport: transport, Address: d.NMEA}); err != nil {
		return nav, err
	}
	for _, sig := range slices.Sorted(maps.Keys(navPoints)) {
		if err := nav.AddPoint(nmea.PointFile{PointFile: gwconfig.PointFile{Signal: sig}, Sentence: navPoints[sig]}); err != nil {
			return nav, err
		}
	}
	return nav, nil
}

// engineTemplates returns devs with each ship's template (the register
// map its simulator serves, navigation included) replaced by a copy in dir
// without the navigation registers, which the gateway reads over NMEA
// 0183 instead: a signal is read by one source only.
func engineTemplates(devs []fleet.DeviceInfo, dir string) ([]fleet.DeviceInfo, error) {
	out := slices.Clone(devs)
	for i := range out {
		d := &out[i]
		if d.NMEA == "" || d.Template == "" {
			continue
		}
		data, err := os.ReadFile(d.Template)
		if err != nil {
			return nil, fmt.Errorf("demo: %s template: %w", d.ID, err)
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("demo: %s template %s: %w", d.ID, d.Template, err)
		}
		if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
			return nil, fmt.Errorf("demo: %s template %s: not a mapping", d.ID, d.Template)
		}
		top := doc.Content[0]
		for k := 0; k+1 < len(top.Content); k += 2 {
			if top.Content[k].Value != "points" {
				continue
			}
			pts := top.Content[k+1]
			kept := pts.Content[:0]
			for _, p := range pts.Content {
				if _, nav := navPoints[pointSignal(p)]; !nav {
					kept = append(kept, p)
				}
			}
			pts.Content = kept
		}
		eng, err := yaml.Marshal(&doc)
		if err != nil {
			return nil, fmt.Errorf("demo: %s engine template: %w", d.ID, err)
		}
		path := filepath.Join(dir, d.ID+"-engine.yaml")
		if err := writeFresh(path, eng); err != nil {
			return nil, err
		}
		d.Template = path
	}
	return out, nil
}

// pointSignal is the signal of a template point (a mapping node).
func pointSignal(p *yaml.Node) string {
	for k := 0; k+1 < len(p.Content); k += 2 {
		if p.Content[k].Value == "signal" {
			return p.Content[k+1].Value
		}
	}
	return ""
}

// MarshalGatewayConfig writes f as the YAML file the gateway loads.
func MarshalGatewayConfig(f *gwconfig.File) ([]byte, error) {
	data, err := gwconfig.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("demo: gateway config: %w", err)
	}
	return append([]byte(generatedHeader+" from the simulator fleet\n"), data...), nil
}
