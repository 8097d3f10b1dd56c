package forward

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink/mqtt"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
	"github.com/smelterio/smelter/internal/wait"
)

const gw = "gw-fwd"

var asset = telemetry.Asset{ID: "ua-1", Class: "motor", Path: []string{"acme", "s1", "a", "l", "_"}}

// batch returns a batch of n readings whose src strings are long enough to
// make it about n*110 bytes.
func batch(n int) *telemetry.Batch {
	b := &telemetry.Batch{Gateway: gw, Asset: asset, TSGW: 1763812345123}
	for i := range n {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("sig_%05d", i), Value: float64(i) + 0.5, Unit: "Cel",
			TS: 1763812345100, Src: fmt.Sprintf("opcua:ns=2;s=Plant.Area1.Line7.Device%05d.Temperature", i)})
	}
	return b
}

type rig struct {
	sp  *spool.Spool
	f   *Forwarder
	reg *prometheus.Registry
	log *strings.Builder
	mu  *sync.Mutex
}

// appendBatch spools b (its seq is the spool's) and returns the seq.
func (r *rig) appendBatch(t *testing.T, b *telemetry.Batch) uint64 {
	t.Helper()
	seq, err := r.sp.Append(context.Background(), telemetry.AssetSubject(b.Asset, telemetry.KindData), func(seq uint64, dst []byte) []byte {
		b.Seq = seq
		return b.AppendJSON(dst)
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func (r *rig) appendRaw(t *testing.T, kind telemetry.Kind, data []byte) uint64 {
	t.Helper()
	seq, err := r.sp.Append(context.Background(), telemetry.AssetSubject(asset, kind), func(_ uint64, dst []byte) []byte {
		return append(dst, data...)
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func (r *rig) logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startForwarder opens a spool and runs up and a forwarder over it until
// the test ends.
func startForwarder(t *testing.T, up interface {
	Uplink
	Run(context.Context) error
}) *rig {
	t.Helper()
	return startForwarderWith(t, up, Options{})
}

// startForwarderWith is startForwarder with opts (Gateway, Log and Metrics
// are the rig's).
func startForwarderWith(t *testing.T, up interface {
	Uplink
	Run(context.Context) error
}, opts Options) *rig {
	t.Helper()
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(t.TempDir(), "spool")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{sp: sp, reg: prometheus.NewRegistry(), log: &strings.Builder{}, mu: &sync.Mutex{}}
	rd, err := sp.Reader(up.Name())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(lockedWriter{r.mu, r.log}, nil))
	opts.Gateway, opts.Log, opts.Metrics = gw, log, NewMetrics(r.reg)
	r.f = New(up, sp, rd, opts)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = up.Run(ctx) }()
	go func() { defer wg.Done(); _ = r.f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := sp.Close(); err != nil {
			t.Error(err)
		}
	})
	wait.For(t, 10*time.Second, "the uplink connected", up.Ready)
	return r
}

// received is one message as a consumer saw it.
type received struct {
	id   string
	data []byte
}

// checkParts decodes the parts of seq among msgs and checks that they are
// complete (1..n, each once), each within limit, and together hold want's
// readings in order.
func checkParts(t *testing.T, msgs []received, seq uint64, want *telemetry.Batch, limit int) int {
	t.Helper()
	var parts []*telemetry.Batch
	for _, m := range msgs {
		b, err := telemetry.DecodeBatch(m.data)
		if err != nil || b.Seq != seq {
			continue
		}
		if len(m.data) > limit {
			t.Fatalf("part %d/%d of seq %d is %d bytes, over the %d-byte limit", b.Part, b.Parts, seq, len(m.data), limit)
		}
		if m.id != "" && m.id != b.MsgID() {
			t.Fatalf("part %d/%d carries Nats-Msg-Id %q, want %q", b.Part, b.Parts, m.id, b.MsgID())
		}
		parts = append(parts, b)
	}
	if len(parts) < 2 {
		t.Fatalf("seq %d arrived in %d messages, want it split", seq, len(parts))
	}
	var got []telemetry.Reading
	for i, p := range parts {
		if p.Part != i+1 || p.Parts != len(parts) {
			t.Fatalf("message %d of seq %d is part %d/%d", i, seq, p.Part, p.Parts)
		}
		got = append(got, p.Readings...)
	}
	if len(got) != len(want.Readings) {
		t.Fatalf("seq %d: %d readings arrived, want %d", seq, len(got), len(want.Readings))
	}
	for i := range got {
		if got[i] != want.Readings[i] {
			t.Fatalf("seq %d reading %d: got %+v, want %+v", seq, i, got[i], want.Readings[i])
		}
	}
	return len(parts)
}

// streamMsgs reads the whole SMELTER stream once it holds at least n
// messages.
func streamMsgs(t *testing.T, url string, n int) []received {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var st jetstream.Stream
	wait.For(t, 15*time.Second, fmt.Sprintf("%d messages in the stream", n), func() bool {
		if st == nil {
			st, _ = js.Stream(ctx, natsjs.DefaultStream)
			if st == nil {
				return false
			}
		}
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs >= uint64(n)
	})
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []received
	for len(out) < n {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(out), n, err)
		}
		out = append(out, received{id: m.Headers().Get(jetstream.MsgIDHeader), data: m.Data()})
	}
	return out
}

// TestNATSBatchOverMaxPayloadIsSplit: with a server max_payload of 64 KiB,
// a 200 KB batch arrives in parts that each fit, complete and in order,
// with part message ids; a batch holding one reading that can never fit
// delivers its other readings and counts the one set aside; a 220 KB birth
// arrives in parts that merge into it; a death over the limit (never
// split) is set aside; the batch after them all still arrives whole.
func TestNATSBatchOverMaxPayloadIsSplit(t *testing.T) {
	const maxPayload = 64 << 10
	n, up := natsUplink(t, maxPayload)
	r := startForwarder(t, up)
	if got := up.MaxPayload(); got != maxPayload-natsjs.HeaderReserve {
		t.Fatalf("MaxPayload %d, want the server's %d less the header reserve", got, maxPayload)
	}

	big := batch(2000)
	bigSeq := r.appendBatch(t, big)
	odd := batch(3)
	odd.Readings[1].Text = strings.Repeat("x", 70<<10) // one reading over the limit
	oddSeq := r.appendBatch(t, odd)
	r.appendRaw(t, telemetry.KindDeath, []byte(`{"schema":"smelter.death/1","pad":"`+strings.Repeat("y", 70<<10)+`"}`))
	birth := bigBirth(1500)
	var birthData []byte
	birthSeq, err := r.sp.Append(context.Background(), telemetry.AssetSubject(asset, telemetry.KindBirth), func(seq uint64, dst []byte) []byte {
		birth.Seq = seq
		birthData, _ = telemetry.MarshalBirth(birth)
		return append(dst, birthData...)
	})
	if err != nil {
		t.Fatal(err)
	}
	small := batch(5)
	smallSeq := r.appendBatch(t, small)

	wait.For(t, 15*time.Second, "the cursor past every batch", func() bool { return r.f.State().LastSeq >= smallSeq })
	if l := r.f.Lag(); l.Records != 0 {
		t.Fatalf("lag %+v after the last batch", l)
	}
	limit := maxPayload - natsjs.HeaderReserve
	bigParts := len(big.AppendJSON(nil))/limit + 1
	birthParts := len(birthData)/limit + 1
	msgs := streamMsgs(t, n.URL(), bigParts+birthParts+2)
	parts := checkParts(t, msgs, bigSeq, big, limit)
	oddGot, err := telemetry.DecodeBatch(msgs[parts].data)
	if err != nil || oddGot.Seq != oddSeq || len(oddGot.Readings) != 2 || oddGot.Readings[1].Signal != odd.Readings[2].Signal {
		t.Fatalf("odd batch arrived as %+v (%v), want its two readings that fit", oddGot, err)
	}
	var births []*telemetry.Birth
	for _, m := range msgs[parts+1 : len(msgs)-1] {
		b, err := telemetry.DecodeBirth(m.data)
		if err != nil || b.Seq != birthSeq || len(m.data) > limit || m.id != telemetry.PartMsgID(gw, birthSeq, b.Part, b.Parts) {
			t.Fatalf("birth part: %v, %d bytes, id %s", err, len(m.data), m.id)
		}
		births = append(births, b)
	}
	merged, err := telemetry.MergeBirth(births)
	if err != nil || len(births) < 2 || !reflect.DeepEqual(merged, birth) {
		t.Fatalf("%d birth parts merged into a different birth (%v)", len(births), err)
	}
	last, err := telemetry.DecodeBatch(msgs[len(msgs)-1].data)
	if err != nil || last.Seq != smallSeq || last.Parts != 0 || len(last.Readings) != 5 {
		t.Fatalf("last message %+v (%v), want the small batch whole", last, err)
	}
	if v := value(r.f.m.setAside.WithLabelValues("nats", reasonReading)); v != 1 {
		t.Errorf("set aside readings %v, want 1", v)
	}
	if v := value(r.f.m.setAside.WithLabelValues("nats", "too_large")); v != 1 {
		t.Errorf("set aside messages %v, want 1 (the death)", v)
	}
	if v := value(r.f.m.split.WithLabelValues("nats")); v != 2 {
		t.Errorf("split messages %v, want 2 (the batch and the birth)", v)
	}
	if st := r.f.State(); st.SetAside != 2 || !strings.Contains(st.LastSetAside, "too_large") {
		t.Errorf("state %+v", st)
	}
	if c := strings.Count(r.logs(), "message set aside"); c < 1 || c > 2 {
		t.Errorf("%d set-aside lines logged:\n%s", c, r.logs())
	}
}

// bigBirth is a birth of n signals (about n*150 bytes).
func bigBirth(n int) *telemetry.Birth {
	b := &telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: gw, Asset: asset.ToJSON(), TSGW: 1763812345000, Protocol: "opcua",
		Nameplate: map[string]float64{"rated_power": 75}}
	for i := range n {
		lo, hi := -10.0, 150.0
		b.Signals = append(b.Signals, telemetry.SignalInfo{Signal: fmt.Sprintf("sig_%05d", i), Unit: "Cel", Min: &lo, Max: &hi,
			IntervalMS: 1000, Src: fmt.Sprintf("opcua:ns=2;s=Plant.Area1.Line7.Device%05d.Temperature", i)})
	}
	return b
}

// TestMQTTBatchOverMaxPacketSizeIsSplit: a mochi broker that accepts
// packets of at most 16 KiB (and disconnects a client that sends more):
// with max_packet_size configured, a 100 KB batch arrives in parts and the
// batch after it still flows, on one connection.
func TestMQTTBatchOverMaxPacketSizeIsSplit(t *testing.T) {
	const maxPacket = 16 << 10
	b, err := brokers.StartMQTT(brokers.MQTTOptions{MaxPacketSize: maxPacket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	var mu sync.Mutex
	var got []received
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("sub")
	sub := paho.NewClient(o)
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { sub.Disconnect(0) })
	if tok := sub.Subscribe("smelter/v1/+/+/+/data", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got = append(got, received{data: append([]byte(nil), m.Payload()...)})
		mu.Unlock()
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	cfg := mqtt.Config{URL: b.URL(), MaxPacketSize: maxPacket}
	cfg.SetDefaults(gw, "s1")
	m := mqtt.NewMetrics(nil)
	up, err := mqtt.New(cfg, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	r := startForwarder(t, up)
	big := batch(1000)
	bigSeq := r.appendBatch(t, big)
	smallSeq := r.appendBatch(t, batch(4))
	wait.For(t, 15*time.Second, "the cursor past both batches", func() bool { return r.f.State().LastSeq >= smallSeq })
	var msgs []received
	wait.For(t, 10*time.Second, "the small batch at the subscriber", func() bool {
		mu.Lock()
		defer mu.Unlock()
		msgs = append(msgs[:0], got...)
		if len(msgs) == 0 {
			return false
		}
		b, err := telemetry.DecodeBatch(msgs[len(msgs)-1].data)
		return err == nil && b.Seq == smallSeq
	})
	checkParts(t, msgs, bigSeq, big, up.MaxPayload())
	if v := value(m.Reconnects); v != 0 {
		t.Fatalf("%v reconnects: a packet over the broker's limit was sent", v)
	}
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// TestPublishResumesWhenTheBrokerIsBack: a publish failed while the broker
// was away waits its backoff only until the uplink is ready again: the
// batch spooled during the outage reaches the restarted server at once,
// not after the rest of a backoff that grew during the outage (here 60 s:
// without the wake the test times out; review12 F2: the collector, back
// first, judged the gateway's assets silent meanwhile).
func TestPublishResumesWhenTheBrokerIsBack(t *testing.T) {
	n, up := natsUplink(t, 0)
	r := startForwarderWith(t, up, Options{retry: backoff.Backoff{Min: time.Minute, Max: time.Minute}})
	r.appendBatch(t, batch(1))
	streamMsgs(t, n.URL(), 1)
	n.Shutdown()
	wait.For(t, 10*time.Second, "the uplink not ready", func() bool { return !up.Ready() })
	r.appendBatch(t, batch(2))
	wait.For(t, 10*time.Second, "the publish failed", func() bool { return r.f.State().LastError != "" })
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	streamMsgs(t, n.URL(), 2) // within its 15 s, far inside the minute of backoff
}

// natsUplink starts an embedded NATS server with JetStream (maxPayload 0:
// the default) and a NATS uplink to it, both gone when the test ends.
func natsUplink(t *testing.T, maxPayload int32) (*brokers.NATS, *natsjs.Uplink) {
	t.Helper()
	n, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir(), MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	cfg := natsjs.Config{URL: n.URL()}
	cfg.SetDefaults(gw)
	up, err := natsjs.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n, up
}
