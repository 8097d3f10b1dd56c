package collector

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The stream fence (docs/collector.md, "Fencing"). A partition worker
// publishes an empty message on its partition's fence subject before it
// restores the partition (its records, then the read-back of its alert
// events), and every output of the partition carries
// Nats-Expected-Last-Subject-Sequence = that message's stream sequence
// with Nats-Expected-Last-Subject-Sequence-Subject = the fence subject.
// Once another worker fenced the partition, the stream refuses the old
// owner's outputs (wrong last sequence), also one paused after its tenure
// check whose publish reaches the server after its successor's read-back:
// that event would be in neither replica's state (an orphan raise that
// never clears). nats-server 2.15 checks the header before the
// Nats-Msg-Id duplicate check on a single server, so an output of an old
// owner is refused even when its id is stored; on a replicated stream the
// duplicate is answered first (nothing stored either way).

// minFenceVersion is the first nats-server that checks an expected last
// sequence against another subject
// (Nats-Expected-Last-Subject-Sequence-Subject). 2.9 ignores that header
// and checks the sequence against the output's own subject: it would
// refuse every output.
const minFenceVersion = "2.11.0"

// fencePrefix starts every fence subject: outside smelter.v1, so no
// consumer of the telemetry subjects (partitions, history, tail) sees
// them, and no gateway permission can name them.
const fencePrefix = "smelter.fence."

// fenceSubject is partition p's fence subject in group's stream:
// smelter.fence.<group>.<p> (a single replica: p 0).
func fenceSubject(group string, p int) string {
	return fencePrefix + group + "." + strconv.Itoa(p)
}

// fenceFilter is the stream subject capturing group's fence subjects.
func fenceFilter(group string) string { return fencePrefix + group + ".*" }

// fence publishes partition p's fence and returns its stream sequence
// (0 when io does not fence).
func (c *Collector) fence(ctx context.Context, io *natsIO, p int) (uint64, error) {
	if io == nil || !io.fence || c.fenceOff.Load() {
		return 0, nil
	}
	subj := fenceSubject(c.cfg.Group, p)
	ack, err := io.js.Publish(ctx, subj, nil)
	if err != nil {
		return 0, fmt.Errorf("collector: publish the partition's fence %s (the collector's NATS user must be allowed to publish %s, docs/collector.md \"Permissions\"): %w",
			subj, fenceFilter(c.cfg.Group), err)
	}
	return ack.Sequence, nil
}

// fenceRefused reports whether err is the stream's refusal of an output
// whose fence is no longer the partition's last (another worker fenced
// it since): JetStream API error 10071, wrong last sequence.
func fenceRefused(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// fenceBusy reports whether err is a replicated stream's refusal of an
// output while another one with the same expected subject (the fence) is
// still being stored: nats-server 2.15 takes one such publish at a time
// (JetStream API error 10164). The output is sent again once the others
// are stored.
func fenceBusy(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// fenceProbe is group's probe subject: captured by the stream's fence
// filter, no partition's fence.
func fenceProbe(group string) string { return fencePrefix + group + ".probe" }

// probeFence checks, before any partition starts, that the collector's
// NATS user may publish its group's fences and the stream stores them: it
// publishes an empty message on the probe subject and waits for its PubAck.
// A publish the server refused for permissions (an upgrade that kept the
// accounts of a version before fencing) is an error naming the permission
// to add, at once, not a partition worker failing on every fence; no
// PubAck before ctx ends is ctx's error (JetStream not ready: retried).
//
// It also reads whether the stream is replicated: there fenced outputs are
// sent one at a time (Collector.fenceSerial, commit.go's send).
func (c *Collector) probeFence(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error {
	s, err := js.Stream(ctx, c.cfg.NATS.Stream)
	if err != nil {
		return fmt.Errorf("collector: stream %s: %w", c.cfg.NATS.Stream, err)
	}
	c.fenceSerial.Store(s.CachedInfo().Config.Replicas > 1)
	subj := fenceProbe(c.cfg.Group)
	f, err := js.PublishMsgAsync(&nats.Msg{Subject: subj})
	if err != nil {
		return fmt.Errorf("collector: publish %s: %w", subj, err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return fmt.Errorf("collector: publish %s: %w", subj, err)
		case <-ctx.Done():
			return fmt.Errorf("collector: publish %s: no PubAck: %w", subj, ctx.Err())
		case <-tick.C:
			if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subj) {
				return fmt.Errorf("collector: the NATS user may not publish %s: allow it to publish %s (the partitions' stream fences, docs/collector.md \"Fencing\" and \"Permissions\"): %w",
					subj, fenceFilter(c.cfg.Group), err)
			}
		}
	}
}
