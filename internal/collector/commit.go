package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/telemetry"
)

// errFenced: another replica checkpointed one of the assets since this one
// loaded it (it took the partition over); this replica's view is stale.
var errFenced = errors.New("collector: asset state was written by another replica")

// commit makes one cycle safe before its input is acknowledged: the alert
// and KPI messages are published to JetStream with a Nats-Msg-Id (so a
// replay after a takeover is deduplicated by the stream) and their PubAcks
// awaited, then every asset record the cycle changed is written to the
// state bucket with the revision it was read at (compare-and-set), and
// only then the commit hook runs. Without a connection (Handle before Run)
// nothing leaves the process. An error means nothing of the cycle may be
// acknowledged and the shard's memory must be dropped.
func (c *Collector) commit(ctx context.Context, io *natsIO, sh *shard, cy *cycle) error {
	if err := c.publish(ctx, io, sh, cy); err != nil {
		return err
	}
	return c.checkpoint(ctx, io, sh, cy)
}

// publish sends the cycle's alert and KPI messages (step 1 of commit) and
// waits for their PubAcks; cy.outs is emptied. An alert event the restore
// of sh found on the stream already (its Nats-Msg-Id read back: the
// evaluation of a redelivered message gave it again) is not sent again:
// the stream's duplicate window (2 min) would drop it only within 2 min of
// the first, and core NATS and MQTT subscribers would see it twice
// (attack-col2 F1, F4). Once published, the test hook c.published runs
// with the cycle's alert events.
func (c *Collector) publish(ctx context.Context, io *natsIO, sh *shard, cy *cycle) (err error) {
	var events []alert.Alert // tests: for c.published (shown empties cy.alerts)
	if c.published != nil || c.publishing != nil {
		events = slices.Clone(cy.alerts)
	}
	if c.published != nil {
		defer func() {
			if err == nil {
				c.published(sh.p, events)
			}
		}()
	}
	c.dropStored(sh, cy)
	if len(cy.outs) > 0 {
		// a replica that lost its partition (or cannot tell) must not
		// publish what it evaluated on a state that may be stale
		if err := cy.own.check(); err != nil {
			return err
		}
	}
	if io == nil {
		cy.outs = cy.outs[:0]
		c.shown(cy)
		return nil
	}
	if c.publishing != nil {
		c.publishing(sh.p, events)
	}
	if err := c.send(ctx, io, sh, cy.outs); err != nil {
		if fenceRefused(err) && c.fenceIgnored(ctx, io, sh) {
			c.m.pubErrors.Inc()
			return fmt.Errorf("collector: the stream refused outputs carrying the partition's own fence: fencing off, the cycle is evaluated again: %w", err)
		}
		if fenceRefused(err) {
			return &notOwner{reasonFence, fmt.Sprintf("the stream refused the cycle's outputs: another worker fenced the partition (%s) since this one restored it: %v",
				fenceSubject(c.cfg.Group, sh.p), err)}
		}
		c.m.pubErrors.Inc()
		return err
	}
	for _, o := range cy.outs {
		c.m.published.WithLabelValues(o.subject[strings.LastIndexByte(o.subject, '.')+1:]).Inc()
		if io.mq != nil {
			io.mq.Publish(telemetry.Topic(o.subject), 1, false, o.data)
		}
	}
	cy.outs = cy.outs[:0]
	c.shown(cy)
	return nil
}

// send publishes outs with their Nats-Msg-Id and, when sh has a fence,
// the fence headers (fence.go), and waits for every PubAck. Unfenced, or
// fenced on a single-replica stream, the outputs are pipelined (the
// server stores them in the order sent). A replicated stream takes one
// fenced publish at a time (10164 for one sent while another is being
// stored): there every output is sent once the previous one's PubAck
// came, in the cycle's order (a raise before its clear), and a 10164 for
// it (the server sends the PubAck before it clears its in-process mark,
// or a successor's fence is being stored) is retried after a short wait
// (fenceBusyRetry) until the stream stores it or refuses it. The error of
// a refused fence satisfies fenceRefused.
func (c *Collector) send(ctx context.Context, io *natsIO, sh *shard, outs []output) error {
	var fseq uint64
	var fseqText, fsubj string // the fence headers' values, made once per cycle
	if sh != nil && !c.fenceOff.Load() {
		sh.mu.Lock()
		fseq = sh.fence
		sh.mu.Unlock()
		fseqText, fsubj = strconv.FormatUint(fseq, 10), fenceSubject(c.cfg.Group, sh.p)
	}
	pub := func(o output) (jetstream.PubAckFuture, error) {
		m := nats.NewMsg(o.subject)
		m.Data = o.data
		m.Header.Set(jetstream.MsgIDHeader, o.msgID)
		if fseq > 0 {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, fseqText)
			m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, fsubj)
		}
		f, err := io.js.PublishMsgAsync(m)
		if err != nil {
			return nil, fmt.Errorf("collector: publish %s: %w", o.subject, err)
		}
		return f, nil
	}
	if fseq > 0 && c.fenceSerial.Load() {
		for _, o := range outs {
			if err := c.sendOne(ctx, o, pub); err != nil {
				return err
			}
		}
		return nil
	}
	futs := make([]jetstream.PubAckFuture, 0, len(outs))
	for _, o := range outs {
		f, err := pub(o)
		if err != nil {
			return err
		}
		futs = append(futs, f)
	}
	_, first := awaitAcks(ctx, futs) // a duplicate in process is no error
	if first != nil && fenceBusy(first) {
		// the stream became replicated since the start: from now on one
		// at a time; this cycle, whose outputs may be stored out of its
		// order, is dropped and evaluated again
		c.fenceSerial.Store(true)
		c.log.Warn("the stream takes one fenced publish at a time (replicated since the start): the outputs of every partition are sent one by one from now on",
			"stream", c.cfg.NATS.Stream)
	}
	if first != nil {
		return fmt.Errorf("collector: publish outputs: %w", first)
	}
	return nil
}

// fenceBusyRetry bounds the waits of a fenced output the stream answered
// busy (10164): 1 ms doubling to 64 ms, 40 tries (about 2 s), then the
// error stands.
const (
	fenceBusyFirst = time.Millisecond
	fenceBusyMax   = 64 * time.Millisecond
	fenceBusyTries = 40
)

// sendOne publishes o with pub and waits for its PubAck, retrying a
// 10164 (fenceBusyRetry).
func (c *Collector) sendOne(ctx context.Context, o output, pub func(output) (jetstream.PubAckFuture, error)) error {
	wait := fenceBusyFirst
	for try := 1; ; try++ {
		f, err := pub(o)
		if err != nil {
			return err
		}
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			switch {
			case duplicateInProcess(err):
				return nil
			case !fenceBusy(err) || try == fenceBusyTries:
				return fmt.Errorf("collector: publish outputs: %w", err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		c.m.fenceBusy.Inc()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, fenceBusyMax)
	}
}

// fenceIgnored reports whether the stream refused sh's output although
// sh's fence is still the partition's last: the stream's leader does not
// check the expected sequence against the fence subject (a nats-server
// before 2.11 in the cluster, during a rolling upgrade or after a
// reconnect: it checks it against the output's own subject and refuses
// every output). Then fencing is turned off for the process
// (Collector.fenceOff), logged once. A fence that is gone (max_age) or
// another's is no such case.
func (c *Collector) fenceIgnored(ctx context.Context, io *natsIO, sh *shard) bool {
	sh.mu.Lock()
	fseq := sh.fence
	sh.mu.Unlock()
	s, err := io.js.Stream(ctx, c.cfg.NATS.Stream)
	if err != nil {
		return false
	}
	m, err := s.GetLastMsgForSubject(ctx, fenceSubject(c.cfg.Group, sh.p))
	if err != nil || m.Sequence != fseq {
		return false
	}
	if c.fenceOff.CompareAndSwap(false, true) {
		c.log.Error("the stream refused outputs whose fence is the partition's last: its leader does not check Nats-Expected-Last-Subject-Sequence-Subject "+
			"(a nats-server before "+minFenceVersion+" in the cluster?): running without the stream fence until the collector restarts (docs/collector.md, \"Fencing\")",
			"stream", c.cfg.NATS.Stream, "fence", fenceSubject(c.cfg.Group, sh.p), "sequence", fseq)
	}
	return true
}

// dropStored removes from cy.outs the events sh's restore read back
// (shard.stored), counted.
func (c *Collector) dropStored(sh *shard, cy *cycle) {
	if sh == nil || len(cy.outs) == 0 {
		return
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.stored) == 0 {
		return
	}
	cy.outs = slices.DeleteFunc(cy.outs, func(o output) bool {
		_, ok := sh.stored[o.msgID]
		if ok {
			c.m.restored.Inc()
		}
		return ok
	})
}

// checkpoint writes the record of every asset changed since the last
// checkpoint (step 2 of commit) and runs the commit hook for cy.batches.
// An error means nothing evaluated since the last checkpoint may be
// acknowledged.
func (c *Collector) checkpoint(ctx context.Context, io *natsIO, sh *shard, cy *cycle) error {
	expireBirths(sh) // split births left incomplete free their parts (MQTT and Sparkplug sources)
	if io == nil {
		sh.mu.Lock()
		sh.clearDirty()
		sh.mu.Unlock()
		c.committed(sh, cy)
		return nil
	}
	limit := int(io.nc.MaxPayload()) - 1024 // headers and subject
	sh.mu.Lock()
	writes, err := sh.snapshot(cy.kv[:0], limit, c.cfg.Cluster.RecordFormat == "json", func(key string, n int) {
		// an asset too large to checkpoint keeps working from memory; a
		// restart or takeover starts it afresh
		c.m.pubErrors.Inc()
		c.log.Warn("asset state larger than the server's max_payload: not checkpointed", "key", key, "bytes", n, "max_payload", limit+1024)
	})
	sh.mu.Unlock()
	cy.kv = writes
	if err != nil {
		return err
	}
	revs, err := putRecords(ctx, io.nc, io.bucket, writes)
	debug := c.log.Enabled(ctx, slog.LevelDebug) // no log arguments built per record otherwise
	sh.mu.Lock()
	if err == nil {
		sh.recycle()
	} else {
		sh.forget()
	}
	for i, w := range writes {
		if revs[i] > 0 {
			sh.rev[w.asset] = revs[i]
		}
		if debug {
			c.log.Debug("checkpoint", "key", w.key, "expected_rev", w.rev, "rev", revs[i])
		}
	}
	sh.mu.Unlock()
	if err != nil {
		// the assets whose record was written are committed all the same:
		// their batches count as evaluated (a redelivery is a duplicate)
		durable := make(map[[2]string]bool, len(writes))
		for i, w := range writes {
			if revs[i] > 0 {
				durable[w.asset] = true
			}
		}
		kept := cy.batches[:0]
		for _, b := range cy.batches {
			if durable[[2]string{b.Site, b.Asset}] {
				kept = append(kept, b)
			}
		}
		cy.batches = kept
		c.committed(sh, cy)
		var ae *jetstream.APIError
		if errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			c.m.fenced.Inc()
			return fmt.Errorf("%w: %w", errFenced, err)
		}
		c.m.pubErrors.Inc()
		return fmt.Errorf("collector: checkpoint: %w", err)
	}
	c.m.checkpts.Add(float64(len(writes)))
	c.committed(sh, cy)
	return nil
}

func (c *Collector) committed(sh *shard, cy *cycle) {
	if c.onCommit != nil && len(cy.batches) > 0 {
		c.onCommit(sh.p, cy.batches)
	}
}

// awaitAcks waits for every PubAck and returns their stream sequences (0
// where it failed) and the first error.
// jsErrDuplicateInProcess is nats-server's error code for a message whose
// Nats-Msg-Id is the one of a message still being stored ("duplicate
// message id is in process", JetStream API error 10158).
const jsErrDuplicateInProcess = 10158

// duplicateInProcess reports whether err is the server's answer to a copy
// of a message it is still storing: a duplicate, not a failure. An output's
// Nats-Msg-Id names its content (group, alert id, state, time, severity),
// so a copy is the same transition (review12 F4: two in one cycle failed
// it, and the partition restarted three times).
func duplicateInProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrDuplicateInProcess
}

func awaitAcks(ctx context.Context, futs []jetstream.PubAckFuture) ([]uint64, error) {
	seqs := make([]uint64, len(futs))
	var first error
	for i, f := range futs {
		select {
		case a := <-f.Ok():
			seqs[i] = a.Sequence
		case err := <-f.Err():
			if duplicateInProcess(err) {
				continue // the same message (its Nats-Msg-Id names its content) is being stored
			}
			if first == nil {
				first = err
			}
		case <-ctx.Done():
			return seqs, ctx.Err()
		}
	}
	return seqs, first
}
