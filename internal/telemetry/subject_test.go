package telemetry

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestSubjectsCollide(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"smelter.v1.>", "smelter.v1.*.*.*.audit", true},
		{"smelter.>", "smelter.v1.*.*.*.audit", true},
		{"smelter.v1.site1.>", "smelter.v1.*.*.*.audit", true},
		{"smelter.v1.*.*.*.*", "smelter.v1.*.*.*.audit", true},
		{"smelter.v1.*.*.*.data", "smelter.v1.*.*.*.audit", false},
		{"smelter.v1.site1.*.*.audit", "smelter.v1.site2.*.*.audit", false},
		{"smelter.v1.*.*.*", "smelter.v1.*.*.*.audit", false},
		{"smelter.v1.*.*.*.audit.>", "smelter.v1.*.*.*.audit", false},
	}
	for _, tc := range cases {
		if got := SubjectsCollide(tc.a, tc.b); got != tc.want {
			t.Errorf("SubjectsCollide(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := SubjectsCollide(tc.b, tc.a); got != tc.want {
			t.Errorf("SubjectsCollide(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
	for _, tel := range TelemetryStreamSubjects("*") {
		for _, k := range []Kind{KindAudit, KindCommand} {
			if SubjectsCollide(tel, KindFilter("*", k)) {
				t.Errorf("telemetry stream subject %s captures .%s", tel, k)
			}
		}
	}
}

// parseSubjectSplit is ParseSubject as it was, over strings.Split: the
// reference the allocation-free one must match.
func parseSubjectSplit(s string) (ParsedSubject, bool) {
	t := strings.Split(s, ".")
	if len(t) != 6 || t[0] != "smelter" || t[1] != "v1" {
		return ParsedSubject{}, false
	}
	return ParsedSubject{Site: t[2], Class: t[3], Asset: t[4], Kind: Kind(t[5])}, true
}

// TestParseSubjectMatchesSplit: the same tokens and the same verdict as a
// split on every dot, for well-formed subjects and their edits (tokens
// missing, extra, empty, a wrong prefix), and no allocation for one that
// parses (the collector parses one per message).
func TestParseSubjectMatchesSplit(t *testing.T) {
	cases := []string{
		"smelter.v1.jinan.blast_furnace.bf-2.data", "smelter.v1.s.c.a.birth", "smelter.v1...." + ".", "smelter.v1.s.c.a",
		"smelter.v1.s.c.a.data.x", "smelter.v1.s.c.a.data.", ".smelter.v1.s.c.a", "smelter.v2.s.c.a.data", "smelters.v1.s.c.a.data",
		"", ".", "smelter", "smelter.v1", "smelter.v1.s.c..data", "smelter.v1.s.c.a.", "smelter.v1.s.c.a.data.>", "smelter.v1.*.*.*.*",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := []byte("smelter.v1.site.class.asset.data")
		for range 1 + rng.IntN(3) {
			i := rng.IntN(len(b) + 1)
			switch rng.IntN(3) {
			case 0:
				b = append(b[:i:i], append([]byte{'.'}, b[i:]...)...)
			case 1:
				if i < len(b) {
					b = append(b[:i:i], b[i+1:]...)
				}
			default:
				if i < len(b) {
					b[i] = "x.v"[rng.IntN(3)]
				}
			}
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		want, ok := parseSubjectSplit(s)
		got, err := ParseSubject(s)
		if (err == nil) != ok || got != want {
			t.Fatalf("ParseSubject(%q) = %+v, %v; split gives %+v, %v", s, got, err, want, ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParseSubject(%q): %v, not ErrInvalid", s, err)
		}
	}
	s := "smelter.v1.jinan.blast_furnace.bf-2.data"
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseSubject(s) }); n != 0 {
		t.Errorf("ParseSubject allocates %v times per subject", n)
	}
}
