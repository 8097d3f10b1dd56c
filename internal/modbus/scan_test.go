package modbus

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
)

func TestScanFindsUnitsAndRanges(t *testing.T) {
	bank := modbustest.NewBank()
	bank.SetRegisters(modbustest.HoldingRegisters, 10, 1, 2, 3)
	bank.SetRegisters(modbustest.InputRegisters, 0, 42)
	for a := uint16(20); a < 30; a++ {
		bank.SetException(modbustest.HoldingRegisters, a, 2)
	}
	srv := modbustest.StartServer(t, bank)
	cfg := Config{Transport: TCP, Address: srv.Addr, Timeout: 300 * time.Millisecond}
	var steps int
	units, err := Scan(context.Background(), cfg, ScanOptions{Units: []uint8{1}, Count: 40,
		Progress: func(string) { steps++ }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(units) != 1 || units[0].Unit != 1 {
		t.Fatalf("units = %+v", units)
	}
	var hr []ScanRange
	for _, r := range units[0].Ranges {
		if r.Table == HoldingRegisters {
			hr = append(hr, r)
		}
	}
	// the bank answers 0..19 and 30..39; 20..29 raise illegal data address
	if len(hr) != 2 || hr[0].Start != 0 || len(hr[0].Values) != 20 || hr[1].Start != 30 || len(hr[1].Values) != 10 {
		t.Fatalf("holding ranges = %+v", hr)
	}
	if hr[0].Values[10] != 1 || hr[0].Values[12] != 3 {
		t.Errorf("values = %v", hr[0].Values)
	}
	if steps < 3 {
		t.Errorf("progress called %d times", steps)
	}
	var out bytes.Buffer
	if err := WriteScan(&out, units); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "unit 1 answers") || !strings.Contains(out.String(), "30..39") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestScanNothingAnswers(t *testing.T) {
	bank := modbustest.NewBank()
	srv := modbustest.StartServer(t, bank)
	srv.Stop()
	cfg := Config{Transport: TCP, Address: srv.Addr, Timeout: 200 * time.Millisecond}
	units, err := Scan(context.Background(), cfg, ScanOptions{Units: []uint8{1, 2}, Count: 10}, nil)
	if !errors.Is(err, StatusConnection) || !strings.Contains(err.Error(), "connection refused") || len(units) != 0 {
		t.Fatalf("units = %+v, err = %v; want the refused connection", units, err)
	}
}

// TestScanOnlyUnitsThatAnswer scans units 1..4 where only unit 3 exists:
// behind a TCP gateway that answers the others with exception 10 or 11 (they
// are absent, not present), on an RTU converter and on a serial line (a
// unit id other than 0 must not stop the scan before it starts).
func TestScanOnlyUnitsThatAnswer(t *testing.T) {
	cases := []struct {
		name   string
		tr     Transport
		absent uint8
	}{
		{"tcp gateway exception 11", TCP, 11},
		{"tcp gateway exception 10", TCP, 10},
		{"rtu_over_tcp", RTUOverTCP, 0},
		{"rtu serial", RTU, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bank := modbustest.NewBank()
			bank.SetRegisters(modbustest.HoldingRegisters, 0, 7, 8, 9)
			var h *modbustest.Hostile
			switch c.tr {
			case TCP:
				h = modbustest.StartHostileTCP(t, bank, 3, nil)
			case RTUOverTCP:
				h = modbustest.StartHostileConverter(t, bank, 3, modbustest.RTU, nil)
			default:
				h = modbustest.StartHostileSerial(t, bank, 3, modbustest.RTU, nil)
			}
			h.SetAbsentReply(c.absent)
			cfg := Config{Transport: c.tr, Address: h.Addr, Timeout: 100 * time.Millisecond}
			if c.tr != TCP {
				cfg.Silence = 50 * time.Millisecond
			}
			cfg.Serial.Baud = 115200
			units, err := Scan(t.Context(), cfg, ScanOptions{Units: []uint8{1, 2, 3, 4}, Count: 8,
				Tables: []Table{HoldingRegisters}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(units) != 1 || units[0].Unit != 3 || len(units[0].Ranges) != 1 || units[0].Ranges[0].Values[2] != 9 {
				t.Fatalf("units = %+v, want unit 3 alone with holding 0..7", units)
			}
		})
	}
}

func TestScanRejectsUnitsOutOfRange(t *testing.T) {
	cfg := Config{Transport: RTUOverTCP, Address: "127.0.0.1:1"}
	_, err := Scan(t.Context(), cfg, ScanOptions{Units: []uint8{0, 1}}, nil)
	if err == nil || !strings.Contains(err.Error(), "unit_id: 0 out of range") {
		t.Fatalf("err = %v", err)
	}
}

// TestScanNotModbus: a peer that accepts the connection and answers with
// something that is not Modbus (an HTTP server, a proxy) is not reported as
// an empty bus: Scan fails with ErrNotModbus and the cause (review finding
// 11).
func TestScanNotModbus(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 256)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	cfg := Config{Transport: TCP, Address: ln.Addr().String(), Timeout: 200 * time.Millisecond}
	units, err := Scan(t.Context(), cfg, ScanOptions{Units: []uint8{1, 2}, Count: 4}, nil)
	if !errors.Is(err, ErrNotModbus) || !errors.Is(err, StatusFraming) || len(units) != 0 {
		t.Fatalf("Scan = %v, %v; want ErrNotModbus with the framing cause", units, err)
	}
}
