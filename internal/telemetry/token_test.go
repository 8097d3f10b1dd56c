package telemetry

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// ValidToken is the loop form of ^[A-Za-z0-9_-]{1,64}$: the same answer
// on every byte at every position, at every length around the bounds.
func TestValidTokenMatchesPattern(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	check := func(s string) {
		if ValidToken(s) != re.MatchString(s) {
			t.Fatalf("ValidToken(%q) = %v, pattern %v", s, ValidToken(s), re.MatchString(s))
		}
	}
	for c := range 256 {
		check(string([]byte{byte(c)}))
		check("ab" + string([]byte{byte(c)}) + "cd")
	}
	for n := range 70 {
		check(strings.Repeat("a", n))
	}
	check("motor-1_A")
	check("ä")
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "aZ09_-.*> \x00\xff"
	for range 20000 {
		b := make([]byte, rng.IntN(67))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		check(string(b))
	}
}
