// Package tahutest runs the Eclipse Tahu JavaScript helpers of
// deploy/sparkplug-interop (decode.js, edge.js, dcmd.js) for Smelter's Sparkplug
// interop tests. They run with SMELTER_INTEROP=1 once
// `npm ci --prefix deploy/sparkplug-interop` has installed Tahu's packages,
// and skip cleanly otherwise.
package tahutest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Dir is deploy/sparkplug-interop.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "sparkplug-interop")
}

// Need skips t unless SMELTER_INTEROP=1, node is on PATH and the npm
// packages are installed.
func Need(t *testing.T) {
	t.Helper()
	const prepare = "prepare it with `npm ci --prefix deploy/sparkplug-interop` (from the repository root)"
	if os.Getenv("SMELTER_INTEROP") != "1" {
		t.Skip("Sparkplug interop with Eclipse Tahu runs with SMELTER_INTEROP=1 (make interop); " + prepare)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("Sparkplug interop needs node on PATH: " + err.Error())
	}
	for _, p := range []string{"sparkplug-payload", "sparkplug-client", "mqtt"} {
		if _, err := os.Stat(filepath.Join(Dir(), "node_modules", p, "package.json")); err != nil {
			t.Skip("Sparkplug interop: deploy/sparkplug-interop/node_modules/" + p + " is missing; " + prepare)
		}
	}
}

// Proc is a running helper script: its stdout lines, its stdin.
type Proc struct {
	in    io.WriteCloser
	lines chan string
	mu    sync.Mutex
	err   strings.Builder
}

// Start runs `node script args...` in Dir and stops it (closing its stdin,
// then killing it) at cleanup.
func Start(t *testing.T, script string, args ...string) *Proc {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), "node", append([]string{script}, args...)...)
	cmd.Dir = Dir()
	p := &Proc{lines: make(chan string, 100000)}
	var err error
	if p.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.err.Len() < 1<<16 {
			p.err.Write(b)
		}
		return len(b), nil
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // bounded: a test reads what it needs
			}
		}
	}()
	t.Cleanup(func() {
		_ = p.in.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
	})
	return p
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Send writes v as one JSON line to the script's stdin.
func (p *Proc) Send(t *testing.T, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		t.Fatalf("write to the script: %v (stderr: %s)", err, p.Stderr())
	}
}

// Next returns the next stdout line, failing t after timeout.
func (p *Proc) Next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case l := <-p.lines:
		return l
	case <-time.After(timeout):
		t.Fatalf("no output from the script within %v (stderr: %s)", timeout, p.Stderr())
		return ""
	}
}

// Stderr returns what the script wrote on stderr so far.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err.String()
}
