package opcua

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

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

// live is the session commands use, set while Run holds one: the points'
// nodes and their methods (nil when no point calls one).
type live struct {
	cl      *opcua.Client
	nodes   *nodeTable
	methods []*methodIDs
	// kicks asks the acquisition's namespace watch for a check now: a
	// command's read or pre-read saw the NamespaceArray changed (review
	// attack-ua2 F3), as a poll read does
	kicks *nsKicks
}

// methodIDs is a point's write.method, resolved for the session.
type methodIDs struct {
	object, method *ua.NodeID
	// err: the object's or method's namespace is not on the server this
	// session (errNamespaceGone): the call is not made
	err error
}

// nsChanged asks the namespace watch of s for a check now (seen_by
// command): a command saw the server's NamespaceArray changed.
func (s *live) nsChanged() {
	if s.kicks != nil {
		kick(s.kicks.now, "command")
	}
}

func (c *Client) liveSession(idx int) (*live, error) {
	s := c.live.Load()
	if s == nil {
		return nil, fmt.Errorf("opcua: device %s: %w", c.id, ErrNoSession)
	}
	if idx < 0 || idx >= s.nodes.len() {
		return nil, fmt.Errorf("opcua: device %s has no point %d", c.id, idx)
	}
	return s, nil
}

// ReadPoint reads point idx's Value attribute now, on the current session
// (driver.Writer); with isolation process, through the device's session
// worker. A Bad status is returned as *StatusError; a point without a node
// (it only calls a method) is driver.ErrNotReadable.
func (c *Client) ReadPoint(ctx context.Context, idx int) (sample.Sample, error) {
	bad := sample.Sample{Index: idx, Quality: telemetry.QualityBad}
	if idx < 0 || idx >= len(c.points) {
		return bad, fmt.Errorf("opcua: device %s has no point %d", c.id, idx)
	}
	if c.points[idx].NodeID == "" {
		return bad, fmt.Errorf("opcua: device %s: point %d has no node_id, only write.method: %w", c.id, idx, driver.ErrNotReadable)
	}
	if w := c.wk.Load(); w != nil {
		resp, _, err := w.call(ctx, &wireReq{Op: opRead, Point: idx})
		if err != nil {
			return bad, fmt.Errorf("opcua: device %s: read point %d: %w", c.id, idx, err)
		}
		if resp.Err != nil {
			return resp.Sample.sample(), resp.Err.decode()
		}
		return resp.Sample.sample(), nil
	}
	s, err := c.liveSession(idx)
	if err != nil {
		return bad, err
	}
	n, err := s.nodes.at(idx)
	if err != nil {
		return bad, err
	}
	// a node id that names a namespace is read with the NamespaceArray
	// after it: the value counts only if its index still names the URI
	// it was resolved to (as a poll read, poller.vetNamespaces)
	reqs := []*ua.ReadValueID{{NodeID: n, AttributeID: ua.AttributeIDValue}}
	guard := s.nodes.ns != nil && namesNamespace(c.points[idx].NodeID)
	if guard {
		reqs = append(reqs, &ua.ReadValueID{NodeID: nsArrayID, AttributeID: ua.AttributeIDValue})
	}
	res, err := s.cl.Read(ctx, &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth, NodesToRead: reqs})
	if err != nil {
		return bad, fmt.Errorf("opcua: read %s: %w", n, err)
	}
	if len(res.Results) != len(reqs) {
		return bad, fmt.Errorf("opcua: read %s: %d results", n, len(res.Results))
	}
	if guard {
		if arr, ok := namespaceArray(res.Results[1]); !ok || !s.nodes.holds(arr) {
			s.nsChanged()
			bad.Status = StatusNodeIDUnknown
			return bad, fmt.Errorf("opcua: read %s: %w: the server's namespace array changed during the session (%s); not read under a stale index",
				n, errNamespaceGone, nsText(arr))
		}
	}
	smp := c.sampleAt(idx, res.Results[0], c.received())
	if smp.Quality == telemetry.QualityBad {
		return smp, &StatusError{Index: idx, Status: ua.StatusCode(smp.Status)}
	}
	return smp, nil
}

// WritePoint writes v to point idx (driver.Writer) on the current session;
// with isolation process, through the device's session worker, which
// attempts the write once: a worker that ends before it answers fails the
// write with "outcome unknown" (the write may or may not have reached the
// server) wrapping ErrWorkerExited, and so does a worker that has not
// answered when ctx ends.
//
// A point with a write.method calls that method (callMethod); any other
// writes its node's Value attribute with the node's DataType: it reads the
// DataType attribute first and converts (Double, Float, the signed and
// unsigned integers, Boolean); a value that does not fit is
// ErrTypeMismatch before anything is written. A Bad result is
// *StatusError (errors.Is with the ua.StatusCode). It returns v as the
// node's type holds it.
func (c *Client) WritePoint(ctx context.Context, idx int, v float64) (float64, error) {
	if idx < 0 || idx >= len(c.points) {
		return 0, fmt.Errorf("opcua: device %s has no point %d", c.id, idx)
	}
	if w := c.wk.Load(); w != nil {
		resp, sent, err := w.call(ctx, &wireReq{Op: opWrite, Point: idx, Value: wireFloat(v)})
		switch {
		case err != nil && sent:
			return 0, fmt.Errorf("opcua: device %s: write point %d: outcome unknown, the write may have reached the server: %w", c.id, idx, err)
		case err != nil:
			return 0, fmt.Errorf("opcua: device %s: write point %d: nothing written: %w", c.id, idx, err)
		case resp.Err != nil:
			return 0, resp.Err.decode()
		}
		return float64(resp.Held), nil
	}
	s, err := c.liveSession(idx)
	if err != nil {
		return 0, err
	}
	if err := c.vetWriteNamespaces(ctx, s, idx); err != nil {
		return 0, err
	}
	if c.points[idx].Method != nil {
		return c.callMethod(ctx, s, idx, v)
	}
	n, err := s.nodes.at(idx)
	if err != nil {
		return 0, err
	}
	dt, err := dataType(ctx, s.cl, n)
	if err != nil {
		return 0, err
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
		// no answer (timeout, connection lost): the server may have
		// applied it
		return 0, fmt.Errorf("opcua: write %s: outcome unknown: %w", n, err)
	}
	if len(wres.Results) != 1 {
		return 0, fmt.Errorf("opcua: write %s: %d results", n, len(wres.Results))
	}
	if st := wres.Results[0]; st != ua.StatusOK {
		return 0, fmt.Errorf("opcua: write %s: %w", n, &StatusError{Index: idx, Status: st})
	}
	if err := c.vetWrittenNamespaces(ctx, s, idx); err != nil {
		return 0, fmt.Errorf("opcua: write %s: %w", n, err)
	}
	return held, nil
}

// vetWriteNamespaces reads the server's NamespaceArray right before a
// write or method call of point idx whose ids name a namespace, and
// refuses it (nothing written) when an index the session reads no longer
// names the URI it was resolved to: a server that changed its namespace
// table during the session (against OPC 10000-5, 6.3.1) would take the
// write for another namespace's node. The namespace watch rebuilds the
// session's mapping within namespace_check; the command may be sent again.
func (c *Client) vetWriteNamespaces(ctx context.Context, s *live, idx int) error {
	if s.nodes.ns == nil || !c.points[idx].namesNamespace() {
		return nil
	}
	arr, err := c.readNamespaceArray(ctx, s.cl)
	if err != nil {
		return fmt.Errorf("opcua: device %s: write point %d: nothing written: %w", c.id, idx, err)
	}
	if !s.nodes.holds(arr) {
		s.nsChanged()
		return fmt.Errorf("opcua: device %s: write point %d: nothing written: %w: the server's namespace array changed during the session (%s)",
			c.id, idx, errNamespaceGone, nsText(arr))
	}
	return nil
}

// namesNamespace reports whether p's node id or a write.method id names a
// namespace (by URI or by an index above 0).
func (p *Point) namesNamespace() bool {
	return namesNamespace(p.NodeID) || p.Method != nil && (namesNamespace(p.Method.Object) || namesNamespace(p.Method.Method))
}

// vetWrittenNamespaces reads the server's NamespaceArray again after a
// write or method call of point idx the server accepted: if an index
// no longer names its URI, the namespace table changed between the
// check before it (vetWriteNamespaces) and now, and the write may have
// landed on another namespace's node (a server that breaks OPC 10000-5,
// 6.3.1 within that round trip; review attack-ua2 F4): it fails as
// "outcome unknown", wrapping errNamespaceGone, never as written. A
// failed read of the array leaves the write's result as it was (the
// check before it held).
func (c *Client) vetWrittenNamespaces(ctx context.Context, s *live, idx int) error {
	if s.nodes.ns == nil || !c.points[idx].namesNamespace() {
		return nil
	}
	arr, err := c.readNamespaceArray(ctx, s.cl)
	if err != nil || s.nodes.holds(arr) {
		return nil //nolint:nilerr // the check before the write held; this one only catches a change
	}
	s.nsChanged()
	return fmt.Errorf("outcome unknown: %w: the server's namespace array changed around the write (%s); it may have reached another namespace's node",
		errNamespaceGone, nsText(arr))
}

// dataType reads node n's DataType attribute.
func dataType(ctx context.Context, cl *opcua.Client, n *ua.NodeID) (*ua.NodeID, error) {
	res, err := cl.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: n, AttributeID: ua.AttributeIDDataType}}})
	if err != nil {
		return nil, fmt.Errorf("opcua: read data type of %s: %w", n, err)
	}
	if len(res.Results) != 1 || res.Results[0].Status != ua.StatusOK || res.Results[0].Value == nil {
		return nil, fmt.Errorf("opcua: read data type of %s: no value", n)
	}
	switch x := res.Results[0].Value.Value().(type) {
	case *ua.NodeID:
		return x, nil
	case *ua.ExpandedNodeID: // some servers (gopcua's) answer the expanded form
		return x.NodeID, nil
	}
	return nil, fmt.Errorf("opcua: data type of %s is %T, not a node id", n, res.Results[0].Value.Value())
}

// callMethod calls point idx's write.method with the Call service. With
// argument value it reads the method's InputArguments property first and
// converts v to the DataType of its one (scalar) argument, like a Write;
// with argument none the method must take no argument and v only
// triggers the call. A method whose arguments do not match is
// ErrTypeMismatch before anything is called. A Bad or Uncertain result of
// the call or of its input argument is *StatusError naming the status
// (BadInvalidArgument, BadOutOfRange, BadUserAccessDenied ...). It returns
// v as the argument's type holds it.
func (c *Client) callMethod(ctx context.Context, s *live, idx int, v float64) (float64, error) {
	m := c.points[idx].Method
	ids := s.methods[idx]
	if ids.err != nil {
		return 0, fmt.Errorf("opcua: call: %w", ids.err)
	}
	what := fmt.Sprintf("opcua: call %s on %s", ids.method, ids.object)
	args, err := inputArguments(ctx, s.cl, &c.cfg, ids.method)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	in := []*ua.Variant{}
	held := v
	switch m.Argument {
	case ArgNone:
		if len(args) != 0 {
			return 0, fmt.Errorf("%s: %w: the method takes %d input arguments, write.method.argument none calls it with none", what, ErrTypeMismatch, len(args))
		}
	default:
		if len(args) != 1 {
			return 0, fmt.Errorf("%s: %w: the method takes %d input arguments, write.method.argument value calls it with one", what, ErrTypeMismatch, len(args))
		}
		a := args[0]
		if a.ValueRank != -1 || a.DataType == nil {
			return 0, fmt.Errorf("%s: %w: input argument %q is not a scalar (value rank %d)", what, ErrTypeMismatch, a.Name, a.ValueRank)
		}
		val, h, err := convert(a.DataType, v)
		if err != nil {
			return 0, fmt.Errorf("%s: input argument %q: %w", what, a.Name, err)
		}
		variant, err := ua.NewVariant(val)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		in, held = []*ua.Variant{variant}, h
	}
	res, err := s.cl.Call(ctx, &ua.CallMethodRequest{ObjectID: ids.object, MethodID: ids.method, InputArguments: in})
	if err != nil {
		return 0, fmt.Errorf("%s: outcome unknown: %w", what, err)
	}
	var argBad []string
	var first ua.StatusCode
	for i, st := range res.InputArgumentResults {
		if st>>30 != 0 {
			argBad = append(argBad, fmt.Sprintf("input argument %d: %s", i, statusName(uint32(st))))
			if first == 0 {
				first = st
			}
		}
	}
	st := res.StatusCode
	switch {
	case st>>30 == 0 && len(argBad) == 0:
		if err := c.vetWrittenNamespaces(ctx, s, idx); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		return held, nil
	case st>>30 == 0 || (st == ua.StatusBadInvalidArgument && first != 0):
		// the argument's own status says more than BadInvalidArgument
		return 0, fmt.Errorf("%s: %s (%s): %w", what, statusName(uint32(st)), strings.Join(argBad, ", "), &StatusError{Index: idx, Status: first})
	case len(argBad) > 0:
		return 0, fmt.Errorf("%s (%s): %w", what, strings.Join(argBad, ", "), &StatusError{Index: idx, Status: st})
	}
	return 0, fmt.Errorf("%s: %w", what, &StatusError{Index: idx, Status: st})
}

// inputArguments reads method's InputArguments property (OPC UA Part 3,
// 5.7): nil when the method has none.
func inputArguments(ctx context.Context, cl *opcua.Client, cfg *Config, method *ua.NodeID) ([]*ua.Argument, error) {
	props, err := (&session{cl: cl, cfg: cfg, lim: Limits{MaxNodesPerBrowse: 1}}).properties(ctx, []*ua.NodeID{method})
	if err != nil {
		return nil, fmt.Errorf("browse the method's properties: %w", err)
	}
	p := props[0]["InputArguments"]
	if p == nil {
		return nil, nil
	}
	res, err := cl.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: p, AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		return nil, fmt.Errorf("read InputArguments: %w", err)
	}
	if len(res.Results) != 1 || res.Results[0].Status != ua.StatusOK || res.Results[0].Value == nil {
		return nil, fmt.Errorf("read InputArguments: no value")
	}
	var out []*ua.Argument
	switch x := res.Results[0].Value.Value().(type) {
	case []*ua.ExtensionObject:
		for _, eo := range x {
			a, ok := eo.Value.(*ua.Argument)
			if !ok {
				return nil, fmt.Errorf("InputArguments holds %T, not Argument", eo.Value)
			}
			out = append(out, a)
		}
	case *ua.ExtensionObject:
		a, ok := x.Value.(*ua.Argument)
		if !ok {
			return nil, fmt.Errorf("InputArguments holds %T, not Argument", x.Value)
		}
		out = append(out, a)
	case nil:
	default:
		return nil, fmt.Errorf("InputArguments is %T, not an Argument array", x)
	}
	return out, nil
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
