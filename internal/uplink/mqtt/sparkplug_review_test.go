package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/smelterio/smelter/internal/sparkplug"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink"
	"github.com/smelterio/smelter/internal/wait"
)

// publishAll publishes msgs the way the forwarder does: a message the
// uplink rejects for good is set aside and the rest published again. It
// returns the MsgIDs set aside.
func publishAll(t *testing.T, u *Uplink, msgs []telemetry.Envelope) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var aside []string
	for range 100 {
		err := u.Publish(ctx, msgs)
		if err == nil {
			return aside
		}
		var rej *uplink.RejectedError
		if !errors.As(err, &rej) {
			t.Fatalf("publish: %v", err)
		}
		aside = append(aside, rej.MsgID)
		for i := range msgs {
			if msgs[i].MsgID == rej.MsgID {
				msgs = append(msgs[:i:i], msgs[i+1:]...)
				break
			}
		}
	}
	t.Fatal("publish never succeeded")
	return nil
}

// A device whose DBIRTH can never fit max_packet_size is set aside alone
// (its birth and data rejected as too_large, counted and logged once); the
// node's session goes on: one NBIRTH, and the other device's DBIRTH and
// DDATA flow.
func TestSparkplugOversizedDeviceSetAsideAlone(t *testing.T) {
	const maxPacket = 1024
	b, rec := startRecorded(t)
	cfg := spConfig(b.URL())
	cfg.MaxPacketSize = maxPacket
	var log lockedBuf
	r := runUplink(t, cfg, slog.New(slog.NewTextHandler(&log, nil)))
	u := r.u
	wait.For(t, 10*time.Second, "connected", u.Ready)
	big := telemetry.Asset{ID: "diesel-1", Class: "diesel_engine", Path: ac1.Path}
	var sigs []telemetry.SignalInfo
	for i := range 40 {
		sigs = append(sigs, telemetry.SignalInfo{Signal: fmt.Sprintf("signal_%02d", i), Unit: "kPa", Min: fptr(0), Max: fptr(1000), IntervalMS: 1000,
			Src: fmt.Sprintf("modbus:1:hr:%d", i)})
	}
	bigBirth, err := telemetry.MarshalBirth(&telemetry.Birth{Schema: telemetry.SchemaBirth, Gateway: "gw-test", Seq: 2, Asset: big.ToJSON(),
		TSGW: time.Now().UnixMilli(), Signals: sigs})
	if err != nil {
		t.Fatal(err)
	}
	good := telemetry.Reading{Signal: "discharge_pressure", Value: 0.7, Unit: "MPa", TS: time.Now().UnixMilli()}
	bigData := telemetry.Reading{Signal: "signal_00", Value: 1, Unit: "kPa", TS: time.Now().UnixMilli()}
	msgs := []telemetry.Envelope{birthEnv(t, ac1, 1),
		{Subject: telemetry.AssetSubject(big, telemetry.KindBirth), MsgID: telemetry.MsgID("gw-test", 2), Data: bigBirth},
		batchEnv(ac1, 3, good), batchEnv(big, 4, bigData), batchEnv(ac1, 5, good), batchEnv(big, 6, bigData)}
	aside := publishAll(t, u, msgs)
	if want := []string{telemetry.MsgID("gw-test", 2), telemetry.MsgID("gw-test", 4), telemetry.MsgID("gw-test", 6)}; fmt.Sprint(aside) != fmt.Sprint(want) {
		t.Fatalf("set aside %v, want %v", aside, want)
	}
	// later data of ac-1 goes on in the same session
	if aside := publishAll(t, u, []telemetry.Envelope{batchEnv(ac1, 7, good), batchEnv(big, 8, bigData)}); len(aside) != 1 || aside[0] != telemetry.MsgID("gw-test", 8) {
		t.Fatalf("set aside %v, want only seq 8", aside)
	}
	var nbirth, ddata int
	for _, p := range rec.of("gw-test") {
		if p.typ != packets.Publish {
			continue
		}
		switch {
		case strings.Contains(p.topic, "/NBIRTH/"):
			nbirth++
		case strings.Contains(p.topic, "diesel-1"):
			t.Errorf("the set-aside device was published: %s", p.topic)
		case strings.HasSuffix(p.topic, "/DDATA/gw-test/ac-1"):
			ddata++
		}
	}
	if nbirth != 1 || ddata < 3 {
		t.Fatalf("%d NBIRTH (want 1), %d DDATA of ac-1 (want at least 3)", nbirth, ddata)
	}
	if got := metricValue(r.m.Sparkplug.SetAside); got != 1 {
		t.Errorf("devices set aside %v, want 1 (counted once)", got)
	}
	if got := metricValue(r.m.Sparkplug.Births); got != 1 {
		t.Errorf("births %v, want 1", got)
	}
	if n := strings.Count(log.String(), "sparkplug device set aside"); n != 1 || !strings.Contains(log.String(), "device=diesel-1") {
		t.Errorf("set aside logged %d times (want once, naming diesel-1):\n%s", n, log.String())
	}
}

// lockedBuf is a log buffer safe for concurrent writes.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The spooled backlog (batches from before the connection came up) goes
// out with is_historical; data from after it is live.
func TestSparkplugBacklogHistorical(t *testing.T) {
	b, rec := startRecorded(t)
	before := time.Now().Add(-time.Hour).UnixMilli()
	r := runUplink(t, spConfig(b.URL()), nil)
	wait.For(t, 10*time.Second, "connected", r.u.Ready)
	old := telemetry.Batch{Gateway: "gw-test", Seq: 1, Asset: ac1, TSGW: before,
		Readings: []telemetry.Reading{{Signal: "discharge_pressure", Value: 0.5, Unit: "MPa", TS: before}}}
	publishOK(t, r.u, telemetry.Envelope{Subject: telemetry.AssetSubject(ac1, telemetry.KindData), MsgID: old.MsgID(), Data: old.AppendJSON(nil)},
		batchEnv(ac1, 2, telemetry.Reading{Signal: "discharge_pressure", Value: 0.6, Unit: "MPa", TS: time.Now().UnixMilli()}))
	var hist []bool
	for _, p := range rec.of("gw-test") {
		if p.typ == packets.Publish && strings.HasSuffix(p.topic, "/DDATA/gw-test/ac-1") {
			hist = append(hist, decode(t, p.payload).Metrics[0].GetIsHistorical())
		}
	}
	if fmt.Sprint(hist) != "[true false]" {
		t.Fatalf("is_historical of the DDATA %v, want [true false]", hist)
	}
}

// The edge node's Sparkplug metrics: births, rebirth requests, NCMD that
// do not decode, and the connection's bdSeq.
func TestSparkplugGatewayMetrics(t *testing.T) {
	b, _ := startRecorded(t)
	r := runUplink(t, spConfig(b.URL()), nil)
	wait.For(t, 10*time.Second, "connected", r.u.Ready)
	publishOK(t, r.u, birthEnv(t, ac1, 1))
	cmd := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("host"))
	if tok := cmd.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { cmd.Disconnect(0) })
	rebirth, err := sparkplug.Encode(sparkplug.RebirthRequest(time.Now().UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{{0xff, 0xff, 0xff}, rebirth} {
		if tok := cmd.Publish("spBv1.0/plant/NCMD/gw-test", 0, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	sp := &r.m.Sparkplug
	wait.For(t, 10*time.Second, "rebirth counted and published", func() bool {
		return metricValue(sp.RebirthRequests) == 1 && metricValue(sp.Births) == 2
	})
	if metricValue(sp.NCMDErrors) != 1 || metricValue(sp.BdSeq) != 0 {
		t.Fatalf("ncmd errors %v (want 1), bdSeq %v (want 0)", metricValue(sp.NCMDErrors), metricValue(sp.BdSeq))
	}
}
