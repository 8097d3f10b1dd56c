package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crash releases the spool's files without Close, as a killed process
// would (nothing is flushed or marked clean).
func crash(t *testing.T, s *Spool) {
	t.Helper()
	s.mu.Lock()
	s.closed = true
	close(s.closedCh)
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	for _, r := range s.readers {
		r.cmu <- struct{}{}
		if r.cf != nil {
			r.cf.f.Close()
			r.cf = nil
		}
		<-r.cmu
		r.closeFile()
	}
	if err := s.closeFiles(); err != nil {
		t.Fatal(err)
	}
}

// drain reads every record currently in the log from the reader's position.
func drain(t *testing.T, s *Spool, r *Reader) []Record {
	t.Helper()
	var out []Record
	for {
		s.mu.Lock()
		done := r.pos > s.last
		s.mu.Unlock()
		if done {
			return out
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		recs, err := r.Next(ctx, 100, 0)
		cancel()
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		for _, rec := range recs {
			rec.Data = append([]byte(nil), rec.Data...)
			out = append(out, rec)
		}
	}
}

func seqsOf(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func onlySegment(t *testing.T, dir string) string {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("want one segment, have %v", segs)
	}
	return segs[0]
}

// recordOffsets returns the offset of every record in a clean segment file.
func recordOffsets(t *testing.T, data []byte) []int {
	t.Helper()
	var offs []int
	for off := 0; off < len(data); {
		_, n, err := decodeRecord(data[off:])
		if err != nil {
			t.Fatalf("decode at %d: %v", off, err)
		}
		offs = append(offs, off)
		off += n
	}
	return offs
}

func TestRecoveryCorruption(t *testing.T) {
	cases := []struct {
		name         string
		damage       func(data []byte, offs []int) []byte
		wantSeqs     func() []uint64
		droppedRecs  float64
		droppedBytes func(data []byte, offs []int) float64
	}{
		{
			name:        "torn tail",
			damage:      func(d []byte, offs []int) []byte { return d[:len(d)-300] },
			wantSeqs:    func() []uint64 { return seqRange(1, 39) },
			droppedRecs: 1,
			droppedBytes: func(d []byte, offs []int) float64 {
				return float64(len(d) - 300 - offs[39])
			},
		},
		{
			name:         "partial header at the tail",
			damage:       func(d []byte, offs []int) []byte { return append(d, magicBytes[:3]...) },
			wantSeqs:     func() []uint64 { return seqRange(1, 40) },
			droppedRecs:  1,
			droppedBytes: func([]byte, []int) float64 { return 3 },
		},
		{
			name: "flipped byte in the middle",
			damage: func(d []byte, offs []int) []byte {
				d[offs[19]+headerSize+100] ^= 0xff
				return d
			},
			wantSeqs:     func() []uint64 { return append(seqRange(1, 19), seqRange(21, 40)...) },
			droppedRecs:  1,
			droppedBytes: func(d []byte, offs []int) float64 { return float64(offs[20] - offs[19]) },
		},
		{
			name: "corrupt length in the middle",
			damage: func(d []byte, offs []int) []byte {
				copy(d[offs[9]+4:], []byte{0xff, 0xff, 0x00, 0x01})
				return d
			},
			wantSeqs:     func() []uint64 { return append(seqRange(1, 9), seqRange(11, 40)...) },
			droppedRecs:  1,
			droppedBytes: func(d []byte, offs []int) float64 { return float64(offs[10] - offs[9]) },
		},
		{
			name: "garbage with a fake magic inserted between records",
			damage: func(d []byte, offs []int) []byte {
				junk := append([]byte("xx"), magicBytes...)
				junk = append(junk, bytes.Repeat([]byte{0x07}, 40)...)
				out := append([]byte(nil), d[:offs[5]]...)
				out = append(out, junk...)
				return append(out, d[offs[5]:]...)
			},
			wantSeqs:     func() []uint64 { return seqRange(1, 40) },
			droppedRecs:  0,
			droppedBytes: func([]byte, []int) float64 { return 46 },
		},
		{
			name: "zeroed block across three records",
			damage: func(d []byte, offs []int) []byte {
				clear(d[offs[30]+10 : offs[32]+20])
				return d
			},
			wantSeqs:     func() []uint64 { return append(seqRange(1, 30), seqRange(34, 40)...) },
			droppedRecs:  3,
			droppedBytes: func(d []byte, offs []int) float64 { return float64(offs[33] - offs[30]) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			h := open(t, cfg)
			if _, err := h.s.Reader("nats"); err != nil {
				t.Fatal(err)
			}
			h.appendSubj(40, 1200)
			crash(t, h.s)
			path := onlySegment(t, dir)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			offs := recordOffsets(t, data)
			wantBytes := tc.droppedBytes(data, offs)
			damaged := tc.damage(append([]byte(nil), data...), offs)
			if err := os.WriteFile(path, damaged, 0o640); err != nil {
				t.Fatal(err)
			}

			h = open(t, cfg)
			if got := counter(h.m.droppedRecords); got != tc.droppedRecs {
				t.Errorf("dropped records %v, want %v", got, tc.droppedRecs)
			}
			if got := counter(h.m.droppedBytes); got != wantBytes {
				t.Errorf("dropped bytes %v, want %v", got, wantBytes)
			}
			r, _ := h.s.Reader("nats")
			recs := drain(t, h.s, r)
			for _, rec := range recs {
				checkRecord(t, rec, 1200, true)
			}
			if got, want := fmt.Sprint(seqsOf(recs)), fmt.Sprint(tc.wantSeqs()); got != want {
				t.Fatalf("recovered seqs %s\nwant %s", got, want)
			}
			// New appends continue after the highest surviving seq.
			if s := h.appendSubj(1, 1200); s[0] != tc.wantSeqs()[len(tc.wantSeqs())-1]+1 {
				t.Fatalf("next seq %d", s[0])
			}
			// The repair is durable: a second open drops nothing.
			if err := h.s.Close(); err != nil {
				t.Fatal(err)
			}
			h = open(t, cfg)
			if got := counter(h.m.droppedBytes); got != 0 {
				t.Fatalf("second open dropped %v bytes", got)
			}
			r, _ = h.s.Reader("nats")
			if n := len(drain(t, h.s, r)); n != len(tc.wantSeqs())+1 {
				t.Fatalf("second open has %d records", n)
			}
		})
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestRecoveryCorruptSegmentAmongMany(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	h := open(t, cfg)
	h.s.Reader("nats")
	h.appendSubj(200, 2000)
	crash(t, h.s)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 4 {
		t.Fatalf("segments %v", segs)
	}
	// Overwrite a whole middle segment with garbage.
	info, _ := os.Stat(segs[1])
	if err := os.WriteFile(segs[1], bytes.Repeat([]byte("garbage!"), int(info.Size()/8)), 0o640); err != nil {
		t.Fatal(err)
	}
	h = open(t, cfg)
	r, _ := h.s.Reader("nats")
	recs := drain(t, h.s, r)
	lost := 200 - len(recs)
	if lost < 20 || lost > 40 {
		t.Fatalf("lost %d records for one segment", lost)
	}
	for i, rec := range recs {
		checkRecord(t, rec, 2000, true)
		if i > 0 && rec.Seq <= recs[i-1].Seq {
			t.Fatal("seqs not increasing")
		}
	}
	if counter(h.m.droppedBytes) != float64(info.Size()/8*8) {
		t.Fatalf("dropped bytes %v", counter(h.m.droppedBytes))
	}
}

func TestCursorSurvivesTornSlot(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	h := open(t, cfg)
	r, _ := h.s.Reader("nats")
	h.appendSubj(10, 100)
	readAll(t, r, 10, 100, true)
	_ = r.Commit(5)
	_ = r.Commit(7) // the newest slot now holds 7, the other 5
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nats.cursor")
	data, _ := os.ReadFile(path)
	// Damage the slot that holds 7: the cursor falls back to 5 (at least
	// once: re-delivery, never loss).
	for slot := 0; slot < 2; slot++ {
		s := data[slot*slotSize : (slot+1)*slotSize]
		if s[16] == 7 {
			s[20] ^= 0xff
		}
	}
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	h = open(t, cfg)
	r, _ = h.s.Reader("nats")
	if r.Committed() != 5 {
		t.Fatalf("cursor after torn slot %d, want 5", r.Committed())
	}
}

const killChildEnv = "SPOOL_KILL9_CHILD_DIR"

// TestKill9 runs a child process (this test binary) that appends as fast as
// it can (one appender, or eight concurrent ones whose appends are
// group-committed) and prints every seq Append returned; the parent
// SIGKILLs it mid-stream, reopens the spool and checks that every printed
// seq is there with intact content.
func TestKill9(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		kill9Child(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	for _, tc := range []struct {
		policy    string
		appenders int
	}{{FsyncNever, 1}, {FsyncInterval, 1}, {FsyncNever, 8}, {FsyncInterval, 8}} {
		policy := tc.policy
		t.Run(fmt.Sprintf("%s/appenders-%d", policy, tc.appenders), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$", "-test.count=1")
			cmd.Env = append(os.Environ(), killChildEnv+"="+dir, "SPOOL_KILL9_FSYNC="+policy,
				fmt.Sprintf("SPOOL_KILL9_APPENDERS=%d", tc.appenders))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			var acked []uint64
			for sc.Scan() && len(acked) < 3000 {
				line := sc.Text()
				if v, ok := strings.CutPrefix(line, "SEQ "); ok {
					seq, err := strconv.ParseUint(v, 10, 64)
					if err != nil {
						t.Fatal(err)
					}
					acked = append(acked, seq)
				}
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// Keep reading what the child printed before it died.
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "SEQ "); ok {
					seq, _ := strconv.ParseUint(v, 10, 64)
					acked = append(acked, seq)
				}
			}
			_ = cmd.Wait()
			if len(acked) < 3000 {
				t.Fatalf("child printed only %d seqs", len(acked))
			}

			cfg := testConfig(dir)
			h := open(t, cfg)
			r, err := h.s.Reader("nats")
			if err != nil {
				t.Fatal(err)
			}
			committed := r.Committed()
			r.Rewind()
			recs := drain(t, h.s, r)
			have := map[uint64]bool{}
			for _, rec := range recs {
				checkRecord(t, rec, 1500, tc.appenders == 1)
				have[rec.Seq] = true
			}
			for _, seq := range acked {
				if seq > committed && !have[seq] {
					t.Fatalf("seq %d returned by Append before the kill is missing (cursor %d, %d records recovered)", seq, committed, len(recs))
				}
			}
			if committed == 0 {
				t.Fatal("child's commits were not persisted")
			}
			last := slices.Max(acked) // printed in order only with one appender
			if h.s.LastSeq() < last {
				t.Fatalf("last seq %d < last acknowledged %d", h.s.LastSeq(), last)
			}
			if s := h.appendSubj(1, 1500); s[0] <= last {
				t.Fatalf("seq %d reused after the kill (last acknowledged %d)", s[0], last)
			}
			t.Logf("%s: %d seqs acknowledged, %d recovered, cursor %d, dropped %v bytes", policy,
				len(acked), len(recs), committed, counter(h.m.droppedBytes))
		})
	}
}

func kill9Child(dir string) {
	cfg := testConfig(dir)
	cfg.Fsync = os.Getenv("SPOOL_KILL9_FSYNC")
	cfg.FsyncInterval = 5 * time.Millisecond
	cfg.MaxBytes = 1 << 30
	s, err := Open(cfg, nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	r, err := s.Reader("nats")
	if err != nil {
		os.Exit(2)
	}
	w := bufio.NewWriterSize(os.Stdout, 64)
	var wmu sync.Mutex
	appendLoop := func() {
		for i := 0; ; i++ {
			subj := "" // concurrent appenders cannot know their seq in advance
			if os.Getenv("SPOOL_KILL9_APPENDERS") == "1" {
				subj = subjectOf(s.LastSeq() + 1)
			}
			seq, err := s.Append(context.Background(), subj, func(seq uint64, dst []byte) []byte {
				return payload(dst, seq, 1500)
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, "child append:", err)
				os.Exit(2)
			}
			wmu.Lock()
			fmt.Fprintf(w, "SEQ %d\n", seq)
			w.Flush()
			wmu.Unlock()
			if i%100 == 99 {
				_ = r.Commit(seq / 2) // an uplink far behind: most of the log stays unconfirmed
			}
		}
	}
	n, _ := strconv.Atoi(os.Getenv("SPOOL_KILL9_APPENDERS"))
	for range max(1, n) - 1 {
		go appendLoop()
	}
	appendLoop()
}
