package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procStat is what one /proc/<pid>/stat line says about a process.
type procStat struct {
	ppid int
	cpu  time.Duration // utime + stime + cutime + cstime: its own CPU and that of the children it reaped
}

// parseStat reads a /proc/<pid>/stat line. The command name (field 2) is in
// parentheses and may hold spaces, so fields are counted after the last ')'.
func parseStat(line []byte) (procStat, error) {
	i := bytes.LastIndexByte(line, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat: no ')' in %q", line)
	}
	f := strings.Fields(string(line[i+1:]))
	// f[0] state, f[1] ppid, f[11] utime, f[12] stime, f[13] cutime, f[14] cstime
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("stat: %d fields after the name, want >= 15", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("stat: ppid %q: %w", f[1], err)
	}
	var ticks int64
	for _, s := range f[11:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("stat: cpu time %q: %w", s, err)
		}
		ticks += v
	}
	return procStat{ppid: ppid, cpu: time.Duration(ticks) * time.Second / clockTicks}, nil
}

// statusKB returns the kB figures VmRSS and VmHWM of a /proc/<pid>/status text.
func statusKB(text []byte) (rss, hwm int64) {
	for line := range bytes.Lines(text) {
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmRSS":
			dst = &rss
		case "VmHWM":
			dst = &hwm
		default:
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) > 0 {
			*dst, _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return rss, hwm
}

// treeSample is one look at a process and all its descendants.
type treeSample struct {
	procs int
	cpu   time.Duration // summed CPU (user + system, reaped children included)
	rss   int64         // summed VmRSS, bytes (pages shared between them count once per process)
	hwm   int64         // summed VmHWM, bytes: each process's own peak
}

// sampleTree sums CPU time and memory over root and every process below it.
// CPU of a descendant that exited is not lost: its parent's cutime/cstime
// holds it once reaped (a zombie still shows its own). Errors: root is gone.
func sampleTree(root int) (treeSample, error) {
	stats := map[int]procStat{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return treeSample{}, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		if st, err := parseStat(b); err == nil {
			stats[pid] = st
		}
	}
	if _, ok := stats[root]; !ok {
		return treeSample{}, fmt.Errorf("process %d is gone", root)
	}
	in := map[int]bool{root: true}
	for changed := true; changed; {
		changed = false
		for pid, st := range stats {
			if !in[pid] && in[st.ppid] {
				in[pid] = true
				changed = true
			}
		}
	}
	var s treeSample
	for pid := range in {
		s.procs++
		s.cpu += stats[pid].cpu
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		if err != nil {
			continue
		}
		rss, hwm := statusKB(b)
		s.rss += rss << 10
		s.hwm += hwm << 10
	}
	return s, nil
}
