package collector

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
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

// TestOperatorTokenIsViewers: an operator token equal to the viewers' is
// found by -t (CheckLocal) and refused at start, both naming the file's
// line, the field and the operator, never the token.
func TestOperatorTokenIsViewers(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("viewer.token", "shared-token-1")
	write("alice.token", "alice-token-1")
	write("commander.nk", "")
	write("collector.yaml", `http: {listen: "127.0.0.1:0", token_file: viewer.token}
commands:
  seed_file: commander.nk
  operators:
    - {name: alice, token_file: alice.token}
    - {name: bob, token_file: viewer.token}
`)
	cfg, err := LoadConfig(filepath.Join(dir, "collector.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := "collector.yaml:6: commands.operators[1]: operator bob's token is the viewers'"
	err = cfg.CheckLocal()
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "shared-token-1") {
		t.Errorf("-t: %v, want %q", err, want)
	}
	// at start (the seed is checked first: give it one)
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	write("commander.nk", string(seed))
	c := newCollector(t, cfg)
	_, _, err = c.commandsLocal("shared-token-1")
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "shared-token-1") {
		t.Errorf("start: %v, want %q", err, want)
	}
}
