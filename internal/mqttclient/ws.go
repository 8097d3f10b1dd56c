package mqttclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
)

// wsConn carries the MQTT byte stream in binary websocket messages
// (MQTT 3.1.1 section 6): a packet may span messages and a message may
// hold several packets. One goroutine reads and one writes at a time.
type wsConn struct {
	c *websocket.Conn
	r io.Reader // the current message
}

func dialWebsocket(ctx context.Context, u *url.URL, tc *tls.Config) (net.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: tc, NetDialContext: (&net.Dialer{}).DialContext,
		ReadBufferSize: 16 << 10, WriteBufferSize: 64 << 10}
	c, resp, err := d.DialContext(ctx, u.String(), nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	if c.Subprotocol() != "mqtt" {
		_ = c.Close()
		return nil, fmt.Errorf("websocket: the server did not accept the subprotocol mqtt")
	}
	return &wsConn{c: c}, nil
}

func (w *wsConn) Read(p []byte) (int, error) {
	for {
		if w.r == nil {
			t, r, err := w.c.NextReader()
			if err != nil {
				return 0, err
			}
			if t != websocket.BinaryMessage {
				return 0, fmt.Errorf("websocket: a %d message instead of binary", t)
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if err == io.EOF {
			w.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (w *wsConn) Write(p []byte) (int, error) {
	if err := w.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsConn) Close() error                       { return w.c.Close() }
func (w *wsConn) LocalAddr() net.Addr                { return w.c.LocalAddr() }
func (w *wsConn) RemoteAddr() net.Addr               { return w.c.RemoteAddr() }
func (w *wsConn) SetReadDeadline(t time.Time) error  { return w.c.SetReadDeadline(t) }
func (w *wsConn) SetWriteDeadline(t time.Time) error { return w.c.SetWriteDeadline(t) }
func (w *wsConn) SetDeadline(t time.Time) error {
	if err := w.c.SetReadDeadline(t); err != nil {
		return err
	}
	return w.c.SetWriteDeadline(t)
}
