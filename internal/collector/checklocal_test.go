package collector

import (
	"strings"
	"testing"
)

// TestCheckLocalRuleGlobs: a rules.files glob may match nothing (LoadRules
// reads what it matches: the packaged site-rules directory starts empty),
// while a plain file that is missing is reported.
func TestCheckLocalRuleGlobs(t *testing.T) {
	cfg := Defaults()
	cfg.dir = t.TempDir()
	cfg.Rules.Files = []string{"rules/*.yaml"}
	if err := cfg.CheckLocal(); err != nil {
		t.Fatalf("an empty glob: %v", err)
	}
	cfg.Rules.Files = []string{"rules/site.yaml"}
	if err := cfg.CheckLocal(); err == nil || !strings.Contains(err.Error(), "rules.files[0]") {
		t.Fatalf("a missing file: %v", err)
	}
}
