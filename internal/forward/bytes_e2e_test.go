package forward

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink/mqtt"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
	"github.com/smelterio/smelter/internal/wait"
)

// truthBatch is the batch of seq: its readings' count, values and src all
// derive from seq, so bytes of another record can never pass for it.
func truthBatch(seq uint64, hist bool) *telemetry.Batch {
	b := &telemetry.Batch{Gateway: gw, Asset: asset, Seq: seq, TSGW: 1763812345123, Historical: hist}
	for i := range 1 + int(seq%9) {
		b.Readings = append(b.Readings, telemetry.Reading{Signal: fmt.Sprintf("s%d", i), Value: float64(seq*16 + uint64(i)), Unit: "Cel",
			TS: 1763812345100, Src: "r8:" + strconv.FormatUint(seq, 36) + ":" + strings36(seq, i)})
	}
	return b
}

func strings36(seq uint64, i int) string {
	return string(bytes.Repeat([]byte{'a' + byte((seq+uint64(i))%26)}, int(seq%37)))
}

// truthCheck returns the seq a received payload claims and whether its
// bytes are exactly those appended for that seq (or, marked historical by a
// backfill lane, exactly the historical encoding of that batch).
func truthCheck(data []byte) (uint64, bool, bool) {
	b, err := telemetry.DecodeBatch(data)
	if err != nil {
		return 0, false, false
	}
	want := truthBatch(b.Seq, b.Historical).AppendJSON(nil)
	return b.Seq, b.Historical, bytes.Equal(data, want)
}

// TestEveryPublishedRecordIsItsOwnBytes (review8): a real spool with
// a 64 KiB tail cache (64 KiB arena chunks, reused all the time), four
// concurrent appenders, and two uplinks reading the same records at
// different speeds (NATS JetStream with live_first, so a live lane and a
// backfill lane re-encoding historical batches; MQTT QoS 1 with its
// resend store), while the NATS server is restarted and the MQTT broker
// drops the gateway's connection several times. Every message the stream
// stores and every message the MQTT subscriber gets must be exactly the
// bytes appended for the seq it claims, and every seq must arrive.
func TestEveryPublishedRecordIsItsOwnBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end, ~100k records")
	}
	total := 100_000
	if v, err := strconv.Atoi(os.Getenv("REVIEW8_RECORDS")); err == nil && v > 0 {
		total = v
	}
	ns, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	mb, err := brokers.StartMQTT(brokers.MQTTOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mb.Close() })

	// the MQTT consumer, subscribed before anything is sent
	var mu sync.Mutex
	mqttGot := map[uint64]int{}
	var mqttBad []string
	o := paho.NewClientOptions().AddBroker(mb.URL()).SetClientID("r8-sub").SetOrderMatters(false)
	sub := paho.NewClient(o)
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { sub.Disconnect(0) })
	if tok := sub.Subscribe("smelter/v1/+/+/+/data", 1, func(_ paho.Client, m paho.Message) {
		seq, _, ok := truthCheck(m.Payload())
		mu.Lock()
		defer mu.Unlock()
		if !ok && len(mqttBad) < 10 {
			mqttBad = append(mqttBad, fmt.Sprintf("seq %d: %.200q", seq, m.Payload()))
		}
		mqttGot[seq]++
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	sp, err := spool.Open(spool.Config{Dir: filepath.Join(t.TempDir(), "spool"), CacheBytes: 64 << 10, SegmentBytes: 4 << 20}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := sp.LastSeq() // a new spool's seqs start above the clock floor
	ncfg := natsjs.Config{URL: ns.URL(), MaxPending: 256}
	ncfg.SetDefaults(gw)
	nup, err := natsjs.New(ncfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mcfg := mqtt.Config{URL: mb.URL()}
	mcfg.SetDefaults(gw, "s1")
	mup, err := mqtt.New(mcfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	nr, err := sp.Reader(nup.Name())
	if err != nil {
		t.Fatal(err)
	}
	mr, err := sp.Reader(mup.Name())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	fm := NewMetrics(reg)
	nf := New(nup, sp, nr, Options{Gateway: gw, Metrics: fm, LiveFirst: true, LiveAfter: 50 * time.Millisecond})
	mf := New(mup, sp, mr, Options{Gateway: gw, Metrics: fm})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{nup.Run, mup.Run, nf.Run, mf.Run} {
		wg.Go(func() { _ = run(ctx) })
	}
	defer func() {
		cancel()
		wg.Wait()
		if err := sp.Close(); err != nil {
			t.Error(err)
		}
	}()
	wait.For(t, 10*time.Second, "both uplinks ready", func() bool { return nup.Ready() && mup.Ready() })

	// appenders; the brokers fail under them
	const appenders = 4
	var awg sync.WaitGroup
	for a := range appenders {
		awg.Go(func() {
			for range total / appenders {
				if _, err := sp.Append(context.Background(), telemetry.AssetSubject(asset, telemetry.KindData), func(seq uint64, dst []byte) []byte {
					return truthBatch(seq, false).AppendJSON(dst)
				}); err != nil {
					t.Errorf("appender %d: %v", a, err)
					return
				}
			}
		})
	}
	faults := 0
	for step := 1; step <= 6; step++ {
		want := base + uint64(step*total/7)
		wait.For(t, 120*time.Second, fmt.Sprintf("%d records appended", want), func() bool { return sp.LastSeq() >= want })
		if step%2 == 1 {
			if err := ns.Restart(); err != nil {
				t.Fatal(err)
			}
		} else if !mb.DropClient(mcfg.ClientID) {
			t.Logf("step %d: the gateway's MQTT client was not connected", step)
		}
		faults++
	}
	awg.Wait()
	last := sp.LastSeq()
	if last != base+uint64(total/appenders*appenders) {
		t.Fatalf("last seq %d, want %d", last, base+uint64(total/appenders*appenders))
	}
	wait.For(t, 300*time.Second, "both forwarders committed every record", func() bool {
		return nr.Committed() >= last && mr.Committed() >= last
	})

	// the stream: every message its own bytes, every seq there
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer rcancel()
	st, err := js.Stream(rctx, natsjs.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(rctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.OrderedConsumer(rctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	natsGot := map[uint64]int{}
	hist := 0
	var bad []string
	for n := uint64(0); n < info.State.Msgs; n++ {
		m, err := it.Next()
		if err != nil {
			t.Fatalf("stream message %d of %d: %v", n, info.State.Msgs, err)
		}
		seq, h, ok := truthCheck(m.Data())
		if id := m.Headers().Get(jetstream.MsgIDHeader); id != telemetry.MsgID(gw, seq) {
			ok = false
		}
		if !ok && len(bad) < 10 {
			bad = append(bad, fmt.Sprintf("id %s seq %d: %.200q", m.Headers().Get(jetstream.MsgIDHeader), seq, m.Data()))
		}
		if h {
			hist++
		}
		natsGot[seq]++
	}
	it.Stop()
	for _, b := range bad {
		t.Errorf("NATS: a stored message is not the bytes appended for its seq: %s", b)
	}
	mu.Lock()
	for _, b := range mqttBad {
		t.Errorf("MQTT: a received message is not the bytes appended for its seq: %s", b)
	}
	missingN, missingM := 0, 0
	for seq := base + 1; seq <= last; seq++ {
		if natsGot[seq] == 0 {
			missingN++
		}
		if mqttGot[seq] == 0 {
			missingM++
		}
	}
	mdups := 0
	for _, n := range mqttGot {
		mdups += n - 1
	}
	mu.Unlock()
	t.Logf("%d records, %d faults; NATS: %d stored (%d historical), %d seqs missing; MQTT: %d seqs received (%d repeats), %d missing",
		last-base, faults, info.State.Msgs, hist, missingN, len(mqttGot), mdups, missingM)
	if missingN > 0 || missingM > 0 {
		t.Errorf("records never delivered: %d on NATS, %d on MQTT", missingN, missingM)
	}
}
