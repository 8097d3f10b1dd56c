package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCheckMode(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"-t", "-fleet", "../../configs/sim-fleet.yaml", "-scenario", "../../configs/scenarios/demo.yaml"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "14 devices OK") {
		t.Errorf("output %q", out.String())
	}
	err := run([]string{"-t", "-fleet", "../../configs/sim-fleet.yaml", "-speed", "-5"}, &out, &errb)
	if err != nil {
		t.Errorf("negative -speed means the file's value: %v", err)
	}
	if err := run([]string{"-t", "-fleet", "nope.yaml"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("missing fleet: %v", err)
	}
}
