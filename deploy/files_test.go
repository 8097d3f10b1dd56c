package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// repo is the repository root, relative to this package's directory.
const repo = ".."

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// copyFile copies src to dst, creating dst's directory.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// mount places host path src (a file or a directory) at dst inside root, as a
// container bind mount or a package's contents entry would.
func mount(t *testing.T, root, src, dst string) {
	t.Helper()
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatalf("mount source: %v", err)
	}
	target := filepath.Join(root, filepath.FromSlash(dst))
	if !fi.IsDir() {
		copyFile(t, src, target)
		return
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		copyFile(t, p, filepath.Join(target, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// nfpmConfig is the part of deploy/package/nfpm.yaml the tests read.
type nfpmConfig struct {
	Contents []struct {
		Src      string `yaml:"src"`
		Dst      string `yaml:"dst"`
		Type     string `yaml:"type"`
		Packager string `yaml:"packager"`
	} `yaml:"contents"`
}

// packagedRoot lays out every non-binary file deploy/package/nfpm.yaml puts in
// the .deb (globs expanded as nfpm does) under a fresh directory, and returns
// it with the list of destinations marked as configuration files.
func packagedRoot(t *testing.T) (root string, configs []string) {
	t.Helper()
	var c nfpmConfig
	readYAML(t, filepath.Join(repo, "deploy/package/nfpm.yaml"), &c)
	root = t.TempDir()
	for _, e := range c.Contents {
		if e.Src == "" || strings.Contains(e.Src, "${") || e.Packager == "rpm" {
			continue // directories, the binaries, the rpm-only paths
		}
		matches, err := filepath.Glob(filepath.Join(repo, e.Src))
		if err != nil || len(matches) == 0 {
			t.Fatalf("nfpm.yaml: %s matches no file (%v)", e.Src, err)
		}
		for _, m := range matches {
			dst := e.Dst
			if strings.HasSuffix(dst, "/") {
				dst += filepath.Base(m)
			}
			mount(t, root, m, dst)
			if strings.HasPrefix(e.Type, "config") {
				configs = append(configs, dst)
			}
		}
	}
	return root, configs
}
