package collector

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smelterio/smelter/internal/wait"
)

// A cycle's outputs with one Nats-Msg-Id twice (the same transition) are
// published without an error: the server answers the second copy either
// as a duplicate or, while the first is still being stored, with API error
// 10158 ("duplicate message id is in process"), which failed the cycle and
// restarted the partition (review12 F4). Many pairs are sent so that the
// in-process answer comes at least once.
func TestDuplicateMsgIDInProcessIsNoFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	nodes := startCluster(t, 3) // the in-process answer comes while a replicated stream's proposal is pending
	nc, err := nats.Connect(clusterURL(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	// a cluster just formed may not place a replicated stream yet (API
	// error 10005, "no suitable peers for placement, peer offline", seen
	// under load): try until it does
	last := ""
	wait.For(t, time.Minute, "the cluster to place a stream of 3 replicas", func() bool {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "DUP", Subjects: []string{"dup.>"}, Replicas: 3})
		if err != nil && err.Error() != last {
			last = err.Error()
			t.Logf("create stream: %v", err)
		}
		return err == nil
	})
	for round := range 50 {
		var futs []jetstream.PubAckFuture
		for i := range 20 {
			for range 2 {
				m := nats.NewMsg("dup.x")
				m.Data = []byte("transition")
				m.Header.Set(jetstream.MsgIDHeader, strconv.Itoa(round)+"-"+strconv.Itoa(i))
				f, err := js.PublishMsgAsync(m)
				if err != nil {
					t.Fatal(err)
				}
				futs = append(futs, f)
			}
		}
		if _, err := awaitAcks(ctx, futs); err != nil {
			t.Fatalf("round %d: awaitAcks: %v", round, err)
		}
	}
	st, err := js.Stream(ctx, "DUP")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 50*20 {
		t.Fatalf("%d messages stored, want %d: one per Nats-Msg-Id", n, 50*20)
	}
}
