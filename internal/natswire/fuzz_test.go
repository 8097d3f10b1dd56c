package natswire

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

// FuzzNext feeds what a server may send, in chunks of every size, to a
// connection subscribed as sid 1: Next never panics, returns only messages
// whose payload is followed by CRLF in the input and ends with an error
// (never a hang: the input ends with the connection closed).
func FuzzNext(f *testing.F) {
	for _, s := range []string{
		"MSG a 1 5\r\nhello\r\n",
		"HMSG a 1 r 12 17\r\nNATS/1.0\r\n\r\nhello\r\nPING\r\n",
		"HMSG $JS.ACK 1 _INBOX.x.1 16 16\r\nNATS/1.0 408 x\r\n\r\n\r\n",
		"MSG a 1 99999999999999999999\r\n",
		"MSG a 1 9223372036854775806\r\n",
		"HMSG a 1 4611686018427387904 4611686018427387904\r\n",
		"+OK\r\nINFO {}\r\nPONG\r\n-ERR 'x'\r\n",
		"MSG a 2 1\r\nx\r\n",
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		cl, srv := net.Pipe()
		c := &Conn{conn: cl, sid: 1, info: serverInfo{Headers: true, MaxPayload: 1 << 20}}
		go func() {
			step := int(chunk) + 1
			for i := 0; i < len(data); i += step {
				if _, err := srv.Write(data[i:min(i+step, len(data))]); err != nil {
					break
				}
			}
			_ = srv.Close()
		}()
		go func() { // PONGs to the server's PINGs
			_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
			b := make([]byte, 64)
			for {
				if _, err := srv.Read(b); err != nil {
					return
				}
			}
		}()
		for range len(data) + 1 {
			m, err := c.Next(time.Now().Add(5 * time.Second))
			if err != nil {
				if errors.Is(err, ErrTimeout) {
					t.Fatalf("timeout on a closed input")
				}
				return
			}
			if !bytes.Contains(data, append(append([]byte(nil), m.Data...), '\r', '\n')) {
				t.Fatalf("a payload %q not in the input", m.Data)
			}
		}
		t.Fatal("more messages than bytes")
	})
}
