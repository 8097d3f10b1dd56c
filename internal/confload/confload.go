// Package confload loads YAML configuration files strictly and reports
// problems as "file:line: field: reason", the form every Smelter binary uses
// for configuration errors.
//
// A loader decodes the file into its typed struct with unknown fields
// rejected, keeps the YAML node tree, and lets validation code name a field
// by its path ("devices[2].points[0].address"); the error then carries the
// line where that field (or its closest existing parent) sits in the file.
package confload

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldError is one configuration problem.
type FieldError struct {
	File   string
	Line   int
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Errors is every problem found in one or more files.
type Errors []*FieldError

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Sorted returns the errors ordered by file and line.
func (es Errors) Sorted() Errors {
	out := append(Errors(nil), es...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		return out[i].Line < out[j].Line
	})
	return out
}

// AsErrors extracts Errors from err (nil when err holds none).
func AsErrors(err error) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return Errors{fe}
	}
	return nil
}

// Doc is one decoded file: its name and node tree, used to locate fields.
type Doc struct {
	File   string
	root   *yaml.Node
	broken []string                  // field paths whose values did not decode
	fields map[reflect.Type]fieldSet // the checkers' structFields cache
}

// Decode strictly decodes data (named file in messages) into v and reports
// every problem at once: each unknown key and each value that does not fit
// its field is an error naming the field's path and its line, in the words
// of the file ("devices[0].modbus.unit_id: want a whole number in 0..255, got
// \"300\""), never a Go type; a value of a type that decodes itself (a
// yaml.Unmarshaler such as a duration type, an encoding.TextUnmarshaler)
// is decoded on its own, so its error is placed too (see Wanter). A
// number with a fraction in a whole-number field is an error, not
// truncated. Only a YAML syntax error stops the decoding.
//
// A syntax error or an empty file returns a nil Doc. When the only errors
// are field errors, the returned Doc is non-nil and v holds every value that did decode (the broken ones are left at
// their zero or default value): a loader may go on validating v and report
// its own errors with the decoding ones, skipping fields that are Broken.
func Decode(file string, data []byte, v any) (*Doc, error) {
	if len(data) > MaxFileSize {
		return nil, Errors{tooBig(file, int64(len(data)))}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, placeTabs(data, YAMLErrors(file, err))
	}
	if len(root.Content) == 0 {
		return nil, Errors{{File: file, Reason: "file is empty"}}
	}
	doc := &Doc{File: file, root: &root}
	return doc, doc.DecodeNode(&root, "", v)
}

// DecodeNode decodes n, the node at path in d (a driver's block, say), into
// v as Decode does, recording broken fields in d. path prefixes every
// field named in the errors.
func (d *Doc) DecodeNode(n *yaml.Node, path string, v any) error {
	if d.fields == nil {
		d.fields = map[reflect.Type]fieldSet{}
	}
	c := newChecker(d.File, d.fields)
	c.check(n, reflect.TypeOf(v), path)
	d.broken = append(d.broken, c.broken...)
	// the checker found every unknown key and misfit value; the decoder
	// fills v with the rest, the bad nodes left out (a TextUnmarshaler's
	// error would stop it halfway)
	root := n
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.AliasNode && root.Alias != nil {
		root = root.Alias
	}
	if _, bad := c.bad[root]; bad {
		return c.errs
	}
	if len(c.bad) > 0 {
		n = prune(n, c.bad, map[*yaml.Node]*yaml.Node{}) // a copy without the bad nodes
	}
	derr := n.Decode(v)
	if derr == nil {
		if len(c.errs) > 0 {
			return c.errs
		}
		return nil
	}
	// a value the checker let through and the decoder refused: reported,
	// in the decoder's words, rather than lost
	d.broken = append(d.broken, path)
	es := YAMLErrors(d.File, derr)
	for _, e := range es {
		if e.Field == "" {
			e.Field = path
		}
	}
	return append(c.errs, es...)
}

// Broken reports whether the field at path, or a field it is part of or
// holds, did not decode: a validation error about it would only repeat (or
// contradict) the decoding error.
func (d *Doc) Broken(path string) bool {
	if d == nil {
		return false
	}
	for _, b := range d.broken {
		if b == "" || path == b || strings.HasPrefix(path, b+".") || strings.HasPrefix(path, b+"[") {
			return true
		}
	}
	return false
}

// ReadFile reads and decodes a file; a file larger than MaxFileSize is
// refused before it is read whole or parsed (see Read).
func ReadFile(file string, v any) (*Doc, error) {
	data, err := Read(file)
	if err != nil {
		return nil, err
	}
	return Decode(file, data, v)
}

// MaxFileSize is the largest configuration or template file accepted, in
// bytes (16 MiB): a gateway's configuration with thousands of points is a
// few hundred KiB, and parsing YAML takes several times a file's size in
// memory, so a file past this is a mistake (a log or a dump named by
// accident) that must fail at once rather than exhaust the machine.
const MaxFileSize = 16 << 20

// Read reads a configuration file of at most MaxFileSize bytes. Its errors
// are Errors naming the file: the read error, or "file is N bytes, above the
// 16 MiB limit of a configuration file" (without reading more than the
// limit).
func Read(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, Errors{{File: file, Reason: errReason(err)}}
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > MaxFileSize {
		return nil, Errors{tooBig(file, fi.Size())}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, Errors{{File: file, Reason: errReason(err)}}
	}
	if len(data) > MaxFileSize {
		// not a regular file (a pipe): at least this much
		return nil, Errors{{File: file, Reason: fmt.Sprintf("file is over the %d MiB limit of a configuration file", MaxFileSize>>20)}}
	}
	return data, nil
}

func tooBig(file string, size int64) *FieldError {
	return &FieldError{File: file, Reason: fmt.Sprintf("file is %d bytes, above the %d MiB limit of a configuration file", size, MaxFileSize>>20)}
}

// placeTabs moves a "tab character" syntax error to the line of the tab.
// yaml.v3 reports it at the line where the scanner's context began (the
// mapping the tab interrupts, possibly lines earlier); the first line at or
// after that one whose indentation holds a tab is where the user must look.
func placeTabs(data []byte, es Errors) Errors {
	for _, e := range es {
		if !strings.Contains(e.Reason, "tab character") {
			continue
		}
		for i, line := range strings.Split(string(data), "\n") {
			if i+1 < e.Line {
				continue
			}
			indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
			if strings.Contains(indent, "\t") {
				e.Line = i + 1
				break
			}
		}
	}
	return es
}

func errReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// YAMLErrors turns an error of gopkg.in/yaml.v3 (a syntax error, or a
// TypeError listing several fields) into Errors with file and line, for
// loaders that walk the node tree themselves. yaml.v3 has no error type
// carrying the line of a syntax error; its messages read "yaml: line N:
// reason" (TypeError lines "line N: reason"), and that prefix is taken
// apart here. Decode never passes field errors through it: they are
// found on the node tree.
func YAMLErrors(file string, err error) Errors {
	var te *yaml.TypeError
	var lines []string
	if errors.As(err, &te) {
		lines = te.Errors
	} else {
		lines = []string{err.Error()}
	}
	out := make(Errors, 0, len(lines))
	for _, l := range lines {
		fe := &FieldError{File: file, Reason: strings.TrimPrefix(l, "yaml: ")}
		if rest, ok := strings.CutPrefix(fe.Reason, "line "); ok {
			if num, reason, ok := strings.Cut(rest, ": "); ok {
				if n, err := strconv.Atoi(num); err == nil && n > 0 {
					fe.Line, fe.Reason = n, reason
				}
			}
		}
		out = append(out, fe)
	}
	return out
}

// WithoutTree returns d without its parse tree, for a holder that keeps
// it long after loading: the errors it places name the file and field but
// no line (the tree of a large file is tens of MB).
func (d *Doc) WithoutTree() *Doc {
	if d == nil {
		return nil
	}
	return &Doc{File: d.File, broken: d.broken}
}

// Errorf returns a FieldError for the field at path, with the line of that
// field (or of its closest parent present in the file).
func (d *Doc) Errorf(path, format string, args ...any) *FieldError {
	fe := &FieldError{Field: path, Reason: fmt.Sprintf(format, args...)}
	if d != nil {
		fe.File = d.File
		fe.Line = d.Line(path)
	}
	return fe
}

// Line returns the line of the field at path ("a.b[2].c"), or of its
// closest existing parent, or 0.
func (d *Doc) Line(path string) int {
	if d == nil || d.root == nil || len(d.root.Content) == 0 {
		return 0
	}
	n := d.root.Content[0]
	line := n.Line
	for _, tok := range splitPath(path) {
		next, keyLine := step(n, tok)
		if next == nil {
			return line
		}
		n = next
		line = keyLine
	}
	return line
}

func step(n *yaml.Node, tok string) (*yaml.Node, int) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if i, err := strconv.Atoi(tok); err == nil {
		if n.Kind == yaml.SequenceNode && i >= 0 && i < len(n.Content) {
			return n.Content[i], n.Content[i].Line
		}
		return nil, 0
	}
	if n.Kind != yaml.MappingNode {
		return nil, 0
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == tok {
			return n.Content[i+1], n.Content[i].Line
		}
	}
	return nil, 0
}

// splitPath turns "a.b[2].c" into [a b 2 c].
func splitPath(path string) []string {
	var out []string
	for _, part := range strings.Split(path, ".") {
		for part != "" {
			i := strings.IndexByte(part, '[')
			if i < 0 {
				out = append(out, part)
				break
			}
			if i > 0 {
				out = append(out, part[:i])
			}
			j := strings.IndexByte(part[i:], ']')
			if j < 0 {
				out = append(out, part[i+1:])
				break
			}
			out = append(out, part[i+1:i+j])
			part = part[i+j+1:]
		}
	}
	return out
}

// Release drops the contents of the list or mapping at path from d's tree,
// for a loader that is done with them: a large file's tree is most of
// loading's memory (~2 KB per point written inline), and a loader that
// compiles one entry after another can let each entry's nodes go before the
// next (issue 17). The node itself stays: Line of a field below path then
// gives path's line. An anchored node is kept whole (an alias elsewhere in
// the file may still be decoded from it). It reports whether it dropped
// anything.
func (d *Doc) Release(path string) bool {
	if d == nil || d.root == nil || len(d.root.Content) == 0 {
		return false
	}
	n := d.root.Content[0]
	for _, tok := range splitPath(path) {
		if n = stepNode(n, tok); n == nil {
			return false
		}
	}
	if n.Anchor != "" || len(n.Content) == 0 || (n.Kind != yaml.SequenceNode && n.Kind != yaml.MappingNode) {
		return false
	}
	n.Content = nil
	return true
}

// stepNode is step without the line: the node, not an alias to it.
func stepNode(n *yaml.Node, tok string) *yaml.Node {
	next, _ := step(n, tok)
	if next != nil && next.Kind == yaml.AliasNode {
		return nil // the aliased node belongs to its anchor's place
	}
	return next
}

// Has reports whether the field at path is present in the file.
func (d *Doc) Has(path string) bool {
	if d == nil || d.root == nil || len(d.root.Content) == 0 {
		return false
	}
	n := d.root.Content[0]
	for _, tok := range splitPath(path) {
		next, _ := step(n, tok)
		if next == nil {
			return false
		}
		n = next
	}
	return true
}
