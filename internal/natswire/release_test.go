package natswire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/natswire"
)

// payload is message i of round r: its size and every byte follow from
// (r, i), so a message read back whole is that message and no other.
func payload(r, i int) []byte {
	b := make([]byte, 64+(r*131+i*977)%6000)
	binary.LittleEndian.PutUint32(b, uint32(r))
	binary.LittleEndian.PutUint32(b[4:], uint32(i))
	for j := 8; j < len(b); j++ {
		b[j] = byte(r*7 + i*13 + j)
	}
	return b
}

// subscribed dials a connection subscribed to in.> on a fresh server and
// returns it with a publisher.
func subscribed(t *testing.T) (*natswire.Conn, *nats.Conn) {
	t.Helper()
	n := brokertest.NATS(t, brokers.NATSOptions{})
	pub, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	c := dial(t, n.URL())
	if err := c.Subscribe("in.>"); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(time.Now().Add(5 * time.Second)); err != nil { // the subscription is in place before the publishes
		t.Fatal(err)
	}
	return c, pub
}

// publishRound publishes round r's n messages with a reply and a header.
func publishRound(t *testing.T, pub *nats.Conn, r, n int) {
	t.Helper()
	for i := range n {
		m := &nats.Msg{Subject: fmt.Sprintf("in.%d", i%5), Reply: fmt.Sprintf("re.%d.%d", r, i),
			Header: nats.Header{"Nats-Msg-Id": {fmt.Sprintf("%d-%d", r, i)}}, Data: payload(r, i)}
		if err := pub.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
}

// checkRound reads round r's n messages, then checks every one of them
// (after the whole round was read: a chunk read into again while the round
// was read would show here).
func checkRound(t *testing.T, c *natswire.Conn, r, n int) {
	t.Helper()
	got := make([]natswire.Msg, n)
	for i := range got {
		got[i] = next(t, c)
	}
	for i, m := range got {
		if !bytes.Equal(m.Data, payload(r, i)) || m.Reply != fmt.Sprintf("re.%d.%d", r, i) ||
			m.Header("Nats-Msg-Id") != fmt.Sprintf("%d-%d", r, i) || m.Subject != fmt.Sprintf("in.%d", i%5) {
			t.Fatalf("round %d message %d: %d bytes, reply %q, id %q, subject %q: not what was sent",
				r, i, len(m.Data), m.Reply, m.Header("Nats-Msg-Id"), m.Subject)
		}
	}
}

// With Release after each round, the chunks are read into again: the
// number allocated stops growing once the rounds' chunks are free, and
// every message of a round is whole and its own when the round was read
// to its end (a free chunk is never one that holds a message handed out
// since the last Release).
func TestReleaseReadsIntoChunksAgain(t *testing.T) {
	c, pub := subscribed(t)
	const perRound = 400 // ~1.2 MB a round: five chunks
	var after3 int
	for r := range 20 {
		publishRound(t, pub, r, perRound)
		checkRound(t, c, r, perRound)
		c.Release()
		if r == 3 {
			after3 = natswire.Made(c)
		}
	}
	if made := natswire.Made(c); made != after3 {
		t.Fatalf("%d chunks allocated after round 3, %d after round 20: released chunks are not read into again", after3, made)
	}
	if after3 > 16 {
		t.Fatalf("%d chunks allocated for 4 rounds of ~1.2 MB", after3)
	}
}

// Without Release a chunk is never written again: messages read long ago
// are unchanged, and every chunk is a new one.
func TestNoReleaseNoReuse(t *testing.T) {
	c, pub := subscribed(t)
	const perRound = 400
	var first []natswire.Msg
	for r := range 4 {
		publishRound(t, pub, r, perRound)
		if r == 0 {
			for range perRound {
				first = append(first, next(t, c))
			}
			continue
		}
		checkRound(t, c, r, perRound)
	}
	for i, m := range first {
		if !bytes.Equal(m.Data, payload(0, i)) {
			t.Fatalf("message %d of the first round changed after three more rounds", i)
		}
	}
	if made := natswire.Made(c); made < 16 {
		t.Fatalf("%d chunks for ~4.8 MB read: chunks were written again without Release", made)
	}
}

var sink byte

// In guard mode a view kept past Release faults when read, the chunk read
// last included, and what was read but not yet returned (the next
// message) survives the Release whole.
func TestGuardFaultsOnReleasedView(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("guard mode is Linux only")
	}
	natswire.SetGuard(true)
	defer natswire.SetGuard(false)
	c, pub := subscribed(t)
	publishRound(t, pub, 0, 2)
	// both messages are in the chunk after the first read (one read of
	// the socket) once both reached the connection
	kept := next(t, c)
	c.Release()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%v", r)
				if re, ok := r.(runtime.Error); ok {
					err = re
				}
			}
		}()
		sink = kept.Data[0] // a load, not only a bounds check
		return nil
	}()
	var addr interface{ Addr() uintptr }
	if !errors.As(err, &addr) {
		t.Fatalf("reading a released message's payload: %v, want a fault", err)
	}
	second, rerr := c.Next(time.Now().Add(5 * time.Second))
	if rerr != nil {
		t.Fatal(rerr)
	}
	if !bytes.Equal(second.Data, payload(0, 1)) {
		t.Fatalf("the message after the released one: %d bytes, not what was sent", len(second.Data))
	}
}
