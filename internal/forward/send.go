package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/smelterio/smelter/internal/spool"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/uplink"
)

// sender turns one lane's records into envelopes that fit the uplink and
// publishes them. Each lane has its own (the buffers are reused).
type sender struct {
	f     *Forwarder
	envs  []telemetry.Envelope
	seqs  []uint64 // the seq of each envelope
	apps  []int64  // append times of the records sent by the last send
	parts []telemetry.Batch
	buf   []byte
}

func newSender(f *Forwarder) *sender { return &sender{f: f} }

// send publishes items of recs and returns nil once the broker confirmed
// every message, or the record was set aside: a message the broker
// rejects for good is set aside and the rest published again.
func (s *sender) send(ctx context.Context, recs []spool.Record, items []item) error {
	s.build(recs, items)
	for {
		err := s.f.up.Publish(ctx, s.envs)
		if err == nil {
			return nil
		}
		var rej *uplink.RejectedError
		if !errors.As(err, &rej) {
			return err
		}
		i := s.index(rej.MsgID)
		if i < 0 {
			return err // not one of ours: treat as a failure
		}
		s.f.setAside(s.seqs[i], rej.MsgID, rej.Reason, 1, err)
		s.envs = append(s.envs[:i], s.envs[i+1:]...)
		s.seqs = append(s.seqs[:i], s.seqs[i+1:]...)
	}
}

func (s *sender) index(msgID string) int {
	for i := range s.envs {
		if s.envs[i].MsgID == msgID {
			return i
		}
	}
	return -1
}

// build fills s.envs (and s.seqs, s.apps) for items of recs. A data batch
// is re-encoded from its decoded form when it must be marked historical or
// is larger than the uplink's limit (then split into parts); any other
// record goes as spooled. What cannot fit is set aside.
func (s *sender) build(recs []spool.Record, items []item) {
	f := s.f
	// cleared, not only emptied: a stale envelope beyond the new length
	// would keep its record's bytes (and their spool arena chunk) reachable
	clear(s.envs)
	clear(s.parts)
	s.envs, s.seqs, s.apps, s.buf = s.envs[:0], s.seqs[:0], s.apps[:0], s.buf[:0]
	limit := 0
	if pl, ok := f.up.(PayloadLimiter); ok {
		limit = pl.MaxPayload()
	}
	for _, it := range items {
		rec := &recs[it.idx]
		id := telemetry.MsgID(f.gateway, rec.Seq)
		over := limit > 0 && len(rec.Data) > limit
		n := len(s.envs)
		switch {
		case isData(rec.Subject) && (it.hist || over):
			s.batch(rec, id, it.hist, limit)
		case over && isBirth(rec.Subject):
			s.birth(rec, id, limit)
		case over:
			f.setAside(rec.Seq, id, uplink.ReasonTooLarge, 1,
				fmt.Errorf("a %d-byte %s message is over the uplink's %d-byte limit and cannot be split", len(rec.Data), kindOf(rec.Subject), limit))
		case !f.isAside(id):
			s.add(rec.Subject, id, rec.Seq, rec.Data)
		}
		if len(s.envs) > n {
			s.apps = append(s.apps, rec.Appended)
		}
	}
}

// batch adds the envelopes of the data batch rec: decoded, marked
// historical when hist, split to fit limit.
func (s *sender) batch(rec *spool.Record, id string, hist bool, limit int) {
	f := s.f
	b, err := telemetry.DecodeBatch(rec.Data)
	if err != nil {
		// The gateway wrote it; it cannot be malformed unless the spool
		// is. Send it as spooled when it fits, else set it aside.
		if limit > 0 && len(rec.Data) > limit {
			f.setAside(rec.Seq, id, uplink.ReasonTooLarge, 1, fmt.Errorf("cannot split an undecodable batch: %w", err))
		} else if !f.isAside(id) {
			s.add(rec.Subject, id, rec.Seq, rec.Data)
		}
		return
	}
	b.Historical = b.Historical || hist
	var dropped []int
	s.parts, dropped = b.Split(limit, s.parts[:0])
	if len(dropped) > 0 {
		f.setAside(rec.Seq, id, reasonReading, len(dropped),
			fmt.Errorf("%d readings (the first: %s) are each over the uplink's %d-byte limit", len(dropped), b.Readings[dropped[0]].Signal, limit))
	}
	if len(s.parts) == 0 {
		if len(dropped) == 0 {
			f.setAside(rec.Seq, id, uplink.ReasonTooLarge, 1, fmt.Errorf("the batch header alone is over the uplink's %d-byte limit", limit))
		}
		return
	}
	if len(s.parts) > 1 {
		f.m.split.WithLabelValues(f.up.Name()).Inc()
	}
	for i := range s.parts {
		p := &s.parts[i]
		pid := id
		if p.Parts > 0 {
			pid = telemetry.PartMsgID(f.gateway, rec.Seq, p.Part, p.Parts)
		}
		if f.isAside(pid) {
			continue
		}
		start := len(s.buf)
		s.buf = p.AppendJSON(s.buf)
		s.add(rec.Subject, pid, rec.Seq, s.buf[start:len(s.buf):len(s.buf)])
	}
}

// birth adds the envelopes of the birth rec, split by signals to fit
// limit (a 10,000-signal birth is over 1 MiB).
func (s *sender) birth(rec *spool.Record, id string, limit int) {
	f := s.f
	b, err := telemetry.DecodeBirth(rec.Data)
	if err != nil {
		f.setAside(rec.Seq, id, uplink.ReasonTooLarge, 1, fmt.Errorf("cannot split an undecodable birth: %w", err))
		return
	}
	parts, dropped, err := telemetry.SplitBirth(b, limit)
	if err != nil {
		f.setAside(rec.Seq, id, uplink.ReasonTooLarge, 1, fmt.Errorf("cannot split the birth: %w", err))
		return
	}
	if len(dropped) > 0 {
		f.setAside(rec.Seq, id, reasonSignal, len(dropped),
			fmt.Errorf("%d signals (the first: %s) are each over the uplink's %d-byte limit", len(dropped), b.Signals[dropped[0]].Signal, limit))
	}
	if len(parts) == 0 {
		if len(dropped) == 0 {
			f.setAside(rec.Seq, id, uplink.ReasonTooLarge, 1, fmt.Errorf("the birth header alone is over the uplink's %d-byte limit", limit))
		}
		return
	}
	if len(parts) > 1 {
		f.m.split.WithLabelValues(f.up.Name()).Inc()
	}
	for i := range parts {
		p := &parts[i]
		pid := telemetry.PartMsgID(f.gateway, rec.Seq, p.Part, p.Parts)
		if f.isAside(pid) {
			continue
		}
		data, err := telemetry.MarshalBirth(p)
		if err != nil {
			f.setAside(rec.Seq, pid, uplink.ReasonTooLarge, 1, err)
			continue
		}
		s.add(rec.Subject, pid, rec.Seq, data)
	}
}

func (s *sender) add(subject, id string, seq uint64, data []byte) {
	s.envs = append(s.envs, telemetry.Envelope{Subject: subject, MsgID: id, Data: data})
	s.seqs = append(s.seqs, seq)
}

// Reasons for what is left out of a split batch or birth.
const (
	reasonReading = "reading_too_large"
	reasonSignal  = "signal_too_large"
)

// setAside records that message id (of record seq) will never be accepted:
// counted (n: messages or readings), logged (at most one line per 10 s,
// with the count of the others) and remembered until the cursor passes
// seq, so that a retry of its slice leaves it out and counts it once.
func (f *Forwarder) setAside(seq uint64, id, reason string, n int, err error) {
	key := id
	if reason == reasonReading || reason == reasonSignal {
		key += "/" + reason // the other readings or signals still go
	}
	f.asideMu.Lock()
	if _, seen := f.aside[key]; seen {
		f.asideMu.Unlock()
		return
	}
	if len(f.aside) >= maxAside {
		clear(f.aside) // forgotten ids are rejected (and set aside) again
	}
	f.aside[key] = seq
	f.asideMu.Unlock()
	f.m.setAside.WithLabelValues(f.up.Name(), reason).Add(float64(n))
	f.mu.Lock()
	f.st.SetAside += uint64(n)
	f.st.LastSetAside = id + ": " + reason
	f.mu.Unlock()
	f.asideLog.Log(context.Background(), f.log, slog.LevelError,
		"message set aside: the broker can never accept it; it is skipped, not retried", "seq", seq, "msg_id", id, "reason", reason, "err", err)
}

func (f *Forwarder) isAside(id string) bool {
	f.asideMu.Lock()
	defer f.asideMu.Unlock()
	_, ok := f.aside[id]
	return ok
}

// pruneAside forgets set-aside ids the durable cursor has passed.
func (f *Forwarder) pruneAside(committed uint64) {
	f.asideMu.Lock()
	defer f.asideMu.Unlock()
	for id, seq := range f.aside {
		if seq <= committed {
			delete(f.aside, id)
		}
	}
}

func kindOf(subject string) string {
	for i := len(subject) - 1; i >= 0; i-- {
		if subject[i] == '.' {
			return subject[i+1:]
		}
	}
	return subject
}
