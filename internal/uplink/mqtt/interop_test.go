package mqtt

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

func interopAddr(t *testing.T) string {
	t.Helper()
	if os.Getenv("SMELTER_INTEROP") != "1" {
		t.Skip("interop test against the machine's Mosquitto: set SMELTER_INTEROP=1 (and SMELTER_MQTT_ADDR, default 127.0.0.1:1883)") //nolint:misspell // the broker's name
	}
	if a := os.Getenv("SMELTER_MQTT_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:1883"
}

// TestInteropMosquitto: exact payloads at QoS 1, retained online status, the
// will on an abrupt loss, and QoS 1 messages kept for an offline persistent
// subscriber. Topics and client ids are unique to the run; retained
// messages and sessions are removed afterwards.
func TestInteropMosquitto(t *testing.T) { //nolint:misspell // the broker's name
	addr := interopAddr(t)
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	site := "it" + hex.EncodeToString(b)
	gw := "gw-" + site
	url := "tcp://" + addr
	statusT := telemetry.Topic(telemetry.StatusSubject(site, gw))
	dataFilter := "smelter/v1/" + site + "/motor/#"
	t.Cleanup(func() {
		// Clear the retained status and end the persistent sessions.
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("cleanup-" + site))
		if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			c.Publish(statusT, 1, true, []byte{}).WaitTimeout(5 * time.Second)
			c.Disconnect(100)
		}
		for _, id := range []string{gw, "sub-" + site} {
			c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true))
			if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				c.Disconnect(100)
			}
		}
	})

	// A persistent subscriber that goes offline before the data is sent.
	sub := subscribe(t, url, "sub-"+site, false, dataFilter, nil)
	sub.c.Disconnect(100)

	proxy := brokertest.NewProxy(t, addr)
	var cfg Config
	cfg.URL = "tcp://" + proxy.Addr()
	cfg.Keepalive = 2 * time.Second
	cfg.SetDefaults(gw, site)
	r := runUplink(t, cfg, nil)
	wait.For(t, 10*time.Second, "uplink ready against Mosquitto", r.u.Ready) //nolint:misspell // the broker's name

	watch := subscribe(t, url, "watch-"+site, true, statusT, nil)
	if m := watch.next(t, "retained online"); !m.retained || !strings.Contains(string(m.payload), `"online":true`) {
		t.Fatalf("status %q retained=%v", m.payload, m.retained)
	}

	msgs := envelopes(gw, 1, 200, 1000)
	for i := range msgs {
		msgs[i].Subject = telemetry.Subject(site, "motor", fmt.Sprintf("m-%d", i%3), telemetry.KindData)
	}
	publish(t, r.u, msgs)

	proxy.Cut()
	for {
		m := watch.nextOn(t, statusT)
		if strings.Contains(string(m.payload), `"online":false`) {
			break
		}
	}

	// The persistent subscriber comes back and receives every message.
	again := subscribe(t, url, "sub-"+site, false, "", nil)
	for i, want := range msgs {
		m := again.next(t, want.MsgID)
		if m.topic != telemetry.Topic(want.Subject) || !bytes.Equal(m.payload, want.Data) || m.qos != 1 {
			t.Fatalf("message %d: %s %q", i, m.topic, m.payload[:12])
		}
	}
}
