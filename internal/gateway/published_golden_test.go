package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

var updatePublished = flag.Bool("update-published", false, "rewrite testdata/published.golden from this build")

// publishedDevices are devices of many points that use every part of the
// compiled point tables: units given, converted and taken from the node
// (with and without the node's range), scale and offset, client and server
// deadbands, ranges from the catalog and the configuration, state signals
// with enums, write blocks, poll and subscribe modes, point intervals.
func publishedDevices() map[string]string {
	var g strings.Builder
	g.WriteString("{id: g-1, class: generic, heartbeat: 2s, opcua: {endpoint: \"opc.tcp://127.0.0.1:1\", publish_interval: 100ms}, points: [")
	for i := range 240 {
		if i > 0 {
			g.WriteString(", ")
		}
		node := fmt.Sprintf("ns=1;s=g-1.s%03d", i)
		if i%11 == 0 {
			node = fmt.Sprintf("i=%d", 5000+i)
		}
		fmt.Fprintf(&g, "{signal: s%03d, node_id: %q", i, node)
		switch i % 9 {
		case 0:
			g.WriteString(", unit: kW")
		case 1:
			g.WriteString(", unit: W, sampling_interval: 200ms")
		case 2: // unit from the node
		case 3:
			g.WriteString(", unit: Cel, scale: 0.1, offset: -5")
		case 4:
			g.WriteString(", unit: kW, deadband: 0.5")
		case 5:
			g.WriteString(", unit: kW, deadband_type: absolute, deadband: 1")
		case 6:
			g.WriteString(", unit: kW, min: 0, max: 100, mode: poll, interval: 200ms")
		case 7: // unit from the node, range configured, writable
			g.WriteString(", min: -10, max: 10, write: {min: 0, max: 5}")
		case 8:
			g.WriteString(", unit: \"m3/h\", scale: 2, queue_size: 4, deadband_type: percent, deadband: 2")
		}
		g.WriteString("}")
	}
	g.WriteString("]}")

	var gm strings.Builder
	gm.WriteString("{id: gm-1, class: generic, poll_interval: 100ms, modbus: {address: \"127.0.0.1:1\"}, points: [")
	for i := range 120 {
		if i > 0 {
			gm.WriteString(", ")
		}
		fmt.Fprintf(&gm, "{signal: r%03d, table: holding, address: %d, type: uint16, scale: 0.1, unit: kW", i, i)
		switch i % 5 {
		case 1:
			gm.WriteString(", deadband: 1")
		case 2:
			gm.WriteString(", offset: 3, min: 0, max: 50")
		case 3:
			gm.WriteString(", write: {min: 0, max: 10}")
		}
		gm.WriteString("}")
	}
	gm.WriteString("]}")

	return map[string]string{
		"g-1":  g.String(),
		"gm-1": gm.String(),
		"ac-1": `{id: ac-1, class: air_compressor, opcua: {endpoint: "opc.tcp://127.0.0.1:1", publish_interval: 100ms}, points: [
			{signal: discharge_pressure, node_id: "ns=2;s=ac.p"},
			{signal: discharge_temp, node_id: "ns=2;s=ac.t", unit: "[degF]"},
			{signal: input_power, node_id: "ns=2;s=ac.w", unit: W, deadband: 100},
			{signal: free_air_delivery, node_id: "ns=2;s=ac.fad"},
			{signal: load_state, node_id: "ns=2;s=ac.ls", enum: {0: off, 1: unloaded, 4: loaded}},
			{signal: dew_point, node_id: "ns=2;s=ac.dp", deadband_type: absolute, deadband: 0.2},
			{signal: unload_pressure_setpoint, node_id: "ns=2;s=ac.us", write: {min: 0.5, max: 0.9, max_step: 0.1}}]}`,
		"m-1": `{id: m-1, class: motor, poll_interval: 100ms, modbus: {address: "127.0.0.1:1"}, points: [
			{signal: voltage_a, table: holding, address: 0, type: uint16, unit: kV, scale: 0.01},
			{signal: current_a, table: holding, address: 1, type: int16, scale: 0.1, offset: 1},
			{signal: power, table: holding, address: 2, type: uint32, unit: W},
			{signal: winding_temp, table: holding, address: 4, type: uint16, unit: "[degF]", deadband: 1},
			{signal: power_factor, table: holding, address: 5, type: uint16, scale: 0.001, min: 0.2},
			{signal: frequency, table: input, address: 0, type: float32}]}`,
	}
}

// publishedUnits are the units the devices report for the points whose
// configuration gives none, the first time and after a change.
func publishedUnits(id string, n int, changed bool) []driver.Unit {
	switch id {
	case "ac-1":
		u := []driver.Unit{{Index: 0, UCUM: "bar", HasRange: true, Min: 0, Max: 16}, {Index: 3, UCUM: "m3/h"}, {Index: 1, UCUM: "[degF]"}}
		if changed {
			u[0] = driver.Unit{Index: 0, UCUM: "kPa"}
		}
		return u
	case "g-1":
		var us []driver.Unit
		for i := range n {
			if i%9 != 2 && i%9 != 7 {
				continue
			}
			var u driver.Unit
			switch (i / 9) % 6 {
			case 0:
				u = driver.Unit{UCUM: "m"}
			case 1:
				u = driver.Unit{UCUM: "kW", HasRange: true, Min: 0, Max: 500}
			case 2:
				u = driver.Unit{Absent: true, AbsentHow: "no EngineeringUnits property"}
			case 3:
				u = driver.Unit{Err: errors.New("EngineeringUnits: a String, not an EUInformation")}
			case 4:
				u = driver.Unit{UCUM: "cm", HasRange: true, Min: -5, Max: 5}
			case 5:
				u = driver.Unit{UNECE: "XYZ", Display: "furlong"}
			}
			if changed && i%4 == 0 {
				u = driver.Unit{UCUM: "mm"}
			}
			u.Index = i
			us = append(us, u)
		}
		return us
	}
	return nil
}

// publishedCycle is cycle k of a device of n points: most points, some
// changed only, with good, uncertain, bad, silent, stale and text samples.
func publishedCycle(n, k int) sample.Cycle {
	c := sample.Cycle{Start: at(float64(k) / 10), Interval: 100 * time.Millisecond, Replied: true}
	for i := range n {
		if (i+k)%5 == 0 && k > 0 {
			continue // unchanged: not in this notification
		}
		s := sample.Sample{Index: i, Num: float64((i*31+k*17)%1000)/4 - 20, Quality: telemetry.QualityGood}
		if i%3 == 0 {
			s.TS = at(float64(k)/10).UnixMilli() - int64(i)
		}
		switch (i*7 + k*13) % 23 {
		case 0:
			s = sample.Sample{Index: i, Quality: telemetry.QualityBad, Status: 0x80340000}
		case 1:
			s = sample.Sample{Index: i, Quality: telemetry.QualityBad, Silent: true}
		case 2:
			if k == 3 {
				s = sample.Sample{Index: i, Quality: telemetry.QualityStale, Status: 0x808A0000}
			}
		case 3:
			s.Quality, s.Status = telemetry.QualityUncertain, 0x40000000
		case 4:
			s.IsStr, s.Str = true, fmt.Sprintf("t%d", k)
		case 5:
			s.Num = 4 // the enum's loaded code; 4 a state index out of range
		}
		c.Samples = append(c.Samples, s)
	}
	return c
}

// TestPublishedBatchesAndBirthsUnchanged runs devices of many points
// through the acquisition loop into a spool, with units reported by the
// device and changed midway, and compares every record (batches, births,
// deaths: their exact bytes, as the uplinks publish them) with
// testdata/published.golden, written by main before the point tables were
// made compact (issue 17, session 9). A change of the compiled tables, the
// normalizer or the readings must publish the same values, names, units,
// sources and qualities.
func TestPublishedBatchesAndBirthsUnchanged(t *testing.T) {
	devs := publishedDevices()
	var got strings.Builder
	for _, id := range []string{"ac-1", "g-1", "gm-1", "m-1"} {
		dir := t.TempDir()
		doc := "gateway: {id: gw, site: s, data_dir: " + filepath.Join(dir, "data") + "}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\ndevices:\n  - " + devs[id] + "\n"
		cfg, err := gwconfig.LoadBytes(filepath.Join(dir, "gw.yaml"), []byte(doc), Drivers()...)
		if err != nil {
			t.Fatal(err)
		}
		r := newGatewayRig(t, cfg, Options{Now: func() time.Time { return t0.Add(time.Hour) }})
		n := len(cfg.Devices[0].Signals())
		if us := publishedUnits(id, n, false); us != nil {
			r.d.applyUnits(us)
		}
		var cycles []sample.Cycle
		for k := range 4 {
			cycles = append(cycles, publishedCycle(n, k))
		}
		r.run(t, cycles...)
		if us := publishedUnits(id, n, true); us != nil {
			r.d.applyUnits(us)
		}
		cycles = cycles[:0]
		for k := 4; k < 7; k++ {
			cycles = append(cycles, publishedCycle(n, k))
		}
		r.run(t, cycles...)
		writeRecords(t, &got, id, r)
		// the birth's signals as the gateway builds them for its asset
		// (with the units the device reported)
		sigs, err := json.Marshal(r.d.appendSignals(nil))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&got, "%s signals %d %x\n", id, len(sigs), sha256.Sum256(sigs))
		if d := os.Getenv("PUBLISHED_DUMP"); d != "" {
			if err := os.WriteFile(filepath.Join(d, id+".signals"), sigs, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	path := filepath.Join("testdata", "published.golden")
	if *updatePublished {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Errorf("published records differ from %s:\n got:\n%s\nwant:\n%s", path, got.String(), want)
	}
}

// seqFromOne returns data with its "seq" counted from 1 (first is the
// spool's first seq, which follows the clock: spool.SeqFloor), so the
// golden file does not depend on when the test ran.
func seqFromOne(data []byte, seq, first uint64) []byte {
	return bytes.Replace(data, fmt.Appendf(nil, `"seq":%d,`, seq), fmt.Appendf(nil, `"seq":%d,`, seq-first+1), 1)
}

// writeRecords appends one line per spooled record of r to w: the
// device, the subject, the record's length and the SHA-256 of its bytes
// (the records of 240 points are ~1 MB: the golden file keeps their hashes;
// PUBLISHED_DUMP=dir writes them whole to compare by hand).
func writeRecords(t *testing.T, w *strings.Builder, id string, r *loopRig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var dump strings.Builder
	for r.rd.Committed() < r.sp.LastSeq() {
		recs, err := r.rd.Next(ctx, 1000, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			data := seqFromOne(rec.Data, rec.Seq, r.first)
			fmt.Fprintf(w, "%s %s %d %x\n", id, rec.Subject, len(data), sha256.Sum256(data))
			fmt.Fprintf(&dump, "%s\n%s\n", rec.Subject, data)
		}
		if err := r.rd.Commit(recs[len(recs)-1].Seq); err != nil {
			t.Fatal(err)
		}
	}
	if d := os.Getenv("PUBLISHED_DUMP"); d != "" {
		if err := os.WriteFile(filepath.Join(d, id+".records"), []byte(dump.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
