package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging/logtest"
	"github.com/smelterio/smelter/internal/normalize"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
)

// scripted is a fake Source for the acquisition loop's own tests: it emits
// its cycles in order and returns, so every test is deterministic (the
// cycles carry their own Start times; nothing sleeps).
type scripted []sample.Cycle

func (s scripted) Run(ctx context.Context, emit func(*sample.Cycle)) error {
	for i := 0; i < len(s) && ctx.Err() == nil; i++ {
		emit(&s[i])
	}
	return nil
}

// loopRig is one device of a loaded configuration, its source replaced by
// a script, writing into a real spool.
type loopRig struct {
	d     *device
	sp    *spool.Spool
	rd    *spool.Reader
	first uint64 // the spool's first seq (a new spool starts above spool.SeqFloor)
}

// newLoopRig loads a configuration with the one device dev (a flow
// mapping); the Modbus motor m-1 with points when dev is "".
func newLoopRig(t *testing.T, points, dev string) *loopRig {
	t.Helper()
	dir := t.TempDir()
	if dev == "" {
		dev = "{id: m-1, class: motor, poll_interval: 1s, modbus: {address: \"127.0.0.1:1\"}, points: " + points + "}"
	}
	doc := "gateway: {id: gw, site: s, data_dir: " + filepath.Join(dir, "data") + "}\nuplinks: {nats: {url: \"nats://127.0.0.1:1\"}}\ndevices:\n  - " + dev + "\n"
	cfg, err := gwconfig.LoadBytes(filepath.Join(dir, "gw.yaml"), []byte(doc), Drivers()...)
	if err != nil {
		t.Fatal(err)
	}
	return newGatewayRig(t, cfg, Options{})
}

// newGatewayRig builds the gateway of cfg and a spool for its first device.
func newGatewayRig(t *testing.T, cfg *gwconfig.Config, opts Options) *loopRig {
	t.Helper()
	g, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(cfg.Raw.Spool, g.log, spool.NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	rd, err := sp.Reader("test")
	if err != nil {
		t.Fatal(err)
	}
	return &loopRig{d: g.devices[0], sp: sp, rd: rd, first: sp.LastSeq() + 1}
}

func (r *loopRig) run(t *testing.T, cycles ...sample.Cycle) {
	t.Helper()
	r.d.src = scripted(cycles)
	if err := r.d.run(context.Background(), r.sp); err != nil {
		t.Fatal(err)
	}
}

// spooled is what the loop wrote, in order.
type spooled struct {
	batches []*telemetry.Batch
	deaths  []telemetry.Death
	births  int
	birth   []*telemetry.Birth // every birth, decoded
	kinds   string             // one letter per record: d(ata), b(irth), x (death)
}

func (r *loopRig) spooled(t *testing.T) spooled {
	t.Helper()
	rd := r.rd
	var out spooled
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for r.sp.LastSeq() > 0 && rd.Committed() < r.sp.LastSeq() {
		recs, err := rd.Next(ctx, 1000, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			switch {
			case strings.HasSuffix(rec.Subject, ".data"):
				b, err := telemetry.DecodeBatch(rec.Data)
				if err != nil {
					t.Fatal(err)
				}
				out.batches = append(out.batches, b)
				out.kinds += "d"
			case strings.HasSuffix(rec.Subject, ".birth"):
				b, err := telemetry.DecodeBirth(rec.Data)
				if err != nil {
					t.Fatal(err)
				}
				out.birth = append(out.birth, b)
				out.births++
				out.kinds += "b"
			case strings.HasSuffix(rec.Subject, ".death"):
				var d telemetry.Death
				if err := json.Unmarshal(rec.Data, &d); err != nil {
					t.Fatal(err)
				}
				out.deaths = append(out.deaths, d)
				out.kinds += "x"
			}
		}
		if err := rd.Commit(recs[len(recs)-1].Seq); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

const twoPoints = `[{signal: power, table: holding, address: 0, type: uint16, unit: kW}, {signal: frequency, table: holding, address: 1, type: uint16, unit: Hz}]`

var t0 = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

var errException = errors.New("modbus: exception 2 (illegal data address)")

// TestAnsweringDeviceNeverDies: a device whose one group answers only with
// exceptions and whose other group reads fine is alive all along: no death,
// no rebirth, and the exception points stay bad with their code (issue 16).
func TestAnsweringDeviceNeverDies(t *testing.T) {
	r := newLoopRig(t, twoPoints, "")
	var cycles []sample.Cycle
	for i := range 30 {
		// group A every second: exception only; group B every 5 s: good
		cycles = append(cycles, sample.Cycle{Start: at(float64(i)), Interval: time.Second, Replied: true, Err: errException,
			Samples: []sample.Sample{{Index: 0, Quality: telemetry.QualityBad, Status: 2}}})
		if i%5 == 0 {
			cycles = append(cycles, sample.Cycle{Start: at(float64(i) + 0.5), Interval: 5 * time.Second, Replied: true,
				Samples: []sample.Sample{{Index: 1, Num: 50}}})
		}
	}
	r.run(t, cycles...)
	got := r.spooled(t)
	if len(got.deaths) != 0 || got.births != 0 {
		t.Fatalf("an answering device died or was reborn: %d deaths, %d births (%s)", len(got.deaths), got.births, got.kinds)
	}
	for _, b := range got.batches {
		for _, rd := range b.Readings {
			if rd.Signal == "power" && (rd.Quality != telemetry.QualityBad || rd.Status != 2) {
				t.Fatalf("exception point = %+v, want bad with status 2 on every batch", rd)
			}
		}
	}
	st := r.d.state()
	if st.Dead || st.LastError != errException.Error() || st.LastReply != at(29) {
		t.Errorf("state = %+v", st)
	}
}

// TestSilenceIsDeathAfterKIntervals: only silence kills: the death comes
// after 3 x the interval without any reply, with the real cause as its
// reason and last_error; any answer (even an exception) is a rebirth.
func TestSilenceIsDeathAfterKIntervals(t *testing.T) {
	r := newLoopRig(t, twoPoints, "")
	timeout := errors.New("modbus: read holding 0 unit 1: transaction id mismatch: sent 7, got 8")
	silent := func(s float64) sample.Cycle {
		return sample.Cycle{Start: at(s), Interval: time.Second, Err: timeout, Samples: []sample.Sample{
			{Index: 0, Quality: telemetry.QualityBad, Silent: true, Status: 0x100},
			{Index: 1, Quality: telemetry.QualityBad, Silent: true, Status: 0x100}}}
	}
	good := sample.Cycle{Start: at(0), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 7}, {Index: 1, Num: 50}}}
	r.run(t, good, silent(1), silent(2))
	first := r.spooled(t)
	if len(first.deaths) != 0 {
		t.Fatalf("dead after 2 s of silence: %s", first.kinds)
	}
	if q := first.batches[2].Readings[0]; q.Quality != telemetry.QualityBad || q.Status != 0x100 {
		t.Errorf("after 2 s of silence: %+v, want bad", q)
	}
	r.run(t, silent(3))
	got := r.spooled(t)
	if len(got.deaths) != 1 || got.deaths[0].Reason != "no reply for 3s: "+timeout.Error() {
		t.Fatalf("deaths = %+v (%s)", got.deaths, got.kinds)
	}
	// the readings: bad while silent, stale once silent for 3 intervals
	last := got.batches[len(got.batches)-1]
	if last.Readings[0].Quality != telemetry.QualityStale || last.Readings[0].Status != 0x100 {
		t.Errorf("after 3 s of silence: %+v", last.Readings[0])
	}
	st := r.d.state()
	if !st.Dead || st.LastError != timeout.Error() {
		t.Errorf("state = %+v", st)
	}
	if up := gaugeValue(t, r.d.g.m.deviceUp.WithLabelValues("m-1")); up != 0 {
		t.Errorf("device_up = %v after the death", up)
	}
	r.run(t, silent(4), silent(10))
	if got := r.spooled(t); len(got.deaths) != 0 {
		t.Fatalf("a second death while dead: %s", got.kinds)
	}
	// an exception is an answer: rebirth, then the batch
	r.run(t, sample.Cycle{Start: at(11), Interval: time.Second, Replied: true, Err: errException,
		Samples: []sample.Sample{{Index: 0, Quality: telemetry.QualityBad, Status: 2}, {Index: 1, Quality: telemetry.QualityBad, Status: 2}}})
	got = r.spooled(t)
	if got.kinds != "bd" || r.d.state().Dead {
		t.Fatalf("after an exception reply: %s, state %+v; want a birth then the batch", got.kinds, r.d.state())
	}
	if up := gaugeValue(t, r.d.g.m.deviceUp.WithLabelValues("m-1")); up != 1 {
		t.Errorf("device_up = %v for a device answering with exceptions", up)
	}
	if q := got.batches[0].Readings[0]; q.Quality != telemetry.QualityBad || q.Status != 2 {
		t.Errorf("answered point = %+v", q)
	}
}

// TestDeathStatesTheRealSilence: slow cycles (an RTU line with long
// timeouts: 2.6 s per cycle for a 1 s interval) see the silence well past
// 3 x the interval; the death reason says how long the device was really
// silent, counted from its last reply, not the threshold.
func TestDeathStatesTheRealSilence(t *testing.T) {
	r := newLoopRig(t, twoPoints, "")
	timeout := errors.New("modbus: read holding 0 unit 1: timeout")
	silent := func(s float64) sample.Cycle {
		return sample.Cycle{Start: at(s), Interval: time.Second, Err: timeout, Samples: []sample.Sample{
			{Index: 0, Quality: telemetry.QualityBad, Silent: true, Status: 0x100}}}
	}
	good := sample.Cycle{Start: at(0.5), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 7}}}
	r.run(t, good, silent(3.1), silent(5.7))
	got := r.spooled(t)
	if len(got.deaths) != 1 || got.deaths[0].Reason != "no reply for 5.2s: "+timeout.Error() {
		t.Fatalf("deaths = %+v, want one saying 5.2s of silence", got.deaths)
	}
}

// TestDeathIsJudgedWhenTheRequestsTimeOut (review 1, F5): a device on a
// link saturated by units that time out, or with a long timeout, learns of
// its silence only when its requests time out, long after they started.
// The silence is measured to the cycle's end, from the end of the last
// cycle that got a reply: the first silent cycle, started 0.9 s after the
// last reply but ending 26 s later (its 25 s timeout), kills the device at
// once with the real silence, and its points are stale, not bad (they
// used to be bad, the device alive, until a cycle started 3 s after the
// last reply; the reason said "no reply for" the gap between two starts).
func TestDeathIsJudgedWhenTheRequestsTimeOut(t *testing.T) {
	r := newLoopRig(t, twoPoints, "")
	timeout := errors.New("modbus: read holding 0 unit 1: timeout")
	good := sample.Cycle{Start: at(0), Duration: 100 * time.Millisecond, Interval: time.Second, Replied: true,
		Samples: []sample.Sample{{Index: 0, Num: 7}, {Index: 1, Num: 50}}}
	silent := sample.Cycle{Start: at(1), Duration: 25 * time.Second, Interval: time.Second, Err: timeout, Samples: []sample.Sample{
		{Index: 0, Quality: telemetry.QualityBad, Silent: true, Status: 0x100},
		{Index: 1, Quality: telemetry.QualityBad, Silent: true, Status: 0x100}}}
	r.run(t, good, silent)
	got := r.spooled(t)
	if len(got.deaths) != 1 || got.deaths[0].Reason != "no reply for 25.9s: "+timeout.Error() {
		t.Fatalf("deaths = %+v (%s), want one at the end of the silent cycle, saying 25.9s", got.deaths, got.kinds)
	}
	last := got.batches[len(got.batches)-1]
	for _, rd := range last.Readings {
		if rd.Quality != telemetry.QualityStale || rd.Status != 0x100 {
			t.Errorf("after 25.9 s of silence: %+v, want stale with the timeout status", rd)
		}
	}
	if st := r.d.state(); !st.Dead || !st.LastReply.Equal(at(0.1)) {
		t.Errorf("state = %+v, want dead, last reply at the end of the good cycle", st)
	}
}

// TestNeverAnsweringDeviceDiesFromItsFirstAttempt and a Lost link is death
// at once.
func TestNeverAnsweringDeviceDiesFromItsFirstAttempt(t *testing.T) {
	r := newLoopRig(t, twoPoints, "")
	refused := errors.New("modbus: dial tcp 127.0.0.1:1: connection refused")
	c := func(s float64) sample.Cycle {
		return sample.Cycle{Start: at(s), Interval: time.Second, Err: refused,
			Samples: []sample.Sample{{Index: 0, Quality: telemetry.QualityBad, Silent: true, Status: 0x101}}}
	}
	r.run(t, c(0), c(1), c(2))
	if got := r.spooled(t); len(got.deaths) != 0 {
		t.Fatalf("dead too early: %s", got.kinds)
	}
	r.run(t, c(3))
	if got := r.spooled(t); len(got.deaths) != 1 || !strings.HasSuffix(got.deaths[0].Reason, refused.Error()) {
		t.Fatalf("deaths = %+v", got.deaths)
	}

	r = newLoopRig(t, twoPoints, "")
	lost := errors.New("opcua: session lost: EOF")
	r.run(t, sample.Cycle{Start: at(0), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 1}}},
		sample.Cycle{Start: at(0.1), Interval: time.Second, Lost: true, Err: lost,
			Samples: []sample.Sample{{Index: 0, Quality: telemetry.QualityStale}, {Index: 1, Quality: telemetry.QualityStale}}})
	got := r.spooled(t)
	if got.kinds != "dxd" || got.deaths[0].Reason != "link lost: "+lost.Error() {
		t.Fatalf("lost link: %s %+v", got.kinds, got.deaths)
	}
	if q := got.batches[1].Readings[0].Quality; q != telemetry.QualityStale {
		t.Errorf("reading on a lost link = %v, want stale", q)
	}
}

// TestUnitsFromTheNode: a point whose unit neither the configuration nor
// the catalog gives takes its node's EngineeringUnits (announced in a new
// birth); while the node gives none its readings are bad with
// normalize.StatusNoUnit, never unit-less.
func TestUnitsFromTheNode(t *testing.T) {
	r := newLoopRig(t, "", `{id: g-1, class: generic, opcua: {endpoint: "opc.tcp://127.0.0.1:1"}, points: [{signal: level, node_id: "i=1"}, {signal: flow, node_id: "i=2"}]}`)
	r.d.applyUnits([]driver.Unit{{Index: 0, UCUM: "m", UNECE: "MTR"}, {Index: 1, Absent: true, Err: errors.New("BadAttributeIdInvalid")}})
	r.run(t, sample.Cycle{Start: at(0), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 2.5}, {Index: 1, Num: 7}}})
	got := r.spooled(t)
	if got.kinds != "bd" {
		t.Fatalf("spooled %s, want a birth with the new unit then the batch", got.kinds)
	}
	level, flow := got.batches[0].Readings[0], got.batches[0].Readings[1]
	if level.Quality != telemetry.QualityGood || level.Unit != "m" || level.Value != 2.5 {
		t.Errorf("level = %+v", level)
	}
	if flow.Quality != telemetry.QualityBad || flow.Status != normalize.StatusNoUnit || flow.HasValue() {
		t.Errorf("flow = %+v, want bad with status %#x and no value", flow, normalize.StatusNoUnit)
	}
}

const unitsFromNodes = `{id: g-1, class: generic, opcua: {endpoint: "opc.tcp://127.0.0.1:1"}, points: [{signal: level, node_id: "i=1"}, {signal: flow, node_id: "i=2", unit: "m3/h"}]}`

// birthUnits is signal -> unit in a birth.
func birthUnits(b *telemetry.Birth) map[string]string {
	out := map[string]string{}
	for _, s := range b.Signals {
		out[s.Signal] = s.Unit
	}
	return out
}

// TestNodeUnitChangesTwice: a node whose unit changes twice (m, then cm,
// then mm: a server reconfigured between sessions) has each change
// announced in a new birth before the next batch, and every value
// published in the unit announced; the point with a configured unit is
// left as it is.
func TestNodeUnitChangesTwice(t *testing.T) {
	r := newLoopRig(t, "", unitsFromNodes)
	for k, st := range []struct {
		ucum string
		raw  float64
	}{{"m", 2.5}, {"cm", 250}, {"mm", 2500}} {
		r.d.applyUnits([]driver.Unit{{Index: 0, UCUM: st.ucum}, {Index: 1, UCUM: "m3/h"}})
		r.run(t, sample.Cycle{Start: at(float64(k)), Interval: time.Second, Replied: true,
			Samples: []sample.Sample{{Index: 0, Num: st.raw}, {Index: 1, Num: 7}}})
		got := r.spooled(t)
		if got.kinds != "bd" {
			t.Fatalf("change %d: spooled %s, want the birth of the new unit then the batch", k, got.kinds)
		}
		if u := birthUnits(got.birth[0]); u["level"] != st.ucum || u["flow"] != "m3/h" {
			t.Errorf("change %d: birth units %v", k, u)
		}
		level, flow := got.batches[0].Readings[0], got.batches[0].Readings[1]
		if level.Quality != telemetry.QualityGood || level.Unit != st.ucum || level.Value != st.raw {
			t.Errorf("change %d: level = %+v, want %v %s", k, level, st.raw, st.ucum)
		}
		if flow.Unit != "m3/h" || flow.Value != 7 {
			t.Errorf("change %d: flow = %+v", k, flow)
		}
	}
	// the same unit again: no new birth
	r.d.applyUnits([]driver.Unit{{Index: 0, UCUM: "mm"}, {Index: 1, UCUM: "m3/h"}})
	r.run(t, sample.Cycle{Start: at(4), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 1}}})
	if got := r.spooled(t); got.kinds != "d" || got.batches[0].Readings[0].Unit != "mm" {
		t.Fatalf("unchanged unit: spooled %s %+v", got.kinds, got.batches)
	}
}

// TestNodeUnitAfterReload: a reload compiles the configuration again and
// builds new devices; the previous generation's unit does not carry over
// (the point is bad, StatusNoUnit, until its node's unit is read again),
// and a unit changed across the reload applies exactly.
func TestNodeUnitAfterReload(t *testing.T) {
	before := newLoopRig(t, "", unitsFromNodes)
	before.d.applyUnits([]driver.Unit{{Index: 0, UCUM: "m"}})
	before.run(t, sample.Cycle{Start: at(0), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 2.5}}})
	if got := before.spooled(t); got.batches[0].Readings[0].Unit != "m" {
		t.Fatalf("before the reload: %+v", got.batches[0].Readings[0])
	}
	after := newLoopRig(t, "", unitsFromNodes)
	after.run(t, sample.Cycle{Start: at(1), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 2.5}}})
	got := after.spooled(t)
	if l := got.batches[0].Readings[0]; l.Quality != telemetry.QualityBad || l.Status != normalize.StatusNoUnit || l.HasValue() {
		t.Fatalf("after the reload, before the node's unit: %+v", l)
	}
	for _, b := range got.birth {
		if u := birthUnits(b); u["level"] != "" {
			t.Errorf("after the reload, birth unit %q before the node's", u["level"])
		}
	}
	after.d.applyUnits([]driver.Unit{{Index: 0, UCUM: "cm"}})
	after.run(t, sample.Cycle{Start: at(2), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 250}}})
	got = after.spooled(t)
	if got.kinds != "bd" || birthUnits(got.birth[0])["level"] != "cm" {
		t.Fatalf("after the reload, cm: spooled %s", got.kinds)
	}
	if l := got.batches[0].Readings[0]; l.Quality != telemetry.QualityGood || l.Unit != "cm" || l.Value != 250 {
		t.Errorf("after the reload, cm: %+v", l)
	}
	// the previous generation still reads m
	before.run(t, sample.Cycle{Start: at(3), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 1.5}}})
	if l := before.spooled(t).batches[0].Readings[0]; l.Unit != "m" || l.Value != 1.5 {
		t.Errorf("previous generation: %+v", l)
	}
}

func gaugeValue(t *testing.T, g interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// TestBirthThatCannotBeEncodedIsAnError: a nameplate value JSON cannot
// carry (NaN, past the config checks) makes the birth an error, counted and
// never spooled as an empty message.
func TestBirthThatCannotBeEncodedIsAnError(t *testing.T) {
	r := newLoopRig(t, "[{signal: power, table: holding, address: 0, type: uint16}]", "")
	a := r.d.a
	a.nameplate = map[string]float64{"rated_power": math.NaN()}
	err := a.birth(context.Background(), r.sp)
	if !errors.Is(err, errBirthEncode) {
		t.Fatalf("birth with a NaN nameplate: %v", err)
	}
	a.birthDue.Store(true)
	if a.spoolBirth(context.Background(), r.sp) || !a.birthDue.Load() {
		t.Error("an unencodable birth counted as spooled")
	}
	if got := r.sp.LastSeq() + 1 - r.first; got != 0 {
		t.Errorf("%d records spooled", got)
	}
}

// TestNodeUnitBecomesUnusable: a unit an earlier session reported never
// stays in force once the node reports one the gateway cannot use (review
// findings: "[degF] then an unknown unit kept degF", "an unmappable unit on
// a catalog point was taken as the catalog unit, good"). A point of a class
// without catalog unit goes bad (StatusNoUnit) with a birth that drops the
// unit; a catalog point is bad for a unit with no UCUM equivalent or one
// that does not convert, and in the catalog unit only when the node gives
// no units at all; a usable unit applies again exactly.
func TestNodeUnitBecomesUnusable(t *testing.T) {
	noUnit := func(t *testing.T, what string, r telemetry.Reading) {
		t.Helper()
		if r.Quality != telemetry.QualityBad || r.Status != normalize.StatusNoUnit || r.HasValue() {
			t.Errorf("%s: %+v, want bad with StatusNoUnit and no value", what, r)
		}
	}
	t.Run("generic", func(t *testing.T) {
		r := newLoopRig(t, "", unitsFromNodes)
		r.d.applyUnits([]driver.Unit{{Index: 0, UCUM: "[degF]"}})
		r.run(t, sample.Cycle{Start: at(0), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 77}}})
		if got := r.spooled(t); got.batches[0].Readings[0].Unit != "[degF]" || got.batches[0].Readings[0].Quality != telemetry.QualityGood {
			t.Fatalf("[degF]: %+v", got.batches[0].Readings[0])
		}
		for k, nu := range []driver.Unit{{Index: 0, UCUM: "[fur_us]"}, {Index: 0, Absent: true}, {Index: 0, UNECE: "XYZ", Display: "furlong"}} {
			r.d.applyUnits([]driver.Unit{{Index: 0, UCUM: "[degF]"}}) // back to a usable unit first
			r.run(t, sample.Cycle{Start: at(float64(2 * k)), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 77}}})
			r.spooled(t)
			r.d.applyUnits([]driver.Unit{nu})
			r.run(t, sample.Cycle{Start: at(float64(2*k + 1)), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 77}}})
			got := r.spooled(t)
			if got.kinds != "bd" || birthUnits(got.birth[0])["level"] != "" {
				t.Errorf("%+v: spooled %s, want a birth without the unit, then the batch", nu, got.kinds)
			}
			noUnit(t, fmt.Sprintf("%+v", nu), got.batches[0].Readings[0])
		}
	})
	t.Run("catalog", func(t *testing.T) {
		r := newLoopRig(t, "", `{id: bf-1, class: blast_furnace, opcua: {endpoint: "opc.tcp://127.0.0.1:1"}, points: [{signal: hot_blast_temp, node_id: "i=1"}]}`)
		degF := func(k float64) {
			t.Helper()
			r.d.applyUnits([]driver.Unit{{Index: 0, UCUM: "[degF]"}})
			r.run(t, sample.Cycle{Start: at(k), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 1832}}})
			if l := r.spooled(t).batches[0].Readings[0]; l.Quality != telemetry.QualityGood || l.Unit != "Cel" || math.Abs(l.Value-1000) > 1e-9 {
				t.Fatalf("[degF] 1832: %+v, want 1000 Cel good", l)
			}
		}
		for k, nu := range []driver.Unit{{Index: 0, UNECE: "XYZ", Display: "furlong"}, {Index: 0, UCUM: "m"}} {
			degF(float64(2 * k))
			r.d.applyUnits([]driver.Unit{nu})
			r.run(t, sample.Cycle{Start: at(float64(2*k + 1)), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 1100}}})
			noUnit(t, fmt.Sprintf("%+v", nu), r.spooled(t).batches[0].Readings[0])
		}
		// no units at all on the node: the documented fallback, the catalog unit, not the old [degF]
		degF(10)
		r.d.applyUnits([]driver.Unit{{Index: 0, Absent: true}})
		r.run(t, sample.Cycle{Start: at(11), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 1100}}})
		if l := r.spooled(t).batches[0].Readings[0]; l.Quality != telemetry.QualityGood || l.Unit != "Cel" || l.Value != 1100 {
			t.Errorf("no units on the node after [degF]: %+v, want 1100 Cel (the catalog unit) good", l)
		}
	})
}

// TestNodeUnitPresentButUnusable (review1 sec. 2): a catalog point (kPa)
// whose node gives unitId -1 ("not available") with DisplayName bar, as
// the OPC UA driver reports it, is converted from bar; EngineeringUnits
// that are there but unusable (a String) make its values bad with
// StatusNoUnit, never the catalog unit; only a node without
// EngineeringUnits (here a Null value) is taken in the catalog unit; an
// unusable EURange leaves the unit in force.
func TestNodeUnitPresentButUnusable(t *testing.T) {
	r := newLoopRig(t, "", `{id: bf-1, class: blast_furnace, opcua: {endpoint: "opc.tcp://127.0.0.1:1"}, points: [{signal: top_pressure, node_id: "i=1"}]}`)
	for k, tc := range []struct {
		nu      driver.Unit
		quality telemetry.Quality
		value   float64
	}{
		{driver.Unit{Index: 0, UCUM: "bar", Display: "bar"}, telemetry.QualityGood, 250},
		{driver.Unit{Index: 0, Err: errors.New("EngineeringUnits: a String, not an EUInformation")}, telemetry.QualityBad, 0},
		{driver.Unit{Index: 0, Display: "furlong"}, telemetry.QualityBad, 0},
		{driver.Unit{Index: 0, Absent: true, AbsentHow: "EngineeringUnits is Null"}, telemetry.QualityGood, 2.5},
		{driver.Unit{Index: 0, UCUM: "bar", RangeErr: "EURange: not a Range (status 0x00000000)"}, telemetry.QualityGood, 250},
	} {
		r.d.applyUnits([]driver.Unit{tc.nu})
		r.run(t, sample.Cycle{Start: at(float64(k)), Interval: time.Second, Replied: true, Samples: []sample.Sample{{Index: 0, Num: 2.5}}})
		l := r.spooled(t).batches[0].Readings[0]
		if l.Quality != tc.quality || (tc.quality == telemetry.QualityBad && (l.Status != normalize.StatusNoUnit || l.HasValue())) ||
			(tc.quality != telemetry.QualityBad && (l.Unit != "kPa" || math.Abs(l.Value-tc.value) > 1e-9)) {
			t.Errorf("%+v: 2.5 published as %+v, want %v %v kPa", tc.nu, l, tc.quality, tc.value)
		}
	}
}

// TestNodeUnitLogsAreBounded (review1 sec. 5): a server that flips a unit
// on every read costs one line per point at once, then at most one a
// minute with a count; every point's first report is logged.
func TestNodeUnitLogsAreBounded(t *testing.T) {
	r := newLoopRig(t, "", `{id: bf-1, class: blast_furnace, opcua: {endpoint: "opc.tcp://127.0.0.1:1"}, points: [{signal: top_pressure, node_id: "i=1"}, {signal: blast_pressure, node_id: "i=2"}]}`)
	var buf logtest.Buffer
	r.d.log = buf.Logger(slog.LevelInfo)
	bad := driver.Unit{Index: 0, Err: errors.New("EngineeringUnits: a String, not an EUInformation")}
	r.d.applyUnits([]driver.Unit{bad, {Index: 1, Absent: true, AbsentHow: "no EngineeringUnits property"}})
	for range 100 {
		r.d.applyUnits([]driver.Unit{{Index: 0, UCUM: "bar"}})
		r.d.applyUnits([]driver.Unit{bad})
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "cannot be used") || !strings.Contains(lines[0], `node_unit="unusable (EngineeringUnits: a String, not an EUInformation)"`) ||
		!strings.Contains(lines[1], `node_unit="none (no EngineeringUnits property)"`) {
		t.Fatalf("%d lines, want the first report of each point:\n%s", len(lines), buf.String())
	}
}

// TestNodeUnitAppliedIsLogged (review 3, I): a node whose unit is
// converted, or whose EURange rules out nothing, is logged with the unit
// applied; a node in the published unit with a finite range is not (no
// line per point at every start).
func TestNodeUnitAppliedIsLogged(t *testing.T) {
	for _, tc := range []struct {
		nu   driver.Unit
		want string // "" : no line
	}{
		{driver.Unit{Index: 0, UCUM: "bar", Display: "bar"}, `node_unit=bar unit=kPa`},
		{driver.Unit{Index: 0, UCUM: "kPa", HasRange: true, Min: math.NaN(), Max: math.NaN()}, `range=NaN..NaN`},
		{driver.Unit{Index: 0, UCUM: "kPa", HasRange: true, Min: 0, Max: 320}, ""},
	} {
		r := newLoopRig(t, "", `{id: bf-1, class: blast_furnace, opcua: {endpoint: "opc.tcp://127.0.0.1:1"}, points: [{signal: top_pressure, node_id: "i=1"}]}`)
		var buf logtest.Buffer
		r.d.log = buf.Logger(slog.LevelInfo)
		r.d.applyUnits([]driver.Unit{tc.nu})
		got := buf.String()
		switch {
		case tc.want == "" && got != "":
			t.Errorf("%+v: logged %q, want nothing", tc.nu, got)
		case tc.want != "" && (!strings.Contains(got, "node's engineering units applied") || !strings.Contains(got, tc.want)):
			t.Errorf("%+v: logged %q, want the applied units with %s", tc.nu, got, tc.want)
		}
	}
}
