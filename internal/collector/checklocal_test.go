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

// TestCheckLocalHistoryDSN: -t parses the history DSN: an unparsable one is
// reported under its field with the reason and without the password
// (review of #14, finding 8); a valid one passes without a database.
func TestCheckLocalHistoryDSN(t *testing.T) {
	cfg := Defaults()
	cfg.dir = t.TempDir()
	cfg.History = &HistoryConfig{DSNFile: "pg.dsn"}
	for dsn, want := range map[string]string{
		"postgres://u:secretpw@host:notaport/db\n": "history.dsn_file: file " + filepath.Join(cfg.dir, "pg.dsn") + ": not a valid PostgreSQL connection string or URL: failed to parse as URL (invalid port",
		"host=h password=secretpw sslmode=bogus":   "sslmode is invalid",
		"postgres://u:secretpw@db.example:5432/db": "",
	} {
		if err := os.WriteFile(filepath.Join(cfg.dir, "pg.dsn"), []byte(dsn), 0o600); err != nil {
			t.Fatal(err)
		}
		err := cfg.CheckLocal()
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", dsn, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%s: %v, want %q and no password", dsn, err, want)
		}
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
