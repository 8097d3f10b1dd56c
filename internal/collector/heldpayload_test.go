package collector

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"
	"weak"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/telemetry"
)

// Messages a worker holds until its next checkpoint (up to 7 x fetch per
// partition) are kept as copies of their reply subjects only (not views
// into the pull's read chunk, which would keep it alive): their payloads, the
// batches decoded over them, become garbage once evaluated (before, every
// held message kept its payload, headers and client structures alive, and
// the dirty set's keys were views into the first payload of each asset).
// The checkpoint then acknowledges them all from the reply subjects.
func TestHeldMessagesKeepNoPayload(t *testing.T) {
	heapChunks(t) // the garbage collector judges (weak pointers)
	ns, cfg := embeddedConfig(t)
	cfg.Cluster.AckWait = Duration(2 * time.Minute)
	cfg.Cluster.CheckpointInterval = Duration(time.Minute) // nothing due: the cycle holds
	c := newCollector(t, cfg)
	ctx := context.Background()
	io := collectorIO(t, c, ns.URL())
	nc, js := io.nc, io.js
	const n = 20
	for seq := uint64(1); seq <= n; seq++ {
		if _, err := js.Publish(ctx, subj, batchJSON(seq, 1_763_812_345_000+int64(seq)*1000, 80)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.NATS.Stream, jetstream.ConsumerConfig{Durable: "held", AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: subj})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := fetch(nc, cfg.NATS.Stream, "held", n, 5*time.Second)
	if err != nil || len(msgs) != n {
		t.Fatalf("fetched %d of %d: %v", len(msgs), n, err)
	}
	payloads := make([]weak.Pointer[byte], n)
	for i, m := range msgs {
		payloads[i] = weak.Make(&m.Data[0])
	}
	sh := c.newShard(0)
	var cy cycle
	var h held
	if err := c.cycle(ctx, io, sh, msgs, &cy, &h, false, false); err != nil {
		t.Fatal(err)
	}
	if len(h.replies) != n {
		t.Fatalf("%d messages held, want %d (no checkpoint due)", len(h.replies), n)
	}
	clear(msgs) // the test's references
	// the cycle's reused batch was decoded over the last payload (the next
	// cycle's decode replaces it): the payloads share their pull's read
	// chunk, which it alone may keep alive
	cy.batch = telemetry.Batch{}
	runtime.GC()
	runtime.GC()
	alive := 0
	for _, p := range payloads {
		if p.Value() != nil {
			alive++
		}
	}
	if alive > 0 {
		t.Fatalf("%d of %d held messages' payloads still alive after their evaluation", alive, n)
	}
	// the checkpoint acknowledges every held message from its reply subject
	if err := c.cycle(ctx, io, sh, nil, &cy, &h, false, true); err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.AckFloor.Stream != n || len(h.replies) != 0 {
		t.Fatalf("after the checkpoint: %d pending, ack floor %d, %d held; want 0, %d, 0", info.NumAckPending, info.AckFloor.Stream, len(h.replies), n)
	}
	if st, ok := sh.engine.Snapshot("site1", "ac-1"); !ok || st.Seq != n {
		t.Fatalf("rule state seq %d (%v), want %d", st.Seq, ok, n)
	}
}

// Held replies are copies in blocks of the worker's own: every reply is
// intact however many blocks they fill (a block is never written while a
// reply views it), and after the release (acknowledged) the next cycle's
// replies are whole too.
func TestHeldRepliesAcrossBlocks(t *testing.T) {
	var h held
	for round := range 3 {
		var want []string
		for i := range 3 * arenaBlock / 64 {
			r := fmt.Sprintf("$JS.ACK.SMELTER.smelter-collector-p1.1.%d.%d.1764527000123456789.%d", round*100000+i, i, round)
			buf := []byte(r) // the pulled reply: a view into a chunk the test then overwrites
			h.hold(unsafe.String(&buf[0], len(buf)))
			clear(buf)
			want = append(want, r)
		}
		h.hold("")
		want = append(want, "")
		if len(h.replies) != len(want) {
			t.Fatalf("round %d: %d replies held, want %d", round, len(h.replies), len(want))
		}
		for i, r := range h.replies {
			if r != want[i] {
				t.Fatalf("round %d: reply %d is %q, want %q", round, i, r, want[i])
			}
		}
		h.release()
		if len(h.replies) != 0 || cap(h.arena) > arenaBlock {
			t.Fatalf("after the release: %d replies, a block of %d bytes kept", len(h.replies), cap(h.arena))
		}
	}
}
