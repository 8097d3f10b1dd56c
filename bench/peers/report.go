package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// result is one row of the table: one agent on one workload.
type result struct {
	workload, side     string
	offered, delivered float64       // points/s
	cpuPerM            float64       // CPU-seconds per million points delivered
	cores              float64       // CPU-seconds per second
	rssMedian, rssPeak int64         // bytes, summed over the process tree
	procs              int           // processes in the tree at the end
	firstPoint         time.Duration // from the agent's start to the first point delivered
	note               string
	failed             bool // note says why
}

func (r result) line() string {
	return fmt.Sprintf("offered %.0f/s, delivered %.0f/s, %.2f CPU-s per M points (%.2f cores), RSS median %.0f MB, peak %.0f MB, %d process(es), first point after %.1f s",
		r.offered, r.delivered, r.cpuPerM, r.cores, mb(r.rssMedian), mb(r.rssPeak), r.procs, r.firstPoint.Seconds())
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// table renders rows as a markdown table.
func table(rows []result) string {
	var b strings.Builder
	b.WriteString("| workload | agent | points/s offered | points/s delivered | delivered | CPU-s per M points | cores | RSS median (MB) | RSS peak (MB) | first point (s) | note |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		if r.failed {
			fmt.Fprintf(&b, "| %s | %s | | | | | | | | | %s |\n", r.workload, agentName(r.side), escape(r.note))
			continue
		}
		share := 0.0
		if r.offered > 0 {
			share = 100 * r.delivered / r.offered
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.1f %% | %.2f | %.2f | %.0f | %.0f | %.1f | %s |\n",
			r.workload, agentName(r.side), thousands(r.offered), thousands(r.delivered), share,
			r.cpuPerM, r.cores, mb(r.rssMedian), mb(r.rssPeak), r.firstPoint.Seconds(), escape(r.note))
	}
	return b.String()
}

func agentName(side string) string {
	if side == "smelter" {
		return "smelter-gateway"
	}
	return "Telegraf"
}

func escape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// env is the machine and the versions a run used.
type env struct {
	start                      time.Time
	cpus                       int
	cpuModel                   string
	loadStart, loadEnd         string
	gateway, telegraf          string
	nodeOPCUA, libmodbus       string
	natsServer, goVersion      string
	command                    string
	duration, warmup           time.Duration
	opcuaDuration, opcuaWarmup time.Duration
}

func describeEnv(ctx context.Context, o options) *env {
	e := &env{start: time.Now().UTC(), cpus: runtime.NumCPU(), cpuModel: cpuModel(), loadStart: loadavg(),
		natsServer: natsVersion(), goVersion: goVersion(), duration: o.duration, warmup: o.warmup,
		opcuaDuration: o.opcuaDuration, opcuaWarmup: o.opcuaWarmup,
		command: "go run ./bench/peers " + strings.Join(os.Args[1:], " ")}
	e.gateway = firstLine(ctx, o.gateway, "version")
	if o.telegraf != "" {
		e.telegraf = firstLine(ctx, o.telegraf, "--version")
	}
	e.libmodbus = firstLine(ctx, "pkg-config", "--modversion", "libmodbus")
	e.nodeOPCUA = packageVersion(filepath.Join(o.nodePath, "node-opcua", "package.json"))
	return e
}

func (e *env) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Side by side, %s\n\n", e.start.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- machine: %d CPUs (`nproc`), %s; load average at start %s", e.cpus, e.cpuModel, e.loadStart)
	if e.loadEnd != "" {
		fmt.Fprintf(&b, ", at the end %s", e.loadEnd)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- smelter-gateway: %s\n- Telegraf: %s\n", e.gateway, e.telegraf)
	fmt.Fprintf(&b, "- nats-server %s (embedded, one per run), Go %s, libmodbus %s, node-opcua %s\n",
		e.natsServer, e.goVersion, e.libmodbus, e.nodeOPCUA)
	fmt.Fprintf(&b, "- each agent: started, %v of warm-up after its first point delivered, then %v measured (OPC UA: %v, %v)\n",
		e.warmup, e.duration, e.opcuaWarmup, e.opcuaDuration)
	fmt.Fprintf(&b, "- command: `%s`\n", e.command)
	return b.String()
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadavg is the 1, 5 and 15 minute load averages of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// firstLine runs name args and returns the first line it prints, or why not.
func firstLine(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n"))
	if err != nil {
		return fmt.Sprintf("unknown (%s: %v)", name, err)
	}
	return string(line)
}

func packageVersion(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	var p struct{ Version string }
	if json.Unmarshal(b, &p) != nil || p.Version == "" {
		return "unknown"
	}
	return p.Version
}
