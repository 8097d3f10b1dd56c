package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/nmeafront"
)

// nmeaTalker starts a simulated NMEA 0183 talker (a TCP server sending a
// burst of sentences every 50 ms) with a ship at sea off Qingdao, stopped
// when the test ends.
func nmeaTalker(t *testing.T, name string) *nmeafront.Front {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f, err := nmeafront.New(nmeafront.Config{Name: name, Transport: nmeafront.TCP, Address: "127.0.0.1:0", Interval: 50 * time.Millisecond}, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := f.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Stop(); cancel() })
	f.Update(map[string]float64{"latitude": 36.25, "longitude": 121.5, "sog": 13.4, "cog": 90, "heading": 88.5,
		"stw": 13.1, "water_depth": 61, "draught": 12}, time.Now())
	return f
}

// noticeLog records one asset's births and deaths, in stream order.
type noticeLog struct {
	mu     sync.Mutex
	events []string // "birth" or "death: <reason>"
}

func (l *noticeLog) add(subject string, data []byte) {
	ps, err := telemetry.ParseSubject(subject)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch ps.Kind {
	case telemetry.KindBirth:
		l.events = append(l.events, "birth")
	case telemetry.KindDeath:
		var d telemetry.Death
		_ = json.Unmarshal(data, &d)
		l.events = append(l.events, "death: "+d.Reason)
	}
}

func (l *noticeLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

// TestAssetDiesWhenEverySourceIsSilent: an asset fed by two sources (two
// NMEA talkers over TCP) lives while either answers; when both fall silent
// one death is published, naming the last source; when one answers again a
// birth follows.
func TestAssetDiesWhenEverySourceIsSilent(t *testing.T) {
	dir := t.TempDir()
	nats, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)
	gnss, gyro := nmeaTalker(t, "gnss"), nmeaTalker(t, "gyro")
	cfgText := fmt.Sprintf(`gateway: {id: gw-src, enterprise: acme, site: fleet, data_dir: %s}
http: {listen: "off"}
uplinks:
  nats: {url: %q}
devices:
  - id: mv-1
    class: ship
    poll_interval: 200ms
    sources:
      - name: gnss
        nmea: {transport: tcp, address: %q, reconnect_min: 50ms, reconnect_max: 200ms}
        points: [{signal: sog, sentence: RMC.sog}, {signal: latitude, sentence: RMC.latitude}]
      - name: gyro
        nmea: {transport: tcp, address: %q, reconnect_min: 50ms, reconnect_max: 200ms}
        points: [{signal: heading, sentence: HDT.heading}]
`, filepath.Join(dir, "gw"), nats.URL(), gnss.Addr(), gyro.Addr())
	cfg, err := gwconfig.LoadBytes(filepath.Join(dir, "gateway.yaml"), []byte(cfgText), Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	g := runGateway(t, cfg)
	var log noticeLog
	consumeStream(t, nats.URL(), log.add)
	c := subscribeNATS(t, nats.URL())
	quality := func(sig string) telemetry.Quality {
		batches, _, _ := c.snapshot()
		for i := len(batches) - 1; i >= 0; i-- {
			for _, r := range batches[i].Readings {
				if r.Signal == sig {
					return r.Quality
				}
			}
		}
		return 255
	}
	wait.For(t, 15*time.Second, "both sources good", func() bool {
		return quality("sog") == telemetry.QualityGood && quality("heading") == telemetry.QualityGood
	})

	gyro.SetSilent(true)
	wait.For(t, 15*time.Second, "heading stale while the gyro is silent", func() bool { return quality("heading") == telemetry.QualityStale })
	if ev := log.get(); len(ev) != 1 || ev[0] != "birth" {
		t.Fatalf("notices %v while the gnss answers: want the one birth", ev)
	}
	if q := quality("sog"); q != telemetry.QualityGood {
		t.Fatalf("sog %v while its source answers", q)
	}

	gnss.SetSilent(true)
	wait.For(t, 15*time.Second, "the asset's death", func() bool { return len(log.get()) == 2 })
	if ev := log.get(); !strings.HasPrefix(ev[1], "death: every source silent; last gnss: no reply for ") {
		t.Fatalf("notices %v", ev)
	}
	for _, d := range g.Status().Devices {
		if !d.Dead || d.Asset != "mv-1" {
			t.Errorf("status %+v: want every source dead", d)
		}
	}

	gyro.SetSilent(false)
	wait.For(t, 15*time.Second, "a birth when the gyro answers again", func() bool { return len(log.get()) == 3 })
	wait.For(t, 15*time.Second, "heading good again", func() bool { return quality("heading") == telemetry.QualityGood })
	if ev := log.get(); ev[2] != "birth" || len(ev) != 3 {
		t.Fatalf("notices %v", ev)
	}
	_, births, errs := c.snapshot()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, b := range births {
		if len(b.Signals) != 3 || b.Protocol != "nmea" {
			t.Errorf("birth %+v: want the union of both sources' signals", b)
		}
	}
}

// TestCommandFindsTheSource: a command for an asset with sources goes to
// the source that reads its signal.
func TestCommandFindsTheSource(t *testing.T) {
	cfg, err := gwconfig.LoadBytes("gw.yaml", []byte(`gateway: {id: gw, site: fleet}
uplinks: {nats: {url: "nats://127.0.0.1:4222"}}
devices:
  - id: mv-1
    class: ship
    sources:
      - name: nav
        nmea: {transport: udp, address: "127.0.0.1:0"}
        points: [{signal: sog, sentence: RMC.sog}]
      - name: engine
        modbus: {address: "127.0.0.1:1502"}
        points: [{signal: me_speed, table: holding, address: 0, type: int16, unit: /min}]
`), Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &commander{byKey: map[string]*device{}}
	for _, d := range g.devices {
		c.byKey[assetKey(d.cfg.Asset)] = d
	}
	for sig, want := range map[string]string{"me_speed": "mv-1/engine", "sog": "mv-1/nav"} {
		if d := c.source("fleet.ship.mv-1", sig); d == nil || d.cfg.ID != want {
			t.Errorf("%s: source %v, want %s", sig, d, want)
		}
	}
	if d := c.source("fleet.ship.mv-2", "sog"); d != nil {
		t.Errorf("unknown asset: %s", d.cfg.ID)
	}
}
