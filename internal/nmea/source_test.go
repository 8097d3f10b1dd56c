package nmea_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/nmea"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/nmeafront"
)

// recorder keeps copies of the emitted cycles.
type recorder struct {
	mu     sync.Mutex
	cycles []sample.Cycle
}

func (r *recorder) emit(c *sample.Cycle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cc := *c
	cc.Samples = append([]sample.Sample(nil), c.Samples...)
	r.cycles = append(r.cycles, cc)
}

func (r *recorder) last() (sample.Cycle, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cycles) == 0 {
		return sample.Cycle{}, 0
	}
	return r.cycles[len(r.cycles)-1], len(r.cycles)
}

var points = []nmea.Point{{Quantity: "RMC.sog"}, {Quantity: "RMC.latitude"}, {Quantity: "HDT.heading"},
	{Quantity: "VHW.stw"}, {Quantity: "DPT.depth_below_keel"}, {Quantity: "VTG.sog", Talker: "GN"}}

func runSource(t *testing.T, cfg nmea.Config) (*nmea.Source, *recorder) {
	t.Helper()
	s, err := nmea.New("ship-1", cfg, points, 50*time.Millisecond, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, rec.emit) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s, rec
}

// TestSourceTCP: over a real TCP talker (the simulators' NMEA front) the
// source emits the values it heard, good; a point whose talker never
// speaks is silent; when the talker goes quiet every point is silent and
// the cycle says nobody replied; when it stops, the cycle is lost.
func TestSourceTCP(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	front, err := nmeafront.New(nmeafront.Config{Name: "bridge", Transport: nmeafront.TCP, Address: "127.0.0.1:0", Interval: 20 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := front.Start(ctx); err != nil {
		t.Fatal(err)
	}
	front.Update(map[string]float64{"latitude": 36.25, "longitude": 121.5, "sog": 13.4, "cog": 90, "heading": 88.5,
		"stw": 13.1, "water_depth": 61, "draught": 12}, time.Now())
	src, rec := runSource(t, nmea.Config{Address: front.Addr(), ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	var c sample.Cycle
	wait.For(t, 10*time.Second, "a cycle with every GP/HE/VW/SD point good", func() bool {
		c, _ = rec.last()
		if !c.Replied || len(c.Samples) != len(points) {
			return false
		}
		for _, s := range c.Samples[:5] {
			if s.Quality != telemetry.QualityGood {
				return false
			}
		}
		return true
	})
	want := []float64{13.4, 36.25, 88.5, 13.1, 61}
	for i, w := range want {
		if got := c.Samples[i].Num; got < w-0.06 || got > w+0.06 {
			t.Errorf("point %s = %v, want %v", points[i].Quantity, got, w)
		}
	}
	// VTG comes from talker GP; the point wants GN only
	if s := c.Samples[5]; s.Quality != telemetry.QualityBad || !s.Silent {
		t.Errorf("VTG from another talker: %+v", s)
	}
	if st := src.Stats(); st.OK == 0 || st.Checksum != 0 {
		t.Errorf("stats %+v", st)
	}
	front.SetSilent(true)
	wait.For(t, 10*time.Second, "a silent cycle", func() bool {
		c, _ = rec.last()
		return !c.Replied && len(c.Samples) > 0 && c.Samples[0].Silent && c.Err != nil
	})
	front.Stop()
	wait.For(t, 10*time.Second, "a lost cycle", func() bool {
		c, _ = rec.last()
		return c.Lost
	})
}

// TestSourceUDPCountsBadSentences: sentences with a bad checksum or a
// malformed field are counted and skipped; the good ones still arrive.
func TestSourceUDPCountsBadSentences(t *testing.T) {
	src, rec := runSource(t, nmea.Config{Transport: nmea.UDP, Address: "127.0.0.1:0"})
	wait.For(t, 10*time.Second, "the UDP listener", func() bool { return src.LocalAddr() != "" })
	conn, err := net.Dial("udp", src.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func(lines ...string) {
		for _, l := range lines {
			if _, err := conn.Write([]byte(l + "\r\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	wait.For(t, 10*time.Second, "good and bad sentences counted", func() bool {
		send("$GPHDT,123.456,T*32",
			"$GPHDT,123.456,T*33",                                               // bad checksum
			string(nmea.Append(nil, "GP", "HDT", "x", "T")),                     // malformed heading
			"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47", // unsupported
			"$GPRMC,123519,V,4807.038,N,01131.000,E,0.0,,230394,,,N*46")         // void fix
		st := src.Stats()
		return st.OK >= 2 && st.Checksum >= 1 && st.Malformed >= 1 && st.Unsupported >= 1
	})
	var c sample.Cycle
	wait.For(t, 10*time.Second, "heading good and position void in one cycle", func() bool {
		c, _ = rec.last()
		return len(c.Samples) == len(points) && c.Samples[2].Quality == telemetry.QualityGood && c.Samples[2].Num == 123.456 &&
			c.Samples[1].Quality == telemetry.QualityBad && c.Samples[1].Status == nmea.StatusVoid && !c.Samples[1].Silent
	})
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		cfg  nmea.Config
		pts  []nmea.Point
		want string
	}{
		{nmea.Config{Transport: "serial", Address: "x:1"}, nil, `transport: "serial" is not tcp or udp`},
		{nmea.Config{Address: "nowhere"}, nil, `address: "nowhere" is not host:port`},
		{nmea.Config{Address: "h:1", Talkers: []string{"GPS"}}, nil, `talkers[0]: "GPS"`},
		{nmea.Config{Address: "h:1"}, []nmea.Point{{Quantity: "GGA.altitude"}}, `quantity "GGA.altitude" is not one of`},
	} {
		_, err := nmea.New("d", tc.cfg, tc.pts, time.Second, nil, nil)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestSourceRejectsOverlongSentences: NMEA 0183 allows 82 characters with
// CR LF; a longer sentence with a valid checksum is malformed, unless the
// device's max_length allows it. A TCP stream without line ends is
// counted (one malformed line, its bytes discarded), not swallowed.
func TestSourceRejectsOverlongSentences(t *testing.T) {
	// 81 characters from $ to the checksum: one too many
	long := string(nmea.Append(nil, "GP", "HDT", "123.456", "T", strings.Repeat("0", 61)))
	long = strings.TrimRight(long, "\r\n")
	if len(long) != 81 {
		t.Fatalf("test sentence has %d characters", len(long))
	}
	src, _ := runSource(t, nmea.Config{Transport: nmea.UDP, Address: "127.0.0.1:0"})
	wait.For(t, 10*time.Second, "the UDP listener", func() bool { return src.LocalAddr() != "" })
	conn, err := net.Dial("udp", src.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wait.For(t, 10*time.Second, "the overlong sentence counted as malformed", func() bool {
		_, _ = conn.Write([]byte(long + "\r\n"))
		return src.Stats().Malformed >= 1
	})
	if st := src.Stats(); st.OK != 0 {
		t.Errorf("overlong sentence accepted: %+v", st)
	}
	// a non-conforming talker, allowed by max_length
	lax, _ := runSource(t, nmea.Config{Transport: nmea.UDP, Address: "127.0.0.1:0", MaxLength: 120})
	wait.For(t, 10*time.Second, "the UDP listener", func() bool { return lax.LocalAddr() != "" })
	c2, err := net.Dial("udp", lax.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	wait.For(t, 10*time.Second, "the long sentence accepted with max_length 120", func() bool {
		_, _ = c2.Write([]byte(long + "\r\n"))
		return lax.Stats().OK >= 1
	})

	// TCP: a talker that never ends its line
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		junk := []byte(strings.Repeat("$GPHDT,1", 1024))
		for range 64 { // 512 KiB without a line end
			if _, err := c.Write(junk); err != nil {
				return
			}
		}
		_, _ = c.Write([]byte("\r\n$GPHDT,123.456,T*32\r\n"))
		<-time.After(time.Minute)
	}()
	tcp, _ := runSource(t, nmea.Config{Address: ln.Addr().String()})
	wait.For(t, 20*time.Second, "the endless line discarded and the next sentence read", func() bool {
		st := tcp.Stats()
		return st.OK >= 1 && st.Malformed == 1 && st.Discarded >= 512*1024
	})
}

func TestConfigMaxLength(t *testing.T) {
	for _, n := range []int{79, 2000} {
		_, err := nmea.New("d", nmea.Config{Address: "h:1", MaxLength: n}, nil, time.Second, nil, nil)
		if err == nil || !contains(err.Error(), "max_length") {
			t.Errorf("max_length %d: %v", n, err)
		}
	}
}

// TestSourceSilenceAfterReconnectIsNotTheOldError: once the talker accepts
// the connection, a silent cycle says nobody spoke, not the refusal of the
// dial before.
func TestSourceSilenceAfterReconnectIsNotTheOldError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, rec := runSource(t, nmea.Config{Address: addr, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	wait.For(t, 10*time.Second, "a cycle with the refused dial", func() bool {
		c, _ := rec.last()
		return c.Err != nil && contains(c.Err.Error(), "refused")
	})
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-time.After(time.Minute) // connected, silent
	}()
	wait.For(t, 10*time.Second, "a silent cycle without the old error", func() bool {
		c, _ := rec.last()
		return c.Err != nil && !contains(c.Err.Error(), "refused") && !c.Lost
	})
}
