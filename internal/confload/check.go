package confload

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

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
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var p *Problem
		if errors.As(err, &p) {
			out = append(out, d.Errorf(Join(base, p.Field), "%s", p.Reason))
			return
		}
		var fe *FieldError
		if errors.As(err, &fe) {
			out = append(out, fe)
			return
		}
		msg := err.Error()
		if head, reason, ok := strings.Cut(msg, ": "); ok && isFieldPath(head) {
			out = append(out, d.Errorf(Join(base, strings.TrimPrefix(head, base+".")), "%s", reason))
			return
		}
		out = append(out, d.Errorf(base, "%s", msg))
	}
	walk(err)
	return out
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

// checker walks a YAML node tree against a Go type and reports every
// unknown key and every value that does not fit its field, by field path,
// in words a user of the file understands (never a Go type name).
type checker struct {
	file   string
	errs   Errors
	broken []string
}

func (c *checker) fail(n *yaml.Node, path, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{File: c.file, Line: n.Line, Field: path, Reason: fmt.Sprintf(format, args...)})
	c.broken = append(c.broken, path)
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
	if t == nodeType || t.Kind() == reflect.Interface || reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	scalar := t == timeType || reflect.PointerTo(t).Implements(textType)
	switch {
	case t.Kind() == reflect.Struct && !scalar:
		if n.Kind != yaml.MappingNode {
			c.fail(n, path, "%s is not a mapping (key: value, ...)", show(n))
			return
		}
		fields, inlineMap := structFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if c.merge(k, v, t, path) {
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				if inlineMap != nil {
					c.check(v, inlineMap, Join(path, k.Value))
					continue
				}
				c.fail(k, Join(path, k.Value), "unknown field%s", suggest(k.Value, fields))
				continue
			}
			c.check(v, ft, Join(path, k.Value))
		}
	case t.Kind() == reflect.Map && !scalar:
		if n.Kind != yaml.MappingNode {
			c.fail(n, path, "%s is not a mapping (key: value, ...)", show(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if c.merge(k, v, t, path) {
				continue
			}
			c.check(k, t.Key(), Join(path, k.Value))
			c.check(v, t.Elem(), Join(path, k.Value))
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && !scalar:
		if n.Kind != yaml.SequenceNode {
			c.fail(n, path, "%s is not a list", show(n))
			return
		}
		for i, e := range n.Content {
			c.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			c.fail(n, path, "a %s is not %s", kindName(n), want(t))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			c.fail(n, path, "%s is not %s", show(n), want(t))
		}
	}
}

// merge checks a YAML merge key ("<<: *defaults", or a list of aliases)
// as part of the mapping at path; it reports whether k is one.
func (c *checker) merge(k, v *yaml.Node, t reflect.Type, path string) bool {
	if k.Kind != yaml.ScalarNode || k.Tag != "!!merge" {
		return false
	}
	if v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			c.check(e, t, path)
		}
		return true
	}
	c.check(v, t, path)
	return true
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

func show(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return "the value"
}

func kindName(n *yaml.Node) string {
	if n.Kind == yaml.SequenceNode {
		return "list"
	}
	return "mapping"
}

// want describes what a Go type accepts, in the words of the file.
func want(t reflect.Type) string {
	if t == durationType {
		return "a duration (e.g. 500ms, 10s, 2m)"
	}
	if t == timeType {
		return "a time (RFC 3339, e.g. 2025-06-21T06:00:00Z)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		if bits == 64 {
			return "an integer"
		}
		return fmt.Sprintf("an integer in %d..%d", int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if t.Bits() == 64 {
			return "a whole number >= 0"
		}
		return fmt.Sprintf("a whole number in 0..%d", uint64(math.MaxUint64)>>(64-t.Bits()))
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a text value"
	}
	return "a valid value"
}

// suggest names the known field closest to an unknown one, if close.
func suggest(name string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	for k := range fields {
		d := editDistance(name, k)
		if len(name) >= 3 && (strings.HasPrefix(k, name) || strings.HasPrefix(name, k)) {
			d = min(d, 2) // unit -> unit_id
		}
		if d < bestD || d == bestD && k < best {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
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

// Unknown is the reason for an unknown key among known ones:
// "unknown field (did you mean poll_interval?)".
func Unknown(name string, known []string) string {
	m := make(map[string]reflect.Type, len(known))
	for _, k := range known {
		m[k] = nil
	}
	return "unknown field" + suggest(name, m)
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
