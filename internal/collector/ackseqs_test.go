package collector

import (
	"math/rand/v2"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestAckSeqsMatchesMetadata: the delivery count, stream and consumer sequences, stream time and
// pending count read from a reply subject are what nats.go's Metadata gives (the same
// parser as jetstream.Msg's), and ok is false exactly where it fails, for
// both ack subject forms, more tokens, and random edits of them; a reply
// that parses costs no allocation.
func TestAckSeqsMatchesMetadata(t *testing.T) {
	cases := []string{
		"$JS.ACK.SMELTER.smelter-p3.1.88213.4107.1764527000123456789.5915",                      // v1
		"$JS.ACK._.ACCHASH.SMELTER.smelter-p3.2.88213.4107.1764527000123456789.0.Xj7Yz",         // v2
		"$JS.ACK.hub.ACCHASH.SMELTER.smelter-p3.1.88213.4107.1764527000123456789.17",            // v2 without the last token
		"$JS.ACK.hub.ACCHASH.SMELTER.smelter-p3.1.88213.4107.1764527000123456789.17.tok.more.x", // more tokens
		"$JS.ACK.SMELTER.smelter-p3.1.88213.41x07.1764527000123456789.5915",                     // not a number: 0
		"$JS.ACK.SMELTER.smelter-p3.1.88213.4107.17645.",                                        // empty: 0
		"$JS.ACK.SMELTER.smelter-p3.1.88213.4107.1764527000123456789",                           // 8 tokens
		"$JS.ACK._.H.SMELTER.smelter-p3.1.88213.4107.1764527000123456789",                       // 10 tokens
		"$JS.ACX.SMELTER.smelter-p3.1.88213.4107.1764527000123456789.5915",                      // prefix
		"_INBOX.abc.def", "", ".", "$JS.ACK.........", "$JS.ACK..........", "$JS.ACK.SMELTER.c.1.2.3.4.١٢",
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		b := []byte(cases[rng.IntN(4)])
		for range rng.IntN(4) {
			i := rng.IntN(len(b))
			switch rng.IntN(3) {
			case 0:
				b = append(b[:i:i], append([]byte{"0.9x"[rng.IntN(4)]}, b[i:]...)...)
			case 1:
				b = append(b[:i:i], b[i+1:]...)
			default:
				b[i] = "0.9x\xff"[rng.IntN(5)]
			}
		}
		cases = append(cases, string(b))
	}
	for _, r := range cases {
		a := parseAck(r)
		md, err := (&nats.Msg{Reply: r, Sub: &nats.Subscription{}}).Metadata()
		if a.ok != (err == nil) || (a.ok && (a.cseq != md.Sequence.Consumer || a.sseq != md.Sequence.Stream || a.delivered != md.NumDelivered ||
			a.pending != md.NumPending || int64(a.tm) != md.Timestamp.UnixNano())) {
			t.Fatalf("parseAck(%q) = %+v; Metadata: %+v, %v", r, a, md, err)
		}
	}
	r := cases[1]
	if n := testing.AllocsPerRun(100, func() { _ = parseAck(r) }); n != 0 {
		t.Errorf("parseAck allocates %v times", n)
	}
}
