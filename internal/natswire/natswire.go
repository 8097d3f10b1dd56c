// Package natswire is a NATS client connection for one job: reading the
// messages of one subscription (a JetStream consumer's pulls) without a
// copy or an allocation per message.
//
// nats.go copies every message it reads into a fresh slice, makes strings
// of its subject and reply and decodes its header block into a map before
// a subscription sees it: at the collector's rates that was 64 % of all the
// bytes the collector allocated and about a fifth of its CPU
// (docs/benchmarks.md, "Our own pull connection"). Here the socket is read
// into large chunks, and a Msg's Reply, Data and header block are views
// into its chunk (its Subject an interned string of the connection's own).
// A chunk is not written again until the caller says, with Release, that
// no message Next returned before is used any more: it is then read into
// again (Conn.Release), which spares the allocation, the zeroing and the
// first touches of fresh memory that the bytes read would otherwise cost
// (half of the collector's allocation: docs/benchmarks.md, "Read chunks
// used again"). A caller that never calls Release gets chunks that are
// never written again, freed by the garbage collector.
//
// The connection speaks the NATS client protocol
// (https://docs.nats.io/reference/reference-protocols/nats-protocol):
// INFO, CONNECT (with the credentials and TLS of nats.Options: user and
// password, token, user JWT and nonce signature, nkey), PING/PONG, SUB,
// UNSUB, PUB, MSG and HMSG, +OK and -ERR. It has no reconnect: a caller
// dials again after an error. Everything else (publishing with
// acknowledgements, the JetStream API, key-value) stays on nats.go.
//
// A Conn is not safe for concurrent use: one goroutine reads and writes.
package natswire

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
)

// chunkSize is the size of a read chunk: a message larger than what is
// left of a chunk starts a new one (of its size when larger).
const chunkSize = 256 << 10

// maxControlLine bounds a protocol line (INFO with a cluster's URLs, a MSG
// line with a long subject and reply): longer is a protocol error, as in
// nats.go (MAX_CONTROL_LINE_SIZE is 4 KiB there; INFO may exceed it).
const maxControlLine = 64 << 10

// handshakeTimeout bounds Dial's exchange (INFO, TLS, CONNECT and its
// PONG) when ctx gives no earlier deadline: nats.go's default Timeout.
const handshakeTimeout = 2 * time.Second

// writeTimeout bounds a write to the server (a pull request, SUB, PONG).
const writeTimeout = 10 * time.Second

// ErrTimeout is returned by Next when the deadline passed first: the
// connection stays usable.
var ErrTimeout = nats.ErrTimeout

// ErrProtocol wraps what the server sent that is not the NATS protocol:
// the connection is closed.
var ErrProtocol = errors.New("natswire: protocol error")

// Msg is a message read by Next. Reply, Data and the header block are
// views into the connection's read chunk: they stay valid until the
// caller's next Release (without Release, for as long as they are
// referenced, keeping the chunk alive): copy what is kept past it.
// Subject is a string of its own, interned (a subject seen again is the
// same string): callers keep subjects.
type Msg struct {
	Subject string
	Reply   string
	Data    []byte
	// Hdr is the raw header block ("NATS/1.0[ <status>[ <description>]]\r\n"
	// then "<key>: <value>\r\n" lines and "\r\n"), nil without headers.
	Hdr []byte
}

// Header returns the first value of the header key (case-sensitive, as
// nats.Header.Get), "" when absent. The status of a status message is
// read with Status, not here.
func (m *Msg) Header(key string) string {
	if len(m.Hdr) == 0 {
		return ""
	}
	h := m.Hdr
	i := bytes.Index(h, crlf)
	if i < 0 {
		return ""
	}
	h = h[i+2:]
	for len(h) > 0 {
		i = bytes.Index(h, crlf)
		if i < 0 {
			return ""
		}
		line := h[:i]
		h = h[i+2:]
		if len(line) == 0 {
			return ""
		}
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok || string(k) != key {
			continue
		}
		v = bytes.TrimLeft(v, " \t")
		return unsafe.String(unsafe.SliceData(v), len(v))
	}
	return ""
}

// Status returns the inline status of a status message ("NATS/1.0 404 No
// Messages": "404", "No Messages"), "" where the header line has none; as
// nats.DecodeHeadersMsg reads it (a 3-character code, the trimmed rest).
func (m *Msg) Status() (code, description string) {
	const pre = "NATS/1.0"
	if len(m.Hdr) < len(pre) {
		return "", ""
	}
	i := bytes.Index(m.Hdr, crlf)
	if i < len(pre) || string(m.Hdr[:len(pre)]) != pre {
		return "", ""
	}
	s := strings.TrimSpace(string(m.Hdr[len(pre):i]))
	if len(s) < 3 {
		return "", ""
	}
	return s[:3], strings.TrimSpace(s[3:])
}

var crlf = []byte("\r\n")

// serverInfo is what the connection reads of the server's INFO.
type serverInfo struct {
	Version      string `json:"version"`
	Headers      bool   `json:"headers"`
	AuthRequired bool   `json:"auth_required"`
	TLSRequired  bool   `json:"tls_required"`
	TLSAvailable bool   `json:"tls_available"`
	MaxPayload   int64  `json:"max_payload"`
	Nonce        string `json:"nonce"`
}

// Conn is one connection to a NATS server.
type Conn struct {
	conn net.Conn
	info serverInfo

	buf  []byte // the read chunk: buf[r:w] is read but not parsed
	r, w int
	// chunks: retired holds the full chunks read since the last Release
	// (views of messages handed out may point into them), free the chunks
	// Release gave back (at most maxFree), read into again by fill
	retired [][]byte
	free    [][]byte
	made    int    // chunks allocated (tests)
	filled  int    // chunks the last round filled (Release)
	guard   bool   // guard mode (SetGuard) when dialed: its chunks mapped outside the heap
	out     []byte // the write buffer

	lineStart int // where the last protocol line began in buf

	subjects     map[string]string // interned subjects (maxSubjects, maxSubjectBytes at most)
	subjectBytes int               // their length

	sid    uint64 // the subscription Next reads (0: none)
	dead   error  // set once the connection failed: every call returns it
	pinged bool   // a PING of ours waits for its PONG
}

// Dial connects to the server at rawURL (nats://, tls://; user info in the
// URL is used as nats.go does: user and password, or a token) with the
// credentials and TLS of o (nats.Options after its options were applied:
// User, Password, Token, TokenHandler, UserInfo, UserJWT, Nkey,
// SignatureCB, Secure, TLSConfig, Name, InboxPrefix is not used here),
// sends CONNECT and waits for the server's PONG to it, so that an
// authentication failure is the error of Dial. ctx bounds the whole
// handshake.
func Dial(ctx context.Context, rawURL string, o *nats.Options) (*Conn, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("natswire: dial %s: %w", shown(u), err)
	}
	c := &Conn{conn: nc, guard: guarded()}
	dl := time.Now().Add(handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = nc.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	err = c.handshake(ctx, u, o)
	stop()
	if err != nil {
		_ = nc.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("natswire: connect to %s: %w", shown(u), err)
	}
	_ = c.conn.SetDeadline(time.Time{})
	return c, nil
}

// parseURL reads a server URL as nats.go does: the scheme and port
// default to nats and 4222.
// shown is u as errors show it: without its user information (a token is
// user information without a password, which url.URL.Redacted shows), its
// query and fragment replaced by "redacted".
func shown(u *url.URL) string {
	v := *u
	v.User = nil
	if v.RawQuery != "" || v.ForceQuery { // no credential to nats.go, but it may hold one
		v.RawQuery, v.ForceQuery = "redacted", false
	}
	if v.Fragment != "" {
		v.Fragment, v.RawFragment = "redacted", ""
	}
	return v.String()
}

func parseURL(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL, user info and all
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("natswire: server URL: %w", err)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "4222")
	}
	return u, nil
}

func (c *Conn) handshake(ctx context.Context, u *url.URL, o *nats.Options) error {
	line, err := c.line()
	if err != nil {
		return err
	}
	op, args, _ := strings.Cut(string(line), " ")
	if !strings.EqualFold(op, "INFO") {
		return fmt.Errorf("%w: the server's first line is not INFO", ErrProtocol)
	}
	if err := json.Unmarshal([]byte(args), &c.info); err != nil {
		return fmt.Errorf("%w: INFO: %w", ErrProtocol, err)
	}
	if !c.info.Headers {
		return fmt.Errorf("natswire: the server does not support headers (nats-server 2.2 or newer is needed)")
	}
	secure := o.Secure || o.TLSConfig != nil || u.Scheme == "tls"
	if secure && !c.info.TLSRequired && !c.info.TLSAvailable {
		return nats.ErrSecureConnWanted
	}
	// as nats.go's checkForSecure: a server that requires TLS gets it, on
	// the system's roots when o has no TLS configuration
	secure = secure || c.info.TLSRequired
	if secure {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.TLSConfig != nil {
			tc = o.TLSConfig.Clone()
		}
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		if c.r != c.w {
			return fmt.Errorf("%w: data after INFO before the TLS handshake", ErrProtocol)
		}
		t := tls.Client(c.conn, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		c.conn = t
	}
	connect, err := c.connectJSON(u, o, secure)
	if err != nil {
		return err
	}
	c.out = append(c.out[:0], "CONNECT "...)
	c.out = append(c.out, connect...)
	c.out = append(c.out, "\r\nPING\r\n"...)
	if _, err := c.conn.Write(c.out); err != nil {
		return err
	}
	for {
		line, err := c.line()
		if err != nil {
			return err
		}
		op, args, _ := strings.Cut(string(line), " ")
		switch strings.ToUpper(op) {
		case "PONG":
			return nil
		case "+OK", "INFO":
		case "PING":
			if err := c.write("PONG\r\n"); err != nil {
				return err
			}
		case "-ERR":
			return serverError(args)
		default:
			return fmt.Errorf("%w: %q before the PONG to CONNECT", ErrProtocol, cut(line))
		}
	}
}

// connectJSON is the CONNECT of o as nats.go's connectProto builds it.
func (c *Conn) connectJSON(u *url.URL, o *nats.Options, secure bool) ([]byte, error) {
	type connectInfo struct {
		Verbose      bool   `json:"verbose"`
		Pedantic     bool   `json:"pedantic"`
		UserJWT      string `json:"jwt,omitempty"`
		Nkey         string `json:"nkey,omitempty"`
		Signature    string `json:"sig,omitempty"`
		User         string `json:"user,omitempty"`
		Pass         string `json:"pass,omitempty"`
		Token        string `json:"auth_token,omitempty"`
		TLS          bool   `json:"tls_required"`
		Name         string `json:"name"`
		Lang         string `json:"lang"`
		Version      string `json:"version"`
		Protocol     int    `json:"protocol"`
		Echo         bool   `json:"echo"`
		Headers      bool   `json:"headers"`
		NoResponders bool   `json:"no_responders"`
	}
	ci := connectInfo{TLS: secure, Name: o.Name, Lang: "go", Version: "smelter-natswire", Protocol: 1, Echo: true,
		Headers: true, NoResponders: true}
	if ui := u.User; ui != nil {
		if pw, ok := ui.Password(); ok {
			ci.User, ci.Pass = ui.Username(), pw
		} else {
			ci.Token = ui.Username()
		}
	} else {
		ci.User, ci.Pass, ci.Token, ci.Nkey = o.User, o.Password, o.Token, o.Nkey
		if o.UserInfo != nil {
			if ci.User != "" || ci.Pass != "" {
				return nil, nats.ErrUserInfoAlreadySet
			}
			ci.User, ci.Pass = o.UserInfo()
		}
	}
	if o.UserJWT != nil {
		jwt, err := o.UserJWT()
		if err != nil {
			return nil, err
		}
		if ci.Nkey != "" {
			return nil, nats.ErrNkeyAndUser
		}
		ci.UserJWT = jwt
	}
	if ci.UserJWT != "" || ci.Nkey != "" {
		if o.SignatureCB == nil {
			return nil, nats.ErrUserButNoSigCB
		}
		sig, err := o.SignatureCB([]byte(c.info.Nonce))
		if err != nil {
			return nil, fmt.Errorf("signing the server's nonce: %w", err)
		}
		ci.Signature = base64.RawURLEncoding.EncodeToString(sig)
	}
	if o.TokenHandler != nil {
		if ci.Token != "" {
			return nil, nats.ErrTokenAlreadySet
		}
		ci.Token = o.TokenHandler()
	}
	return json.Marshal(ci)
}

// serverError is the error of a -ERR line: authorization failures and
// permission violations as nats.go reports them (nats.ErrAuthorization,
// nats.ErrAuthExpired, nats.ErrPermissionViolation).
func serverError(args string) error {
	msg := strings.Trim(strings.TrimSpace(args), "'")
	low := strings.ToLower(msg)
	switch {
	case strings.Contains(low, "authorization violation"):
		return fmt.Errorf("%w: %s", nats.ErrAuthorization, msg)
	case strings.Contains(low, "authentication expired"):
		return fmt.Errorf("%w: %s", nats.ErrAuthExpired, msg)
	case strings.Contains(low, "permissions violation"):
		return fmt.Errorf("%w: %s", nats.ErrPermissionViolation, msg)
	}
	return fmt.Errorf("natswire: server error: %s", msg)
}

// ServerVersion is the version the server gave in its INFO.
func (c *Conn) ServerVersion() string { return c.info.Version }

// MaxPayload is the server's largest message payload in bytes.
func (c *Conn) MaxPayload() int64 { return c.info.MaxPayload }

// Subscribe makes subject the connection's one subscription: the previous
// one, if any, is unsubscribed, and what still comes for it is skipped by
// Next.
func (c *Conn) Subscribe(subject string) error {
	if c.dead != nil {
		return c.dead
	}
	if err := checkSubject(subject); err != nil {
		return err
	}
	c.out = c.out[:0]
	if c.sid != 0 {
		c.out = append(c.out, "UNSUB "...)
		c.out = strconv.AppendUint(c.out, c.sid, 10)
		c.out = append(c.out, "\r\n"...)
	}
	c.sid++
	c.out = append(c.out, "SUB "...)
	c.out = append(c.out, subject...)
	c.out = append(c.out, ' ')
	c.out = strconv.AppendUint(c.out, c.sid, 10)
	c.out = append(c.out, "\r\n"...)
	return c.flush()
}

// Publish sends data to subject with reply as its reply subject ("":
// none), at once.
func (c *Conn) Publish(subject, reply string, data []byte) error {
	if c.dead != nil {
		return c.dead
	}
	if err := checkSubject(subject); err != nil {
		return err
	}
	if reply != "" {
		if err := checkSubject(reply); err != nil {
			return err
		}
	}
	if c.info.MaxPayload > 0 && int64(len(data)) > c.info.MaxPayload {
		return nats.ErrMaxPayload
	}
	c.out = append(c.out[:0], "PUB "...)
	c.out = append(c.out, subject...)
	if reply != "" {
		c.out = append(c.out, ' ')
		c.out = append(c.out, reply...)
	}
	c.out = append(c.out, ' ')
	c.out = strconv.AppendInt(c.out, int64(len(data)), 10)
	c.out = append(c.out, "\r\n"...)
	c.out = append(c.out, data...)
	c.out = append(c.out, "\r\n"...)
	return c.flush()
}

// checkSubject refuses a subject that would break the protocol line.
func checkSubject(s string) error {
	if s == "" || strings.ContainsAny(s, " \t\r\n") {
		return nats.ErrBadSubject
	}
	return nil
}

func (c *Conn) write(s string) error {
	c.out = append(c.out[:0], s...)
	return c.flush()
}

func (c *Conn) flush() error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.conn.Write(c.out); err != nil {
		return c.fail(fmt.Errorf("natswire: write: %w", err))
	}
	return nil
}

// fail closes the connection for good with err.
func (c *Conn) fail(err error) error {
	if c.dead == nil {
		c.dead = err
		_ = c.conn.Close()
	}
	return c.dead
}

// Ping sends a PING: Next reads its PONG. A caller that sees no PONG (no
// read at all) within its own bound may treat the connection as dead.
func (c *Conn) Ping() error {
	if c.dead != nil {
		return c.dead
	}
	c.pinged = true
	return c.write("PING\r\n")
}

// ErrStale is the error of a connection whose server did not answer a
// PING of Flush by its deadline: it is closed, as nats.go closes one after
// MaxPingsOutstanding unanswered PINGs (a link that died without a reset
// fails no read nor write).
var ErrStale = errors.New("natswire: no PONG from the server: the connection is taken as dead")

// Flush sends a PING and reads until the server's PONG, by deadline:
// everything the server sent before it has been read. Messages read
// meanwhile, of any subscription, are dropped: call it when none is
// wanted (after Subscribe, before the first request of the new
// subscription). A timeout closes the connection with ErrStale.
func (c *Conn) Flush(deadline time.Time) error {
	if err := c.Ping(); err != nil {
		return err
	}
	for c.pinged {
		_, err := c.next(deadline, false)
		if errors.Is(err, ErrTimeout) {
			return c.fail(ErrStale)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Err is the error the connection failed with, nil while usable.
func (c *Conn) Err() error { return c.dead }

// Close closes the connection.
func (c *Conn) Close() error {
	if c.dead == nil {
		c.dead = net.ErrClosed
		return c.conn.Close()
	}
	return nil
}

// Next returns the next message of the current subscription, reading
// until deadline (zero: no bound). It answers the server's PINGs and skips
// messages of a previous subscription, PONGs, +OK and INFO. Errors:
// ErrTimeout at the deadline (the connection stays usable), a -ERR from
// the server (a permissions violation, wrapping
// nats.ErrPermissionViolation, leaves it usable too: the server refused
// one publish or subscription), ErrProtocol for what is not the protocol,
// or the read's error; the others close the connection.
func (c *Conn) Next(deadline time.Time) (Msg, error) {
	return c.next(deadline, true)
}

// next is Next; without msgs, it returns (a zero Msg) at the PONG of a
// PING of ours instead of at a message, and drops messages.
func (c *Conn) next(deadline time.Time, msgs bool) (Msg, error) {
	if c.dead != nil {
		return Msg{}, c.dead
	}
	_ = c.conn.SetReadDeadline(deadline)
	for {
		line, err := c.line()
		if err != nil {
			return Msg{}, c.readErr(err)
		}
		switch {
		case hasOp(line, "MSG "), hasOp(line, "HMSG "):
			m, sid, err := c.msg(line)
			if err != nil {
				return Msg{}, c.readErr(err)
			}
			if sid == 0 || sid > c.sid { // never subscribed: not a server's doing
				return Msg{}, c.fail(fmt.Errorf("%w: a message for subscription %d, never made", ErrProtocol, sid))
			}
			if msgs && sid == c.sid {
				return m, nil
			}
		case hasOp(line, "PING"):
			if err := c.write("PONG\r\n"); err != nil {
				return Msg{}, err
			}
		case hasOp(line, "PONG"):
			if c.pinged && !msgs {
				c.pinged = false
				return Msg{}, nil
			}
			c.pinged = false
		case hasOp(line, "+OK"), hasOp(line, "INFO "):
		case hasOp(line, "-ERR"):
			err := serverError(string(line[4:]))
			if errors.Is(err, nats.ErrPermissionViolation) {
				// the server refused one publish or subscription and
				// keeps the connection (as nats-server does): dialing
				// again would be refused the same way
				return Msg{}, err
			}
			return Msg{}, c.fail(err)
		default:
			return Msg{}, c.fail(fmt.Errorf("%w: unknown operation %q", ErrProtocol, cut(line)))
		}
	}
}

// readErr turns a read error into Next's: a timeout leaves the
// connection usable (what was read so far stays in the chunk).
func (c *Conn) readErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrTimeout
	}
	if errors.Is(err, ErrProtocol) {
		return c.fail(err)
	}
	return c.fail(fmt.Errorf("natswire: read: %w", err))
}

// hasOp reports whether line starts with op, case-insensitively (the
// protocol's operations are).
func hasOp(line []byte, op string) bool {
	return len(line) >= len(op) && strings.EqualFold(string(line[:len(op)]), op)
}

// cut shortens a line for an error message.
func cut(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// msg reads a MSG or HMSG whose control line is line: its payload (and
// header block) are the next bytes of the chunk. A timeout in the middle
// leaves the control line unread for the next call.
func (c *Conn) msg(line []byte) (Msg, uint64, error) {
	hdrOp := line[0] == 'H' || line[0] == 'h'
	var f [6][]byte
	n := 0
	for rest := line; ; {
		for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			break
		}
		if n == len(f) {
			return Msg{}, 0, fmt.Errorf("%w: too many arguments: %q", ErrProtocol, cut(line))
		}
		e := bytes.IndexAny(rest, " \t")
		if e < 0 {
			e = len(rest)
		}
		f[n], rest = rest[:e:e], rest[e:]
		n++
	}
	// MSG <subject> <sid> [reply] <#bytes>; HMSG <subject> <sid> [reply] <#hdr> <#total>
	want := 4
	if hdrOp {
		want = 5
	}
	if n != want && n != want+1 {
		return Msg{}, 0, fmt.Errorf("%w: %q", ErrProtocol, cut(line))
	}
	var m Msg
	m.Subject = c.intern(f[1])
	sid, err := strconv.ParseUint(string(f[2]), 10, 64)
	if err != nil {
		return Msg{}, 0, fmt.Errorf("%w: sid in %q", ErrProtocol, cut(line))
	}
	i := 3
	if n == want+1 {
		m.Reply = view(f[3])
		i = 4
	}
	hdrLen := 0
	if hdrOp {
		if hdrLen, err = strconv.Atoi(string(f[i])); err != nil || hdrLen < 0 {
			return Msg{}, 0, fmt.Errorf("%w: header size in %q", ErrProtocol, cut(line))
		}
		i++
	}
	total, err := strconv.Atoi(string(f[i]))
	if err != nil || total < hdrLen || int64(total) > c.maxMsg() {
		return Msg{}, 0, fmt.Errorf("%w: size in %q", ErrProtocol, cut(line))
	}
	// the control line stays unparsed until its payload is whole: a
	// timeout in between reads it again on the next call
	lineLen := c.r - c.lineStart
	c.r = c.lineStart
	if err := c.fill(lineLen + total + 2); err != nil {
		return Msg{}, 0, err
	}
	start := c.r + lineLen
	p := c.buf[start : start+total+2 : start+total+2]
	if p[total] != '\r' || p[total+1] != '\n' {
		return Msg{}, 0, fmt.Errorf("%w: payload of %q not followed by CRLF", ErrProtocol, cut(line))
	}
	c.r = start + total + 2
	if hdrLen > 0 {
		m.Hdr = p[:hdrLen:hdrLen]
		if !bytes.HasPrefix(m.Hdr, []byte("NATS/1.0")) {
			return Msg{}, 0, fmt.Errorf("%w: header block without NATS/1.0", ErrProtocol)
		}
	}
	m.Data = p[hdrLen:total:total]
	return m, sid, nil
}

// maxMsg is the largest header block and payload a MSG or HMSG may
// announce: twice the server's max_payload (a JetStream delivery adds its
// headers to a payload of up to max_payload) and 64 KiB. The server's
// value is an int32 there; an INFO without one, or with one out of that
// range, is taken as 64 MiB (the server's default max_pending, which bounds
// max_payload), so that no size a server sends can make the connection
// allocate without bound or overflow its arithmetic.
func (c *Conn) maxMsg() int64 {
	mp := c.info.MaxPayload
	if mp <= 0 || mp > math.MaxInt32 {
		mp = 64 << 20
	}
	return 2*mp + 64<<10
}

// maxSubjects and maxSubjectBytes bound the interned subjects, in number
// and in bytes: past either the table starts again (a stream of ever new
// subjects costs one string per message, as without interning). Without
// the bound in bytes, subjects as long as a protocol line (64 KiB) could
// make the table hold 4 GiB.
const (
	maxSubjects     = 1 << 16
	maxSubjectBytes = 8 << 20
)

// intern returns b as a string of its own, the same one for the same
// bytes.
func (c *Conn) intern(b []byte) string {
	if s, ok := c.subjects[string(b)]; ok {
		return s
	}
	if c.subjects == nil || len(c.subjects) >= maxSubjects || c.subjectBytes+len(b) > maxSubjectBytes {
		c.subjects, c.subjectBytes = make(map[string]string, 1024), 0
	}
	s := string(b)
	c.subjects[s] = s
	c.subjectBytes += len(s)
	return s
}

// view is b as a string without a copy: the chunk is not written again
// before the caller's Release.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// line returns the next protocol line without its CRLF (a view into the
// chunk), reading more as needed. lineStart is where it began: msg moves
// back to it when the payload is not complete by the deadline.
func (c *Conn) line() ([]byte, error) {
	from := 0 // of buf[r:w], already searched
	for {
		if i := bytes.Index(c.buf[c.r+from:c.w], crlf); i >= 0 {
			end := c.r + from + i
			l := c.buf[c.r:end:end]
			c.lineStart = c.r
			c.r = end + 2
			return l, nil
		}
		from = max(c.w-c.r-1, 0)
		if c.w-c.r >= maxControlLine {
			return nil, fmt.Errorf("%w: a protocol line longer than %d bytes", ErrProtocol, maxControlLine)
		}
		if err := c.fill(c.w - c.r + 1); err != nil {
			return nil, err
		}
	}
}

// fill reads until buf[r:w] holds at least n bytes. Bytes once read are
// not written again before Release: when the chunk has no room for n bytes
// from r, the unparsed part is copied to another chunk (a free one, else
// a new one) and the old one is retired, left to the messages that view it
// until the next Release.
func (c *Conn) fill(n int) error {
	for c.w-c.r < n {
		if len(c.buf)-c.r < n {
			nb := c.chunk(n)
			k := copy(nb, c.buf[c.r:c.w])
			c.retire(c.buf)
			c.buf, c.r, c.w = nb, 0, k
		}
		k, err := c.conn.Read(c.buf[c.w:])
		c.w += k
		if err != nil && c.w-c.r < n {
			return err
		}
	}
	return nil
}

// maxFree bounds the chunks a connection keeps for reading into again
// (8 MiB of 256 KiB chunks): about what one collector cycle reads at
// fetch 2,048 with messages of up to 4 KiB. Release keeps as many as the
// round it ends or the one before filled, up to maxFree; the others are
// left to the garbage collector.
const maxFree = 32

// Release tells the connection that no message Next returned so far is
// used any more, nor any view of one (Data, Reply, Hdr, Header's value):
// the chunks that held only such messages are read into again. Whatever a
// caller keeps past Release must be a copy. Between Release calls a
// message's bytes do not change.
//
// On a connection dialed in guard mode (SetGuard, for tests) the chunks
// Release frees are made inaccessible instead, the current one included: a
// view kept past Release faults when read (SIGSEGV, with the stack of the
// read).
func (c *Conn) Release() {
	if c.guard {
		if c.buf != nil { // its read part is released too: the unparsed rest moves
			nb := c.chunk(c.w - c.r)
			k := copy(nb, c.buf[c.r:c.w])
			c.retire(c.buf)
			c.buf, c.r, c.w = nb, 0, k
		}
		for _, b := range c.retired {
			guardRelease(b)
			guardedTotal.Add(1)
		}
	} else {
		// as many free chunks are kept as the larger of this round and
		// the one before filled (what the next round reads into), maxFree
		// at most: quieter rounds give the rest to the garbage
		// collector, an idle connection holds none
		n := 0
		for _, b := range c.retired {
			if cap(b) == chunkSize { // a large message's own chunk is not kept
				c.free = append(c.free, b[:chunkSize])
				n++
			}
		}
		if keep := min(max(n, c.filled), maxFree); len(c.free) > keep {
			clear(c.free[keep:])
			c.free = c.free[:keep]
		}
		c.filled = n
	}
	clear(c.retired)
	c.retired = c.retired[:0]
}

// chunk returns a chunk to read into with room for n bytes: a free one
// when n fits one, else a new one of chunkSize or n bytes.
func (c *Conn) chunk(n int) []byte {
	if k := len(c.free); k > 0 && n <= chunkSize {
		b := c.free[k-1]
		c.free[k-1] = nil
		c.free = c.free[:k-1]
		return b
	}
	c.made++
	if c.guard {
		return guardChunk(max(chunkSize, n))
	}
	return make([]byte, max(chunkSize, n))
}

// retire keeps b (the chunk being replaced) until the next Release.
func (c *Conn) retire(b []byte) {
	if b != nil {
		c.retired = append(c.retired, b)
	}
}
