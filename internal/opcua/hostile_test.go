package opcua

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/wait"
	"github.com/smelterio/smelter/simulators/opcuafront"
)

// craftReadResponse turns an encoded ReadResponse body (type id and
// message) into the same response whose first DataValue holds a UInt32
// array of length -2: what a hostile or broken server can send.
func craftReadResponse(body []byte) ([]byte, error) {
	_, v, err := ua.DecodeService(body)
	if err != nil {
		return nil, err
	}
	resp, ok := v.(*ua.ReadResponse)
	if !ok || len(resp.Results) == 0 {
		return nil, errors.New("not a ReadResponse with results")
	}
	resp.Results[0] = &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant([]uint32{7})}
	enc, err := ua.Encode(resp)
	if err != nil {
		return nil, err
	}
	// Variant of UInt32 (7) with the array bit, then its int32 length 1.
	i := bytes.Index(enc, []byte{0x87, 1, 0, 0, 0, 7, 0, 0, 0})
	if i < 0 {
		return nil, errors.New("array variant not found")
	}
	binary.LittleEndian.PutUint32(enc[i+1:], uint32(0xFFFFFFFE)) // int32 -2
	return append(append([]byte(nil), body[:4]...), enc...), nil
}

// The decoder of gopcua (v0.8.0 and v0.9.0 alike) panics on a Variant
// array length below -1 (reflect.MakeSlice: negative len).
func TestCraftedArrayLengthPanicsGopcuaDecoder(t *testing.T) {
	typeID := []byte{0x01, 0x00, 0, 0}
	binary.LittleEndian.PutUint16(typeID[2:], ua.ServiceTypeID(&ua.ReadResponse{}))
	enc, err := ua.Encode(&ua.ReadResponse{ResponseHeader: &ua.ResponseHeader{Timestamp: time.Now(), ServiceDiagnostics: &ua.DiagnosticInfo{},
		AdditionalHeader: ua.NewExtensionObject(nil)}, Results: []*ua.DataValue{{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(uint32(1))}}})
	if err != nil {
		t.Fatal(err)
	}
	crafted, err := craftReadResponse(append(typeID, enc...))
	if err != nil {
		t.Fatal(err)
	}
	var p any
	func() {
		defer func() { p = recover() }()
		_, _, _ = ua.DecodeService(crafted)
	}()
	if p == nil || !strings.Contains(strings.ToLower(stringOf(p)), "negative") {
		t.Fatalf("gopcua decoded the crafted response without panicking (%v): the decoder was fixed, "+
			"TestHostileServerArrayLength can assert that the driver survives", p)
	}
}

func stringOf(v any) string {
	if e, ok := v.(error); ok {
		return e.Error()
	}
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// hostileProxy forwards a client to the front and, once armed, replaces
// the first ReadResponse with a crafted one (channels with security None
// only: the bytes are in the clear).
type hostileProxy struct {
	ln      net.Listener
	target  string
	crafted atomic.Int64
	wg      sync.WaitGroup
}

func startHostileProxy(t *testing.T, target string) *hostileProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hostileProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *hostileProxy) endpoint() string { return "opc.tcp://" + p.ln.Addr().String() }

func (p *hostileProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(s, c)
			_ = s.Close()
		}()
		go func() {
			defer p.wg.Done()
			defer c.Close()
			_ = p.rewrite(c, s)
		}()
	}
}

// rewrite copies UACP messages from the server to the client.
func (p *hostileProxy) rewrite(dst io.Writer, src io.Reader) error {
	hdr := make([]byte, 8)
	for {
		if _, err := io.ReadFull(src, hdr); err != nil {
			return err
		}
		size := binary.LittleEndian.Uint32(hdr[4:])
		if size < 8 || size > 1<<24 {
			return errors.New("bad message size")
		}
		msg := make([]byte, size)
		copy(msg, hdr)
		if _, err := io.ReadFull(src, msg[8:]); err != nil {
			return err
		}
		// MSG final chunk: header 8, channel id 4, token id 4, sequence
		// header 8, then the body starting with its type id.
		if string(msg[:4]) == "MSGF" && len(msg) > 28 && p.crafted.Load() == 0 &&
			msg[24] == 0x01 && binary.LittleEndian.Uint16(msg[26:]) == ua.ServiceTypeID(&ua.ReadResponse{}) {
			if body, err := craftReadResponse(msg[24:]); err == nil {
				msg = append(msg[:24:24], body...)
				binary.LittleEndian.PutUint32(msg[4:], uint32(len(msg)))
				p.crafted.Add(1)
			}
		}
		if _, err := dst.Write(msg); err != nil {
			return err
		}
	}
}

// TestHostileServerArrayLength puts a server that answers a Read with a
// crafted Variant array length in front of the driver. The decode runs in
// gopcua's secure-channel dispatcher goroutine (uasc.SecureChannel.dispatcher
// -> Receive -> ua.DecodeService), which the driver does not own and which
// has no recover, so the panic ends the process: the test runs the driver
// in a child process and pins exactly that, stack and all. When gopcua
// guards its decoder, the child survives and this test fails, asking for
// the assertion to become "the session fails, the driver reconnects".
func TestHostileServerArrayLength(t *testing.T) {
	if os.Getenv("SMELTER_HOSTILE_CHILD") == "1" {
		hostileChild(t)
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostileServerArrayLength$", "-test.v")
	cmd.Env = append(os.Environ(), "SMELTER_HOSTILE_CHILD=1")
	out, err := cmd.CombinedOutput()
	text := string(out)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child survived the crafted response (err %v): gopcua now guards its decoder; assert the reconnect instead.\n%s", err, tail(text))
	}
	for _, want := range []string{"negative len", "uasc.(*SecureChannel).dispatcher", "ua.DecodeService"} {
		if !strings.Contains(text, want) {
			t.Fatalf("child failed without %q in its output:\n%s", want, tail(text))
		}
	}
	t.Logf("as documented in docs/opcua.md (Hostile servers): the crafted array length panics in gopcua's dispatcher goroutine, out of the driver's reach")
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

func hostileChild(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	p := startHostileProxy(t, strings.TrimPrefix(f.Endpoint(), "opc.tcp://"))
	cfg := baseConfig(t, f)
	cfg.Endpoint = p.endpoint()
	c, err := New("dev-1", cfg, pointsFor(f, "bf-2", ModePoll, "hot_blast_temp"), testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx, rec.emit) }()
	wait.For(t, 20*time.Second, "the crafted response sent", func() bool { return p.crafted.Load() > 0 })
	// Survived the crafted response: the session must fail and the driver
	// reconnect to read good values.
	wait.For(t, 20*time.Second, "good values after the hostile answer", func() bool {
		return rec.has(0, telemetry.QualityGood, 1183.5) &&
			rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }) > 0
	})
}
