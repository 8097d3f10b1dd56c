package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/modbus"
	"github.com/smelterio/smelter/internal/opcua"
)

// interruptible returns a context cancelled by SIGINT/SIGTERM.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// parseUnits parses "1-10,17,20-22".
func parseUnits(s string) ([]uint8, error) {
	var out []uint8
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 || a > 255 {
			return nil, fmt.Errorf("-units: %q is not a unit id 0..255", lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b > 255 {
				return nil, fmt.Errorf("-units: %q is not a range like 1-10", part)
			}
		}
		for u := a; u <= b; u++ {
			out = append(out, uint8(u))
		}
	}
	return out, nil
}

func cmdScan(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	transport := fs.String("transport", "tcp", "tcp | rtu | rtu_over_tcp | ascii | ascii_over_tcp")
	units := fs.String("units", "1-247", "unit ids to probe, e.g. 1-10,17 (0 and 248-255 on tcp only)")
	tables := fs.String("tables", "holding,input", "tables to map: coil, discrete, holding, input")
	start := fs.Int("start", 0, "first address to map (0-based)")
	count := fs.Int("count", 1000, "addresses to map per table")
	timeout := fs.Duration("timeout", 300*time.Millisecond, "reply timeout per request")
	silence := fs.Duration("silence", 0, "rtu/ascii: quiet line needed after a timeout before the next request (0: timeout + one maximum frame at -baud)")
	maxRegs := fs.Int("max-registers", 125, "registers per request (lower for quirky devices)")
	baud := fs.Int("baud", 19200, "serial: baud rate (rtu/ascii over TCP: the line's rate behind the converter, for the default -silence)")
	parity := fs.String("parity", "E", "serial: N, E or O (either case)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: smelter-gateway scan modbus [flags] ADDRESS [flags]

Probes which unit ids answer at ADDRESS (host:port, or a serial device for rtu/ascii)
and maps the readable registers of each. It only reads. A unit that returns data or
an exception about its registers is present; a timeout, another unit's reply, and a
TCP gateway's exceptions 10 and 11 (path unavailable, target failed to respond) mean
absent. Exits 1 when the connection cannot be opened, or when no unit is present and
what replied is not Modbus (a wrong port or -transport); 2 on a bad flag.

Examples:
  smelter-gateway scan modbus 192.168.1.20:502 -units 1
  smelter-gateway scan modbus 10.0.0.5:4001 -transport rtu_over_tcp -units 1-32 -count 200
  smelter-gateway scan modbus /dev/ttyUSB0 -transport rtu -baud 9600 -parity N -units 1-10

`)
		fs.PrintDefaults()
	}
	if slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "-help" || a == "--help" }) {
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	}
	if len(args) < 2 || args[0] != "modbus" {
		fs.Usage()
		return 2
	}
	// flags before or after ADDRESS: "scan modbus -units 1 HOST:502" took
	// "-units" for the address and ignored the rest; a second argument
	// was ignored as well
	var pos []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "scan modbus takes one ADDRESS, got %d: %q\n", len(pos), pos)
		return 2
	}
	addr := pos[0]
	us, err := parseUnits(*units)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	var ts []modbus.Table
	for _, name := range strings.Split(*tables, ",") {
		t, err := modbus.ParseTable(strings.TrimSpace(name))
		if err != nil {
			fmt.Fprintln(stderr, "-tables:", err)
			return 2
		}
		ts = append(ts, t)
	}
	if *start < 0 || *start > 65535 {
		fmt.Fprintln(stderr, "-start: out of range 0..65535")
		return 2
	}
	if *count < 1 || *start+*count > 65536 {
		fmt.Fprintf(stderr, "-count: %d out of range 1..%d (from -start %d)\n", *count, 65536-*start, *start)
		return 2
	}
	tr := modbus.Transport(*transport)
	if !tr.Serial() {
		// a serial setting on a socket would be silently ignored; -baud
		// still sizes the default -silence of rtu/ascii over TCP
		var misplaced []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "parity" || f.Name == "baud" && tr == modbus.TCP {
				misplaced = append(misplaced, "-"+f.Name)
			}
		})
		if len(misplaced) > 0 {
			fmt.Fprintf(stderr, "%s: serial line settings apply to -transport rtu and ascii only (-baud also to the default -silence over TCP), not %s\n",
				strings.Join(misplaced, ", "), tr)
			return 2
		}
	}
	cfg := modbus.Config{Transport: tr, Address: addr, Timeout: *timeout, Silence: *silence,
		MaxRegisters: *maxRegs, Serial: modbus.SerialConfig{Baud: *baud, Parity: strings.ToUpper(*parity)}}
	if err := checkScanConfig(cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log, _ := logging.New(stderr, "error", "text")
	ctx, stop := interruptible()
	defer stop()
	found, err := modbus.Scan(ctx, cfg, modbus.ScanOptions{Units: us, Tables: ts, Start: uint16(*start), Count: *count,
		Progress: func(msg string) { fmt.Fprintf(stderr, "\rscanning %-60s", msg) }}, log)
	fmt.Fprintf(stderr, "\r%-70s\r", "")
	if err != nil && ctx.Err() == nil {
		if len(found) > 0 {
			_ = modbus.WriteScan(stdout, found)
		}
		fmt.Fprintln(stderr, "scan:", err)
		return 1
	}
	_ = modbus.WriteScan(stdout, found)
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "scan interrupted; results so far above")
		return 1
	}
	return 0
}

// checkScanConfig validates the connection settings of a scan (unit 1
// stands in for the units probed), naming the flags rather than YAML
// fields.
func checkScanConfig(cfg modbus.Config) error {
	cfg.UnitID = 1
	cfg.SetDefaults()
	err := cfg.Validate()
	if err == nil {
		return nil
	}
	flags := map[string]string{"transport": "-transport", "timeout": "-timeout", "silence": "-silence",
		"max_registers": "-max-registers", "serial.baud": "-baud", "serial.parity": "-parity", "address": "ADDRESS"}
	var msgs []string
	for _, line := range strings.Split(err.Error(), "\n") {
		field, reason, ok := strings.Cut(line, ": ")
		if f, known := flags[field]; ok && known {
			line = f + ": " + reason
		}
		msgs = append(msgs, line)
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// uaFlags are the connection flags browse and endpoints share.
func uaFlags(fs *flag.FlagSet) *opcua.Config {
	cfg := &opcua.Config{}
	fs.StringVar(&cfg.SecurityPolicy, "policy", "None", "security policy: None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss")
	fs.StringVar(&cfg.SecurityMode, "mode", "", "security mode: None, Sign, SignAndEncrypt (default: SignAndEncrypt with a policy)")
	fs.StringVar(&cfg.Auth.Mode, "auth", "anonymous", "login: anonymous, username, certificate")
	fs.StringVar(&cfg.Auth.Username, "user", "", "username login: the user")
	fs.StringVar(&cfg.Auth.PasswordEnv, "password-env", "", "username login: environment variable holding the password")
	fs.StringVar(&cfg.DataDir, "data", "data", "gateway data directory (application certificate, trusted and rejected server certificates)")
	fs.BoolVar(&cfg.AcceptUntrusted, "accept-untrusted", false, "accept an untrusted server certificate (testing only)")
	return cfg
}

func cmdBrowse(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("browse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := uaFlags(fs)
	root := fs.String("root", "", "node id to start from (default the Objects folder)")
	depth := fs.Int("depth", 6, "levels to walk below the root")
	ns0 := fs.Bool("ns0", false, "also walk namespace 0 (the Server object)")
	writeCfg := fs.String("write-config", "", "write a ready-to-edit device config for the variables found to this file (node ids as nsu=<namespace URI>;...)")
	class := fs.String("class", "generic", "catalog class of the devices in -write-config (ranges are written in the class's units)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: smelter-gateway browse ENDPOINT [flags]

Walks an OPC UA server's address space and prints every variable with its node id,
data type, unit and current value.

Examples:
  smelter-gateway browse opc.tcp://10.0.0.7:4840
  smelter-gateway browse opc.tcp://10.0.0.7:4840 -policy Basic256Sha256 -auth username -user op -password-env UA_PW -write-config cnc.yaml
  smelter-gateway browse opc.tcp://10.0.0.9:4840 -write-config bf.yaml -class blast_furnace

`)
		fs.PrintDefaults()
	}
	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		fs.Usage()
		return 2
	}
	endpoint := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	opts := opcua.BrowseOptions{Root: *root, MaxDepth: *depth, IncludeNS0: *ns0, Class: *class}
	var f *os.File
	if *writeCfg != "" {
		var err error
		if f, err = os.OpenFile(*writeCfg, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640); err != nil {
			fmt.Fprintln(stderr, "-write-config:", err)
			return 1
		}
		defer func() { _ = f.Close() }()
		opts.WriteConfig = f
	}
	ctx, stop := interruptible()
	defer stop()
	if err := opcua.Browse(ctx, endpoint, *cfg, stdout, opts); err != nil {
		fmt.Fprintln(stderr, "browse:", err)
		return 1
	}
	if f != nil {
		fmt.Fprintf(stderr, "wrote %s\n", *writeCfg)
	}
	return 0
}

func cmdEndpoints(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, "usage: smelter-gateway endpoints ENDPOINT\n\nLists the endpoints (security policies, modes, logins, certificate thumbprints) an OPC UA server offers.\n\nExample:\n  smelter-gateway endpoints opc.tcp://10.0.0.7:4840\n")
		return 2
	}
	ctx, stop := interruptible()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	eps, err := opcua.Endpoints(ctx, args[0])
	if err != nil {
		fmt.Fprintln(stderr, "endpoints:", err)
		return 1
	}
	if err := opcua.WriteEndpoints(stdout, eps); err != nil {
		return 1
	}
	return 0
}
