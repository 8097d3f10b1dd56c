package opcua

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// The session worker's wire (docs/opcua.md, "Session isolation"): every
// message, both ways, is a frame of a 4-byte big-endian length n (2 ..
// maxFrame) followed by n bytes: the wire version (wireVersion), the
// message kind (its code in kinds), the device's slot in the worker
// (uvarint: a worker hosts the sessions of one device or of every device
// of one endpoint, docs/opcua.md) and the kind's payload. A cycle's
// payload is binary (appendCycle: the hot path, one frame per publish
// response); the other kinds, rare, are JSON encoding one wireMsg. The
// parent sends one "config" frame on the worker's stdin and keeps stdin
// open; the worker answers on stdout with "hello", then "cycle", "units",
// "status" and "metrics" frames, and a "ping" after a second without any
// (the parent kills a worker silent for workerSilence). Further "config" frames add devices to
// the worker, "stop" frames end one device's sessions. Commands travel as "req" frames on stdin
// (a point's read or write, with an id and a timeout), each answered by
// one "resp" frame with the same id on stdout. stderr carries the
// worker's slog JSON lines (and, when it dies of a panic, the runtime's
// panic text).
//
// The gateway and its workers are the same binary, so the version only
// guards against a stray writer on the pipe (or a binary replaced under a
// running gateway): a frame of another version is a protocol error that
// names both versions.

// wireVersion is the first byte of every frame's body.
const wireVersion = 1

// maxFrame bounds one frame (a cycle of 10,000 points is about 200 KB): a
// longer length prefix is a protocol error, not an allocation.
const maxFrame = 64 << 20

// Message kinds.
const (
	msgConfig  = "config"
	msgHello   = "hello"
	msgCycle   = "cycle"
	msgUnits   = "units"
	msgStatus  = "status"
	msgMetrics = "metrics"
	msgReq     = "req"
	msgResp    = "resp"
	msgStop    = "stop"
	msgPing    = "ping"
	msgPins    = "pins"
)

// Request operations.
const (
	opRead  = "read"
	opWrite = "write"
)

// wireMsg is one frame's content; Kind says which other field is set.
type wireMsg struct {
	Kind string `json:"k"`
	// Dev is the device's slot in its worker (the frame header carries
	// it): the parent numbers the devices it configures in a worker.
	Dev     uint32        `json:"-"`
	Config  *workerConfig `json:"config,omitempty"`
	PID     int           `json:"pid,omitempty"`
	Cycle   *wireCycle    `json:"cycle,omitempty"`
	Units   []wireUnit    `json:"units,omitempty"`
	Status  *Status       `json:"status,omitempty"`
	Metrics *wireMetrics  `json:"metrics,omitempty"`
	Req     *wireReq      `json:"req,omitempty"`
	Resp    *wireResp     `json:"resp,omitempty"`
	// Pins: the device's namespace pins, index -> URI (msgPins, from
	// the worker when they change)
	Pins map[uint16]string `json:"pins,omitempty"`
}

// wireReq asks the worker to read or write one point (driver.Writer) on
// its current session within Timeout; ID ties the answer to it.
type wireReq struct {
	ID      uint64        `json:"id"`
	Op      string        `json:"op"` // read | write
	Point   int           `json:"point"`
	Value   wireFloat     `json:"value,omitempty"`   // write: the device value
	Timeout time.Duration `json:"timeout,omitempty"` // what is left of the caller's deadline
}

// wireResp is the worker's answer to the request ID: the sample read, or
// the value the node holds after a write, or the error.
type wireResp struct {
	ID     uint64     `json:"id"`
	Sample wireSample `json:"sample"`
	Held   wireFloat  `json:"held,omitempty"`
	Err    *wireErr   `json:"err,omitempty"`
}

// wireFloat is a float64 in a JSON frame: a number when finite, else the
// text "NaN", "+Inf" or "-Inf" (encoding/json refuses non-finite numbers,
// and a server may report any of them: an EURange of NaN..NaN, say).
type wireFloat float64

func (f wireFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

func (f *wireFloat) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"NaN"`:
		*f = wireFloat(math.NaN())
	case `"+Inf"`:
		*f = wireFloat(math.Inf(1))
	case `"-Inf"`:
		*f = wireFloat(math.Inf(-1))
	default:
		var v float64
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("float %.40q: %w", b, err)
		}
		*f = wireFloat(v)
	}
	return nil
}

// wireSample is a sample.Sample in a JSON frame (a read's answer).
type wireSample struct {
	Index   int               `json:"i"`
	Num     wireFloat         `json:"num,omitempty"`
	Str     string            `json:"str,omitempty"`
	IsStr   bool              `json:"is_str,omitempty"`
	Quality telemetry.Quality `json:"q,omitempty"`
	Silent  bool              `json:"silent,omitempty"`
	Status  uint32            `json:"status,omitempty"`
	TS      int64             `json:"ts,omitempty"`
}

func toWireSample(s sample.Sample) wireSample {
	return wireSample{Index: s.Index, Num: wireFloat(s.Num), Str: s.Str, IsStr: s.IsStr, Quality: s.Quality, Silent: s.Silent, Status: s.Status, TS: s.TS}
}

func (w *wireSample) sample() sample.Sample {
	return sample.Sample{Index: w.Index, Num: float64(w.Num), Str: w.Str, IsStr: w.IsStr, Quality: w.Quality, Silent: w.Silent, Status: w.Status, TS: w.TS}
}

// workerConfig is what the parent tells the worker: the device, its
// session settings (secrets as the names of their environment variables
// and the paths of their files, never their values) and its points.
type workerConfig struct {
	ID        string  `json:"id"`
	Config    Config  `json:"config"`
	Points    []Point `json:"points"`
	WantUnits bool    `json:"want_units"`
	// Outage: the device is started again within an outage (after its
	// worker died, or restarted alone as silent): where the outage stands
	Outage *outageState `json:"outage,omitempty"`
	// Pins: the device's namespace pins the gateway's process holds
	// (pinMemory), taken up before the pin file
	Pins map[uint16]string `json:"pins,omitempty"`
}

// outageState is an outage's progress handed to a device's new instance in
// a worker (review17 F3: each instance began a new outage: its points
// stale again, its backoff from backoff_min).
type outageState struct {
	// StaleSent: its points were marked stale in this outage; the new
	// instance's losses mark nothing stale again
	StaleSent bool `json:"stale_sent,omitempty"`
	// Probation: the device went silent; the new instance's subscription
	// is held until its second Publish answer (subSession.probation)
	Probation bool `json:"probation,omitempty"`
	// Attempts: the reconnect attempts of the outage so far; the new
	// instance's backoff goes on from there
	Attempts int `json:"attempts,omitempty"`
}

type wireCycle struct {
	Samples  []sample.Sample `json:"samples,omitempty"`
	Start    time.Time       `json:"start"`
	Duration time.Duration   `json:"duration,omitempty"`
	Interval time.Duration   `json:"interval,omitempty"`
	Replied  bool            `json:"replied,omitempty"`
	Lost     bool            `json:"lost,omitempty"`
	Err      *wireErr        `json:"err,omitempty"`
}

// wireUnit is a NodeUnit in a JSON frame: its fields as they are (a
// field added to NodeUnit crosses too), but its range as wireFloats (a
// server may report NaN or infinite bounds) and its error as a wireErr.
type wireUnit struct {
	NodeUnit
	Min wireFloat `json:"Min"` // shadows NodeUnit.Min
	Max wireFloat `json:"Max"` // shadows NodeUnit.Max
	Err *wireErr  `json:"err,omitempty"`
}

func toWireUnit(u NodeUnit) wireUnit {
	w := wireUnit{NodeUnit: u, Min: wireFloat(u.Min), Max: wireFloat(u.Max), Err: encodeErr(u.Err)}
	w.NodeUnit.Err, w.NodeUnit.Min, w.NodeUnit.Max = nil, 0, 0
	return w
}

func (w *wireUnit) unit() NodeUnit {
	u := w.NodeUnit
	u.Min, u.Max, u.Err = float64(w.Min), float64(w.Max), w.Err.decode()
	return u
}

// wireErr carries an error across the process boundary as its text and
// its kinds: the driver's sentinels it matches, the ua.StatusCode it wraps
// and a *StatusError's point, so that errors.Is and errors.As answer in
// the parent as they did in the worker.
type wireErr struct {
	Text   string   `json:"text"`
	Kinds  []string `json:"kinds,omitempty"`
	Status uint32   `json:"status,omitempty"` // ua.StatusCode the error wraps (0: none)
	Point  *int     `json:"point,omitempty"`  // set for a *StatusError
}

// sentinels are the errors whose identity crosses the boundary, by name.
var sentinels = []struct {
	name string
	err  error
}{{"session_lost", ErrSessionLost}, {"panic", ErrPanic}, {"untrusted", ErrUntrusted}, {"worker_exited", ErrWorkerExited},
	{"no_session", ErrNoSession}, {"type_mismatch", ErrTypeMismatch}, {"not_readable", driver.ErrNotReadable},
	{"publish_silent", ErrPublishSilent}, {"device_silent", errDeviceSilent}}

func encodeErr(err error) *wireErr {
	if err == nil {
		return nil
	}
	w := &wireErr{Text: err.Error()}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			w.Kinds = append(w.Kinds, s.name)
		}
	}
	var se *StatusError
	if errors.As(err, &se) {
		w.Status, w.Point = uint32(se.Status), &se.Index
		return w
	}
	var sc ua.StatusCode
	if errors.As(err, &sc) {
		w.Status = uint32(sc)
	}
	return w
}

func (w *wireErr) decode() error {
	if w == nil {
		return nil
	}
	r := &remoteError{text: w.Text}
	if w.Point != nil {
		se := &StatusError{Index: *w.Point, Status: ua.StatusCode(w.Status)}
		if se.Error() == w.Text {
			return se
		}
		r.kinds = append(r.kinds, se) // wrapped: keep the worker's text
	}
	for _, k := range w.Kinds {
		for _, s := range sentinels {
			if s.name == k {
				r.kinds = append(r.kinds, s.err)
			}
		}
	}
	if w.Status != 0 && w.Point == nil {
		r.kinds = append(r.kinds, ua.StatusCode(w.Status))
	}
	return r
}

// remoteError is an error the worker reported: its text as the worker
// wrote it, unwrapping to the sentinels and StatusCode it matched there.
type remoteError struct {
	text  string
	kinds []error
}

func (e *remoteError) Error() string   { return e.text }
func (e *remoteError) Unwrap() []error { return e.kinds }

func toWireCycle(c *sample.Cycle) *wireCycle {
	return &wireCycle{Samples: c.Samples, Start: c.Start, Duration: c.Duration, Interval: c.Interval, Replied: c.Replied, Lost: c.Lost, Err: encodeErr(c.Err)}
}

func (w *wireCycle) cycle() *sample.Cycle {
	return &sample.Cycle{Samples: w.Samples, Start: w.Start, Duration: w.Duration, Interval: w.Interval, Replied: w.Replied, Lost: w.Lost, Err: w.Err.decode()}
}

// kinds maps a message kind to its code on the wire (index+1).
var kinds = [...]string{msgConfig, msgHello, msgCycle, msgUnits, msgStatus, msgMetrics, msgReq, msgResp, msgStop, msgPing, msgPins}

func kindCode(kind string) (byte, bool) {
	for i, k := range kinds {
		if k == kind {
			return byte(i + 1), true
		}
	}
	return 0, false
}

// appendFrame appends m as one frame (length, version, kind, payload) to
// dst.
func appendFrame(dst []byte, m *wireMsg) ([]byte, error) {
	code, ok := kindCode(m.Kind)
	if !ok {
		return dst, fmt.Errorf("opcua: worker frame: unknown kind %q", m.Kind)
	}
	at := len(dst)
	dst = append(dst, 0, 0, 0, 0, wireVersion, code)
	dst = binary.AppendUvarint(dst, uint64(m.Dev))
	var err error
	if m.Kind == msgCycle {
		if m.Cycle == nil {
			return dst[:at], errors.New("opcua: worker frame cycle: no cycle")
		}
		dst, err = appendCycle(dst, m.Cycle)
	} else {
		var b []byte
		b, err = json.Marshal(m)
		dst = append(dst, b...)
	}
	if err != nil {
		return dst[:at], fmt.Errorf("opcua: worker frame %s: %w", m.Kind, err)
	}
	n := len(dst) - at - 4
	if n > maxFrame {
		return dst[:at], fmt.Errorf("opcua: worker frame %s: %d bytes over the limit %d", m.Kind, n, maxFrame)
	}
	binary.BigEndian.PutUint32(dst[at:], uint32(n))
	return dst, nil
}

// writeFrame writes m as one frame; calls must not overlap.
func writeFrame(w io.Writer, m *wireMsg) error {
	b, err := appendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// readFrame reads one frame into m; io.EOF means the stream ended cleanly
// between frames.
func readFrame(r io.Reader, m *wireMsg) error {
	var fr frameReader
	fr.r = r
	return fr.read(m)
}

// frameReader reads frames from r, reusing its buffers: a cycle read
// holds samples valid until the next read.
type frameReader struct {
	r       io.Reader
	buf     []byte
	samples []sample.Sample
	cyc     wireCycle
}

// read reads one frame into m; io.EOF means the stream ended cleanly
// between frames.
func (f *frameReader) read(m *wireMsg) error {
	var hdr [4]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 2 || n > maxFrame {
		return fmt.Errorf("opcua: worker frame length %d out of range 2..%d (header %q)", n, maxFrame, hdr[:])
	}
	if cap(f.buf) < int(n) {
		f.buf = make([]byte, n)
	}
	b := f.buf[:n]
	if _, err := io.ReadFull(f.r, b); err != nil {
		return fmt.Errorf("opcua: worker frame of %d bytes: %w", n, errors.Join(err, io.ErrUnexpectedEOF))
	}
	return f.decode(b, m)
}

// decode decodes one frame's body (version, kind, payload) into m.
func (f *frameReader) decode(b []byte, m *wireMsg) error {
	*m = wireMsg{}
	if len(b) < 2 {
		return fmt.Errorf("opcua: worker frame of %d bytes: no version and kind", len(b))
	}
	if b[0] != wireVersion {
		return fmt.Errorf("opcua: worker frame version %d, this binary speaks %d", b[0], wireVersion)
	}
	if b[1] == 0 || int(b[1]) > len(kinds) {
		return fmt.Errorf("opcua: worker frame kind %d unknown (1..%d)", b[1], len(kinds))
	}
	kind := kinds[b[1]-1]
	r := &wireBuf{b: b[2:]}
	dev := uint32(r.uvarint("device slot", math.MaxUint32))
	if r.err != nil {
		return fmt.Errorf("opcua: worker frame %s: %w", kind, r.err)
	}
	if kind == msgCycle {
		var err error
		f.cyc = wireCycle{}
		f.samples, err = decodeCycle(r.b, &f.cyc, f.samples[:0])
		if err != nil {
			return fmt.Errorf("opcua: worker frame cycle: %w", err)
		}
		m.Kind, m.Dev, m.Cycle = msgCycle, dev, &f.cyc
		return nil
	}
	if err := json.Unmarshal(r.b, m); err != nil {
		return fmt.Errorf("opcua: worker frame %s: %w", kind, err)
	}
	if m.Kind != kind {
		return fmt.Errorf("opcua: worker frame of kind %s holds a %q message", kind, m.Kind)
	}
	m.Dev = dev
	return nil
}

// A cycle's payload: start (Unix ns), duration and interval (ns) as
// signed varints; a flags byte (cycleReplied, cycleLost, cycleErr); the
// error, when cycleErr, as a uvarint length and that many bytes of
// wireErr JSON; the number of samples (uvarint); then each sample: its
// index (uvarint), a flags byte (quality in the low 2 bits, sampleStr,
// sampleSilent, sampleStatus, sampleTS), the value (8 bytes, IEEE 754
// little-endian) or, with sampleStr, the text (uvarint length, bytes),
// the status (uvarint) with sampleStatus, and the source time (Unix ms,
// signed varint, as the difference to the previous sample's) with
// sampleTS.
const (
	cycleReplied = 1 << iota
	cycleLost
	cycleErr
)

const (
	sampleStr = 1 << (iota + 2)
	sampleSilent
	sampleStatus
	sampleTS
	sampleQuality = 3
)

// noStart stands for a zero Start (whose Unix time in ns overflows).
const noStart = math.MinInt64

// minSample is the fewest bytes one sample takes: a count of samples
// above remaining/minSample is a protocol error, not an allocation.
const minSample = 3

func appendCycle(b []byte, c *wireCycle) ([]byte, error) {
	start := int64(noStart)
	if !c.Start.IsZero() {
		start = c.Start.UnixNano()
	}
	b = binary.AppendVarint(b, start)
	b = binary.AppendVarint(b, int64(c.Duration))
	b = binary.AppendVarint(b, int64(c.Interval))
	var fl byte
	if c.Replied {
		fl |= cycleReplied
	}
	if c.Lost {
		fl |= cycleLost
	}
	if c.Err != nil {
		fl |= cycleErr
	}
	b = append(b, fl)
	if c.Err != nil {
		e, err := json.Marshal(c.Err)
		if err != nil {
			return b, err
		}
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Samples)))
	var ts int64
	for i := range c.Samples {
		s := &c.Samples[i]
		if s.Index < 0 {
			return b, fmt.Errorf("sample %d: negative index %d", i, s.Index)
		}
		if s.Quality > sampleQuality {
			return b, fmt.Errorf("sample %d: quality %d out of range", i, s.Quality)
		}
		b = binary.AppendUvarint(b, uint64(s.Index))
		sf := byte(s.Quality)
		if s.IsStr {
			sf |= sampleStr
		}
		if s.Silent {
			sf |= sampleSilent
		}
		if s.Status != 0 {
			sf |= sampleStatus
		}
		if s.TS != 0 {
			sf |= sampleTS
		}
		b = append(b, sf)
		if s.IsStr {
			b = binary.AppendUvarint(b, uint64(len(s.Str)))
			b = append(b, s.Str...)
		} else {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s.Num))
		}
		if s.Status != 0 {
			b = binary.AppendUvarint(b, uint64(s.Status))
		}
		if s.TS != 0 {
			b = binary.AppendVarint(b, s.TS-ts)
			ts = s.TS
		}
	}
	return b, nil
}

// wireBuf reads a payload, failing on the first short or bad field.
type wireBuf struct {
	b   []byte
	err error
}

func (r *wireBuf) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, a...)
	}
}

func (r *wireBuf) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("%s: truncated or overlong varint", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireBuf) uvarint(what string, max uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("%s: truncated or overlong varint", what)
		return 0
	}
	if v > max {
		r.fail("%s: %d over %d", what, v, max)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireBuf) bytes(what string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail("%s: %d bytes, %d left", what, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// decodeCycle decodes a cycle payload into c, its samples appended to
// samples (c.Samples is the result).
func decodeCycle(b []byte, c *wireCycle, samples []sample.Sample) ([]sample.Sample, error) {
	r := &wireBuf{b: b}
	if start := r.varint("start"); start != noStart {
		c.Start = time.Unix(0, start)
	}
	c.Duration = time.Duration(r.varint("duration"))
	c.Interval = time.Duration(r.varint("interval"))
	fl := r.bytes("flags", 1)
	if r.err != nil {
		return samples, r.err
	}
	if fl[0]&^(cycleReplied|cycleLost|cycleErr) != 0 {
		return samples, fmt.Errorf("flags %#x: unknown bits", fl[0])
	}
	c.Replied, c.Lost = fl[0]&cycleReplied != 0, fl[0]&cycleLost != 0
	if fl[0]&cycleErr != 0 {
		e := r.bytes("error", int(r.uvarint("error length", uint64(len(r.b)))))
		if r.err != nil {
			return samples, r.err
		}
		c.Err = &wireErr{}
		if err := json.Unmarshal(e, c.Err); err != nil {
			return samples, fmt.Errorf("error: %w", err)
		}
	}
	n := r.uvarint("sample count", uint64(len(r.b)/minSample))
	if r.err != nil {
		return samples, r.err
	}
	samples = slices.Grow(samples, int(n))
	var ts int64
	for i := range int(n) {
		var s sample.Sample
		s.Index = int(r.uvarint("sample index", math.MaxInt32))
		sf := r.bytes("sample flags", 1)
		if r.err != nil {
			return samples, fmt.Errorf("sample %d: %w", i, r.err)
		}
		if sf[0]&^(sampleQuality|sampleStr|sampleSilent|sampleStatus|sampleTS) != 0 {
			return samples, fmt.Errorf("sample %d: flags %#x: unknown bits", i, sf[0])
		}
		s.Quality = telemetry.Quality(sf[0] & sampleQuality)
		s.IsStr, s.Silent = sf[0]&sampleStr != 0, sf[0]&sampleSilent != 0
		if s.IsStr {
			s.Str = string(r.bytes("sample text", int(r.uvarint("sample text length", uint64(len(r.b))))))
		} else if v := r.bytes("sample value", 8); v != nil {
			s.Num = math.Float64frombits(binary.LittleEndian.Uint64(v))
		}
		if sf[0]&sampleStatus != 0 {
			s.Status = uint32(r.uvarint("sample status", math.MaxUint32))
		}
		if sf[0]&sampleTS != 0 {
			ts += r.varint("sample time")
			s.TS = ts
		}
		if r.err != nil {
			return samples, fmt.Errorf("sample %d: %w", i, r.err)
		}
		samples = append(samples, s)
	}
	if len(r.b) != 0 {
		return samples, fmt.Errorf("%d bytes after the last sample", len(r.b))
	}
	c.Samples = samples
	return samples, nil
}
