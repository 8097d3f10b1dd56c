package opcua

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/logging"
	"github.com/smelterio/smelter/internal/opcua/uapki"
	"github.com/smelterio/smelter/internal/opcua/uaunits"
	"github.com/smelterio/smelter/internal/telemetry"
	"github.com/smelterio/smelter/internal/units"
)

// NodeUnit is what a node says about its unit and range. Its
// EngineeringUnits are one of three things: none (NoUnits says how: the
// catalog unit applies), unusable (Err: values are bad), or an
// EUInformation (UCUM "" when the gateway cannot map it: values are bad).
type NodeUnit struct {
	Index int
	// NoUnits, when not "", says how the node gives no EngineeringUnits: no
	// such property, the server answers BadNoMatch or BadAttributeIdInvalid
	// for it, or its value is Null.
	NoUnits  string
	UnitID   int32  // EUInformation.UnitId (-1: none, or Part 8's "not available")
	UNECE    string // common code, e.g. CEL
	UCUM     string // UCUM code when known ("" otherwise)
	Display  string // EUInformation.DisplayName, clipped to maxServerText
	Min, Max float64
	HasRange bool
	// RangeErr, when not "", says why an EURange that is there cannot be
	// used (not a Range): the node's range is ignored, its unit is not.
	RangeErr string
	Err      error // the EngineeringUnits are there but unusable (not an EUInformation, a Bad read)
}

// maxServerText bounds the server's texts (DisplayName, type ids) a
// NodeUnit keeps: they reach logs and the worker wire, never verbatim.
const maxServerText = 128

// noProperty is NoUnits of a node without an EngineeringUnits property.
const noProperty = "no EngineeringUnits property"

// nodeUnit is point i's NodeUnit before its properties are read: no
// EngineeringUnits.
func nodeUnit(i int) NodeUnit { return NodeUnit{Index: i, UnitID: -1, NoUnits: noProperty} }

// limiter is the part of a session NodeUnits and Browse need.
type session struct {
	cl  *opcua.Client
	cfg *Config
	lim Limits
}

// NodeUnits reads EngineeringUnits and EURange of every point over a short
// session of its own, within the server's operation limits (the operator
// tools use it; Run reads the units of UnitFromNode points itself and hands
// them to OnUnits).
func (c *Client) NodeUnits(ctx context.Context) ([]NodeUnit, error) {
	cl, err := connect(ctx, &c.cfg, c.log, c.cfg.RequestTimeout)
	if err != nil {
		return nil, err
	}
	defer closeClient(cl)
	nodes, _, err := c.resolve(ctx, cl)
	if err != nil {
		return nil, err
	}
	lim, err := c.limits(ctx, cl)
	if err != nil {
		return nil, err
	}
	// an action point (no node, only a method) has no units; a point in a
	// namespace not on the server has an error for them
	var idx []int
	for i, p := range c.points {
		if p.NodeID != "" && !nodes.isAbsent(i) {
			idx = append(idx, i)
		}
	}
	with, err := nodes.of(idx)
	if err != nil {
		return nil, err
	}
	got, _, err := readUnits(ctx, &session{cl: cl, cfg: &c.cfg, lim: lim}, with)
	if err != nil {
		return nil, err
	}
	out := make([]NodeUnit, nodes.len())
	for i := range out {
		out[i] = nodeUnit(i)
	}
	for j, u := range got {
		u.Index = idx[j]
		out[idx[j]] = u
	}
	for _, i := range nodes.absent {
		_, err := nodes.at(i)
		out[i].Err = fmt.Errorf("%w (%w)", &StatusError{Index: i, Status: ua.StatusCode(StatusNodeIDUnknown)}, err)
	}
	return out, nil
}

// unitProps are the property nodes of a variable's EngineeringUnits and
// EURange (nil: it has none).
type unitProps struct{ eu, rng *ua.NodeID }

// readUnits reads EngineeringUnits and EURange of nodes; out[i].Index = i,
// props[i] the property nodes it read them from.
func readUnits(ctx context.Context, s *session, nodes []*ua.NodeID) ([]NodeUnit, []unitProps, error) {
	byName, err := s.properties(ctx, nodes)
	if err != nil {
		return nil, nil, err
	}
	out := make([]NodeUnit, len(nodes))
	props := make([]unitProps, len(nodes))
	for i := range out {
		out[i] = nodeUnit(i)
	}
	var reqs []*ua.NodeID
	var dest []func(*ua.DataValue)
	for i := range nodes {
		if p := byName[i]["EngineeringUnits"]; p != nil {
			props[i].eu = p
			reqs = append(reqs, p)
			dest = append(dest, func(dv *ua.DataValue) { out[i].setEU(dv) })
		}
		if p := byName[i]["EURange"]; p != nil {
			props[i].rng = p
			reqs = append(reqs, p)
			dest = append(dest, func(dv *ua.DataValue) { out[i].setRange(dv) })
		}
	}
	vals, err := s.read(ctx, reqs, ua.AttributeIDValue)
	if err != nil {
		return nil, nil, err
	}
	for j, dv := range vals {
		dest[j](dv)
	}
	return out, props, nil
}

// setEU takes an EngineeringUnits property's value. BadNoMatch or
// BadAttributeIdInvalid (the server says the property is not there) and a
// Null value are no EngineeringUnits (NoUnits); any other Bad status and a
// value that is not an EUInformation are unusable (Err). An EUInformation's
// UnitId maps to UCUM when it is a UNECE code of the table; otherwise (-1,
// "not available" in Part 8, or a code the table lacks) its DisplayName
// does when it is a UCUM code or a known alias; otherwise UCUM stays "".
func (u *NodeUnit) setEU(dv *ua.DataValue) {
	u.NoUnits, u.Err, u.UnitID, u.UNECE, u.UCUM, u.Display = "", nil, -1, "", "", ""
	if dv == nil {
		u.Err = errors.New("EngineeringUnits: no result")
		return
	}
	if code := uint32(dv.Status) & 0xFFFF0000; code == uint32(ua.StatusBadNoMatch) || code == uint32(ua.StatusBadAttributeIDInvalid) {
		u.NoUnits = "EngineeringUnits read " + statusName(code)
		return
	}
	if dv.Status>>30 == 2 {
		u.Err = fmt.Errorf("EngineeringUnits: read %s", statusName(uint32(dv.Status)))
		return
	}
	if dv.Value == nil || dv.Value.Value() == nil {
		u.NoUnits = "EngineeringUnits is Null"
		return
	}
	eo, ok := dv.Value.Value().(*ua.ExtensionObject)
	if !ok {
		what := strings.TrimPrefix(dv.Value.Type().String(), "TypeID")
		if dv.Value.ArrayLength() > 0 || dv.Value.Has(ua.VariantArrayValues) {
			what += " array"
		}
		u.Err = fmt.Errorf("EngineeringUnits: a %s, not an EUInformation", what)
		return
	}
	eu, ok := eo.Value.(*ua.EUInformation)
	if !ok || eu == nil {
		typ := "?"
		if eo != nil && eo.TypeID != nil {
			typ = logging.Clip(eo.TypeID.String(), maxServerText)
		}
		u.Err = fmt.Errorf("EngineeringUnits: an ExtensionObject of type %s, not an EUInformation", typ)
		return
	}
	u.UnitID = eu.UnitID
	u.UNECE = uaunits.Code(eu.UnitID)
	display := ""
	if eu.DisplayName != nil {
		display = eu.DisplayName.Text
	}
	u.Display = logging.Clip(display, maxServerText)
	if ucum, ok := uaunits.UCUM(eu.UnitID); ok {
		u.UCUM = ucum
	} else if canon, ok := units.Canonical(display); ok && canon != "" {
		u.UCUM = canon // a display name that is a unit or a known alias (°C -> Cel)
	}
}

func (u *NodeUnit) setRange(dv *ua.DataValue) {
	rg, ok := extObj[*ua.Range](dv)
	if !ok {
		u.RangeErr = fmt.Sprintf("EURange: not a Range (status %v)", statusOf(dv))
		return
	}
	u.Min, u.Max, u.HasRange = rg.Low, rg.High, true
}

func statusOf(dv *ua.DataValue) string {
	if dv == nil {
		return "missing"
	}
	return statusHex(uint32(dv.Status))
}

func extObj[T any](dv *ua.DataValue) (T, bool) {
	var zero T
	if dv == nil || dv.Value == nil || dv.Status>>30 == 2 {
		return zero, false
	}
	eo, ok := dv.Value.Value().(*ua.ExtensionObject)
	if !ok || eo == nil {
		return zero, false
	}
	v, ok := eo.Value.(T)
	return v, ok
}

// propertiesOf is the Browse of node's HasProperty references.
func propertiesOf(node *ua.NodeID) *ua.BrowseDescription {
	return &ua.BrowseDescription{NodeID: node, BrowseDirection: ua.BrowseDirectionForward,
		ReferenceTypeID: ua.NewNumericNodeID(0, id.HasProperty), IncludeSubtypes: true,
		NodeClassMask: uint32(ua.NodeClassVariable), ResultMask: uint32(ua.BrowseResultMaskAll)}
}

// properties browses the HasProperty references of nodes (batched).
func (s *session) properties(ctx context.Context, nodes []*ua.NodeID) ([]map[string]*ua.NodeID, error) {
	descs := make([]*ua.BrowseDescription, len(nodes))
	for i, n := range nodes {
		descs[i] = propertiesOf(n)
	}
	refs, err := s.browse(ctx, descs)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]*ua.NodeID, len(nodes))
	for i, rs := range refs {
		out[i] = map[string]*ua.NodeID{}
		for _, r := range rs {
			if r.BrowseName != nil && r.NodeID != nil {
				out[i][r.BrowseName.Name] = r.NodeID.NodeID
			}
		}
	}
	return out, nil
}

// browse runs Browse (and BrowseNext for continuation points) in batches
// within MaxNodesPerBrowse and returns the references per description.
func (s *session) browse(ctx context.Context, descs []*ua.BrowseDescription) ([][]*ua.ReferenceDescription, error) {
	out := make([][]*ua.ReferenceDescription, len(descs))
	batch := int(s.lim.MaxNodesPerBrowse)
	for start := 0; start < len(descs); start += batch {
		end := min(start+batch, len(descs))
		bctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		resp, err := s.cl.Browse(bctx, &ua.BrowseRequest{View: &ua.ViewDescription{ViewID: ua.NewTwoByteNodeID(0)},
			RequestedMaxReferencesPerNode: 1000, NodesToBrowse: descs[start:end]})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("opcua: browse %d nodes: %w", end-start, err)
		}
		type pending struct {
			i  int
			cp []byte
		}
		var cps []pending
		for j, r := range resp.Results {
			if start+j >= end || r == nil || r.StatusCode>>30 == 2 {
				continue
			}
			out[start+j] = append(out[start+j], r.References...)
			if len(r.ContinuationPoint) > 0 {
				cps = append(cps, pending{start + j, r.ContinuationPoint})
			}
		}
		for len(cps) > 0 {
			part := cps[:min(batch, len(cps))]
			cps = cps[len(part):]
			req := &ua.BrowseNextRequest{}
			for _, p := range part {
				req.ContinuationPoints = append(req.ContinuationPoints, p.cp)
			}
			bctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
			nresp, err := s.cl.BrowseNext(bctx, req)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("opcua: browse next: %w", err)
			}
			for j, r := range nresp.Results {
				if j >= len(part) || r == nil || r.StatusCode>>30 == 2 {
					continue
				}
				out[part[j].i] = append(out[part[j].i], r.References...)
				if len(r.ContinuationPoint) > 0 {
					cps = append(cps, pending{part[j].i, r.ContinuationPoint})
				}
			}
		}
	}
	return out, nil
}

// read reads one attribute of nodes in batches within MaxNodesPerRead.
func (s *session) read(ctx context.Context, nodes []*ua.NodeID, attr ua.AttributeID) ([]*ua.DataValue, error) {
	out := make([]*ua.DataValue, 0, len(nodes))
	batch := int(s.lim.MaxNodesPerRead)
	for start := 0; start < len(nodes); start += batch {
		end := min(start+batch, len(nodes))
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
		for _, n := range nodes[start:end] {
			req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: n, AttributeID: attr})
		}
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		resp, err := s.cl.Read(rctx, req)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("opcua: read %d nodes: %w", end-start, err)
		}
		res := resp.Results
		for len(res) < end-start {
			res = append(res, nil)
		}
		out = append(out, res[:end-start]...)
	}
	return out, nil
}

// BrowseOptions tune Browse.
type BrowseOptions struct {
	Root        string    // node id to start from (default i=85, the Objects folder)
	MaxDepth    int       // levels below Root (default 6)
	IncludeNS0  bool      // also walk namespace 0 nodes below Root (the Server object and friends)
	WriteConfig io.Writer // when set, receives a ready-to-edit device point list in the gateway config format
	// Class is the catalog class written into the generated config
	// (default generic). With a class, points whose name is one of the
	// class's signals get their EURange converted into the catalog unit
	// and a note when the node's unit does not convert to it.
	Class string
}

type variable struct {
	node    *ua.NodeID
	path    []string
	parent  string // browse name of the enclosing object
	props   map[string]*ua.NodeID
	dtype   string
	value   string
	status  uint32
	unit    NodeUnit
	hasUnit bool
}

// Browse walks the address space of endpoint (overriding cfg.Endpoint when
// not empty) and prints every variable with node id, data type, unit and
// current value. All requests stay within the server's operation limits.
func Browse(ctx context.Context, endpoint string, cfg Config, w io.Writer, opts BrowseOptions) error {
	var class *catalog.Class
	if opts.Class != "" && opts.Class != "generic" {
		cl, ok := catalog.Default().Class(opts.Class)
		if !ok {
			return fmt.Errorf("opcua: class %q is not in the catalog (known: %s)", opts.Class, strings.Join(catalog.Default().ClassNames(), ", "))
		}
		class = cl
	}
	if endpoint != "" {
		cfg.Endpoint = endpoint
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("opcua: browse: %w", err)
	}
	if opts.Root == "" {
		opts.Root = "i=85"
	}
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = 6
	}
	root, err := ua.ParseNodeID(opts.Root)
	if err != nil {
		return fmt.Errorf("opcua: browse root %q: %w", opts.Root, err)
	}
	log := slog.New(slog.DiscardHandler)
	probe := &Client{cfg: cfg, log: log}
	cl, err := connect(ctx, &cfg, log, cfg.RequestTimeout)
	if err != nil {
		return err
	}
	defer closeClient(cl)
	lim, err := probe.limits(ctx, cl)
	if err != nil {
		return err
	}
	s := &session{cl: cl, cfg: &cfg, lim: lim}

	type item struct {
		node *ua.NodeID
		path []string
		v    *variable
	}
	var vars []*variable
	seen := map[string]bool{root.String(): true}
	level := []item{{node: root}}
	for depth := 0; depth < opts.MaxDepth && len(level) > 0; depth++ {
		descs := make([]*ua.BrowseDescription, len(level))
		for i, it := range level {
			descs[i] = &ua.BrowseDescription{NodeID: it.node, BrowseDirection: ua.BrowseDirectionForward,
				ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences), IncludeSubtypes: true,
				NodeClassMask: uint32(ua.NodeClassObject | ua.NodeClassVariable), ResultMask: uint32(ua.BrowseResultMaskAll)}
		}
		refs, err := s.browse(ctx, descs)
		if err != nil {
			return err
		}
		var next []item
		for i, rs := range refs {
			parent := level[i]
			for _, r := range rs {
				if r.NodeID == nil || r.NodeID.NodeID == nil || r.BrowseName == nil {
					continue
				}
				n := r.NodeID.NodeID
				if r.ReferenceTypeID != nil && r.ReferenceTypeID.IntID() == id.HasProperty && r.ReferenceTypeID.Namespace() == 0 {
					if parent.v != nil {
						parent.v.props[r.BrowseName.Name] = n
					}
					continue
				}
				if seen[n.String()] || (n.Namespace() == 0 && !opts.IncludeNS0) {
					continue
				}
				seen[n.String()] = true
				path := append(append([]string(nil), parent.path...), r.BrowseName.Name)
				it := item{node: n, path: path}
				if r.NodeClass == ua.NodeClassVariable {
					v := &variable{node: n, path: path, props: map[string]*ua.NodeID{}}
					if len(parent.path) > 0 {
						v.parent = parent.path[len(parent.path)-1]
					}
					vars = append(vars, v)
					it.v = v
				}
				next = append(next, it)
			}
		}
		level = next
	}
	if err := s.describe(ctx, vars); err != nil {
		return err
	}
	sort.SliceStable(vars, func(i, j int) bool { return strings.Join(vars[i].path, "/") < strings.Join(vars[j].path, "/") })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE ID\tPATH\tTYPE\tUNIT\tVALUE\tSTATUS")
	for _, v := range vars {
		unit := "-"
		if v.hasUnit {
			unit = v.unit.UCUM
			if unit == "" {
				unit = v.unit.Display + "?"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.node, strings.Join(v.path, "/"), v.dtype, unit, v.value, statusName(v.status))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d variables (limits: %d nodes per read, %d per browse)\n", len(vars), lim.MaxNodesPerRead, lim.MaxNodesPerBrowse)
	if opts.WriteConfig != nil {
		// node ids are written nsu=<uri>;: an ns=<index> names another
		// node once the server orders its namespaces differently (F3)
		rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
		ns, err := cl.NamespaceArray(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("opcua: browse: read namespace array: %w", err)
		}
		return writeConfig(opts.WriteConfig, &cfg, class, vars, ns)
	}
	return nil
}

// describe reads data type, value and units of the variables.
func (s *session) describe(ctx context.Context, vars []*variable) error {
	nodes := make([]*ua.NodeID, len(vars))
	for i, v := range vars {
		nodes[i] = v.node
	}
	types, err := s.read(ctx, nodes, ua.AttributeIDDataType)
	if err != nil {
		return err
	}
	vals, err := s.read(ctx, nodes, ua.AttributeIDValue)
	if err != nil {
		return err
	}
	var propNodes []*ua.NodeID
	var dest []func(*ua.DataValue)
	for i, v := range vars {
		v.dtype = dataTypeName(types[i])
		v.value, v.status = valueString(vals[i])
		if p := v.props["EngineeringUnits"]; p != nil {
			propNodes = append(propNodes, p)
			dest = append(dest, func(dv *ua.DataValue) {
				v.unit.setEU(dv)
				v.hasUnit = v.unit.Err == nil && v.unit.NoUnits == ""
			})
		}
		if p := v.props["EURange"]; p != nil {
			propNodes = append(propNodes, p)
			dest = append(dest, func(dv *ua.DataValue) {
				var r NodeUnit
				if r.setRange(dv); r.HasRange {
					v.unit.Min, v.unit.Max, v.unit.HasRange = r.Min, r.Max, true
				}
			})
		}
	}
	props, err := s.read(ctx, propNodes, ua.AttributeIDValue)
	if err != nil {
		return err
	}
	for i, dv := range props {
		dest[i](dv)
	}
	return nil
}

func dataTypeName(dv *ua.DataValue) string {
	if dv == nil || dv.Value == nil {
		return "?"
	}
	var n *ua.NodeID
	switch x := dv.Value.Value().(type) {
	case *ua.NodeID:
		n = x
	case *ua.ExpandedNodeID:
		if x != nil {
			n = x.NodeID
		}
	}
	if n == nil {
		return "?"
	}
	if n.Namespace() == 0 && n.Type() == ua.NodeIDTypeNumeric || n.Namespace() == 0 && n.Type() == ua.NodeIDTypeTwoByte || n.Namespace() == 0 && n.Type() == ua.NodeIDTypeFourByte {
		if name, ok := dataTypeNames[n.IntID()]; ok {
			return name
		}
	}
	return n.String()
}

// dataTypeNames names the standard data types a variable's DataType
// usually is (namespace 0); any other prints as its node id. Not gopcua's
// id.Name: that names every standard node, and a binary that calls it
// links seven tables of ~20,000 names that package initialisation builds
// in every process, the gateway and each session worker (~1 MB of heap
// each and ~1.8 MB of binary, issue 17); unreferenced, the linker drops
// them. TestBinaryLeavesOutGopcuaNameTables.
var dataTypeNames = map[uint32]string{
	id.Boolean: "Boolean", id.SByte: "SByte", id.Byte: "Byte", id.Int16: "Int16", id.UInt16: "UInt16",
	id.Int32: "Int32", id.UInt32: "UInt32", id.Int64: "Int64", id.UInt64: "UInt64", id.Float: "Float",
	id.Double: "Double", id.String: "String", id.DateTime: "DateTime", id.GUID: "GUID", id.ByteString: "ByteString",
	id.XMLElement: "XMLElement", id.NodeID: "NodeID", id.ExpandedNodeID: "ExpandedNodeID", id.StatusCode: "StatusCode",
	id.QualifiedName: "QualifiedName", id.LocalizedText: "LocalizedText", id.Structure: "Structure",
	id.DataValue: "DataValue", id.BaseDataType: "BaseDataType", id.DiagnosticInfo: "DiagnosticInfo",
	id.Number: "Number", id.Integer: "Integer", id.UInteger: "UInteger", id.Enumeration: "Enumeration",
	id.Decimal: "Decimal", id.Image: "Image", id.ImageBMP: "ImageBMP", id.ImageGIF: "ImageGIF", id.ImageJPG: "ImageJPG",
	id.ImagePNG: "ImagePNG", id.Duration: "Duration", id.UtcTime: "UtcTime", id.LocaleID: "LocaleID",
	id.NodeClass: "NodeClass", id.Argument: "Argument", id.ServerState: "ServerState", id.Range: "Range",
	id.EUInformation: "EUInformation", id.TimeZoneDataType: "TimeZoneDataType",
}

func valueString(dv *ua.DataValue) (string, uint32) {
	if dv == nil {
		return "", statusTypeMismatch
	}
	st := uint32(dv.Status)
	if dv.Value == nil || dv.EncodingMask&ua.DataValueValue == 0 {
		return "", st
	}
	switch x := dv.Value.Value().(type) {
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), st
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), st
	case string:
		return strconv.Quote(x), st
	case *ua.LocalizedText:
		if x != nil {
			return strconv.Quote(x.Text), st
		}
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), st
	case *ua.ExtensionObject:
		if x != nil && x.Value != nil {
			return fmt.Sprintf("%T", x.Value), st
		}
	}
	s := fmt.Sprint(dv.Value.Value())
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s, st
}

func statusName(code uint32) string {
	switch Quality(code) {
	case 0:
		if code == 0 {
			return "Good"
		}
	}
	s := ua.StatusCode(code).Error()
	if i := strings.LastIndex(s, " Status"); i >= 0 {
		// gopcua's text is "<description>. StatusName (0x...)"
		f := strings.Fields(s[i+1:])
		if len(f) > 0 {
			return strings.TrimPrefix(f[0], "Status")
		}
	}
	return statusHex(code)
}

var notToken = regexp.MustCompile(`[^a-z0-9_]+`)

// signalName turns a browse name into a snake_case signal name.
func signalName(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 && s[i-1] >= 'a' && s[i-1] <= 'z' {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	out := strings.Trim(notToken.ReplaceAllString(b.String(), "_"), "_")
	if out == "" {
		return "signal"
	}
	if len(out) > telemetry.MaxSignalLen { // the schema's bound: collectors refuse longer names
		out = strings.TrimRight(out[:telemetry.MaxSignalLen], "_")
	}
	return out
}

var notIDChar = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// deviceID turns a browse name into an asset id token.
func deviceID(s string) string {
	out := strings.Trim(notIDChar.ReplaceAllString(s, "_"), "_")
	if out == "" {
		return "device"
	}
	if len(out) > 64 {
		out = out[:64]
	}
	return out
}

// writeConfig writes a device list grouping variables by their object.
//
// Each numeric point gets the unit its node reports (EngineeringUnits,
// UNECE code mapped to UCUM, or its display name when that is a known unit
// or alias) as `unit`: the device's unit, which the gateway converts to the
// catalog unit of the signal. Its EURange becomes `min`/`max`, expressed in
// the unit the reading is published in: the catalog unit when the class
// has the signal, the device's unit otherwise. A node without a usable unit
// gets the placeholder unit "?" (gwconfig.UnitPlaceholder) under a comment
// asking for the device's unit: the written configuration does not load
// until it is set, rather than load and publish every reading bad
// 0x80890000; a node without EngineeringUnits whose signal has a catalog
// unit is read in that unit, said in a comment.
func writeConfig(w io.Writer, cfg *Config, class *catalog.Class, vars []*variable, ns []string) error {
	byDev := map[string][]*variable{}
	var order []string
	for _, v := range vars {
		if v.dtype != "Double" && v.dtype != "Float" && !strings.HasPrefix(v.dtype, "Int") && !strings.HasPrefix(v.dtype, "UInt") &&
			v.dtype != "Boolean" && v.dtype != "Byte" && v.dtype != "SByte" && v.dtype != "String" {
			continue
		}
		dev := v.parent
		if dev == "" {
			dev = "device"
		}
		if _, ok := byDev[dev]; !ok {
			order = append(order, dev)
		}
		byDev[dev] = append(byDev[dev], v)
	}
	className := "generic"
	if class != nil {
		className = class.Name
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by smelter-gateway browse %s on %s.\n", cfg.Endpoint, time.Now().UTC().Format(time.RFC3339))
	b.WriteString("# Rename signals to the catalog's names of the class; each unit is the device's (from its\n")
	b.WriteString("# EngineeringUnits) and the gateway converts it to the catalog unit; min/max are in the published unit.\n")
	b.WriteString("devices:\n")
	for _, dev := range order {
		fmt.Fprintf(&b, "  - id: %s\n    class: %s\n    opcua:\n      endpoint: %s\n      security_policy: %s\n      security_mode: %s\n",
			deviceID(dev), className, cfg.Endpoint, cfg.SecurityPolicy, cfg.SecurityMode)
		if cfg.Auth.Mode != "anonymous" {
			fmt.Fprintf(&b, "      auth: {mode: %s}\n", cfg.Auth.Mode)
		}
		b.WriteString("    points:\n")
		used := map[string]int{}
		for _, v := range byDev[dev] {
			name := signalName(v.path[len(v.path)-1])
			used[name]++
			if used[name] > 1 {
				name += "_" + strconv.Itoa(used[name])
			}
			fmt.Fprintf(&b, "      - signal: %s\n        node_id: %q\n", name, ExpandedID(v.node, ns))
			writePointUnit(&b, v, class, name)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writePointUnit writes the unit and range lines of one generated point.
func writePointUnit(b *strings.Builder, v *variable, class *catalog.Class, name string) {
	if v.dtype == "Boolean" || v.dtype == "String" {
		return
	}
	var sig *catalog.Signal
	if class != nil {
		sig = class.Signals[name]
		if sig == nil && !class.Open {
			fmt.Fprintf(b, "        # not a %s signal: rename it to one of %s\n", class.Name, strings.Join(class.SignalNames(), ", "))
		}
	}
	// A node whose unit the gateway cannot take from it (and, for no
	// EngineeringUnits at all, a signal without a catalog unit to read it
	// in) would publish every reading bad 0x80890000: the point gets the
	// placeholder unit "?", which validation refuses naming the line,
	// until the user sets the unit the device reports in (attack F6).
	placeholder := func(why string) {
		fmt.Fprintf(b, "        # SET THE UNIT: %s; give the unit the device reports in (UCUM: Cel, kPa, m3/h, ...)\n", why)
		fmt.Fprintf(b, "        unit: %q\n", gwconfig.UnitPlaceholder)
	}
	switch {
	case v.unit.Err != nil:
		placeholder(fmt.Sprintf("the node's EngineeringUnits cannot be used (%v)", v.unit.Err))
		return
	case !v.hasUnit && (sig == nil || sig.Unit == ""):
		placeholder("the node has no EngineeringUnits and the signal no catalog unit")
		return
	case !v.hasUnit:
		fmt.Fprintf(b, "        # the node has no EngineeringUnits: its values are taken in the catalog unit %s of %s.%s; set unit: if the device reports another\n",
			sig.Unit, class.Name, name)
		return
	case v.unit.UCUM == "":
		placeholder(fmt.Sprintf("the device reports %q, UNECE %s, with no UCUM equivalent known", v.unit.Display, v.unit.UNECE))
		return
	}
	fmt.Fprintf(b, "        unit: %q\n", v.unit.UCUM)
	conv := units.Identity
	if sig != nil && sig.Unit != "" {
		c, err := units.Convert(v.unit.UCUM, sig.Unit)
		if err != nil {
			fmt.Fprintf(b, "        # the device's unit %s does not convert to the catalog unit %s of %s.%s: check the node or the signal\n",
				v.unit.UCUM, sig.Unit, class.Name, name)
			return
		}
		if !c.IsIdentity() {
			fmt.Fprintf(b, "        # published in the catalog unit %s\n", sig.Unit)
		}
		conv = c
	}
	if v.unit.HasRange {
		fmt.Fprintf(b, "        min: %s\n        max: %s\n", fmtFloat(conv.Apply(v.unit.Min)), fmtFloat(conv.Apply(v.unit.Max)))
	}
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', 10, 64) }

// EndpointInfo is one endpoint a server offers.
type EndpointInfo struct {
	URL            string
	SecurityPolicy string // short name (None, Basic256Sha256, ...)
	SecurityMode   string // None, Sign, SignAndEncrypt
	SecurityLevel  uint8
	UserTokens     []string // anonymous, username (Basic256Sha256), certificate (...)
	Thumbprint     string   // of the server certificate, "" when none
	Certificate    []byte   // DER
}

// Endpoints asks the server which endpoints it offers (GetEndpoints over an
// unsecured channel, as OPC UA discovery works).
func Endpoints(ctx context.Context, endpoint string) ([]EndpointInfo, error) {
	cfg := Config{Endpoint: endpoint}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("opcua: %w", err)
	}
	gctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	eps, err := opcua.GetEndpoints(gctx, endpoint, dialOptions(&cfg)...)
	if err != nil {
		return nil, fmt.Errorf("opcua: get endpoints of %s: %w", endpoint, err)
	}
	out := make([]EndpointInfo, 0, len(eps))
	for _, ep := range eps {
		e := EndpointInfo{URL: ep.EndpointURL, SecurityPolicy: policyName(ep.SecurityPolicyURI), SecurityMode: modeName(ep.SecurityMode),
			SecurityLevel: ep.SecurityLevel, Certificate: ep.ServerCertificate}
		if len(ep.ServerCertificate) > 0 {
			e.Thumbprint = uapki.Thumbprint(ep.ServerCertificate)
		}
		for _, t := range ep.UserIdentityTokens {
			name := tokenName(t.TokenType)
			if t.SecurityPolicyURI != "" && t.SecurityPolicyURI != ua.SecurityPolicyURINone {
				name += " (" + policyName(t.SecurityPolicyURI) + ")"
			}
			e.UserTokens = append(e.UserTokens, name)
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].SecurityLevel < out[j].SecurityLevel })
	return out, nil
}

// WriteEndpoints prints endpoints as a table.
func WriteEndpoints(w io.Writer, eps []EndpointInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tMODE\tLEVEL\tLOGINS\tURL\tCERT THUMBPRINT")
	for _, e := range eps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", e.SecurityPolicy, e.SecurityMode, e.SecurityLevel, strings.Join(e.UserTokens, ", "), e.URL, e.Thumbprint)
	}
	return tw.Flush()
}
