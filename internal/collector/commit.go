package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

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
// the fence headers (fence.go), and waits for every PubAck. A replicated
// stream takes one fenced publish at a time: the outputs it refused as
// busy are sent again one by one, and so are sh's from then on
// (shard.serial). The error of a refused fence satisfies fenceRefused.
func (c *Collector) send(ctx context.Context, io *natsIO, sh *shard, outs []output) error {
	var fseq uint64
	var fsubj string
	serial := false
	if sh != nil {
		sh.mu.Lock()
		fseq, serial = sh.fence, sh.serial
		sh.mu.Unlock()
		fsubj = fenceSubject(c.cfg.Group, sh.p)
	}
	pub := func(o output) (jetstream.PubAckFuture, error) {
		m := nats.NewMsg(o.subject)
		m.Data = o.data
		m.Header.Set(jetstream.MsgIDHeader, o.msgID)
		if fseq > 0 {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(fseq, 10))
			m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, fsubj)
		}
		f, err := io.js.PublishMsgAsync(m)
		if err != nil {
			return nil, fmt.Errorf("collector: publish %s: %w", o.subject, err)
		}
		return f, nil
	}
	again := outs
	if fseq == 0 || !serial {
		again = nil
		futs := make([]jetstream.PubAckFuture, 0, len(outs))
		for _, o := range outs {
			f, err := pub(o)
			if err != nil {
				return err
			}
			futs = append(futs, f)
		}
		var first error
		for i, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				switch {
				case duplicateInProcess(err): // the same message (its Nats-Msg-Id names its content) is being stored
				case fenceBusy(err):
					again = append(again, outs[i])
				case first == nil:
					first = err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if first != nil {
			return fmt.Errorf("collector: publish outputs: %w", first)
		}
		if len(again) > 0 {
			sh.mu.Lock()
			sh.serial = true
			sh.mu.Unlock()
		}
	}
	for _, o := range again {
		f, err := pub(o)
		if err != nil {
			return err
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if !duplicateInProcess(err) {
				return fmt.Errorf("collector: publish outputs: %w", err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
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
		clear(sh.dirty)
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
