package collector

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stateBucket starts an embedded server with a KV bucket "st" and returns
// a context that ends with the test, a connection and the bucket.
func stateBucket(t *testing.T) (context.Context, *nats.Conn, jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	ns, _ := embeddedConfig(t)
	js := jsClient(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "st"})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, js.Conn(), js, kv
}

// TestPutRecords: putRecords stores records with compare-and-set as the
// KV store's Update does, returns each record's revision, reports a record
// written since (fencing) as the server's APIError for that record while
// the others are stored, and a bucket no stream listens on as the client's
// no-responders error.
func TestPutRecords(t *testing.T) {
	ctx, nc, _, kv := stateBucket(t)
	var ws []kvWrite
	for i := range 300 {
		ws = append(ws, kvWrite{key: fmt.Sprintf("p0.s.a%d", i), data: fmt.Appendf(nil, "r%d", i)})
	}
	revs, err := putRecords(ctx, nc, "st", ws)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		e, err := kv.Get(ctx, w.key)
		if err != nil {
			t.Fatal(err)
		}
		if string(e.Value()) != string(w.data) || e.Revision() != revs[i] || revs[i] == 0 {
			t.Fatalf("record %d: %q at revision %d, putRecords gave %d", i, e.Value(), e.Revision(), revs[i])
		}
		ws[i].rev = revs[i]
	}
	// another replica writes a3 since: its record is refused, the rest stored
	if _, err := kv.Put(ctx, "p0.s.a3", []byte("other")); err != nil {
		t.Fatal(err)
	}
	revs2, err := putRecords(ctx, nc, "st", ws)
	var ae *jetstream.APIError
	if !errors.As(err, &ae) || ae.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("err %v, want the wrong-last-sequence APIError", err)
	}
	for i, w := range ws {
		e, err := kv.Get(ctx, w.key)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i == 3 && (revs2[i] != 0 || string(e.Value()) != "other"):
			t.Fatalf("fenced record: revision %d, value %q", revs2[i], e.Value())
		case i != 3 && (revs2[i] <= revs[i] || e.Revision() != revs2[i]):
			t.Fatalf("record %d: revision %d, putRecords gave %d (before %d)", i, e.Revision(), revs2[i], revs[i])
		}
	}
	if _, err := putRecords(ctx, nc, "nobucket", ws[:2]); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("no stream: err %v, want no responders", err)
	}
	if revs, err := putRecords(ctx, nc, "st", nil); err != nil || len(revs) != 0 {
		t.Fatalf("nothing to write: %v %v", revs, err)
	}
}

// TestPutRecordsWaitsForEveryRecord: a second reply to one record (here
// from a responder standing in for the server) neither counts as another
// record's PubAck nor overwrites the first.
func TestPutRecordsWaitsForEveryRecord(t *testing.T) {
	ctx, nc, _, _ := stateBucket(t)
	n := 0
	sub, err := nc.Subscribe("$KV.fake.>", func(m *nats.Msg) {
		n++
		_ = m.Respond(fmt.Appendf(nil, `{"stream":"KV_fake","seq":%d}`, 10*n))
		if n == 1 {
			_ = m.Respond([]byte(`{"stream":"KV_fake","seq":99}`))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	revs, err := putRecords(ctx, nc, "fake", []kvWrite{{key: "a"}, {key: "b"}, {key: "c"}})
	if err != nil || !slices.Equal(revs, []uint64{10, 20, 30}) {
		t.Fatalf("revisions %v, %v; want [10 20 30]", revs, err)
	}
}

// TestPubAckSeq: the sequence read without encoding/json is the one it
// decodes, and anything else goes through it.
func TestPubAckSeq(t *testing.T) {
	for _, c := range []struct {
		data string
		seq  uint64
		code jetstream.ErrorCode // an APIError
		bad  bool                // another error
	}{
		{data: `{"stream":"KV_st","seq":41}`, seq: 41},
		{data: `{"stream":"KV_st","seq":41,"duplicate":true}`, seq: 41},
		{data: `{"stream":"KV_st","domain":"hub","seq":18446744073709551615}`, seq: 18446744073709551615},
		{data: `{"stream":"KV_st", "seq": 7 }`, seq: 7},
		{data: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"KV_st","seq":0}`, code: 10071},
		{data: `{"stream":"KV_st","seq":0}`, bad: true},
		{data: `{"stream":"KV_st","seq":1x}`, bad: true},
		{data: `{"stream":"KV_st"}`, bad: true},
		{data: `not json "seq":5}`, bad: true},
	} {
		seq, err := pubAckSeq(&nats.Msg{Data: []byte(c.data)})
		var ae *jetstream.APIError
		switch {
		case c.code != 0:
			if !errors.As(err, &ae) || ae.ErrorCode != c.code {
				t.Errorf("%s: %d %v, want APIError %d", c.data, seq, err, c.code)
			}
		case c.bad:
			if err == nil || errors.As(err, &ae) {
				t.Errorf("%s: %d %v, want an error", c.data, seq, err)
			}
		case err != nil || seq != c.seq:
			t.Errorf("%s: %d %v, want %d", c.data, seq, err, c.seq)
		}
	}
	m := &nats.Msg{Header: nats.Header{"Status": {"408"}}}
	if _, err := pubAckSeq(m); !errors.Is(err, errNoPubAck) {
		t.Errorf("status 408: %v", err)
	}
}

// TestCheckpointFencedByAnotherWriter: a checkpoint stores every changed
// asset's record at the revision it was read at; once another replica
// wrote one of them, the next checkpoint fails with errFenced while the
// other assets' records are stored and their revisions kept.
func TestCheckpointFencedByAnotherWriter(t *testing.T) {
	ctx, nc, js, kv := stateBucket(t)
	c, sh := warmShard(t)
	io := &natsIO{nc: nc, js: js, kv: kv, bucket: "st"}
	dirtyAll := func() {
		sh.mu.Lock()
		for _, v := range sh.engine.Assets() {
			sh.dirtyKey(v.Site, v.ID)
		}
		sh.mu.Unlock()
	}
	dirtyAll()
	var cy cycle
	if err := c.checkpoint(ctx, io, sh, &cy); err != nil {
		t.Fatal(err)
	}
	views := sh.engine.Assets()
	for _, v := range views {
		e, err := kv.Get(ctx, stateKey(sh.p, v.Site, v.ID))
		if err != nil {
			t.Fatal(err)
		}
		if r, err := decodeRecord(e.Value()); err != nil || r.Rules.ID != v.ID || sh.rev[[2]string{v.Site, v.ID}] != e.Revision() {
			t.Fatalf("%s: record %v, revision %d kept as %d", v.ID, err, e.Revision(), sh.rev[[2]string{v.Site, v.ID}])
		}
	}
	other := [2]string{views[0].Site, views[0].ID}
	if _, err := kv.Put(ctx, stateKey(sh.p, other[0], other[1]), []byte("another replica")); err != nil {
		t.Fatal(err)
	}
	before := maps.Clone(sh.rev)
	dirtyAll()
	if err := c.checkpoint(ctx, io, sh, &cy); !errors.Is(err, errFenced) {
		t.Fatalf("err %v, want errFenced", err)
	}
	for k, rev := range sh.rev {
		if (k == other) != (rev == before[k]) {
			t.Fatalf("%v: revision %d, before %d", k, rev, before[k])
		}
	}
}
