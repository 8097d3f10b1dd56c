package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/collector/ingest"
	"github.com/smelterio/smelter/internal/collector/rules"
	"github.com/smelterio/smelter/internal/natswire"
	"github.com/smelterio/smelter/internal/telemetry"
)

// members tracks the live replicas of a group through a KV bucket: each
// replica puts its key every timeout/4; a replica not heard of for timeout
// (local clock for updates, the server's stamp for values found at start)
// is gone. A graceful stop deletes the key.
//
// It is also this replica's own lease on its membership: the others count
// it live until timeout after they received its last heartbeat, so it
// counts itself live for lease (3/4 timeout) after sending its last
// acknowledged one. A heartbeat acknowledged later than lease after the one
// before is a lapse (the process was paused, its VM frozen, or it was cut
// off from NATS): the others may have taken its partitions meanwhile.
type members struct {
	kv         jetstream.KeyValue
	self       string
	partitions int // this replica's cluster.partitions, announced in its record
	timeout    time.Duration
	log        *slog.Logger
	stall      func() // tests: Collector.stall
	// open makes sure the bucket exists, creating it again when it is
	// gone (a restarted nats-server loses the bucket: it is kept in
	// memory); nil: never (tests)
	open func(context.Context) error
	// closed returns why the NATS connection is closed for good (nil
	// while it is not): it reconnects for ever, so only a refusal (its
	// credentials refused twice) or Close ends it; nil: never (tests)
	closed func() error
	// reconnected counts the NATS connection's reconnections: a watch set
	// up before one may have missed updates, and is set up again; nil:
	// never (tests)
	reconnected func() uint64
	// reconnecting reports whether the NATS connection is down and being
	// re-established (nil: never): the first watch is then retried, not
	// fatal (requests fail at once while reconnecting: natsOptions)
	reconnecting func() bool
	// rewatches counts watches of the bucket set up again after theirs
	// ended (smelter_collector_rewatches_total{watch="members"}); nil: none
	rewatches prometheus.Counter
	// checked: tests, run between a replica's check of the live members
	// and its first heartbeat (a collector of the same group starting at
	// that moment)
	checked func()

	mu     sync.Mutex
	seen   map[string]time.Time
	beatAt time.Time // when the last acknowledged heartbeat was sent
	lapses uint64    // heartbeats acknowledged more than lease after the one before
	loopAt time.Time // the watch loop's newest turn
	settle time.Time // after a gap in the watch loop: the view is not current before
	lost   bool      // the watch ended and is not set up again yet: the view is not current
	// beatRev: the bucket's revision of the last acknowledged heartbeat
	// (run expects the watch to deliver it: echo)
	beatRev uint64

	known chan struct{} // closed once the current members were read
}

// lease is how long after sending an acknowledged heartbeat this replica
// is sure to count as live in every member's view.
func (m *members) lease() time.Duration { return m.timeout - m.timeout/4 }

// term is the number of lapses so far: a partition worker takes it when
// it starts and holds its partition while held(term).
func (m *members) term() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lapses
}

// held reports whether this replica's membership is current and has not
// lapsed since term, with the age of its last acknowledged heartbeat.
func (m *members) held(term uint64) (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	age := elapsed(m.beatAt)
	return age, m.lapses == term && age < m.lease()
}

// elapsed is the time since t on the monotonic and on the wall clock,
// whichever is longer: after a VM froze, the monotonic clock may not count
// the pause the wall clock (and every other replica) saw.
func elapsed(t time.Time) time.Duration {
	return max(time.Since(t), time.Now().Round(0).Sub(t.Round(0)))
}

type memberRecord struct {
	Replica string `json:"replica"`
	Started int64  `json:"started"`
	// Partitions is the replica's cluster.partitions (0: a single
	// replica); absent in a record of a release before 2026-12-03
	Partitions *int `json:"partitions,omitempty"`
}

// join announces this replica. single: refuse when another live replica of
// the group exists (joining a group is explicit: cluster.partitions on
// every replica), so a second collector with copied defaults never splits
// the first one's stream.
//
// Two collectors of a group starting at once both found no other and
// both ran, splitting the stream (attack-col2 F2: 6 of 24 starts within
// ~20 ms). So a single replica looks again after its first heartbeat:
// another live member then means another collector started meanwhile, and
// this one deletes its record and refuses. Of two starting at once, the
// one that heartbeats last sees the other; both may (each sees the
// other's heartbeat): then both refuse, never both run.
//
// A replica of N partitions likewise refuses when a live member runs
// another number (a single replica included), and looks again after its
// first heartbeat; check runs the same test before the stream is touched.
func (m *members) join(ctx context.Context, single bool) error {
	m.seen, m.known = map[string]time.Time{}, make(chan struct{})
	if err := m.check(ctx, single); err != nil {
		return err
	}
	if m.checked != nil {
		m.checked()
	}
	if err := m.beat(ctx); err != nil {
		return err
	}
	if err := m.check(ctx, single); err != nil {
		_ = m.kv.Delete(context.WithoutCancel(ctx), m.self)
		return err
	}
	return nil
}

// refuseLive returns the refusal of a single replica when another member
// of the group is live (its record younger than member_timeout).
func (m *members) refuseLive(ctx context.Context) error {
	return m.eachLive(ctx, func(k string, v []byte) error {
		var rec memberRecord
		_ = json.Unmarshal(v, &rec) // unreadable: no number to name
		runs := ""
		if rec.Partitions != nil && *rec.Partitions > 0 {
			runs = fmt.Sprintf(", with cluster.partitions %d", *rec.Partitions)
		}
		return fmt.Errorf("collector: group %q already has a live collector (replica %s%s): give this one its own group, "+
			"or set cluster.partitions on every replica to run them as replicas of one group", m.bucketGroup(), k, runs)
	})
}

// check refuses as join would, before anything is announced or changed:
// Run calls it before it sets the stream's partition transform, which a
// replica of another cluster.partitions would change under the live ones.
func (m *members) check(ctx context.Context, single bool) error {
	if single {
		return m.refuseLive(ctx)
	}
	return m.refuseOtherPartitions(ctx)
}

// refuseOtherPartitions returns the refusal of a replica of m.partitions
// when a live member of the group runs another cluster.partitions (0: a
// single replica). Such a replica would set the stream's transform to its
// own number under the running ones: new messages would be stored in
// partitions they do not read or refuse as foreign (bbtest F1: 5 of 12
// assets' batches left on a consumer no replica pulls, one refused as
// "published with a partition token"). A record without the number (an
// older release) is not refused.
func (m *members) refuseOtherPartitions(ctx context.Context) error {
	return m.eachLive(ctx, func(k string, v []byte) error {
		var rec memberRecord
		_ = json.Unmarshal(v, &rec) // unreadable: no number, not compared
		if rec.Partitions == nil || *rec.Partitions == m.partitions {
			return nil
		}
		return fmt.Errorf("collector: group %q has a live replica %s with cluster.partitions %d, this one has %d: every replica of a group runs the same "+
			"cluster.partitions (another number re-partitions the stream under the running replicas and their new batches go to partitions nobody reads); "+
			"to change it, stop every replica of the group, then start them all with the new value (docs/collector.md, \"Groups, replicas and partitions\"); "+
			"a replica killed without a graceful stop counts as live for member_timeout (%v)",
			m.bucketGroup(), k, *rec.Partitions, m.partitions, m.timeout)
	})
}

// eachLive calls fn with the key and record of every other member that is
// live (its record younger than member_timeout) until fn returns an
// error, which it returns.
func (m *members) eachLive(ctx context.Context, fn func(key string, record []byte) error) error {
	keys, err := m.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("collector: members: %w", err)
	}
	for k := range keys.Keys() {
		if k == m.self {
			continue
		}
		if e, err := m.kv.Get(ctx, k); err == nil && time.Since(e.Created()) < m.timeout {
			if err := fn(k, e.Value()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *members) bucketGroup() string { return strings.TrimSuffix(m.kv.Bucket(), "_members") }

func (m *members) beat(ctx context.Context) error {
	sent := time.Now()
	data, _ := json.Marshal(memberRecord{Replica: m.self, Started: sent.UnixMilli(), Partitions: &m.partitions})
	rev, err := m.kv.Put(ctx, m.self, data)
	if err != nil {
		return fmt.Errorf("collector: members: announce %s: %w", m.self, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.beatRev = rev
	if !m.beatAt.IsZero() {
		if gap := max(sent.Sub(m.beatAt), sent.Round(0).Sub(m.beatAt.Round(0))); gap > m.lease() {
			m.lapses++
			m.log.Warn("membership lapsed: no heartbeat acknowledged for longer than the lease; partitions held since are given up and restarted from their checkpoints",
				"gap", gap.Round(time.Millisecond), "lease", m.lease(), "member_timeout", m.timeout)
		}
	}
	m.beatAt = sent
	return nil
}

// Waits between attempts to set up a watch of a bucket again (jittered,
// internal/backoff): a replica whose watch ended goes on heartbeating
// meanwhile, and replicas that lost the same server do not come back in step.
const (
	rewatchMin = 250 * time.Millisecond
	rewatchMax = 5 * time.Second
)

// run heartbeats and watches the group until ctx ends, then leaves (nil).
// A watch that ends while ctx is live (the server restarted and lost the
// bucket, the bucket's stream lost its leader, the watch's consumer could
// not be created again), and one that may have missed updates because the
// connection was re-established since it was set up (reconnected), is set
// up again: after rewatchMin doubling to rewatchMax with jitter until it
// succeeds, with the bucket created again when it is gone; the heartbeats
// go on meanwhile. Until the new watch delivered the current members and a
// heartbeat round more, the view is not current (the supervisor moves no
// partition). Each such episode is logged once (WARN when the watch is
// lost, INFO when it is back) and counted in rewatches. Run returns an
// error only when the first watch cannot be set up, or the NATS connection
// is closed for good (closed).
func (m *members) run(ctx context.Context) error {
	gen := m.generation()
	w, werr := m.kv.WatchAll(ctx)
	if werr != nil {
		if cerr := m.closedErr(); cerr != nil {
			return cerr
		}
		if m.reconnecting == nil || !m.reconnecting() {
			return fmt.Errorf("collector: members watch: %w", werr)
		}
		w = nil // set up again below, as a watch that ended
	}
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
	}()
	t := time.NewTicker(m.timeout / 4)
	defer t.Stop()
	initial, known := true, false
	var (
		retry    <-chan time.Time // while the watch is down: the next attempt
		bo       = backoff.Backoff{Min: rewatchMin, Max: rewatchMax}
		lostAt   time.Time // when the watch was lost (zero: not lost)
		attempts int
		beats    beatEpisode
		echo     echoCheck
	)
	// lose starts an episode: the view is not current until the watch is
	// set up again
	lose := func(why string) {
		if w != nil {
			_ = w.Stop()
			w = nil
		}
		lostAt, attempts, echo = time.Now(), 0, echoCheck{}
		bo.Reset()
		m.mu.Lock()
		m.lost = true
		m.mu.Unlock()
		if m.rewatches != nil {
			m.rewatches.Inc()
		}
		m.log.Warn("members watch "+why+": watching again (backoff up to "+rewatchMax.String()+"); the member view is not current meanwhile, so no partition moves, and partitions are kept only while heartbeats are acknowledged",
			"bucket", m.kv.Bucket())
		retry = time.After(bo.Next())
	}
	if w == nil {
		lose("could not be set up while the NATS connection was down (" + werr.Error() + ")")
	}
	for {
		if m.stall != nil {
			m.stall()
		}
		m.turn()
		switch {
		case w != nil && m.generation() != gen:
			lose("may have missed updates (the NATS connection was re-established)")
		case w != nil && echo.overdue(m.timeout/2) && len(w.Updates()) == 0 && m.current():
			// the watch delivers nothing, not even this replica's own
			// heartbeat: its consumer resumed at a sequence the bucket,
			// deleted and created again, has not reached
			lose("delivered none of this replica's heartbeats for " + (m.timeout / 2).String())
		}
		var updates <-chan jetstream.KeyValueEntry
		if w != nil {
			updates = w.Updates()
		}
		select {
		case <-ctx.Done():
			m.leave(ctx)
			return nil
		case <-t.C:
			err := m.beat(ctx)
			if ctx.Err() != nil {
				continue
			}
			if err != nil {
				if cerr := m.closedErr(); cerr != nil {
					return cerr
				}
				if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
					// no stream takes the heartbeat: the bucket may be gone
					// (a restarted server lost it); create it for the next
					_ = m.ensure(ctx)
				}
			}
			beats.note(m.log, err)
			if err == nil && w != nil {
				m.mu.Lock()
				echo.sent(m.beatRev)
				m.mu.Unlock()
			}
		case e, ok := <-updates:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				if cerr := m.closedErr(); cerr != nil {
					return cerr
				}
				w = nil
				lose("ended")
				continue
			}
			if e == nil {
				if !known {
					close(m.known)
					known = true
				}
				if initial && !lostAt.IsZero() { // a watch set up again: current once a heartbeat round could be read
					m.mu.Lock()
					m.lost = false
					m.settle = time.Now().Add(m.timeout/4 + m.timeout/8)
					m.mu.Unlock()
					m.log.Info("members watch set up again", "bucket", m.kv.Bucket(), "lost_for", time.Since(lostAt).Round(time.Millisecond), "attempts", attempts)
					lostAt = time.Time{}
				}
				initial = false
				continue
			}
			if e.Key() == m.self {
				echo.seen(e.Revision())
			}
			m.mu.Lock()
			switch {
			case e.Operation() != jetstream.KeyValuePut:
				delete(m.seen, e.Key())
			case initial:
				// the server's stamp of the member's newest heartbeat; a
				// watch set up again keeps a newer local one
				if e.Created().After(m.seen[e.Key()]) {
					m.seen[e.Key()] = e.Created()
				}
			default:
				m.seen[e.Key()] = time.Now()
			}
			m.mu.Unlock()
		case <-retry:
			retry = nil
			attempts++
			gen = m.generation()
			var err error
			if w, err = m.rewatch(ctx); err == nil {
				initial = true
				continue
			}
			if ctx.Err() != nil {
				continue
			}
			if cerr := m.closedErr(); cerr != nil {
				return cerr
			}
			m.log.Debug("members watch not set up yet", "err", err, "attempts", attempts)
			retry = time.After(bo.Next())
		}
	}
}

// echoCheck expects the members watch to deliver this replica's own
// acknowledged heartbeats: a watch whose consumer was created again after
// the bucket was deleted and created again (by another replica, or by this
// one on a heartbeat that found no stream) resumes at the sequence after
// the last one it delivered, which the new bucket may not reach for a long
// time, and delivers nothing meanwhile without ending.
type echoCheck struct {
	want  uint64    // the oldest acknowledged revision not yet delivered (0: none)
	since time.Time // when it was acknowledged
}

func (e *echoCheck) sent(rev uint64) {
	if e.want == 0 && rev > 0 {
		e.want, e.since = rev, time.Now()
	}
}

func (e *echoCheck) seen(rev uint64) {
	if rev >= e.want {
		e.want = 0
	}
}

func (e *echoCheck) overdue(d time.Duration) bool { return e.want != 0 && elapsed(e.since) > d }

// generation is the count of reconnections (0 without reconnected).
func (m *members) generation() uint64 {
	if m.reconnected == nil {
		return 0
	}
	return m.reconnected()
}

// rewatch creates the bucket again when it is gone, then watches it.
func (m *members) rewatch(ctx context.Context) (jetstream.KeyWatcher, error) {
	if err := m.ensure(ctx); err != nil {
		return nil, err
	}
	return m.kv.WatchAll(ctx)
}

// ensure makes sure the bucket exists (open), each attempt bounded by
// startAttempt.
func (m *members) ensure(ctx context.Context) error {
	if m.open == nil {
		return nil
	}
	octx, cancel := context.WithTimeout(ctx, startAttempt)
	defer cancel()
	return m.open(octx)
}

// closedErr is the error Run stops with when the NATS connection is closed
// for good, nil while it is not.
func (m *members) closedErr() error {
	if m.closed == nil {
		return nil
	}
	if err := m.closed(); err != nil {
		return fmt.Errorf("collector: NATS connection closed, not reconnecting: %w", err)
	}
	return nil
}

// beatEpisode logs failing heartbeats once per episode: the first failure
// at WARN, the heartbeat acknowledged again at INFO with how many failed.
type beatEpisode struct {
	failed int
	since  time.Time
}

func (b *beatEpisode) note(log *slog.Logger, err error) {
	switch {
	case err != nil && b.failed == 0 && errors.Is(err, nats.ErrReconnectBufExceeded):
		// the connection is down and requests fail at once rather than
		// wait in the client (ReconnectBufSize -1): expected through a
		// broker restart, the WARN of the lost connection says so
		b.failed, b.since = 1, time.Now()
		log.Info("member heartbeat not sent: the NATS connection is reconnecting; retried every member_timeout/4, partitions are given up once none is acknowledged for 3/4 member_timeout")
	case err != nil && b.failed == 0:
		b.failed, b.since = 1, time.Now()
		log.Warn("member heartbeat failed: retried every member_timeout/4; partitions are given up once none is acknowledged for 3/4 member_timeout", "err", err)
	case err != nil:
		b.failed++
		log.Debug("member heartbeat", "err", err, "failed", b.failed)
	case b.failed > 0:
		log.Info("member heartbeat acknowledged again", "failed", b.failed, "since_first_failure", time.Since(b.since).Round(time.Millisecond))
		b.failed = 0
	}
}

// turn records a turn of the watch loop. The loop turns at least every
// timeout/4 (its heartbeat ticker); after a longer gap (this process was
// paused, or a heartbeat write hung) the heartbeats the others sent
// meanwhile are still unread, and live would count them gone: the view is
// current again only once a heartbeat round of every live member could
// have been read (timeout/4 and a half of it more).
func (m *members) turn() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if !m.loopAt.IsZero() && elapsed(m.loopAt) > m.timeout/2 {
		m.settle = now.Add(m.timeout/4 + m.timeout/8)
	}
	m.loopAt = now
}

// current reports whether the member view is up to date: the watch loop
// turned within timeout/2, its watch is up (not lost) and it is not
// settling after a gap (turn) or a watch set up again (run). The
// supervisor changes no assignment on a view that is not current.
func (m *members) current() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.lost && !m.loopAt.IsZero() && elapsed(m.loopAt) <= m.timeout/2 && time.Now().After(m.settle)
}

// leave deletes this replica's key (a graceful stop; after kill -9 the
// key ages out instead).
func (m *members) leave(ctx context.Context) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = m.kv.Delete(lctx, m.self)
}

// live returns the live members, sorted, self included.
func (m *members) live() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []string{m.self}
	for id, t := range m.seen {
		if id != m.self && time.Since(t) < m.timeout {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// assign gives every partition to one live member: rendezvous hashing
// (each partition ranks the members by a hash of (member, partition)),
// bounded so that every member holds floor(partitions/members) or one
// more, and only partitions mod members of them one more: every replica
// computes the same assignment from the same member list, the load is as
// even as it can be (3 members on 4 partitions: 2/1/1, never 2/2/0), and a
// join or leave moves few partitions.
func assign(live []string, parts int) map[int]string {
	out := make(map[int]string, parts)
	if len(live) == 0 {
		return out
	}
	base, extra := parts/len(live), parts%len(live)
	load := map[string]int{}
	ranked := slices.Clone(live)
	for p := range parts {
		sort.Slice(ranked, func(i, j int) bool { return score(ranked[i], p) > score(ranked[j], p) })
		// the capacity left always equals the partitions left, so a
		// member with room exists
		for _, m := range ranked {
			if load[m] < base || (load[m] == base && extra > 0) {
				if load[m] == base {
					extra--
				}
				out[p] = m
				load[m]++
				break
			}
		}
	}
	return out
}

// score is a well-mixed 64-bit hash of (member, partition): FNV-1a
// followed by the splitmix64 finaliser (FNV alone barely mixes the last
// bytes of short names).
func score(member string, p int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(strconv.Itoa(p)))
	z := h.Sum64() + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// errNotOwner: a partition's worker lost its partition, or cannot confirm
// that it still owns it; what it evaluated since its last checkpoint is
// dropped unpublished and the partition starts again from its newest
// checkpoint (errors.Is; the error is a *notOwner with the reason).
var errNotOwner = errors.New("collector: partition ownership lost")

// notOwner is errNotOwner with its reason: reasonMembership or reasonPin
// (the label of smelter_collector_cycles_dropped_total) and what was seen.
type notOwner struct{ reason, detail string }

// The reasons of smelter_collector_cycles_dropped_total.
const (
	reasonMembership = "membership"
	reasonPin        = "pin"
	reasonFence      = "fence" // the stream refused an output: another worker fenced the partition (fence.go)
)

func (e *notOwner) Error() string {
	return "collector: partition ownership lost or unconfirmed (" + e.reason + "): " + e.detail
}

func (e *notOwner) Is(target error) bool { return target == errNotOwner }

// tenure is a partition worker's hold on its partition. The server's pin
// decides who receives the partition's messages, but a replica that was
// paused (SIGSTOP, a frozen VM, a long swap stall) past its membership
// timeout still holds the state it had and would publish a cycle evaluated
// on it (such as a silence alert for every asset: its own pause looks like
// the devices' silence) before its checkpoint's compare-and-set fences it.
// So before it evaluates silence and before it publishes alerts and KPIs
// the worker checks that it still owns the partition: its membership has
// not lapsed since it started (members.held), and the server has not
// refused its pin (a fetch answered "pin ID mismatch": another client was
// pinned, or its pin expired). Otherwise it drops the cycle and the
// partition restarts from the newest checkpoint.
type tenure struct {
	mem  *members // nil: no membership (tests)
	term uint64
	pin  bool // the server refused this worker's pin
}

// check returns nil while the worker owns its partition, else a *notOwner.
// A nil tenure (Handle, Tick, tests) always owns.
func (t *tenure) check() error {
	switch {
	case t == nil:
		return nil
	case t.pin:
		return &notOwner{reasonPin, "the server refused this worker's pin (pin ID mismatch): another client holds the partition, or the pin expired"}
	case t.mem != nil:
		if age, ok := t.mem.held(t.term); !ok {
			return &notOwner{reasonMembership, fmt.Sprintf("no heartbeat continuously acknowledged since the partition was taken (last sent %v ago, lease %v): "+
				"the other replicas may have taken it", age.Round(time.Millisecond), t.mem.lease())}
		}
	}
	return nil
}

// storeGoneStops is how many workers of one partition in a row may stop
// on a stream or bucket the server does not have before the collector
// stops (storeGone): a NATS server restarted on an empty store, or the
// state bucket deleted, left every worker failing for good while the
// collector looked ready (review11 F1).
const storeGoneStops = 3

// storeGone reports whether err says the server has no such stream or KV
// bucket (JetStream API error 10059, or nats.go's errors for it).
func storeGone(err error) bool {
	if err == nil {
		return false
	}
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) ||
		errors.Is(err, nats.ErrStreamNotFound) || (errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamNotFound)
}

// priorityGroup is the pinned-client priority group on every partition
// consumer (the consumer names carry the collector group; the server
// limits this name to 16 characters).
const priorityGroup = "smelter"

// supervise runs one worker per owned partition (partition 0 alone in
// single replica mode) and moves partitions as members come and go.
func (c *Collector) supervise(ctx context.Context, io *natsIO, mem *members, partitioned bool) error {
	type running struct {
		stop     context.CancelFunc
		done     chan error
		stopping bool
		started  time.Time
	}
	workers := map[int]*running{}
	backoff := map[int]time.Time{}
	// failed: per partition, how many workers in a row stopped on an error
	// soon after starting (within failedWithin); from the second on the
	// stop is logged at ERROR: a worker that keeps restarting on the same
	// condition evaluates nothing, a single WARN among many hides it
	failed := map[int]int{}
	// gone: per partition, how many of those in a row stopped because the
	// stream or state bucket is gone (storeGone)
	gone := map[int]int{}
	failedWithin := 5*time.Duration(c.cfg.Cluster.AckWait) + time.Minute
	defer func() {
		held := make([]int, 0, len(workers))
		for p, w := range workers {
			w.stop()
			held = append(held, p)
		}
		for _, w := range workers {
			if err := <-w.done; err != nil {
				c.log.Debug("partition worker stopped", "err", err)
			}
		}
		if ctx.Err() != nil { // a graceful stop
			slices.Sort(held)
			c.log.Info("stopped consuming: partitions released (their held messages checkpointed and acknowledged)", "partitions", fmt.Sprint(held))
		}
	}()
	// assign only once the group's current members are known, so replicas
	// starting together do not all pull (and pin) every partition first
	select {
	case <-mem.known:
	case <-ctx.Done():
		return nil
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	parts := c.cfg.Cluster.Partitions
	var lastLive string
	for {
		if c.stall != nil {
			c.stall()
		}
		want := map[int]bool{}
		switch {
		case parts == 0:
			want[0] = true
		case !mem.current():
			// after a pause of this process the heartbeats of the others
			// are not read yet: keep the partitions as they are rather than
			// count a healthy peer gone and load its partitions (review 2,
			// finding 6); the workers check their own tenure
			for p, w := range workers {
				if !w.stopping {
					want[p] = true
				}
			}
		default:
			live := mem.live()
			if l := strings.Join(live, ","); l != lastLive {
				c.log.Info("group members", "group", c.cfg.Group, "live", l)
				lastLive = l
			}
			for p, m := range assign(live, parts) {
				if m == mem.self {
					want[p] = true
				}
			}
		}
		c.pulls.keep(want)
		for p, w := range workers {
			select {
			case err := <-w.done:
				delete(workers, p)
				switch {
				case err == nil || ctx.Err() != nil || errors.Is(err, errRepartitioned) || errors.Is(err, errNotOwner) || time.Since(w.started) > failedWithin:
					// errRepartitioned: a planned restart, logged at ERROR once
					// (checkRepartitioned); errNotOwner: logged by the worker
					failed[p] = 0
				default:
					failed[p]++
				}
				if storeGone(err) && failed[p] > 0 {
					gone[p]++
				} else {
					gone[p] = 0
				}
				if gone[p] >= storeGoneStops && ctx.Err() == nil {
					// waiting cannot bring a lost store back; the start
					// creates the stream's partitions and the buckets again
					return fmt.Errorf("collector: partition %d: %w: the stream or state bucket is gone from the NATS server "+
						"(its JetStream store lost, or deleted); stopping after %d tries, a restart creates them again", p, err, gone[p])
				}
				if err != nil && ctx.Err() == nil {
					lvl := slog.LevelWarn
					switch {
					case errors.Is(err, errNotOwner):
						lvl = slog.LevelInfo
					case failed[p] > 1:
						lvl = slog.LevelError
					}
					c.log.Log(ctx, lvl, "partition worker stopped", "partition", p, "err", err, "restarts_in_a_row", failed[p])
					if !errors.Is(err, errNotOwner) && !errors.Is(err, errRepartitioned) {
						c.pulls.failed(p, err) // nothing pulled until a worker pulls again (readiness)
					}
					c.m.workerStops.Inc()
					backoff[p] = time.Now().Add(time.Second)
				}
				continue
			default:
			}
			if !want[p] && !w.stopping {
				c.log.Info("partition released: assigned to another replica now", "partition", p)
				w.stopping = true
				w.stop() // finishes its cycle and stops pulling; reaped above
			}
		}
		for p := range want {
			if _, ok := workers[p]; ok || time.Now().Before(backoff[p]) {
				continue
			}
			c.log.Debug("partition wanted", "partition", p)
			wctx, stop := context.WithCancel(ctx)
			w := &running{stop: stop, done: make(chan error, 1), started: time.Now()}
			workers[p] = w
			// partitioned may change while this collector runs (another
			// group partitioned the stream: checkRepartitioned)
			pt := partitioned || c.repartitioned.Load()
			go func() { w.done <- c.work(ctx, wctx, io, mem, p, pt) }()
		}
		owned := 0 // released workers finishing their cycle are no longer owned
		for _, w := range workers {
			if !w.stopping {
				owned++
			}
		}
		c.m.owned.Set(float64(owned))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// work consumes one partition while stop is live. Each cycle fetches up to
// cluster.fetch messages, evaluates them in stream order and publishes
// their outputs (PubAcked); every cluster.checkpoint_interval (0: every
// cycle) the state of the assets changed since is checkpointed and only
// then are the messages acknowledged. It restores the partition's state
// when it starts (for the API), and again on the first messages after
// acquiring the partition, then first evaluates the messages a previous
// owner received but never acknowledged, so per-asset order holds across a
// takeover. It ends with errNotOwner, dropping what it evaluated since its
// last checkpoint, when it lost the partition or cannot tell (tenure).
func (c *Collector) work(ctx, stop context.Context, io *natsIO, mem *members, p int, partitioned bool) (err error) {
	parts := c.cfg.Cluster.Partitions
	name := c.cfg.consumerName(-1)
	if parts > 0 {
		name = c.cfg.consumerName(p)
	}
	cc := jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Duration(c.cfg.Cluster.AckWait),
		MaxAckPending: maxAckPending(c.cfg.Cluster.Fetch), DeliverPolicy: jetstream.DeliverAllPolicy}
	// The consumer's filter follows the server's version, which the client
	// knows only while connected ("" while it reconnects). A worker
	// restarted during an outage must not take "" for a 2.9 server: its
	// create request, buffered until the server is back, would widen the
	// partition's consumer to every subject (review12 F1: each partition's
	// worker evaluated every asset, alerts raised twice).
	version := io.nc.ConnectedServerVersion()
	for version == "" { // wait for the connection rather than restart every second with an error (verify12 N2)
		select {
		case <-stop.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
		if io.nc.IsClosed() {
			return errors.New("collector: not connected to NATS: the partition's consumer is created once connected")
		}
		version = io.nc.ConnectedServerVersion()
	}
	if parts > 0 && !versionAtLeast(version, minPartitionVersion) {
		return fmt.Errorf("collector: cluster.partitions needs nats-server %s or newer; connected to %s: %w", minPartitionVersion, version, ErrServerTooOld)
	}
	if partitioned && parts == 0 && versionAtLeast(version, "2.10.0") {
		var err error
		if partitioned, err = c.partitionedConsumer(ctx, io, name); err != nil {
			return err
		}
	}
	suffix := ""
	if partitioned {
		suffix = ".*"
		if parts > 0 {
			suffix = "." + strconv.Itoa(p)
		}
	}
	if parts > 0 {
		cc.PriorityPolicy, cc.PriorityGroups, cc.PinnedTTL = jetstream.PriorityPolicyPinned, []string{priorityGroup}, time.Duration(c.cfg.Cluster.PinnedTTL)
	}
	// filters: the kinds the worker evaluates, for the order check after a
	// takeover (recoverOrder)
	var filters []string
	if versionAtLeast(version, "2.10.0") {
		// One filter for every kind of the partition, not one per evaluated
		// kind: with several filters the server finds each next message by
		// intersecting the filters with every subject of the stream's block
		// (nats-server 2.15, msgBlock.firstMatchingMulti), which under a
		// backlog of a few thousand assets made it deliver about 3,000
		// messages/s in all; one wildcard filter is a linear walk. Status,
		// alert and KPI messages of the partition are delivered too, skipped
		// and acknowledged with the cycle. A consumer created with the three
		// filters (before) is updated to this one (servers from 2.10 allow it).
		cc.FilterSubject = consumerFilter(suffix)
		for _, s := range ingest.Subjects {
			filters = append(filters, s+suffix)
		}
	} else {
		// 2.9: no filter at all, which is every subject of the stream
		// (Smelter's kinds only; the ones not evaluated are skipped and
		// acknowledged with the cycle). Its filestore served a consumer
		// filtered by the wildcard smelter.v1.> at about 300 messages/s
		// once the collector's checkpoints ran beside it (a pull of 2,048
		// under a backlog of 6,000 got about 35 in 100 ms), so a replay of
		// thousands, and the redelivery after a crash, outlasted the order
		// check (attack-col F1); unfiltered it delivers 2,048 in about
		// 25 ms. A consumer created with the wildcard (before) is updated
		// to this (2.9 allows it).
		cc.FilterSubject = ""
		filters = []string{""}
	}
	cons, err := io.js.CreateOrUpdateConsumer(ctx, c.cfg.NATS.Stream, cc)
	if err != nil {
		return fmt.Errorf("collector: consumer %s on stream %s: %w", name, c.cfg.NATS.Stream, err)
	}
	group := ""
	if parts > 0 {
		group = priorityGroup
	}
	// Our own pulls (puller), one at a time, not a continuous Messages
	// pull: nothing is ever buffered in the client beyond the cycle being
	// evaluated, so a release leaves no delivered-but-unseen messages and
	// the pending count of the consumer tells exactly what a previous
	// owner left.
	pl, err := newPuller(io.nc, c.cfg.NATS.Stream, name, group, func(err error) {
		if err != nil {
			c.m.pullDials.WithLabelValues("error").Inc()
			c.warnLimited("pull-dial", "partition worker's pull connection could not be set up: dialed again after 100 ms doubling up to 5 s, its pulls waiting meanwhile; "+
				"nothing of the partition is evaluated until it is (/readyz answers 503 after 15 s)", "partition", p, "err", err)
			return
		}
		c.m.pullDials.WithLabelValues("ok").Inc()
	})
	if err != nil {
		return err
	}
	defer pl.stop()
	fetchN := c.cfg.Cluster.Fetch
	pull := func(wait time.Duration) ([]*jsMsg, error) {
		if c.beforeFetch != nil {
			c.beforeFetch(p)
		}
		if err := pl.send(fetchN, wait, 0); err != nil {
			return nil, err
		}
		switch { // tests: paused with the pull request on its way, as SIGSTOP mostly finds a worker
		case c.inFetch != nil:
			c.inFetch(p, pl)
		case c.stall != nil:
			c.stall()
		}
		return pl.collect()
	}
	more := func(wait time.Duration) ([]*jsMsg, error) {
		msgs, err := pull(wait)
		switch {
		case err == nil:
			c.pulls.ok(p)
		case !errors.Is(err, jetstream.ErrPinIDMismatch): // a pin id forgotten: the next pull goes without
			c.pulls.failed(p, err)
		}
		return msgs, err
	}
	log := c.log.With("partition", p, "consumer", name)
	own := &tenure{mem: mem}
	if mem != nil {
		// a worker starts only on a current membership: one that starts
		// while the heartbeat is lapsing would give its partition up at once
		for _, ok := mem.held(mem.term()); !ok; _, ok = mem.held(mem.term()) {
			select {
			case <-stop.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
		}
		own.term = mem.term()
	}
	sh := c.shard(p)
	// Whatever ends the worker, the bucket is the truth for this partition
	// from now on. The pin is not released explicitly: an unpin cannot
	// tell whose pin it removes (a replica whose member view lags could
	// yank a rightful owner's), so the next owner waits out pinned_ttl.
	defer func() { c.dropShard(sh) }()
	c.disrupted.started(p)
	defer func() {
		var no *notOwner
		if err != nil && !errors.As(err, &no) && ctx.Err() == nil {
			c.disrupted.failed(p) // until the next worker starts; it restores assets dated by their checkpoint
		}
		if errors.As(err, &no) {
			c.m.dropped.WithLabelValues(no.reason).Inc()
			log.Warn("partition ownership lost or unconfirmed: the cycle is dropped unpublished and the partition restarts from its newest checkpoint",
				"reason", no.reason, "detail", no.detail)
		}
	}()
	// The partition's checkpointed state is restored at once, for the API
	// and dashboard (its assets and active alerts), also before any message
	// comes. With partitions the server may still deliver the partition to
	// its previous owner until its pin expires: until its first messages
	// the worker applies the records that owner writes (follow), then reads
	// the state again (the pin is then this worker's).
	loaded := "" // single replica: "partition state restored"
	if parts > 0 {
		loaded = "partition assigned to this replica: state loaded (shown by the API; evaluation starts with the partition's first messages)"
	}
	if parts == 0 { // evaluated from this restore on: fenced before it (fence.go)
		fseq, err := c.fence(ctx, io, p)
		if err != nil {
			return err
		}
		sh.mu.Lock()
		sh.fence = fseq
		sh.mu.Unlock()
	}
	w, err := c.loadWatch(ctx, io.kv, sh, loaded)
	if err != nil {
		return err
	}
	if parts == 0 && w != nil { // the only consumer of its group
		_ = w.Stop()
		w = nil
	}
	stopFollow := func() {
		if w != nil {
			_ = w.Stop()
			w = nil
		}
	}
	defer stopFollow()
	fresh := true
	var lastDSeq uint64 // consumer sequence of the newest delivery seen
	var cseqs []uint64  // of the messages of a cycle (their metadata parsed once)
	lastTick := time.Now()
	lastStreamCheck := time.Now()
	// Silence is judged only on evidence that the stream holds nothing
	// more for the partition's assets (drained): never on local time alone.
	// drained is the start of the newest fetch that found nothing pending
	// after what it returned; judged, the one silence was last judged at.
	var drained, judged time.Time
	cy := cycle{own: own}
	var h held
	for stop.Err() == nil {
		// a partial batch waits at most 100 ms; a backlog fills it at once
		start := time.Now()
		msgs, ferr := more(100 * time.Millisecond)
		emptied := ferr == nil && leftNothing(msgs)
		if ferr != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Debug("fetch", "err", ferr)
			if errors.Is(ferr, nats.ErrPermissionViolation) { // would be retried in silence for ever
				c.warnLimited("pull-permission", "pull refused by the NATS server's permissions: the partition is not evaluated until the collector's user may publish "+
					"$JS.API.CONSUMER.MSG.NEXT."+c.cfg.NATS.Stream+".* and subscribe to _INBOX.> (docs/collector.md, \"Permissions\")", "partition", p, "err", ferr)
			}
			if consumerGone(ctx, cons, ferr) { // the supervisor starts the worker again, which creates it
				return ferr
			}
			if errors.Is(ferr, jetstream.ErrPinIDMismatch) {
				own.pin = true // checked below: the state held is no longer this worker's
			} else {
				// the stream may take no batch meanwhile: not the assets' silence
				c.disrupted.partition(p)
				select { // a broker that refuses at once must not spin this loop
				case <-stop.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
		if err := own.check(); err != nil {
			return err // what is held is not acknowledged: redelivered to the owner
		}
		if fresh && w != nil && !c.follow(ctx, w, sh) {
			stopFollow() // read again on the first messages all the same
		}
		cseqs = consumerSeqs(cseqs[:0], msgs)
		if len(msgs) > 0 && (fresh || gap(cseqs, lastDSeq)) {
			if len(h.replies) > 0 { // recoverOrder counts what is pending: nothing of ours
				if err := c.cycle(ctx, io, sh, nil, &cy, &h, partitioned, true); err != nil {
					return err
				}
			}
			// the first messages of this worker, or some delivered to it
			// were lost in transit (a reconnect): messages delivered but not
			// acknowledged come back after ack_wait and go first
			if fresh {
				c.m.takeovers.Inc()
				if parts > 0 {
					stopFollow()
					if sh, err = c.reload(ctx, io, sh, "partition pinned to this replica: state read again, evaluating"); err != nil {
						return err
					}
				}
			}
			if msgs, err = c.recoverOrder(ctx, io, cons, filters, msgs, more, log); err != nil {
				return err
			}
			cseqs = consumerSeqs(cseqs[:0], msgs)
			fresh = false
			emptied = false // the order check fetched more meanwhile: the next fetch tells
		}
		for _, s := range cseqs {
			lastDSeq = max(lastDSeq, s)
		}
		if len(msgs) > 0 || len(h.replies) > 0 {
			if err := c.cycle(ctx, io, sh, msgs, &cy, &h, partitioned, false); err != nil {
				return err
			}
		}
		if cy.foreign { // another partition's messages came: acknowledge them, set the filter again
			cy.foreign = false
			if err := c.cycle(ctx, io, sh, nil, &cy, &h, partitioned, true); err != nil {
				return err
			}
			if _, err := io.js.CreateOrUpdateConsumer(ctx, c.cfg.NATS.Stream, cc); err != nil {
				return fmt.Errorf("collector: setting consumer %s's filter again: %w", name, err)
			}
			log.Warn("partition consumer's filter set again after it delivered another partition's messages", "filter", cc.FilterSubject)
		}
		// every message of this round is evaluated, its replies held in
		// h's own blocks: the pull connection reads into their chunks again
		// (below, only their number is used)
		pl.release()
		expireBirths(sh) // on idle fetches too: incomplete births free their parts after their TTL
		if emptied {
			drained = start
		}
		if fresh && emptied && len(msgs) == 0 && time.Since(lastTick) >= rules.TickPeriod {
			// no message yet: silence of the restored assets is judged
			// only once the server says every message of the partition
			// was delivered and acknowledged by whoever held it, which
			// checkpointed it first (idleVerdict)
			lastTick = time.Now()
			from := c.silenceFrom(p, start.UnixMilli())
			judge := c.idleVerdict(ctx, cons, sh, p, parts > 0, start.UnixMilli(), from, log)
			if judge && parts > 0 {
				var err error
				stopFollow() // the state read again now holds every acknowledged message
				if sh, err = c.reload(ctx, io, sh, "partition idle, every message acknowledged: state read again to judge silence"); err != nil {
					return err
				}
			}
			if judge {
				if err := c.tick(ctx, sh, own, start.UnixMilli(), from); err != nil {
					return err
				}
			}
		}
		if !fresh && drained.After(judged) && time.Since(lastTick) >= rules.TickPeriod {
			lastTick = time.Now()
			if c.inHand(ctx, cons, p, len(h.replies), log) {
				judged = drained
				if err := c.tick(ctx, sh, own, drained.UnixMilli(), c.silenceFrom(p, drained.UnixMilli())); err != nil {
					return err
				}
			}
		}
		if !partitioned && parts == 0 && time.Since(lastStreamCheck) >= streamCheckEvery {
			lastStreamCheck = time.Now()
			if c.checkRepartitioned(ctx, io) {
				// once the consumer delivered every message of the old
				// subjects (none is stored after the change), checkpoint
				// and acknowledge what is held, then start over with the
				// partitioned subjects (partitionedConsumer)
				if info, err := cons.Info(ctx); err != nil || info.NumPending > 0 || info.NumAckPending > len(h.replies) {
					lastStreamCheck = time.Now().Add(time.Second - streamCheckEvery) // again in a second
					continue
				}
				if len(h.replies) > 0 {
					if err := c.cycle(ctx, io, sh, nil, &cy, &h, partitioned, true); err != nil {
						return err
					}
				}
				return errRepartitioned
			}
		}
	}
	if len(h.replies) > 0 && ctx.Err() == nil { // a graceful stop: checkpoint and acknowledge what is held
		return c.cycle(ctx, io, sh, nil, &cy, &h, partitioned, true)
	}
	return nil
}

// reload replaces a partition's shard, restored when the worker started,
// by one restored now from the bucket, when the partition's first messages
// came: a previous owner may have checkpointed since (it was delivered the
// partition until its pin expired). The partition is fenced first
// (fence.go): the new shard's outputs carry the fence, and the previous
// owner's outputs stored after it are refused, so the read-back of the
// restore holds every event either published. The old shard stays visible
// to the API until the new one is complete; its assets count no longer
// for max_assets.
func (c *Collector) reload(ctx context.Context, io *natsIO, old *shard, msg string) (*shard, error) {
	fseq, err := c.fence(ctx, io, old.p)
	if err != nil {
		return old, err
	}
	old.mu.Lock()
	n := old.engine.Len()
	old.mu.Unlock()
	c.tracked.Add(-int64(n))
	sh := c.newShard(old.p)
	sh.fence = fseq
	err = c.load(ctx, io.kv, sh, msg)
	c.mu.Lock()
	replaced := err == nil && c.shards[old.p] == old
	if replaced {
		c.shards[old.p] = sh
	}
	c.mu.Unlock()
	if replaced {
		c.retire(old)
	}
	c.tracked.Store(int64(c.trackedAssets()))
	if err != nil {
		return old, err
	}
	return sh, nil
}

// consumerFilter is a partition consumer's filter subject: every
// telemetry kind of every asset, then suffix (the partition token: ".<p>",
// ".*", or none on a stream without the transform).
func consumerFilter(suffix string) string {
	return telemetry.SubjectPrefix + ".*.*.*.*" + suffix
}

// leftNothing reports whether a fetch that returned msgs without an error
// left nothing pending on its consumer: it returned no message at all
// (the server had none to deliver while the pull waited), or its last
// message says no more were pending when it was delivered (NumPending of
// its metadata). Every message stored before the fetch was sent was then
// delivered, to this worker unless some were lost on the way (inHand).
// A fetch cut short by a full batch, or whose pull expired while this
// process was paused, leaves messages pending and is no such evidence.
func leftNothing(msgs []*jsMsg) bool {
	if len(msgs) == 0 {
		return true
	}
	a := msgs[len(msgs)-1].ack
	return a.ok && a.pending == 0
}

// silenceFrom returns the time partition p's assets' silence is counted
// from at the earliest when judged as of at (Unix ms): the end of its
// newest disruption (disruptions).
func (c *Collector) silenceFrom(p int, at int64) int64 {
	from := c.disrupted.since(p)
	if c.onJudge != nil {
		c.onJudge(p, at, from)
	}
	return from
}

// inHand confirms the evidence of a drained fetch before silence is judged
// on it: the consumer has no delivered, unacknowledged message but the
// held ones this worker evaluated. More means deliveries that never reached
// the worker (a pull that expired while the process was paused: its
// messages were dropped by the client) and come back only after ack_wait.
func (c *Collector) inHand(ctx context.Context, cons jetstream.Consumer, p, held int, log *slog.Logger) bool {
	info, err := cons.Info(ctx)
	if err != nil {
		c.disrupted.partition(p)
		log.Debug("silence not judged: consumer info", "err", err)
		return false
	}
	if info.NumAckPending > held {
		log.Debug("silence not judged: deliveries not in hand", "ack_pending", info.NumAckPending, "held", held)
		return false
	}
	return true
}

// idleVerdict decides whether a worker that received no message of its
// partition p yet may judge the silence of the restored assets as of at
// (the start of a fetch that returned none; silence counted from from): only on the server's word
// that the stream holds nothing the state may lack. The consumer's info
// must show no message pending and none delivered but unacknowledged (an
// acknowledged message was checkpointed first), and, with partitions, no
// client pinned: a previous owner that still holds the pin may still be
// delivered messages this worker will not see. With partitions the
// caller then reads the state again (the previous owner's last records),
// so only when Silent says some asset is due. The verdict never rests on
// local time alone: a worker paused, or behind a backlog, or not pinned,
// finds messages pending, delivered or a pin.
func (c *Collector) idleVerdict(ctx context.Context, cons jetstream.Consumer, sh *shard, p int, pinned bool, at, from int64, log *slog.Logger) bool {
	sh.mu.Lock()
	due := sh.engine.Silent(at, from)
	sh.mu.Unlock()
	if !due {
		return false
	}
	info, err := cons.Info(ctx)
	if err != nil {
		c.disrupted.partition(p)
		log.Debug("silence not judged: consumer info", "err", err)
		return false
	}
	if info.NumPending > 0 || info.NumAckPending > 0 {
		log.Debug("silence not judged: messages pending or unacknowledged", "pending", info.NumPending, "ack_pending", info.NumAckPending)
		return false
	}
	if pinned {
		for _, g := range info.PriorityGroups {
			if g.PinnedClientID != "" {
				log.Debug("silence not judged: a client is pinned", "group", g.Group)
				return false
			}
		}
	}
	return true
}

// consumerGone reports whether a fetch's error means the partition's
// consumer is gone: deleted while a pull waited (409), or, where the pull
// found nobody to answer it (no responders: deleted between two fetches),
// the consumer's info says it does not exist.
func consumerGone(ctx context.Context, cons jetstream.Consumer, err error) bool {
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrConsumerDeleted):
		return true
	case errors.Is(err, nats.ErrNoResponders):
		_, ierr := cons.Info(ctx)
		return errors.Is(ierr, jetstream.ErrConsumerNotFound)
	}
	return false
}

// consumerSeqs appends the consumer sequence of every message (0 where
// its metadata does not parse).
func consumerSeqs(dst []uint64, msgs []*jsMsg) []uint64 {
	for _, m := range msgs {
		dst = append(dst, m.ack.cseq)
	}
	return dst
}

// jsMsg is a message a pull delivered, with its reply subject's metadata
// read once (parseAck).
type jsMsg struct {
	natswire.Msg
	ack ackMeta
}

// ackMeta is what a JetStream message's reply subject tells, the fields
// jetstream.Msg.Metadata gives as Sequence.Stream, Sequence.Consumer,
// Timestamp (Unix ns, the server's clock) and NumPending, each 0 where not
// a number; ok is false where Metadata fails.
type ackMeta struct {
	delivered, sseq, cseq, tm, pending uint64
	ok                                 bool
}

// ackProgress is the body of a JetStream work-in-progress acknowledgement
// (jetstream.Msg.InProgress): the server restarts the message's ack_wait.
var ackProgress = []byte("+WPI")

// parseAck reads a JetStream message's reply subject without allocating
// (Metadata allocates its result; a cycle needs this of every message).
// ok is false where nats.go's parser.GetMetadataFields fails: a reply
// that is not $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.
// <pending> (9 tokens) or $JS.ACK.<domain>.<account hash>.<stream>.
// <consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>...] (11 or
// more).
func parseAck(reply string) (a ackMeta) {
	const prefix = "$JS.ACK."
	n := strings.Count(reply, ".") + 1
	if (n != 9 && n < 11) || !strings.HasPrefix(reply, prefix) {
		return a
	}
	rest := reply[len(prefix):]
	skip := 2 // <stream>.<consumer>
	if n > 9 {
		skip += 2 // <domain>.<account hash>
	}
	for range skip {
		_, rest, _ = strings.Cut(rest, ".")
	}
	var tok string
	tok, rest, _ = strings.Cut(rest, ".")
	a.delivered = ackNum(tok)
	tok, rest, _ = strings.Cut(rest, ".")
	a.sseq = ackNum(tok)
	tok, rest, _ = strings.Cut(rest, ".")
	a.cseq = ackNum(tok)
	tok, rest, _ = strings.Cut(rest, ".")
	a.tm = ackNum(tok)
	tok, _, _ = strings.Cut(rest, ".")
	a.pending, a.ok = ackNum(tok), true
	return a
}

// liveLag is how old (by the NATS server's clock) a JetStream message may
// be when the collector reads it and still count as live: a live message
// arrives when read (the collector's clock), an older one when the stream
// stored it. It is far above the skew of two NTP-kept clocks and a loaded
// collector's lag, and far below an outage.
const liveLag = 10 * time.Second

// arrivedAt is when the JetStream message with ack subject reply arrived,
// on the collector's clock now, and whether it is live: now for a live
// message (stored less than lag, the collector's liveLag, before now, or
// later: a server clock ahead of ours), and the stream's time of it (the
// <tm> token, Unix ns, the server's clock) for a backlog. Only a live
// message's ts_gw measures its gateway's clock (dashboard.Clock). The
// collector bounds a message's times by its arrival (ingest.BoundBatch,
// BoundTSGW). A backlog read after an outage arrived
// when it was stored, not when it is read: bounded by the read time, a
// message dated ahead when it came was no longer ahead, and review6 F1-F3
// came back for every backlog (review7 F2). A live message is bounded by
// the collector's own clock, not the server's: bounded by the stored time,
// a NATS server whose clock was 3 s behind moved every correct gateway's
// times 3 s into the past and counted them as ahead, and a step back of
// its clock dropped real batches as late (review9 F1). What is left: a
// backlog is bounded by the server's clock (a server s behind moves the
// backlog's times up to s back); without a <tm> it is now.
// stored is the stream's time of the message (Unix ms, the server's clock,
// live or not; now without a <tm>).
func arrivedAt(a ackMeta, now time.Time, lag time.Duration) (at time.Time, stored int64, live bool) {
	ns := a.tm
	if !a.ok || ns == 0 {
		return now, now.UnixMilli(), true
	}
	stored = time.Unix(0, int64(ns)).UnixMilli()
	if ns > uint64(now.Add(-lag).UnixNano()) {
		return now, stored, true
	}
	return time.Unix(0, int64(ns)), stored, false
}

// ackNum is nats.go's parser.ParseNum: the decimal number d, 0 when empty
// or not all digits.
func ackNum(d string) (n uint64) {
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return 0
		}
		n = n*10 + uint64(d[i]-'0')
	}
	return n
}

// gap reports whether deliveries were lost before or among the messages
// of consumer sequences seqs (0: unknown, skipped): every delivery takes
// the next consumer sequence, so one missing means a message reached no
// one and is pending its redelivery.
func gap(seqs []uint64, last uint64) bool {
	for _, s := range seqs {
		if s == 0 {
			continue
		}
		if s != last+1 {
			return true
		}
		last = s
	}
	return false
}

// recoverOrder makes sure msgs are not evaluated before earlier messages
// of the partition that are not acknowledged yet (delivered to a previous
// owner, or to this worker and lost in transit, or forgotten by a consumer
// leader that changed): it lists the stream's messages of the evaluated
// kinds (filters) between the ack floor and the first message held,
// waits until they are redelivered (after ack_wait), and returns all in
// stream order. If some of them get acknowledged meanwhile by their first
// receiver, a replica that still owned the partition, its checkpoint may
// be newer than the state read here: errFenced, the partition starts over.
//
// It waits as long as earlier messages keep coming back: it gives up
// (error) only when none came for recoverIdle x ack_wait, counted from
// ack_wait after the start (their first redelivery). nats-server 2.9
// redelivers a few hundred messages a second when a few thousand are
// pending (attack-col F1: a kill -9 during a 5,500-message replay), so a
// fixed deadline restarted the worker for ever; 2.10 and newer redeliver
// them at once.
func (c *Collector) recoverOrder(ctx context.Context, io *natsIO, cons jetstream.Consumer, filters []string, msgs []*jsMsg,
	more func(time.Duration) ([]*jsMsg, error), log *slog.Logger) ([]*jsMsg, error) {
	held := map[uint64]*jsMsg{}
	first := uint64(0)
	for _, m := range msgs {
		if m.ack.ok {
			held[m.ack.sseq] = m
			if first == 0 || m.ack.sseq < first {
				first = m.ack.sseq
			}
		}
	}
	s, err := io.js.Stream(ctx, c.cfg.NATS.Stream)
	if err != nil {
		return nil, fmt.Errorf("collector: stream %s: %w", c.cfg.NATS.Stream, err)
	}
	walk := newEarlierWalk(s, c.cfg.NATS.Stream, filters, first)
	ackWait := time.Duration(c.cfg.Cluster.AckWait)
	start := time.Now()
	// the first redeliveries come ack_wait after the start at the latest
	since := start.Add(ackWait) // of the last earlier message back
	lastProgress, lastLog := start, start
	// pulls of the wait: long enough that a server which lets a partly
	// served pull expire without a status (2.9: the puller then waits
	// 1 s more) still spends most of the wait receiving; short enough
	// that the held messages' InProgress (every ack_wait/2) keeps them
	// from being redelivered
	pull := min(max(ackWait/4, 200*time.Millisecond), time.Second)
	var expected []uint64
	initial, came := -1, 0
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("collector: consumer info: %w", err)
		}
		// two signs of earlier messages: stream messages of this partition
		// between the ack floor and the first held one that are not held,
		// and more messages pending (delivered, unacknowledged) than held
		missing, err := walk.update(ctx, info.AckFloor.Stream, held, maxAckPending(c.cfg.Cluster.Fetch))
		if err != nil {
			return nil, err
		}
		orphans := info.NumAckPending - len(held)
		if initial < 0 {
			log.Debug("order check", "ack_floor", info.AckFloor.Stream, "pending", info.NumAckPending, "first", first, "held", len(held), "missing", len(missing))
			expected, initial = append([]uint64{}, missing...), max(orphans, 0)
			if len(missing) > 0 || orphans > 0 {
				// delivered earlier (to a previous owner, or to this worker and
				// lost, as over a pause of this process) and not acknowledged
				log.Info("earlier messages not acknowledged yet: waiting for their redelivery (up to ack_wait) to evaluate them first",
					"delivered_unacknowledged", orphans, "missing_before", len(missing), "ack_wait", ackWait)
			}
		}
		if len(missing) == 0 && orphans <= 0 {
			break
		}
		now := time.Now()
		if idle := now.Sub(since); idle > recoverIdle*ackWait {
			return nil, fmt.Errorf("collector: %d earlier messages did not come back (none for %v; %d came back in %v; %d missing before the first held, %d more delivered and unacknowledged)",
				len(missing)+max(orphans, 0), idle.Round(time.Millisecond), came, now.Sub(start).Round(time.Millisecond), len(missing), max(orphans, 0))
		}
		if now.Sub(lastLog) >= recoverLogEvery {
			log.Info("earlier messages coming back", "came_back", came, "missing_before", len(missing), "delivered_unacknowledged", max(orphans, 0), "waiting", now.Sub(start).Round(time.Second))
			lastLog = now
		}
		if now.Sub(lastProgress) > ackWait/2 {
			for _, m := range held { // keep the held ones from being redelivered
				_ = io.nc.Publish(m.Reply, ackProgress)
			}
			lastProgress = now
		}
		ms, err := more(pull)
		if err != nil {
			log.Debug("fetch", "err", err)
		}
		for _, m := range ms {
			if m.ack.ok {
				if _, dup := held[m.ack.sseq]; !dup {
					held[m.ack.sseq] = m
					if m.ack.delivered > 1 {
						came++
						if t := time.Now(); t.After(since) {
							since = t
						}
					}
				}
			}
		}
	}
	if came < initial {
		return nil, fmt.Errorf("collector: %w: %d earlier deliveries were acknowledged by another replica", errFenced, initial-came)
	}
	for _, s := range expected {
		if _, ok := held[s]; !ok {
			return nil, fmt.Errorf("collector: %w: earlier message %d was acknowledged by another replica", errFenced, s)
		}
	}
	seqs := make([]uint64, 0, len(held))
	for s := range held {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	out := make([]*jsMsg, 0, len(seqs))
	for _, s := range seqs {
		out = append(out, held[s])
	}
	return out, nil
}

const (
	// recoverIdle is how many ack_wait periods the order check waits
	// with no earlier message coming back before it gives up.
	recoverIdle = 4
	// recoverLogEvery is how often a long order check says how far it got.
	recoverLogEvery = 10 * time.Second
)

// earlierWalk finds the stream sequences matching filters in (ack floor,
// first) that are not held: the earlier messages the order check waits
// for. It walks the stream once, with one next-by-subject request per
// message found (STREAM.MSG.GET), keeping at most limit found and not yet
// held at a time; each update drops what came back (held) or was
// acknowledged meanwhile (at or below the ack floor), and walks on from
// where it stopped. Walking again from the ack floor at every update,
// as before, cost O(pending) requests per 200 ms round, more than the
// server could answer under a backlog of thousands (attack-col F1).
type earlierWalk struct {
	s       jetstream.Stream
	stream  string
	filters []string
	first   uint64   // the first held message: the walk ends there
	cursor  uint64   // the next sequence to look at
	next    []uint64 // per filter: its next matching seq at or after cursor, ^0: none
	done    bool
	missing []uint64 // found, not held (ascending)
}

// newEarlierWalk starts the walk at the stream's first message (s's info,
// as read): what the limits removed before it is no message to wait for.
func newEarlierWalk(s jetstream.Stream, stream string, filters []string, first uint64) *earlierWalk {
	w := &earlierWalk{s: s, stream: stream, filters: filters, first: first, next: make([]uint64, len(filters))}
	if info := s.CachedInfo(); info != nil {
		w.cursor = info.State.FirstSeq
	}
	return w
}

// nextOf returns the sequence of the stream's next message matching
// filter at or after the cursor and before first (^0: none). The empty
// filter (the unfiltered consumer on nats-server 2.9) reads the sequences
// one by one, skipping deleted ones, instead of asking for the next
// message of a wildcard subject, the slow path of that server.
func (w *earlierWalk) nextOf(ctx context.Context, filter string) (uint64, error) {
	if filter != "" {
		m, err := w.s.GetMsg(ctx, w.cursor, jetstream.WithGetMsgSubject(filter))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return ^uint64(0), nil
		case err != nil:
			return 0, fmt.Errorf("collector: stream %s: next %s after %d: %w", w.stream, filter, w.cursor, err)
		}
		return m.Sequence, nil
	}
	for seq := w.cursor; seq < w.first; seq++ {
		_, err := w.s.GetMsg(ctx, seq)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound): // deleted
		case err != nil:
			return 0, fmt.Errorf("collector: stream %s: message %d: %w", w.stream, seq, err)
		default:
			return seq, nil
		}
	}
	return ^uint64(0), nil
}

// update returns the earlier messages still missing (ascending; at most
// limit). Errors are the stream's (STREAM.MSG.GET).
func (w *earlierWalk) update(ctx context.Context, floor uint64, held map[uint64]*jsMsg, limit int) ([]uint64, error) {
	w.missing = slices.DeleteFunc(w.missing, func(s uint64) bool {
		_, ok := held[s]
		return ok || s <= floor
	})
	w.cursor = max(w.cursor, floor+1)
	for !w.done && w.cursor < w.first && len(w.missing) < limit {
		best := uint64(0)
		for i, f := range w.filters {
			if w.next[i] < w.cursor && w.next[i] != ^uint64(0) {
				n, err := w.nextOf(ctx, f)
				if err != nil {
					return nil, err
				}
				w.next[i] = n
			}
			if w.next[i] != ^uint64(0) && (best == 0 || w.next[i] < best) {
				best = w.next[i]
			}
		}
		if best == 0 || best >= w.first {
			w.done = true
			break
		}
		if _, ok := held[best]; !ok {
			w.missing = append(w.missing, best)
		}
		w.cursor = best + 1
	}
	return w.missing, nil
}

// held is what a partition's worker evaluated and published since its last
// checkpoint: the messages to acknowledge once their assets' state is
// written (cluster.checkpoint_interval). Only their reply subjects (the
// acknowledgement's address) are kept, not the messages: up to 7 x fetch
// messages per partition wait here, and their payloads, headers and client
// structures (about 1.5 KiB each, 1.2 KiB batches) would otherwise stay
// alive until the checkpoint, which made the heap, and the fresh memory the
// process touches (a page fault per 4 KiB), larger by up to about 85 MB at the
// default fetch with 4 partitions.
type held struct {
	replies []string  // views into arena
	arena   []byte    // the replies' bytes: copies, so that no pulled chunk is kept alive by them
	last    time.Time // of the last checkpoint
}

// hold keeps the reply subject r for the next acknowledgement, in the
// arena (a message's reply is a view into its pull's read chunk, which it
// would keep alive until the checkpoint).
func (h *held) hold(r string) {
	if len(r) == 0 {
		h.replies = append(h.replies, "")
		return
	}
	if cap(h.arena)-len(h.arena) < len(r) { // a new block: the replies held view the old one
		h.arena = make([]byte, 0, max(arenaBlock, len(r)))
	}
	n := len(h.arena)
	h.arena = append(h.arena, r...)
	h.replies = append(h.replies, unsafe.String(&h.arena[n], len(r)))
}

// arenaBlock is the size of a block of held replies: a worker holds up to
// 7 x fetch replies of about 80 bytes (1.1 MiB at fetch 2,048) between two
// checkpoints, in as many blocks; after the acknowledgement only the last
// block is kept (doubling one arena kept 2 MiB per partition for good).
const arenaBlock = 64 << 10

// release forgets the replies after their acknowledgement: the last block
// is written again from its start, the others are garbage.
func (h *held) release() {
	clear(h.replies)
	h.replies = h.replies[:0]
	h.arena = h.arena[:0]
}

// ackBody is an acknowledgement (JetStream's "+ACK").
var ackBody = []byte("+ACK")

// doubleAckWait is how long the last acknowledgement of a checkpoint waits
// for the server's answer when the context sets no deadline (jetstream's
// default API timeout, what DoubleAck waits).
const doubleAckWait = 5 * time.Second

// ack acknowledges the held messages: every one but the last with a plain
// ack, the last confirmed by the server (a double ack: once it answers,
// the cycle is through). It does what jetstream.Msg's Ack and DoubleAck
// do, from the reply subject alone.
func (h *held) ack(ctx context.Context, nc *nats.Conn) error {
	for i, r := range h.replies {
		if i < len(h.replies)-1 {
			if err := nc.Publish(r, ackBody); err != nil {
				return err
			}
			continue
		}
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, doubleAckWait)
			defer cancel()
		}
		if _, err := nc.RequestWithContext(ctx, r, ackBody); err != nil {
			return err
		}
	}
	return nil
}

// maxAckPending is a partition consumer's max_ack_pending for
// cluster.fetch n: the messages a worker may hold unacknowledged between
// two checkpoints plus one fetch in flight.
//
// A worker checkpoints once more than max_ack_pending - 2 x fetch
// messages are held (7 x fetch held at most after a cycle), so the next
// fetch always finds room: at max_ack_pending the server would deliver
// nothing until the acks, and each partition would wait on its own
// checkpoint. Under a backlog the checkpoint interval, not this limit,
// should decide how often an asset is written: at 10,000 assets (2,500
// per partition, about 8,000 messages a second each) 2 x fetch held wrote
// 0.65 records per batch, 7 x fetch 0.23-0.27.
func maxAckPending(fetch int) int { return 8 * fetch }

// cycle evaluates msgs in order and publishes their alert and KPI
// messages; it checkpoints and acknowledges everything held when it
// published any, when cluster.checkpoint_interval has passed since the
// last checkpoint, when the next fetch could reach max_ack_pending, or
// with force.
func (c *Collector) cycle(ctx context.Context, io *natsIO, sh *shard, msgs []*jsMsg, cy *cycle, h *held, partitioned, force bool) error {
	sh.cycle.Lock()
	defer sh.cycle.Unlock()
	if len(h.replies) == 0 {
		cy.reset()
		h.last = time.Now()
	}
	now := time.Now() // the cycle's messages arrived by now (read once: a cycle holds up to fetch messages)
	for _, m := range msgs {
		subj := m.Subject
		if partitioned { // drop the partition token
			i := strings.LastIndexByte(subj, '.')
			tok := subj[i+1:]
			subj = subj[:i]
			if parts := c.cfg.Cluster.Partitions; parts > 0 && tok != sh.tok {
				// another partition's message: this worker's consumer is not
				// filtered to its partition (created while the server's
				// version was unknown, or edited by hand). It is not
				// evaluated, but acknowledged with the cycle on this
				// consumer (the server would deliver it here again, also
				// after the filter is set: review12 F1's workers looping on
				// "earlier messages"); the partition's own consumer delivers
				// it to its owner. The worker sets the filter again after
				// the cycle (refilter).
				c.m.foreign.Inc()
				if !cy.foreign {
					c.warnLimited("foreign", "message of another partition delivered to a partition's consumer: not evaluated; the consumer's filter is set again",
						"subject", logCut(m.Subject), "partition", sh.p)
				}
				cy.foreign = true
				continue
			}
			if parts := c.cfg.Cluster.Partitions; parts > 0 && !ownPartition(subj, tok, parts) {
				c.m.malformed.WithLabelValues("partition").Inc()
				c.warnLimited("partition", "message in a partition not its asset's skipped (published with a partition token)",
					"subject", logCut(m.Subject), "partition", sh.p)
				continue
			}
		}
		if sh.adopting.Load() { // events read back at the restore, put in their stream order
			c.adoptBefore(sh, streamSeq(m))
		}
		at, stored, live := arrivedAt(m.ack, now, c.liveLag)
		c.processPayload(sh, subj, m.Data, true, at, live, stored, m.Header(telemetry.SentAtHeader), cy)
	}
	// a cycle that published alert or KPI messages checkpoints at once, so a
	// crash never replays a published transition (only cycles without
	// outputs wait for the interval)
	force = force || len(cy.outs) > 0
	if err := c.publish(ctx, io, sh, cy); err != nil {
		return err
	}
	for _, m := range msgs {
		h.hold(m.Reply)
	}
	due := force || time.Since(h.last) >= time.Duration(c.cfg.Cluster.CheckpointInterval) || len(h.replies) > maxAckPending(c.cfg.Cluster.Fetch)-2*c.cfg.Cluster.Fetch
	if len(h.replies) == 0 || !due {
		return nil
	}
	if err := c.checkpoint(ctx, io, sh, cy); err != nil {
		return err
	}
	cy.reset()
	err := h.ack(ctx, io.nc)
	h.release()
	if err != nil {
		return fmt.Errorf("collector: ack: %w", err)
	}
	return nil
}

// partitionOf is the partition the stream's transform (partitionTransform,
// nats-server's partition(n,1,3)) gives the asset id of a site: FNV-1a
// 32-bit of the site and asset tokens concatenated, modulo n
// (nats-server server/subject_transform.go, getHashPartition).
func partitionOf(site, asset string, n int) int {
	const offset, prime = 2166136261, 16777619 // FNV-1a 32-bit, inline: no allocation per message
	h := uint32(offset)
	for _, s := range [2]string{site, asset} {
		for i := 0; i < len(s); i++ {
			h ^= uint32(s[i])
			h *= prime
		}
	}
	return int(h % uint32(n))
}

// ownPartition reports whether tok, the partition token a stored message
// carries after subject (smelter.v1.<site>.<class>.<asset>.<kind>), is the
// one the transform gives its (site, asset). A publisher may send a
// 7-token subject itself: the transform only rewrites 6-token subjects, so
// such a message is stored in the partition it names, and would give its
// asset a second owner with separate state.
func ownPartition(subject, tok string, n int) bool {
	var t [6]string // split without allocating: this runs for every message
	rest := subject
	for i := range 5 {
		j := strings.IndexByte(rest, '.')
		if j < 0 {
			return false
		}
		t[i], rest = rest[:j], rest[j+1:]
	}
	if strings.IndexByte(rest, '.') >= 0 {
		return false
	}
	t[5] = rest
	return tok == strconv.Itoa(partitionOf(t[2], t[4], n))
}

// partitionedConsumer prepares a single replica's consumer name for the
// partitioned subjects of a stream another group partitioned, and reports
// whether the worker is to consume them (false: go on with the
// unpartitioned subjects first). A consumer still filtering the
// unpartitioned subjects is not updated in place: its pulls moved it past
// every partitioned message stored until the change was noticed (the
// server skips what its filter does not match), so it would never deliver
// them and the order check would wait for them for ever (review finding:
// "earlier messages ... did not come back", nothing evaluated). Once it
// has delivered and been acknowledged every message of the old subjects
// (the transform rewrites every new one), it is deleted and created again
// delivering every partitioned message of the stream: it never delivered
// one, so each is evaluated exactly once. Until then the worker drains it.
func (c *Collector) partitionedConsumer(ctx context.Context, io *natsIO, name string) (bool, error) {
	cons, err := io.js.Consumer(ctx, c.cfg.NATS.Stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("collector: consumer %s on stream %s: %w", name, c.cfg.NATS.Stream, err)
	}
	info := cons.CachedInfo()
	if info.Config.FilterSubject != consumerFilter("") && !slices.Contains(info.Config.FilterSubjects, ingest.Subjects[0]) {
		return true, nil // already on the partitioned subjects
	}
	if info.NumPending > 0 || info.NumAckPending > 0 {
		c.log.Info("the stream was partitioned: consuming what is left of the unpartitioned subjects first", "consumer", name,
			"pending", info.NumPending, "ack_pending", info.NumAckPending)
		return false, nil
	}
	if err := io.js.DeleteConsumer(ctx, c.cfg.NATS.Stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, fmt.Errorf("collector: consumer %s on stream %s: delete to follow the partitioned subjects: %w", name, c.cfg.NATS.Stream, err)
	}
	c.log.Info("consumer created again for the partitioned subjects", "consumer", name, "delivered_stream_seq", info.Delivered.Stream)
	return true, nil
}

// streamCheckEvery is how often a single-replica collector on an
// unpartitioned stream checks whether another group partitioned it.
var streamCheckEvery = 10 * time.Second

// errRepartitioned ends a single replica's worker whose stream was
// partitioned while it ran; the supervisor starts it again on the
// partitioned subjects.
var errRepartitioned = errors.New("collector: the stream was partitioned by another group while this collector ran; consuming its partitioned subjects from now on")

// checkRepartitioned reports whether the stream, unpartitioned when this
// collector started, now has a subject transform (another group with
// cluster.partitions set it): from then on its messages carry a seventh
// token, and a consumer filtering the six-token subjects receives nothing
// (review finding: it went silent with no error and raised a stale alert on
// every asset). It logs the change once.
func (c *Collector) checkRepartitioned(ctx context.Context, io *natsIO) bool {
	if c.repartitioned.Load() {
		return true
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := io.js.Stream(sctx, c.cfg.NATS.Stream)
	if err != nil || st.CachedInfo().Config.SubjectTransform == nil {
		return false
	}
	if !c.repartitioned.Swap(true) {
		tr := st.CachedInfo().Config.SubjectTransform
		c.log.Error("the stream was partitioned by another group while this collector ran: consuming the partitioned subjects from now on; give every group on a stream the same cluster.partitions (docs/collector.md)",
			"stream", c.cfg.NATS.Stream, "transform", tr.Source+" -> "+tr.Destination)
	}
	return true
}
