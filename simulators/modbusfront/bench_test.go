package modbusfront

import (
	"testing"

	"github.com/simonvetter/modbus"
)

// BenchmarkHandlerRead measures the front's own part of a Modbus TCP read
// (lookup, fault check, image window): no allocation.
func BenchmarkHandlerRead(b *testing.B) {
	d := NewDevice(&counter{}, &counter{})
	d.Publish(testImage())
	f := startFront(b, Config{Address: "127.0.0.1:0"}, Unit{ID: 1, Device: d})
	h := &tcpHandler{f: f}
	req := &modbus.HoldingRegistersRequest{UnitId: 1, Addr: 0, Quantity: 16}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.HandleHoldingRegisters(req); err != nil {
			b.Fatal(err)
		}
	}
}
