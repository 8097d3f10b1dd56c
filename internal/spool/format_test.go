package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFormatRecordedAndChecked: a new spool records its format; a spool of
// another format, or a directory whose format file says nothing we know, is
// refused at Open with ErrFormat before anything is read or written; a
// spool written before the format was recorded (no file) is taken as
// version 1 and gets the file.
func TestFormatRecordedAndChecked(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir}
	s, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.Append(context.Background(), "smelter.v1.s.motor.m-1.data", func(_ uint64, dst []byte) []byte { return append(dst, "{}"...) })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, FormatFileName))
	if err != nil || string(data) != "smelter-spool 1\n" {
		t.Fatalf("format file %q, %v", data, err)
	}

	// a spool from before the format file: still version 1, file written
	if err := os.Remove(filepath.Join(dir, FormatFileName)); err != nil {
		t.Fatal(err)
	}
	s, err = Open(cfg, nil, nil)
	if err != nil {
		t.Fatalf("legacy spool: %v", err)
	}
	if s.LastSeq() != seq {
		t.Fatalf("legacy spool lost its record: last seq %d", s.LastSeq())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FormatFileName)); err != nil {
		t.Fatalf("format file not written for a legacy spool: %v", err)
	}

	for _, tc := range []struct{ content, want string }{
		{"smelter-spool 2\n", "holds a spool of format 2; this build reads format 1"},
		{"something else\n", "does not say which format"},
	} {
		if err := os.WriteFile(filepath.Join(dir, FormatFileName), []byte(tc.content), 0o640); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadDir(dir)
		_, err := Open(cfg, nil, nil)
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("format %q: %v, want ErrFormat saying %q", tc.content, err, tc.want)
		}
		after, _ := os.ReadDir(dir)
		if len(after) != len(before) {
			t.Fatalf("format %q: Open changed the directory (%d -> %d entries)", tc.content, len(before), len(after))
		}
	}
}
