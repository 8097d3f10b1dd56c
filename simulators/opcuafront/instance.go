package opcuafront

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uapolicy"
	"github.com/gopcua/opcua/uasc"
)

// instance is one gopcua server lifetime (Start to Stop).
type instance struct {
	f      *Front
	srv    *server.Server
	cancel context.CancelFunc
	done   chan struct{}
	proxy  *proxy
	settle *settle // gopcua's accepted and open connections, for Stop
	public string  // advertised endpoint URL

	sessions  *server.SessionService
	attrs     *server.AttributeService
	views     *server.ViewService
	discovery *server.DiscoveryService

	policyOf map[string]string // user token policy id -> security policy URI

	nonceMu sync.Mutex
	nonces  map[string][]byte // session authentication token -> last server nonce

	// notifier scratch (notifier goroutine only)
	items []*server.MonitoredItem
	timer *time.Timer
}

// bind returns a gopcua service-set value bound to srv. gopcua builds its
// service sets inside Start and keeps the server in an unexported field; to
// put a check in front of one handler (identity tokens, operation limits)
// and then run gopcua's own, we need our own bound instance.
func bind[T any](srv *server.Server) (*T, error) {
	t := new(T)
	f := reflect.ValueOf(t).Elem().FieldByName("srv")
	if !f.IsValid() || f.Type() != reflect.TypeOf(srv) {
		return nil, fmt.Errorf("opcuafront: %T has no srv field of type %T (gopcua changed?)", t, srv)
	}
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(srv))
	return t, nil
}

// logAdapter turns gopcua's printf-style server logging into quiet slog
// and feeds the instance's connection accounting (settle).
type logAdapter struct {
	l *slog.Logger
	s *settle
}

func (a logAdapter) Debug(msg string, args ...any) {}
func (a logAdapter) Info(msg string, args ...any)  { a.log(msg, args) }
func (a logAdapter) Warn(msg string, args ...any)  { a.log(msg, args) }
func (a logAdapter) Error(msg string, args ...any) { a.log(msg, args) }

func (a logAdapter) log(msg string, args []any) {
	a.s.logged(msg)
	a.l.Debug(fmt.Sprintf(msg, args...))
}

func (f *Front) newInstance(host string, inner, public int) (*instance, error) {
	st := newSettle()
	opts := []server.Option{
		server.EndPoint(host, inner),
		server.EndPoint(host, public),
		server.Certificate(f.cert),
		server.PrivateKey(f.key),
		server.ServerName("smelter-sim"),
		server.ManufacturerName("Smelter"),
		server.ProductName("smelter-sim OPC UA front"),
		server.SetLogger(logAdapter{l: f.log, s: st}),
	}
	for _, s := range f.cfg.Security {
		opts = append(opts, server.EnableSecurity(policyURIs[s.Policy], modes[s.Mode]))
	}
	if !f.cfg.DisableAnonymous {
		opts = append(opts, server.EnableAuthMode(ua.UserTokenTypeAnonymous))
	}
	if len(f.cfg.Users) > 0 {
		opts = append(opts, server.EnableAuthMode(ua.UserTokenTypeUserName))
	}
	if len(f.cfg.UserCerts) > 0 {
		opts = append(opts, server.EnableAuthMode(ua.UserTokenTypeCertificate))
	}
	srv := server.New(opts...)
	in := &instance{f: f, srv: srv, settle: st, nonces: map[string][]byte{}, policyOf: map[string]string{},
		public: fmt.Sprintf("opc.tcp://%s:%d", host, public)}
	var err error
	if in.discovery, err = bind[server.DiscoveryService](srv); err != nil {
		return nil, err
	}
	if in.sessions, err = bind[server.SessionService](srv); err != nil {
		return nil, err
	}
	if in.attrs, err = bind[server.AttributeService](srv); err != nil {
		return nil, err
	}
	if in.views, err = bind[server.ViewService](srv); err != nil {
		return nil, err
	}
	// gopcua names user token policies "<type>_<policy>" (server.initEndpoints).
	for _, uri := range policyURIs {
		p := strings.ToLower(strings.TrimPrefix(uri, "http://opcfoundation.org/UA/SecurityPolicy#"))
		for _, t := range []string{"username", "certificate", "anonymous"} {
			in.policyOf[t+"_"+p] = uri
		}
	}
	srv.RegisterHandler(id.CreateSessionRequest_Encoding_DefaultBinary, in.createSession)
	srv.RegisterHandler(id.ActivateSessionRequest_Encoding_DefaultBinary, in.activateSession)
	srv.RegisterHandler(id.GetEndpointsRequest_Encoding_DefaultBinary, in.getEndpoints)
	srv.RegisterHandler(id.ReadRequest_Encoding_DefaultBinary, in.read)
	srv.RegisterHandler(id.WriteRequest_Encoding_DefaultBinary, in.write)
	srv.RegisterHandler(id.BrowseRequest_Encoding_DefaultBinary, in.browse)
	srv.RegisterHandler(id.CreateMonitoredItemsRequest_Encoding_DefaultBinary, in.createMonitoredItems)
	srv.RegisterHandler(id.CallRequest_Encoding_DefaultBinary, in.call)
	if err := in.buildAddressSpace(); err != nil {
		return nil, err
	}
	return in, nil
}

func qn(ns uint16, name string) *ua.QualifiedName {
	return &ua.QualifiedName{NamespaceIndex: ns, Name: name}
}

func lt(s string) *ua.LocalizedText {
	return &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: s}
}

func (in *instance) buildAddressSpace() error {
	f, srv := in.f, in.srv
	ns := server.NewNodeNameSpace(srv, f.cfg.NamespaceURI)
	if ns.ID() != f.ns {
		return fmt.Errorf("opcuafront: namespace index %d, want %d", ns.ID(), f.ns)
	}
	ns0, err := srv.Namespace(0)
	if err != nil {
		return err
	}
	limit := func(nid uint32, name string, v uint32) {
		ns0.AddNode(server.NewNode(ua.NewNumericNodeID(0, nid), server.Attributes{
			ua.AttributeIDNodeClass:  server.DataValueFromValue(uint32(ua.NodeClassVariable)),
			ua.AttributeIDBrowseName: server.DataValueFromValue(qn(0, name)),
			ua.AttributeIDDataType:   server.DataValueFromValue(ua.NewNumericExpandedNodeID(0, id.UInt32)),
		}, nil, func() *ua.DataValue { return server.DataValueFromValue(v) }))
	}
	lim := f.cfg.Limits
	limit(id.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead, "MaxNodesPerRead", lim.MaxNodesPerRead)
	limit(id.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse, "MaxNodesPerBrowse", lim.MaxNodesPerBrowse)
	limit(id.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall, "MaxMonitoredItemsPerCall", lim.MaxMonitoredItemsPerCall)

	objects := srv.Node(server.ObjectsFolder)
	folderType := srv.Node(ua.NewNumericNodeID(0, id.FolderType))
	analogType := srv.Node(ua.NewNumericNodeID(0, id.AnalogItemType))
	propType := srv.Node(ua.NewNumericNodeID(0, id.PropertyType))
	if objects == nil || folderType == nil || analogType == nil || propType == nil {
		return fmt.Errorf("opcuafront: gopcua namespace 0 lacks Objects or standard types")
	}
	readOnly := server.DataValueFromValue(byte(ua.AccessLevelTypeCurrentRead))
	readWrite := server.DataValueFromValue(byte(ua.AccessLevelTypeCurrentRead | ua.AccessLevelTypeCurrentWrite))
	for _, as := range f.assets {
		folder := server.NewNode(ua.NewStringNodeID(f.ns, as.id), server.Attributes{
			ua.AttributeIDNodeClass:     server.DataValueFromValue(uint32(ua.NodeClassObject)),
			ua.AttributeIDBrowseName:    server.DataValueFromValue(qn(f.ns, as.id)),
			ua.AttributeIDDisplayName:   server.DataValueFromValue(lt(as.id)),
			ua.AttributeIDDescription:   server.DataValueFromValue(lt(as.class)),
			ua.AttributeIDEventNotifier: server.DataValueFromValue(byte(0)),
		}, nil, nil)
		folder.AddRef(folderType, id.HasTypeDefinition, true)
		ns.AddNode(folder)
		objects.AddRef(folder, id.Organizes, true)
		for _, e := range as.entries {
			access := readOnly
			if e.writable {
				access = readWrite
			}
			v := server.NewNode(e.nodeID, server.Attributes{
				ua.AttributeIDNodeClass:       server.DataValueFromValue(uint32(ua.NodeClassVariable)),
				ua.AttributeIDBrowseName:      server.DataValueFromValue(qn(f.ns, e.signal)),
				ua.AttributeIDDisplayName:     server.DataValueFromValue(lt(e.signal)),
				ua.AttributeIDDescription:     server.DataValueFromValue(lt(e.desc)),
				ua.AttributeIDDataType:        server.DataValueFromValue(ua.NewNumericExpandedNodeID(0, id.Double)),
				ua.AttributeIDValueRank:       server.DataValueFromValue(int32(-1)),
				ua.AttributeIDAccessLevel:     access,
				ua.AttributeIDUserAccessLevel: access,
				ua.AttributeIDHistorizing:     server.DataValueFromValue(false),
			}, nil, func() *ua.DataValue { return f.read(e) })
			v.AddRef(analogType, id.HasTypeDefinition, true)
			ns.AddNode(v)
			folder.AddRef(v, id.HasComponent, true)

			v.AddRef(in.property(ns, propType, e, "EngineeringUnits", id.EUInformation, func() *ua.ExtensionObject { return in.f.euInfo(e) }),
				id.HasProperty, true)
			if e.hasRange {
				v.AddRef(in.property(ns, propType, e, "EURange", id.Range, func() *ua.ExtensionObject { return ua.NewExtensionObject(in.f.euRange(e)) }),
					id.HasProperty, true)
			}
		}
		in.buildMethods(ns, propType, folder, as.id)
	}
	return nil
}

func (in *instance) property(ns *server.NodeNameSpace, propType *server.Node, e *entry, name string, dataType uint32, value func() *ua.ExtensionObject) *server.Node {
	p := server.NewNode(ua.NewStringNodeID(in.f.ns, e.asset+"."+e.signal+"."+name), server.Attributes{
		ua.AttributeIDNodeClass:   server.DataValueFromValue(uint32(ua.NodeClassVariable)),
		ua.AttributeIDBrowseName:  server.DataValueFromValue(qn(0, name)),
		ua.AttributeIDDisplayName: server.DataValueFromValue(lt(name)),
		ua.AttributeIDDataType:    server.DataValueFromValue(ua.NewNumericExpandedNodeID(0, dataType)),
		ua.AttributeIDValueRank:   server.DataValueFromValue(int32(-1)),
	}, nil, func() *ua.DataValue {
		return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueStatusCode, Value: ua.MustVariant(value()), Status: ua.StatusGood}
	})
	p.AddRef(propType, id.HasTypeDefinition, true)
	ns.AddNode(p)
	return p
}

// getEndpoints answers with the public endpoints whatever host name the
// client used (gopcua matches the request URL literally) and hides the
// internal listener's.
func (in *instance) getEndpoints(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	req, ok := r.(*ua.GetEndpointsRequest)
	if !ok {
		return in.discovery.GetEndpoints(sc, r, reqID)
	}
	var eps []*ua.EndpointDescription
	for _, ep := range in.srv.Endpoints() {
		if ep.EndpointURL == in.public {
			eps = append(eps, ep)
		}
	}
	return &ua.GetEndpointsResponse{
		ResponseHeader: okHeader(req.RequestHeader),
		Endpoints:      eps,
	}, nil
}

// okHeader is the header of a successful answer to a request with header h.
func okHeader(h *ua.RequestHeader) *ua.ResponseHeader {
	return &ua.ResponseHeader{Timestamp: time.Now(), RequestHandle: h.RequestHandle,
		ServiceResult: ua.StatusOK, ServiceDiagnostics: &ua.DiagnosticInfo{}, StringTable: []string{},
		AdditionalHeader: ua.NewExtensionObject(nil)}
}

// ---- operation limits ----

func (in *instance) tooMany(limit uint32, n int) bool {
	if limit > 0 && n > int(limit) {
		in.f.rejected.Add(1)
		return true
	}
	return false
}

// write serves the Write service itself (gopcua's would write the node's
// stored attribute, not the model): each value through Front.writeValue.
func (in *instance) write(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	req, ok := r.(*ua.WriteRequest)
	if !ok {
		return nil, ua.StatusBadRequestTypeInvalid
	}
	if in.tooMany(in.f.cfg.Limits.MaxNodesPerRead, len(req.NodesToWrite)) { // writes share the read limit
		return nil, ua.StatusBadTooManyOperations
	}
	res := make([]ua.StatusCode, len(req.NodesToWrite))
	for i, wv := range req.NodesToWrite {
		res[i] = in.f.writeValue(wv)
	}
	return &ua.WriteResponse{
		ResponseHeader: okHeader(req.RequestHeader),
		Results:        res, DiagnosticInfos: []*ua.DiagnosticInfo{},
	}, nil
}

func (in *instance) read(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	if req, ok := r.(*ua.ReadRequest); ok && in.tooMany(in.f.cfg.Limits.MaxNodesPerRead, len(req.NodesToRead)) {
		return nil, ua.StatusBadTooManyOperations
	}
	var after func()
	if h := in.f.readHook.Load(); h != nil {
		if req, ok := r.(*ua.ReadRequest); ok {
			ids := make([]string, len(req.NodesToRead))
			for k, rv := range req.NodesToRead {
				ids[k] = rv.NodeID.String()
			}
			after = (*h)(ids)
		}
	}
	resp, err := in.readSnapshot(sc, r, reqID)
	if after != nil {
		after()
	}
	return resp, err
}

// readSnapshot serves a Read with one snapshot for every node of the
// request.
func (in *instance) readSnapshot(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	in.f.snap.RLock()
	defer in.f.snap.RUnlock()
	return in.attrs.Read(sc, r, reqID)
}

func (in *instance) browse(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	if req, ok := r.(*ua.BrowseRequest); ok && in.tooMany(in.f.cfg.Limits.MaxNodesPerBrowse, len(req.NodesToBrowse)) {
		return nil, ua.StatusBadTooManyOperations
	}
	return in.views.Browse(sc, r, reqID)
}

func (in *instance) createMonitoredItems(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	req, ok := r.(*ua.CreateMonitoredItemsRequest)
	if !ok {
		return nil, ua.StatusBadRequestTypeInvalid
	}
	if in.tooMany(in.f.cfg.Limits.MaxMonitoredItemsPerCall, len(req.ItemsToCreate)) {
		return nil, ua.StatusBadTooManyOperations
	}
	if in.srv.Session(req.RequestHeader) == nil {
		return nil, ua.StatusBadSessionIDInvalid
	}
	in.srv.SubscriptionService.Mu.Lock()
	_, ok = in.srv.SubscriptionService.Subs[req.SubscriptionID]
	in.srv.SubscriptionService.Mu.Unlock()
	if !ok {
		return nil, ua.StatusBadSubscriptionIDInvalid
	}
	// gopcua accepts any node id; refuse unknown ones in our namespace like a real server.
	resp, err := in.srv.MonitoredItemService.CreateMonitoredItems(sc, r, reqID)
	if err != nil {
		return resp, err
	}
	if cr, ok := resp.(*ua.CreateMonitoredItemsResponse); ok {
		for i, it := range req.ItemsToCreate {
			if i < len(cr.Results) && it.ItemToMonitor != nil && it.ItemToMonitor.NodeID != nil &&
				it.ItemToMonitor.NodeID.Namespace() == in.f.ns && in.srv.Node(it.ItemToMonitor.NodeID) == nil {
				in.srv.MonitoredItemService.DeleteMonitoredItem(cr.Results[i].MonitoredItemID)
				cr.Results[i] = &ua.MonitoredItemCreateResult{StatusCode: ua.StatusBadNodeIDUnknown, FilterResult: ua.NewExtensionObject(nil)}
			}
		}
	}
	return resp, nil
}

// ---- sessions and user identity ----

func (in *instance) setNonce(token *ua.NodeID, nonce []byte) {
	if token == nil {
		return
	}
	in.nonceMu.Lock()
	in.nonces[token.String()] = bytes.Clone(nonce)
	in.nonceMu.Unlock()
}

func (in *instance) createSession(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	resp, err := in.sessions.CreateSession(sc, r, reqID)
	if cr, ok := resp.(*ua.CreateSessionResponse); ok && err == nil {
		in.setNonce(cr.AuthenticationToken, cr.ServerNonce)
	}
	return resp, err
}

func (in *instance) activateSession(sc *uasc.SecureChannel, r ua.Request, reqID uint32) (ua.Response, error) {
	req, ok := r.(*ua.ActivateSessionRequest)
	if !ok {
		return nil, ua.StatusBadRequestTypeInvalid
	}
	tok := req.RequestHeader.AuthenticationToken
	var nonce []byte
	if tok != nil {
		in.nonceMu.Lock()
		nonce = in.nonces[tok.String()]
		in.nonceMu.Unlock()
	}
	if code := in.checkIdentity(req, nonce); code != ua.StatusGood {
		in.f.authFail.Add(1)
		in.f.log.Info("opc ua login refused", "status", code.Error())
		return nil, code
	}
	resp, err := in.sessions.ActivateSession(sc, r, reqID)
	if ar, ok := resp.(*ua.ActivateSessionResponse); ok && err == nil {
		in.setNonce(tok, ar.ServerNonce)
	}
	return resp, err
}

func (in *instance) checkIdentity(req *ua.ActivateSessionRequest, nonce []byte) ua.StatusCode {
	var val any
	if req.UserIdentityToken != nil {
		val = req.UserIdentityToken.Value
	}
	switch t := val.(type) {
	case nil, *ua.AnonymousIdentityToken:
		if in.f.cfg.DisableAnonymous {
			return ua.StatusBadIdentityTokenRejected
		}
		return ua.StatusGood
	case *ua.UserNameIdentityToken:
		want, ok := in.f.cfg.Users[t.UserName]
		if !ok {
			return ua.StatusBadUserAccessDenied
		}
		uri := in.policyOf[t.PolicyID]
		if uri == "" || uri == ua.SecurityPolicyURINone || t.EncryptionAlgorithm == "" {
			return ua.StatusBadIdentityTokenInvalid // passwords only travel encrypted here
		}
		dec, err := uapolicy.Asymmetric(uri, in.f.key, &in.f.key.PublicKey)
		if err != nil {
			return ua.StatusBadIdentityTokenInvalid
		}
		plain, err := dec.Decrypt(t.Password)
		if err != nil || len(plain) < 4 {
			return ua.StatusBadIdentityTokenInvalid
		}
		n := int(binary.LittleEndian.Uint32(plain))
		if n > len(plain)-4 || n < len(nonce) {
			return ua.StatusBadIdentityTokenInvalid
		}
		body := plain[4 : 4+n]
		pass, gotNonce := body[:len(body)-len(nonce)], body[len(body)-len(nonce):]
		if !bytes.Equal(gotNonce, nonce) {
			return ua.StatusBadIdentityTokenInvalid
		}
		if subtle.ConstantTimeCompare(pass, []byte(want)) != 1 {
			return ua.StatusBadUserAccessDenied
		}
		return ua.StatusGood
	case *ua.X509IdentityToken:
		var known bool
		for _, c := range in.f.cfg.UserCerts {
			if bytes.Equal(c, t.CertificateData) {
				known = true
			}
		}
		if !known {
			return ua.StatusBadIdentityTokenRejected
		}
		uri := in.policyOf[t.PolicyID]
		cert, err := x509.ParseCertificate(t.CertificateData)
		if err != nil || uri == "" || req.UserTokenSignature == nil {
			return ua.StatusBadIdentityTokenInvalid
		}
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return ua.StatusBadIdentityTokenInvalid
		}
		ver, err := uapolicy.Asymmetric(uri, in.f.key, pub)
		if err != nil {
			return ua.StatusBadIdentityTokenInvalid
		}
		msg := append(bytes.Clone(in.f.cert), nonce...)
		if err := ver.VerifySignature(msg, req.UserTokenSignature.Signature); err != nil {
			return ua.StatusBadUserSignatureInvalid
		}
		return ua.StatusGood
	default:
		return ua.StatusBadIdentityTokenInvalid
	}
}
