package fleet

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smelterio/smelter/simulators/regmap"
)

// benchFleet starts n motors, each on its own Modbus TCP port.
func benchFleet(b *testing.B, n int) *Fleet {
	cfg := Config{Dir: "../../configs", Speed: 0}
	for i := range n {
		cfg.Devices = append(cfg.Devices, DeviceConfig{ID: fmt.Sprintf("m%d", i), Class: "motor",
			Template: "templates/motor-sim.yaml", Modbus: &ModbusConfig{Address: "127.0.0.1:0", UnitID: 1}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := New(cfg, nil)
	if err := f.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); f.Wait() })
	return f
}

// BenchmarkModbusTCP200Devices measures requests/s one process serves: 200
// devices on 200 ports, 32 goburrow clients each cycling over its share of
// the devices, reading 16 holding registers per request.
func BenchmarkModbusTCP200Devices(b *testing.B) {
	f := benchFleet(b, 200)
	devs := f.Devices()
	var next atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		k := int(next.Add(1)) - 1
		var cs []*client
		for i := k % len(devs); i < len(devs); i += 32 {
			cs = append(cs, dial(b, devs[i], 2*time.Second))
		}
		i := 0
		for pb.Next() {
			if _, err := cs[i%len(cs)].ReadHoldingRegisters(0, 16); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkPublish measures one device's step publication (fault
// application, encoding, image swap).
func BenchmarkPublish(b *testing.B) {
	f := benchFleet(b, 1)
	d := f.devices[0]
	var img *regmap.Image
	b.ReportAllocs()
	for b.Loop() {
		d.publish(f.now)
	}
	_ = img
}

// BenchmarkStepDemoFleet measures one simulation step of the demo fleet (14
// devices: model step, publication, and with OPC UA the plant-ua Refresh),
// with and without its OPC UA server.
func BenchmarkStepDemoFleet(b *testing.B) {
	for _, withUA := range []bool{false, true} {
		b.Run(fmt.Sprintf("opcua=%v", withUA), func(b *testing.B) {
			f := startFleet(b, func(c *Config) {
				if !withUA {
					c.OPCUA = OPCUAConfig{}
					for i := range c.Devices {
						c.Devices[i].OPCUA = nil
					}
				}
			})
			step := f.cfg.Step.D()
			b.ReportAllocs()
			for b.Loop() {
				if err := f.Advance(step); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
