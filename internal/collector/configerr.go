package collector

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/smelterio/smelter/internal/confload"
)

// The YAML decoder words its problems after Go: "field bogus not found in
// type collector.NATSConfig", "cannot unmarshal !!str `x` into uint8". A
// configuration error names the field by its path and says what is wanted,
// so decodeError rewrites them with the field path found in the node tree.
var (
	unknownRe = regexp.MustCompile(`^field (.+?) not found in type .+$`)
	typeRe    = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (\\S+)$")
)

// decodeError rewrites one decode error of the collector's config file.
// Errors it cannot place (syntax errors) are returned unchanged.
func decodeError(root *yaml.Node, fe *confload.FieldError) *confload.FieldError {
	if m := unknownRe.FindStringSubmatch(fe.Reason); m != nil {
		if path, _, ok := findNode(root, fe.Line, func(key, _ *yaml.Node) bool { return key != nil && key.Value == m[1] }); ok {
			reason := "unknown field"
			known := knownFields(parentPath(path))
			if near := nearest(m[1], known); near != "" {
				reason += "; did you mean " + near + "?"
			} else if len(known) > 0 {
				reason += " (known: " + strings.Join(known, ", ") + ")"
			}
			return &confload.FieldError{File: fe.File, Line: fe.Line, Field: path, Reason: reason}
		}
		return &confload.FieldError{File: fe.File, Line: fe.Line, Reason: fmt.Sprintf("unknown field %q", m[1])}
	}
	if m := typeRe.FindStringSubmatch(fe.Reason); m != nil {
		tag, val, goType := m[1], m[2], m[3]
		path, n, ok := findNode(root, fe.Line, func(_, v *yaml.Node) bool {
			switch tag {
			case "!!seq":
				return v.Kind == yaml.SequenceNode
			case "!!map":
				return v.Kind == yaml.MappingNode
			}
			if v.Kind != yaml.ScalarNode || v.ShortTag() != tag {
				return false
			}
			if pre, cut := strings.CutSuffix(val, "..."); cut { // the decoder shortens long values
				return strings.HasPrefix(v.Value, pre)
			}
			return v.Value == val
		})
		if ok {
			return &confload.FieldError{File: fe.File, Line: fe.Line, Field: path, Reason: wantReason(goType, n)}
		}
	}
	return fe
}

// findNode returns the path and value node of the first value on line
// whose key and value satisfy match (key is nil for sequence items), in
// document order.
func findNode(root *yaml.Node, line int, match func(key, val *yaml.Node) bool) (string, *yaml.Node, bool) {
	if root == nil || len(root.Content) == 0 {
		return "", nil, false
	}
	var walk func(n *yaml.Node, path string) (string, *yaml.Node, bool)
	walk = func(n *yaml.Node, path string) (string, *yaml.Node, bool) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				if (k.Line == line || v.Line == line) && match(k, v) {
					return p, v, true
				}
				if got, gn, ok := walk(v, p); ok {
					return got, gn, true
				}
			}
		case yaml.SequenceNode:
			for i, v := range n.Content {
				p := path + "[" + strconv.Itoa(i) + "]"
				if v.Line == line && match(nil, v) {
					return p, v, true
				}
				if got, gn, ok := walk(v, p); ok {
					return got, gn, true
				}
			}
		}
		return "", nil, false
	}
	return walk(root.Content[0], "")
}

func parentPath(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// knownFields lists the YAML field names of the struct at path in Config
// ("" for the top level), sorted; nil when path is not a struct.
func knownFields(path string) []string {
	t := reflect.TypeOf(Config{})
	if path != "" {
		for _, tok := range strings.Split(path, ".") {
			if i := strings.IndexByte(tok, '['); i >= 0 {
				tok = tok[:i]
			}
			for t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			if t.Kind() != reflect.Struct {
				return nil
			}
			f, ok := fieldByTag(t, tok)
			if !ok {
				return nil
			}
			t = f.Type
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// wantReason says what a field of Go type goType takes, and what it got
// (node n).
func wantReason(goType string, n *yaml.Node) string {
	t := strings.TrimLeft(goType, "*")
	var want string
	switch {
	case t == "collector.Duration" || t == "time.Duration":
		want = "a duration such as 30s or 15m"
	case strings.HasPrefix(t, "uint"):
		want = "a whole number, 0 or more"
		if bits := strings.TrimPrefix(t, "uint"); bits != "" {
			if n, err := strconv.Atoi(bits); err == nil {
				want = fmt.Sprintf("a whole number 0-%d", uint64(1)<<n-1)
			}
		}
	case strings.HasPrefix(t, "int"):
		want = "a whole number"
	case strings.HasPrefix(t, "float"):
		want = "a number"
	case t == "bool":
		want = "true or false"
	case t == "string":
		want = "a string"
	case strings.HasPrefix(t, "[]"):
		want = "a list"
	default: // maps and structs
		want = "a mapping"
	}
	got := strconv.Quote(n.Value)
	switch n.Kind {
	case yaml.SequenceNode:
		got = "a list"
	case yaml.MappingNode:
		got = "a mapping"
	}
	return "want " + want + ", got " + got
}

// fractions finds numbers with a fraction given for whole-number fields
// ("dedup_window: 1.5"): the YAML decoder truncates them silently.
func fractions(root *yaml.Node) []problem {
	if root == nil || len(root.Content) == 0 {
		return nil
	}
	var ps []problem
	var walk func(n *yaml.Node, t reflect.Type, path string)
	walk = func(n *yaml.Node, t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float":
			switch t.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
				ps = append(ps, problem{path, "want a whole number, got " + strconv.Quote(n.Value)})
			}
		case n.Kind == yaml.MappingNode && (t.Kind() == reflect.Struct || t.Kind() == reflect.Map):
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				p := k
				if path != "" {
					p = path + "." + k
				}
				if t.Kind() == reflect.Map {
					walk(n.Content[i+1], t.Elem(), p)
				} else if f, ok := fieldByTag(t, k); ok {
					walk(n.Content[i+1], f.Type, p)
				}
			}
		case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
			for i, v := range n.Content {
				walk(v, t.Elem(), path+"["+strconv.Itoa(i)+"]")
			}
		}
	}
	walk(root.Content[0], reflect.TypeOf(Config{}), "")
	return ps
}

// nearest returns the name in known closest to name when it is a likely
// misspelling (at most 2 edits, and fewer than half its length), else "".
func nearest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestD && 2*d < len(k) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
