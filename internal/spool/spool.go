// Package spool is the gateway's durable store-and-forward log: every batch
// is appended here before any uplink sees it, and each uplink reads with its
// own durable cursor, committing only after its broker confirmed.
//
// The log is a directory of segment files of CRC-framed records (see
// record.go), written without user-space buffering before Append returns,
// so a killed process loses nothing Append returned; fsync follows the
// configured policy. Concurrent appends are group-committed: records are
// framed one after the other in the append arena (seq order), queued, and
// written by the last appender in line, all of them with one write per
// contiguous arena range (one fsync with fsync: always); each Append
// returns once its own record is written, with that write's error, and
// readers see a record only once it is written. Recent records are also
// kept in an in-memory tail cache, so live readers never touch the disk;
// readers behind the cache read the segment files. See docs/reliability.md.
package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smelterio/smelter/internal/logging"
)

// Errors.
var (
	ErrClosed     = errors.New("spool: closed")
	ErrReaderOpen = errors.New("spool: reader already open")
	// ErrLost: writing the record failed (disk full, I/O error); it is not
	// in the spool and its seq is used up, so consumers see a gap. The
	// spool counts (smelter_spool_append_lost_records_total) and logs it,
	// at most one line per interval with the count of the others: a
	// caller need not log it again.
	ErrLost = errors.New("spool: record lost")
)

const (
	seqReserve = 1 << 16 // seqs reserved durably ahead of use (see hwm)
	// Arena chunks are a quarter of the tail cache (within these bounds),
	// so the chunks the cache keeps alive hold at most about 1.25 times
	// its budget (a chunk is freed once no cached or read record points
	// into it).
	minArenaChunk = 64 << 10
	maxArenaChunk = 1 << 20
	// The cache has one slot per 256 bytes of budget (records are larger),
	// within these bounds.
	minCacheSlots = 1 << 8
	maxCacheSlots = 1 << 14
	// maxGroup: the appender that queues this many records writes them
	// even when others are still in line.
	maxGroup    = 256
	hwmFileName = "seq.hwm"
	lockName    = "LOCK"
	cursorExt   = ".cursor"
)

var readerName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Record is one spooled record as a reader sees it.
type Record struct {
	Seq      uint64
	Subject  string
	Data     []byte
	Appended int64 // unix ms
}

// Lag is how far a reader is behind the end of the log (counted from its
// committed cursor).
type Lag struct {
	Records   uint64
	Bytes     int64
	OldestAge time.Duration
}

// Spool is a durable, bounded, ordered log with per-reader cursors.
type Spool struct {
	cfg    Config
	log    *slog.Logger
	m      *Metrics
	now    func() time.Time
	bootID string

	// appendSem serializes the framing of records (seq assignment, the
	// arena, the when_full: block wait); it is a channel so that a waiting
	// appender honours its context. An appender holds it only until its
	// record is queued for writing, not during the write.
	appendSem chan struct{}
	// inLine counts appenders between entering Append and queuing their
	// record (or failing to). An appender that queues while others are in
	// line leaves the write to them; the one that empties the line writes
	// everything queued (as does the one that queues the maxGroup-th
	// record). Every appender leaves the line once, so no queued record is
	// left unwritten, and a burst of concurrent appends (the device
	// goroutines on one poll tick) is written together.
	inLine atomic.Int64
	// flushWaiting: an appender waits for wsem to write what is queued; it
	// takes the queue only once it has wsem, so others need not wait too.
	flushWaiting atomic.Bool
	// Owned by the holder of appendSem (the chunk's refs are guarded by
	// mu): the chunk being filled (arena.go) and the offset of its free
	// space.
	arena      *arenaChunk
	arenaOff   int
	arenaChunk int // the default chunk size (arena.go)
	lastRecLen int
	assigned   uint64 // the last seq handed out (queued, written or lost)

	// wsem serializes writing to the active segment: the holder writes
	// every queued record (group commit), rolls segments and does the
	// bookkeeping of written and lost records. Lock order: appendSem,
	// wsem, mu.
	wsem chan struct{}
	// Owned by the holder of wsem.
	hwm      *slotFile
	reserved uint64
	// write writes records to the active segment (f.Write; tests inject
	// failures and observe writes here).
	write func(f *os.File, recs []byte) (int, error)
	// lostLog rate-limits the log of lost appends; lostRun counts the
	// current run of them (first and last seq).
	lostLog             logging.Limiter
	lostRun             uint64
	lostFirst, lostLast uint64
	// hwmFailed: the last seq reservation could not be persisted (disk
	// full); reserve retries it at every append until it succeeds.
	hwmFailed bool

	mu       sync.Mutex
	closed   bool
	closedCh chan struct{}
	segs     []*segment // oldest first; the last one is active
	active   *os.File
	disk     int64
	last     uint64 // last seq written
	dirty    bool   // written since the last fsync
	cache    tailCache
	readers  map[string]*Reader
	open     []*Reader
	pend     *commitGroup // records queued for the next write (nil: none)
	pendSize int64        // their bytes (when_full: block counts them as on disk)
	health   Health
	spaceCh  chan struct{} // closed when commits may have freed space (block policy)
	// freeChunks are arena chunks no one holds, for the next appends
	// (arena.go); chunksNew and chunksReused count the chunks the appenders
	// allocated and took from it.
	freeChunks              []*arenaChunk
	freeBytes               int // their bytes
	chunksNew, chunksReused uint64

	lockFile *os.File
	stop     chan struct{}
	wg       sync.WaitGroup
}

// Open opens (creating if needed) the spool in cfg.Dir and recovers it: every
// segment is scanned and its CRCs verified, a torn tail is truncated, corrupt
// records are skipped by resynchronising on the next valid frame, and what
// was dropped is logged and counted; the rest is kept. cfg is defaulted and
// validated. m may be nil.
func Open(cfg Config, log *slog.Logger, m *Metrics) (*Spool, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	s := &Spool{
		cfg:       cfg,
		log:       log.With("component", "spool"),
		m:         m,
		now:       time.Now,
		bootID:    readBootID(),
		appendSem: make(chan struct{}, 1),
		wsem:      make(chan struct{}, 1),
		closedCh:  make(chan struct{}),
		readers:   map[string]*Reader{},
		stop:      make(chan struct{}),
		write:     (*os.File).Write,
	}
	s.cache.init(int(min(maxCacheSlots, max(minCacheSlots, cfg.CacheBytes/256))), cfg.CacheBytes, s.unrefLocked)
	s.arenaChunk = int(min(maxArenaChunk, max(minArenaChunk, cfg.CacheBytes/4)))
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: create dir: %w", err)
	}
	lf, err := lockDir(filepath.Join(cfg.Dir, lockName))
	if err != nil {
		return nil, err
	}
	s.lockFile = lf
	if err := checkFormat(cfg.Dir, s.log); err != nil {
		return nil, errors.Join(fmt.Errorf("spool: %w", err), s.closeFiles())
	}
	if err := s.recover(); err != nil {
		return nil, errors.Join(err, s.closeFiles())
	}
	m.lag.attach(s)
	s.wg.Add(1)
	go s.background()
	return s, nil
}

// hwm payload: reserved uint64 | clean uint8 | pad | boot id (up to 36 bytes)
func (s *Spool) writeHWM(reserved uint64, clean bool) error {
	var p [slotPayload]byte
	binary.LittleEndian.PutUint64(p[0:], reserved)
	if clean {
		p[8] = 1
	}
	copy(p[12:], s.bootID)
	return s.hwm.write(p[:], true)
}

func (s *Spool) recover() error {
	hwm, payload, err := openSlotFile(filepath.Join(s.cfg.Dir, hwmFileName))
	if err != nil {
		return err
	}
	s.hwm = hwm
	var hwmSeq uint64
	var clean, sameBoot bool
	if payload != nil {
		hwmSeq = binary.LittleEndian.Uint64(payload)
		clean = payload[8] == 1
		boot := string(trimZero(payload[12:]))
		sameBoot = boot != "" && boot == s.bootID
	}

	bases, err := listSegments(s.cfg.Dir)
	if err != nil {
		return err
	}
	var prevLast, floor uint64
	var recovered, droppedRecs, droppedBytes int64
	for i, base := range bases {
		g := &segment{base: base, path: segPath(s.cfg.Dir, base)}
		data, err := os.ReadFile(g.path)
		if err != nil {
			return fmt.Errorf("spool: read segment: %w", err)
		}
		res := scanSegment(data, g, prevLast)
		if res.droppedBytes > 0 {
			s.log.Warn("spool recovery dropped corrupt or torn data", "segment", filepath.Base(g.path),
				"dropped_records", res.droppedRecords, "dropped_bytes", res.droppedBytes, "kept_records", g.count)
			if err := repairSegment(g.path, data, res); err != nil {
				return err
			}
		}
		droppedRecs += res.droppedRecords
		droppedBytes += res.droppedBytes
		recovered += g.count
		if base > 0 && base-1 > floor {
			floor = base - 1
		}
		if g.count > 0 {
			prevLast = g.last
		}
		if g.count == 0 && i < len(bases)-1 {
			_ = os.Remove(g.path) // an empty old segment carries nothing (the newest one keeps the seq floor)
			continue
		}
		s.segs = append(s.segs, g)
		s.disk += g.size
	}
	last := max(prevLast, floor)
	if clean {
		last = max(last, hwmSeq)
	} else if payload != nil && !sameBoot && s.cfg.Fsync != FsyncAlways {
		// The machine rebooted without a clean close: records appended
		// after the last fsync may be gone, and their seqs may already sit
		// at a broker. Never hand them out again: skip past every seq that
		// could have been used.
		if hwmSeq > last {
			s.log.Warn("spool: unclean shutdown across a reboot; skipping possibly used seqs",
				"from", last+1, "to", hwmSeq)
			last = hwmSeq
		}
	}
	if last == 0 && !s.cfg.zeroSeqFloor {
		// Nothing persisted names a seq this spool handed out: a new spool,
		// or one whose directory was wiped while the gateway kept its id.
		// Its seqs start above any earlier spool's of the gateway (see
		// SeqFloor), so (gateway, seq) never names two batches. A
		// reservation left by a crash (its segments gone too) is kept
		// as a lower bound: it is a seq this spool may have handed out.
		last = max(s.seqFloor(), hwmSeq)
	}
	s.last = last
	s.m.recoveredRecords.Set(float64(recovered))
	s.m.droppedRecords.Add(float64(droppedRecs))
	s.m.droppedBytes.Add(float64(droppedBytes))
	if droppedBytes > 0 {
		s.log.Warn("spool recovered with losses", "dropped_records", droppedRecs, "dropped_bytes", droppedBytes, "kept_records", recovered)
	}

	// The active segment: append to the newest when it ends the log, else
	// start a new one named after the next seq.
	reuse := false
	if n := len(s.segs); n > 0 {
		g := s.segs[n-1]
		switch {
		case g.count > 0 && g.last == last, g.count == 0 && g.base == last+1:
			reuse = true
		case g.count == 0:
			_ = os.Remove(g.path)
			s.segs = s.segs[:n-1]
		}
	}
	if reuse {
		g := s.segs[len(s.segs)-1]
		f, err := os.OpenFile(g.path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("spool: open segment: %w", err)
		}
		s.active = f
	} else if err := s.newSegment(last + 1); err != nil {
		return err
	}
	// The reservation is persisted before any seq is handed out. On a full
	// disk (a fresh seq.hwm has no block yet) that write fails: the spool
	// still opens, so the gateway runs and drains its backlog, and
	// reserve retries at every append. Meanwhile the reservation on disk
	// (or none) is older than the seqs used, so an unclean reboot in that
	// window relies on the records themselves for the floor.
	s.reserved = last
	s.assigned = last
	s.reserve(last + 1)
	if err := s.loadCursors(); err != nil {
		return err
	}
	s.updateDiskMetrics()
	s.log.Info("spool open", "dir", s.cfg.Dir, "segments", len(s.segs), "records", recovered,
		"disk_bytes", s.disk, "last_seq", s.last, "readers", len(s.readers))
	return nil
}

// Bounds of the seq floor of a new spool (SeqFloor), in Unix microseconds.
const (
	// MinSeqFloor is 2026-01-01T00:00:00Z: a clock before it at creation
	// (an edge box without a real-time clock boots in 1970) is not trusted,
	// and the floor is this instead.
	MinSeqFloor uint64 = 1_767_225_600_000_000
	// MaxSeqFloor is 2^52 (2112-09-17): a clock after it is not trusted
	// either, so a new spool's seqs keep at least 2^52 of room below
	// 2^53-1, the largest seq a JSON consumer holds exactly (the
	// collector rejects larger ones).
	MaxSeqFloor uint64 = 1 << 52
)

// SeqFloor is the seq before the first one a new spool hands out, created
// at wall-clock time now: now in Unix microseconds, within
// [MinSeqFloor, MaxSeqFloor]. An earlier spool of the same gateway
// created at t0 reaches it only after appending more than one record per
// microsecond of its life (1e6 batches/s) on average, so a spool created
// after a wipe continues above every seq the gateway used before, and
// (gateway, seq) stays unique and increasing without anything kept
// outside the spool directory. ok is false when now lies outside the
// trusted range and the bound was used instead: the floor then cannot
// be known to be above an earlier spool's seqs.
func SeqFloor(now time.Time) (floor uint64, ok bool) {
	us := now.UnixMicro()
	switch {
	case us < int64(MinSeqFloor):
		return MinSeqFloor, false
	case uint64(us) > MaxSeqFloor:
		return MaxSeqFloor, false
	}
	return uint64(us), true
}

// seqFloor is SeqFloor at the spool's clock, logging what it chose.
func (s *Spool) seqFloor() uint64 {
	now := s.now()
	if s.cfg.seqClock != nil {
		now = s.cfg.seqClock()
	}
	floor, ok := SeqFloor(now)
	if !ok {
		s.log.Warn("spool: new spool and the wall clock is not plausible; its seqs start at a fixed floor "+
			"that is not known to lie above the seqs of an earlier spool of this gateway (consumers would drop such batches as duplicates): "+
			"set the clock, then remove the spool directory before any batch is sent (docs/reliability.md, Sequence numbers)",
			"clock", now.UTC().Format(time.RFC3339), "first_seq", floor+1)
		return floor
	}
	s.log.Info("spool: new spool; seqs start above the wall-clock floor", "first_seq", floor+1)
	return floor
}

func trimZero(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

func readBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	id := string(trimZero(b))
	for len(id) > 0 && (id[len(id)-1] == '\n' || id[len(id)-1] == ' ') {
		id = id[:len(id)-1]
	}
	if len(id) > 36 {
		id = id[:36]
	}
	return id
}

// newSegment creates a segment for base and makes it active. Caller holds
// s.mu (or is in Open).
func (s *Spool) newSegment(base uint64) error {
	path := segPath(s.cfg.Dir, base)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("spool: create segment: %w", err)
	}
	if s.cfg.Fsync != FsyncNever {
		if err := syncDir(s.cfg.Dir); err != nil {
			f.Close()
			return err
		}
	}
	s.segs = append(s.segs, &segment{base: base, path: path})
	s.active = f
	return nil
}

// rollLocked closes the active segment and starts one for base. Caller holds
// wsem and s.mu.
func (s *Spool) rollLocked(base uint64) error {
	old := s.active
	if s.cfg.Fsync != FsyncNever {
		if err := s.syncFile(old); err != nil {
			return err
		}
	}
	if err := s.newSegment(base); err != nil {
		return err
	}
	if err := old.Close(); err != nil {
		s.log.Warn("spool: close segment", "err", err)
	}
	s.updateDiskMetrics()
	return nil
}

func (s *Spool) syncFile(f *os.File) error {
	t := time.Now()
	err := f.Sync()
	s.m.fsyncSeconds.Observe(time.Since(t).Seconds())
	if err != nil && !errors.Is(err, os.ErrClosed) {
		s.m.fsyncErrors.Inc()
		return fmt.Errorf("spool: fsync: %w", err)
	}
	return nil
}

func (s *Spool) loadCursors() error {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("spool: list %s: %w", s.cfg.Dir, err)
	}
	for _, e := range ents {
		name, ok := cutSuffix(e.Name(), cursorExt)
		if !ok || !readerName.MatchString(name) {
			continue
		}
		if _, err := s.loadReader(name); err != nil {
			return err
		}
	}
	return nil
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}

// firstAvailLocked is the oldest seq still in the log (last+1 when empty).
func (s *Spool) firstAvailLocked() uint64 {
	for _, g := range s.segs {
		if g.count > 0 {
			return g.first
		}
	}
	return s.last + 1
}

// minCommittedLocked is the lowest cursor of all known readers; with no
// reader nothing counts as committed.
func (s *Spool) minCommittedLocked() uint64 {
	if len(s.readers) == 0 {
		return 0
	}
	lo := ^uint64(0)
	for _, r := range s.readers {
		lo = min(lo, r.committed)
	}
	return lo
}

// Append assigns the next seq, calls encode(seq, dst) to append the payload
// to dst (encode must append to dst and return the result, like
// strconv.AppendInt; dst already holds the framing and must be kept), writes
// the record and returns its seq once it is written (fsynced with fsync:
// always). Seqs are monotonic, persisted across restarts and never reused;
// seq order is log order; a new spool's first seq is SeqFloor+1 at its
// creation (about 1.8e15 in 2026), not 1. Safe for concurrent use:
// concurrent appends are written together (group commit), each returning
// the error of the write that carried its record. With when_full: block it waits (honouring ctx)
// while unacknowledged data fills max_bytes; with discard_oldest it
// deletes the oldest segments and counts the records lost.
func (s *Spool) Append(ctx context.Context, subject string, encode func(seq uint64, dst []byte) []byte) (uint64, error) {
	if len(subject) > maxSubject {
		return 0, fmt.Errorf("spool: append: subject of %d bytes exceeds %d", len(subject), maxSubject)
	}
	s.inLine.Add(1)
	select {
	case s.appendSem <- struct{}{}:
	case <-ctx.Done():
		if s.inLine.Add(-1) == 0 {
			s.flushPending()
		}
		return 0, ctx.Err()
	}
	start := time.Now()
	g, i, err := s.enqueue(ctx, subject, encode)
	<-s.appendSem
	if s.inLine.Add(-1) == 0 || i+1 >= maxGroup {
		// The line is empty, or the queue is full: a line that never
		// empties (appenders arriving without pause) must not hold
		// records back for long.
		s.flushPending()
	}
	if err == nil {
		<-g.done
		err = g.recs[i].err
	}
	if err != nil {
		s.m.appendErrors.Inc()
		return 0, err
	}
	s.m.appendSeconds.Observe(time.Since(start).Seconds())
	return g.recs[i].seq, nil
}

// commitGroup is the records queued for one write, in seq order. done is
// closed once they are written or lost (each pendingRec's err says which).
type commitGroup struct {
	recs  []pendingRec
	done  chan struct{}
	first [1]pendingRec // recs' storage while the group holds one record (a lone append)
}

// pendingRec is a framed record waiting to be written.
type pendingRec struct {
	seq      uint64
	appended int64
	subject  string
	rec      []byte
	chunk    *arenaChunk // the arena chunk rec sits in at offset off (nil: outside the arena); held until written or lost
	off      int
	err      error // set by the writer
}

// enqueue frames the record for the next seq in the arena and queues it
// for writing; it returns the group and index of its pendingRec. Caller
// holds appendSem. A record that fails here uses up no seq.
func (s *Spool) enqueue(ctx context.Context, subject string, encode func(uint64, []byte) []byte) (*commitGroup, int, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, 0, ErrClosed
	}
	seq := s.assigned + 1
	now := s.now().UnixMilli()
	rec, inArena := s.encodeRecord(seq, subject, encode)
	if len(rec) < headerSize+len(subject) || string(rec[headerSize:headerSize+len(subject)]) != subject {
		return nil, 0, errors.New("spool: append: encode must append to dst and keep its contents")
	}
	if len(rec)-headerSize > maxBody {
		return nil, 0, fmt.Errorf("%w: %d bytes (max %d)", errTooLarge, len(rec)-headerSize, maxBody)
	}
	sealRecord(rec, seq, now, len(subject))
	if s.cfg.WhenFull == WhenFullBlock {
		if err := s.waitForRoom(ctx, int64(len(rec))); err != nil {
			return nil, 0, err
		}
	}
	s.assigned = seq
	p := pendingRec{seq: seq, appended: now, subject: subject, rec: rec}
	if inArena {
		// Records are packed back to back, so records queued together
		// are one contiguous range of the chunk: one write.
		p.chunk, p.off = s.arena, s.arenaOff
		s.arenaOff += len(rec)
	}
	s.mu.Lock()
	g := s.pend
	if g == nil {
		g = &commitGroup{done: make(chan struct{})}
		g.recs = g.first[:0]
		s.pend = g
	}
	p.chunk.ref()
	g.recs = append(g.recs, p)
	s.pendSize += int64(len(rec))
	s.mu.Unlock()
	return g, len(g.recs) - 1, nil
}

// flushPending writes the queued records, if any, waiting for a write in
// progress first. When another appender already waits to do so, it
// returns at once: that one takes the queue only after getting wsem, so
// it writes everything queued by now.
func (s *Spool) flushPending() {
	if !s.flushWaiting.CompareAndSwap(false, true) {
		return
	}
	s.wsem <- struct{}{}
	// Let appenders that are ready to run (device goroutines woken by
	// their replies on the same poll tick) queue their records first:
	// they leave the write to this one.
	runtime.Gosched()
	s.flushWaiting.Store(false) // before taking the queue: records queued after it get a flusher of their own
	s.commitPending()
	<-s.wsem
}

// commitPending writes the queued group, if any. Caller holds wsem.
func (s *Spool) commitPending() {
	s.mu.Lock()
	g := s.pend
	s.pend = nil
	s.mu.Unlock()
	if g == nil {
		return
	}
	s.writeGroup(g.recs)
	close(g.done)
}

// writeGroup writes recs (consecutive seqs) to the active segment, rolling
// it where the next record would not fit, and then makes them visible to
// readers. Records whose write (or fsync: always) fails are truncated
// away and lost (ErrLost, their seqs used up). Caller holds wsem.
func (s *Spool) writeGroup(recs []pendingRec) {
	ctx := context.Background()
	for len(recs) > 0 {
		s.mu.Lock()
		g := s.segs[len(s.segs)-1]
		if g.size > 0 && g.size+int64(len(recs[0].rec)) > s.cfg.SegmentBytes {
			if err := s.rollLocked(recs[0].seq); err != nil {
				s.mu.Unlock()
				recs[0].err = s.lost(ctx, &recs[0], err)
				recs = recs[1:]
				continue
			}
			g = s.segs[len(s.segs)-1]
		}
		f, off := s.active, g.size
		s.mu.Unlock()
		n, size := 1, off+int64(len(recs[0].rec))
		for n < len(recs) && size+int64(len(recs[n].rec)) <= s.cfg.SegmentBytes {
			size += int64(len(recs[n].rec))
			n++
		}
		batch := recs[:n]
		recs = recs[n:]
		if err := s.writeBatch(f, batch); err != nil {
			_ = f.Truncate(off) // leave no partial record behind
			for j := range batch {
				batch[j].err = s.lost(ctx, &batch[j], err)
			}
			continue
		}
		s.written(ctx, g, off, batch)
	}
}

// writeBatch writes batch to f, one write per range of records contiguous
// in an arena chunk, then fsyncs with fsync: always. Caller holds wsem.
func (s *Spool) writeBatch(f *os.File, batch []pendingRec) error {
	for i := 0; i < len(batch); {
		p := &batch[i]
		run, j := p.rec, i+1
		if p.chunk != nil {
			end := p.off + len(p.rec)
			for j < len(batch) && batch[j].chunk == p.chunk && batch[j].off == end {
				end += len(batch[j].rec)
				j++
			}
			run = p.chunk.buf[p.off:end]
		}
		s.m.appendWrites.Inc()
		if _, err := s.write(f, run); err != nil {
			return err
		}
		i = j
	}
	s.m.writeRecords.Observe(float64(len(batch)))
	if s.cfg.Fsync == FsyncAlways {
		if err := s.syncFile(f); err != nil {
			return err // not known to be durable: not appended
		}
	}
	return nil
}

// written makes batch, just written to segment g at off, visible: index,
// cache, last seq, readers woken; then applies discard_oldest. Caller
// holds wsem.
func (s *Spool) written(ctx context.Context, g *segment, off int64, batch []pendingRec) {
	last := batch[len(batch)-1].seq
	s.reserve(last)
	s.recovered(ctx, batch[0].seq)
	var total int64
	s.mu.Lock()
	for i := range batch {
		p := &batch[i]
		size := int64(len(p.rec))
		g.add(p.seq, off, len(p.rec), p.appended)
		off += size
		total += size
		s.cache.add(cacheEntry{seq: p.seq, appended: p.appended, subject: p.subject, data: p.rec[headerSize+len(p.subject):], chunk: p.chunk, size: size})
	}
	for i := range batch { // written: the cache (or nobody) holds them now
		s.unrefLocked(batch[i].chunk)
		batch[i].chunk = nil
	}
	s.disk += total
	s.pendSize -= total
	s.last = last
	s.dirty = true
	if s.cfg.WhenFull == WhenFullDiscardOldest {
		for s.disk > s.cfg.MaxBytes && len(s.segs) > 1 {
			s.removeOldestLocked(true, "max_bytes")
		}
	}
	for _, r := range s.open {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	s.updateDiskMetrics()
	s.mu.Unlock()
	s.m.appendedRecords.Add(float64(len(batch)))
	s.m.appendedBytes.Add(float64(total))
}

// reserve persists a new seq reservation when seq reaches the current one.
// Caller holds wsem (or is in Open).
// A failed write (disk full) is retried at the next append; it is logged
// when it starts failing and when it succeeds again.
func (s *Spool) reserve(seq uint64) {
	if seq <= s.reserved {
		return
	}
	if err := s.writeHWM(seq+seqReserve, false); err != nil {
		if !s.hwmFailed {
			s.log.Warn("spool: cannot persist the seq reservation; retrying at every append", "err", err)
		}
		s.hwmFailed = true
		return
	}
	if s.hwmFailed {
		s.log.Info("spool: seq reservation persisted again")
	}
	s.hwmFailed = false
	s.reserved = seq + seqReserve
}

// lost handles a record that could not be written: its seq is used up (the
// next append gets the next one, so consumers see the gap), a burned slot
// keeps the tail cache contiguous, and the loss is counted and logged at
// most once per interval. Caller holds wsem. It returns the error for
// Append, wrapping ErrLost and cause.
func (s *Spool) lost(ctx context.Context, p *pendingRec, cause error) error {
	seq := p.seq
	s.reserve(seq)
	s.mu.Lock()
	s.last = seq
	s.pendSize -= int64(len(p.rec))
	s.unrefLocked(p.chunk)
	p.chunk = nil
	s.cache.add(cacheEntry{seq: seq, lost: true})
	if !s.health.Failing {
		s.health.FailingSince = s.now()
	}
	s.health.Failing = true
	s.health.LostRecords++
	s.health.LastError = cause.Error()
	s.health.LastErrorAt = s.now()
	s.mu.Unlock()
	s.m.lostAppends.Inc()
	if s.lostRun == 0 {
		s.lostFirst = seq
	}
	s.lostRun++
	s.lostLast = seq
	s.lostLog.Log(ctx, s.log, slog.LevelError, "spool: append failed; the record is lost and its seq skipped",
		"seq", seq, "err", cause, "lost_in_run", s.lostRun)
	return fmt.Errorf("%w: append seq %d: %w", ErrLost, seq, cause)
}

// recovered logs the end of a run of lost appends. Caller holds wsem.
func (s *Spool) recovered(ctx context.Context, seq uint64) {
	if s.lostRun == 0 {
		return
	}
	s.mu.Lock()
	s.health.Failing = false
	s.health.FailingSince = time.Time{}
	s.mu.Unlock()
	s.log.LogAttrs(ctx, slog.LevelWarn, "spool: appends succeed again",
		slog.Uint64("lost_records", s.lostRun), slog.Uint64("first_lost_seq", s.lostFirst),
		slog.Uint64("last_lost_seq", s.lostLast), slog.Uint64("seq", seq))
	s.lostRun = 0
	s.lostLog = logging.Limiter{Every: s.lostLog.Every, Now: s.lostLog.Now}
}

// encodeRecord builds the record for seq in the arena (or wherever encode's
// append moved it) and reports whether it lives in the arena.
func (s *Spool) encodeRecord(seq uint64, subject string, encode func(uint64, []byte) []byte) ([]byte, bool) {
	need := headerSize + len(subject)
	est := need + s.lastRecLen + s.lastRecLen/4
	if s.arena == nil || len(s.arena.buf)-s.arenaOff < est {
		s.mu.Lock()
		old := s.arena
		s.arena = s.newChunkLocked(s.chunkSize(est))
		s.unrefLocked(old) // the appenders' hold: the old chunk is full
		s.mu.Unlock()
		s.arenaOff = 0
	}
	buf := s.arena.buf
	dst := buf[s.arenaOff : s.arenaOff+need : len(buf)]
	copy(dst[headerSize:], subject)
	rec := encode(seq, dst)
	s.lastRecLen = len(rec)
	inArena := len(rec) > 0 && cap(rec) == cap(dst) && &rec[0] == &dst[0]
	return rec, inArena
}

// waitForRoom blocks until need more bytes fit in max_bytes (block policy).
// Caller holds appendSem.
func (s *Spool) waitForRoom(ctx context.Context, need int64) error {
	var blocked time.Time
	defer func() {
		if !blocked.IsZero() {
			s.m.blockedSeconds.Add(time.Since(blocked).Seconds())
		}
	}()
	for {
		s.mu.Lock()
		s.deleteCommittedLocked()
		if s.disk+s.pendSize+need <= s.cfg.MaxBytes {
			s.mu.Unlock()
			return nil
		}
		if s.activeCommittedLocked() {
			// Everything is acknowledged but the active segment: roll it so
			// it can go (rolling takes the write semaphore).
			s.mu.Unlock()
			if err := s.rollIfCommitted(); err != nil {
				return err
			}
			continue
		}
		if s.spaceCh == nil {
			s.spaceCh = make(chan struct{})
		}
		ch := s.spaceCh
		pending := s.pend != nil
		s.mu.Unlock()
		if pending {
			// Queued records must be written before readers can commit
			// them and free room (the queue is complete: appendSem is
			// held).
			s.wsem <- struct{}{}
			s.commitPending()
			<-s.wsem
			continue
		}
		if blocked.IsZero() {
			blocked = time.Now()
			s.log.Warn("spool full: append blocked until uplinks catch up", "max_bytes", s.cfg.MaxBytes)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closedCh:
			return ErrClosed
		}
	}
}

func (s *Spool) activeCommittedLocked() bool {
	g := s.segs[len(s.segs)-1]
	return g.count > 0 && len(s.readers) > 0 && s.minCommittedLocked() >= g.last
}

// rollIfCommitted rolls the active segment when every reader committed all
// of it. Caller holds appendSem.
func (s *Spool) rollIfCommitted() error {
	s.wsem <- struct{}{}
	defer func() { <-s.wsem }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.activeCommittedLocked() {
		return nil
	}
	return s.rollLocked(s.last + 1)
}

// deleteCommittedLocked deletes old segments every reader has committed
// and written its cursor past (Reader.durable).
func (s *Spool) deleteCommittedLocked() {
	lo := uint64(0) // no reader: nothing counts as committed
	if len(s.readers) > 0 {
		lo = ^uint64(0)
		for _, r := range s.readers {
			lo = min(lo, r.durable)
		}
	}
	for len(s.segs) > 1 && (s.segs[0].count == 0 || s.segs[0].last <= lo) {
		s.removeOldestLocked(false, "committed")
	}
}

// removeOldestLocked deletes the oldest segment. When discard is set, the
// records in it that some reader had not committed are counted as
// discarded.
func (s *Spool) removeOldestLocked(discard bool, reason string) {
	g := s.segs[0]
	if err := os.Remove(g.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("spool: delete segment", "segment", filepath.Base(g.path), "err", err)
	}
	s.segs = s.segs[1:]
	s.disk -= g.size
	if discard && g.count > 0 {
		from := max(g.first, s.minCommittedLocked()+1)
		if g.last >= from {
			n := min(g.last-from+1, uint64(g.count))
			s.m.discarded.Add(float64(n))
			s.log.Warn("spool: discarded unacknowledged records", "reason", reason, "records", n,
				"first_seq", from, "last_seq", g.last)
		}
	}
	s.updateDiskMetrics()
}

func (s *Spool) updateDiskMetrics() {
	s.m.diskBytes.Set(float64(s.disk))
	s.m.segments.Set(float64(len(s.segs)))
}

// background runs the interval fsync and the max_age check until Close.
func (s *Spool) background() {
	defer s.wg.Done()
	var syncC <-chan time.Time
	if s.cfg.Fsync == FsyncInterval {
		t := time.NewTicker(s.cfg.FsyncInterval)
		defer t.Stop()
		syncC = t.C
	}
	ageEvery := min(max(s.cfg.MaxAge/100, time.Second), time.Minute)
	age := time.NewTicker(ageEvery)
	defer age.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-syncC:
			if err := s.syncNow(); err != nil {
				s.log.Error("spool: background fsync", "err", err)
			}
		case <-age.C:
			s.enforceAge()
		}
	}
}

// syncNow fsyncs the active segment and dirty cursors.
func (s *Spool) syncNow() error {
	s.mu.Lock()
	dirty, f := s.dirty, s.active
	s.dirty = false
	readers := append([]*Reader(nil), s.open...)
	s.mu.Unlock()
	var err error
	if dirty {
		err = s.syncFile(f)
	}
	for _, r := range readers {
		err = errors.Join(err, r.syncCursor())
	}
	return err
}

// enforceAge deletes segments whose newest record is older than max_age,
// rolling the active segment first when it is that old.
func (s *Spool) enforceAge() {
	select {
	case s.appendSem <- struct{}{}:
	case <-s.stop:
		return
	}
	defer func() { <-s.appendSem }()
	s.wsem <- struct{}{}
	defer func() { <-s.wsem }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	cutoff := s.now().Add(-s.cfg.MaxAge).UnixMilli()
	if g := s.segs[len(s.segs)-1]; g.count > 0 && g.lastApp < cutoff {
		if err := s.rollLocked(s.last + 1); err != nil {
			s.log.Error("spool: roll for max_age", "err", err)
			return
		}
	}
	for len(s.segs) > 1 && (s.segs[0].count == 0 || s.segs[0].lastApp < cutoff) {
		s.removeOldestLocked(true, "max_age")
	}
	s.wakeSpaceLocked()
}

func (s *Spool) wakeSpaceLocked() {
	if s.spaceCh != nil {
		close(s.spaceCh)
		s.spaceCh = nil
	}
}

// Health is the state of the spool's appends, for a status page.
type Health struct {
	// Failing: the last append failed (ErrLost: disk full, I/O error);
	// data is being lost until an append succeeds again.
	Failing      bool      `json:"appends_failing"`
	FailingSince time.Time `json:"failing_since,omitzero"`
	// LostRecords counts the appends lost since Open (the counter
	// smelter_spool_append_lost_records_total counts them over the
	// metrics registry's life).
	LostRecords uint64    `json:"lost_records"`
	LastError   string    `json:"last_error,omitempty"` // the cause of the newest lost append
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Health returns the state of the appends.
func (s *Spool) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

// FailWrites makes every record write fail with err (nil: write again).
// It lets callers' tests simulate a full disk without filling one; the
// failure takes the same path as a real one (ErrLost, the seq used up).
func (s *Spool) FailWrites(err error) {
	s.appendSem <- struct{}{}
	defer func() { <-s.appendSem }()
	s.wsem <- struct{}{}
	defer func() { <-s.wsem }()
	if err == nil {
		s.write = (*os.File).Write
		return
	}
	s.write = func(*os.File, []byte) (int, error) { return 0, err }
}

// LastSeq returns the seq of the last appended record (or the persisted
// floor when nothing was appended since: for a new spool, its SeqFloor).
func (s *Spool) LastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Close stops the background work, fsyncs the log and the cursors, and
// releases the directory. Blocked appends and reads return ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closedCh)
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	s.appendSem <- struct{}{} // wait for an append in flight
	defer func() { <-s.appendSem }()
	s.wsem <- struct{}{}
	defer func() { <-s.wsem }()
	s.commitPending() // records queued before Close are written
	err := s.syncFile(s.active)
	s.mu.Lock()
	readers := make([]*Reader, 0, len(s.readers))
	for _, r := range s.readers {
		readers = append(readers, r)
	}
	last := s.last
	s.mu.Unlock()
	sort.Slice(readers, func(i, j int) bool { return readers[i].name < readers[j].name })
	for _, r := range readers {
		err = errors.Join(err, r.closeCursor())
	}
	if err == nil {
		err = s.writeHWM(last, true)
	}
	return errors.Join(err, s.closeFiles())
}

func (s *Spool) closeFiles() error {
	var err error
	if s.active != nil {
		err = errors.Join(err, s.active.Close())
	}
	if s.hwm != nil {
		err = errors.Join(err, s.hwm.f.Close())
	}
	if s.lockFile != nil {
		err = errors.Join(err, s.lockFile.Close())
	}
	return err
}

// lags returns every known reader's lag (for metrics).
func (s *Spool) lags() map[string]Lag {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Lag, len(s.readers))
	for name, r := range s.readers {
		out[name] = s.lagLocked(r)
	}
	return out
}

func (s *Spool) lagLocked(r *Reader) Lag {
	from := max(r.committed+1, s.firstAvailLocked())
	for from <= s.last {
		if e, ok := s.cache.get(from); !ok || !e.lost {
			break
		}
		from++ // lost by a failed append: nothing to send
	}
	if from > s.last {
		return Lag{}
	}
	l := Lag{Records: s.last - from + 1}
	var app int64
	found := false
	for _, g := range s.segs {
		if found {
			l.Bytes += g.size
			continue
		}
		if g.count > 0 && g.last >= from {
			off, a := g.locate(from)
			l.Bytes += g.size - off
			app, found = a, true
		}
	}
	if !found {
		// No record at or after from: the seqs up to last were all lost
		// by failed appends, more of them than the tail cache remembers
		// (a disk full at the end of the log). Nothing is left to send.
		return Lag{}
	}
	if e, ok := s.cache.get(from); ok && !e.lost {
		app = e.appended
	}
	l.OldestAge = max(0, s.now().Sub(time.UnixMilli(app)))
	return l
}
