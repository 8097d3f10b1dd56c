package opcuafront

import (
	"fmt"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uasc"
)

// Methods (the Call service): every writable signal of an asset (its
// source's setpoints) has a method set_<signal> on the asset's folder,
// node id ns=<ns>;s=<asset>.set_<signal>, taking one Double input
// argument "value" in the signal's canonical unit and applying it like a
// write of the node (through the WriteFunc); an Action of the asset is a
// method ns=<ns>;s=<asset>.<name> that takes no argument.
//
// Answers: a value the writer refuses is BadInvalidArgument with the
// writer's status as the input argument's result (BadOutOfRange); a wrong
// argument count BadArgumentsMissing / BadTooManyArguments; a wrong type
// BadInvalidArgument with BadTypeMismatch; a method that is not the
// object's BadMethodInvalid; an unknown object BadNodeIdUnknown.

// Action is a method without arguments on an asset's folder (a fault
// acknowledgement, a reset): Do runs on the server's goroutine for each
// call and returns its status.
type Action struct {
	Name string
	Do   func() ua.StatusCode
}

// method is one served method.
type method struct {
	object *ua.NodeID
	id     *ua.NodeID
	name   string
	entry  *entry  // set_<signal>: the signal it writes
	action *Action // an action
}

// MethodID returns the node id string of an asset's method: the setter of
// a writable signal is "set_<signal>", an action its name.
func (f *Front) MethodID(asset, name string) string {
	return ua.NewStringNodeID(f.ns, asset+"."+name).String()
}

// ObjectID returns the node id string of an asset's folder, the object
// its methods are called on.
func (f *Front) ObjectID(asset string) string { return ua.NewStringNodeID(f.ns, asset).String() }

// Calls counts the method calls clients asked for, served or refused.
func (f *Front) Calls() uint64 { return f.calls.Load() }

// addMethods builds the assets' methods (New).
func (f *Front) addMethods(as *assetState, actions []Action) error {
	obj := ua.NewStringNodeID(f.ns, as.id)
	for _, e := range as.entries {
		if e.writable {
			name := "set_" + e.signal
			f.methods[f.MethodID(as.id, name)] = &method{object: obj, id: ua.NewStringNodeID(f.ns, as.id+"."+name), name: name, entry: e}
		}
	}
	for i := range actions {
		a := actions[i]
		if a.Name == "" || a.Do == nil {
			return fmt.Errorf("opcuafront: asset %s: actions[%d]: name and do are required", as.id, i)
		}
		key := f.MethodID(as.id, a.Name)
		if _, dup := f.methods[key]; dup {
			return fmt.Errorf("opcuafront: asset %s: action %q duplicates a method", as.id, a.Name)
		}
		f.methods[key] = &method{object: obj, id: ua.NewStringNodeID(f.ns, as.id+"."+a.Name), name: a.Name, action: &a}
	}
	return nil
}

// buildMethods adds the method nodes of one asset under its folder.
func (in *instance) buildMethods(ns *server.NodeNameSpace, propType *server.Node, folder *server.Node, asset string) {
	f := in.f
	for _, m := range f.methods {
		if m.object.String() != folder.ID().String() {
			continue
		}
		mn := server.NewNode(m.id, server.Attributes{
			ua.AttributeIDNodeClass:      server.DataValueFromValue(uint32(ua.NodeClassMethod)),
			ua.AttributeIDBrowseName:     server.DataValueFromValue(qn(f.ns, m.name)),
			ua.AttributeIDDisplayName:    server.DataValueFromValue(lt(m.name)),
			ua.AttributeIDExecutable:     server.DataValueFromValue(true),
			ua.AttributeIDUserExecutable: server.DataValueFromValue(true),
		}, nil, nil)
		ns.AddNode(mn)
		folder.AddRef(mn, id.HasComponent, true)
		if m.entry == nil {
			continue // an action takes no argument: no InputArguments
		}
		arg := &ua.Argument{Name: "value", DataType: ua.NewNumericNodeID(0, id.Double), ValueRank: -1, ArrayDimensions: []uint32{},
			Description: lt(fmt.Sprintf("new %s in %s", m.entry.signal, m.entry.unit))}
		val := []*ua.ExtensionObject{ua.NewExtensionObject(arg)}
		p := server.NewNode(ua.NewStringNodeID(f.ns, asset+"."+m.name+".InputArguments"), server.Attributes{
			ua.AttributeIDNodeClass:   server.DataValueFromValue(uint32(ua.NodeClassVariable)),
			ua.AttributeIDBrowseName:  server.DataValueFromValue(qn(0, "InputArguments")),
			ua.AttributeIDDisplayName: server.DataValueFromValue(lt("InputArguments")),
			ua.AttributeIDDataType:    server.DataValueFromValue(ua.NewNumericExpandedNodeID(0, id.Argument)),
			ua.AttributeIDValueRank:   server.DataValueFromValue(int32(1)),
		}, nil, func() *ua.DataValue {
			return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueStatusCode, Value: ua.MustVariant(val), Status: ua.StatusGood}
		})
		p.AddRef(propType, id.HasTypeDefinition, true)
		ns.AddNode(p)
		mn.AddRef(p, id.HasProperty, true)
	}
}

// call serves the Call service (gopcua's answers BadServiceUnsupported).
func (in *instance) call(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	req, ok := r.(*ua.CallRequest)
	if !ok {
		return nil, ua.StatusBadRequestTypeInvalid
	}
	if in.srv.Session(req.RequestHeader) == nil {
		return nil, ua.StatusBadSessionIDInvalid
	}
	if in.tooMany(in.f.cfg.Limits.MaxNodesPerRead, len(req.MethodsToCall)) { // calls share the read limit
		return nil, ua.StatusBadTooManyOperations
	}
	res := make([]*ua.CallMethodResult, len(req.MethodsToCall))
	for i, m := range req.MethodsToCall {
		res[i] = in.f.callMethod(m)
	}
	return &ua.CallResponse{
		ResponseHeader: okHeader(req.RequestHeader),
		Results:        res, DiagnosticInfos: []*ua.DiagnosticInfo{},
	}, nil
}

func (f *Front) callMethod(cm *ua.CallMethodRequest) *ua.CallMethodResult {
	f.calls.Add(1)
	res := func(st ua.StatusCode, args ...ua.StatusCode) *ua.CallMethodResult {
		if args == nil {
			args = []ua.StatusCode{}
		}
		return &ua.CallMethodResult{StatusCode: st, InputArgumentResults: args, InputArgumentDiagnosticInfos: []*ua.DiagnosticInfo{},
			OutputArguments: []*ua.Variant{}}
	}
	if cm == nil || cm.ObjectID == nil || cm.MethodID == nil {
		return res(ua.StatusBadNodeIDInvalid)
	}
	m := f.methods[cm.MethodID.String()]
	switch {
	case m == nil && f.isObject(cm.ObjectID):
		return res(ua.StatusBadMethodInvalid)
	case m == nil:
		return res(ua.StatusBadNodeIDUnknown)
	case m.object.String() != cm.ObjectID.String():
		return res(ua.StatusBadMethodInvalid)
	}
	if m.action != nil {
		if len(cm.InputArguments) > 0 {
			return res(ua.StatusBadTooManyArguments)
		}
		return res(m.action.Do())
	}
	switch {
	case len(cm.InputArguments) == 0:
		return res(ua.StatusBadArgumentsMissing)
	case len(cm.InputArguments) > 1:
		return res(ua.StatusBadTooManyArguments)
	}
	v, ok := cm.InputArguments[0].Value().(float64)
	if !ok {
		return res(ua.StatusBadInvalidArgument, ua.StatusBadTypeMismatch)
	}
	w := f.writer.Load()
	if w == nil {
		return res(ua.StatusBadNotExecutable)
	}
	if st := (*w)(m.entry.asset, m.entry.signal, v); st != ua.StatusOK {
		return res(ua.StatusBadInvalidArgument, st)
	}
	return res(ua.StatusOK, ua.StatusOK)
}

func (f *Front) isObject(n *ua.NodeID) bool {
	for _, as := range f.assets {
		if f.ObjectID(as.id) == n.String() {
			return true
		}
	}
	return false
}
