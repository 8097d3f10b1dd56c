// Package nmeafront serves a simulated ship's navigation data as NMEA 0183
// sentences, as a ship's instruments (GNSS receiver, gyro, speed log, echo
// sounder) or a multiplexer put them on a network:
//
//   - tcp: a TCP server; every connected client receives the sentences
//     (the gateway's NMEA driver connects as a client);
//   - udp: datagrams to a destination address, one sentence per datagram.
//
// Every interval (wall clock) it sends RMC and VTG (talker GP), HDT (HE),
// VHW (VW) and DPT (SD), built from the latest values handed to Update
// (catalog signal names and units of class ship) and its simulated time.
// Corrupt, when above 0, is the fraction of sentences sent with a wrong
// checksum (to exercise a receiver's bad-sentence counting).
package nmeafront

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/smelterio/smelter/internal/nmea"
)

// Transports.
const (
	TCP = "tcp"
	UDP = "udp"
)

// Config is one NMEA front.
type Config struct {
	Name      string
	Transport string        // tcp (listen) | udp (send to Address)
	Address   string        // tcp: listen host:port (port 0 = free port); udp: destination host:port
	Interval  time.Duration // between bursts; default 1s
	Corrupt   float64       // fraction of sentences with a bad checksum, 0..1
	Seed      uint64        // corruption stream
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Transport != TCP && c.Transport != UDP {
		errs = append(errs, fmt.Errorf("transport: %q not one of tcp, udp", c.Transport))
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, fmt.Errorf("address: %w", err))
	}
	if c.Interval < 0 || c.Interval > time.Minute {
		errs = append(errs, fmt.Errorf("interval: %v outside 0..1m", c.Interval))
	}
	if math.IsNaN(c.Corrupt) || c.Corrupt < 0 || c.Corrupt > 1 {
		errs = append(errs, fmt.Errorf("corrupt: %v outside 0..1", c.Corrupt))
	}
	return errors.Join(errs...)
}

// Front is one NMEA talker. New, then Start; Stop or the Start context's end
// closes it.
type Front struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	vals    map[string]float64
	at      time.Time
	silent  bool
	clients map[net.Conn]struct{}
	ln      net.Listener
	pc      net.PacketConn
	dst     net.Addr
	addr    string
	rng     *rand.Rand
	sent    uint64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New prepares a front; it does no I/O.
func New(cfg Config, log *slog.Logger) (*Front, error) {
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nmea front %s: %w", cfg.Name, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Front{cfg: cfg, log: log.With("nmea_front", cfg.Name), clients: map[net.Conn]struct{}{},
		rng: rand.New(rand.NewPCG(cfg.Seed, 0x6e6d6561))}, nil
}

// Start binds (tcp) or opens the socket (udp) and starts sending.
func (f *Front) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	var lc net.ListenConfig
	switch f.cfg.Transport {
	case TCP:
		ln, err := lc.Listen(ctx, "tcp", f.cfg.Address)
		if err != nil {
			cancel()
			return fmt.Errorf("nmea front %s: %w", f.cfg.Name, err)
		}
		f.ln, f.addr = ln, ln.Addr().String()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.accept(ln)
		}()
	case UDP:
		dst, err := net.ResolveUDPAddr("udp", f.cfg.Address)
		if err != nil {
			cancel()
			return fmt.Errorf("nmea front %s: %w", f.cfg.Name, err)
		}
		pc, err := lc.ListenPacket(ctx, "udp", "127.0.0.1:0")
		if err != nil {
			cancel()
			return fmt.Errorf("nmea front %s: %w", f.cfg.Name, err)
		}
		f.pc, f.dst, f.addr = pc, dst, dst.String()
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.run(ctx)
	}()
	return nil
}

// Addr is the real listen address (tcp) or the destination (udp).
func (f *Front) Addr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addr
}

// Sent counts the sentences written (to any client or datagram).
func (f *Front) Sent() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent
}

// Update sets the values the next burst encodes (signal -> value, catalog
// units) and their simulated time. vals is copied.
func (f *Front) Update(vals map[string]float64, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vals == nil {
		f.vals = make(map[string]float64, len(vals))
	}
	for k, v := range vals {
		f.vals[k] = v
	}
	f.at = at
}

// SetSilent stops (true) or resumes sending; clients stay connected.
func (f *Front) SetSilent(s bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.silent = s
}

// DropConnections closes every TCP client's connection (a drop fault);
// clients may connect again.
func (f *Front) DropConnections() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.clients {
		_ = c.Close()
		delete(f.clients, c)
	}
}

// Stop closes the front and waits for its goroutines.
func (f *Front) Stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
}

func (f *Front) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.clients[c] = struct{}{}
		f.mu.Unlock()
		f.log.Debug("nmea client connected", "remote", c.RemoteAddr().String())
	}
}

func (f *Front) run(ctx context.Context) {
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	defer f.closeAll()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.burst()
	}
}

func (f *Front) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
	}
	if f.pc != nil {
		_ = f.pc.Close()
	}
	for c := range f.clients {
		c.Close()
		delete(f.clients, c)
	}
}

// burst writes one set of sentences to every client or as datagrams.
func (f *Front) burst() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.silent || f.vals == nil {
		return
	}
	sentences := Sentences(nil, f.vals, f.at)
	for i := range sentences {
		if f.cfg.Corrupt > 0 && f.rng.Float64() < f.cfg.Corrupt {
			// a well-formed but wrong checksum: XOR 0x5A of the right one
			s := sentences[i]
			sum, _ := strconv.ParseUint(string(s[len(s)-4:len(s)-2]), 16, 8)
			const hex = "0123456789ABCDEF"
			bad := byte(sum) ^ 0x5A
			s[len(s)-4], s[len(s)-3] = hex[bad>>4], hex[bad&15]
		}
	}
	for c := range f.clients {
		_ = c.SetWriteDeadline(time.Now().Add(f.cfg.Interval))
		for _, s := range sentences {
			if _, err := c.Write(s); err != nil {
				f.log.Debug("nmea client gone", "remote", c.RemoteAddr().String(), "err", err)
				c.Close()
				delete(f.clients, c)
				break
			}
			f.sent++
		}
	}
	if f.pc != nil {
		for _, s := range sentences {
			if _, err := f.pc.WriteTo(s, f.dst); err == nil {
				f.sent++
			}
		}
	}
}

// Sentences encodes the navigation values of a ship (signals latitude,
// longitude, sog, cog, heading, stw, water_depth, draught) as RMC, VTG,
// HDT, VHW and DPT sentences stamped with at (UTC). A sentence whose values
// are missing is left out. DPT gives the depth below the transducer with
// a negative offset (transducer to keel, taken as 0.5 m above the keel), so
// depth below the keel = depth + offset.
func Sentences(dst [][]byte, v map[string]float64, at time.Time) [][]byte {
	f := func(x float64, prec int) string { return strconv.FormatFloat(x, 'f', prec, 64) }
	has := func(names ...string) bool {
		for _, n := range names {
			if _, ok := v[n]; !ok {
				return false
			}
		}
		return true
	}
	at = at.UTC()
	if has("latitude", "longitude", "sog", "cog") {
		lat, lon := v["latitude"], v["longitude"]
		ns, ew := "N", "E"
		if lat < 0 {
			ns, lat = "S", -lat
		}
		if lon < 0 {
			ew, lon = "W", -lon
		}
		dst = append(dst, nmea.Append(nil, "GP", "RMC", at.Format("150405.00"), "A", dm(lat, 2), ns, dm(lon, 3), ew,
			f(v["sog"], 1), f(v["cog"], 1), at.Format("020106"), "", "", "A"))
		dst = append(dst, nmea.Append(nil, "GP", "VTG", f(v["cog"], 1), "T", "", "M", f(v["sog"], 1), "N", f(v["sog"]*1.852, 1), "K", "A"))
	}
	if has("heading") {
		dst = append(dst, nmea.Append(nil, "HE", "HDT", f(v["heading"], 1), "T"))
		if has("stw") {
			dst = append(dst, nmea.Append(nil, "VW", "VHW", f(v["heading"], 1), "T", "", "M", f(v["stw"], 2), "N", f(v["stw"]*1.852, 2), "K"))
		}
	}
	if has("water_depth", "draught") {
		// the transducer sits 0.5 m above the keel: depth below it is
		// depth below the keel + 0.5, offset -0.5
		dst = append(dst, nmea.Append(nil, "SD", "DPT", f(v["water_depth"]+0.5, 1), "-0.5", ""))
	}
	return dst
}

// dm formats decimal degrees as NMEA ddmm.mmmm (degDigits 2) or dddmm.mmmm (3).
func dm(deg float64, degDigits int) string {
	d := math.Floor(deg)
	m := (deg - d) * 60
	if math.Round(m*1e4)/1e4 >= 60 { // 59.99999 rounds up to the next degree
		d, m = d+1, 0
	}
	ds := strconv.Itoa(int(d))
	for len(ds) < degDigits {
		ds = "0" + ds
	}
	ms := strconv.FormatFloat(m, 'f', 4, 64)
	if m < 10 {
		ms = "0" + ms
	}
	return ds + ms
}
