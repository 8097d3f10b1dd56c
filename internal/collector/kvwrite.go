package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// kvAckTimeout bounds the wait for a checkpoint's PubAcks, as
// jetstream.WithPublishAsyncTimeout does for the collector's other
// publishes (run.go).
const kvAckTimeout = 10 * time.Second

// errNoPubAck: a checkpoint record was answered by a status without a
// body instead of a PubAck (the client reports 503, no responders, itself).
var errNoPubAck = errors.New("no PubAck")

// putRecords writes the checkpoint records ws to the state bucket, each
// with the compare-and-set header (Nats-Expected-Last-Subject-Sequence: the
// revision the asset's record was read or last written at), and waits for
// their PubAcks. It returns each record's new revision (0 where it failed)
// and the first error: a *jetstream.APIError for one the server refused
// (errors.As: JSErrCodeStreamWrongLastSequence when another replica wrote
// the asset since), nats.ErrNoResponders when no stream listens on the
// bucket's subjects, errNoPubAck for another status reply,
// context.DeadlineExceeded after kvAckTimeout.
//
// Without an error every record has its revision: each one's first reply
// is waited for, a second one ignored.
//
// It is what one jetstream.PublishMsgAsync per record and awaitAcks did,
// with the same messages on the wire, without the client's bookkeeping per
// message (a future with two channels, a timer, a map entry and its reply
// subject, the PubAck decoded by reflection: about 15 allocations and 4 µs
// of CPU per record in BenchmarkIngest, docs/benchmarks.md "Collector,
// fifth pass"): one subscription per call on a fresh inbox, the
// reply subject of record i is <inbox>.<i>, and a PubAck's sequence is read
// without encoding/json (any other reply is decoded by it).
func putRecords(ctx context.Context, nc *nats.Conn, bucket string, ws []kvWrite) ([]uint64, error) {
	revs := make([]uint64, len(ws))
	if len(ws) == 0 {
		return revs, nil
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox + ".*")
	if err != nil {
		return revs, err
	}
	defer sub.Unsubscribe() //nolint:errcheck // the replies are in or the call failed
	subj := make([]byte, 0, 128)
	reply := make([]byte, 0, len(inbox)+12)
	// one message and header reused for every record: PublishMsg copies
	// them into the connection's buffer before it returns
	expect := []string{""}
	m := &nats.Msg{Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: expect}}
	for i, w := range ws {
		subj = append(append(append(subj[:0], "$KV."...), bucket...), '.')
		subj = append(subj, w.key...)
		reply = strconv.AppendInt(append(append(reply[:0], inbox...), '.'), int64(i), 10)
		m.Subject, m.Reply, m.Data = string(subj), string(reply), w.data
		expect[0] = strconv.FormatUint(w.rev, 10)
		if err := nc.PublishMsg(m); err != nil {
			return revs, fmt.Errorf("%s: %w", w.key, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, kvAckTimeout)
	defer cancel()
	var first error
	answered := make([]bool, len(ws))
	for left := len(ws); left > 0; {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return revs, err
		}
		i, err := strconv.Atoi(m.Subject[len(inbox)+1:])
		if err != nil || i < 0 || i >= len(ws) || answered[i] {
			continue // not a first answer to one of this call's records
		}
		answered[i] = true
		left--
		seq, err := pubAckSeq(m)
		if err != nil {
			if first == nil {
				first = fmt.Errorf("%s: %w", ws[i].key, err)
			}
			continue
		}
		revs[i] = seq
	}
	return revs, first
}

// pubAckSeq returns the stream sequence of a JetStream PubAck,
// {"stream":"KV_x","seq":41[,...]}, or the error the reply carries: the
// server's API error ({"error":{"code":400,"err_code":10071,...}}) as a
// *jetstream.APIError, errNoPubAck for a status without a body.
func pubAckSeq(m *nats.Msg) (uint64, error) {
	if len(m.Data) == 0 {
		return 0, fmt.Errorf("%w: status %q %q", errNoPubAck, m.Header.Get("Status"), m.Header.Get("Description"))
	}
	d := m.Data
	if d[0] == '{' && !bytes.Contains(d, []byte(`"error"`)) {
		if i := bytes.Index(d, []byte(`"seq":`)); i >= 0 {
			j, n := i+len(`"seq":`), uint64(0)
			k := j
			for ; k < len(d) && k-j < 19 && d[k] >= '0' && d[k] <= '9'; k++ {
				n = n*10 + uint64(d[k]-'0')
			}
			if k > j && n > 0 && k < len(d) && (d[k] == ',' || d[k] == '}') {
				return n, nil
			}
		}
	}
	var r struct {
		Error *jetstream.APIError `json:"error"`
		Seq   uint64              `json:"seq"`
	}
	if err := json.Unmarshal(d, &r); err != nil {
		return 0, fmt.Errorf("invalid PubAck: %w", err)
	}
	if r.Error != nil {
		return 0, r.Error
	}
	if r.Seq == 0 {
		return 0, errors.New("invalid PubAck: no sequence")
	}
	return r.Seq, nil
}
