package confload

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Problem is a validation error about one field of the value being
// validated: Field is its path relative to that value ("address",
// "serial.baud", "points[2].unit"), Reason says what is wrong. A Validate
// method returns Problems (joined with errors.Join for several) so the
// loader can point each at its line without parsing message text.
type Problem struct {
	Field  string
	Reason string
}

func (p *Problem) Error() string {
	if p.Field == "" {
		return p.Reason
	}
	return p.Field + ": " + p.Reason
}

// Problemf returns a *Problem for field.
func Problemf(field, format string, args ...any) error {
	return &Problem{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Join returns path joined to base with a dot ("a.b" + "c" -> "a.b.c";
// an index "[2]" is appended without one).
func Join(base, path string) string {
	switch {
	case base == "":
		return path
	case path == "":
		return base
	case path[0] == '[':
		return base + path
	}
	return base + "." + path
}

// Report turns the error of a Validate method into FieldErrors placed at
// base (the path of the validated value in this file): every *Problem (also
// inside errors.Join trees and %w wraps) at base.Field, every *FieldError as
// it is. An error of a package that does not return Problems yet is read
// by its documented "field: reason" form when its head is a field path,
// else placed at base as a whole.
func (d *Doc) Report(base string, err error) Errors {
	if err == nil {
		return nil
	}
	var out Errors
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok && isJoin(err, j.Unwrap()) {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var p *Problem
		if errors.As(err, &p) {
			field := p.Field
			if base == "" || field != base && !strings.HasPrefix(field, base+".") && !strings.HasPrefix(field, base+"[") {
				field = Join(base, field) // relative to base, not already under it
			}
			out = append(out, d.Errorf(field, "%s", p.Reason))
			return
		}
		var fe *FieldError
		if errors.As(err, &fe) {
			out = append(out, fe)
			return
		}
		msg := err.Error()
		if head, reason, ok := strings.Cut(msg, ": "); ok && isFieldPath(head) {
			if head != base && !strings.HasPrefix(head, base+".") {
				head = Join(base, head)
			}
			out = append(out, d.Errorf(head, "%s", reason))
			return
		}
		out = append(out, d.Errorf(base, "%s", msg))
	}
	walk(err)
	return out
}

// isJoin reports whether err, which wraps errs, is a list of them (as
// errors.Join makes: their messages one a line) rather than one error
// wrapping several causes (fmt.Errorf with two %w), which is one problem.
func isJoin(err error, errs []error) bool {
	msgs := make([]string, 0, len(errs))
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	return err.Error() == strings.Join(msgs, "\n")
}

// isFieldPath reports whether s looks like a YAML field path of ours:
// lowercase snake_case names separated by dots, with optional [n] indexes.
func isFieldPath(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		name, idx, _ := strings.Cut(part, "[")
		if name == "" || name[0] < 'a' || name[0] > 'z' {
			return false
		}
		for _, r := range name {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
				return false
			}
		}
		if idx != "" {
			n, ok := strings.CutSuffix(idx, "]")
			if _, err := strconv.Atoi(n); !ok || err != nil {
				return false
			}
		}
	}
	return true
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	nodeType        = reflect.TypeFor[yaml.Node]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	textType        = reflect.TypeFor[encoding.TextUnmarshaler]()
	timeType        = reflect.TypeFor[time.Time]()
)

// Wanter is implemented by a type that decodes itself (a yaml.Unmarshaler
// or encoding.TextUnmarshaler, such as a duration type) to say, in the
// words of the file, what it takes: "a duration such as 500ms, 30s or
// 15m". A value it rejects is then reported as "want <Want()>, got
// <value>", the wording of every other type error. Without it the error
// reads "<value> is not valid: <the decoder's error>" (or only "<value> is
// not valid" when that error is a *yaml.TypeError, which is worded after Go
// types).
type Wanter interface {
	Want() string
}

// WantDuration is what a duration field takes, for Wanter implementations
// of duration types (the syntax of time.ParseDuration).
const WantDuration = "a duration such as 500ms, 30s or 15m"

// maxKnown is the most known field names an unknown-field error lists.
const maxKnown = 8

// checker walks a YAML node tree against a Go type and reports every
// unknown key and every value that does not fit its field, by field path,
// in words a user of the file understands (never a Go type name). Values of
// types that decode themselves are decoded one by one, so their errors are
// placed and none stops the walk. The nodes in bad are left out of the
// final decoding (prune).
type checker struct {
	file   string
	errs   Errors
	broken []string
	bad    map[*yaml.Node]reflect.Type // bad nodes: the Go type wanted, nil for a key
	seen   map[seenKey]bool
	// fields caches structFields by type for the document's checkers: a
	// driver decodes each of a device's points on its own, and 20,000
	// points built the same maps 20,000 times (40 MB of garbage at start).
	fields map[reflect.Type]fieldSet
}

// fieldSet is what structFields returns for a type.
type fieldSet struct {
	byKey     map[string]reflect.Type
	inlineMap reflect.Type
}

type seenKey struct {
	n *yaml.Node
	t reflect.Type
}

func newChecker(file string, fields map[reflect.Type]fieldSet) *checker {
	return &checker{file: file, bad: map[*yaml.Node]reflect.Type{}, seen: map[seenKey]bool{}, fields: fields}
}

// structFields is the package's structFields, cached (read-only maps).
func (c *checker) structFields(t reflect.Type) (map[string]reflect.Type, reflect.Type) {
	if fs, ok := c.fields[t]; ok {
		return fs.byKey, fs.inlineMap
	}
	byKey, inlineMap := structFields(t)
	if c.fields != nil {
		c.fields[t] = fieldSet{byKey, inlineMap}
	}
	return byKey, inlineMap
}

// fail reports the node n at path, a value of Go type t (nil for a key).
func (c *checker) fail(n *yaml.Node, t reflect.Type, path, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{File: c.file, Line: n.Line, Field: path, Reason: fmt.Sprintf(format, args...)})
	c.broken = append(c.broken, path)
	c.bad[n] = t
}

// mismatch reports that n at path is not what a field of type t takes. At
// the top of a file the text is not quoted: a file that is not YAML fields
// at all (a key file, /etc/passwd) parses as one long scalar, and its first
// characters may be a secret.
func (c *checker) mismatch(n *yaml.Node, t reflect.Type, path string) {
	if path == "" && n.Kind == yaml.ScalarNode {
		c.fail(n, t, path, "want %s of fields, got plain text (not shown): not a configuration file?", want(t))
		return
	}
	if t == durationType && n.Kind == yaml.ScalarNode && isBareNumber(n.Value) {
		// "0" is not 0s: say how to write it
		hint := n.Value + "s, " + n.Value + "m, ..."
		if strings.Trim(n.Value, "-0.") == "" {
			hint = "0s"
		}
		c.fail(n, t, path, "want %s, got %s (a number needs a unit: %s)", want(t), show(n), hint)
		return
	}
	c.fail(n, t, path, "want %s, got %s", want(t), show(n))
}

// isBareNumber reports whether s is a decimal number without unit ("0",
// "15", "1.5").
func isBareNumber(s string) bool {
	s = strings.TrimPrefix(s, "-")
	digits, dot := 0, false
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '.' && !dot:
			dot = true
		default:
			return false
		}
	}
	return digits > 0 && len(s) <= 20
}

// maxKeyShown is the longest key quoted in an error, in bytes.
const maxKeyShown = 64

// PlausibleKey reports whether s looks like a field name or map key
// someone typed: 1 to maxKeyShown letters, digits, '_', '-' or '.'
// (numeric map keys such as a fuel code included). Anything else (a line
// of /etc/shadow, a JWT, a key with spaces, colons, '$', '=' or brackets)
// is never echoed: an error about it says where it is, not what it says,
// since errors go to logs shipped off the machine.
func PlausibleKey(s string) bool {
	if s == "" || len(s) > maxKeyShown {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
		default:
			return false
		}
	}
	return true
}

// keyName is k's text for a field path when it is a plausible key, else
// "(key at line N)".
func keyName(k *yaml.Node) string {
	if k.Kind == yaml.ScalarNode && PlausibleKey(k.Value) {
		return k.Value
	}
	return fmt.Sprintf("(key at line %d)", k.Line)
}

// oddKeys reports the keys of the mapping at path that are not field names
// at all, once for the mapping, by line only.
func (c *checker) oddKeys(path string, odd []*yaml.Node) {
	if len(odd) == 0 {
		return
	}
	lines := make([]int, len(odd))
	for i, k := range odd {
		c.bad[k] = nil
		lines[i] = k.Line
	}
	c.errs = append(c.errs, &FieldError{File: c.file, Line: lines[0], Field: path, Reason: oddKeysReason(lines)})
}

// oddKeysReason says that keys at lines are no field names, without their text.
func oddKeysReason(lines []int) string {
	shown := make([]string, 0, 6)
	for _, l := range lines[:min(len(lines), 5)] {
		shown = append(shown, strconv.Itoa(l))
	}
	if len(lines) > 5 {
		shown = append(shown, "...")
	}
	if len(lines) == 1 {
		return fmt.Sprintf("unknown field at line %s that is not a field name (text not shown)", shown[0])
	}
	return fmt.Sprintf("%d keys that are not field names, at lines %s (text not shown): not the right kind of file?",
		len(lines), strings.Join(shown, ", "))
}

// OddKeys returns the error for keys of the mapping at path that are not
// PlausibleKey: placed at the first one's line, naming their lines, never
// their text. For loaders that report unknown keys of an inline map
// themselves.
func (d *Doc) OddKeys(path string, keys []string) *FieldError {
	var lines []int
	if d != nil && d.root != nil && len(d.root.Content) > 0 {
		n := d.root.Content[0]
		for _, tok := range splitPath(path) {
			if n, _ = step(n, tok); n == nil {
				break
			}
		}
		if n != nil && n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if slices.Contains(keys, n.Content[i].Value) {
					lines = append(lines, n.Content[i].Line)
				}
			}
		}
	}
	if len(lines) == 0 {
		fe := d.Errorf(path, "%d keys that are not field names (text not shown)", len(keys))
		return fe
	}
	fe := d.Errorf(path, "%s", oddKeysReason(lines))
	fe.Line = lines[0]
	return fe
}

func (c *checker) check(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// a node reached again through an alias is checked once per type: its
	// errors are at its own line, and a document of aliases of aliases
	// does not multiply the work
	k := seenKey{n, t}
	if c.seen[k] {
		return
	}
	c.seen[k] = true
	if t == nodeType || t.Kind() == reflect.Interface {
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(unmarshalerType) || pt.Implements(textType) || t == timeType {
		c.decodeSelf(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.mismatch(n, t, path)
			return
		}
		fields, inlineMap := c.structFields(t)
		var odd []*yaml.Node // keys that are no field name: never echoed
		c.mapping(n, t, path, func(k, v *yaml.Node) {
			ft, ok := fields[k.Value]
			switch {
			case ok:
				c.check(v, ft, Join(path, k.Value))
			case inlineMap != nil:
				c.check(v, inlineMap, Join(path, keyName(k)))
			case k.Kind != yaml.ScalarNode || !PlausibleKey(k.Value):
				odd = append(odd, k)
			default:
				c.fail(k, nil, Join(path, k.Value), "%s", unknown(k.Value, fields))
			}
		})
		c.oddKeys(path, odd)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.mismatch(n, t, path)
			return
		}
		c.mapping(n, t, path, func(k, v *yaml.Node) {
			c.check(k, t.Key(), Join(path, keyName(k)))
			c.check(v, t.Elem(), Join(path, keyName(k)))
		})
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			c.mismatch(n, t, path)
			return
		}
		if t.Kind() == reflect.Array && len(n.Content) != t.Len() {
			c.fail(n, t, path, "want a list of %d, got %d", t.Len(), len(n.Content))
			return
		}
		for i, e := range n.Content {
			c.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		if n.Kind != yaml.ScalarNode || n.Decode(reflect.New(t).Interface()) != nil {
			c.mismatch(n, t, path)
			return
		}
		// the decoder truncates 1.5 into an integer field silently (1.0
		// and 1e3 are whole numbers and kept)
		var f float64
		if isInteger(t) && n.ShortTag() == "!!float" && (n.Decode(&f) != nil || f != math.Trunc(f)) {
			c.mismatch(n, t, path)
		}
	}
}

// mapping calls each for every key and value of the mapping n at path,
// after reporting a key given twice and expanding merge keys ("<<: *d",
// or a list of aliases) as part of the mapping.
func (c *checker) mapping(n *yaml.Node, t reflect.Type, path string, each func(k, v *yaml.Node)) {
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			if v.Kind == yaml.SequenceNode {
				for _, e := range v.Content {
					c.check(e, t, path)
				}
			} else {
				c.check(v, t, path)
			}
			continue
		}
		if k.Kind == yaml.ScalarNode {
			if line, dup := first[k.Value]; dup {
				c.fail(k, nil, Join(path, keyName(k)), "given twice (first at line %d)", line)
				continue
			}
			first[k.Value] = k.Line
		}
		each(k, v)
	}
}

// decodeSelf decodes n into a new value of t, a type that decodes itself,
// and reports its error at path.
func (c *checker) decodeSelf(n *yaml.Node, t reflect.Type, path string) {
	p := reflect.New(t)
	err := n.Decode(p.Interface())
	if err == nil {
		return
	}
	if _, ok := p.Interface().(Wanter); ok || t == timeType {
		c.mismatch(n, t, path)
		return
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		c.fail(n, t, path, "%s is not valid", show(n))
		return
	}
	c.fail(n, t, path, "%s is not valid: %v", show(n), err)
}

// prune returns n without the nodes in bad: a mapping pair whose key or
// value is bad is left out, a bad list item becomes the zero value of its
// type (so the indexes of the others hold). Unchanged subtrees are shared;
// n itself is not changed.
func prune(n *yaml.Node, bad map[*yaml.Node]reflect.Type, done map[*yaml.Node]*yaml.Node) *yaml.Node {
	if out, ok := done[n]; ok {
		return out
	}
	done[n] = n // an alias cycle (the parser rejects them) ends here
	badType := func(x *yaml.Node) (reflect.Type, bool) {
		if x.Kind == yaml.AliasNode && x.Alias != nil {
			x = x.Alias
		}
		t, ok := bad[x]
		return t, ok
	}
	isBad := func(x *yaml.Node) bool {
		_, ok := badType(x)
		return ok
	}
	out := n
	switch n.Kind {
	case yaml.AliasNode:
		if n.Alias != nil {
			if a := prune(n.Alias, bad, done); a != n.Alias {
				cp := *n
				cp.Alias = a
				out = &cp
			}
		}
	case yaml.MappingNode:
		content := make([]*yaml.Node, 0, len(n.Content))
		changed := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if isBad(k) || isBad(v) {
				changed = true
				continue
			}
			pv := prune(v, bad, done)
			changed = changed || pv != v
			content = append(content, k, pv)
		}
		if changed {
			cp := *n
			cp.Content = content
			out = &cp
		}
	case yaml.SequenceNode, yaml.DocumentNode:
		content := make([]*yaml.Node, len(n.Content))
		changed := false
		for i, e := range n.Content {
			if t, ok := badType(e); ok {
				content[i] = zeroNode(t)
			} else {
				content[i] = prune(e, bad, done)
			}
			changed = changed || content[i] != e
		}
		if changed {
			cp := *n
			cp.Content = content
			out = &cp
		}
	}
	done[n] = out
	return out
}

// zeroNode returns a node that decodes into the zero value of t, to stand
// in for a bad list item; null (which drops the item) when none does.
func zeroNode(t reflect.Type) *yaml.Node {
	null := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	if t == nil {
		return null
	}
	if t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(unmarshalerType) {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	var z yaml.Node
	if z.Encode(reflect.Zero(t).Interface()) != nil || z.Decode(reflect.New(t).Interface()) != nil {
		return null
	}
	return &z
}

// structFields maps the YAML keys of t (inline structs flattened) to their
// types; inlineMap is the value type of an inline map catching other keys.
func structFields(t reflect.Type) (map[string]reflect.Type, reflect.Type) {
	out := map[string]reflect.Type{}
	var inlineMap reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Map {
				inlineMap = ft.Elem()
				continue
			}
			sub, m := structFields(ft)
			for k, v := range sub {
				out[k] = v
			}
			if m != nil {
				inlineMap = m
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out, inlineMap
}

// maxShown is the longest value quoted in an error, in bytes.
const maxShown = 60

// show names what the file gives: a quoted value (shortened when long),
// "a list" or "a mapping".
func show(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > maxShown {
			cut := maxShown
			for cut > 0 && !utf8.RuneStart(v[cut]) {
				cut--
			}
			v = v[:cut] + "..."
		}
		return strconv.Quote(v)
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return "the value"
}

func isInteger(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return false
}

// want describes what a Go type accepts, in the words of the file.
func want(t reflect.Type) string {
	if w, ok := reflect.New(t).Interface().(Wanter); ok {
		return w.Want()
	}
	switch t {
	case durationType:
		return WantDuration
	case timeType:
		return "a time such as 2025-06-21T06:00:00Z (RFC 3339)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "a whole number"
	case reflect.Int8, reflect.Int16, reflect.Int32:
		bits := t.Bits()
		return fmt.Sprintf("a whole number in %d..%d", int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
	case reflect.Uint, reflect.Uint64, reflect.Uintptr:
		return "a whole number >= 0"
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return fmt.Sprintf("a whole number in 0..%d", uint64(math.MaxUint64)>>(64-t.Bits()))
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Array:
		return fmt.Sprintf("a list of %d", t.Len())
	case reflect.Struct, reflect.Map:
		return "a mapping"
	}
	return "a valid value"
}

// unknown is the reason for the unknown key name among the fields of a
// struct.
func unknown(name string, fields map[string]reflect.Type) string {
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	return Unknown(name, known)
}

// nearest returns the known name closest to name when it is a likely
// misspelling, else "": at most 2 edits (a prefix, as unit for unit_id,
// counts as 2) and no more than half the known name's length, so that a
// short key is not "corrected" into an unrelated one.
func nearest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		d := editDistance(name, k)
		if len(name) >= 3 && (strings.HasPrefix(k, name) || strings.HasPrefix(name, k)) {
			d = min(d, 2)
		}
		if 2*d > len(k) {
			continue
		}
		if d < bestD || d == bestD && k < best {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of neighbours cost 1.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// Unknown is the reason for the unknown key name among the known ones:
// "unknown field (did you mean poll_interval?)" when one is close, else
// "unknown field (known: format, level)" when there are at most 8 of them,
// else "unknown field".
func Unknown(name string, known []string) string {
	if near := nearest(name, known); near != "" {
		return "unknown field (did you mean " + near + "?)"
	}
	if len(known) > 0 && len(known) <= maxKnown {
		sorted := slices.Sorted(slices.Values(known))
		return "unknown field (known: " + strings.Join(sorted, ", ") + ")"
	}
	return "unknown field"
}

// Fields returns the YAML keys of the struct v (inline structs flattened),
// sorted: the known keys for Unknown.
func Fields(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	fields, _ := structFields(t)
	out := make([]string, 0, len(fields))
	for k := range fields {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
