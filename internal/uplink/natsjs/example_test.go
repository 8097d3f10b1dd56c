package natsjs_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink/natsjs"
)

// Publish a batch through the uplink to an embedded nats-server: Publish
// returns nil once the stream acknowledged it, and the stream holds it
// under its dedup id (a second publish of the same id is dropped).
func Example() {
	dir, err := os.MkdirTemp("", "natsjs-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()

	cfg := natsjs.Config{URL: srv.URL()}
	cfg.SetDefaults("gw-example") // stream SMELTER on the telemetry kinds, created when missing
	up, err := natsjs.New(cfg, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); !up.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			log.Fatal("not connected")
		}
	}

	b := telemetry.Batch{Gateway: "gw-example", Seq: 1, TSGW: 1763812345123,
		Asset:    telemetry.Asset{ID: "m-1", Class: "motor", Path: []string{"acme", "plant1", "_", "_", "_"}},
		Readings: []telemetry.Reading{{Signal: "power", Value: 41.5, Unit: "kW", TS: 1763812345101}}}
	env := telemetry.Envelope{Subject: telemetry.AssetSubject(b.Asset, telemetry.KindData), MsgID: b.MsgID(), Data: b.AppendJSON(nil)}
	for range 2 { // the second is a duplicate the stream drops
		if err := up.Publish(ctx, []telemetry.Envelope{env}); err != nil {
			log.Fatal(err)
		}
	}

	nc, err := nats.Connect(srv.URL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	st, err := js.Stream(ctx, natsjs.DefaultStream)
	if err != nil {
		log.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, env.Subject)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("subject:", msg.Subject)
	fmt.Println("Nats-Msg-Id:", msg.Header.Get(jetstream.MsgIDHeader))
	fmt.Println("messages in the stream:", st.CachedInfo().State.Msgs)
	// Output:
	// subject: smelter.v1.plant1.motor.m-1.data
	// Nats-Msg-Id: gw-example-1
	// messages in the stream: 1
}
