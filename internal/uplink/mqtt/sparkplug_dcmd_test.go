package mqtt

import (
	"context"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/smelterio/smelter/internal/wait"
)

// TestSparkplugDCMD: SubscribeDCMD makes the edge node subscribe to its
// devices' DCMD topic at QoS 1 (tck-id-message-flow-device-dcmd-subscribe),
// whether called before or after the node connected, and hands each DCMD's
// device id and payload over; PublishOne publishes a command result on the
// edge node's connection.
func TestSparkplugDCMD(t *testing.T) {
	b, rec := startRecorded(t)
	type dcmd struct{ device, payload string }
	got := make(chan dcmd, 16)
	handler := func(device string, payload []byte) { got <- dcmd{device, string(payload)} }

	early := spConfig(b.URL())
	early.ClientID, early.Sparkplug.EdgeNodeID = "gw-early", "gw-early"
	e := runUplink(t, early, nil)
	e.u.SubscribeDCMD(handler) // most likely while connecting
	r := runUplink(t, spConfig(b.URL()), nil)
	wait.For(t, 10*time.Second, "uplink ready", r.u.Ready)
	r.u.SubscribeDCMD(handler) // connected
	for _, id := range []string{"gw-test", "gw-early"} {
		wait.For(t, 10*time.Second, "the DCMD subscription of "+id, func() bool {
			q, ok := rec.subscriptions(id)["spBv1.0/plant/DCMD/"+id+"/+"]
			return ok && q == 1
		})
	}

	host := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("host").SetCleanSession(true))
	if tok := host.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { host.Disconnect(100) })
	results := make(chan string, 4)
	if tok := host.Subscribe("smelter/v1/plant/generic/ac-1/cmd/result", 1, func(_ paho.Client, m paho.Message) {
		results <- string(m.Payload())
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	for _, node := range []string{"gw-test", "gw-early"} {
		if tok := host.Publish("spBv1.0/plant/DCMD/"+node+"/ac-1", 0, false, "payload-"+node); !tok.WaitTimeout(5 * time.Second) {
			t.Fatal("publish")
		}
		select {
		case d := <-got:
			if d.device != "ac-1" || d.payload != "payload-"+node {
				t.Fatalf("DCMD to %s handed over as %+v", node, d)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no DCMD handed over by %s", node)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.u.PublishOne(ctx, "smelter/v1/plant/generic/ac-1/cmd/result", []byte("result")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-results:
		if p != "result" {
			t.Fatalf("result %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
	}
}
