package opcua

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/sample"
)

// The session worker's wire (docs/opcua.md, "Session isolation"): every
// message, both ways, is a frame of a 4-byte big-endian length n (1 ..
// maxFrame) followed by n bytes of JSON encoding one wireMsg. The parent
// sends one "config" frame on the worker's stdin and keeps stdin open; the
// worker answers on stdout with "hello", then "cycle", "units", "status"
// and "metrics" frames. Commands travel as "req" frames on stdin (a
// point's read or write, with an id and a timeout), each answered by one
// "resp" frame with the same id on stdout. stderr carries the worker's
// slog JSON lines (and, when it dies of a panic, the runtime's panic
// text).

// maxFrame bounds one frame (a cycle of 10,000 points is about 1.5 MB of
// JSON): a longer length prefix is a protocol error, not an allocation.
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
)

// Request operations.
const (
	opRead  = "read"
	opWrite = "write"
)

// wireMsg is one frame's content; Kind says which other field is set.
type wireMsg struct {
	Kind    string        `json:"k"`
	Config  *workerConfig `json:"config,omitempty"`
	PID     int           `json:"pid,omitempty"`
	Cycle   *wireCycle    `json:"cycle,omitempty"`
	Units   []wireUnit    `json:"units,omitempty"`
	Status  *Status       `json:"status,omitempty"`
	Metrics *wireMetrics  `json:"metrics,omitempty"`
	Req     *wireReq      `json:"req,omitempty"`
	Resp    *wireResp     `json:"resp,omitempty"`
}

// wireReq asks the worker to read or write one point (driver.Writer) on
// its current session within Timeout; ID ties the answer to it.
type wireReq struct {
	ID      uint64        `json:"id"`
	Op      string        `json:"op"` // read | write
	Point   int           `json:"point"`
	Value   float64       `json:"value,omitempty"`   // write: the device value
	Timeout time.Duration `json:"timeout,omitempty"` // what is left of the caller's deadline
}

// wireResp is the worker's answer to the request ID: the sample read, or
// the value the node holds after a write, or the error.
type wireResp struct {
	ID     uint64        `json:"id"`
	Sample sample.Sample `json:"sample"`
	Held   float64       `json:"held,omitempty"`
	Err    *wireErr      `json:"err,omitempty"`
}

// workerConfig is what the parent tells the worker: the device, its
// session settings (secrets as the names of their environment variables
// and the paths of their files, never their values) and its points.
type workerConfig struct {
	ID        string  `json:"id"`
	Config    Config  `json:"config"`
	Points    []Point `json:"points"`
	WantUnits bool    `json:"want_units"`
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

type wireUnit struct {
	NodeUnit
	Err *wireErr `json:"err,omitempty"`
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
	{"no_session", ErrNoSession}, {"type_mismatch", ErrTypeMismatch}, {"not_readable", driver.ErrNotReadable}}

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

// writeFrame writes m as one frame; calls must not overlap.
func writeFrame(w io.Writer, m *wireMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("opcua: worker frame %s: %w", m.Kind, err)
	}
	if len(b) > maxFrame {
		return fmt.Errorf("opcua: worker frame %s: %d bytes over the limit %d", m.Kind, len(b), maxFrame)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

// readFrame reads one frame into m; io.EOF means the stream ended cleanly
// between frames.
func readFrame(r io.Reader, m *wireMsg) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxFrame {
		return fmt.Errorf("opcua: worker frame length %d out of range 1..%d (header %q)", n, maxFrame, hdr[:])
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("opcua: worker frame of %d bytes: %w", n, errors.Join(err, io.ErrUnexpectedEOF))
	}
	*m = wireMsg{}
	if err := json.Unmarshal(b, m); err != nil {
		return fmt.Errorf("opcua: worker frame: %w", err)
	}
	return nil
}
