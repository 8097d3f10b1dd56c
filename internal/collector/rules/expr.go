package rules

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
)

// The expression language of multi-signal rules, guards and running
// definitions. It is deliberately tiny and safe: numbers, signal names
// (globs such as exhaust_temp_cyl_* inside aggregate functions), nameplate
// ratings as nameplate.<name>, + - * /, comparisons, and/or/not, and the
// functions abs, min, max, mean, sum, median, maxdev, spread and count.
// Evaluation is three-valued: a signal without a good value in the current
// batch is undefined, undefined propagates through arithmetic and
// comparisons, "a or b" is true when either side is true and "a and b" false
// when either side is false. Aggregates skip undefined arguments.

type exprOp uint8

const (
	opNum exprOp = iota
	opIdent
	opNeg
	opNot
	opAdd
	opSub
	opMul
	opDiv
	opLT
	opLE
	opGT
	opGE
	opEQ
	opNE
	opAnd
	opOr
	opCall
)

type exprNode struct {
	op    exprOp
	num   float64
	ident int // index into Expr.idents for opIdent and glob args
	fn    string
	args  []*exprNode
	glob  bool
	l, r  *exprNode
}

// Expr is a compiled expression. Identifiers are resolved per asset by bind.
type Expr struct {
	src    string
	root   *exprNode
	idents []string // signal names, globs or nameplate.<key>
}

// String returns the source text.
func (e *Expr) String() string { return e.src }

// Idents returns the identifiers the expression reads.
func (e *Expr) Idents() []string { return e.idents }

var aggregates = map[string]bool{"min": true, "max": true, "mean": true, "sum": true, "median": true,
	"maxdev": true, "spread": true, "count": true}

// ParseExpr compiles src. Errors name the column.
func ParseExpr(src string) (*Expr, error) {
	p := &exprParser{src: src}
	p.next()
	e := &Expr{src: src}
	p.e = e
	n := p.parseOr()
	if p.err == nil && p.tok != tEOF {
		p.fail("unexpected %q", p.text)
	}
	if p.err != nil {
		return nil, p.err
	}
	e.root = n
	return e, nil
}

type tokKind uint8

const (
	tEOF tokKind = iota
	tNum
	tIdent
	tOp
	tLParen
	tRParen
	tComma
)

type exprParser struct {
	src  string
	pos  int
	tok  tokKind
	text string
	col  int
	num  float64
	err  error
	e    *Expr
}

func (p *exprParser) fail(format string, a ...any) {
	if p.err == nil {
		p.err = fmt.Errorf("expression %q column %d: %s", p.src, p.col+1, fmt.Sprintf(format, a...))
	}
	p.tok = tEOF
}

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isIdentChar(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '.' || c == '*'
}

func (p *exprParser) next() {
	if p.err != nil {
		p.tok = tEOF
		return
	}
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t' || p.src[p.pos] == '\n' || p.src[p.pos] == '\r') {
		p.pos++
	}
	p.col = p.pos
	if p.pos >= len(p.src) {
		p.tok, p.text = tEOF, ""
		return
	}
	c := p.src[p.pos]
	start := p.pos
	switch {
	case c >= '0' && c <= '9' || c == '.':
		for p.pos < len(p.src) {
			d := p.src[p.pos]
			if d >= '0' && d <= '9' || d == '.' || d == 'e' || d == 'E' ||
				(d == '-' || d == '+') && (p.src[p.pos-1] == 'e' || p.src[p.pos-1] == 'E') {
				p.pos++
				continue
			}
			break
		}
		p.text = p.src[start:p.pos]
		v, err := strconv.ParseFloat(p.text, 64)
		if err != nil {
			p.fail("bad number %q", p.text)
			return
		}
		p.tok, p.num = tNum, v
	case isIdentStart(c):
		for p.pos < len(p.src) && isIdentChar(p.src[p.pos]) {
			p.pos++
		}
		p.tok, p.text = tIdent, p.src[start:p.pos]
	case c == '(':
		p.pos++
		p.tok, p.text = tLParen, "("
	case c == ')':
		p.pos++
		p.tok, p.text = tRParen, ")"
	case c == ',':
		p.pos++
		p.tok, p.text = tComma, ","
	default:
		two := ""
		if p.pos+1 < len(p.src) {
			two = p.src[p.pos : p.pos+2]
		}
		switch two {
		case "<=", ">=", "==", "!=", "&&", "||":
			p.pos += 2
			p.tok, p.text = tOp, two
			return
		}
		switch c {
		case '+', '-', '*', '/', '<', '>', '!':
			p.pos++
			p.tok, p.text = tOp, string(c)
		default:
			p.fail("unexpected character %q", c)
		}
	}
}

func (p *exprParser) isWord(w string) bool { return p.tok == tIdent && p.text == w }

func (p *exprParser) parseOr() *exprNode {
	l := p.parseAnd()
	for p.isWord("or") || p.tok == tOp && p.text == "||" {
		p.next()
		l = &exprNode{op: opOr, l: l, r: p.parseAnd()}
	}
	return l
}

func (p *exprParser) parseAnd() *exprNode {
	l := p.parseNot()
	for p.isWord("and") || p.tok == tOp && p.text == "&&" {
		p.next()
		l = &exprNode{op: opAnd, l: l, r: p.parseNot()}
	}
	return l
}

func (p *exprParser) parseNot() *exprNode {
	if p.isWord("not") || p.tok == tOp && p.text == "!" {
		p.next()
		return &exprNode{op: opNot, l: p.parseNot()}
	}
	return p.parseCmp()
}

var cmpOps = map[string]exprOp{"<": opLT, "<=": opLE, ">": opGT, ">=": opGE, "==": opEQ, "!=": opNE}

func (p *exprParser) parseCmp() *exprNode {
	l := p.parseAdd()
	if p.tok == tOp {
		if op, ok := cmpOps[p.text]; ok {
			p.next()
			return &exprNode{op: op, l: l, r: p.parseAdd()}
		}
	}
	return l
}

func (p *exprParser) parseAdd() *exprNode {
	l := p.parseMul()
	for p.tok == tOp && (p.text == "+" || p.text == "-") {
		op := opAdd
		if p.text == "-" {
			op = opSub
		}
		p.next()
		l = &exprNode{op: op, l: l, r: p.parseMul()}
	}
	return l
}

func (p *exprParser) parseMul() *exprNode {
	l := p.parseUnary()
	for p.tok == tOp && (p.text == "*" || p.text == "/") {
		op := opMul
		if p.text == "/" {
			op = opDiv
		}
		p.next()
		l = &exprNode{op: op, l: l, r: p.parseUnary()}
	}
	return l
}

func (p *exprParser) parseUnary() *exprNode {
	if p.tok == tOp && p.text == "-" {
		p.next()
		return &exprNode{op: opNeg, l: p.parseUnary()}
	}
	return p.parsePrimary()
}

func (p *exprParser) ident(name string) int {
	if i := slices.Index(p.e.idents, name); i >= 0 {
		return i
	}
	p.e.idents = append(p.e.idents, name)
	return len(p.e.idents) - 1
}

func (p *exprParser) parsePrimary() *exprNode {
	switch p.tok {
	case tNum:
		n := &exprNode{op: opNum, num: p.num}
		p.next()
		return n
	case tLParen:
		p.next()
		n := p.parseOr()
		if p.tok != tRParen {
			p.fail("missing )")
			return n
		}
		p.next()
		return n
	case tIdent:
		name := p.text
		switch name {
		case "and", "or", "not":
			p.fail("unexpected %q", name)
			return nil
		case "true":
			p.next()
			return &exprNode{op: opNum, num: 1}
		case "false":
			p.next()
			return &exprNode{op: opNum, num: 0}
		}
		p.next()
		if p.tok == tLParen {
			return p.parseCall(name)
		}
		if strings.Contains(name, "*") {
			p.fail("glob %q is only allowed inside an aggregate function", name)
			return nil
		}
		if err := checkIdent(name); err != nil {
			p.fail("%v", err)
			return nil
		}
		return &exprNode{op: opIdent, ident: p.ident(name)}
	case tEOF:
		p.fail("unexpected end of expression")
	default:
		p.fail("unexpected %q", p.text)
	}
	return nil
}

func checkIdent(name string) error {
	if strings.HasPrefix(name, "nameplate.") {
		if len(name) == len("nameplate.") || strings.Contains(name[len("nameplate."):], ".") {
			return fmt.Errorf("bad nameplate reference %q", name)
		}
		return nil
	}
	if strings.Contains(name, ".") {
		return fmt.Errorf("bad identifier %q", name)
	}
	return nil
}

func (p *exprParser) parseCall(fn string) *exprNode {
	if fn != "abs" && !aggregates[fn] {
		p.fail("unknown function %q (known: abs min max mean sum median maxdev spread count)", fn)
		return nil
	}
	p.next() // (
	n := &exprNode{op: opCall, fn: fn}
	for p.tok != tRParen && p.err == nil {
		if p.tok == tIdent && strings.Contains(p.text, "*") {
			if !aggregates[fn] {
				p.fail("glob %q needs an aggregate function", p.text)
				return nil
			}
			if _, err := path.Match(p.text, "x"); err != nil || strings.HasPrefix(p.text, "nameplate.") {
				p.fail("bad glob %q", p.text)
				return nil
			}
			n.args = append(n.args, &exprNode{op: opIdent, ident: p.ident(p.text), glob: true})
			p.next()
		} else {
			n.args = append(n.args, p.parseOr())
		}
		if p.tok == tComma {
			p.next()
			continue
		}
		if p.tok != tRParen {
			p.fail("expected , or ) in call to %s", fn)
			return nil
		}
	}
	p.next()
	if fn == "abs" && len(n.args) != 1 {
		p.fail("abs takes one argument")
		return nil
	}
	if len(n.args) == 0 {
		p.fail("%s needs arguments", fn)
		return nil
	}
	return n
}

// binding resolves an Expr's identifiers for one asset.
type binding struct {
	slots  []int     // per ident: signal slot, or -1 for a constant / missing
	consts []float64 // per ident: nameplate value
	okc    []bool    // per ident: constant present
	globs  [][]int   // per ident (globs only): matching slots
}

// valueSource gives the current-batch value of a signal slot.
type valueSource interface {
	slotValue(slot int) (float64, bool)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// eval evaluates e with binding bd against src. ok is false when undefined.
func (e *Expr) eval(bd *binding, src valueSource, scratch *[]float64) (float64, bool) {
	return evalNode(e.root, bd, src, scratch)
}

func evalNode(n *exprNode, bd *binding, src valueSource, scratch *[]float64) (float64, bool) {
	switch n.op {
	case opNum:
		return n.num, true
	case opIdent:
		if s := bd.slots[n.ident]; s >= 0 {
			return src.slotValue(s)
		}
		return bd.consts[n.ident], bd.okc[n.ident]
	case opNeg:
		v, ok := evalNode(n.l, bd, src, scratch)
		return -v, ok
	case opNot:
		v, ok := evalNode(n.l, bd, src, scratch)
		return b2f(v == 0), ok
	case opAnd:
		a, aok := evalNode(n.l, bd, src, scratch)
		if aok && a == 0 {
			return 0, true
		}
		b, bok := evalNode(n.r, bd, src, scratch)
		if bok && b == 0 {
			return 0, true
		}
		return 1, aok && bok
	case opOr:
		a, aok := evalNode(n.l, bd, src, scratch)
		if aok && a != 0 {
			return 1, true
		}
		b, bok := evalNode(n.r, bd, src, scratch)
		if bok && b != 0 {
			return 1, true
		}
		return 0, aok && bok
	case opCall:
		return evalCall(n, bd, src, scratch)
	}
	a, aok := evalNode(n.l, bd, src, scratch)
	b, bok := evalNode(n.r, bd, src, scratch)
	if !aok || !bok {
		return 0, false
	}
	switch n.op {
	case opAdd:
		return a + b, true
	case opSub:
		return a - b, true
	case opMul:
		return a * b, true
	case opDiv:
		if b == 0 {
			return 0, false
		}
		return a / b, true
	case opLT:
		return b2f(a < b), true
	case opLE:
		return b2f(a <= b), true
	case opGT:
		return b2f(a > b), true
	case opGE:
		return b2f(a >= b), true
	case opEQ:
		return b2f(a == b), true
	case opNE:
		return b2f(a != b), true
	}
	return 0, false
}

func evalCall(n *exprNode, bd *binding, src valueSource, scratch *[]float64) (float64, bool) {
	if n.fn == "abs" {
		v, ok := evalNode(n.args[0], bd, src, scratch)
		return math.Abs(v), ok
	}
	base := len(*scratch)
	for _, a := range n.args {
		if a.glob {
			for _, s := range bd.globs[a.ident] {
				if v, ok := src.slotValue(s); ok {
					*scratch = append(*scratch, v)
				}
			}
			continue
		}
		if v, ok := evalNode(a, bd, src, scratch); ok {
			*scratch = append(*scratch, v)
		}
	}
	vals := (*scratch)[base:]
	defer func() { *scratch = (*scratch)[:base] }()
	return aggregate(n.fn, vals)
}

// aggregate applies an aggregate function to the defined values (median
// sorts vals in place). Only count is defined over no value.
func aggregate(fn string, vals []float64) (float64, bool) {
	if fn == "count" {
		return float64(len(vals)), true
	}
	if len(vals) == 0 {
		return 0, false
	}
	switch fn {
	case "min":
		return slices.Min(vals), true
	case "max":
		return slices.Max(vals), true
	case "sum", "mean":
		s := 0.0
		for _, v := range vals {
			s += v
		}
		if fn == "mean" {
			s /= float64(len(vals))
		}
		return s, true
	case "spread":
		return slices.Max(vals) - slices.Min(vals), true
	case "maxdev":
		m := 0.0
		for _, v := range vals {
			m += v
		}
		m /= float64(len(vals))
		d := 0.0
		for _, v := range vals {
			d = max(d, math.Abs(v-m))
		}
		return d, true
	case "median":
		return median(vals), true
	}
	return 0, false
}

// median sorts vals in place and returns the median.
func median(vals []float64) float64 {
	slices.Sort(vals)
	n := len(vals)
	if n%2 == 1 {
		return vals[n/2]
	}
	return (vals[n/2-1] + vals[n/2]) / 2
}
