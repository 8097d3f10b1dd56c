package collector

import (
	"os"
	"path/filepath"
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
