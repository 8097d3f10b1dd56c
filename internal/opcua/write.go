package opcua

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/gateway/driver"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

var _ driver.Writer = (*Client)(nil)

// ErrNoSession: a point was read or written while the client has no
// session (connecting, reconnecting): commands fail rather than wait.
var ErrNoSession = errors.New("opcua: no session")

// ErrTypeMismatch: a value does not fit the node's DataType (a fraction
// for an integer node, out of the type's range, a type the driver does not
// write); refused before anything is written.
var ErrTypeMismatch = errors.New("opcua: value does not fit the node's data type")

// live is the session commands use, set while Run holds one.
type live struct {
	cl    *opcua.Client
	nodes []*ua.NodeID
}

func (c *Client) liveSession(idx int) (*live, error) {
	s := c.live.Load()
	if s == nil {
		return nil, fmt.Errorf("opcua: device %s: %w", c.id, ErrNoSession)
	}
	if idx < 0 || idx >= len(s.nodes) {
		return nil, fmt.Errorf("opcua: device %s has no point %d", c.id, idx)
	}
	return s, nil
}

// ReadPoint reads point idx's Value attribute now, on the current session
// (driver.Writer). A Bad status is returned as *StatusError.
func (c *Client) ReadPoint(ctx context.Context, idx int) (sample.Sample, error) {
	s, err := c.liveSession(idx)
	if err != nil {
		return sample.Sample{Index: idx, Quality: telemetry.QualityBad}, err
	}
	res, err := s.cl.Read(ctx, &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth,
		NodesToRead: []*ua.ReadValueID{{NodeID: s.nodes[idx], AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		return sample.Sample{Index: idx, Quality: telemetry.QualityBad}, fmt.Errorf("opcua: read %s: %w", s.nodes[idx], err)
	}
	if len(res.Results) != 1 {
		return sample.Sample{Index: idx, Quality: telemetry.QualityBad}, fmt.Errorf("opcua: read %s: %d results", s.nodes[idx], len(res.Results))
	}
	smp := toSample(idx, res.Results[0])
	if smp.Quality == telemetry.QualityBad {
		return smp, &StatusError{Index: idx, Status: ua.StatusCode(smp.Status)}
	}
	return smp, nil
}

// WritePoint writes v to point idx's Value attribute with the node's
// DataType (driver.Writer): it reads the DataType attribute first and
// converts (Double, Float, the signed and unsigned integers, Boolean); a
// value that does not fit is ErrTypeMismatch before anything is written.
// A Bad result is *StatusError (errors.Is with the ua.StatusCode). It
// returns v as the node's type holds it.
func (c *Client) WritePoint(ctx context.Context, idx int, v float64) (float64, error) {
	s, err := c.liveSession(idx)
	if err != nil {
		return 0, err
	}
	n := s.nodes[idx]
	res, err := s.cl.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: n, AttributeID: ua.AttributeIDDataType}}})
	if err != nil {
		return 0, fmt.Errorf("opcua: read data type of %s: %w", n, err)
	}
	if len(res.Results) != 1 || res.Results[0].Status != ua.StatusOK || res.Results[0].Value == nil {
		return 0, fmt.Errorf("opcua: read data type of %s: no value", n)
	}
	var dt *ua.NodeID
	switch x := res.Results[0].Value.Value().(type) {
	case *ua.NodeID:
		dt = x
	case *ua.ExpandedNodeID: // some servers (gopcua's) answer the expanded form
		dt = x.NodeID
	}
	if dt == nil {
		return 0, fmt.Errorf("opcua: data type of %s is %T, not a node id", n, res.Results[0].Value.Value())
	}
	val, held, err := convert(dt, v)
	if err != nil {
		return 0, fmt.Errorf("opcua: write %s: %w", n, err)
	}
	variant, err := ua.NewVariant(val)
	if err != nil {
		return 0, fmt.Errorf("opcua: write %s: %w", n, err)
	}
	wres, err := s.cl.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{NodeID: n, AttributeID: ua.AttributeIDValue,
		Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: variant}}}})
	if err != nil {
		return 0, fmt.Errorf("opcua: write %s: %w", n, err)
	}
	if len(wres.Results) != 1 {
		return 0, fmt.Errorf("opcua: write %s: %d results", n, len(wres.Results))
	}
	if st := wres.Results[0]; st != ua.StatusOK {
		return 0, fmt.Errorf("opcua: write %s: %w", n, &StatusError{Index: idx, Status: st})
	}
	return held, nil
}

// convert turns v into the Go value of the built-in DataType dt (OPC UA
// Part 6, 5.1.2) and the float64 that value reads back as.
func convert(dt *ua.NodeID, v float64) (any, float64, error) {
	if dt.Namespace() != 0 {
		return nil, 0, fmt.Errorf("%w: data type %s", ErrTypeMismatch, dt)
	}
	integer := func(lo, hi float64) (float64, error) {
		if v != math.Trunc(v) || v < lo || v > hi {
			return 0, fmt.Errorf("%w: %v is not an integer in %v..%v", ErrTypeMismatch, v, lo, hi)
		}
		return v, nil
	}
	switch dt.IntID() {
	case id.Double:
		return v, v, nil
	case id.Float:
		if math.Abs(v) > math.MaxFloat32 {
			return nil, 0, fmt.Errorf("%w: %v outside Float", ErrTypeMismatch, v)
		}
		return float32(v), float64(float32(v)), nil
	case id.Boolean:
		if v != 0 && v != 1 {
			return nil, 0, fmt.Errorf("%w: %v is not 0 or 1 for Boolean", ErrTypeMismatch, v)
		}
		return v == 1, v, nil
	case id.SByte:
		x, err := integer(math.MinInt8, math.MaxInt8)
		return int8(x), x, err
	case id.Byte:
		x, err := integer(0, math.MaxUint8)
		return uint8(x), x, err
	case id.Int16:
		x, err := integer(math.MinInt16, math.MaxInt16)
		return int16(x), x, err
	case id.UInt16:
		x, err := integer(0, math.MaxUint16)
		return uint16(x), x, err
	case id.Int32:
		x, err := integer(math.MinInt32, math.MaxInt32)
		return int32(x), x, err
	case id.UInt32:
		x, err := integer(0, math.MaxUint32)
		return uint32(x), x, err
	case id.Int64:
		x, err := integer(-(1 << 63), (1<<63)-1024)
		return int64(x), x, err
	case id.UInt64:
		x, err := integer(0, (1<<64)-2048)
		return uint64(x), x, err
	}
	return nil, 0, fmt.Errorf("%w: data type %s", ErrTypeMismatch, dt)
}
