// Package logging builds the slog logger every Smelter binary uses: JSON in
// production, text on a terminal. Its handler writes each key once per line
// (a logger scoped twice with the same key, say component=gateway and then
// component=spool, logs the innermost value) and durations as Go duration
// strings ("1.5s", not 1500000000). Limiter rate-limits a repeated log line.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("json", "text" or "auto": text when w is a terminal).
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(orDefault(level, "info"))); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: replaceAttr}
	var h slog.Handler
	switch orDefault(format, "auto") {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "auto":
		if isTerminal(w) {
			h = slog.NewTextHandler(w, opts)
		} else {
			h = slog.NewJSONHandler(w, opts)
		}
	default:
		return nil, fmt.Errorf("log format %q is not auto, text or json", format)
	}
	return slog.New(Unique(h)), nil
}

// replaceAttr writes durations as strings ("1.5s"): slog's JSON handler
// would write nanoseconds.
func replaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Unique wraps h so that every record carries each key at most once per
// group level: attributes added by With (at any depth of scoping) and by the
// log call are merged, a later value replacing an earlier one in the
// earlier one's position. slog's own handlers write every attribute they
// are given, so a logger scoped twice with the same key would otherwise
// write the key twice (invalid for most JSON consumers).
func Unique(h slog.Handler) slog.Handler {
	if u, ok := h.(*unique); ok {
		return u
	}
	return &unique{next: h}
}

// unique keeps the scoped attributes itself (the wrapped handler gets them
// per record, merged) and groups as a chain of levels.
type unique struct {
	next   slog.Handler
	attrs  []slog.Attr // attributes at the top level
	groups []level     // nested groups opened by WithGroup, outermost first
}

type level struct {
	name  string
	attrs []slog.Attr
}

func (u *unique) Enabled(ctx context.Context, l slog.Level) bool { return u.next.Enabled(ctx, l) }

func (u *unique) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return u
	}
	c := *u
	if n := len(c.groups); n > 0 {
		c.groups = append([]level(nil), u.groups...)
		c.groups[n-1].attrs = append(c.groups[n-1].attrs[:len(c.groups[n-1].attrs):len(c.groups[n-1].attrs)], as...)
		return &c
	}
	c.attrs = append(u.attrs[:len(u.attrs):len(u.attrs)], as...)
	return &c
}

func (u *unique) WithGroup(name string) slog.Handler {
	if name == "" {
		return u
	}
	c := *u
	c.groups = append(u.groups[:len(u.groups):len(u.groups)], level{name: name})
	return &c
}

func (u *unique) Handle(ctx context.Context, r slog.Record) error {
	inner := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		inner = append(inner, a)
		return true
	})
	// Build from the innermost group outwards; a group without attributes
	// is left out, as slog does.
	for i := len(u.groups) - 1; i >= 0; i-- {
		as := merge(u.groups[i].attrs, inner)
		inner = nil
		if len(as) > 0 {
			inner = []slog.Attr{{Key: u.groups[i].name, Value: slog.GroupValue(as...)}}
		}
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(merge(u.attrs, inner)...)
	return u.next.Handle(ctx, out)
}

// merge returns scoped followed by call, each key once: a later value
// replaces an earlier one in its place. Empty keys (inlined groups) are
// kept as they are.
func merge(scoped, call []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, 0, len(scoped)+len(call))
	idx := make(map[string]int, len(scoped)+len(call))
	for _, list := range [2][]slog.Attr{scoped, call} {
		for _, a := range list {
			if a.Key == "" {
				out = append(out, a)
				continue
			}
			if i, ok := idx[a.Key]; ok {
				out[i] = a
				continue
			}
			idx[a.Key] = len(out)
			out = append(out, a)
		}
	}
	return out
}

// Limiter lets one line of a repeating kind through per interval and counts
// the rest, so a fault that repeats many times a second (a full disk, a
// rejected message) costs one line per interval, not one per occurrence:
// the first occurrence is logged at once, later ones within Every are
// counted, and the next line logged after Every carries "repeated" (how
// many were not logged) and "in_last" (over how long). Flush logs a pending
// count. Safe for concurrent use.
type Limiter struct {
	Every time.Duration // at most one line per Every (default 10 s)
	Now   func() time.Time

	mu         sync.Mutex
	last       time.Time // when the last line was logged (zero: never)
	suppressed int
}

// DefaultEvery is a Limiter's interval when Every is zero.
const DefaultEvery = 10 * time.Second

// Log logs msg with args on l at level, unless a line went out less than
// Every ago: then it only counts it. It reports whether it logged.
func (lm *Limiter) Log(ctx context.Context, l *slog.Logger, lvl slog.Level, msg string, args ...any) bool {
	now := lm.now()
	lm.mu.Lock()
	if !lm.last.IsZero() && now.Sub(lm.last) < lm.every() {
		lm.suppressed++
		lm.mu.Unlock()
		return false
	}
	n, since := lm.suppressed, now.Sub(lm.last)
	lm.last, lm.suppressed = now, 0
	lm.mu.Unlock()
	if n > 0 {
		args = append(args, "repeated", n, "in_last", since.Round(time.Millisecond))
	}
	l.Log(ctx, lvl, msg, args...)
	return true
}

// Flush logs msg with the count of lines not logged since the last one
// ("repeated", "in_last") when there are any, and starts over: the next
// Log goes out at once. It reports whether it logged.
func (lm *Limiter) Flush(ctx context.Context, l *slog.Logger, lvl slog.Level, msg string, args ...any) bool {
	now := lm.now()
	lm.mu.Lock()
	n, since := lm.suppressed, now.Sub(lm.last)
	lm.last, lm.suppressed = time.Time{}, 0
	lm.mu.Unlock()
	if n == 0 {
		return false
	}
	l.Log(ctx, lvl, msg, append(args, "repeated", n, "in_last", since.Round(time.Millisecond))...)
	return true
}

func (lm *Limiter) every() time.Duration {
	if lm.Every > 0 {
		return lm.Every
	}
	return DefaultEvery
}

func (lm *Limiter) now() time.Time {
	if lm.Now != nil {
		return lm.Now()
	}
	return time.Now()
}

// Clip cuts s to at most n bytes (at a rune start) for a log line, marking
// a cut with "…" and the full length: text a peer controls (an OPC UA
// server's DisplayName, say) is logged bounded, never verbatim.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
