package collector

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/collector/ingest"
)

// TestSparkplugConfigExample loads configs/sparkplug/collector.yaml and its
// mapping, and checks that a bad sparkplug block fails as file:line.
func TestSparkplugConfigExample(t *testing.T) {
	c, err := LoadConfig("../../configs/sparkplug/collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Sparkplug == nil || len(c.Sparkplug.Groups) != 2 || c.Sparkplug.HostID != "smelter" {
		t.Fatalf("sparkplug %+v", c.Sparkplug)
	}
	if _, err := ingest.LoadMapping(c.Path(c.Sparkplug.Mapping), catalog.Default()); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(bad, []byte("data_dir: ./d\nsparkplug:\n  url: tcp://127.0.0.1:1883\n  client_id: x\n  groups: [a/b]\n  mapping: m.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(bad)
	if err == nil || !strings.Contains(err.Error(), bad+":5: sparkplug.groups[0]: \"a/b\" must be non-empty UTF-8 without '+', '/' or '#'") {
		t.Fatalf("bad sparkplug block: %v", err)
	}
}

// TestSparkplugOneReplica: the Sparkplug source is refused with
// cluster.partitions > 0 (replicas would share its client id and STATE
// and ingest everything once each).
func TestSparkplugOneReplica(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte("data_dir: ./d\ncluster:\n  partitions: 4\nsparkplug:\n  url: tcp://127.0.0.1:1883\n  client_id: x\n  groups: [plant]\n  mapping: m.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(f)
	if err == nil || !strings.Contains(err.Error(), f+":4: sparkplug: the Sparkplug source runs in a single collector (cluster.partitions 0)") {
		t.Fatalf("got %v", err)
	}
}
