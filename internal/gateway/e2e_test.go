package gateway

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

const e2eTemplate = `template: e2e-compressor
class: air_compressor
points:
  - {signal: discharge_pressure, table: holding, address: 0, type: float32, order: ABCD, unit: bar}
  - {signal: discharge_temp, table: holding, address: 2, type: int16, scale: 0.1, unit: degF}
  - {signal: input_power, table: input, address: 0, type: uint32, order: CDAB, unit: W}
  - {signal: free_air_delivery, table: input, address: 2, type: float32, order: DCBA, unit: m3/h}
  - {signal: load_state, table: holding, address: 10, type: uint16}
  - {signal: dew_point, table: holding, address: 12, type: int16, scale: 0.01}
`

// setBank programs the device's registers with known raw values.
func setBank(bank *modbustest.Bank) {
	f32 := func(v float32) []byte {
		b := make([]byte, 4)
		binary.BigEndian.PutUint32(b, math.Float32bits(v))
		return b
	}
	bank.SetBytes(modbustest.HoldingRegisters, 0, f32(7.25))               // bar ABCD
	bank.SetRegisters(modbustest.HoldingRegisters, 2, uint16(int16(1940))) // 194.0 degF
	bank.SetRegisters(modbustest.InputRegisters, 0, 0x2710, 0x0000)        // 10000 W, CDAB: low word first
	be := f32(600)                                                         // 600 m3/h, DCBA: fully reversed
	bank.SetBytes(modbustest.InputRegisters, 2, []byte{be[3], be[2], be[1], be[0]})
	bank.SetRegisters(modbustest.HoldingRegisters, 10, 2)                         // loaded
	bank.SetRegisters(modbustest.HoldingRegisters, 12, uint16(0xFFFF&int(-2050))) // -20.50 Cel
}

type rig struct {
	bank   *modbustest.Bank
	server *modbustest.Server
	nats   *brokers.NATS
	mqtt   *brokers.MQTT
	cfg    *gwconfig.Config
	text   string // cfg's file
	dir    string
}

func newRig(t *testing.T, extraGateway string) *rig {
	t.Helper()
	r := &rig{bank: modbustest.NewBank(), dir: t.TempDir()}
	setBank(r.bank)
	r.server = modbustest.StartServer(t, r.bank)
	var err error
	r.nats, err = brokers.StartNATS(brokers.NATSOptions{StoreDir: filepath.Join(r.dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nats.Shutdown)
	r.mqtt, err = brokers.StartMQTT(brokers.MQTTOptions{KeepSessions: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.mqtt.Close() })
	if err := os.WriteFile(filepath.Join(r.dir, "compressor.yaml"), []byte(e2eTemplate), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgText := fmt.Sprintf(`gateway: {id: gw-e2e, enterprise: acme, site: plant1, data_dir: ./data}
http: {listen: "off"}
%s
uplinks:
  nats: {url: %q}
  mqtt: {url: %q}
devices:
  - id: ac-1
    class: air_compressor
    nameplate: {rated_power: 75, rated_fad: 12.5}
    poll_interval: 100ms
    template: compressor.yaml
    modbus: {address: %q, unit_id: 1, timeout: 500ms}
`, extraGateway, r.nats.URL(), r.mqtt.URL(), r.server.Addr)
	r.text = cfgText
	r.cfg = loadConfigText(t, r.dir, cfgText)
	return r
}

// runGateway runs a gateway until the test ends.
func runGateway(t *testing.T, cfg *gwconfig.Config) *Gateway {
	t.Helper()
	return runGatewayWith(t, cfg, Options{DrainTimeout: time.Second, Logger: testLogger(t)}, nil)
}

// runGatewayWith is runGateway with opts, and tune (when not nil) called
// on the gateway before it runs.
func runGatewayWith(t *testing.T, cfg *gwconfig.Config, opts Options, tune func(*Gateway)) *Gateway {
	t.Helper()
	g, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway.Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("gateway did not stop within 15 s")
		}
	})
	return g
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// collector gathers decoded batches from one source.
type collector struct {
	mu      sync.Mutex
	batches []*telemetry.Batch
	births  []*telemetry.Birth
	deaths  int
	errs    []error
}

func (c *collector) add(subject string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, err := telemetry.ParseSubject(subject)
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	switch ps.Kind {
	case telemetry.KindData:
		b, err := telemetry.DecodeBatch(data)
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("%s: %w", subject, err))
			return
		}
		c.batches = append(c.batches, b)
	case telemetry.KindBirth:
		b, err := telemetry.DecodeBirth(data)
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("%s: %w", subject, err))
			return
		}
		c.births = append(c.births, b)
	case telemetry.KindDeath:
		c.deaths++
	}
}

func (c *collector) snapshot() ([]*telemetry.Batch, []*telemetry.Birth, []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*telemetry.Batch(nil), c.batches...), append([]*telemetry.Birth(nil), c.births...), append([]error(nil), c.errs...)
}

func subscribeNATS(t *testing.T, url string) *collector {
	t.Helper()
	c := &collector{}
	consumeStream(t, url, c.add)
	return c
}

// consumeStream hands every message of the SMELTER stream, from its start,
// to fn (an ordered consumer, stopped when the test ends).
func consumeStream(t *testing.T, url string, fn func(subject string, data []byte)) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var cons jetstream.Consumer
	wait.For(t, 10*time.Second, "the gateway to create stream SMELTER", func() bool {
		cons, err = js.OrderedConsumer(ctx, "SMELTER", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"smelter.v1.>"}})
		return err == nil
	})
	cc, err := cons.Consume(func(m jetstream.Msg) { fn(m.Subject(), m.Data()) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

func subscribeMQTT(t *testing.T, url string) *collector {
	t.Helper()
	c := &collector{}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID("e2e-sub").SetCleanSession(true)
	cl := paho.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	tok := cl.Subscribe("smelter/v1/#", 1, func(_ paho.Client, m paho.Message) {
		c.add(telemetry.SubjectFromTopic(m.Topic()), m.Payload())
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt subscribe: %v", tok.Error())
	}
	return c
}

type want struct {
	value   float64
	text    string
	unit    string
	quality telemetry.Quality
	status  uint32
}

var wantGood = map[string]want{
	"discharge_pressure": {value: 0.725, unit: "MPa"},
	"discharge_temp":     {value: 90, unit: "Cel"},
	"input_power":        {value: 10, unit: "kW"},
	"free_air_delivery":  {value: 10, unit: "m3/min"},
	"load_state":         {value: 2, text: "loaded"},
	"dew_point":          {value: -20.5, unit: "Cel"},
}

func checkBatch(t *testing.T, src string, b *telemetry.Batch, expect map[string]want) {
	t.Helper()
	checkBatchAt(t, src, "plant1", b, expect)
}

func checkBatchAt(t *testing.T, src, site string, b *telemetry.Batch, expect map[string]want) {
	t.Helper()
	if b.Gateway != "gw-e2e" || b.Asset.ID != "ac-1" || b.Asset.Class != "air_compressor" || b.Asset.Site() != site {
		t.Errorf("%s: batch identity = %+v", src, b)
	}
	if len(b.Readings) != len(expect) {
		t.Fatalf("%s: %d readings, want %d: %+v", src, len(b.Readings), len(expect), b.Readings)
	}
	for _, r := range b.Readings {
		w, ok := expect[r.Signal]
		if !ok {
			t.Errorf("%s: unexpected signal %s", src, r.Signal)
			continue
		}
		if r.Quality != w.quality || r.Status != w.status || r.Unit != w.unit || r.Text != w.text {
			t.Errorf("%s: %s = %+v, want %+v", src, r.Signal, r, w)
		}
		if w.quality.HasValue() && math.Abs(r.Value-w.value) > 1e-6 {
			t.Errorf("%s: %s = %v, want %v", src, r.Signal, r.Value, w.value)
		}
		if !w.quality.HasValue() && r.HasValue() {
			t.Errorf("%s: %s is %s but carries value %v", src, r.Signal, r.Quality, r.Value)
		}
		if r.TS <= 0 || r.Src == "" {
			t.Errorf("%s: %s lacks ts or src: %+v", src, r.Signal, r)
		}
	}
}

// TestEndToEndModbusToBothUplinks polls a real Modbus TCP server and checks
// exact decoded values, canonical units and quality on NATS JetStream and
// MQTT, plus the birth with nameplate data.
func TestEndToEndModbusToBothUplinks(t *testing.T) {
	r := newRig(t, "")
	mc := subscribeMQTT(t, r.mqtt.URL())
	g := runGateway(t, r.cfg)
	nc := subscribeNATS(t, r.nats.URL()) // an ordered consumer reads the stream from its start

	for name, c := range map[string]*collector{"nats": nc, "mqtt": mc} {
		wait.For(t, 15*time.Second, name+" batches", func() bool {
			b, births, _ := c.snapshot()
			return len(b) >= 3 && len(births) >= 1
		})
		batches, births, errs := c.snapshot()
		if len(errs) > 0 {
			t.Fatalf("%s: undecodable messages: %v", name, errs)
		}
		for _, b := range batches[:3] {
			checkBatch(t, name, b, wantGood)
		}
		if births[0].Nameplate["rated_fad"] != 12.5 || len(births[0].Signals) != 6 {
			t.Errorf("%s: birth = %+v", name, births[0])
		}
		for i := 1; i < len(batches); i++ {
			if batches[i].Seq <= batches[i-1].Seq {
				t.Errorf("%s: seq not increasing: %d after %d", name, batches[i].Seq, batches[i-1].Seq)
			}
		}
	}
	st := g.Status()
	if len(st.Uplinks) != 2 || len(st.Devices) != 1 || st.Devices[0].Polls == 0 {
		t.Errorf("status = %+v", st)
	}
}

// TestExceptionOnOneAddressKeepsTheRest: the device raises "illegal data
// address" on one register inside a merged request; that point arrives bad
// with status 2 and every other point still arrives good in the same batch.
func TestExceptionOnOneAddressKeepsTheRest(t *testing.T) {
	r := newRig(t, "")
	r.bank.SetException(modbustest.HoldingRegisters, 2, 2)
	runGateway(t, r.cfg)
	nc := subscribeNATS(t, r.nats.URL())
	expect := map[string]want{}
	for k, v := range wantGood {
		expect[k] = v
	}
	expect["discharge_temp"] = want{unit: "Cel", quality: telemetry.QualityBad, status: 2}
	wait.For(t, 15*time.Second, "batches", func() bool { b, _, _ := nc.snapshot(); return len(b) >= 1 })
	batches, _, _ := nc.snapshot()
	checkBatch(t, "nats", batches[0], expect)
}

func (c *collector) deathCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deaths
}
