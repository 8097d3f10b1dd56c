package collector

import (
	"testing"
	"time"
)

// A partition's worker decodes a batch over the message payload (its
// strings are views into it). What the collector keeps per batch must be
// copies, or every asset keeps its first and its newest payload alive
// (map keys, the asset's last gateway): here each payload is overwritten
// after its batch, and the rule state and the dashboard must still find
// the asset and read its gateway right.
func TestBatchStringsKeptAreCopies(t *testing.T) {
	c := newCollector(t, Defaults())
	sh := c.newShard(0)
	var cy cycle
	for seq := uint64(1); seq <= 3; seq++ {
		payload := batchJSON(seq, 1_763_812_345_000+int64(seq)*1000, 80)
		c.processPayload(sh, subj, payload, true, time.Now(), true, 0, "", &cy)
		for i := range payload {
			payload[i] = 'x'
		}
	}
	sh.mu.Lock()
	st, ok := sh.engine.Snapshot("site1", "ac-1")
	sh.mu.Unlock()
	if !ok || st.Gateway != "gw-1" || st.Seq != 3 {
		t.Fatalf("rule state: gateway %q seq %d (%v)", st.Gateway, st.Seq, ok)
	}
	if _, gw := c.live.Received("site1", "ac-1"); gw != "gw-1" {
		t.Fatalf("dashboard: gateway %q", gw)
	}
	if gws := c.live.Gateways(); len(gws) != 1 || gws[0].ID != "gw-1" || gws[0].Batches != 3 {
		t.Fatalf("dashboard gateways %+v", gws)
	}
}

// A cycle's batch references are views into their payloads too; a reset
// (after the checkpoint) must not leave them in the reused array, where they
// kept up to max_ack_pending payloads per partition alive.
func TestCycleResetDropsBatchViews(t *testing.T) {
	c := newCollector(t, Defaults())
	c.onCommit = func(int, []BatchRef) {} // batch references are kept only for it
	sh := c.newShard(0)
	var cy cycle
	for seq := uint64(1); seq <= 5; seq++ {
		c.processPayload(sh, subj, batchJSON(seq, 1_763_812_345_000+int64(seq)*1000, 80), true, time.Now(), true, 0, "", &cy)
	}
	if len(cy.batches) != 5 {
		t.Fatalf("%d batches in the cycle, want 5", len(cy.batches))
	}
	cy.reset()
	for i, b := range cy.batches[:cap(cy.batches)] {
		if b != (BatchRef{}) {
			t.Fatalf("batch reference %d kept after reset: %+v", i, b)
		}
	}
}
