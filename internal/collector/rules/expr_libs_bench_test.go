package rules

// Evidence for the "Rule expressions" decision (docs/architecture.md): the
// cost per evaluation of the pack expressions with our evaluator, with
// cel-go and with expr-lang, compiled once and evaluated per snapshot with
// missing signals, and the three-valued semantics each one gives. cel-go and
// expr-lang are imported by this test file only; the collector does not
// link them.

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	exprlang "github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"

	"github.com/smelterio/smelter/internal/catalog"
)

// libCase is one pack expression bound to an asset of its class.
type libCase struct {
	name  string
	x     *Expr // our compiled expression
	a     *assetState
	bound *boundExpr
	sigs  []string // the class's signals, in slot order
	snaps [][]snapValue
}

type snapValue struct {
	v  float64
	ok bool
}

// libCases picks representative expressions from the default packs: a
// nameplate comparison, the motor's two-aggregate unbalance rule, a glob
// aggregate, a running definition and a three-way conjunction.
func libCases(tb testing.TB) []*libCase {
	tb.Helper()
	cat := catalog.Default()
	files, err := DefaultPacks(cat)
	if err != nil {
		tb.Fatal(err)
	}
	set := Merge(files...)
	find := func(class, rule string) *Expr {
		if rule == "running" {
			return set.Running[class]
		}
		for _, r := range set.Rules {
			if r.Class == class && r.Name == rule {
				return r.Expr
			}
		}
		tb.Fatalf("no rule %s/%s in the packs", class, rule)
		return nil
	}
	nameplates := map[string]map[string]float64{
		"air_compressor": {"rated_power": 75, "rated_fad": 13, "rated_specific_power": 6.2, "rated_pressure": 0.75},
		"motor":          {"rated_power": 55, "rated_efficiency": 0.95, "rated_voltage": 400, "rated_current": 98, "poles": 4},
		"diesel_engine":  {"rated_power": 1000, "rated_speed": 1500},
		"wind_turbine":   {"rated_power": 2000, "rotor_diameter": 90, "cut_in_speed": 3, "rated_wind_speed": 12, "cut_out_speed": 25},
	}
	specs := []struct{ name, class, rule string }{
		{"compressor_hot_unloaded", "air_compressor", "cooling_fault"},
		{"motor_unbalance", "motor", "current_unbalance"},
		{"diesel_cylinder_glob", "diesel_engine", "exhaust_cylinder_deviation"},
		{"motor_running", "motor", "running"},
		{"wind_underperform", "wind_turbine", "underperformance"},
	}
	var out []*libCase
	for _, sp := range specs {
		x := find(sp.class, sp.rule)
		if x == nil {
			tb.Fatalf("%s: no expression", sp.name)
		}
		c := newLibCase(sp.name, sp.class, x, nameplates[sp.class], nil)
		cl, _ := cat.Class(sp.class)
		// 16 snapshots: values spread over each signal's catalog range;
		// half of them with every value, half with one signal in four
		// missing (no good value in the batch).
		for i := range 16 {
			snap := make([]snapValue, len(c.sigs))
			for j, s := range c.sigs {
				lo, hi := 0.0, 100.0
				if sig := cl.Signals[s]; sig.Min != nil && sig.Max != nil {
					lo, hi = *sig.Min, *sig.Max
				}
				f := float64((i*7+j*3)%16) / 15
				snap[j] = snapValue{v: lo + f*(hi-lo), ok: i < 8 || (i+j)%4 != 0}
			}
			c.snaps = append(c.snaps, snap)
		}
		out = append(out, c)
	}
	return out
}

// newLibCase binds x to a fresh asset of class with the given signals
// (nil: the class's catalog signals), through the engine's own binding.
func newLibCase(name, class string, x *Expr, nameplate map[string]float64, sigs []string) *libCase {
	cat := catalog.Default()
	if sigs == nil {
		cl, _ := cat.Class(class)
		sigs = cl.SignalNames()
	}
	a := &assetState{sigs: map[string]*signalState{}, nameplate: nameplate, class: class}
	a.e = &Engine{set: &Set{}, cat: cat}
	c := &libCase{name: name, x: x, a: a, sigs: sigs}
	for _, s := range sigs {
		a.signal(s)
	}
	c.bound = a.bind(x)
	return c
}

// load puts a snapshot into the asset, as the engine's ingest does.
func (c *libCase) load(snap []snapValue) {
	for i, s := range c.a.list {
		s.value, s.valid = snap[i].v, snap[i].ok
	}
}

// source renders x in another language's syntax: and/or/not as given,
// numbers as float literals, globs expanded to the asset's signals.
func (c *libCase) source(and, or, not string) string {
	var b strings.Builder
	var walk func(n *exprNode)
	bin := map[exprOp]string{opAdd: "+", opSub: "-", opMul: "*", opDiv: "/", opLT: "<", opLE: "<=", opGT: ">",
		opGE: ">=", opEQ: "==", opNE: "!=", opAnd: and, opOr: or}
	walk = func(n *exprNode) {
		switch n.op {
		case opNum:
			s := strconv.FormatFloat(n.num, 'g', -1, 64)
			if !strings.ContainsAny(s, ".e") {
				s += ".0"
			}
			b.WriteString(s)
		case opIdent:
			b.WriteString(c.x.idents[n.ident])
		case opNeg:
			b.WriteString("-(")
			walk(n.l)
			b.WriteString(")")
		case opNot:
			b.WriteString(not + "(")
			walk(n.l)
			b.WriteString(")")
		case opCall:
			b.WriteString(n.fn + "(")
			first := true
			for _, a := range n.args {
				names := []string{""}
				if a.glob {
					names = nil
					for _, s := range c.sigs {
						if ok, _ := path.Match(c.x.idents[a.ident], s); ok {
							names = append(names, s)
						}
					}
				}
				for _, nm := range names {
					if !first {
						b.WriteString(", ")
					}
					first = false
					if nm != "" {
						b.WriteString(nm)
					} else {
						walk(a)
					}
				}
			}
			b.WriteString(")")
		default:
			b.WriteString("(")
			walk(n.l)
			b.WriteString(" " + bin[n.op] + " ")
			walk(n.r)
			b.WriteString(")")
		}
	}
	walk(c.x.root)
	return b.String()
}

// evalOurs evaluates with our evaluator, as the engine does.
func (c *libCase) evalOurs() (bool, bool) {
	v, ok := c.a.eval(c.bound)
	return v != 0, ok
}

// --- cel-go ---

const maxAggArgs = 12

// celEnv declares the class's signals as doubles, nameplate as a
// map(string, double), abs and our aggregates. The aggregates are
// non-strict overloads (1 to maxAggArgs arguments) so that, as ours, they
// skip undefined arguments.
func (c *libCase) celEnv() (*cel.Env, error) {
	opts := []cel.EnvOption{cel.Variable("nameplate", cel.MapType(cel.StringType, cel.DoubleType)),
		cel.Function("abs", cel.Overload("abs_double", []*cel.Type{cel.DoubleType}, cel.DoubleType,
			cel.UnaryBinding(func(v ref.Val) ref.Val { return types.Double(math.Abs(float64(v.(types.Double)))) })))}
	for _, s := range c.sigs {
		opts = append(opts, cel.Variable(s, cel.DoubleType))
	}
	for fn := range aggregates {
		var ovs []cel.FunctionOpt
		for n := 1; n <= maxAggArgs; n++ {
			args := slices.Repeat([]*cel.Type{cel.DoubleType}, n)
			ovs = append(ovs, cel.Overload(fmt.Sprintf("%s_%d", fn, n), args, cel.DoubleType,
				cel.OverloadIsNonStrict(), cel.FunctionBinding(celAggregate(fn))))
		}
		opts = append(opts, cel.Function(fn, ovs...))
	}
	return cel.NewEnv(opts...)
}

func celAggregate(fn string) func(args ...ref.Val) ref.Val {
	return func(args ...ref.Val) ref.Val {
		var buf [maxAggArgs]float64
		vals := buf[:0]
		for _, a := range args {
			if d, ok := a.(types.Double); ok {
				vals = append(vals, float64(d))
			}
		}
		v, ok := aggregate(fn, vals)
		if !ok {
			return types.NewErr("%s: no defined argument", fn)
		}
		return types.Double(v)
	}
}

// celActivation resolves signals from the asset's current batch: a signal
// without a good value is not found, which CEL evaluates as an error value
// (and its && and || absorb errors as the rules need).
type celActivation struct {
	c         *libCase
	slots     map[string]int
	nameplate ref.Val
}

func (v *celActivation) ResolveName(name string) (any, bool) {
	if name == "nameplate" {
		return v.nameplate, true
	}
	s, ok := v.slots[name]
	if !ok {
		return nil, false
	}
	x, ok := v.c.a.slotValue(s)
	if !ok {
		return nil, false
	}
	return types.Double(x), true
}

func (v *celActivation) Parent() interpreter.Activation { return nil }

func (c *libCase) celProgram(tb testing.TB) (cel.Program, *celActivation) {
	tb.Helper()
	env, err := c.celEnv()
	if err != nil {
		tb.Fatal(err)
	}
	src := c.source("&&", "||", "!")
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		tb.Fatalf("cel compile %s: %v", src, iss.Err())
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		tb.Fatal(err)
	}
	act := &celActivation{c: c, slots: map[string]int{}, nameplate: types.DefaultTypeAdapter.NativeToValue(c.a.nameplate)}
	for _, s := range c.a.list {
		act.slots[s.name] = s.slot
	}
	return prg, act
}

func evalCEL(prg cel.Program, act *celActivation) (bool, bool) {
	out, _, err := prg.Eval(act)
	if err != nil {
		return false, false
	}
	b, ok := out.(types.Bool)
	return bool(b), ok
}

// --- expr-lang ---

// exprProgram compiles the expression for expr-lang over an untyped
// environment: a signal without a good value is absent (nil); abs and the
// aggregates skip nil arguments.
func (c *libCase) exprProgram(tb testing.TB) (*vm.Program, map[string]any) {
	tb.Helper()
	opts := []exprlang.Option{exprlang.AllowUndefinedVariables(),
		exprlang.Function("abs", func(p ...any) (any, error) {
			if f, ok := p[0].(float64); ok {
				return math.Abs(f), nil
			}
			return nil, nil
		})}
	for fn := range aggregates {
		opts = append(opts, exprlang.Function(fn, func(p ...any) (any, error) {
			var buf [maxAggArgs]float64
			vals := buf[:0]
			for _, a := range p {
				if f, ok := a.(float64); ok {
					vals = append(vals, f)
				}
			}
			if v, ok := aggregate(fn, vals); ok {
				return v, nil
			}
			return nil, nil
		}))
	}
	src := c.source("and", "or", "not")
	prg, err := exprlang.Compile(src, opts...)
	if err != nil {
		tb.Fatalf("expr-lang compile %s: %v", src, err)
	}
	return prg, map[string]any{"nameplate": c.a.nameplate}
}

// evalExprLang fills env from the asset's current batch and runs prg.
func (c *libCase) evalExprLang(prg *vm.Program, env map[string]any, m *vm.VM) (bool, bool) {
	for _, s := range c.a.list {
		if v, ok := c.a.slotValue(s.slot); ok {
			env[s.name] = v
		} else {
			delete(env, s.name)
		}
	}
	out, err := m.Run(prg, env)
	if err != nil {
		return false, false
	}
	b, ok := out.(bool)
	return b, ok
}

// BenchmarkRuleExpr evaluates each representative pack expression over 16
// snapshots (half with missing signals), compiled once, with our evaluator,
// cel-go and expr-lang. Loading the snapshot into the asset is part of
// every variant; the libraries also pay for reading values out of it.
func BenchmarkRuleExpr(b *testing.B) {
	for _, c := range libCases(b) {
		b.Run(c.name+"/ours", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c.load(c.snaps[i%len(c.snaps)])
				c.evalOurs()
				i++
			}
		})
		b.Run(c.name+"/cel-go", func(b *testing.B) {
			prg, act := c.celProgram(b)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c.load(c.snaps[i%len(c.snaps)])
				evalCEL(prg, act)
				i++
			}
		})
		b.Run(c.name+"/expr-lang", func(b *testing.B) {
			prg, env := c.exprProgram(b)
			var m vm.VM
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c.load(c.snaps[i%len(c.snaps)])
				c.evalExprLang(prg, env, &m)
				i++
			}
		})
	}
}

// TestRuleExprLibrariesAgree checks the benchmark compares like with like:
// on every snapshot of every case cel-go gives our result (value and
// definedness). expr-lang's disagreements are logged: it has no undefined
// value, so an expression touching a missing signal fails as a whole.
func TestRuleExprLibrariesAgree(t *testing.T) {
	for _, c := range libCases(t) {
		prg, act := c.celProgram(t)
		eprg, env := c.exprProgram(t)
		var m vm.VM
		exprOff := 0
		for i, snap := range c.snaps {
			c.load(snap)
			want, wantOK := c.evalOurs()
			got, ok := evalCEL(prg, act)
			if ok != wantOK || ok && got != want {
				t.Errorf("%s snapshot %d: cel-go %v %v, ours %v %v (%s)", c.name, i, got, ok, want, wantOK, c.source("&&", "||", "!"))
			}
			if got, ok := c.evalExprLang(eprg, env, &m); ok != wantOK || ok && got != want {
				exprOff++
			}
		}
		t.Logf("%s: expr-lang differs from ours on %d of %d snapshots", c.name, exprOff, len(c.snaps))
	}
}

// TestRuleExprThreeValued checks the semantics the rules rely on, with u a
// signal without a good value and x = 1: unknown and false = false, unknown
// or true = true, unknown otherwise; aggregates skip unknown arguments.
// Ours and cel-go must give them; expr-lang's answers are logged
// (-v) for docs/architecture.md.
func TestRuleExprThreeValued(t *testing.T) {
	const unknown = "unknown"
	cases := []struct{ src, want string }{
		{"u > 0 and x < 0", "false"},
		{"x < 0 and u > 0", "false"},
		{"u > 0 or x > 0", "true"},
		{"x > 0 or u > 0", "true"},
		{"u > 0 and x > 0", unknown},
		{"u > 0 or x < 0", unknown},
		{"not (u > 0)", unknown},
		{"u + 1 > 0", unknown},
		{"mean(u, x) > 0", "true"},
	}
	show := func(v, ok bool) string {
		if !ok {
			return unknown
		}
		return strconv.FormatBool(v)
	}
	for _, tc := range cases {
		x, err := ParseExpr(tc.src)
		if err != nil {
			t.Fatal(err)
		}
		c := newLibCase(tc.src, "generic", x, map[string]float64{}, []string{"u", "x"})
		c.load([]snapValue{{v: 0, ok: false}, {v: 1, ok: true}})
		prg, act := c.celProgram(t)
		eprg, env := c.exprProgram(t)
		var m vm.VM
		ours, cg, el := show(c.evalOurs()), show(evalCEL(prg, act)), show(c.evalExprLang(eprg, env, &m))
		if ours != tc.want {
			t.Errorf("%s: ours %s, want %s", tc.src, ours, tc.want)
		}
		if cg != tc.want {
			t.Errorf("%s: cel-go %s, want %s", tc.src, cg, tc.want)
		}
		t.Logf("%-18s want %-7s ours %-7s cel-go %-7s expr-lang %s", tc.src, tc.want, ours, cg, el)
	}
}
