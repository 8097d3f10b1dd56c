package nmea

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/confload"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Transports of a Source.
const (
	TCP = "tcp" // client of a TCP server (an NMEA multiplexer or LAN gateway)
	UDP = "udp" // listener for datagrams (IEC 61162-450 style broadcast, plain sentences)
)

// StatusVoid is the sample status of a position, speed or course point
// whose sentence said the fix is not valid (RMC status V or mode N): the
// talker answered about the point, so it is bad, not silent.
const StatusVoid = 1

// ErrSilent is the cycle error when no sentence arrived in an interval.
var ErrSilent = errors.New("nmea: no sentence in the interval")

// Config is an NMEA source's connection.
type Config struct {
	Transport string   `yaml:"transport"` // tcp (default) | udp
	Address   string   `yaml:"address"`   // tcp: host:port to connect to; udp: host:port to listen on
	Talkers   []string `yaml:"talkers"`   // accept only these talker ids (GP, GN, HE ...); empty: all
	// MaxLength is the longest sentence accepted, in characters from "$" to
	// the checksum without CR LF (default MaxLen, 80: NMEA 0183's 82 with
	// CR LF); raise it only for a talker that sends longer sentences.
	MaxLength int           `yaml:"max_length"`
	DialTime  time.Duration `yaml:"dial_timeout"`
	// ReconnectMin and ReconnectMax bound the jittered reconnect backoff.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
}

// SetDefaults fills unset fields.
func (c *Config) SetDefaults() {
	if c.Transport == "" {
		c.Transport = TCP
	}
	if c.DialTime == 0 {
		c.DialTime = 5 * time.Second
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = time.Second
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 30 * time.Second
	}
	if c.MaxLength == 0 {
		c.MaxLength = MaxLen
	}
}

// Validate checks the configuration; each problem is a confload.Problem
// naming its field.
func (c *Config) Validate() error {
	var errs []error
	if c.Transport != TCP && c.Transport != UDP {
		errs = append(errs, confload.Problemf("transport", "%q is not tcp or udp", c.Transport))
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, confload.Problemf("address", "%q is not host:port", c.Address))
	}
	for i, t := range c.Talkers {
		if len(t) != 2 || !isAlnum(t) {
			errs = append(errs, confload.Problemf(fmt.Sprintf("talkers[%d]", i), "%q is not a two-character talker id", t))
		}
	}
	if c.MaxLength < MaxLen || c.MaxLength > MaxLenLimit {
		errs = append(errs, confload.Problemf("max_length", "%d is outside %d..%d characters (NMEA 0183 allows %d without CR LF)",
			c.MaxLength, MaxLen, MaxLenLimit, MaxLen))
	}
	if c.DialTime < 0 {
		errs = append(errs, confload.Problemf("dial_timeout", "%v must not be negative", c.DialTime))
	}
	if c.ReconnectMin < 0 || c.ReconnectMax < c.ReconnectMin {
		errs = append(errs, confload.Problemf("reconnect_max", "%v must not be below reconnect_min %v (nor negative)", c.ReconnectMax, c.ReconnectMin))
	}
	return errors.Join(errs...)
}

// Point is one acquired quantity: a name of Quantities ("RMC.sog"),
// optionally from one talker only.
type Point struct {
	Quantity string
	Talker   string
}

// Metrics counts sentences by outcome, per device: ok, checksum,
// malformed, unsupported (a valid frame of a type not decoded), filtered
// (a talker not listed).
type Metrics struct {
	sentences *prometheus.CounterVec
	discarded *prometheus.CounterVec
}

// NewMetrics registers the NMEA metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{sentences: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "smelter_nmea_sentences_total",
		Help: "NMEA 0183 sentences received, by device and result (ok, checksum, malformed, unsupported, filtered).",
	}, []string{"device", "result"}),
		discarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "smelter_nmea_discarded_bytes_total",
			Help: "Bytes of NMEA 0183 lines longer than 4 KiB, discarded unread (TCP), by device.",
		}, []string{"device"})}
	if reg != nil {
		reg.MustRegister(m.sentences, m.discarded)
	}
	return m
}

// Stats are a source's sentence counts.
type Stats struct {
	OK, Checksum, Malformed, Unsupported, Filtered uint64
	Discarded                                      uint64 // bytes of overlong TCP lines discarded unread
}

// Source acquires one NMEA device: it reads sentences as they come and
// emits a cycle every interval with the latest value of every point heard
// in that interval; a point not heard is a silent sample, a void fix a bad
// one (StatusVoid). New, then Run.
type Source struct {
	id       string
	cfg      Config
	points   []Point
	byQ      map[string][]int // quantity -> point indexes
	interval time.Duration
	log      *slog.Logger
	met      *Metrics

	mu      sync.Mutex
	cur     []cell // this interval's values
	heard   bool   // any sentence in this interval
	lost    bool   // the connection dropped in this interval
	lastErr error
	stats   Stats
	local   string // the UDP listen address once bound
}

type cell struct {
	v    float64
	ok   bool // a value arrived
	void bool // a void fix arrived (and no value after it)
}

// New builds the source of device id: cfg validated, points resolved
// against Quantities, interval > 0. It does no I/O.
func New(id string, cfg Config, points []Point, interval time.Duration, log *slog.Logger, met *Metrics) (*Source, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nmea: device %s: %w", id, err)
	}
	if interval <= 0 {
		return nil, fmt.Errorf("nmea: device %s: interval %v must be positive", id, interval)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if met == nil {
		met = NewMetrics(nil)
	}
	s := &Source{id: id, cfg: cfg, points: points, byQ: map[string][]int{}, interval: interval, log: log, met: met,
		cur: make([]cell, len(points))}
	for i, p := range points {
		if !knownQuantity(p.Quantity) {
			return nil, fmt.Errorf("nmea: device %s: point %d: quantity %q is not one of %v", id, i, p.Quantity, Quantities)
		}
		s.byQ[p.Quantity] = append(s.byQ[p.Quantity], i)
	}
	return s, nil
}

func knownQuantity(q string) bool {
	for _, k := range Quantities {
		if k == q {
			return true
		}
	}
	return false
}

// LocalAddr is the UDP address the source listens on once bound (port 0
// in the configuration picks a free port), "" before and for TCP.
func (s *Source) LocalAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.local
}

// Stats returns the sentence counts so far.
func (s *Source) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Run connects (tcp) or listens (udp), reads until ctx ends, reconnecting
// with backoff, and emits one cycle per interval. It returns nil when ctx
// ends.
func (s *Source) Run(ctx context.Context, emit func(*sample.Cycle)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.read(ctx)
	}()
	defer wg.Wait()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	samples := make([]sample.Sample, len(s.points))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// stamped at the interval's end: the latest value of each point
		// arrived within the interval before it
		emit(s.cycle(time.Now(), samples))
	}
}

// cycle turns the interval's values into a cycle and starts a new interval.
func (s *Source) cycle(start time.Time, samples []sample.Sample) *sample.Cycle {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &sample.Cycle{Samples: samples, Start: start, Interval: s.interval, Replied: s.heard, Lost: s.lost && !s.heard}
	for i := range samples {
		cl := s.cur[i]
		switch {
		case cl.ok:
			samples[i] = sample.Sample{Index: i, Num: cl.v, Quality: telemetry.QualityGood}
		case cl.void:
			samples[i] = sample.Sample{Index: i, Quality: telemetry.QualityBad, Status: StatusVoid}
		default:
			samples[i] = sample.Sample{Index: i, Quality: telemetry.QualityBad, Silent: true}
		}
		s.cur[i] = cell{}
	}
	switch {
	case !s.heard && s.lastErr != nil:
		c.Err = s.lastErr
	case !s.heard:
		c.Err = ErrSilent
	}
	s.heard, s.lost = false, false
	return c
}

// read keeps a connection open and hands every line to take.
func (s *Source) read(ctx context.Context) {
	b := backoff.Backoff{Min: s.cfg.ReconnectMin, Max: s.cfg.ReconnectMax}
	for ctx.Err() == nil {
		err := s.session(ctx, &b)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.lost, s.lastErr = true, err
		s.mu.Unlock()
		s.log.Warn("nmea connection lost", "err", err)
		if !backoff.Sleep(ctx, b.Next()) {
			return
		}
	}
}

// session runs one connection until it fails or ctx ends.
func (s *Source) session(ctx context.Context, b *backoff.Backoff) error {
	var conn io.ReadCloser
	switch s.cfg.Transport {
	case UDP:
		var lc net.ListenConfig
		pc, err := lc.ListenPacket(ctx, "udp", s.cfg.Address)
		if err != nil {
			return fmt.Errorf("nmea: listen udp %s: %w", s.cfg.Address, err)
		}
		stop := context.AfterFunc(ctx, func() { _ = pc.Close() })
		defer stop()
		defer func() { _ = pc.Close() }()
		s.mu.Lock()
		s.local = pc.LocalAddr().String()
		s.lastErr = nil // listening: silence from here on is the talker's, not an old error
		s.mu.Unlock()
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("nmea: read udp %s: %w", s.cfg.Address, err)
			}
			b.Reset()
			for _, line := range bytes.Split(buf[:n], []byte{'\n'}) {
				if len(bytes.TrimSpace(line)) > 0 {
					s.take(string(line))
				}
			}
		}
	default:
		d := net.Dialer{Timeout: s.cfg.DialTime}
		c, err := d.DialContext(ctx, "tcp", s.cfg.Address)
		if err != nil {
			return fmt.Errorf("nmea: connect tcp %s: %w", s.cfg.Address, err)
		}
		conn = c
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	s.mu.Lock()
	s.lastErr = nil // connected: a silence from here on is not the old dial error
	s.mu.Unlock()
	s.log.Info("nmea connected", "address", s.cfg.Address)
	r := bufio.NewReaderSize(conn, 4096)
	skipping := false // inside an overlong line: discard up to its '\n'
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// a line longer than the buffer is no sentence: counted once as
			// malformed, its bytes as discarded, even if it never ends
			s.discard(len(line))
			if !skipping {
				skipping = true
				s.count(func(st *Stats) { st.Malformed++ }, "malformed")
				s.heardSomething()
			}
			b.Reset()
			continue
		}
		if err != nil {
			return fmt.Errorf("nmea: read tcp %s: %w", s.cfg.Address, err)
		}
		b.Reset()
		if skipping {
			skipping = false
			s.discard(len(line))
			continue
		}
		if len(bytes.TrimSpace(line)) > 0 {
			s.take(string(line))
		}
	}
}

func (s *Source) discard(n int) {
	s.mu.Lock()
	s.stats.Discarded += uint64(n)
	s.mu.Unlock()
	s.met.discarded.WithLabelValues(s.id).Add(float64(n))
}

func (s *Source) count(f func(*Stats), result string) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
	s.met.sentences.WithLabelValues(s.id, result).Inc()
}

// take parses one line: a bad one is counted and skipped, a good one
// updates the points it carries.
func (s *Source) take(line string) {
	sn, err := ParseMax(line, s.cfg.MaxLength)
	if err == nil && len(s.cfg.Talkers) > 0 && !contains(s.cfg.Talkers, sn.Talker) {
		s.count(func(st *Stats) { st.Filtered++ }, "filtered")
		s.heardSomething()
		return
	}
	void := false
	vals := map[string]float64{}
	if err == nil {
		err = Values(&sn, func(q string, v float64) { vals[q] = v })
		if err == nil && sn.Type == "RMC" {
			r, _ := DecodeRMC(&sn) // decoded cleanly by Values
			void = !r.Valid
		}
	}
	// a bad sentence is counted and skipped; the talker still spoke
	switch {
	case errors.Is(err, ErrChecksum):
		s.count(func(st *Stats) { st.Checksum++ }, "checksum")
		s.log.Debug("nmea bad checksum", "err", err)
		s.heardSomething()
		return
	case errors.Is(err, ErrUnsupported):
		s.count(func(st *Stats) { st.Unsupported++ }, "unsupported")
		s.heardSomething()
		return
	case err != nil:
		s.count(func(st *Stats) { st.Malformed++ }, "malformed")
		s.log.Debug("nmea malformed sentence", "err", err)
		s.heardSomething()
		return
	}
	s.count(func(st *Stats) { st.OK++ }, "ok")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heard = true
	if void {
		for _, q := range []string{"RMC.latitude", "RMC.longitude", "RMC.sog", "RMC.cog"} {
			for _, i := range s.byQ[q] {
				if s.points[i].Talker == "" || s.points[i].Talker == sn.Talker {
					s.cur[i] = cell{void: true}
				}
			}
		}
	}
	for q, v := range vals {
		for _, i := range s.byQ[q] {
			if s.points[i].Talker == "" || s.points[i].Talker == sn.Talker {
				s.cur[i] = cell{v: v, ok: true}
			}
		}
	}
}

func (s *Source) heardSomething() {
	s.mu.Lock()
	s.heard = true
	s.mu.Unlock()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
