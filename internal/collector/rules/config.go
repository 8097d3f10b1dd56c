package rules

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/confload"
)

// Kind is a rule kind.
type Kind string

// Rule kinds.
const (
	KindStale        Kind = "stale"
	KindPlausibility Kind = "plausibility"
	KindThreshold    Kind = "threshold"
	KindRate         Kind = "rate"
	KindStuck        Kind = "stuck"
	KindEWMA         Kind = "ewma"
	KindZScore       Kind = "zscore"
	KindCUSUM        Kind = "cusum"
	KindExpr         Kind = "expr"
	KindPeer         Kind = "peer"
)

// Level is one severity step of a threshold rule.
type Level struct {
	Severity alert.Severity
	Limit    float64
}

// Rule is one validated rule definition. Times are in milliseconds.
type Rule struct {
	Name     string
	Kind     Kind
	Class    string   // "*" for every class
	Assets   []string // empty: every asset of the class
	Signal   string   // exact name, glob or "*"; empty for expr rules
	Severity alert.Severity
	Enabled  bool
	Running  bool  // evaluate only while the asset runs
	When     *Expr // guard: evaluate only while true
	OnDelay  int64
	OffDelay int64

	// threshold
	Levels   []Level // ascending severity
	Below    bool    // levels are lower limits
	Deadband float64
	// stale
	K        float64
	Interval int64
	// plausibility
	Min, Max *float64
	// rate
	Window    int64
	Limit     float64
	Direction string  // rise | fall | both
	Wrap      float64 // > 0: the signal is an angle modulo Wrap (360 for a longitude): changes are the shortest way round
	// stuck
	Polls      int
	Resolution float64
	MinSpan    int64 // ms of data time the window covers at least (0: Polls readings only)
	// ewma, zscore, cusum
	Lambda   float64
	L        float64
	Warmup   int
	Baseline int // samples of memory of the adaptive baseline (0 = frozen after warmup)
	MinSigma float64
	CusumK   float64
	CusumH   float64
	N        int
	// expr
	Expr      *Expr
	ClearWhen *Expr
	// peer
	GroupBy  string
	Ratio    float64
	MinPeers int
	MaxAge   int64

	File string
	Line int
}

// specificity ranks rules that share a name: an asset list beats a class,
// a class beats "*", an exact signal beats a glob.
func (r *Rule) specificity() int {
	s := 0
	if len(r.Assets) > 0 {
		s += 8
	}
	if r.Class != "*" {
		s += 4
	}
	switch {
	case r.Signal == "" || r.Signal == "*":
	case strings.ContainsAny(r.Signal, "*?["):
		s++
	default:
		s += 2
	}
	return s
}

func (r *Rule) matchesAsset(class, asset string) bool {
	if r.Class != "*" && r.Class != class {
		return false
	}
	return len(r.Assets) == 0 || slices.Contains(r.Assets, asset)
}

func (r *Rule) matchesSignal(sig string) bool {
	if r.Signal == "*" || r.Signal == sig {
		return true
	}
	ok, _ := path.Match(r.Signal, sig)
	return ok
}

// signalLevel reports whether the rule is evaluated per signal (as opposed
// to once per asset batch).
func (r *Rule) signalLevel() bool { return r.Kind != KindExpr }

// File is one parsed rule file.
type File struct {
	Name    string
	Rules   []*Rule
	Running map[string]*Expr // class -> running definition
}

// Set is the merged, validated rule set the engine runs.
type Set struct {
	Rules   []*Rule
	Running map[string]*Expr
}

//go:embed packs/*.yaml
var packFS embed.FS

// DefaultPacks returns the embedded per-class default rule packs.
func DefaultPacks(cat *catalog.Catalog) ([]*File, error) {
	entries, err := fs.ReadDir(packFS, "packs")
	if err != nil {
		return nil, fmt.Errorf("rules: default packs: %w", err)
	}
	var out []*File
	for _, e := range entries {
		data, err := packFS.ReadFile("packs/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("rules: default packs: %w", err)
		}
		f, err := Parse("packs/"+e.Name(), data, cat)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// LoadFile reads and parses a rule file.
func LoadFile(name string, cat *catalog.Catalog) (*File, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return Parse(name, data, cat)
}

// Merge combines files in order; rules with the same name and the same
// selection replace earlier ones, and a later running definition of a class
// replaces an earlier one. Rules named alike with different selections
// coexist and the most specific wins per asset and signal.
func Merge(files ...*File) *Set {
	s := &Set{Running: map[string]*Expr{}}
	type key struct{ name, class, assets, signal string }
	idx := map[key]int{}
	for _, f := range files {
		for c, e := range f.Running {
			s.Running[c] = e
		}
		for _, r := range f.Rules {
			k := key{r.Name, r.Class, strings.Join(r.Assets, ","), r.Signal}
			if i, ok := idx[k]; ok {
				s.Rules[i] = r
				continue
			}
			idx[k] = len(s.Rules)
			s.Rules = append(s.Rules, r)
		}
	}
	return s
}

// Select returns the enabled rules that apply to one signal of an asset,
// the most specific of each name. Pass signal "" for asset-level rules.
func (s *Set) Select(class, asset, signal string) []*Rule {
	best := map[string]*Rule{}
	var order []string
	for _, r := range s.Rules {
		if !r.matchesAsset(class, asset) {
			continue
		}
		if signal == "" {
			if r.signalLevel() && r.Kind != KindPeer {
				continue
			}
			if r.Kind == KindPeer {
				continue
			}
		} else if !r.signalLevel() || !r.matchesSignal(signal) {
			continue
		}
		b, ok := best[r.Name]
		if !ok {
			order = append(order, r.Name)
		}
		if !ok || r.specificity() >= b.specificity() {
			best[r.Name] = r
		}
	}
	out := make([]*Rule, 0, len(order))
	for _, n := range order {
		if r := best[n]; r.Enabled {
			out = append(out, r)
		}
	}
	return out
}

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// common fields valid for every kind.
var commonFields = []string{"name", "kind", "class", "assets", "signal", "severity", "enabled", "running", "when",
	"on_delay", "off_delay", "description"}

var kindFields = map[Kind][]string{
	KindStale:        {"k", "interval"},
	KindPlausibility: {"min", "max"},
	KindThreshold:    {"levels", "above", "below", "deadband"},
	KindRate:         {"window", "limit", "direction", "wrap"},
	KindStuck:        {"polls", "resolution", "min_span"},
	KindEWMA:         {"lambda", "l", "warmup", "baseline", "min_sigma"},
	KindZScore:       {"n", "limit", "min_sigma"},
	KindCUSUM:        {"k", "h", "warmup", "baseline", "min_sigma"},
	KindExpr:         {"expr", "clear_when"},
	KindPeer:         {"group_by", "ratio", "min_peers", "max_age"},
}

type parser struct {
	file string
	cat  *catalog.Catalog
}

// errf reports a problem at n as a confload.FieldError ("file:line: reason"),
// the form of every configuration error.
func (p *parser) errf(n *yaml.Node, format string, a ...any) error {
	return &confload.FieldError{File: p.file, Line: n.Line, Reason: fmt.Sprintf(format, a...)}
}

// Parse decodes a rule file. Errors name the file, the line and the field.
func Parse(file string, data []byte, cat *catalog.Catalog) (*File, error) {
	p := &parser{file: file, cat: cat}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, confload.YAMLErrors(file, err)
	}
	f := &File{Name: file, Running: map[string]*Expr{}}
	if len(doc.Content) == 0 {
		return f, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, p.errf(root, "rule file must be a mapping with version, classes and rules")
	}
	seenVersion := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "version":
			seenVersion = true
			if v.Value != "1" {
				return nil, p.errf(v, "version: %q not supported (want 1)", v.Value)
			}
		case "classes":
			if err := p.classes(v, f); err != nil {
				return nil, err
			}
		case "rules":
			if v.Kind != yaml.SequenceNode {
				return nil, p.errf(v, "rules: must be a list")
			}
			names := map[string]int{}
			for j, rn := range v.Content {
				r, err := p.rule(rn, j)
				if err != nil {
					return nil, err
				}
				id := r.Name + "|" + r.Class + "|" + strings.Join(r.Assets, ",") + "|" + r.Signal
				if prev, dup := names[id]; dup {
					return nil, p.errf(rn, "rules[%d]: rule %q duplicates the one on line %d", j, r.Name, prev)
				}
				names[id] = rn.Line
				f.Rules = append(f.Rules, r)
			}
		default:
			return nil, p.errf(k, "unknown field %q (want version, classes, rules)", k.Value)
		}
	}
	if !seenVersion {
		return nil, p.errf(root, "version: missing (want 1)")
	}
	return f, nil
}

func (p *parser) classes(v *yaml.Node, f *File) error {
	if v.Kind != yaml.MappingNode {
		return p.errf(v, "classes: must be a mapping of class name to settings")
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		cn, cv := v.Content[i], v.Content[i+1]
		if _, ok := p.cat.Class(cn.Value); !ok {
			return p.errf(cn, "classes.%s: unknown equipment class (known: %s)", cn.Value, strings.Join(p.cat.ClassNames(), ", "))
		}
		if cv.Kind != yaml.MappingNode {
			return p.errf(cv, "classes.%s: must be a mapping", cn.Value)
		}
		for j := 0; j+1 < len(cv.Content); j += 2 {
			k, val := cv.Content[j], cv.Content[j+1]
			if k.Value != "running" {
				return p.errf(k, "classes.%s.%s: unknown field (want running)", cn.Value, k.Value)
			}
			e, err := p.expr(val, cn.Value, "classes."+cn.Value+".running")
			if err != nil {
				return err
			}
			f.Running[cn.Value] = e
		}
	}
	return nil
}

func (p *parser) expr(v *yaml.Node, class, field string) (*Expr, error) {
	if v.Kind != yaml.ScalarNode || v.Value == "" {
		return nil, p.errf(v, "%s: must be an expression string", field)
	}
	e, err := ParseExpr(v.Value)
	if err != nil {
		return nil, p.errf(v, "%s: %v", field, err)
	}
	if class != "*" {
		cl, _ := p.cat.Class(class)
		for _, id := range e.idents {
			if strings.HasPrefix(id, "nameplate.") || cl.Open {
				continue
			}
			if strings.Contains(id, "*") {
				if !slices.ContainsFunc(cl.SignalNames(), func(s string) bool { ok, _ := path.Match(id, s); return ok }) {
					return nil, p.errf(v, "%s: glob %q matches no signal of class %s", field, id, class)
				}
				continue
			}
			if _, ok := cl.Signals[id]; !ok {
				return nil, p.errf(v, "%s: class %s has no signal %q (known: %s)", field, class, id, strings.Join(cl.SignalNames(), ", "))
			}
		}
	}
	return e, nil
}

func (p *parser) float(v *yaml.Node, field string) (float64, error) {
	if v.Kind != yaml.ScalarNode {
		return 0, p.errf(v, "%s: must be a number", field)
	}
	f, err := strconv.ParseFloat(v.Value, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, p.errf(v, "%s: %q is not a finite number", field, v.Value)
	}
	return f, nil
}

func (p *parser) integer(v *yaml.Node, field string, min int) (int, error) {
	if v.Kind != yaml.ScalarNode {
		return 0, p.errf(v, "%s: must be an integer", field)
	}
	n, err := strconv.Atoi(v.Value)
	if err != nil {
		return 0, p.errf(v, "%s: %q is not an integer", field, v.Value)
	}
	if n < min {
		return 0, p.errf(v, "%s: %d is below the minimum %d", field, n, min)
	}
	return n, nil
}

func (p *parser) duration(v *yaml.Node, field string) (int64, error) {
	if v.Kind != yaml.ScalarNode {
		return 0, p.errf(v, "%s: must be a duration such as 30s or 10m", field)
	}
	d, err := time.ParseDuration(v.Value)
	if err != nil || d < 0 {
		return 0, p.errf(v, "%s: %q is not a non-negative duration such as 30s or 10m", field, v.Value)
	}
	return d.Milliseconds(), nil
}

func (p *parser) boolean(v *yaml.Node, field string) (bool, error) {
	var b bool
	if v.Kind != yaml.ScalarNode || v.Decode(&b) != nil {
		return false, p.errf(v, "%s: must be true or false", field)
	}
	return b, nil
}

func (p *parser) severity(v *yaml.Node, field string) (alert.Severity, error) {
	s, err := alert.ParseSeverity(v.Value)
	if err != nil {
		return 0, p.errf(v, "%s: %v", field, err)
	}
	return s, nil
}

// maxMinSpan bounds a stuck rule's min_span (ms): a sensor flat for a day
// is stuck by any measure; longer windows only delay the alert.
const maxMinSpan = 24 * 3600 * 1000

// defaults per kind.
func newRule(kind Kind) *Rule {
	r := &Rule{Kind: kind, Class: "*", Enabled: true, Severity: alert.Warn}
	switch kind {
	case KindStale:
		r.K = 3
	case KindThreshold:
		r.OnDelay, r.OffDelay = 15000, 30000
	case KindRate:
		r.Direction = "both"
	case KindStuck:
		r.Polls, r.MinSpan = 10, 30000
	case KindEWMA:
		r.Lambda, r.L, r.Warmup = 0.2, 3, 30
	case KindZScore:
		r.N, r.Limit = 60, 4
	case KindCUSUM:
		r.CusumK, r.CusumH, r.Warmup = 0.5, 5, 30
	case KindPeer:
		r.Ratio, r.MinPeers, r.MaxAge = 0.85, 2, 300000
		r.OnDelay, r.OffDelay = 30*60000, 5*60000
	}
	return r
}

func (p *parser) rule(n *yaml.Node, idx int) (*Rule, error) {
	at := fmt.Sprintf("rules[%d]", idx)
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "%s: must be a mapping", at)
	}
	fields := map[string]*yaml.Node{}
	keys := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if _, dup := fields[k.Value]; dup {
			return nil, p.errf(k, "%s.%s: given twice", at, k.Value)
		}
		fields[k.Value], keys[k.Value] = n.Content[i+1], k
	}
	kn, ok := fields["kind"]
	if !ok {
		return nil, p.errf(n, "%s.kind: missing (want one of stale, plausibility, threshold, rate, stuck, ewma, zscore, cusum, expr, peer)", at)
	}
	kind := Kind(kn.Value)
	allowed, ok := kindFields[kind]
	if !ok {
		return nil, p.errf(kn, "%s.kind: unknown kind %q (want one of stale, plausibility, threshold, rate, stuck, ewma, zscore, cusum, expr, peer)", at, kn.Value)
	}
	for k, kn := range keys {
		if !slices.Contains(commonFields, k) && !slices.Contains(allowed, k) {
			return nil, p.errf(kn, "%s.%s: unknown field for a %s rule (allowed: %s)", at, k, kind, strings.Join(append(slices.Clone(commonFields), allowed...), ", "))
		}
	}
	r := newRule(kind)
	r.File, r.Line = p.file, n.Line
	nn, ok := fields["name"]
	if !ok {
		return nil, p.errf(n, "%s.name: missing", at)
	}
	if !nameRe.MatchString(nn.Value) {
		return nil, p.errf(nn, "%s.name: %q must be 1-64 of a-z 0-9 _ - starting with a letter or digit", at, nn.Value)
	}
	r.Name = nn.Value
	at = fmt.Sprintf("rules[%d] (%s)", idx, r.Name)
	if v, ok := fields["class"]; ok {
		if _, known := p.cat.Class(v.Value); !known && v.Value != "*" {
			return nil, p.errf(v, "%s.class: unknown equipment class %q (known: %s, or *)", at, v.Value, strings.Join(p.cat.ClassNames(), ", "))
		}
		r.Class = v.Value
	}
	if v, ok := fields["assets"]; ok {
		if v.Kind != yaml.SequenceNode {
			return nil, p.errf(v, "%s.assets: must be a list of asset ids", at)
		}
		for _, a := range v.Content {
			if a.Value == "" {
				return nil, p.errf(a, "%s.assets: empty asset id", at)
			}
			r.Assets = append(r.Assets, a.Value)
		}
	}
	var err error
	if v, ok := fields["signal"]; ok {
		if kind == KindExpr {
			return nil, p.errf(v, "%s.signal: expr rules read the signals named in expr", at)
		}
		r.Signal = v.Value
		if _, gerr := path.Match(r.Signal, "x"); gerr != nil || r.Signal == "" {
			return nil, p.errf(v, "%s.signal: %q is not a signal name or glob", at, r.Signal)
		}
		if r.Class != "*" && r.Signal != "*" {
			cl, _ := p.cat.Class(r.Class)
			if !cl.Open && !slices.ContainsFunc(cl.SignalNames(), r.matchesSignal) {
				return nil, p.errf(v, "%s.signal: class %s has no signal matching %q (known: %s)", at, r.Class, r.Signal, strings.Join(cl.SignalNames(), ", "))
			}
		}
	} else if kind != KindExpr {
		return nil, p.errf(n, "%s.signal: missing (a signal name, a glob or *)", at)
	}
	if v, ok := fields["severity"]; ok {
		if r.Severity, err = p.severity(v, at+".severity"); err != nil {
			return nil, err
		}
	}
	if v, ok := fields["enabled"]; ok {
		if r.Enabled, err = p.boolean(v, at+".enabled"); err != nil {
			return nil, err
		}
	}
	if v, ok := fields["running"]; ok {
		if r.Running, err = p.boolean(v, at+".running"); err != nil {
			return nil, err
		}
	}
	if v, ok := fields["when"]; ok {
		if r.When, err = p.expr(v, r.Class, at+".when"); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		name string
		dst  *int64
	}{{"on_delay", &r.OnDelay}, {"off_delay", &r.OffDelay}, {"interval", &r.Interval}, {"window", &r.Window}, {"max_age", &r.MaxAge}, {"min_span", &r.MinSpan}} {
		if v, ok := fields[d.name]; ok {
			if *d.dst, err = p.duration(v, at+"."+d.name); err != nil {
				return nil, err
			}
		}
	}
	floats := []struct {
		name string
		dst  *float64
		min  float64
		excl bool
	}{{"deadband", &r.Deadband, 0, false}, {"resolution", &r.Resolution, 0, false},
		{"lambda", &r.Lambda, 0, true}, {"l", &r.L, 0, true}, {"min_sigma", &r.MinSigma, 0, false},
		{"h", &r.CusumH, 0, true}, {"ratio", &r.Ratio, 0, true}}
	if kind == KindStale {
		floats = append(floats, struct {
			name string
			dst  *float64
			min  float64
			excl bool
		}{"k", &r.K, 1, false})
	} else {
		floats = append(floats, struct {
			name string
			dst  *float64
			min  float64
			excl bool
		}{"k", &r.CusumK, 0, false})
	}
	if kind == KindZScore || kind == KindRate {
		floats = append(floats, struct {
			name string
			dst  *float64
			min  float64
			excl bool
		}{"limit", &r.Limit, 0, true})
	}
	if kind == KindRate {
		floats = append(floats, struct {
			name string
			dst  *float64
			min  float64
			excl bool
		}{"wrap", &r.Wrap, 0, true})
	}
	for _, fl := range floats {
		if v, ok := fields[fl.name]; ok {
			if *fl.dst, err = p.float(v, at+"."+fl.name); err != nil {
				return nil, err
			}
			if *fl.dst < fl.min || fl.excl && *fl.dst == fl.min {
				rel := ">="
				if fl.excl {
					rel = ">"
				}
				return nil, p.errf(v, "%s.%s: %v must be %s %v", at, fl.name, *fl.dst, rel, fl.min)
			}
		}
	}
	ints := []struct {
		name string
		dst  *int
		min  int
	}{{"polls", &r.Polls, 2}, {"warmup", &r.Warmup, 2}, {"baseline", &r.Baseline, 0}, {"n", &r.N, 3}, {"min_peers", &r.MinPeers, 1}}
	for _, in := range ints {
		if v, ok := fields[in.name]; ok {
			if *in.dst, err = p.integer(v, at+"."+in.name, in.min); err != nil {
				return nil, err
			}
		}
	}
	for _, mm := range []struct {
		name string
		dst  **float64
	}{{"min", &r.Min}, {"max", &r.Max}} {
		if v, ok := fields[mm.name]; ok {
			f, err := p.float(v, at+"."+mm.name)
			if err != nil {
				return nil, err
			}
			*mm.dst = &f
		}
	}
	if r.Min != nil && r.Max != nil && *r.Min > *r.Max {
		return nil, p.errf(fields["min"], "%s.min: %v is above max %v", at, *r.Min, *r.Max)
	}
	switch kind {
	case KindThreshold:
		if err := p.levels(r, fields, at, n); err != nil {
			return nil, err
		}
	case KindRate:
		if r.Window <= 0 {
			return nil, p.errf(n, "%s.window: missing or zero (e.g. 10m)", at)
		}
		if _, ok := fields["limit"]; !ok {
			return nil, p.errf(n, "%s.limit: missing (largest allowed change per window)", at)
		}
		if v, ok := fields["direction"]; ok {
			if v.Value != "rise" && v.Value != "fall" && v.Value != "both" {
				return nil, p.errf(v, "%s.direction: %q (want rise, fall or both)", at, v.Value)
			}
			r.Direction = v.Value
		}
	case KindStuck:
		if r.Resolution <= 0 {
			return nil, p.errf(n, "%s.resolution: missing or zero (smallest real change of the sensor)", at)
		}
		if r.MinSpan > maxMinSpan {
			return nil, p.errf(fields["min_span"], "%s.min_span: %v is above the maximum %v", at,
				time.Duration(r.MinSpan)*time.Millisecond, time.Duration(maxMinSpan)*time.Millisecond)
		}
	case KindEWMA:
		if r.Lambda > 1 {
			return nil, p.errf(fields["lambda"], "%s.lambda: %v must be in (0, 1]", at, r.Lambda)
		}
	case KindExpr:
		v, ok := fields["expr"]
		if !ok {
			return nil, p.errf(n, "%s.expr: missing (the condition that raises the alert)", at)
		}
		if r.Expr, err = p.expr(v, r.Class, at+".expr"); err != nil {
			return nil, err
		}
		if v, ok := fields["clear_when"]; ok {
			if r.ClearWhen, err = p.expr(v, r.Class, at+".clear_when"); err != nil {
				return nil, err
			}
		}
	case KindPeer:
		v, ok := fields["group_by"]
		if !ok || v.Value == "" {
			return nil, p.errf(n, "%s.group_by: missing (the nameplate key that groups peers, e.g. inverter)", at)
		}
		r.GroupBy = v.Value
		if r.Ratio >= 1 {
			return nil, p.errf(fields["ratio"], "%s.ratio: %v must be below 1", at, r.Ratio)
		}
		if strings.ContainsAny(r.Signal, "*?[") {
			return nil, p.errf(fields["signal"], "%s.signal: a peer rule compares one exact signal", at)
		}
	}
	return r, nil
}

func (p *parser) levels(r *Rule, fields map[string]*yaml.Node, at string, n *yaml.Node) error {
	lv, hasLevels := fields["levels"]
	ab, hasAbove := fields["above"]
	be, hasBelow := fields["below"]
	switch {
	case hasLevels && (hasAbove || hasBelow):
		return p.errf(lv, "%s: give either levels or above/below, not both", at)
	case hasAbove && hasBelow:
		return p.errf(be, "%s: give above or below, not both (write two rules)", at)
	case hasAbove || hasBelow:
		v := ab
		if hasBelow {
			v, r.Below = be, true
		}
		field := "above"
		if r.Below {
			field = "below"
		}
		f, err := p.float(v, at+"."+field)
		if err != nil {
			return err
		}
		r.Levels = []Level{{Severity: r.Severity, Limit: f}}
	case hasLevels:
		if lv.Kind != yaml.SequenceNode || len(lv.Content) == 0 {
			return p.errf(lv, "%s.levels: must be a non-empty list of {severity, above|below}", at)
		}
		dir := ""
		for i, ln := range lv.Content {
			la := fmt.Sprintf("%s.levels[%d]", at, i)
			if ln.Kind != yaml.MappingNode {
				return p.errf(ln, "%s: must be {severity: warn, above: 100}", la)
			}
			var l Level
			var seenSev, seenLim bool
			for j := 0; j+1 < len(ln.Content); j += 2 {
				k, v := ln.Content[j], ln.Content[j+1]
				switch k.Value {
				case "severity":
					s, err := p.severity(v, la+".severity")
					if err != nil {
						return err
					}
					l.Severity, seenSev = s, true
				case "above", "below":
					if dir != "" && dir != k.Value {
						return p.errf(k, "%s.%s: every level of a rule must use the same direction (%s)", la, k.Value, dir)
					}
					dir = k.Value
					f, err := p.float(v, la+"."+k.Value)
					if err != nil {
						return err
					}
					l.Limit, seenLim = f, true
				default:
					return p.errf(k, "%s.%s: unknown field (want severity, above or below)", la, k.Value)
				}
			}
			if !seenSev || !seenLim {
				return p.errf(ln, "%s: needs severity and above or below", la)
			}
			r.Levels = append(r.Levels, l)
		}
		r.Below = dir == "below"
	default:
		return p.errf(n, "%s: threshold needs levels, above or below", at)
	}
	sort.SliceStable(r.Levels, func(i, j int) bool { return r.Levels[i].Severity < r.Levels[j].Severity })
	for i := 1; i < len(r.Levels); i++ {
		a, b := r.Levels[i-1], r.Levels[i]
		if a.Severity == b.Severity {
			return p.errf(lv, "%s.levels: severity %s given twice", at, a.Severity)
		}
		if !r.Below && b.Limit <= a.Limit || r.Below && b.Limit >= a.Limit {
			return p.errf(lv, "%s.levels: %s limit %v must be beyond %s limit %v", at, b.Severity, b.Limit, a.Severity, a.Limit)
		}
	}
	return nil
}

// ErrNoRules is returned by Load when nothing was loaded.
var ErrNoRules = errors.New("rules: no rules")

// Load builds a Set from the default packs (when withDefaults) followed by
// the given rule files, which may be globs.
func Load(cat *catalog.Catalog, withDefaults bool, patterns ...string) (*Set, error) {
	var files []*File
	if withDefaults {
		d, err := DefaultPacks(cat)
		if err != nil {
			return nil, err
		}
		files = append(files, d...)
	}
	for _, pat := range patterns {
		names, err := globFiles(pat)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			f, err := LoadFile(n, cat)
			if err != nil {
				return nil, err
			}
			files = append(files, f)
		}
	}
	s := Merge(files...)
	if len(s.Rules) == 0 {
		return nil, ErrNoRules
	}
	return s, nil
}

func globFiles(pat string) ([]string, error) {
	if !strings.ContainsAny(pat, "*?[") {
		return []string{pat}, nil
	}
	m, err := filepath.Glob(pat)
	if err != nil {
		return nil, fmt.Errorf("rules: files %q: %w", pat, err)
	}
	sort.Strings(m)
	return m, nil
}
