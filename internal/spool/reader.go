package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	readBufSize  = 256 << 10 // grows to hold a larger record
	maxInterned  = 4096
	defaultBatch = 1
)

// Reader is one consumer's durable cursor (one per uplink). Next and Rewind
// belong to one goroutine; Commit and Lag may be called from any.
type Reader struct {
	s    *Spool
	name string

	ephemeral bool // a Tail reader: in-memory cursor, holds nothing back

	// Guarded by s.mu. committed is what the uplink confirmed; durable is
	// the part of it whose cursor has been written to the cursor file
	// (or could not be: disk full). Segments are deleted only below every
	// reader's durable cursor, so a restart never finds its cursor before
	// a hole (TestKill9).
	committed uint64
	durable   uint64
	opened    bool
	wake      chan struct{}

	// Owned by the goroutine calling Next / Rewind.
	pos     uint64
	out     []Record
	buf     []byte
	f       *os.File
	fBase   uint64
	nextOff int64  // continuation: the record at or after nextSeq starts here in fBase
	nextSeq uint64 // (0: none)
	intern  map[string]string
	tokens  float64
	tokAt   time.Time
	held    []*arenaChunk // the chunks of the records the last Next handed out from the cache (guarded by s.mu)

	// Cursor persistence.
	cmu       chan struct{} // 1-slot mutex
	cf        *slotFile
	persisted uint64
	cdirty    bool

	lost       prometheus.Counter
	diskReads  prometheus.Counter
	cacheReads prometheus.Counter
}

// loadReader registers the cursor stored in dir for name (creating it at
// the start of the log when absent). Caller is Open or holds nothing.
func (s *Spool) loadReader(name string) (*Reader, error) {
	path := filepath.Join(s.cfg.Dir, name+cursorExt)
	fi, statErr := os.Stat(path)
	existed := statErr == nil && fi.Size() > 0
	cf, payload, err := openSlotFile(path)
	if err != nil {
		return nil, err
	}
	r := &Reader{
		s:          s,
		name:       name,
		wake:       make(chan struct{}, 1),
		cmu:        make(chan struct{}, 1),
		cf:         cf,
		intern:     map[string]string{},
		lost:       s.m.readerDiscarded.WithLabelValues(name),
		diskReads:  s.m.diskReads.WithLabelValues(name),
		cacheReads: s.m.cacheReads.WithLabelValues(name),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.readers[name]; ok { // loaded concurrently
		cf.f.Close()
		return old, nil
	}
	if payload != nil {
		r.committed = binary.LittleEndian.Uint64(payload)
		r.persisted = r.committed
	} else {
		// A new reader starts at the oldest record still in the log; so
		// does one whose cursor file is unreadable (re-delivery, never a
		// skip).
		r.committed = s.firstAvailLocked() - 1
		if existed {
			s.m.cursorResets.Inc()
			s.log.Warn("spool: reader cursor unreadable; restarting it from the oldest record (data is re-delivered)",
				"reader", name, "from_seq", r.committed+1)
		}
		if err := r.writeCursor(r.committed, true); err != nil {
			// Disk full: the cursor lives in memory and is persisted at
			// its first commit; until then a restart starts it at the
			// oldest record again (re-delivery, never a skip).
			s.log.Warn("spool: cannot persist a new reader cursor yet; keeping it in memory", "reader", name, "err", err)
		} else {
			r.persisted = r.committed
		}
	}
	if r.committed > s.last {
		s.log.Warn("spool: reader cursor beyond the end of the log; clamped", "reader", name,
			"cursor", r.committed, "last_seq", s.last)
		r.committed = s.last
	}
	r.durable = r.committed
	r.pos = r.committed + 1
	s.readers[name] = r
	return r, nil
}

// Reader returns the durable reader called name ([A-Za-z0-9_-]{1,64}),
// creating its cursor at the oldest record when it is new. Each name may be
// opened once per Open. Every reader known in the directory holds back
// deletion of what it has not committed, opened or not: open all readers
// before appending, and RemoveReader the ones no longer configured.
func (s *Spool) Reader(name string) (*Reader, error) {
	if !readerName.MatchString(name) {
		return nil, fmt.Errorf("spool: reader name %q: want [A-Za-z0-9_-]{1,64}", name)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	r, ok := s.readers[name]
	s.mu.Unlock()
	if !ok {
		var err error
		if r, err = s.loadReader(name); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.opened {
		return nil, fmt.Errorf("%w: %s", ErrReaderOpen, name)
	}
	r.opened = true
	s.open = append(s.open, r)
	return r, nil
}

// Readers returns the names of every reader known to the spool, sorted:
// those opened in this run and those whose cursor file was found in the
// directory at Open. A gateway compares it with its configured uplinks and
// removes the rest (RemoveReader), so a cursor left by an uplink that is no
// longer configured does not hold data back forever.
func (s *Spool) Readers() []string {
	s.mu.Lock()
	out := make([]string, 0, len(s.readers))
	for name := range s.readers {
		out = append(out, name)
	}
	s.mu.Unlock()
	sort.Strings(out)
	return out
}

// Tail returns a reader that is not durable: it starts after the last
// record appended, keeps its cursor in memory only, does not hold back
// deletion and is not listed by Readers or the lag metrics. A gateway uses
// it for a live lane that runs beside a durable reader draining a backlog.
// Its metrics carry name as the reader label. Replay_rate does not apply to
// it. Close it when done, from the goroutine that calls Next.
func (s *Spool) Tail(name string) (*Reader, error) {
	if !readerName.MatchString(name) {
		return nil, fmt.Errorf("spool: reader name %q: want [A-Za-z0-9_-]{1,64}", name)
	}
	r := &Reader{
		s:          s,
		name:       name,
		ephemeral:  true,
		wake:       make(chan struct{}, 1),
		cmu:        make(chan struct{}, 1),
		intern:     map[string]string{},
		lost:       s.m.readerDiscarded.WithLabelValues(name),
		diskReads:  s.m.diskReads.WithLabelValues(name),
		cacheReads: s.m.cacheReads.WithLabelValues(name),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	r.committed = s.last
	r.pos = s.last + 1
	r.opened = true
	s.open = append(s.open, r)
	return r, nil
}

// Close releases a reader returned by Tail: it is no longer woken by
// appends and its open segment file is closed. Call it from the goroutine
// that calls Next, never concurrently with Next. Durable readers need no
// Close (the spool's Close persists them).
func (r *Reader) Close() {
	s := r.s
	s.mu.Lock()
	for i, o := range s.open {
		if o == r {
			s.open = append(s.open[:i], s.open[i+1:]...)
			break
		}
	}
	r.releaseLocked(true) // what it handed out stays valid
	s.mu.Unlock()
	r.closeFile()
}

// RemoveReader forgets a reader and deletes its cursor, so it no longer
// holds back deletion. The reader must not be in use.
func (s *Spool) RemoveReader(name string) error {
	s.mu.Lock()
	r, ok := s.readers[name]
	if !ok {
		s.mu.Unlock()
		return nil
	}
	delete(s.readers, name)
	for i, o := range s.open {
		if o == r {
			s.open = append(s.open[:i], s.open[i+1:]...)
			break
		}
	}
	r.releaseLocked(true)
	s.deleteCommittedLocked()
	s.wakeSpaceLocked()
	s.mu.Unlock()
	r.cmu <- struct{}{}
	err := r.cf.f.Close()
	r.cf = nil
	<-r.cmu
	r.closeFile()
	if rmErr := os.Remove(filepath.Join(s.cfg.Dir, name+cursorExt)); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	if err != nil {
		return fmt.Errorf("spool: remove reader %s: %w", name, err)
	}
	return nil
}

// Name returns the reader's name.
func (r *Reader) Name() string { return r.name }

// Next returns the records after the read position, oldest first: at most
// maxRecords and, beyond the first record, at most maxBytes of data
// (<= 0: no byte limit). It blocks until at least one record is available,
// ctx is done or the spool is closed. The returned slices are valid until
// the next call, and after a Rewind or Close for good: their bytes (a disk
// read buffer, or the append arena chunks the tail cache shares) are
// reused only once the next call has begun, so the caller must not keep
// them, nor let an uplink's client keep them, past it; a failed publish
// may leave a message queued in an uplink's client, which sends it later,
// so Rewind makes the next disk read use a new buffer and the chunks of
// the last records never reused. Recent records come from
// memory; a reader behind the tail
// cache reads the segment files, at most replay_rate records/s. A reader
// whose next records were discarded skips to the oldest remaining one and
// counts the gap (smelter_spool_reader_discarded_records_total).
func (r *Reader) Next(ctx context.Context, maxRecords, maxBytes int) ([]Record, error) {
	if maxRecords <= 0 {
		maxRecords = defaultBatch
	}
	if maxBytes <= 0 {
		maxBytes = math.MaxInt
	}
	s := r.s
	for {
		s.mu.Lock()
		r.releaseLocked(false) // the caller is done with the last records
		if s.closed {
			s.mu.Unlock()
			r.closeFile()
			return nil, ErrClosed
		}
		if r.pos <= r.committed {
			r.pos = r.committed + 1
		}
		var persist uint64
		if first := s.firstAvailLocked(); r.pos < first {
			gap := first - r.pos
			r.lost.Add(float64(gap))
			s.log.Warn("spool: reader skipped discarded records", "reader", r.name, "from_seq", r.pos, "to_seq", first-1, "records", gap)
			r.pos = first
			if r.committed < first-1 {
				r.committed = first - 1
				r.durable = max(r.durable, r.committed) // nothing below first is left to delete
				persist = r.committed
			}
		}
		if r.pos > s.last {
			s.mu.Unlock()
			if err := r.persistIf(persist); err != nil {
				return nil, err
			}
			select {
			case <-r.wake:
				continue
			case <-ctx.Done():
				r.closeFile() // the caller stops reading: the segment file must not outlive the spool
				return nil, ctx.Err()
			case <-s.closedCh:
				continue
			}
		}
		if _, ok := s.cache.get(r.pos); ok {
			r.readCache(maxRecords, maxBytes)
			s.mu.Unlock()
			if err := r.persistIf(persist); err != nil {
				return nil, err
			}
			if len(r.out) == 0 {
				continue // only lost seqs: skipped
			}
			return r.out, nil
		}
		plan, ok := r.planLocked()
		s.mu.Unlock()
		if err := r.persistIf(persist); err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		n, err := r.replayBudget(ctx, maxRecords)
		if err != nil {
			r.closeFile()
			return nil, err
		}
		recs, err := r.readDisk(plan, n, maxBytes)
		if err != nil {
			return nil, err
		}
		if len(recs) > 0 {
			r.diskReads.Add(float64(len(recs)))
			r.tokens -= float64(len(recs))
			return recs, nil
		}
	}
}

// dropOut empties r.out for a new Next, clearing the records it held: a
// stale entry beyond the new length would keep its bytes reachable, and
// with them the whole arena chunk (or read buffer) they sit in.
func (r *Reader) dropOut() {
	clear(r.out)
	r.out = r.out[:0]
}

// readCache copies cache entries from r.pos. Caller holds s.mu.
func (r *Reader) readCache(maxRecords, maxBytes int) {
	c := &r.s.cache
	r.dropOut()
	total := 0
	for len(r.out) < maxRecords {
		e, ok := c.get(r.pos)
		if !ok {
			break
		}
		if e.lost {
			r.pos++
			continue
		}
		if len(r.out) > 0 && total+len(e.data) > maxBytes {
			break
		}
		total += len(e.data)
		r.out = append(r.out, Record{Seq: e.seq, Subject: e.subject, Data: e.data, Appended: e.appended})
		r.holdLocked(e.chunk)
		r.pos++
	}
	r.cacheReads.Add(float64(len(r.out)))
}

// replayBudget applies replay_rate to a disk read: it returns how many
// records may be read now, waiting for at least one token.
func (r *Reader) replayBudget(ctx context.Context, want int) (int, error) {
	rate := r.s.cfg.ReplayRate
	if rate <= 0 || r.ephemeral {
		return want, nil
	}
	burst := max(1, rate/10)
	now := time.Now()
	if r.tokAt.IsZero() {
		r.tokens, r.tokAt = burst, now
	}
	r.tokens = min(burst, r.tokens+now.Sub(r.tokAt).Seconds()*rate)
	r.tokAt = now
	if r.tokens < 1 {
		wait := time.Duration((1 - r.tokens) / rate * float64(time.Second))
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-r.s.closedCh:
			return 0, ErrClosed
		}
		now = time.Now()
		r.tokens = min(burst, r.tokens+now.Sub(r.tokAt).Seconds()*rate)
		r.tokAt = now
	}
	return max(1, min(want, int(r.tokens))), nil
}

type diskPlan struct {
	base  uint64
	path  string
	limit int64 // valid bytes in the segment at planning time
	off   int64
	last  uint64
}

// planLocked finds where r.pos is on disk. Caller holds s.mu.
func (r *Reader) planLocked() (diskPlan, bool) {
	for _, g := range r.s.segs {
		if g.count == 0 || g.last < r.pos {
			continue
		}
		p := diskPlan{base: g.base, path: g.path, limit: g.size, last: g.last}
		if r.f != nil && r.fBase == g.base && r.nextSeq == r.pos {
			p.off = r.nextOff
		} else {
			p.off, _ = g.locate(r.pos)
		}
		return p, true
	}
	// No record from r.pos on: the seqs up to the last one were lost by
	// failed appends. Skip them.
	r.pos = r.s.last + 1
	return diskPlan{}, false
}

// readDisk reads records from r.pos out of one segment. It returns no
// records (and no error) when the segment vanished or held nothing from
// r.pos on, after moving r.pos past it.
func (r *Reader) readDisk(p diskPlan, maxRecords, maxBytes int) ([]Record, error) {
	if r.f == nil || r.fBase != p.base {
		r.closeFile()
		f, err := os.Open(p.path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // deleted meanwhile; the next round skips past it
		}
		if err != nil {
			return nil, fmt.Errorf("spool: reader %s: %w", r.name, err)
		}
		r.f, r.fBase = f, p.base
	}
	if len(r.buf) == 0 {
		r.buf = make([]byte, readBufSize)
	}
	r.dropOut()
	off := p.off
	total := 0
	for off < p.limit && len(r.out) == 0 {
		want := int(min(int64(len(r.buf)), p.limit-off))
		n, err := r.f.ReadAt(r.buf[:want], off)
		if err != nil && (!errors.Is(err, io.EOF) || n != want) {
			if errors.Is(err, io.EOF) {
				break // shorter than planned: treat the rest as gone
			}
			return nil, fmt.Errorf("spool: reader %s: read %s: %w", r.name, filepath.Base(p.path), err)
		}
		b := r.buf[:n]
		atEOF := off+int64(n) == p.limit
		i := 0
	parse:
		for i < len(b) && len(r.out) < maxRecords {
			rec, size, err := decodeRecord(b[i:])
			switch {
			case errors.Is(err, errShort) && !atEOF:
				if i == 0 && len(b) >= headerSize {
					// A record larger than the buffer: grow and re-read.
					r.buf = make([]byte, headerSize+recordBodyLen(b))
				}
				break parse
			case err != nil:
				nx, short := resync(b, i+1, atEOF)
				switch {
				case nx < 0 && atEOF:
					r.s.m.corruptReadBytes.Add(float64(len(b) - i))
					i = len(b)
				case nx < 0:
					skip := max(i+1, len(b)-3) // a magic may straddle the window
					r.s.m.corruptReadBytes.Add(float64(skip - i))
					i = skip
					break parse
				default:
					r.s.m.corruptReadBytes.Add(float64(nx - i))
					i = nx
					if short {
						break parse
					}
				}
				continue
			}
			if rec.seq < r.pos {
				i += size
				continue
			}
			if len(r.out) > 0 && total+len(rec.data) > maxBytes {
				break parse
			}
			total += len(rec.data)
			r.out = append(r.out, Record{Seq: rec.seq, Subject: r.internSubject(rec.subject), Data: rec.data, Appended: rec.appended})
			r.pos = rec.seq + 1
			i += size
		}
		off += int64(i)
		if i == 0 && len(r.out) == 0 && atEOF {
			break
		}
	}
	r.nextOff, r.nextSeq = off, r.pos
	if len(r.out) == 0 && r.pos <= p.last {
		// Nothing readable from r.pos to the end of this segment.
		r.pos = p.last + 1
		r.nextSeq = 0
	}
	return r.out, nil
}

func (r *Reader) internSubject(b []byte) string {
	if s, ok := r.intern[string(b)]; ok {
		return s
	}
	if len(r.intern) >= maxInterned {
		clear(r.intern)
	}
	s := string(b)
	r.intern[s] = s
	return s
}

func (r *Reader) closeFile() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
		r.nextSeq = 0
	}
}

// Commit records that the broker confirmed everything up to seq: the cursor
// moves there and is persisted (fsynced at once with fsync: always, by the
// background fsync with interval). Segments every reader has committed are
// deleted. Committing at or below the cursor is a no-op.
func (r *Reader) Commit(seq uint64) error {
	s := r.s
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if seq > s.last {
		last := s.last
		s.mu.Unlock()
		return fmt.Errorf("spool: reader %s: commit %d beyond last seq %d", r.name, seq, last)
	}
	if seq <= r.committed {
		s.mu.Unlock()
		return nil
	}
	// Seqs right after seq that failed appends used up hold nothing to
	// confirm: commit over them too.
	for {
		e, ok := s.cache.get(seq + 1)
		if !ok || !e.lost {
			break
		}
		seq++
	}
	r.committed = seq
	s.mu.Unlock()
	// The cursor is written before the segments it releases are deleted:
	// a kill between the two leaves records the cursor has passed, never a
	// cursor before deleted ones. A cursor that cannot be written (disk
	// full) releases them all the same, as deleting is what frees room.
	err := r.persistIf(seq)
	s.mu.Lock()
	r.durable = max(r.durable, seq)
	if !s.closed {
		s.deleteCommittedLocked()
		s.wakeSpaceLocked()
	}
	s.mu.Unlock()
	return err
}

// Rewind moves the read position back to the committed cursor, so records
// read but not confirmed are read again (after an uplink error or
// reconnect).
func (r *Reader) Rewind() {
	// The records handed out may still be held (a failed publish can
	// leave a message queued in an uplink's client, which sends it
	// later): the next disk read takes a new buffer, so their bytes are
	// never rewritten. Records from the tail cache never are.
	r.buf = nil
	r.s.mu.Lock()
	r.releaseLocked(true)
	r.pos = r.committed + 1
	r.s.mu.Unlock()
}

// Lag reports how far the reader's committed cursor is behind the log.
func (r *Reader) Lag() Lag {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.lagLocked(r)
}

// Committed returns the committed cursor.
func (r *Reader) Committed() uint64 {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.committed
}

func (r *Reader) persistIf(seq uint64) error {
	if seq == 0 {
		return nil
	}
	r.cmu <- struct{}{}
	defer func() { <-r.cmu }()
	if r.cf == nil || seq <= r.persisted {
		return nil
	}
	if err := r.writeCursor(seq, r.s.cfg.Fsync == FsyncAlways); err != nil {
		return err
	}
	r.persisted = seq
	r.cdirty = r.s.cfg.Fsync != FsyncAlways
	return nil
}

func (r *Reader) writeCursor(seq uint64, sync bool) error {
	var p [8]byte
	binary.LittleEndian.PutUint64(p[:], seq)
	return r.cf.write(p[:], sync)
}

func (r *Reader) syncCursor() error {
	r.cmu <- struct{}{}
	defer func() { <-r.cmu }()
	if r.cf == nil || !r.cdirty {
		return nil
	}
	r.cdirty = false
	if err := r.cf.f.Sync(); err != nil {
		return fmt.Errorf("spool: sync cursor %s: %w", r.name, err)
	}
	return nil
}

func (r *Reader) closeCursor() error {
	r.cmu <- struct{}{}
	defer func() { <-r.cmu }()
	if r.cf == nil {
		return nil
	}
	err := r.cf.f.Sync()
	err = errors.Join(err, r.cf.f.Close())
	r.cf = nil
	if err != nil {
		return fmt.Errorf("spool: close cursor %s: %w", r.name, err)
	}
	return nil
}
