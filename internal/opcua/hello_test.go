package opcua

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/gopcua/opcua/uacp"
)

// TestHelloAsksBufferSize: every connection the driver opens (discovery
// and a session's) asks for buffer_size as its ReceiveBufferSize and
// SendBufferSize, so a server keeps its chunks, and what gopcua allocates
// per chunk read, to that size (Part 6, 7.1.2.4). The server here reads
// the Hello and hangs up.
func TestHelloAsksBufferSize(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	type hello struct{ recv, send uint32 }
	hellos := make(chan hello, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			var b [8 + 20]byte // header, then version and the four limits
			if _, err := io.ReadFull(c, b[:]); err == nil && string(b[:4]) == "HELF" {
				hellos <- hello{binary.LittleEndian.Uint32(b[12:]), binary.LittleEndian.Uint32(b[16:])}
			}
			_ = c.Close()
		}
	}()
	endpoint := "opc.tcp://" + ln.Addr().String()
	for _, size := range []uint32{0, 65535, MinBufferSize} { // the last one differs from gopcua's default
		want := size
		if want == 0 {
			want = DefaultBufferSize
		}
		cfg := Config{Endpoint: endpoint, BufferSize: size, RequestTimeout: 2 * time.Second}
		cfg.SetDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if _, err := options(t.Context(), &cfg, slog.New(slog.DiscardHandler), cfg.RequestTimeout); err == nil {
			t.Fatal("options succeeded against a server that hangs up")
		}
		select {
		case h := <-hellos:
			if h.recv != want || h.send != want {
				t.Errorf("buffer_size %d: Hello ReceiveBufferSize %d, SendBufferSize %d, want %d", size, h.recv, h.send, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no Hello")
		}
	}
	if a := uacp.DefaultClientACK; a.ReceiveBufSize != uacp.DefaultReceiveBufSize || a.SendBufSize != uacp.DefaultSendBufSize {
		t.Errorf("gopcua's process-wide default Hello changed to %d/%d", a.ReceiveBufSize, a.SendBufSize)
	}
	for _, bad := range []uint32{MinBufferSize - 1, MaxBufferSize + 1} {
		cfg := Config{Endpoint: endpoint, BufferSize: bad}
		cfg.SetDefaults()
		if err := cfg.Validate(); err == nil {
			t.Errorf("buffer_size %d accepted", bad)
		}
	}
}
