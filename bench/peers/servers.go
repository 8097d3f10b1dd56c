package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// simProc is one simulator process (libmodbus or node-opcua). It exits when
// its stdin closes, so it never outlives the driver, and is stopped by stop.
type simProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	addr    string       // host:port (Modbus) or opc.tcp:// endpoint (OPC UA)
	updates atomic.Int64 // OPC UA: values set so far, as last reported
	done    chan struct{}
}

// startServer starts cmd and waits (up to timeout) for its first line that
// ready accepts; ready returns the server's address. Later lines go to each,
// the process's stderr to logw.
func startServer(cmd *exec.Cmd, logw io.Writer, timeout time.Duration,
	ready func(line string) (string, bool), each func(s *simProc, line string)) (*simProc, error) {
	s := &simProc{cmd: cmd, done: make(chan struct{})}
	var err error
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	addr := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		got := false
		for sc.Scan() {
			line := sc.Text()
			if !got {
				if a, ok := ready(line); ok {
					got = true
					addr <- a
				}
				continue
			}
			if each != nil {
				each(s, line)
			}
		}
	}()
	select {
	case s.addr = <-addr:
		return s, nil
	case <-s.done:
		s.stop()
		return nil, fmt.Errorf("%s exited before it was ready (its log: %s)", cmd.Path, logName(logw))
	case <-time.After(timeout):
		s.stop()
		return nil, fmt.Errorf("%s not ready after %v", cmd.Path, timeout)
	}
}

// stop closes the server's stdin (its signal to exit), then kills it if it
// is still there after 5 s, and reaps it.
func (s *simProc) stop() {
	_ = s.stdin.Close()
	exited := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-exited
	}
}

func logName(w io.Writer) string {
	if f, ok := w.(*os.File); ok {
		return f.Name()
	}
	return "-"
}

// stopAll stops servers in parallel.
func stopAll(servers []*simProc) {
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(s.stop)
	}
	wg.Wait()
}

// startModbus starts n libmodbus servers (bench/peers/modbus/server.c),
// each with regs holding registers, and returns them with their addresses.
func startModbus(ctx context.Context, bin string, n, regs int, logw io.Writer) ([]*simProc, error) {
	var servers []*simProc
	for range n {
		cmd := exec.CommandContext(ctx, bin, strconv.Itoa(regs))
		s, err := startServer(cmd, logw, 10*time.Second, func(line string) (string, bool) {
			p, ok := strings.CutPrefix(line, "PORT ")
			return "127.0.0.1:" + p, ok
		}, nil)
		if err != nil {
			stopAll(servers)
			return nil, fmt.Errorf("libmodbus server: %w", err)
		}
		servers = append(servers, s)
	}
	return servers, nil
}

// startOPCUA starts n node-opcua servers (bench/peers/opcua/server.js) of
// nodes variables changing every interval. nodePath is node-opcua's
// node_modules folder.
func startOPCUA(ctx context.Context, script, nodePath, pkiDir string, n, nodes int, interval time.Duration, logw io.Writer) ([]*simProc, error) {
	var servers []*simProc
	for i := range n {
		cmd := exec.CommandContext(ctx, "node", script, "--pki", fmt.Sprintf("%s/%d", pkiDir, i),
			"--nodes", strconv.Itoa(nodes), "--interval", strconv.FormatInt(interval.Milliseconds(), 10))
		cmd.Env = append(os.Environ(), "NODE_PATH="+nodePath)
		s, err := startServer(cmd, logw, 120*time.Second, func(line string) (string, bool) {
			var hello struct{ Endpoint string }
			if json.Unmarshal([]byte(line), &hello) != nil || hello.Endpoint == "" {
				return "", false // node-opcua's own notices
			}
			return hello.Endpoint, true
		}, func(s *simProc, line string) {
			var r struct{ Updates *int64 }
			if json.Unmarshal([]byte(line), &r) == nil && r.Updates != nil {
				s.updates.Store(*r.Updates)
			}
		})
		if err != nil {
			stopAll(servers)
			if errors.Is(err, exec.ErrNotFound) {
				return nil, fmt.Errorf("node-opcua server: node is not installed: %w", err)
			}
			return nil, fmt.Errorf("node-opcua server: %w", err)
		}
		servers = append(servers, s)
	}
	return servers, nil
}

// updates sums the values the OPC UA servers report having set.
func updates(servers []*simProc) int64 {
	var n int64
	for _, s := range servers {
		n += s.updates.Load()
	}
	return n
}
