// Package opcuafront serves simulated assets over OPC UA with the gopcua
// server: one folder per asset under Objects, one AnalogItem variable per
// signal with the node id ns=<ns>;s=<asset>.<signal>, EngineeringUnits
// (UNECE code of the catalog unit) and EURange (catalog range) properties,
// SourceTimestamp and StatusCode on every value, and fault injection
// (SetStatus). It offers security policy None plus every signing policy
// gopcua implements, anonymous, username and X.509 logins, and enforces
// configurable operation limits the way a strict server does (a request
// over a limit is answered with the service fault BadTooManyOperations).
//
// A Front binds 127.0.0.1 (port 0 picks a free port), reports the real
// endpoint URL, and can be stopped and started again on the same port.
//
// Typical use by the fleet runner (one goroutine owns the models):
//
//	f, _ := opcuafront.New(opcuafront.Config{Addr: "127.0.0.1:4840"}, assets, log)
//	go f.Run(ctx)                  // or f.Start(ctx) ... f.Stop()
//	for each tick { step models; f.Refresh(now) }
package opcuafront

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/catalog"
	"github.com/smelterio/smelter/internal/opcua/uapki"
	"github.com/smelterio/smelter/internal/opcua/uaunits"
)

// Source produces an asset's values; model.Model satisfies it. Values is
// indexed like Signals. The Front reads a Source only inside Refresh, so a
// Source needs no locking as long as Refresh runs on the goroutine that
// steps it.
type Source interface {
	Class() string
	Signals() []string
	Values() []float64
}

// setpointer is a Source with writable signals (model.Setter): their
// nodes are served with write access (Front.SetWriter).
type setpointer interface{ Setpoints() []string }

// WriteFunc applies a client's write of v (the node's Double value,
// canonical units) to asset's signal and returns ua.StatusOK, or the
// status to answer (BadOutOfRange for a value the model refuses). It must
// show the new value (Front.Set) before it returns, for a read-back.
type WriteFunc func(asset, signal string, v float64) ua.StatusCode

// Asset is one served asset.
type Asset struct {
	ID     string // folder browse name and node id prefix
	Source Source
	// Actions are methods without arguments on the asset's folder
	// (method.go); the setters of writable signals are served anyway.
	Actions []Action
}

// Security is one offered endpoint: Policy None, Basic256Sha256,
// Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss; Mode None, Sign or
// SignAndEncrypt.
type Security struct {
	Policy string
	Mode   string
}

// Limits are the operation limits the server advertises under
// Server/ServerCapabilities/OperationLimits and enforces; 0 means no limit.
type Limits struct {
	MaxNodesPerRead          uint32
	MaxNodesPerBrowse        uint32
	MaxMonitoredItemsPerCall uint32
}

// Config configures a Front. The zero value serves every asset anonymously
// on 127.0.0.1 with a free port and every security policy.
type Config struct {
	Addr         string // host:port to bind; default 127.0.0.1:0
	NamespaceURI string // default urn:smelter:sim
	// CertFile/KeyFile: the server certificate. Empty: generated in memory.
	// Set but missing: generated and written there.
	CertFile, KeyFile string
	Security          []Security        // default: DefaultSecurity()
	DisableAnonymous  bool              // refuse anonymous logins
	Users             map[string]string // username -> password
	UserCerts         [][]byte          // DER certificates accepted for X.509 logins
	Limits            Limits
}

// DefaultSecurity is None plus Sign and SignAndEncrypt for every signing
// policy gopcua's server implements.
func DefaultSecurity() []Security {
	out := []Security{{"None", "None"}}
	for _, p := range []string{"Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"} {
		out = append(out, Security{p, "Sign"}, Security{p, "SignAndEncrypt"})
	}
	return out
}

// Status codes for SetStatus.
const (
	StatusGood                  uint32 = 0x00000000 // Good
	StatusUncertainLastUsable   uint32 = 0x40900000 // UncertainLastUsableValue
	StatusBadSensorFailure      uint32 = 0x808C0000 // BadSensorFailure
	StatusBadCommunicationError uint32 = 0x80050000 // BadCommunicationError
)

type entry struct {
	key      string // node id string, the monitored item index key
	nodeID   *ua.NodeID
	asset    string
	signal   string
	desc     string
	unit     string
	euID     int32
	euCode   string
	hasRange bool
	writable bool // the source lists the signal among its setpoints

	// guarded by Front.mu
	min, max  float64 // EURange, when hasRange
	value     float64
	status    uint32
	ts        time.Time
	refreshed bool // set by the first Refresh, which stamps every node
}

type assetState struct {
	id      string
	src     Source
	class   string
	entries []*entry
}

// Front is an OPC UA server front for simulated assets.
type Front struct {
	cfg    Config
	log    *slog.Logger
	assets []*assetState
	byKey  map[string]*entry // "asset.signal"
	writer atomic.Pointer[WriteFunc]
	writes atomic.Uint64
	calls  atomic.Uint64
	// methods by method node id string (method.go); read-only after New
	methods map[string]*method
	cert    []byte
	key     *rsa.PrivateKey
	ns      uint16

	runMu sync.Mutex // serialises Start/Stop
	inst  *instance
	addr  string // host:port in use once started

	// snap makes every Refresh and SetStatus one snapshot: a Read request
	// holds it (read) for all its nodes, so it never mixes two refreshes.
	// Lock order: snap, then mu.
	snap  sync.RWMutex
	mu    sync.RWMutex // values
	dirty map[*entry]struct{}
	kick  chan struct{}

	gateMu sync.Mutex // serialises SetSilent/SetDelay
	gate   atomic.Pointer[gate]

	rejected atomic.Uint64
	authFail atomic.Uint64
	readHook atomic.Pointer[ReadHook]
}

// ReadHook is called with the node ids (NodeID.String) of every Read
// request before it is served; the func it returns (nil: none) runs after
// the request's values were taken, before the response is sent. Tests use
// it to change a node between two of a client's requests at an exact
// point (SetUnit in the hook), without timing.
type ReadHook func(nodes []string) (after func())

// SetReadHook installs h (nil removes it).
func (f *Front) SetReadHook(h ReadHook) {
	if h == nil {
		f.readHook.Store(nil)
		return
	}
	f.readHook.Store(&h)
}

// New checks cfg and the assets and builds the address space description.
// It does no network I/O; a missing certificate is generated in Start.
func New(cfg Config, assets []Asset, log *slog.Logger) (*Front, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("opcuafront: addr %q: %w", cfg.Addr, err)
	}
	if cfg.NamespaceURI == "" {
		cfg.NamespaceURI = "urn:smelter:sim"
	}
	if len(cfg.Security) == 0 {
		cfg.Security = DefaultSecurity()
	}
	for i, s := range cfg.Security {
		if _, ok := policyURIs[s.Policy]; !ok {
			return nil, fmt.Errorf("opcuafront: security[%d].policy %q: want None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss", i, s.Policy)
		}
		if _, ok := modes[s.Mode]; !ok {
			return nil, fmt.Errorf("opcuafront: security[%d].mode %q: want None, Sign or SignAndEncrypt", i, s.Mode)
		}
		if (s.Policy == "None") != (s.Mode == "None") {
			return nil, fmt.Errorf("opcuafront: security[%d]: policy %s cannot use mode %s", i, s.Policy, s.Mode)
		}
	}
	for i, c := range cfg.UserCerts {
		if _, err := uapki.ParseCertificate(c); err != nil {
			return nil, fmt.Errorf("opcuafront: user_certs[%d]: %w", i, err)
		}
	}
	f := &Front{cfg: cfg, log: log, byKey: map[string]*entry{}, ns: 1, methods: map[string]*method{},
		dirty: map[*entry]struct{}{}, kick: make(chan struct{}, 1)}
	cat := catalog.Default()
	seen := map[string]bool{}
	now := time.Now()
	for i, a := range assets {
		if a.ID == "" || a.Source == nil {
			return nil, fmt.Errorf("opcuafront: assets[%d]: id and source are required", i)
		}
		if seen[a.ID] {
			return nil, fmt.Errorf("opcuafront: assets[%d]: duplicate asset id %q", i, a.ID)
		}
		seen[a.ID] = true
		as := &assetState{id: a.ID, src: a.Source, class: a.Source.Class()}
		vals := a.Source.Values()
		var setpoints []string
		if sp, ok := a.Source.(setpointer); ok {
			setpoints = sp.Setpoints()
		}
		for j, sig := range a.Source.Signals() {
			e := &entry{asset: a.ID, signal: sig, status: StatusGood, ts: now, writable: slices.Contains(setpoints, sig)}
			e.nodeID = ua.NewStringNodeID(f.ns, a.ID+"."+sig)
			e.key = e.nodeID.String()
			if j < len(vals) {
				e.value = vals[j]
			}
			if s, err := cat.Lookup(as.class, sig); err == nil {
				e.desc = s.Description
				e.unit = s.Unit
				if s.Min != nil && s.Max != nil {
					e.min, e.max, e.hasRange = *s.Min, *s.Max, true
				}
			}
			e.euID = -1
			if code, uid, ok := uaunits.UNECE(e.unit); ok {
				e.euCode, e.euID = code, uid
			}
			as.entries = append(as.entries, e)
			f.byKey[a.ID+"."+sig] = e
		}
		if err := f.addMethods(as, a.Actions); err != nil {
			return nil, err
		}
		f.assets = append(f.assets, as)
	}
	return f, nil
}

// Endpoint returns the endpoint URL (opc.tcp://127.0.0.1:port) once started.
func (f *Front) Endpoint() string {
	f.runMu.Lock()
	defer f.runMu.Unlock()
	if f.addr == "" {
		return ""
	}
	return "opc.tcp://" + f.addr
}

// Certificate returns the server certificate (DER) once started.
func (f *Front) Certificate() []byte {
	f.runMu.Lock()
	defer f.runMu.Unlock()
	return f.cert
}

// NodeID returns the node id string of an asset's signal.
func (f *Front) NodeID(asset, signal string) string {
	return ua.NewStringNodeID(f.ns, asset+"."+signal).String()
}

// NamespaceURI is the namespace of the asset nodes (index 1).
func (f *Front) NamespaceURI() string { return f.cfg.NamespaceURI }

// Rejected counts requests refused for exceeding an operation limit.
func (f *Front) Rejected() uint64 { return f.rejected.Load() }

// AuthFailures counts refused logins.
func (f *Front) AuthFailures() uint64 { return f.authFail.Load() }

// Refresh copies every source's current values into the address space,
// stamped now, and notifies subscribers of the values that changed (the
// first Refresh stamps every node). Call it
// on the goroutine that steps the sources. A node with a Bad status keeps
// its new value hidden and publishes nothing until its status turns good
// again (a failed sensor does not flap its notifications).
func (f *Front) Refresh(now time.Time) {
	f.snap.Lock()
	defer f.snap.Unlock()
	f.mu.Lock()
	for _, as := range f.assets {
		vals := as.src.Values()
		for j, e := range as.entries {
			if j >= len(vals) {
				break
			}
			if vals[j] != e.value || !e.refreshed {
				e.value = vals[j]
				e.refreshed = true
				if e.status>>30 == 2 {
					continue
				}
				e.ts = now
				f.dirty[e] = struct{}{}
			}
		}
	}
	n := len(f.dirty)
	f.mu.Unlock()
	if n > 0 {
		f.signal()
	}
}

// SetWriter makes writes of the writable nodes (the sources' setpoints)
// reach w; nil (the default) answers every write BadNotWritable.
func (f *Front) SetWriter(w WriteFunc) {
	if w == nil {
		f.writer.Store(nil)
		return
	}
	f.writer.Store(&w)
}

// Writes counts the node writes clients asked for, applied or refused:
// tests prove with it that nothing reached the server.
func (f *Front) Writes() uint64 { return f.writes.Load() }

// writeValue serves one WriteValue: the Value attribute of a writable
// node, a Double (the node's DataType), through the writer.
func (f *Front) writeValue(wv *ua.WriteValue) ua.StatusCode {
	f.writes.Add(1)
	if wv == nil || wv.NodeID == nil {
		return ua.StatusBadNodeIDInvalid
	}
	var e *entry
	for _, x := range f.byKey {
		if x.key == wv.NodeID.String() {
			e = x
			break
		}
	}
	switch {
	case e == nil:
		return ua.StatusBadNodeIDUnknown
	case wv.AttributeID != ua.AttributeIDValue:
		return ua.StatusBadNotWritable
	case !e.writable:
		return ua.StatusBadNotWritable
	case wv.Value == nil || wv.Value.Value == nil:
		return ua.StatusBadTypeMismatch
	}
	v, ok := wv.Value.Value.Value().(float64)
	if !ok {
		return ua.StatusBadTypeMismatch
	}
	w := f.writer.Load()
	if w == nil {
		return ua.StatusBadNotWritable
	}
	return (*w)(e.asset, e.signal, v)
}

// Set sets one value (tests and scripted faults) and notifies subscribers.
func (f *Front) Set(asset, signal string, v float64, ts time.Time) error {
	e, ok := f.byKey[asset+"."+signal]
	if !ok {
		return fmt.Errorf("opcuafront: no node %s.%s", asset, signal)
	}
	f.mu.Lock()
	e.value, e.ts = v, ts
	f.dirty[e] = struct{}{}
	f.mu.Unlock()
	f.signal()
	return nil
}

// SetRange sets the EURange a node with a catalog range serves from now
// on (fault injection: NaN or infinite bounds, say); its EngineeringUnits
// stay.
func (f *Front) SetRange(asset, signal string, low, high float64) error {
	e, ok := f.byKey[asset+"."+signal]
	if !ok {
		return fmt.Errorf("opcuafront: no node %s.%s", asset, signal)
	}
	if !e.hasRange {
		return fmt.Errorf("opcuafront: node %s.%s has no EURange", asset, signal)
	}
	f.mu.Lock()
	e.min, e.max = low, high
	f.mu.Unlock()
	return nil
}

// euInfo is e's EngineeringUnits: the UNECE code of its unit, or UnitId
// -1 and the unit as DisplayName when the table lacks it.
func (f *Front) euInfo(e *entry) *ua.ExtensionObject {
	f.mu.RLock()
	defer f.mu.RUnlock()
	eu := &ua.EUInformation{NamespaceURI: uaunits.NamespaceURI, UnitID: e.euID, DisplayName: lt(e.unit), Description: lt(e.unit)}
	if e.euID < 0 {
		eu.NamespaceURI = ""
	}
	return ua.NewExtensionObject(eu)
}

// SetUnit changes a node's EngineeringUnits to unit (a UCUM code) and its
// value to v in one step, as a server re-commissioned live would (its
// EURange stays): a client reading both at once sees either the old value
// and unit or the new ones. Subscribers are notified of the value, without
// a SemanticsChanged bit (gopcua's server sets none).
func (f *Front) SetUnit(asset, signal, unit string, v float64, ts time.Time) error {
	e, ok := f.byKey[asset+"."+signal]
	if !ok {
		return fmt.Errorf("opcuafront: no node %s.%s", asset, signal)
	}
	f.mu.Lock()
	e.unit, e.euCode, e.euID = unit, "", -1
	if code, uid, ok := uaunits.UNECE(unit); ok {
		e.euCode, e.euID = code, uid
	}
	e.value, e.ts = v, ts
	f.dirty[e] = struct{}{}
	f.mu.Unlock()
	f.signal()
	return nil
}

// euRange is e's EURange.
func (f *Front) euRange(e *entry) *ua.Range {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &ua.Range{Low: e.min, High: e.max}
}

// SetStatus sets the StatusCode of a node (fault injection) stamped with
// the wall clock: a Bad code serves no value, Good restores it.
// Subscribers are notified.
func (f *Front) SetStatus(asset, signal string, code uint32) error {
	return f.SetStatusAt(asset, signal, code, time.Now())
}

// SetStatusAt is SetStatus with the SourceTimestamp of the change (the
// fleet passes simulated time). Setting the status a node already has
// changes nothing.
func (f *Front) SetStatusAt(asset, signal string, code uint32, ts time.Time) error {
	e, ok := f.byKey[asset+"."+signal]
	if !ok {
		return fmt.Errorf("opcuafront: no node %s.%s", asset, signal)
	}
	f.snap.Lock()
	f.mu.Lock()
	changed := e.status != code
	if changed {
		e.status = code
		e.ts = ts
		f.dirty[e] = struct{}{}
	}
	f.mu.Unlock()
	f.snap.Unlock()
	if changed {
		f.signal()
	}
	return nil
}

// Status returns the StatusCode a node currently serves.
func (f *Front) Status(asset, signal string) (uint32, bool) {
	e, ok := f.byKey[asset+"."+signal]
	if !ok {
		return 0, false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return e.status, true
}

// SetSilent makes the server stop answering (on) or answer again (off).
// While silent, connections stay open and new ones are accepted, but no byte
// is forwarded either way: clients see requests time out, as with a hung
// device or a dead network path. The setting survives Stop/Start.
func (f *Front) SetSilent(on bool) {
	f.updateGate(func(g *gate) {
		switch {
		case on && g.hold == nil:
			g.hold = make(chan struct{})
		case !on && g.hold != nil:
			close(g.hold) // held chunks go through (or fail on dropped connections)
			g.hold = nil
		}
	})
}

// SetDelay holds every chunk the server sends for d (0: none), a slow
// server. The setting survives Stop/Start.
func (f *Front) SetDelay(d time.Duration) {
	f.updateGate(func(g *gate) { g.delay = max(d, 0) })
}

func (f *Front) updateGate(change func(*gate)) {
	f.gateMu.Lock()
	defer f.gateMu.Unlock()
	var g gate
	if old := f.gate.Load(); old != nil {
		g = *old
	}
	change(&g)
	if g == (gate{}) {
		f.gate.Store(nil)
		return
	}
	f.gate.Store(&g)
}

func (f *Front) signal() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// dataValue builds the served DataValue of e. Caller holds f.mu (read).
func (e *entry) dataValue(now time.Time) *ua.DataValue {
	dv := &ua.DataValue{
		EncodingMask:    ua.DataValueStatusCode | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
		Status:          ua.StatusCode(e.status),
		SourceTimestamp: e.ts,
		ServerTimestamp: now,
	}
	if e.status>>30 != 2 { // Good and Uncertain carry a value, Bad does not
		dv.EncodingMask |= ua.DataValueValue
		dv.Value = ua.MustVariant(e.value)
	}
	return dv
}

func (f *Front) read(e *entry) *ua.DataValue {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return e.dataValue(time.Now())
}

// Run starts the server, serves until ctx ends and stops it.
func (f *Front) Run(ctx context.Context) error {
	if err := f.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return f.Stop()
}

// Start binds the endpoint and starts serving. The first Start resolves
// port 0 to a free port; later Starts (after Stop) reuse that port.
func (f *Front) Start(ctx context.Context) error {
	f.runMu.Lock()
	defer f.runMu.Unlock()
	if f.inst != nil {
		return errors.New("opcuafront: already started")
	}
	if f.cert == nil {
		if err := f.loadCert(); err != nil {
			return err
		}
	}
	addr := f.addr
	if addr == "" {
		addr = f.cfg.Addr
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("opcuafront: listen %s: %w", addr, err)
	}
	host, _, _ := net.SplitHostPort(addr)
	pub := ln.Addr().(*net.TCPAddr).Port
	// gopcua listens on its first endpoint URL; the public one (second) is
	// what it advertises to clients that dial the proxy.
	in, inner, ictx, err := f.startInner(ctx, host, pub)
	if err != nil {
		_ = ln.Close()
		return err
	}
	in.done = make(chan struct{})
	in.proxy = newProxy(ictx, ln, net.JoinHostPort(host, strconv.Itoa(inner)), &f.gate, in.settle)
	go in.notifier(ictx)
	f.inst = in
	f.addr = net.JoinHostPort(host, strconv.Itoa(pub))
	f.log.Info("opc ua front listening", "endpoint", "opc.tcp://"+f.addr, "assets", len(f.assets))
	return nil
}

// innerListenAttempts bounds how often startInner picks another inner port
// when the one freePort found was taken before gopcua bound it.
const innerListenAttempts = 5

// startInner starts the gopcua server on a free inner port of host. gopcua
// binds the port its endpoint URL names, so the port is picked by
// listening on port 0 and closing again; another process (any outgoing
// connection's ephemeral port) can take it in between. A port found taken
// (EADDRINUSE) is replaced by a new one, up to innerListenAttempts times.
// It returns the started instance (its cancel set), the inner port and the
// instance's context.
func (f *Front) startInner(ctx context.Context, host string, pub int) (*instance, int, context.Context, error) {
	for attempt := 1; ; attempt++ {
		inner, err := pickInnerPort(ctx, host)
		if err != nil {
			return nil, 0, nil, err
		}
		in, err := f.newInstance(host, inner, pub)
		if err != nil {
			return nil, 0, nil, err
		}
		ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		err = in.srv.Start(ictx)
		if err == nil {
			in.cancel = cancel
			return in, inner, ictx, nil
		}
		cancel()
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == innerListenAttempts {
			return nil, 0, nil, fmt.Errorf("opcuafront: gopcua listener on %s:%d: %w", host, inner, err)
		}
		f.log.Debug("opc ua front: inner port taken before gopcua bound it, picking another", "port", inner, "attempt", attempt)
	}
}

// pickInnerPort is freePort; tests replace it to hand out a taken port.
var pickInnerPort = freePort

func freePort(ctx context.Context, host string) (int, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("opcuafront: pick a port on %s: %w", host, err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return p, nil
}

// DropConnections cuts every client connection while the server and its
// sessions stay up (a network cut as the clients see it).
func (f *Front) DropConnections() {
	f.runMu.Lock()
	in := f.inst
	f.runMu.Unlock()
	if in != nil {
		in.proxy.drop()
	}
}

// Restart stops the server and starts it again on the same port: every
// connection and session is lost, as when a device reboots.
func (f *Front) Restart(ctx context.Context) error {
	if err := f.Stop(); err != nil {
		f.log.Debug("opc ua front stop before restart", "err", err)
	}
	return f.Start(ctx)
}

// Stop closes every connection and the listener. Start may be called again.
func (f *Front) Stop() error {
	f.runMu.Lock()
	in := f.inst
	f.inst = nil
	f.runMu.Unlock()
	if in == nil {
		return nil
	}
	in.proxy.close() // clients see EOF now; gopcua's channels end with them
	// gopcua's Close must not run while it still registers a connection
	// (settle): its WaitGroup.Add would race with Close's Wait.
	if !in.settle.wait(settleTimeout) {
		f.log.Debug("opc ua front: gopcua did not settle its connections before stop", "timeout", settleTimeout)
	}
	err := in.srv.Close() // while gopcua's dispatcher still drains them
	in.cancel()
	<-in.done
	return err
}

func (f *Front) loadCert() error {
	host, _, _ := net.SplitHostPort(f.cfg.Addr)
	hosts := []string{host, "localhost", "127.0.0.1"}
	appURI := "urn:smelter:sim:opcuafront"
	if f.cfg.CertFile != "" || f.cfg.KeyFile != "" {
		if f.cfg.CertFile == "" || f.cfg.KeyFile == "" {
			return errors.New("opcuafront: cert_file and key_file go together")
		}
		der, key, _, err := uapki.LoadOrCreate(f.cfg.CertFile, f.cfg.KeyFile, "smelter-sim OPC UA front", appURI, hosts)
		if err != nil {
			return fmt.Errorf("opcuafront: %w", err)
		}
		f.cert, f.key = der, key
		return nil
	}
	der, key, err := uapki.Generate("smelter-sim OPC UA front", appURI, hosts, 365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("opcuafront: %w", err)
	}
	f.cert, f.key = der, key
	return nil
}

var policyURIs = map[string]string{
	"None":                  ua.SecurityPolicyURINone,
	"Basic256Sha256":        ua.SecurityPolicyURIBasic256Sha256,
	"Aes128_Sha256_RsaOaep": ua.SecurityPolicyURIAes128Sha256RsaOaep,
	"Aes256_Sha256_RsaPss":  ua.SecurityPolicyURIAes256Sha256RsaPss,
}

var modes = map[string]ua.MessageSecurityMode{
	"None":           ua.MessageSecurityModeNone,
	"Sign":           ua.MessageSecurityModeSign,
	"SignAndEncrypt": ua.MessageSecurityModeSignAndEncrypt,
}

// notifier delivers dirty values to monitored items until ctx ends.
func (in *instance) notifier(ctx context.Context) {
	defer close(in.done)
	f := in.f
	var batch []*entry
	var dvs []*ua.DataValue
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		}
		now := time.Now()
		f.mu.Lock()
		batch = batch[:0]
		dvs = dvs[:0]
		for e := range f.dirty {
			batch = append(batch, e)
			dvs = append(dvs, e.dataValue(now))
		}
		clear(f.dirty)
		f.mu.Unlock()
		for i, e := range batch {
			if !in.deliver(ctx, e.key, dvs[i]) {
				return
			}
		}
	}
}

// deliver hands a value to every monitored item on the node. It copies the
// item list under the service lock and sends outside it, with a bound, so a
// subscription that died without draining its channel cannot wedge the
// server (gopcua's own ChangeNotification sends while holding the lock).
func (in *instance) deliver(ctx context.Context, key string, dv *ua.DataValue) bool {
	mis := in.srv.MonitoredItemService
	if mis == nil {
		return true
	}
	mis.Mu.Lock()
	items := append(in.items[:0], mis.Nodes[key]...)
	mis.Mu.Unlock()
	in.items = items
	// Skip items of subscriptions gopcua already dropped (their goroutine no
	// longer drains the channel). Lock order matches gopcua's: subs, then items.
	ss := in.srv.SubscriptionService
	ss.Mu.Lock()
	for i, it := range items {
		if it != nil && it.Sub != nil && ss.Subs[it.Sub.ID] != it.Sub {
			items[i] = nil
		}
	}
	ss.Mu.Unlock()
	for _, it := range items {
		if it == nil || it.Sub == nil || it.Req == nil || it.Req.ItemToMonitor.AttributeID != ua.AttributeIDValue {
			continue
		}
		n := &ua.MonitoredItemNotification{ClientHandle: it.Req.RequestedParameters.ClientHandle, Value: dv}
		select {
		case it.Sub.NotifyChannel <- n:
			continue
		default:
		}
		if in.timer == nil {
			in.timer = time.NewTimer(time.Second)
		} else {
			in.timer.Reset(time.Second)
		}
		select {
		case it.Sub.NotifyChannel <- n:
			in.timer.Stop()
		case <-in.timer.C:
			in.f.log.Debug("dropping notification for a stalled subscription", "node", key, "subscription", it.Sub.ID)
		case <-ctx.Done():
			in.timer.Stop()
			return false
		}
	}
	return true
}
