// Package kpi computes the energy-efficiency KPIs of every equipment class
// over tumbling time windows, from readings plus the nameplate ratings of the
// asset birth, and raises efficiency alerts when a KPI crosses its limit.
// Formulas and their sources are documented in docs/rules.md. A KPI takes
// only values the rules accept: good quality, finite and inside the
// signal's plausible range (see Config.Range). The package is pure (no I/O)
// and not safe for concurrent use.
package kpi

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Schema is the schema identifier of published KPI messages.
const Schema = "smelter.kpi/1"

// Config sets the windows and limits.
type Config struct {
	Window      time.Duration            // default window; 15m when zero
	Windows     map[string]time.Duration // per class
	MinCoverage float64                  // fraction of the window that must hold data; default 0.5
	MaxGap      time.Duration            // longest gap integrated as held data; default 60s

	// Catalog gives the plausible range of every signal (the catalog's
	// min/max, overridden by the asset birth's); nil: catalog.Default().
	Catalog *catalog.Catalog
	// Range, when set, overrides the plausible range of a signal of an
	// asset where it returns ok (the rules' plausibility rule min/max; a
	// nil end is open), so KPIs gate values exactly as the rules do.
	Range func(class, asset, signal string) (lo, hi *float64, ok bool)
}

// Validate checks the configuration. The error lists every problem, one
// "field: reason" per line (errors.Join), fields named as in the
// collector's kpi: block.
func (c *Config) Validate() error {
	var errs []error
	if c.Window < 0 {
		errs = append(errs, fmt.Errorf("kpi.window: %v must not be negative", c.Window))
	}
	for _, cl := range slices.Sorted(maps.Keys(c.Windows)) {
		w := c.Windows[cl]
		if _, ok := classes[cl]; !ok {
			errs = append(errs, fmt.Errorf("kpi.windows.%s: no KPIs for this class (KPI classes: %s)", cl, strings.Join(Classes(), ", ")))
			continue
		}
		if w < time.Minute {
			errs = append(errs, fmt.Errorf("kpi.windows.%s: %v is shorter than 1m", cl, w))
		}
	}
	if c.MinCoverage < 0 || c.MinCoverage > 1 {
		errs = append(errs, fmt.Errorf("kpi.min_coverage: %v must be within 0..1", c.MinCoverage))
	}
	return errors.Join(errs...)
}

// Classes returns the equipment classes with KPIs, sorted.
func Classes() []string { return slices.Sorted(maps.Keys(classes)) }

// Status of a KPI against its limit.
const (
	StatusOK   = "ok"
	StatusLow  = "low"  // below its lower limit
	StatusHigh = "high" // above its upper limit
	StatusNA   = "n/a"  // not enough data or nameplate to judge
)

// Value is one KPI of one window.
type Value struct {
	Name    string   `json:"name"`
	Value   float64  `json:"value"`
	Unit    string   `json:"unit,omitempty"`
	Ref     *float64 `json:"ref,omitempty"`   // rated or expected value
	Limit   *float64 `json:"limit,omitempty"` // the limit the status was judged against
	Status  string   `json:"status"`
	Message string   `json:"message,omitempty"`
}

// Result is every KPI of one asset for one window.
type Result struct {
	Schema   string  `json:"schema"`
	Site     string  `json:"site"`
	Class    string  `json:"class"`
	Asset    string  `json:"asset"`
	Start    int64   `json:"start"`
	End      int64   `json:"end"`
	Coverage float64 `json:"coverage"`
	KPIs     []Value `json:"kpis"`
	// Group is the collector group that published the result (set on
	// publication, as alert.Alert.Group).
	Group string `json:"group,omitempty"`
}

const nAcc = 16

type acc [nAcc]float64

// classDef is one class's KPI definition: which signals it reads, how one
// held sample is integrated over dt seconds, and how a window is judged.
type classDef struct {
	signals []string
	add     func(v *sample, a *acc, dt float64, np map[string]float64)
	finish  func(f *finisher, a *acc)
	// keep, when above 0, is the first accumulator slot that carries over
	// from one window to the next (state longer than a window, such as a
	// ship's voyage leg); slots below it start every window at zero.
	keep int
}

// input returns the position of signal name among the class's inputs. A
// scan of the class's few names (shared by all its assets, so in the
// cache) instead of a map per asset, which with thousands of assets was a
// cache miss per reading.
func (d *classDef) input(name string) (int, bool) {
	for i, s := range d.signals {
		if s == name {
			return i, true
		}
	}
	return 0, false
}

type sample struct {
	v  []float64
	ok []bool
}

func (s *sample) get(i int) (float64, bool) { return s.v[i], s.ok[i] }

// Tracker keeps the per-asset windows.
type Tracker struct {
	cfg    Config
	assets map[[2]string]*assetAcc
	stats  Stats
}

// Stats counts computations.
type Stats struct {
	Windows  uint64 // windows finished with a result
	Rejected uint64 // readings of KPI inputs not taken (not good, not finite or implausible)
	Raised   uint64
	Cleared  uint64
}

type assetAcc struct {
	site, id, class string
	def             *classDef
	s               sample
	lo, hi          []*float64 // plausible range per signal, nil: open
	np              map[string]float64
	win             int64
	start           int64
	lastTS          int64
	covered         float64
	a               acc
	latches         map[string]*alert.Latch
	last            *Result
	// gone: replaced in the tracker by an entry of another class (asset):
	// a Handle to it is stale
	gone bool
}

// New returns a tracker.
func New(cfg Config) *Tracker {
	if cfg.Window == 0 {
		cfg.Window = 15 * time.Minute
	}
	if cfg.MinCoverage == 0 {
		cfg.MinCoverage = 0.5
	}
	if cfg.MaxGap == 0 {
		cfg.MaxGap = time.Minute
	}
	if cfg.Catalog == nil {
		cfg.Catalog = catalog.Default()
	}
	return &Tracker{cfg: cfg, assets: map[[2]string]*assetAcc{}}
}

// Stats returns the counters.
func (t *Tracker) Stats() Stats { return t.stats }

func (t *Tracker) asset(site, id, class string) *assetAcc {
	k := [2]string{site, id}
	old, ok := t.assets[k]
	if ok && old.class == class {
		return old
	}
	def, ok := classes[class]
	if !ok {
		return nil
	}
	if old != nil {
		old.gone = true
	}
	w := t.cfg.Window
	if cw, ok := t.cfg.Windows[class]; ok {
		w = cw
	}
	site, id, class = strings.Clone(site), strings.Clone(id), strings.Clone(class) // not views into a payload
	k = [2]string{site, id}
	a := &assetAcc{site: site, id: id, class: class, def: def, np: map[string]float64{},
		win: w.Milliseconds(), latches: map[string]*alert.Latch{}}
	a.s = sample{v: make([]float64, len(def.signals)), ok: make([]bool, len(def.signals))}
	a.lo, a.hi = make([]*float64, len(def.signals)), make([]*float64, len(def.signals))
	t.ranges(a, nil)
	t.assets[k] = a
	return a
}

// ranges sets the plausible range of every KPI input of a, in the order
// the rules engine applies them: the catalog, then the birth (when given),
// then Config.Range.
func (t *Tracker) ranges(a *assetAcc, birth []telemetry.SignalInfo) {
	for i, name := range a.def.signals {
		a.lo[i], a.hi[i] = nil, nil
		if cs, err := t.cfg.Catalog.Lookup(a.class, name); err == nil {
			a.lo[i], a.hi[i] = cs.Min, cs.Max
		}
	}
	for _, si := range birth {
		if i, ok := a.def.input(si.Signal); ok {
			if si.Min != nil {
				a.lo[i] = si.Min
			}
			if si.Max != nil {
				a.hi[i] = si.Max
			}
		}
	}
	if t.cfg.Range == nil {
		return
	}
	for i, name := range a.def.signals {
		if lo, hi, ok := t.cfg.Range(a.class, a.id, name); ok {
			if lo != nil {
				a.lo[i] = lo
			}
			if hi != nil {
				a.hi[i] = hi
			}
		}
	}
}

// accept reports whether reading r may feed input i of a: good quality
// (uncertain, bad and stale never do), a numeric value, finite and inside
// the plausible range.
func (a *assetAcc) accept(i int, r *telemetry.Reading) bool {
	v := r.Value
	return r.Quality == telemetry.QualityGood && !r.NoValue && !math.IsNaN(v) && !math.IsInf(v, 0) &&
		(a.lo[i] == nil || v >= *a.lo[i]) && (a.hi[i] == nil || v <= *a.hi[i])
}

// Birth records the nameplate of an asset. A birth that lists signals
// replaces the asset's signal list: the held value of an input it does
// not list (a point removed from the gateway's configuration) is dropped,
// so it no longer feeds the asset's KPIs.
func (t *Tracker) Birth(b *telemetry.Birth) {
	as := b.Asset.FromJSON()
	a := t.asset(as.Site(), as.ID, as.Class)
	if a == nil {
		return
	}
	clear(a.np)
	for k, v := range b.Nameplate {
		a.np[k] = v
	}
	t.ranges(a, b.Signals)
	if len(b.Signals) == 0 {
		return // nameplate only: no signal list
	}
	for i, name := range a.def.signals {
		if !slices.ContainsFunc(b.Signals, func(si telemetry.SignalInfo) bool { return si.Signal == name }) {
			a.s.ok[i], a.s.v[i] = false, 0
		}
	}
}

// Handle is a caller's reference to an asset's entry in a Tracker
// (ProcessAt): it spares the map lookup by site and id on the asset's next
// batches. The zero Handle refers to nothing. It goes stale when the
// asset's entry is replaced by one of another class (ProcessAt then looks
// the asset up again); a caller that restores the asset (RestoreAsset)
// must start from a zero Handle. Not safe for concurrent use.
type Handle struct {
	a *assetAcc
	// none is a class without KPIs the asset's batches had last (a nil
	// a): its batches do not look the asset up again while it stays
	none string
}

// ref returns the entry of the asset (site, id) of class (nil: a class
// without KPIs) through h, looking it up when h is zero, stale or of
// another class.
func (t *Tracker) ref(h *Handle, site, id, class string) *assetAcc {
	if a := h.a; a != nil {
		if !a.gone && a.class == class {
			return a
		}
	} else if h.none != "" && h.none == class {
		return nil
	}
	a := t.asset(site, id, class)
	h.a, h.none = a, ""
	if a == nil {
		h.none = strings.Clone(class) // not a view into a payload
	}
	return a
}

// Process integrates one batch. When the batch starts a new window, the
// finished window's Result and any efficiency alert changes are appended.
func (t *Tracker) Process(b *telemetry.Batch, results []Result, alerts []alert.Alert) ([]Result, []alert.Alert) {
	var h Handle
	return t.ProcessAt(&h, b, results, alerts)
}

// ProcessAt is Process with h, the handle of the batch's asset: filled on
// the asset's first batch (or when stale), it spares the lookup after.
func (t *Tracker) ProcessAt(h *Handle, b *telemetry.Batch, results []Result, alerts []alert.Alert) ([]Result, []alert.Alert) {
	a := t.ref(h, b.Asset.Site(), b.Asset.ID, b.Asset.Class)
	if a == nil || b.TSGW < a.lastTS {
		return results, alerts
	}
	ts := b.TSGW
	if a.start == 0 {
		a.start = ts - ts%a.win
	}
	if ts >= a.start+a.win {
		results, alerts = t.finish(a, results, alerts)
		a.start = ts - ts%a.win
		a.lastTS = 0
	}
	// integrate the held sample over the gap since the previous batch
	if a.lastTS > 0 {
		dtMS := min(ts-a.lastTS, t.cfg.MaxGap.Milliseconds())
		if dtMS > 0 {
			a.def.add(&a.s, &a.a, float64(dtMS)/1000, a.np)
			a.covered += float64(dtMS)
		}
	}
	for i := range b.Readings {
		r := &b.Readings[i]
		j, ok := a.def.input(r.Signal)
		if !ok {
			continue
		}
		// a value the rules would not take replaces the held one by "no
		// value": it never enters a KPI
		a.s.ok[j] = a.accept(j, r)
		a.s.v[j] = r.Value
		if !a.s.ok[j] {
			t.stats.Rejected++
		}
	}
	a.lastTS = ts
	return results, alerts
}

func (t *Tracker) finish(a *assetAcc, results []Result, alerts []alert.Alert) ([]Result, []alert.Alert) {
	res := Result{Schema: Schema, Site: a.site, Class: a.class, Asset: a.id, Start: a.start, End: a.start + a.win,
		Coverage: a.covered / float64(a.win)}
	f := &finisher{a: a, dur: a.covered / 1000}
	a.def.finish(f, &a.a)
	res.KPIs = f.vals
	judge := res.Coverage >= t.cfg.MinCoverage
	for i := range res.KPIs {
		v := &res.KPIs[i]
		if !judge && v.Status != StatusNA {
			v.Status, v.Message = StatusNA, ""
		}
		l := a.latches[v.Name]
		if l == nil {
			l = &alert.Latch{}
			a.latches[v.Name] = l
		}
		if v.Status == StatusNA {
			continue
		}
		tgt := alert.None
		if v.Status == StatusLow || v.Status == StatusHigh {
			tgt = alert.Warn
			if f.info[v.Name] {
				tgt = alert.Info
			}
		}
		prev := l.Level
		if l.Step(tgt, res.End, 0, 0) {
			al := alert.Alert{Schema: alert.Schema, Key: alert.MakeKey(a.site, a.id, "kpi_"+v.Name, ""), Site: a.site,
				Class: a.class, Asset: a.id, Rule: "kpi_" + v.Name, Kind: "kpi", Severity: l.Level, RaisedAt: l.Raised,
				UpdatedAt: l.At(res.End), Values: map[string]float64{v.Name: v.Value}, Message: v.Message}
			if v.Limit != nil {
				al.Values["limit"] = *v.Limit
			}
			switch {
			case l.Level == alert.None:
				al.State, al.Severity, al.ClearedAt = alert.Cleared, prev, res.End
				al.Message = fmt.Sprintf("cleared: %s %s %s is %s %s again", a.class, a.id, v.Name, fv(v.Value), v.Unit)
				t.stats.Cleared++
			case prev == alert.None:
				al.State = alert.Raised
				t.stats.Raised++
			default:
				al.State = alert.Updated
			}
			al.ID = alert.MakeID(al.Key, al.RaisedAt)
			alerts = append(alerts, al)
		}
	}
	t.stats.Windows++
	a.last = &res
	results = append(results, res)
	if k := a.def.keep; k > 0 {
		var next acc
		copy(next[k:], a.a[k:])
		a.a = next
	} else {
		a.a = acc{}
	}
	a.covered = 0
	return results, alerts
}

// Restore re-arms a persisted active KPI alert after a restart.
func (t *Tracker) Restore(al alert.Alert) bool {
	if al.Kind != "kpi" || !al.Active() {
		return false
	}
	a := t.asset(al.Site, al.Asset, al.Class)
	if a == nil {
		return false
	}
	name := al.Rule[len("kpi_"):]
	l := &alert.Latch{}
	l.Restore(al.Severity, al.RaisedAt)
	a.latches[name] = l
	return true
}

// Last returns the latest finished window of an asset.
func (t *Tracker) Last(site, id string) (Result, bool) {
	a, ok := t.assets[[2]string{site, id}]
	if !ok || a.last == nil {
		return Result{}, false
	}
	r := *a.last
	r.KPIs = append([]Value(nil), r.KPIs...)
	return r, true
}

// finisher collects a window's values.
type finisher struct {
	a    *assetAcc
	dur  float64 // seconds of data
	vals []Value
	info map[string]bool
}

func (f *finisher) np(k string) (float64, bool) {
	v, ok := f.a.np[k]
	return v, ok && v != 0
}

func (f *finisher) who() string { return f.a.class + " " + f.a.id }

// add appends a KPI. lo/hi are limits (nil = none); msg formats the alert
// message when the value is out of limits.
func (f *finisher) add(name string, v float64, unit string, ref *float64, lo, hi *float64, msg func() string) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		f.vals = append(f.vals, Value{Name: name, Unit: unit, Status: StatusNA})
		return
	}
	val := Value{Name: name, Value: round(v), Unit: unit, Ref: ref, Status: StatusOK}
	switch {
	case lo != nil && v < *lo:
		val.Status, val.Limit = StatusLow, lo
	case hi != nil && v > *hi:
		val.Status, val.Limit = StatusHigh, hi
	case lo != nil:
		val.Limit = lo
	case hi != nil:
		val.Limit = hi
	}
	if val.Status != StatusOK && msg != nil {
		val.Message = msg()
	}
	f.vals = append(f.vals, val)
}

func (f *finisher) na(name, unit string) {
	f.vals = append(f.vals, Value{Name: name, Unit: unit, Status: StatusNA})
}

func (f *finisher) markInfo(name string) {
	if f.info == nil {
		f.info = map[string]bool{}
	}
	f.info[name] = true
}

func p(v float64) *float64 { return &v }

func round(v float64) float64 {
	if v == 0 {
		return 0
	}
	s, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 6, 64), 64)
	return s
}

func fv(x float64) string { return strconv.FormatFloat(x, 'g', 3, 64) }

func pct(x float64) string { return strconv.FormatFloat(x*100, 'f', 0, 64) + " %" }
