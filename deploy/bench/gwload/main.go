// Command gwload measures smelter-gateway's memory and CPU under a steady
// load, from outside, the way an operator would: the devices are served by
// a separate process (the Modbus front or the OPC UA front of the
// simulators), both brokers run in this process (embedded nats-server with
// JetStream, mochi MQTT), and the gateway binary runs as its own process
// with its default spool. Every interval it samples the gateway and its
// child processes (OPC UA session workers): VmRSS and VmHWM from
// /proc/<pid>/status, utime+stime from /proc/<pid>/stat; it counts the
// readings that reach NATS (core subscription on smelter.v1.>) and MQTT.
//
//	make bench-gateway                       # Modbus: 100 devices x 100 uint16 registers every 100 ms
//	go run ./deploy/bench/gwload -gateway bin/smelter-gateway -proto opcua -devices 2 -points 10000
//	go run ./deploy/bench/gwload -gateway bin/smelter-gateway -memory-limit 32MiB
//
// It prints a sample line per second and a summary (one line of JSON
// after "RESULT "). CPU figures depend on what else runs on the machine:
// the load average is printed with them. docs/benchmarks.md holds the
// figures and what they mean.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"

	"github.com/smelterio/smelter/internal/brokers"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("gwload: ")
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		if err := serve(os.Args[2:]); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		log.Fatal(err)
	}
}

type options struct {
	gateway     string
	proto       string
	devices     int
	points      int
	servers     int
	interval    time.Duration
	duration    time.Duration
	warmup      time.Duration
	memoryLimit string
	isolation   string
	extra       string
	env         string
	pprof       string
	cpuProfile  string
	keep        bool
	outage      time.Duration
}

func run(args []string) error {
	var o options
	fs := flag.NewFlagSet("gwload", flag.ContinueOnError)
	fs.StringVar(&o.gateway, "gateway", "bin/smelter-gateway", "smelter-gateway binary")
	fs.StringVar(&o.proto, "proto", "modbus", "modbus | opcua")
	fs.IntVar(&o.devices, "devices", 100, "devices (modbus: one TCP server each; opcua: one asset and one gateway device each)")
	fs.IntVar(&o.points, "points", 100, "points per device (modbus: uint16 holding registers read as one request; opcua: nodes)")
	fs.IntVar(&o.servers, "servers", 1, "device server processes (the devices are spread over them)")
	fs.DurationVar(&o.interval, "interval", 100*time.Millisecond, "poll interval (modbus) or sampling interval and change period (opcua)")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "measured time after the warm-up")
	fs.DurationVar(&o.warmup, "warmup", 15*time.Second, "time before measuring (RSS peak is over the whole run)")
	fs.StringVar(&o.memoryLimit, "memory-limit", "", "gateway.memory_limit (e.g. 32MiB; empty: not set)")
	fs.StringVar(&o.isolation, "isolation", "", "opcua isolation (endpoint | process | none; empty: the default)")
	fs.StringVar(&o.extra, "config", "", "YAML appended to the gateway block's siblings (e.g. 'spool: {cache_bytes: 1048576}')")
	fs.StringVar(&o.env, "env", "", "extra environment of the gateway, space separated (e.g. 'GOGC=50 GOMEMLIMIT=30MiB')")
	fs.StringVar(&o.pprof, "heap-profile", "", "write the gateway's heap profile here at the end (turns http.pprof on)")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write the gateway's CPU profile over the measured time here (turns http.pprof on)")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory")
	fs.DurationVar(&o.outage, "outage", 0, "stop the NATS server this long, 5 s into the measured time, then start it again (the spool holds a backlog and replays it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.proto != "modbus" && o.proto != "opcua" {
		return fmt.Errorf("-proto %q: want modbus or opcua", o.proto)
	}
	gw, err := filepath.Abs(o.gateway)
	if err != nil {
		return err
	}
	if _, err := os.Stat(gw); err != nil {
		return fmt.Errorf("gateway binary: %w (make build)", err)
	}
	dir, err := os.MkdirTemp("", "gwload-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer func() { _ = os.RemoveAll(dir) }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	nsrv, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return err
	}
	defer nsrv.Shutdown()
	msrv, err := brokers.StartMQTT(brokers.MQTTOptions{})
	if err != nil {
		return err
	}
	defer func() { _ = msrv.Close() }()

	// device servers
	per := (o.devices + o.servers - 1) / o.servers
	var addrs []string
	for s := 0; s < o.servers; s++ {
		n := min(per, o.devices-s*per)
		if n <= 0 {
			break
		}
		a, err := startServer(ctx, o, s*per, n)
		if err != nil {
			return err
		}
		addrs = append(addrs, a...)
	}

	cfgPath, httpAddr, err := writeConfig(dir, o, addrs, nsrv.URL(), msrv.URL())
	if err != nil {
		return err
	}

	var natsReadings, natsMsgs, mqttReadings atomic.Int64
	nc, err := nats.Connect(nsrv.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.Subscribe("smelter.v1.>", func(m *nats.Msg) {
		if strings.HasSuffix(m.Subject, ".data") {
			natsMsgs.Add(1)
			natsReadings.Add(int64(bytes.Count(m.Data, signalKey)))
		}
	})
	if err != nil {
		return err
	}
	_ = sub.SetPendingLimits(-1, -1)
	mc := paho.NewClient(paho.NewClientOptions().AddBroker(msrv.URL()).SetClientID("gwload"))
	if t := mc.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return fmt.Errorf("mqtt connect: %w", t.Error())
	}
	defer mc.Disconnect(100)
	if t := mc.Subscribe("smelter/v1/#", 0, func(_ paho.Client, m paho.Message) {
		if strings.HasSuffix(m.Topic(), "/data") {
			mqttReadings.Add(int64(bytes.Count(m.Payload(), signalKey)))
		}
	}); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return fmt.Errorf("mqtt subscribe: %w", t.Error())
	}

	// Not CommandContext: the gateway is stopped with SIGTERM below, so
	// that it flushes, and its figures are read while it runs.
	cmd := exec.Command(gw, "run", "-config", cfgPath) //nolint:noctx // see above
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), strings.Fields(o.env)...)
	logf, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	fmt.Printf("gwload: %s, %d devices x %d points every %v (%d points/s offered), gateway pid %d, warm-up %v, measured %v\n",
		o.proto, o.devices, o.points, o.interval, int(float64(o.devices*o.points)/o.interval.Seconds()), pid, o.warmup, o.duration)
	fmt.Printf("%6s %9s %9s %9s %9s %7s %9s %9s\n", "t(s)", "gw-rss", "gw-hwm", "workers", "total", "procs", "nats/s", "mqtt/s")

	var res result
	res.Proto, res.Devices, res.Points, res.Interval = o.proto, o.devices, o.points, o.interval.String()
	res.Offered = float64(o.devices*o.points) / o.interval.Seconds()
	res.MemoryLimit, res.Env, res.Config = o.memoryLimit, o.env, o.extra
	if o.outage > 0 {
		res.Outage = o.outage.String()
	}
	start := time.Now()
	var steady, pssS, anonS, wanonS []float64
	var cpu0, wall0 float64
	var nats0, mqtt0 int64
	measuring := false
	outageState := 0 // 1: NATS stopped, 2: started again
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	prevN, prevM := int64(0), int64(0)
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			runErr = ctx.Err()
			break loop
		case err := <-exited:
			return fmt.Errorf("the gateway exited early: %w (log: %s)", err, filepath.Join(dir, "gateway.log"))
		case now := <-tick.C:
			s := sampleTree(pid)
			el := now.Sub(start)
			n, m := natsReadings.Load(), mqttReadings.Load()
			fmt.Printf("%6.0f %8.1fM %8.1fM %8.1fM %8.1fM %7d %9d %9d\n", el.Seconds(), mb(s.gwRSS), mb(s.gwHWM), mb(s.workRSS),
				mb(s.gwRSS+s.workRSS), s.procs, n-prevN, m-prevM)
			prevN, prevM = n, m
			res.PeakRSSMB = max(res.PeakRSSMB, mb(s.gwHWM))
			res.PeakTotalMB = max(res.PeakTotalMB, mb(s.gwRSS+s.workRSS))
			res.PeakWorkersMB = max(res.PeakWorkersMB, mb(s.workRSS))
			res.Workers = max(res.Workers, s.procs-1)
			if o.outage > 0 {
				switch at := o.warmup + 5*time.Second; {
				case outageState == 0 && el >= at:
					nsrv.Shutdown()
					outageState = 1
					fmt.Printf("gwload: NATS server stopped for %v\n", o.outage)
				case outageState == 1 && el >= at+o.outage:
					if err := nsrv.Start(); err != nil {
						return fmt.Errorf("restarting the NATS server: %w", err)
					}
					outageState = 2
					fmt.Println("gwload: NATS server started again")
				}
			}
			if !measuring && el >= o.warmup {
				measuring = true
				if o.cpuProfile != "" {
					go func(secs int) {
						u := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", httpAddr, secs)
						if err := fetch(ctx, u, o.cpuProfile); err != nil {
							log.Printf("cpu profile: %v", err)
						}
					}(int(o.duration.Seconds()) - 1)
				}
				cpu0, wall0, nats0, mqtt0 = s.cpu, el.Seconds(), n, m
				continue
			}
			if measuring {
				steady = append(steady, mb(s.gwRSS+s.workRSS))
				res.FileMB = mb(s.gwFile)
				pssS = append(pssS, mb(s.pss))
				anonS = append(anonS, mb(s.anon))
				wanonS = append(wanonS, mb(s.workAnon))
				res.CPUSeconds = s.cpu - cpu0
				res.Seconds = el.Seconds() - wall0
				res.NATSReadings, res.MQTTReadings = n-nats0, m-mqtt0
				if el >= o.warmup+o.duration {
					break loop
				}
			}
		}
	}
	if o.pprof != "" {
		if err := fetch(ctx, "http://"+httpAddr+"/debug/pprof/heap", o.pprof); err != nil {
			log.Printf("heap profile: %v", err)
		}
		// the same with runtime.MemStats, as text
		if err := fetch(ctx, "http://"+httpAddr+"/debug/pprof/heap?debug=1", o.pprof+".txt"); err != nil {
			log.Printf("heap profile: %v", err)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			log.Printf("gateway stopped: %v", err)
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		log.Printf("gateway killed after 15 s: %v", <-exited)
	}
	if runErr != nil {
		return runErr
	}
	slices.Sort(steady)
	if len(steady) > 0 {
		res.SteadyMedianMB = steady[len(steady)/2]
		res.SteadyMaxMB = steady[len(steady)-1]
	}
	res.PSSMedianMB, res.AnonMedianMB, res.WorkersAnonMB = median(pssS), median(anonS), median(wanonS)
	if res.Seconds > 0 {
		res.NATSPerSec = float64(res.NATSReadings) / res.Seconds
		res.MQTTPerSec = float64(res.MQTTReadings) / res.Seconds
	}
	if res.NATSReadings > 0 {
		res.CPUPerMillion = res.CPUSeconds / (float64(res.NATSReadings) / 1e6)
		res.Cores = res.CPUSeconds / res.Seconds
	}
	res.Load = loadavg()
	fmt.Printf("\nsteady RSS (gateway + workers) median %.1f MB, max %.1f MB; peak VmHWM gateway %.1f MB, peak total %.1f MB (workers %d, peak %.1f MB)\n",
		res.SteadyMedianMB, res.SteadyMaxMB, res.PeakRSSMB, res.PeakTotalMB, res.Workers, res.PeakWorkersMB)
	fmt.Printf("of the gateway's RSS, %.1f MB is file-backed (its binary's text and data); median PSS (gateway + workers) %.1f MB, anonymous %.1f MB (workers %.1f MB)\n",
		res.FileMB, res.PSSMedianMB, res.AnonMedianMB, res.WorkersAnonMB)
	fmt.Printf("delivered: NATS %.0f readings/s, MQTT %.0f readings/s (offered %.0f); CPU %.2f s over %.0f s = %.3f core, %.2f CPU-s per million points; load average %s\n",
		res.NATSPerSec, res.MQTTPerSec, res.Offered, res.CPUSeconds, res.Seconds, res.Cores, res.CPUPerMillion, res.Load)
	out, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", out)
	if o.keep {
		fmt.Printf("kept %s\n", dir)
	}
	return nil
}

var signalKey = []byte(`{"signal":`)

type result struct {
	Proto          string  `json:"proto"`
	Devices        int     `json:"devices"`
	Points         int     `json:"points"`
	Interval       string  `json:"interval"`
	Offered        float64 `json:"offered_points_per_s"`
	MemoryLimit    string  `json:"memory_limit,omitempty"`
	Env            string  `json:"env,omitempty"`
	Config         string  `json:"config,omitempty"`
	Outage         string  `json:"nats_outage,omitempty"`
	Seconds        float64 `json:"seconds"`
	NATSReadings   int64   `json:"nats_readings"`
	MQTTReadings   int64   `json:"mqtt_readings"`
	NATSPerSec     float64 `json:"nats_per_s"`
	MQTTPerSec     float64 `json:"mqtt_per_s"`
	CPUSeconds     float64 `json:"cpu_s"`
	Cores          float64 `json:"cores"`
	CPUPerMillion  float64 `json:"cpu_s_per_million"`
	SteadyMedianMB float64 `json:"steady_rss_median_mb"`
	SteadyMaxMB    float64 `json:"steady_rss_max_mb"`
	PeakRSSMB      float64 `json:"peak_hwm_gateway_mb"`
	PeakTotalMB    float64 `json:"peak_rss_total_mb"`
	FileMB         float64 `json:"gateway_rss_file_mb"`
	PSSMedianMB    float64 `json:"pss_median_mb"`
	AnonMedianMB   float64 `json:"anon_median_mb"`
	WorkersAnonMB  float64 `json:"workers_anon_median_mb"`
	Workers        int     `json:"workers"`
	PeakWorkersMB  float64 `json:"peak_workers_mb"`
	Load           string  `json:"loadavg"`
}

func mb(kb int64) float64 { return float64(kb) / 1024 }

// writeConfig writes the gateway's configuration and returns its path and
// the HTTP address it listens on.
func writeConfig(dir string, o options, addrs []string, natsURL, mqttURL string) (string, string, error) {
	httpAddr, err := freeAddr(context.Background())
	if err != nil {
		return "", "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: {id: gw-load, site: bench, data_dir: ./data")
	if o.memoryLimit != "" {
		fmt.Fprintf(&b, ", memory_limit: %s", o.memoryLimit)
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "http: {listen: %q", httpAddr)
	if o.pprof != "" || o.cpuProfile != "" {
		b.WriteString(", pprof: true")
	}
	b.WriteString("}\nlog: {level: warn}\n")
	if o.extra != "" {
		b.WriteString(o.extra + "\n")
	}
	fmt.Fprintf(&b, "uplinks:\n  nats: {url: %q}\n  mqtt: {url: %q}\ndevices:\n", natsURL, mqttURL)
	switch o.proto {
	case "modbus":
		var tpl strings.Builder
		tpl.WriteString("template: load\nclass: generic\npoints:\n")
		for i := range o.points {
			fmt.Fprintf(&tpl, "  - {signal: s%03d, table: holding, address: %d, type: uint16, scale: 0.1, unit: kW}\n", i, i)
		}
		if err := os.WriteFile(filepath.Join(dir, "load.yaml"), []byte(tpl.String()), 0o600); err != nil {
			return "", "", err
		}
		for d, a := range addrs {
			fmt.Fprintf(&b, "  - {id: dev-%03d, class: generic, poll_interval: %s, template: load.yaml, modbus: {address: %q, unit_id: 1}}\n",
				d, o.interval, a)
		}
	case "opcua":
		for d, a := range addrs {
			fmt.Fprintf(&b, "  - id: ua-%03d\n    class: generic\n    opcua: {endpoint: %q, accept_untrusted: true, publish_interval: %s", d, a, o.interval)
			if o.isolation != "" {
				fmt.Fprintf(&b, ", isolation: %s", o.isolation)
			}
			b.WriteString("}\n    points:\n")
			for i := range o.points {
				fmt.Fprintf(&b, "      - {signal: s%05d, node_id: \"ns=1;s=ua-%03d.s%05d\", sampling_interval: %s, unit: kW}\n", i, d, i, o.interval)
			}
		}
	}
	path := filepath.Join(dir, "gateway.yaml")
	return path, httpAddr, os.WriteFile(path, []byte(b.String()), 0o600)
}

// startServer starts a device server process for devices [first,
// first+n) and returns their addresses (Modbus host:port or OPC UA
// endpoint URL). The process ends when this one does (its stdin closes).
func startServer(ctx context.Context, o options, first, n int) ([]string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "serve", "-proto", o.proto, "-first", strconv.Itoa(first), "-devices", strconv.Itoa(n),
		"-points", strconv.Itoa(o.points), "-interval", o.interval.String())
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if _, err := cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(out)
	var addrs []string
	for sc.Scan() {
		line := sc.Text()
		if a, ok := strings.CutPrefix(line, "ADDR "); ok {
			addrs = append(addrs, a)
		}
		if line == "READY" {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return addrs, nil
		}
	}
	return nil, errors.New("device server ended before it was ready")
}

// procSample is one sample of the gateway's process tree.
type procSample struct {
	gwRSS, gwHWM, workRSS int64   // KiB
	gwFile                int64   // KiB of gwRSS that is file-backed (the binary's text and data)
	pss, anon, workAnon   int64   // KiB, gateway + workers
	cpu                   float64 // seconds, gateway + live children
	procs                 int
}

var clkTck = 100.0 // USER_HZ on Linux

// lastRssFile is the RssFile (mapped binary and libraries) of the last
// process read, KiB.
var lastRssFile atomic.Int64

// sampleTree reads the gateway pid and its children (session workers).
func sampleTree(pid int) procSample {
	var s procSample
	s.gwRSS, s.gwHWM = statusKB(pid)
	s.gwFile = lastRssFile.Load()
	s.cpu = cpuSeconds(pid)
	s.procs = 1
	s.pss, s.anon = rollupKB(pid)
	for _, c := range children(pid) {
		rss, _ := statusKB(c)
		s.workRSS += rss
		s.cpu += cpuSeconds(c)
		s.procs++
		pss, anon := rollupKB(c)
		s.pss += pss
		s.anon += anon
		s.workAnon += anon
	}
	return s
}

// rollupKB returns the Pss (shared pages divided among their users: the
// workers share the gateway binary's text) and Anonymous (private heap and
// stacks) of pid, from /proc/<pid>/smaps_rollup.
func rollupKB(pid int) (pss, anon int64) {
	v := procKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss", "Anonymous")
	return v[0], v[1]
}

func statusKB(pid int) (rss, hwm int64) {
	v := procKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS", "VmHWM", "RssFile")
	lastRssFile.Store(v[2])
	return v[0], v[1]
}

// procKB reads the "Key: value kB" lines of a /proc file and returns the
// values of keys, in order (0: absent).
func procKB(path string, keys ...string) []int64 {
	out := make([]int64, len(keys))
	data, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if i := slices.Index(keys, k); i >= 0 {
			if f := strings.Fields(v); len(f) > 0 {
				out[i], _ = strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return out
}

// statFields returns the fields of /proc/<pid>/stat after the command name.
func statFields(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}

// cpuSeconds is utime+stime of pid plus that of its waited-for children
// (fields 14-17 of /proc/<pid>/stat).
func cpuSeconds(pid int) float64 {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	var t float64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime, counted from field 3
		v, _ := strconv.ParseFloat(f[i], 64)
		t += v
	}
	return t / clkTck
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(p)
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(ctx context.Context) (string, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}
