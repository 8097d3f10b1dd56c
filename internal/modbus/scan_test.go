package modbus

import (
	"bytes"
	"context"
	"errors"
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
