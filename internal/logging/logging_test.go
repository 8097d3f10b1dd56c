package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// keys returns the top-level keys of a JSON log line in order, with
// repeats (encoding/json would silently keep the last of a repeated key).
func keys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestNoDuplicateKeys: a logger scoped twice with the same key (as the
// gateway, its spool and its uplinks do) writes the key once, with the
// innermost value, in the outer one's place.
func TestNoDuplicateKeys(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log = log.With("gateway", "gw-1", "component", "gateway")
	log.With("component", "spool").With("uplink", "nats").Info("hello", "uplink", "nats", "gateway", "gw-1", "n", 3)
	line := buf.String()
	got := strings.Join(keys(t, line), ",")
	if got != "time,level,msg,gateway,component,uplink,n" {
		t.Fatalf("keys %s in %s", got, line)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	if m["component"] != "spool" {
		t.Fatalf("component %v, want the innermost value spool", m["component"])
	}
}

func TestGroupsKeepTheirKeysApart(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.With("id", "outer").WithGroup("req").With("id", "a").Info("x", "id", "b", "k", 1)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	req, _ := m["req"].(map[string]any)
	if m["id"] != "outer" || req["id"] != "b" || req["k"] != float64(1) {
		t.Fatalf("got %s", buf.String())
	}
	if n := strings.Count(buf.String(), `"id"`); n != 2 {
		t.Fatalf("%d id keys in %s", n, buf.String())
	}
}

func TestDurationsAreHumanReadable(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := New(&buf, "info", format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("x", "retry_in", 1500*time.Millisecond)
		if !strings.Contains(buf.String(), "1.5s") || strings.Contains(buf.String(), "1500000000") {
			t.Fatalf("%s: %s", format, buf.String())
		}
	}
}

// TestLimiter: a line repeated 1000 times within one interval is logged
// once; the next line after the interval says how many were left out.
func TestLimiter(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	now := time.Unix(1000, 0)
	lm := &Limiter{Every: 10 * time.Second, Now: func() time.Time { return now }}
	ctx := context.Background()
	logged := 0
	for range 1000 {
		if lm.Log(ctx, log, slog.LevelError, "append failed") {
			logged++
		}
		now = now.Add(5 * time.Millisecond) // 5 s in all
	}
	if logged != 1 {
		t.Fatalf("%d lines logged in 5 s, want 1", logged)
	}
	now = now.Add(6 * time.Second)
	if !lm.Log(ctx, log, slog.LevelError, "append failed") {
		t.Fatal("nothing logged after the interval")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatal(err)
	}
	if m["repeated"] != float64(999) {
		t.Fatalf("second line %s, want repeated 999", lines[1])
	}
	if lm.Flush(ctx, log, slog.LevelInfo, "recovered") {
		t.Fatal("Flush logged with nothing pending")
	}
	if !lm.Log(ctx, log, slog.LevelError, "append failed") || lm.Log(ctx, log, slog.LevelError, "append failed") {
		t.Fatal("after Flush the first line goes out at once, the second is counted")
	}
	if !lm.Flush(ctx, log, slog.LevelInfo, "recovered") {
		t.Fatal("Flush did not report the pending line")
	}
}

// TestClip: peer text is cut at a rune start and marked with its length.
func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"kPa", 128, "kPa"},
		{strings.Repeat("x", 10), 10, strings.Repeat("x", 10)},
		{strings.Repeat("x", 11), 10, strings.Repeat("x", 10) + "…(11 bytes)"},
		{"ab°C", 3, "ab…(5 bytes)"}, // ° is 2 bytes: not split
	} {
		if got := Clip(tc.in, tc.n); got != tc.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
