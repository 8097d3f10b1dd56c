package opcua

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smelterio/smelter/internal/logging/logtest"
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
			"TestHostileServerArrayLength can also run with isolation none", p)
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
// the first ReadResponse with a crafted one, or drops PublishResponses
// (dropPublish); channels with security None only: the bytes are in the
// clear.
type hostileProxy struct {
	ln      net.Listener
	target  string
	crafted atomic.Int64
	// dropPublish, while set, drops every PublishResponse: a server that
	// keeps its session (Reads answered) but never answers a Publish.
	dropPublish atomic.Bool
	dropped     atomic.Int64
	noCraft     atomic.Bool // forwards ReadResponses as they are
	// passPublish is how many PublishResponses of each connection pass
	// before dropPublish drops the rest (the initial values, say)
	passPublish atomic.Int64
	// faultPublish: what dropPublish would drop is answered with a
	// ServiceFault BadTimeout instead (review17 F1: a server that answers
	// every Publish with a fault, never with data or a keep-alive)
	faultPublish atomic.Bool
	// unknownHandles: every data-change notification's client handle is
	// rewritten to one the client never assigned (review17 F2)
	unknownHandles atomic.Bool
	// unknownNext: the next this many PublishResponses that carry data
	// changes get unknownHandles' rewrite; keep-alives pass as they are
	unknownNext atomic.Int64
	rewritten   atomic.Int64 // PublishResponses faulted or rewritten
	wg          sync.WaitGroup
}

// badHandle is the client handle unknownHandles puts on notifications.
const badHandle = 0x7eadbeef

// craftPublish turns an encoded PublishResponse body (type id and message)
// into a ServiceFault BadTimeout for the same request (fault), or the same
// response with every notification's client handle set to badHandle; data
// reports whether it held a data-change notification.
func craftPublish(body []byte, fault bool) (out []byte, data bool, err error) {
	_, v, err := ua.DecodeService(body)
	if err != nil {
		return nil, false, err
	}
	resp, ok := v.(*ua.PublishResponse)
	if !ok {
		return nil, false, errors.New("not a PublishResponse")
	}
	var crafted any = resp
	if fault {
		h := *resp.ResponseHeader
		h.ServiceResult = ua.StatusBadTimeout
		crafted = &ua.ServiceFault{ResponseHeader: &h}
	} else if msg := resp.NotificationMessage; msg != nil {
		for _, eo := range msg.NotificationData {
			if dc, ok := eo.Value.(*ua.DataChangeNotification); eo != nil && ok {
				for _, it := range dc.MonitoredItems {
					it.ClientHandle = badHandle
					data = true
				}
			}
		}
	}
	enc, err := ua.Encode(crafted)
	if err != nil {
		return nil, false, err
	}
	id := []byte{0x01, 0x00, 0, 0}
	binary.LittleEndian.PutUint16(id[2:], ua.ServiceTypeID(crafted))
	return append(id, enc...), data, nil
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
	publishes := int64(0)
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
		if string(msg[:4]) == "MSGF" && len(msg) > 28 && p.crafted.Load() == 0 && !p.noCraft.Load() &&
			msg[24] == 0x01 && binary.LittleEndian.Uint16(msg[26:]) == ua.ServiceTypeID(&ua.ReadResponse{}) {
			if body, err := craftReadResponse(msg[24:]); err == nil {
				msg = append(msg[:24:24], body...)
				binary.LittleEndian.PutUint32(msg[4:], uint32(len(msg)))
				p.crafted.Add(1)
			}
		}
		if string(msg[:4]) == "MSGF" && len(msg) > 28 && msg[24] == 0x01 &&
			binary.LittleEndian.Uint16(msg[26:]) == ua.ServiceTypeID(&ua.PublishResponse{}) {
			publishes++
			fault := p.faultPublish.Load() && p.dropPublish.Load() && publishes > p.passPublish.Load()
			switch {
			case fault || p.unknownHandles.Load():
				body, _, err := craftPublish(msg[24:], fault)
				if err != nil {
					return err
				}
				msg = append(msg[:24:24], body...)
				binary.LittleEndian.PutUint32(msg[4:], uint32(len(msg)))
				p.rewritten.Add(1)
			case p.unknownNext.Load() > 0:
				body, data, err := craftPublish(msg[24:], false)
				if err != nil {
					return err
				}
				if data {
					msg = append(msg[:24:24], body...)
					binary.LittleEndian.PutUint32(msg[4:], uint32(len(msg)))
					p.unknownNext.Add(-1)
					p.rewritten.Add(1)
				}
			case p.dropPublish.Load() && publishes > p.passPublish.Load():
				p.dropped.Add(1)
				continue
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
// -> Receive -> ua.DecodeService), which has no recover: the panic ends the
// process it runs in. With isolation process (the default) that process is
// the device's session worker, not the gateway: the Source emits a Lost
// cycle whose error wraps ErrWorkerExited and ErrPanic and carries the
// panic's line, counts it, keeps running and starts a new worker, which
// reads good values (the proxy crafts one answer only).
func TestHostileServerArrayLength(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	p := startHostileProxy(t, strings.TrimPrefix(f.Endpoint(), "opc.tcp://"))
	cfg := baseConfig(t, f)
	cfg.Endpoint = p.endpoint()
	cfg.Isolation = IsolationProcess
	reg := prometheus.NewRegistry()
	var logs logtest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	c, err := New("dev-1", cfg, pointsFor(f, "bf-2", ModePoll, "hot_blast_temp"), log, NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, c, rec)
	wait.For(t, 30*time.Second, "the crafted response sent", func() bool { return p.crafted.Load() > 0 })
	wait.For(t, 30*time.Second, "good values from a new worker after the hostile answer", func() bool {
		return rec.has(0, telemetry.QualityGood, 1183.5) && rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }) > 0
	})
	var lost *sample.Cycle
	rec.mu.Lock()
	for i := range rec.cycles {
		if rec.cycles[i].Lost && errors.Is(rec.cycles[i].Err, ErrPanic) {
			lost = &rec.cycles[i]
			break
		}
	}
	rec.mu.Unlock()
	if lost == nil {
		t.Fatalf("no Lost cycle wrapping ErrPanic; cycles: %v", rec.lostErrors())
	}
	if !errors.Is(lost.Err, ErrWorkerExited) || !strings.Contains(lost.Err.Error(), "negative len") {
		t.Fatalf("lost cause %q: want ErrWorkerExited, ErrPanic and the panic line (negative len)", lost.Err)
	}
	// The worker reports its status in its own frame, which may follow its
	// first cycle: wait for it rather than read it once.
	wait.For(t, 30*time.Second, "a second worker started and connected after the first died", func() bool {
		st := c.Status()
		return st.WorkerStarts >= 2 && st.WorkerExits >= 1 && st.Connected
	})
	if n := testutil.ToFloat64(c.m.panics); n < 1 {
		t.Fatalf("smelter_opcua_session_panics_total = %v, want >= 1", n)
	}
	if n := testutil.ToFloat64(c.m.m.workerExits.WithLabelValues("dev-1", "panic")); n != 1 {
		t.Fatalf("smelter_opcua_worker_exits_total{cause=panic} = %v, want 1", n)
	}
	text := logs.String()
	if strings.Count(text, "opc ua session worker died") != 1 || !strings.Contains(text, "uasc.(*SecureChannel).dispatcher") {
		t.Fatalf("want one death log with the dispatcher in its stack excerpt:\n%s", tail(text))
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// TestPublishFaultsConfirmNothing (review17 F1): a server that answers
// every Publish with a ServiceFault BadTimeout, never with data or a
// keep-alive, while its value changes. A fault says nothing about values:
// the heartbeat stops copying the old value as good at once (at most one
// copy already due), the session ends as silent (ErrPublishSilent) within
// the publish timeout, the point goes stale once, and no later session is
// born on its first answer (probation: the proxy lets the initial values
// of each connection through). Before the fix each fault counted as an
// answer: copies of 210 went on, good and freshly stamped, while the
// server's value was 999, and the session was never lost.
func TestPublishFaultsConfirmNothing(t *testing.T) {
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	p := startHostileProxy(t, strings.TrimPrefix(f.Endpoint(), "opc.tcp://"))
	p.noCraft.Store(true)
	p.faultPublish.Store(true)
	p.passPublish.Store(1)
	cfg := baseConfig(t, f)
	cfg.Endpoint = p.endpoint()
	fastTiming(&cfg)
	cfg.Heartbeat = 100 * time.Millisecond
	c, rec := run(t, cfg, pointsFor(f, "bf-2", ModeSubscribe, "top_pressure"))
	old := func() int {
		return rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityGood && s.Num == 210 })
	}
	wait.For(t, 20*time.Second, "the value and heartbeat copies", func() bool { return old() >= 3 })
	before := old()
	p.dropPublish.Store(true) // every later Publish of this connection faulted
	if err := f.Set("bf-2", "top_pressure", 999, time.Now()); err != nil {
		t.Fatal(err)
	}
	silentLost := func() int {
		return rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost && errors.Is(cy.Err, ErrPublishSilent) })
	}
	wait.For(t, 20*time.Second, "the faulted session lost as silent", func() bool { return silentLost() >= 1 })
	if n := old() - before; n > 1 {
		t.Fatalf("%d good copies of the old value after Publish was only faulted, want at most 1", n)
	}
	replied := func() int { return rec.countCycles(func(cy sample.Cycle) bool { return cy.Replied }) }
	repliedBefore := replied()
	wait.For(t, 30*time.Second, "3 more faulted sessions lost", func() bool { return silentLost() >= 4 })
	if n := replied() - repliedBefore; n != 0 {
		t.Fatalf("%d Replied cycles from sessions whose Publishes after the first were faulted: a birth per reconnect", n)
	}
	if n := rec.count(func(s sample.Sample) bool { return s.Quality == telemetry.QualityStale }); n != 1 {
		t.Fatalf("the point went stale %d times, want once for the outage", n)
	}
	if n := old() - before; n > 1 {
		t.Fatalf("%d good copies of the old value during the outage", n)
	}
	if p.rewritten.Load() == 0 || testutil.ToFloat64(c.m.m.faults.WithLabelValues("dev-1", "Publish", "BadTimeout")) == 0 {
		t.Fatal("no Publish faulted and counted")
	}
	p.dropPublish.Store(false)
	wait.For(t, 30*time.Second, "the device's value once Publish is answered", func() bool { return rec.has(0, telemetry.QualityGood, 999) })
}

// subscribedBehindProxy runs a client subscribed to bf-2's top_pressure
// (index 0) and top_gas_co (1) through a hostile proxy that forwards Read
// responses as they are, with fast timing and a 100 ms heartbeat.
func subscribedBehindProxy(t *testing.T) (*opcuafront.Front, *hostileProxy, *Client, *recorder) {
	t.Helper()
	f := startFront(t, opcuafront.Config{}, opcuafront.Asset{ID: "bf-2", Source: furnace()})
	p := startHostileProxy(t, strings.TrimPrefix(f.Endpoint(), "opc.tcp://"))
	p.noCraft.Store(true)
	cfg := baseConfig(t, f)
	cfg.Endpoint = p.endpoint()
	fastTiming(&cfg)
	cfg.Heartbeat = 100 * time.Millisecond
	c, rec := run(t, cfg, pointsFor(f, "bf-2", ModeSubscribe, "top_pressure", "top_gas_co"))
	return f, p, c, rec
}

// TestUnknownHandlesConfirmNothing (review17 F2): top_pressure changes
// every 20 ms, top_gas_co never. While the handles are right, the complete
// data-change messages (the server has a change of top_pressure every
// publishing interval, so it never sends a keep-alive) confirm top_gas_co
// unchanged: its heartbeat copies go on (OPC UA Part 4, 5.13.1.1). Once
// the server puts an unknown client handle on every notification, those
// are discarded and counted, and no point gets a copy: the notifications
// may have been meant for either. Before the fix every such response
// confirmed both points: copies of the last value, good and freshly
// stamped, while the server's value ran on.
func TestUnknownHandlesConfirmNothing(t *testing.T) {
	f, p, c, rec := subscribedBehindProxy(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for v := 300.0; ; v++ {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			_ = f.Set("bf-2", "top_pressure", v, time.Now())
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	gas := func() int {
		return rec.count(func(s sample.Sample) bool { return s.Index == 1 && s.Quality == telemetry.QualityGood })
	}
	pressure := func() int {
		return rec.count(func(s sample.Sample) bool { return s.Index == 0 && s.Quality == telemetry.QualityGood })
	}
	wait.For(t, 20*time.Second, "changing values and copies of the unchanged point without keep-alives", func() bool {
		return pressure() >= 20 && gas() >= 4
	})
	p.unknownHandles.Store(true)
	wait.For(t, 20*time.Second, "rewritten responses", func() bool { return p.rewritten.Load() >= 2 })
	gasBefore, pressureBefore := gas(), pressure()
	unknown := c.m.m.unknownHandles.WithLabelValues("dev-1")
	wait.For(t, 20*time.Second, "30 notifications of unknown handles counted", func() bool { return testutil.ToFloat64(unknown) >= 30 })
	if n := gas() - gasBefore; n > 1 {
		t.Fatalf("%d good copies of top_gas_co from responses whose notifications carried unknown handles", n)
	}
	if n := pressure() - pressureBefore; n > 1 {
		t.Fatalf("%d good top_pressure samples while every notification carried an unknown handle", n)
	}
	if lost := rec.countCycles(func(cy sample.Cycle) bool { return cy.Lost }); lost != 0 {
		t.Fatalf("%d Lost cycles: the server answers", lost)
	}
}

// TestUnknownHandleThenKeepAlivesRepeatNothing: one data change of an
// unchanging server reaches the gateway with a client handle it never
// assigned (top_gas_co 999 -> the unknown handle), then only keep-alives
// follow. The discarded notification may have been any point's: no later
// keep-alive confirms the old values, so the heartbeat repeats neither
// point good until each is reported again. Before the fix the first
// keep-alive after it made the heartbeat repeat top_gas_co's old value,
// good and freshly stamped, while the server's value was 999.
func TestUnknownHandleThenKeepAlivesRepeatNothing(t *testing.T) {
	f, p, c, rec := subscribedBehindProxy(t)
	good := func(i int) int {
		return rec.count(func(s sample.Sample) bool { return s.Index == i && s.Quality == telemetry.QualityGood })
	}
	wait.For(t, 20*time.Second, "heartbeat copies of both unchanged points after keep-alives", func() bool {
		return good(0) >= 4 && good(1) >= 4 && keepAlives(rec) >= 2
	})
	unknown := c.m.m.unknownHandles.WithLabelValues("dev-1")
	p.unknownNext.Store(1)
	if err := f.Set("bf-2", "top_gas_co", 999, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the notification of the unknown handle counted", func() bool { return testutil.ToFloat64(unknown) >= 1 })
	pressure, gas, ka := good(0), good(1), keepAlives(rec)
	wait.For(t, 20*time.Second, "five keep-alives after the unknown handle", func() bool { return keepAlives(rec) >= ka+5 })
	if n := good(1) - gas; n > 0 {
		t.Fatalf("%d good copies of top_gas_co's old value after a notification of an unknown handle (the server's value is 999)", n)
	}
	if n := good(0) - pressure; n > 0 {
		t.Fatalf("%d good copies of top_pressure after a notification of an unknown handle", n)
	}
	if rec.has(1, telemetry.QualityGood, 999) {
		t.Fatal("999 published good: it came under a handle the gateway never assigned")
	}
}
