package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/smelterio/smelter/simulators/fleet"
)

func TestCheckMode(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"-t", "-fleet", "../../configs/sim-fleet.yaml", "-scenario", "../../configs/scenarios/demo.yaml"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "15 devices OK") {
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

// TestHelpExitsZero: -h and --help print the usage and exit 0, like the
// other binaries; a bad flag exits 2 and a failing run 1.
func TestHelpExitsZero(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		var out, errb bytes.Buffer
		err := run([]string{arg}, &out, &errb)
		if code := exitCode(err, &errb); code != 0 {
			t.Errorf("%s: exit %d (err %v)", arg, code, err)
		}
		if !strings.Contains(errb.String(), "usage: smelter-sim") || !strings.Contains(errb.String(), "NMEA 0183") {
			t.Errorf("%s: no usage printed: %q", arg, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := exitCode(run([]string{"-no-such-flag"}, &out, &errb), &errb); code != 2 {
		t.Errorf("bad flag: exit %d, want 2", code)
	}
	if code := exitCode(run([]string{"-t", "-fleet", "nope.yaml"}, &out, &errb), &errb); code != 1 {
		t.Errorf("missing fleet: exit %d, want 1", code)
	}
}

// TestStartFlag: -start sets the simulated start; a bad value names the flag.
func TestStartFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"-t", "-fleet", "../../configs/sim-fleet.yaml", "-start", "10:00"}, &out, &errb); err != nil {
		t.Errorf("-start 10:00: %v", err)
	}
	err := run([]string{"-t", "-fleet", "../../configs/sim-fleet.yaml", "-start", "teatime"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), `-start "teatime"`) {
		t.Errorf("-start teatime: %v", err)
	}
}

// TestDeviceTableShowsNMEA: the device table names a ship's NMEA talker.
func TestDeviceTableShowsNMEA(t *testing.T) {
	var out bytes.Buffer
	if err := printDevices(&out, []fleet.DeviceInfo{{ID: "ship-1", Class: "ship", NMEA: "127.0.0.1:10110", NMEATransport: "tcp"}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "NMEA 0183") || !strings.Contains(out.String(), "tcp 127.0.0.1:10110") {
		t.Errorf("table:\n%s", out.String())
	}
}
