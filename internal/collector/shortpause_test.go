package collector

import (
	"strings"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/collector/alert"
	"github.com/smelterio/smelter/internal/wait"
)

// shortPauseReplica starts a replica whose loops block while ps is paused
// (parts 0: a single replica), its fetches losing their messages over a
// pause (lostPull), with a membership timeout well above the pauses of the
// test.
func shortPauseReplica(t *testing.T, url, id string, parts int, cl *commitLog, ps *pauser) *running {
	t.Helper()
	k := ClusterConfig{Partitions: parts, Replicas: 1, AckWait: Duration(5 * time.Second), PinnedTTL: Duration(6 * time.Second),
		MemberTimeout: Duration(6 * time.Second), Fetch: 64, CheckpointInterval: Duration(time.Second), RecordFormat: "binary"}
	return startReplica(t, url, id, k, cl, ps, func(c *Collector) {
		if ps != nil {
			c.inFetch = ps.lostPull
		}
	})
}

// lostPull blocks a worker's fetch while paused, its pull request sent,
// and takes the messages delivered to it meanwhile: after SIGSTOP the
// fetch's timer (expires + 1 s) may have fired as well (jetstream's Fetch
// ended the fetch with no message and nil error when its timer won), and
// the messages reach no one (delivered, not acknowledged: redelivered
// after ack_wait; the review's "missing_before=2").
func (p *pauser) lostPull(_ int, pl *puller) {
	p.mu.Lock()
	ch := p.ch
	p.mu.Unlock()
	if ch == nil {
		return
	}
	pl.lose() // until the pull ends
	<-ch
}

// TestShortPauseIsNotSilence is review 2's finding 1: a replica paused
// (SIGSTOP) for 1.5-2 s, shorter than its membership lease, with 100 ms
// assets flowing, published "sent nothing for 1.5 s" stale alerts right at
// resume. Its worker was paused with a pull request on its way; the pull
// expired meanwhile, and on resume it returned fewer messages than a full
// fetch (none: lostPull), which counted as caught up, so the once-a-second silence check
// judged the pause as the devices' silence while the batches stored during
// it still waited in the stream. Silence is now judged only as of the
// start of a fetch that left nothing pending on the consumer: no alert at
// all, with two replicas and with one; and real silence (the feed stops)
// is still raised for every asset.
func TestShortPauseIsNotSilence(t *testing.T) {
	if testing.Short() {
		t.Skip("replica test")
	}
	for _, tc := range []struct {
		name  string
		parts int
	}{{"replicas", 2}, {"single", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			ns, js := embeddedJS(t)
			alerts := &alertLog{}
			alerts.subscribe(t, js.Conn())
			cl := newCommitLog()
			ps := &pauser{}
			r1 := shortPauseReplica(t, ns.URL(), "r1", tc.parts, cl, ps)
			var r2 *running
			if tc.parts > 0 {
				r2 = shortPauseReplica(t, ns.URL(), "r2", tc.parts, cl, nil)
			}
			assets := twoPartitionAssets(4)
			f := startFeed(t, js, assets, 100*time.Millisecond) // silence after 3 x 100 ms
			mine := []string{}
			if tc.parts > 0 {
				wait.For(t, 30*time.Second, "one partition evaluated by each replica", func() bool {
					cl.mu.Lock()
					defer cl.mu.Unlock()
					return cl.lastBy[0] != "" && cl.lastBy[1] != "" && cl.lastBy[0] != cl.lastBy[1]
				})
				cl.mu.Lock()
				for _, id := range assets {
					if cl.lastBy[partitionOf("s1", id, 2)] == "r1" {
						mine = append(mine, "s1."+id)
					}
				}
				cl.mu.Unlock()
			} else {
				for _, id := range assets {
					mine = append(mine, "s1."+id)
				}
			}
			for _, pause := range []time.Duration{1500 * time.Millisecond, 2 * time.Second} {
				wait.For(t, 20*time.Second, "r1 evaluating its assets", cl.reached("r1", mine, time.Now().UnixMilli()+300))
				ps.pause()
				pausedAt := time.Now().UnixMilli()
				wait.For(t, 10*time.Second, "batches stored during the pause", f.stored(mine[0], pausedAt+pause.Milliseconds()))
				ps.resume()
			}
			wait.For(t, 20*time.Second, "r1 evaluating its assets after the pauses", cl.reached("r1", mine, time.Now().UnixMilli()+1000))
			alerts.mu.Lock()
			for _, a := range alerts.all {
				t.Errorf("alert published: %s %s %q", a.Key, a.State, a.Message)
			}
			alerts.mu.Unlock()
			for _, r := range []*running{r1, r2} {
				if r == nil {
					continue
				}
				if n := counterVec(r.c.m.dropped, "membership") + counterVec(r.c.m.dropped, "pin"); n != 0 {
					t.Errorf("%s dropped %v cycles: the pauses were to stay within the membership lease", r.c.cfg.Replica, n)
				}
			}

			// real silence is still seen: the feed stops, every asset is
			// raised silent once by its owner
			f.stop()
			wait.For(t, 15*time.Second, "a silence alert for every asset", func() bool {
				alerts.mu.Lock()
				defer alerts.mu.Unlock()
				raised := map[string]int{}
				for _, a := range alerts.all {
					if a.State == alert.Raised && a.Signal == "" && strings.Contains(a.Message, "sent nothing") {
						raised[a.Site+"."+a.Asset]++
					}
				}
				for _, id := range assets {
					if raised["s1."+id] == 0 {
						return false
					}
				}
				return len(raised) == len(assets)
			})
		})
	}
}

// TestPinExpiredPauseIsNotSilence is the worse variant of review 2's
// finding 1: with pinned_ttl (3 s) shorter than member_timeout (12 s, now
// warned about), a replica paused 5 s keeps its membership but the server
// gives up its pins. At resume it published "sent nothing for 5.2 s" for
// every asset of its partitions and checkpointed them, before its next
// fetch was refused ("pin ID mismatch"). Now no alert is published; the
// refused pin drops the cycle and restarts the partition.
func TestPinExpiredPauseIsNotSilence(t *testing.T) {
	if testing.Short() {
		t.Skip("replica test")
	}
	ns, js := embeddedJS(t)
	alerts := &alertLog{}
	alerts.subscribe(t, js.Conn())
	cl := newCommitLog()
	ps := &pauser{}
	k := ClusterConfig{Partitions: 2, Replicas: 1, AckWait: Duration(5 * time.Second), PinnedTTL: Duration(3 * time.Second),
		MemberTimeout: Duration(12 * time.Second), Fetch: 64, CheckpointInterval: Duration(time.Second), RecordFormat: "binary"}
	r1 := startReplica(t, ns.URL(), "r1", k, cl, ps, func(c *Collector) { c.inFetch = ps.lostPull })
	assets := twoPartitionAssets(4)
	all := make([]string, len(assets))
	for i, id := range assets {
		all[i] = "s1." + id
	}
	f := startFeed(t, js, assets, 100*time.Millisecond)
	wait.For(t, 20*time.Second, "r1 evaluating every asset", cl.reached("r1", all, time.Now().UnixMilli()+300))
	ps.pause()
	pausedAt := time.Now().UnixMilli()
	wait.For(t, 15*time.Second, "5 s of batches stored during the pause", f.stored(all[0], pausedAt+5000))
	ps.resume()
	wait.For(t, 30*time.Second, "r1 evaluating every asset after the pause", cl.reached("r1", all, time.Now().UnixMilli()+1000))
	f.stop()
	alerts.mu.Lock()
	for _, a := range alerts.all {
		t.Errorf("alert published: %s %s %q", a.Key, a.State, a.Message)
	}
	alerts.mu.Unlock()
	if n := counterVec(r1.c.m.dropped, reasonPin); n < 1 {
		t.Errorf("cycles dropped for a refused pin: %v, want the expired pins noticed", n)
	}
	if n := counterVec(r1.c.m.dropped, reasonMembership); n != 0 {
		t.Errorf("cycles dropped for the membership: %v, the pause was within the lease", n)
	}
}
