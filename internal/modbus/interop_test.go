package modbus

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/modbustest"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
)

// startLibmodbus builds testdata/libmodbus_server.c against the system's
// libmodbus and runs it with args, returning the first line it prints.
func startLibmodbus(t *testing.T, args ...string) string {
	t.Helper()
	if os.Getenv("SMELTER_INTEROP") != "1" {
		t.Skip("interop test: set SMELTER_INTEROP=1")
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("interop test: gcc not installed")
	}
	flags, err := exec.Command("pkg-config", "--cflags", "--libs", "libmodbus").Output()
	if err != nil {
		t.Skip("interop test: libmodbus not installed (apt-get install libmodbus-dev pkg-config)")
	}
	bin := filepath.Join(t.TempDir(), "libmodbus_server")
	build := exec.CommandContext(t.Context(), gcc, append([]string{"-Wall", "-o", bin, "testdata/libmodbus_server.c"},
		strings.Fields(string(flags))...)...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Stderr = t.Output()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatalf("libmodbus server printed nothing: %v", sc.Err())
	}
	return sc.Text()
}

// TestInteropLibmodbus reads a libmodbus 3.1 slave (a stack we did not
// write) over Modbus TCP and serial RTU: values in the right places, the
// slave's exception 2 for an address it lacks quarantined and reported Bad
// (not Silent) with the flag, and every cycle alive.
func TestInteropLibmodbus(t *testing.T) {
	for _, tr := range []Transport{TCP, RTU} {
		t.Run(string(tr), func(t *testing.T) {
			var cfg Config
			if tr == TCP {
				line := startLibmodbus(t, "tcp")
				port, ok := strings.CutPrefix(line, "PORT ")
				if !ok {
					t.Fatalf("libmodbus server said %q", line)
				}
				cfg = testConfig(TCP, "127.0.0.1:"+port, 1)
			} else {
				client, dev := modbustest.PtyPair(t)
				if line := startLibmodbus(t, "rtu", dev); line != "READY" {
					t.Fatalf("libmodbus server said %q", line)
				}
				cfg = testConfig(RTU, client, 3)
			}
			cfg.Timeout = time.Second
			groups, want := shiftGroups(20 * time.Millisecond)
			// one point beyond the slave's mapping, merged into the first request
			groups[0].Points = append(groups[0].Points, Point{Table: HoldingRegisters, Address: 200, Type: Uint16})
			groups[0].Index = append(groups[0].Index, 99)
			groups[1].Points = append(groups[1].Points, Point{Table: Coils, Address: 3, Type: Bool}, Point{Table: Coils, Address: 4, Type: Bool})
			groups[1].Index = append(groups[1].Index, 30, 31)
			want[30], want[31] = 1, 0
			pool := NewPool(testLogger(t), nil)
			t.Cleanup(func() { _ = pool.Close() })
			src, err := pool.Source("libmodbus", cfg, groups)
			if err != nil {
				t.Fatal(err)
			}
			rec := &recorder{t: t, want: want}
			stop := rec.run(src)
			wait.For(t, 20*time.Second, "10 cycles", func() bool { return len(rec.snapshot()) >= 10 })
			stop()
			good := 0
			for _, c := range rec.snapshot() {
				if !c.Replied {
					t.Fatalf("cycle not replied: %v", c.Err)
				}
				for _, s := range c.Samples {
					switch {
					case s.Index == 99:
						if s.Quality != telemetry.QualityBad || s.Silent || !errors.Is(Status(s.Status), Status(2)) {
							t.Fatalf("address 200 = %+v, want exception 2", s)
						}
					case s.Quality == telemetry.QualityGood:
						good++
					default:
						t.Fatalf("sample %+v: %v", s, c.Err)
					}
				}
			}
			if good == 0 {
				t.Fatal("no good sample")
			}
			if st := src.State(); st.Quarantined != 1 {
				t.Fatalf("quarantined = %d, want 1", st.Quarantined)
			}
		})
	}
}
