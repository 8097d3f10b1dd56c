package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

const (
	segSuffix  = ".seg"
	indexEvery = 32 // one sparse index entry per this many records
)

type indexEntry struct {
	seq      uint64
	off      int64
	appended int64
}

// segment is one log file. base is the seq the segment was created for (its
// name): every record in it has seq >= base, and the newest segment's base is
// a floor for the next seq even when it holds no record.
type segment struct {
	base              uint64
	path              string
	size              int64
	count             int64
	first, last       uint64 // seqs of the first and last record (valid when count > 0)
	firstApp, lastApp int64  // their append times, unix ms
	index             []indexEntry
}

func segPath(dir string, base uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", base, segSuffix))
}

func (g *segment) add(seq uint64, off int64, size int, appended int64) {
	if g.count%indexEvery == 0 {
		g.index = append(g.index, indexEntry{seq: seq, off: off, appended: appended})
	}
	if g.count == 0 {
		g.first, g.firstApp = seq, appended
	}
	g.last, g.lastApp = seq, appended
	g.count++
	g.size = off + int64(size)
}

// locate returns the offset of the indexed record at or before seq and its
// append time; records from there on are read sequentially.
func (g *segment) locate(seq uint64) (int64, int64) {
	i := sort.Search(len(g.index), func(i int) bool { return g.index[i].seq > seq })
	if i == 0 {
		return 0, g.firstApp
	}
	e := g.index[i-1]
	return e.off, e.appended
}

// listSegments returns the bases of the segment files in dir, oldest first.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: list %s: %w", dir, err)
	}
	var bases []uint64
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(dir, name)) // an interrupted rewrite; the original is intact
			continue
		}
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		b, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			continue
		}
		bases = append(bases, b)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, nil
}

// scanResult is what recovery found in one segment.
type scanResult struct {
	droppedRecords int64 // seqs missing because their bytes were corrupt, plus one per torn tail
	droppedBytes   int64
	truncateAt     int64 // valid data ends here (== len(data) when nothing to cut)
	rewrite        bool  // corruption in the middle: valid records must be compacted
	keep           [][2]int
}

// scanSegment verifies every record of data (a whole segment file), fills g
// with the valid ones at the offsets they will have once the file is cleaned,
// and reports what it had to drop. prevLast is the last seq of the previous
// segment: seqs must increase across the log.
func scanSegment(data []byte, g *segment, prevLast uint64) scanResult {
	res := scanResult{truncateAt: int64(len(data))}
	last := prevLast
	valid := func(off int) (rawRecord, int, bool) {
		rec, n, err := decodeRecord(data[off:])
		if err != nil || rec.seq <= last || rec.seq < g.base {
			return rec, n, false
		}
		return rec, n, true
	}
	var newOff int64
	off := 0
	for off < len(data) {
		rec, n, ok := valid(off)
		if ok {
			g.add(rec.seq, newOff, n, rec.appended)
			res.keep = append(res.keep, [2]int{off, off + n})
			newOff += int64(n)
			last = rec.seq
			off += n
			continue
		}
		// Garbage at off: find the next valid record.
		next := -1
		for from := off + 1; ; {
			c, _ := resync(data, from, true)
			if c < 0 {
				break
			}
			if _, _, ok := valid(c); ok {
				next = c
				break
			}
			from = c + 1
		}
		if next < 0 {
			// Torn tail or garbage to the end.
			res.droppedBytes += int64(len(data) - off)
			if len(data)-off >= 4 && string(data[off:off+4]) == string(magicBytes) || len(data)-off < 4 {
				res.droppedRecords++
			}
			if len(res.keep) > 0 && res.keep[len(res.keep)-1][1] != off {
				res.rewrite = true
			}
			res.truncateAt = newOff
			break
		}
		nrec, _, _ := decodeRecord(data[next:])
		lo := last + 1
		if g.base > lo {
			lo = g.base
		}
		res.droppedRecords += int64(nrec.seq - lo)
		res.droppedBytes += int64(next - off)
		res.rewrite = true
		off = next
	}
	if res.rewrite {
		res.truncateAt = newOff
	}
	return res
}

// repairSegment makes the file match what scanSegment kept: a truncation for
// a torn tail, a compacting rewrite (temp file, fsync, rename) for garbage
// in the middle.
func repairSegment(path string, data []byte, res scanResult) error {
	if !res.rewrite {
		if res.truncateAt == int64(len(data)) {
			return nil
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("spool: open %s: %w", path, err)
		}
		if err := f.Truncate(res.truncateAt); err != nil {
			f.Close()
			return fmt.Errorf("spool: truncate %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("spool: sync %s: %w", path, err)
		}
		return f.Close()
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("spool: rewrite %s: %w", path, err)
	}
	for _, k := range res.keep {
		if _, err := f.Write(data[k[0]:k[1]]); err != nil {
			f.Close()
			return fmt.Errorf("spool: rewrite %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("spool: rewrite %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("spool: rewrite %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("spool: rewrite %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: open dir %s: %w", dir, err)
	}
	err = d.Sync()
	d.Close()
	if err != nil {
		return fmt.Errorf("spool: sync dir %s: %w", dir, err)
	}
	return nil
}

// slotFile is a small state file updated in place: two fixed slots written
// alternately, each with a generation and a CRC, so a torn write of one slot
// leaves the other intact. Used for reader cursors and the seq high-water mark.
//
//	slot (64 bytes): magic "SMLS" | crc32c(gen..payload) | gen uint64 | payload [48]byte
type slotFile struct {
	f   *os.File
	gen uint64
	buf [slotSize]byte
}

const (
	slotSize    = 64
	slotPayload = 48
)

var slotMagic = []byte("SMLS")

func openSlotFile(path string) (*slotFile, []byte, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	var raw [2 * slotSize]byte
	n, err := f.ReadAt(raw[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, nil, fmt.Errorf("spool: read %s: %w", path, err)
	}
	sf := &slotFile{f: f}
	var best []byte
	for i := 0; i+slotSize <= n; i += slotSize {
		s := raw[i : i+slotSize]
		if string(s[:4]) != string(slotMagic) || crc32.Checksum(s[8:], castagnoli) != binary.LittleEndian.Uint32(s[4:]) {
			continue
		}
		if gen := binary.LittleEndian.Uint64(s[8:]); best == nil || gen > sf.gen {
			sf.gen = gen
			best = append([]byte(nil), s[16:]...)
		}
	}
	return sf, best, nil
}

func (sf *slotFile) write(payload []byte, sync bool) error {
	sf.gen++
	b := sf.buf[:]
	clear(b)
	copy(b, slotMagic)
	binary.LittleEndian.PutUint64(b[8:], sf.gen)
	copy(b[16:], payload)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	if _, err := sf.f.WriteAt(b, int64(sf.gen%2)*slotSize); err != nil {
		return fmt.Errorf("spool: write %s: %w", sf.f.Name(), err)
	}
	if sync {
		if err := sf.f.Sync(); err != nil {
			return fmt.Errorf("spool: sync %s: %w", sf.f.Name(), err)
		}
	}
	return nil
}
