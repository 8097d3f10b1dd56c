package gateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// TestInteropGatewayToMachineBrokers runs the gateway against the machine's
// own brokers: Debian's nats-server 2.9 with JetStream on 127.0.0.1:4222 and
// Mosquitto on 127.0.0.1:1883. It runs when SMELTER_INTEROP=1 (.ci/run sets
// it after checking the services); names are unique per run and the stream
// is deleted afterwards.
func TestInteropGatewayToMachineBrokers(t *testing.T) {
	if os.Getenv("SMELTER_INTEROP") != "1" {
		t.Skip("interop test: set SMELTER_INTEROP=1 with NATS (JetStream) on 127.0.0.1:4222 and Mosquitto on 127.0.0.1:1883")
	}
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	site, stream := "it"+run, "SMELTER_IT_"+run
	bank := modbustest.NewBank()
	setBank(bank)
	srv := modbustest.StartServer(t, bank)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compressor.yaml"), []byte(e2eTemplate), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgText := fmt.Sprintf(`gateway: {id: gw-e2e, site: %s, data_dir: ./data}
http: {listen: "off"}
uplinks:
  nats: {url: "nats://127.0.0.1:4222", stream: %s, max_age: 10m}
  mqtt: {url: "tcp://127.0.0.1:1883", client_id: smelter-it-%s}
devices:
  - id: ac-1
    class: air_compressor
    poll_interval: 100ms
    template: compressor.yaml
    modbus: {address: %q, unit_id: 1}
`, site, stream, run, srv.Addr)
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := gwconfig.Load(path, Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	// a stream of our own on the shared server, covering only this run's site
	cfg.Raw.Uplinks.NATS.Subjects = telemetry.TelemetryStreamSubjects(site)
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		t.Fatalf("machine NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), stream) })

	mc := subscribeMQTT(t, "tcp://127.0.0.1:1883")
	runGateway(t, cfg)

	var cons jetstream.Consumer
	wait.For(t, 15*time.Second, "the gateway to create its stream on the machine's NATS", func() bool {
		cons, err = js.OrderedConsumer(context.Background(), stream, jetstream.OrderedConsumerConfig{})
		return err == nil
	})
	jc := &collector{}
	cc, err := cons.Consume(func(m jetstream.Msg) { jc.add(m.Subject(), m.Data()) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	for name, c := range map[string]*collector{"nats 2.9": jc, "mosquitto": mc} {
		wait.For(t, 20*time.Second, name+" batches", func() bool {
			b, _, _ := c.snapshot()
			n := 0
			for _, x := range b {
				if x.Asset.Site() == site {
					n++
				}
			}
			return n >= 3
		})
		batches, _, errs := c.snapshot()
		if len(errs) > 0 {
			t.Fatalf("%s: %v", name, errs)
		}
		for _, b := range batches {
			if b.Asset.Site() == site {
				checkBatchAt(t, name, site, b, wantGood)
				break
			}
		}
	}
}
