package modbustest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smelterio/smelter/internal/modbus/checksum"
)

// Framing is the serial-line framing a bridge speaks.
type Framing uint8

// Framings.
const (
	RTU Framing = iota + 1
	ASCII
)

// EncodeRTU frames unit and pdu (function code first) with a CRC.
func EncodeRTU(unit byte, pdu []byte) []byte {
	f := append([]byte{unit}, pdu...)
	crc := checksum.CRC16(f)
	return append(f, byte(crc), byte(crc>>8))
}

// EncodeASCII frames unit and pdu as ":" hex LRC CR LF (upper-case hex).
func EncodeASCII(unit byte, pdu []byte) []byte {
	bin := append([]byte{unit}, pdu...)
	bin = append(bin, checksum.LRC(bin))
	out := make([]byte, 0, 2*len(bin)+3)
	out = append(out, ':')
	out = fmt.Appendf(out, "%X", bin)
	return append(out, '\r', '\n')
}

// Bridge forwards RTU or ASCII framed requests to a Modbus TCP server.
type Bridge struct {
	Addr string // TCP listen address (bridges over TCP), or the client's pty path (serial bridges)

	framing  Framing
	upstream string
	corrupt  atomic.Int32
	bad      atomic.Int64
	served   atomic.Int64
	wg       sync.WaitGroup
}

// CorruptReplies makes the next n replies carry a wrong checksum.
func (b *Bridge) CorruptReplies(n int) { b.corrupt.Store(int32(n)) }

// BadRequests counts request frames dropped for a bad checksum or shape.
func (b *Bridge) BadRequests() int64 { return b.bad.Load() }

// Served counts replies sent.
func (b *Bridge) Served() int64 { return b.served.Load() }

// StartBridge listens on a random loopback port and serves each client
// connection with framing, forwarding to the Modbus TCP server at upstream.
func StartBridge(tb testing.TB, upstream string, framing Framing) *Bridge {
	tb.Helper()
	b := &Bridge{framing: framing, upstream: upstream}
	b.Addr = ServeConns(tb, func(ctx context.Context, c net.Conn) { b.serve(ctx, c) })
	return b
}

// ServeConns listens on a random loopback port and runs serve for each
// connection (closed when serve returns) until the test ends, when the
// listener and every connection are closed and the goroutines waited for.
// It returns the listen address.
func ServeConns(tb testing.TB, serve func(ctx context.Context, c net.Conn)) string {
	tb.Helper()
	ctx := tb.Context()
	ln := listen(tb)
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				serve(ctx, c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				_ = c.Close()
			})
		}
	})
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

var ptyLine = regexp.MustCompile(`PTY is (\S+)`)

// noctty keeps a test's pty from becoming its controlling terminal.
const noctty = syscall.O_NOCTTY

// PtyPair creates a pseudo-terminal pair with socat (`socat -d -d
// pty,raw,echo=0 pty,raw,echo=0`) that lives until the test ends, and
// returns the paths of its two ends: one for the client under test, one for
// the device. The test is skipped, saying so, when socat is not installed.
func PtyPair(tb testing.TB) (client, device string) {
	tb.Helper()
	socat, err := exec.LookPath("socat")
	if err != nil {
		tb.Skip("modbustest: socat not installed; serial tests need `socat` for a pty pair (apt-get install socat)")
	}
	// socat is killed when the test's context ends, just before cleanup.
	cmd := exec.CommandContext(tb.Context(), socat, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatalf("modbustest: socat pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("modbustest: start socat: %v", err)
	}
	var paths []string
	sc := bufio.NewScanner(stderr)
	for len(paths) < 2 && sc.Scan() {
		if m := ptyLine.FindStringSubmatch(sc.Text()); m != nil {
			paths = append(paths, m[1])
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	if len(paths) < 2 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		tb.Fatalf("modbustest: socat did not report two ptys (%v)", sc.Err())
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return paths[0], paths[1]
}

// StartSerialBridge creates a pseudo-terminal pair with socat, serves one end
// with framing (forwarding to upstream) and returns the bridge with Addr set
// to the other end's path for the client. The test is skipped when socat is
// not installed.
func StartSerialBridge(tb testing.TB, upstream string, framing Framing) *Bridge {
	tb.Helper()
	client, dev := PtyPair(tb)
	f, err := os.OpenFile(dev, os.O_RDWR|noctty, 0)
	if err != nil {
		tb.Fatalf("modbustest: open %s: %v", dev, err)
	}
	b := &Bridge{Addr: client, framing: framing, upstream: upstream}
	ctx := tb.Context()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.serve(ctx, f)
	}()
	tb.Cleanup(func() {
		_ = f.Close()
		b.wg.Wait()
	})
	return b
}

// serve answers framed requests on rw until it fails.
func (b *Bridge) serve(ctx context.Context, rw io.ReadWriter) {
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", b.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	r := bufio.NewReaderSize(rw, 1024)
	var tid uint16
	for {
		unit, pdu, err := b.readRequest(r)
		if errors.Is(err, errBadFrame) {
			b.bad.Add(1)
			continue
		}
		if err != nil {
			return
		}
		tid++
		reply, err := forward(up, tid, unit, pdu)
		if err != nil {
			return
		}
		var out []byte
		if b.framing == RTU {
			out = EncodeRTU(unit, reply)
		} else {
			out = EncodeASCII(unit, reply)
		}
		if b.corrupt.Load() > 0 {
			b.corrupt.Add(-1)
			out[len(out)-3] ^= 0x01 // RTU: CRC low byte; ASCII: last LRC character
		}
		if _, err := rw.Write(out); err != nil {
			return
		}
		b.served.Add(1)
	}
}

var errBadFrame = errors.New("bad frame")

// readRequest reads one request frame and returns its unit and PDU.
func (b *Bridge) readRequest(r *bufio.Reader) (byte, []byte, error) {
	if b.framing == ASCII {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 || len(line)-i < 11 || (len(line)-i)%2 != 1 || line[len(line)-2] != '\r' {
			return 0, nil, errBadFrame
		}
		bin, err := hex.DecodeString(string(line[i+1 : len(line)-2]))
		if err != nil || len(bin) < 3 {
			return 0, nil, errBadFrame
		}
		if checksum.LRC(bin[:len(bin)-1]) != bin[len(bin)-1] {
			return 0, nil, errBadFrame
		}
		return bin[0], bin[1 : len(bin)-1], nil
	}
	head := make([]byte, 2, 260)
	if _, err := io.ReadFull(r, head); err != nil {
		return 0, nil, err
	}
	var rest int
	switch head[1] {
	case 1, 2, 3, 4, 5, 6:
		rest = 4
	case 15, 16:
		more := make([]byte, 5)
		if _, err := io.ReadFull(r, more); err != nil {
			return 0, nil, err
		}
		head = append(head, more...)
		rest = int(more[4])
	default:
		// unknown function: resynchronise by dropping what is buffered
		_, _ = r.Discard(r.Buffered())
		return 0, nil, errBadFrame
	}
	body := make([]byte, rest+2)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	f := append(head, body...)
	n := len(f)
	if checksum.CRC16(f[:n-2]) != binary.LittleEndian.Uint16(f[n-2:]) {
		_, _ = r.Discard(r.Buffered())
		return 0, nil, errBadFrame
	}
	return f[0], f[1 : n-2], nil
}

// forward sends one PDU to the MBAP server and returns the reply PDU.
func forward(up net.Conn, tid uint16, unit byte, pdu []byte) ([]byte, error) {
	req := make([]byte, 7+len(pdu))
	binary.BigEndian.PutUint16(req, tid)
	binary.BigEndian.PutUint16(req[4:], uint16(len(pdu)+1))
	req[6] = unit
	copy(req[7:], pdu)
	_ = up.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := up.Write(req); err != nil {
		return nil, err
	}
	var h [7]byte
	if _, err := io.ReadFull(up, h[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[4:]))
	if n < 2 {
		return nil, fmt.Errorf("modbustest: upstream mbap length %d", n)
	}
	reply := make([]byte, n-1)
	if _, err := io.ReadFull(up, reply); err != nil {
		return nil, err
	}
	return reply, nil
}
