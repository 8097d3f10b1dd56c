package natswire_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/smelterio/smelter/internal/brokers"
	"github.com/smelterio/smelter/internal/brokers/brokertest"
	"github.com/smelterio/smelter/internal/natswire"
)

// options applies nats.go options as nats.Connect would (Dial reads the
// credentials and TLS from them).
func options(t *testing.T, opts ...nats.Option) *nats.Options {
	t.Helper()
	o := nats.GetDefaultOptions()
	for _, f := range opts {
		if err := f(&o); err != nil {
			t.Fatal(err)
		}
	}
	return &o
}

func dial(t *testing.T, url string, opts ...nats.Option) *natswire.Conn {
	t.Helper()
	c, err := natswire.Dial(context.Background(), url, options(t, opts...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// next reads the next message within 5 s.
func next(t *testing.T, c *natswire.Conn) natswire.Msg {
	t.Helper()
	m, err := c.Next(time.Now().Add(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Messages published by nats.go of every size from empty to past a read
// chunk, with and without a reply and headers, arrive whole and in order;
// a message read earlier is unchanged after many more were read (the
// chunks are never written again); Header and Status read what
// nats.DecodeHeadersMsg reads; messages of a previous subscription are
// skipped.
func TestMessagesWholeAndStable(t *testing.T) {
	n := brokertest.NATS(t, brokers.NATSOptions{MaxPayload: 4 << 20})
	pub, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	c := dial(t, n.URL())
	if err := c.Subscribe("old.>"); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe("in.>"); err != nil { // replaces old.>
		t.Fatal(err)
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	// the subscriptions reached the server before the publishes: a PING of
	// ours is answered after them
	if err := c.Ping(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(time.Now().Add(200 * time.Millisecond)); !errors.Is(err, natswire.ErrTimeout) {
		t.Fatalf("before any publish: %v, want a timeout", err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 2, 3, 100, 4096, 256<<10 - 40, 256 << 10, 256<<10 + 1, 1 << 20, 3 << 20}
	for range 300 {
		sizes = append(sizes, rng.IntN(40<<10))
	}
	type sent struct {
		subj, reply string
		hdr         nats.Header
		data        []byte
	}
	var want []sent
	for i, size := range sizes {
		s := sent{subj: fmt.Sprintf("in.%d", i%17), data: make([]byte, size)}
		for j := range s.data {
			s.data[j] = byte(rng.IntN(256))
		}
		if i%3 == 0 {
			s.reply = fmt.Sprintf("r.%d", i)
		}
		if i%2 == 0 {
			s.hdr = nats.Header{"Nats-Msg-Id": {fmt.Sprint(i)}, "X-Two": {"a", "b"}, "x-lower": {" spaced\t"}}
		}
		if i == 5 {
			if err := pub.Publish("old.x", []byte("gone")); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.PublishMsg(&nats.Msg{Subject: s.subj, Reply: s.reply, Header: s.hdr, Data: s.data}); err != nil {
			t.Fatal(err)
		}
		want = append(want, s)
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []natswire.Msg
	for range want {
		got = append(got, next(t, c))
	}
	for i, w := range want {
		g := got[i]
		if g.Subject != w.subj || g.Reply != w.reply || !bytes.Equal(g.Data, w.data) {
			t.Fatalf("message %d (%d bytes): %q %q %d bytes; want %q %q", i, len(w.data), g.Subject, g.Reply, len(g.Data), w.subj, w.reply)
		}
		if w.hdr == nil {
			if g.Hdr != nil {
				t.Fatalf("message %d: header block %q, sent none", i, g.Hdr)
			}
			continue
		}
		h, err := nats.DecodeHeadersMsg(g.Hdr)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		for _, k := range []string{"Nats-Msg-Id", "X-Two", "x-lower", "X-Lower", "Missing"} {
			if g.Header(k) != h.Get(k) {
				t.Errorf("message %d: Header(%q) = %q, nats.go %q", i, k, g.Header(k), h.Get(k))
			}
		}
	}
}

// Status reads the inline status of a status message as
// nats.DecodeHeadersMsg does.
func TestStatus(t *testing.T) {
	for _, hdr := range []string{
		"NATS/1.0 404 No Messages\r\n\r\n", "NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\n\r\n",
		"NATS/1.0 503\r\n\r\n", "NATS/1.0\r\nNats-Pin-Id: abc\r\n\r\n", "NATS/1.0   100   Idle Heartbeat  \r\n\r\n",
	} {
		m := natswire.Msg{Hdr: []byte(hdr)}
		h, err := nats.DecodeHeadersMsg(m.Hdr)
		if err != nil {
			t.Fatal(err)
		}
		code, descr := m.Status()
		if code != h.Get("Status") || descr != h.Get("Description") {
			t.Errorf("%q: %q %q; nats.go %q %q", hdr, code, descr, h.Get("Status"), h.Get("Description"))
		}
	}
}

// Credentials and TLS come from nats.Options: user and password, token,
// nkey (the server's nonce signed), TLS with a client certificate;
// refused credentials are Dial's error (nats.ErrAuthorization), as is a
// plain connection to a TLS server.
func TestAuthAndTLS(t *testing.T) {
	up := brokertest.NATS(t, brokers.NATSOptions{Username: "u", Password: "p"})
	dial(t, up.URL(), nats.UserInfo("u", "p"))
	if _, err := natswire.Dial(context.Background(), up.URL(), options(t, nats.UserInfo("u", "wrong"))); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := natswire.Dial(context.Background(), up.URL(), options(t)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("no password: %v", err)
	}
	tok := brokertest.NATS(t, brokers.NATSOptions{Token: "s3cret"})
	dial(t, tok.URL(), nats.Token("s3cret"))
	if _, err := natswire.Dial(context.Background(), tok.URL(), options(t, nats.Token("other"))); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong token: %v", err)
	}

	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pubKey, _ := kp.PublicKey()
	ns := brokertest.Server(t, &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Nkeys: []*server.NkeyUser{{Nkey: pubKey}}})
	dial(t, ns.ClientURL(), nats.Nkey(pubKey, kp.Sign))
	other, _ := nkeys.CreateUser()
	if _, err := natswire.Dial(context.Background(), ns.ClientURL(), options(t, nats.Nkey(pubKey, other.Sign))); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("nonce signed by another key: %v", err)
	}

	pki := brokertest.NewPKI(t)
	tn := brokertest.NATS(t, brokers.NATSOptions{TLS: pki.ServerTLS(true), VerifyClients: true})
	c := dial(t, tn.URL(), nats.Secure(pki.ClientTLS()))
	if err := c.Subscribe("x"); err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(tn.URL(), nats.Secure(pki.ClientTLS()))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := c.Ping(); err != nil { // the SUB is in before the publish
		t.Fatal(err)
	}
	if _, err := c.Next(time.Now().Add(100 * time.Millisecond)); !errors.Is(err, natswire.ErrTimeout) {
		t.Fatal(err)
	}
	if err := pub.Publish("x", []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	if m := next(t, c); string(m.Data) != "over TLS" {
		t.Fatalf("%q", m.Data)
	}
	if _, err := natswire.Dial(context.Background(), tn.URL(), options(t)); err == nil {
		t.Fatal("a plain connection to a TLS server succeeded")
	}
	noCert := pki.ClientTLS().Clone()
	noCert.Certificates, noCert.GetClientCertificate = nil, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	if _, err := natswire.Dial(context.Background(), tn.URL(), options(t, nats.Secure(noCert))); err == nil {
		t.Fatal("connected without a client certificate")
	}
}

// fakeServer accepts one connection, sends INFO, answers CONNECT's PING,
// and hands the connection to the test.
func fakeServer(t *testing.T) (url string, conns <-chan net.Conn) {
	t.Helper()
	return fakeServerInfo(t, `{"server_id":"fake","version":"2.10.0","headers":true,"max_payload":1048576}`)
}

// fakeServerInfo is fakeServer sending info as its INFO.
func fakeServerInfo(t *testing.T, info string) (url string, conns <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ch := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(nc, "INFO "+info+"\r\n")
		buf := make([]byte, 0, 4096)
		tmp := make([]byte, 4096)
		for !bytes.Contains(buf, []byte("PING\r\n")) {
			k, err := nc.Read(tmp)
			if err != nil {
				_ = nc.Close()
				return
			}
			buf = append(buf, tmp[:k]...)
		}
		_, _ = io.WriteString(nc, "PONG\r\n")
		ch <- nc
	}()
	return "nats://" + ln.Addr().String(), ch
}

// A message whose payload is not whole by the deadline is a timeout that
// loses nothing: the next call returns it whole. The server's PING is
// answered.
func TestTimeoutMidMessage(t *testing.T) {
	url, conns := fakeServer(t)
	c := dial(t, url)
	if err := c.Subscribe("a"); err != nil {
		t.Fatal(err)
	}
	srv := <-conns
	defer srv.Close()
	_, _ = io.WriteString(srv, "PING\r\nHMSG a 1 $JS.ACK.S.c.1.2.3.4.0 18 23\r\nNATS/1.0\r\nK: v\r\n\r\nhel")
	if _, err := c.Next(time.Now().Add(100 * time.Millisecond)); !errors.Is(err, natswire.ErrTimeout) {
		t.Fatalf("half a message: %v, want a timeout", err)
	}
	var seen []byte // SUB a 1, then the PONG
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !bytes.HasSuffix(seen, []byte("PONG\r\n")) {
		b := make([]byte, 64)
		k, err := srv.Read(b)
		if err != nil {
			t.Fatalf("the PING was not answered (%q): %v", seen, err)
		}
		seen = append(seen, b[:k]...)
	}
	_, _ = io.WriteString(srv, "lo\r\n")
	m := next(t, c)
	if m.Subject != "a" || m.Reply != "$JS.ACK.S.c.1.2.3.4.0" || string(m.Data) != "hello" || m.Header("K") != "v" {
		t.Fatalf("%+v", m)
	}
}

// What is not the protocol (a garbled line, a payload without its CRLF, a
// size beyond the server's limit, a -ERR) is an error that closes the
// connection; nothing is returned as a message.
func TestHostileServer(t *testing.T) {
	for _, tc := range []struct {
		name, send string
		want       error
	}{
		{"garbled", "MSG a 1 5\r\nhello\r\nXYZZY 1 2\r\n", natswire.ErrProtocol},
		{"no CRLF after the payload", "MSG a 1 3\r\nhelloMSG a 1 3\r\n", natswire.ErrProtocol},
		{"size beyond max_payload", "MSG a 1 99999999999\r\n", natswire.ErrProtocol},
		{"negative size", "MSG a 1 -1\r\n", natswire.ErrProtocol},
		{"header size past the total", "HMSG a 1 30 20\r\n", natswire.ErrProtocol},
		{"header block not NATS/1.0", "HMSG a 1 8 10\r\nHTTP/1.1ab\r\n", natswire.ErrProtocol},
		{"sid not a number", "MSG a x 3\r\nabc\r\n", natswire.ErrProtocol},
		{"too many arguments", "MSG a 1 r 3 4 5\r\n", natswire.ErrProtocol},
		{"endless line", strings.Repeat("M", 70<<10), natswire.ErrProtocol},
		{"-ERR", "-ERR 'Permissions Violation for Subscription to \"a\"'\r\n", nil},
		{"closed", "", nil},
		{"closed mid-payload", "MSG a 1 5\r\nhello\r\nMSG a 1 10\r\nhel", nil},
		{"closed mid-line", "MSG a 1 5\r\nhello\r\nMSG a 1", nil},
		{"sid never subscribed", "MSG a 1 5\r\nhello\r\nMSG a 7 5\r\nhello\r\n", natswire.ErrProtocol},
		{"sid 0", "MSG a 0 5\r\nhello\r\n", natswire.ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, conns := fakeServer(t)
			c := dial(t, url)
			if err := c.Subscribe("a"); err != nil {
				t.Fatal(err)
			}
			srv := <-conns
			_, _ = io.WriteString(srv, tc.send)
			if strings.HasPrefix(tc.name, "closed") {
				_ = srv.Close()
			} else {
				defer srv.Close()
			}
			var err error
			for err == nil { // the garbled case returns its first, whole message first
				var m natswire.Msg
				m, err = c.Next(time.Now().Add(5 * time.Second))
				if err == nil && string(m.Data) != "hello" {
					t.Fatalf("returned %+v", m)
				}
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			if tc.want == nil && ((tc.name == "-ERR" && !strings.Contains(err.Error(), "Permissions Violation")) || errors.Is(err, natswire.ErrTimeout)) {
				t.Fatalf("%v", err)
			}
			if c.Err() == nil {
				t.Fatal("the connection is still usable after a protocol error")
			}
			if _, err := c.Next(time.Now().Add(time.Second)); err == nil {
				t.Fatal("Next after the error succeeded")
			}
		})
	}
}

// A server that never answers the handshake does not hang Dial past its
// context.
func TestDialBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := natswire.Dial(ctx, "nats://"+ln.Addr().String(), options(t)); err == nil {
		t.Fatal("Dial to a silent server succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Dial took %v", d)
	}
	if _, err := natswire.Dial(context.Background(), "nats://127.0.0.1:1", options(t)); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
	c := dial(t, brokertest.NATS(t, brokers.NATSOptions{}).URL())
	if err := c.Publish("bad subject", "", nil); !errors.Is(err, nats.ErrBadSubject) {
		t.Fatalf("a subject with a space: %v", err)
	}
}

// BenchmarkNext reads messages of a JetStream-like size (1.2 KiB with a
// header) published by nats.go in the same process: the figures include
// the publisher's work and allocations (nats.go's PublishMsg), the reads
// allocate one chunk per 200 or so messages.
func BenchmarkNext(b *testing.B) {
	n, err := brokers.StartNATS(brokers.NATSOptions{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown()
	pub, err := nats.Connect(n.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	o := nats.GetDefaultOptions()
	c, err := natswire.Dial(context.Background(), n.URL(), &o)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe("in.>"); err != nil {
		b.Fatal(err)
	}
	if err := c.Ping(); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Next(time.Now().Add(50 * time.Millisecond)); !errors.Is(err, natswire.ErrTimeout) {
		b.Fatal(err)
	}
	msg := &nats.Msg{Subject: "in.site1.motor.m-17.data", Reply: "_INBOX.SMELTER.c.1.88213.4107.1764527000123456789.5915", // a client may not publish with a $JS.ACK reply
		Header: nats.Header{"Nats-Msg-Id": {"gw1-88213"}}, Data: bytes.Repeat([]byte("x"), 1200)}
	b.SetBytes(int64(len(msg.Data)))
	b.ReportAllocs()
	b.ResetTimer()
	const batch = 512
	for done := 0; done < b.N; {
		k := min(batch, b.N-done)
		for range k {
			if err := pub.PublishMsg(msg); err != nil {
				b.Fatal(err)
			}
		}
		if err := pub.Flush(); err != nil {
			b.Fatal(err)
		}
		for i := range k {
			if _, err := c.Next(time.Now().Add(5 * time.Second)); err != nil {
				b.Fatalf("message %d of %d: %v", done+i, b.N, err)
			}
		}
		done += k
	}
}

// A server whose INFO gives no max_payload, or an absurd one, cannot make
// the connection allocate what a MSG line claims nor overflow its
// arithmetic: a size beyond any server's limit is a protocol error, not a
// panic (wirereview F1).
func TestHostileSizeWithoutMaxPayload(t *testing.T) {
	for _, tc := range []struct{ name, info, send string }{
		{"no max_payload, size near MaxInt", `{"headers":true}`, "MSG a 1 9223372036854775806\r\n"},
		{"no max_payload, 8 GiB", `{"headers":true}`, "MSG a 1 8589934592\r\n"},
		{"max_payload 2^62", `{"headers":true,"max_payload":4611686018427387904}`, "MSG a 1 9223372036854775000\r\n"},
		{"max_payload 2^61", `{"headers":true,"max_payload":2305843009213693952}`, "HMSG a 1 10 4611686018427387904\r\n"},
		{"negative max_payload", `{"headers":true,"max_payload":-5}`, "MSG a 1 8589934592\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, conns := fakeServerInfo(t, tc.info)
			c := dial(t, url)
			if err := c.Subscribe("a"); err != nil {
				t.Fatal(err)
			}
			srv := <-conns
			defer srv.Close()
			_, _ = io.WriteString(srv, tc.send)
			if _, err := c.Next(time.Now().Add(5 * time.Second)); !errors.Is(err, natswire.ErrProtocol) {
				t.Fatalf("%v, want a protocol error", err)
			}
		})
	}
}

// In operator mode the connection authenticates with a creds file (the
// user JWT and the signature of the server's nonce by the user's seed), as
// nats.go does, and is refused with another account's user.
func TestOperatorModeCreds(t *testing.T) {
	op := brokertest.OperatorNATS(t)
	ns, creds, foreign := op.Server, op.Creds, op.ForeignCreds
	c := dial(t, ns.ClientURL(), nats.UserCredentials(creds))
	if err := c.Subscribe("x"); err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := c.Ping(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(time.Now().Add(100 * time.Millisecond)); !errors.Is(err, natswire.ErrTimeout) {
		t.Fatal(err)
	}
	if err := pub.Publish("x", []byte("as the user")); err != nil {
		t.Fatal(err)
	}
	if m := next(t, c); string(m.Data) != "as the user" {
		t.Fatalf("%q", m.Data)
	}
	_, err = natswire.Dial(context.Background(), ns.ClientURL(), options(t, nats.UserCredentials(foreign)))
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("a user of an unknown account: %v", err)
	}
	if strings.Contains(err.Error(), "eyJ") {
		t.Fatalf("the user JWT in the error: %v", err)
	}
}

// Flush returns at the server's PONG (a real server), dropping what came
// before it; a server that does not answer by the deadline leaves the
// connection closed with ErrStale.
func TestFlush(t *testing.T) {
	ns := brokertest.NATS(t, brokers.NATSOptions{})
	c := dial(t, ns.URL())
	if err := c.Subscribe("f"); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish("f", []byte("dropped")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("f", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if m := next(t, c); string(m.Data) != "kept" {
		t.Fatalf("%q after Flush", m.Data)
	}

	url, conns := fakeServer(t)
	c = dial(t, url)
	srv := <-conns
	defer srv.Close() // open, silent
	if err := c.Flush(time.Now().Add(100 * time.Millisecond)); !errors.Is(err, natswire.ErrStale) {
		t.Fatalf("a silent server: %v, want ErrStale", err)
	}
	if !errors.Is(c.Err(), natswire.ErrStale) {
		t.Fatalf("the connection after a stale Flush: %v", c.Err())
	}
}

// A server that requires TLS from a client configured without TLS
// options gets TLS (verified against the system's roots), as nats.go
// switches to it: a collector with no nats.tls block on a server whose
// certificate a public CA signed connected, and its pull connections were
// refused with "secure connection required" (wirereview). The system's
// roots are read once per process: the client side runs in a process of
// its own, with SSL_CERT_FILE naming the test CA.
func TestTLSRequiredByTheServerOnly(t *testing.T) {
	if addr := os.Getenv("NATSWIRE_TEST_TLS_ONLY_ADDR"); addr != "" {
		nc, err := nats.Connect("nats://" + addr) // not tls://: TLS is the server's requirement
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		o := nc.Opts
		c, err := natswire.Dial(context.Background(), nc.ConnectedUrl(), &o)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Flush(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		return
	}
	pki := brokertest.NewPKI(t)
	tn := brokertest.NATS(t, brokers.NATSOptions{TLS: pki.ServerTLS(false)})
	cmd := exec.Command(os.Args[0], "-test.run=^TestTLSRequiredByTheServerOnly$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+pki.CAFile, "NATSWIRE_TEST_TLS_ONLY_ADDR="+tn.Addr())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// A server URL that does not parse is an error that does not quote its
// user info (url.Error quotes the whole URL).
func TestBadURLKeepsItsPassword(t *testing.T) {
	for _, u := range []string{"nats://collector:s3cret@127.0.0.1:4x22", "nats://collector:s3cret@[::1"} {
		_, err := natswire.Dial(context.Background(), u, options(t))
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%v", err)
		}
	}
}

// A dial that fails shows no user information of its URL: neither a
// password nor a token (url.URL.Redacted shows a token, being user
// information without a password).
func TestDialErrorShowsNoCredentials(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	for _, u := range []string{"nats://collector:s3cret@" + addr, "tls://Tok-s3cret@" + addr} {
		_, err := natswire.Dial(context.Background(), u, options(t))
		if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), addr) {
			t.Errorf("dial %s: %v, want an error naming the address and no credentials", strings.Split(u, ":")[0], err)
		}
	}
}

// A publish the server refuses for the user's permissions is a -ERR the
// server keeps the connection after: Next returns it (wrapping
// nats.ErrPermissionViolation) and the connection stays usable, messages
// of its subscription still read.
func TestPermissionViolationKeepsTheConnection(t *testing.T) {
	ns := brokertest.Server(t, &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "u", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"denied.>"}}}}}})
	c := dial(t, ns.ClientURL(), nats.UserInfo("u", "pw"))
	if err := c.Subscribe("in.>"); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish("denied.x", "", []byte("no")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(time.Now().Add(5 * time.Second)); !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("after a denied publish: %v, want a permissions violation", err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("connection closed after a permissions violation: %v", err)
	}
	if err := c.Publish("in.y", "", []byte("yes")); err != nil {
		t.Fatal(err)
	}
	if m := next(t, c); string(m.Data) != "yes" {
		t.Fatalf("after the violation: %q, want the message published since", m.Data)
	}
}
