package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "smelter-gateway ") || !strings.Contains(out.String(), "go: "+runtime.Version()+" ") {
		t.Errorf("version output %q", out.String())
	}
	out.Reset()
	if run([]string{"help"}, &out, &errb); !strings.Contains(out.String(), "\n  version ") {
		t.Errorf("usage does not list the version command:\n%s", out.String())
	}
}
