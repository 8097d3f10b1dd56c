package command

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/streams"
)

func newUser(t testing.TB) (nkeys.KeyPair, nkeys.KeyPair) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	v, err := nkeys.FromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return kp, v
}

func testCommand() *Command {
	at := time.Date(2026, 11, 30, 2, 0, 0, 123, time.UTC)
	return &Command{Schema: Schema, ID: "c-1", Asset: "jinan.air_compressor.ac-1", Signal: "unload_pressure_setpoint",
		Value: Num(7.2), Unit: "bar", Requester: "alice@plant", IssuedAt: at, ExpiresAt: at.Add(time.Minute)}
}

// TestCanonicalGolden pins the signed bytes: a change here breaks every
// signer.
func TestCanonicalGolden(t *testing.T) {
	want := "17:smelter.command/1;3:c-1;25:jinan.air_compressor.ac-1;24:unload_pressure_setpoint;5:n:7.2;3:bar;" +
		"11:alice@plant;30:2026-11-30T02:00:00.000000123Z;30:2026-11-30T02:01:00.000000123Z;"
	if got := string(testCommand().Canonical()); got != want {
		t.Errorf("canonical\n got %s\nwant %s", got, want)
	}
	c := testCommand()
	c.Value = Label("loaded")
	if got := string(c.Canonical()); !strings.Contains(got, ";8:s:loaded;") {
		t.Errorf("label canonical %s", got)
	}
	// times keep all nine fraction digits: an outside signer writing a
	// fixed layout agrees whatever the nanoseconds end in
	c = testCommand()
	c.IssuedAt = time.Date(2026, 11, 30, 3, 0, 0, 120_000_000, time.FixedZone("CST", 8*3600))
	c.ExpiresAt = time.Date(2026, 11, 30, 2, 1, 0, 0, time.UTC)
	if got := string(c.Canonical()); !strings.HasSuffix(got, ";30:2026-11-29T19:00:00.120000000Z;30:2026-11-30T02:01:00.000000000Z;") {
		t.Errorf("times canonical %s", got)
	}
}

// TestOutsideSigner: a signer that builds the canonical bytes by hand
// (fixed layout, as docs/commands.md describes it) signs commands the
// gateway's Verify accepts, for times whose nanoseconds end in zeros too.
func TestOutsideSigner(t *testing.T) {
	kp, v := newUser(t)
	for _, ns := range []int{0, 10, 120_000_000, 123_456_780, 999_999_999} {
		at := time.Date(2026, 11, 30, 2, 0, 0, ns, time.UTC)
		c := &Command{Schema: Schema, ID: "c-x", Asset: "s.c.a", Signal: "p", Value: Num(0.7), Unit: "MPa", Requester: "ext",
			IssuedAt: at, ExpiresAt: at.Add(time.Minute)}
		ts := func(t time.Time) string {
			return fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02d.%09dZ", t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond())
		}
		var b strings.Builder
		for _, f := range []string{Schema, c.ID, c.Asset, c.Signal, "n:0.7", c.Unit, c.Requester, ts(at), ts(c.ExpiresAt)} {
			fmt.Fprintf(&b, "%d:%s;", len(f), f)
		}
		sig, err := kp.Sign([]byte(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		c.Signature = base64.RawURLEncoding.EncodeToString(sig)
		// over the wire and back, as the gateway gets it
		data, _ := json.Marshal(c)
		got, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := got.Verify([]nkeys.KeyPair{v}); err != nil {
			t.Errorf("nanoseconds %d: %v", ns, err)
		}
	}
}

// TestSignVerify: a signed command verifies with its key only; any changed
// field, an unsigned command or an empty trust list does not.
func TestSignVerify(t *testing.T) {
	kp, v := newUser(t)
	_, other := newUser(t)
	c := testCommand()
	if _, err := c.Verify([]nkeys.KeyPair{v}); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
	if err := c.Sign(kp); err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	if got, err := c.Verify([]nkeys.KeyPair{other, v}); err != nil || got != pub {
		t.Fatalf("verify: %q %v", got, err)
	}
	if _, err := c.Verify([]nkeys.KeyPair{other}); !errors.Is(err, ErrSignature) {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := c.Verify(nil); !errors.Is(err, ErrSignature) {
		t.Errorf("no trusted keys: %v", err)
	}
	// survives the wire
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := back.Verify([]nkeys.KeyPair{v}); err != nil {
		t.Errorf("after JSON: %v", err)
	}
	tamper := []func(c *Command){
		func(c *Command) { c.ID = "c-2" },
		func(c *Command) { c.Asset = "jinan.air_compressor.ac-2" },
		func(c *Command) { c.Signal = "discharge_pressure" },
		func(c *Command) { c.Value = Num(7.3) },
		func(c *Command) { c.Value = Label("7.2") },
		func(c *Command) { c.Unit = "MPa" },
		func(c *Command) { c.Requester = "mallory" },
		func(c *Command) { c.IssuedAt = c.IssuedAt.Add(time.Nanosecond) },
		func(c *Command) { c.ExpiresAt = c.ExpiresAt.Add(time.Hour) },
	}
	for i, f := range tamper {
		cc := *back
		f(&cc)
		if _, err := cc.Verify([]nkeys.KeyPair{v}); !errors.Is(err, ErrSignature) {
			t.Errorf("tamper %d verified: %v", i, err)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	good := `{"schema":"smelter.command/1","id":"x","asset":"s.c.a","signal":"p","value":1,"unit":"","requester":"r",` +
		`"issued_at":"2026-11-30T02:00:00Z","expires_at":"2026-11-30T02:01:00Z","signature":""}`
	if _, err := Decode([]byte(good)); err != nil {
		t.Fatalf("good: %v", err)
	}
	cases := map[string]string{
		"schema":    strings.Replace(good, "command/1", "command/2", 1),
		"unknown":   strings.Replace(good, `"unit":""`, `"unit":"","extra":1`, 1),
		"id":        strings.Replace(good, `"id":"x"`, `"id":"a b"`, 1),
		"asset":     strings.Replace(good, `"s.c.a"`, `"a"`, 1),
		"signal":    strings.Replace(good, `"signal":"p"`, `"signal":""`, 1),
		"requester": strings.Replace(good, `"requester":"r"`, `"requester":""`, 1),
		"order":     strings.Replace(good, `02:01:00Z`, `01:59:00Z`, 1),
		"value":     strings.Replace(good, `"value":1`, `"value":[1]`, 1),
		"json":      good[:40],
	}
	for name, doc := range cases {
		if _, err := Decode([]byte(doc)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestStorePersists: results survive reopening, the latest per id wins,
// the oldest ids are forgotten beyond max, and a torn last line is skipped.
func TestStorePersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commands", "ids.jsonl")
	s, err := OpenStore(path, 3, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"a", "b", "c", "d"} {
		if err := s.Put(Result{ID: id, Verdict: Accepted}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := s.Put(Result{ID: id, Verdict: Verified}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"id":"e","verd`)
	_ = f.Close()
	s, err = OpenStore(path, 3, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.Get("a"); ok {
		t.Error("a remembered beyond max")
	}
	want := map[string]Verdict{"b": Accepted, "c": Verified, "d": Accepted}
	for id, v := range want {
		if r, ok := s.Get(id); !ok || r.Verdict != v {
			t.Errorf("%s: %+v %v, want %s", id, r, ok, v)
		}
	}
	if _, ok := s.Get("e"); ok {
		t.Error("torn line read")
	}
	if n, before := s.LostBefore(); n != 0 || !before.IsZero() {
		t.Errorf("a torn last line counted as a lost record: %d, %v", n, before)
	}
	for i := range 10 {
		if err := s.Put(Result{ID: string(rune('f' + i)), Verdict: Rejected}); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "\n"); n > 6 {
		t.Errorf("file holds %d lines for 3 ids: not compacted", n)
	}
}

func TestConfigValidate(t *testing.T) {
	_, v := newUser(t)
	pub, _ := v.PublicKey()
	c := Config{TrustedKeys: []string{pub}}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.TrustedKeys = append(c.TrustedKeys, "SUAseed")
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "trusted_keys[1]") || strings.Contains(err.Error(), "SUAseed") {
		t.Errorf("seed in the keys: %v (must not echo it)", err)
	}
	c.TrustedKeys[1] = "UNOTAKEY"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "UNOTAKEY") {
		t.Errorf("bad key: %v", err)
	}
	c.TrustedKeys = c.TrustedKeys[:1]
	c.MaxSkew = 2 * time.Hour
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "max_skew") {
		t.Errorf("max_skew 2h: %v", err)
	}
	c.MaxSkew = MaxMaxSkew
	c.MaxLifetime = MaxMaxLifetime
	if err := c.Validate(); err != nil {
		t.Errorf("max_lifetime %v: %v", MaxMaxLifetime, err)
	}
	c.MaxLifetime = MaxMaxLifetime + time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "max_lifetime") {
		t.Errorf("max_lifetime above %v: %v", MaxMaxLifetime, err)
	}
	// The audit stream's dedup window keeps a command to one gateway for
	// as long as any acceptable command is valid (docs/commands.md, "One
	// gateway per asset").
	if w := streams.Audit("A", []string{"a"}, 1, 0).Duplicates; w < MaxMaxLifetime+2*MaxMaxSkew {
		t.Errorf("audit duplicate window %v below max_lifetime + 2 x max_skew (%v)", w, MaxMaxLifetime+2*MaxMaxSkew)
	}
}

// TestStoreKeepsUnexpiredIDs: an id is remembered until its command
// expires (+ grace) whatever max, across reopening with a smaller max
// too; Full says when max unexpired ids leave no room; expired ids go.
func TestStoreKeepsUnexpiredIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ids.jsonl")
	s, err := OpenStore(path, 5, 5*time.Minute, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	live := time.Now().Add(time.Minute)
	for _, id := range []string{"a", "b", "c"} {
		if err := s.Put(Result{ID: id, Verdict: Verified, ExpiresAt: live}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(Result{ID: "old", Verdict: Verified, ExpiresAt: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if s, err = OpenStore(path, 1, 5*time.Minute, time.Second); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range []string{"a", "b", "c"} {
		if _, ok := s.Get(id); !ok {
			t.Errorf("unexpired id %s forgotten with remember 1", id)
		}
	}
	if _, ok := s.Get("old"); ok {
		t.Error("an expired id kept beyond max")
	}
	if !s.Full() {
		t.Error("not full with 3 unexpired ids and max 1")
	}
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "\n"); n != 3 {
		t.Errorf("file holds %d lines, want the 3 unexpired ids", n)
	}
	s.now = func() time.Time { return live.Add(2 * time.Second) }
	if s.Full() {
		t.Error("full once every id expired")
	}
}

// TestStoreFarFutureExpiryDoesNotPin: a record whose expires_at lies
// years ahead (a signer's long TTL, refused as too long-lived) is kept only
// until it was recorded + max_lifetime + 2 x max_skew: no acceptable
// command expires later, and such ids cannot fill the store for years
// (review of #13: 4,096 of them blocked every command).
func TestStoreFarFutureExpiryDoesNotPin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ids.jsonl")
	s, err := OpenStore(path, 2, 5*time.Minute, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Now()
	far := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	for _, id := range []string{"fill-1", "fill-2"} {
		if err := s.Put(Result{ID: id, Verdict: Rejected, ExpiresAt: far, At: at}); err != nil {
			t.Fatal(err)
		}
	}
	if !s.Full() {
		t.Fatal("not full with 2 live ids and remember 2")
	}
	s.now = func() time.Time { return at.Add(5*time.Minute + 59*time.Second) }
	if !s.Full() {
		t.Error("ids forgotten before recorded + max_lifetime + 2 x max_skew")
	}
	s.now = func() time.Time { return at.Add(6*time.Minute + time.Second) }
	if s.Full() {
		t.Error("ids with a far-future expires_at still pin the store after recorded + max_lifetime + 2 x max_skew")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"schema":"smelter.command/1","id":"x","asset":"s.c.a","signal":"p","value":"on","unit":"","requester":"r","issued_at":"2026-11-30T02:00:00Z","expires_at":"2026-11-30T02:01:00Z","signature":"AA"}`))
	_, v := newUser(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if _, err := c.Verify([]nkeys.KeyPair{v}); err == nil {
			t.Fatal("random command verified")
		}
	})
}

// TestStorePendingAudit (review16 M-3): a result recorded as pending
// publication stays pending across a reopen (and a rewrite of the file),
// is never forgotten while pending even beyond max, and is no longer
// pending once Published; Interrupted lists the ids still accepted.
func TestStorePendingAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commands", "ids.jsonl")
	s, err := OpenStore(path, 2, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPending(Result{ID: "p", Verdict: Verified}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"x", "y", "z"} { // expired ids beyond max: forgotten, p is not
		if err := s.Put(Result{ID: id, Verdict: Accepted}); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()
	if s, err = OpenStore(path, 2, 0, 0); err != nil {
		t.Fatal(err)
	}
	if p := s.Pending(); len(p) != 1 || p[0].ID != "p" || p[0].Verdict != Verified {
		t.Fatalf("pending after reopen: %+v", p)
	}
	if in := s.Interrupted(); len(in) == 0 || in[len(in)-1].ID != "z" {
		t.Errorf("interrupted: %+v", in)
	}
	if err := s.Published(Result{ID: "p", Verdict: Verified}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if s, err = OpenStore(path, 2, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if p := s.Pending(); len(p) != 0 {
		t.Fatalf("pending after Published: %+v", p)
	}
}

// TestStoreLostRecord (review16 L-6): an unreadable line that is not a torn
// last line is a record lost, whose id is unknown: LostBefore reports it
// with the open time + grace, so the gateway refuses commands issued
// before it (one of them may have been executed); a clean file and a torn
// last line report none.
func TestStoreLostRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ids.jsonl")
	live := time.Now().Add(time.Minute)
	lines := `{"id":"a","verdict":"verified","expires_at":"` + live.Format(time.RFC3339Nano) + `"}` + "\n" +
		"{\"id\":\"b\",\"ver\x00\x00\x00 garbage\n" +
		`{"id":"c","verdict":"verified","expires_at":"` + live.Format(time.RFC3339Nano) + `"}` + "\n"
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	s, err := OpenStore(path, 10, 5*time.Minute, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n, before := s.LostBefore()
	if n != 1 || before.Before(opened.Add(30*time.Second)) || before.After(time.Now().Add(30*time.Second)) {
		t.Errorf("LostBefore() = %d, %v; want 1, the open time + 30s", n, before)
	}
	for _, id := range []string{"a", "c"} {
		if _, ok := s.Get(id); !ok {
			t.Errorf("%s, a readable record, not kept", id)
		}
	}
	_ = s.Close()
	// the open rewrote the file without the unreadable line: the loss
	// holds across another restart until it runs out
	s, err = OpenStore(path, 10, 5*time.Minute, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n2, before2 := s.LostBefore(); n2 != 1 || !before2.Equal(before) {
		t.Errorf("after a second open: LostBefore() = %d, %v; want the first open's 1, %v", n2, before2, before)
	}
	_ = s.Close()
}
