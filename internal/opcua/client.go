// Package opcua is Smelter's OPC UA client driver, built on gopcua: it
// subscribes to (or polls) a device's nodes, maps StatusCodes to quality,
// keeps SourceTimestamps, respects the server's operation limits, and
// recovers from any outage by reconnecting with backoff and recreating its
// subscription. It also browses address spaces and lists endpoints for the
// operator tools.
//
// gopcua v0.8.0 treats a service fault (BadTooManyOperations and friends)
// as a lost connection and tears the secure channel down, so the driver
// reads the operation limits first and never sends a larger request; if a
// server still refuses a batch, the next session halves that batch size.
package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
	"golang.org/x/sync/errgroup"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/telemetry"
)

// Update is one node's new value.
type Update struct {
	Index    int // into the points slice given to New
	Num      float64
	Str      string
	IsStr    bool
	Status   uint32            // raw OPC UA StatusCode (kept when Stale)
	Quality  telemetry.Quality // from the StatusCode's top bits; Stale while the session is lost
	SourceTS int64             // unix ms: SourceTimestamp, else the time it was received
}

// Client acquires one device's points over one session at a time.
type Client struct {
	id     string
	cfg    Config
	points []Point
	log    *slog.Logger
	m      *devMetrics

	emitMu     sync.Mutex
	emitFn     func([]Update)
	lastStatus []uint32

	mu      sync.Mutex
	status  Status
	learned Limits // caps learned from refused batches
}

// Status is the driver's state for status pages.
type Status struct {
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	Sessions  uint64    `json:"sessions"`
	Limits    Limits    `json:"limits"` // effective batch sizes of the current session
}

// New checks the configuration and points (after their defaults) and
// builds a client; it does no I/O.
func New(id string, cfg Config, points []Point, log *slog.Logger, m *Metrics) (*Client, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("opcua: device %s: %w", id, err)
	}
	ps := make([]Point, len(points))
	for i, p := range points {
		p.SetDefaults(&cfg)
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("opcua: device %s: points[%d].%w", id, i, err)
		}
		ps[i] = p
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Client{id: id, cfg: cfg, points: ps, log: log.With("device", id), m: m.device(id),
		lastStatus: make([]uint32, len(ps))}, nil
}

// Status returns a snapshot of the connection state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Client) setStatus(f func(*Status)) {
	c.mu.Lock()
	f(&c.status)
	c.mu.Unlock()
}

// emit hands a batch to the caller; calls never overlap.
func (c *Client) emit(us []Update) {
	if len(us) == 0 {
		return
	}
	c.emitMu.Lock()
	defer c.emitMu.Unlock()
	for i := range us {
		if us[i].Quality != telemetry.QualityStale {
			c.lastStatus[us[i].Index] = us[i].Status
		}
	}
	c.emitFn(us)
}

func (c *Client) emitStale() {
	now := time.Now().UnixMilli()
	us := make([]Update, len(c.points))
	c.emitMu.Lock()
	for i := range us {
		us[i] = Update{Index: i, Status: c.lastStatus[i], Quality: telemetry.QualityStale, SourceTS: now}
	}
	c.emitMu.Unlock()
	c.emit(us)
}

// Run acquires until ctx ends. emit receives one call per publish response
// or poll cycle (one snapshot), never concurrently; the slice is only valid
// during the call. After any outage Run reconnects with backoff and
// recreates its subscription; while away it emits Stale for every point
// once. It returns nil when ctx ends.
func (c *Client) Run(ctx context.Context, emit func(updates []Update)) error {
	c.emitFn = emit
	bo := backoff.Backoff{Min: c.cfg.BackoffMin, Max: c.cfg.BackoffMax}
	staleSent := false
	for {
		c.m.state.Set(StateConnecting)
		connected := false
		err := c.session(ctx, func() {
			connected = true
			staleSent = false
			bo.Reset()
		})
		c.m.state.Set(StateDisconnected)
		c.setStatus(func(s *Status) {
			if s.Connected {
				s.Since = time.Now()
			}
			s.Connected = false
			if err != nil {
				s.LastError = err.Error()
			}
		})
		select {
		case <-ctx.Done():
			// The session ended because ctx did: a requested stop, which
			// Run reports as nil, not as the session's error.
			return nil
		default:
		}
		if !staleSent {
			c.emitStale()
			staleSent = true
		}
		c.m.reconnects.Inc()
		wait := bo.Next()
		if connected {
			c.log.Warn("opc ua session lost; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		} else if errors.Is(err, ErrUntrusted) {
			c.log.Error(err.Error(), "retry_in", wait.Round(time.Millisecond))
		} else {
			c.log.Warn("opc ua connect failed", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// connect opens a session with the configuration's security and identity.
func connect(ctx context.Context, cfg *Config, log *slog.Logger, extra ...opcua.Option) (*opcua.Client, error) {
	opts, err := options(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	cl, err := opcua.NewClient(cfg.Endpoint, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("opcua: client options: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	if err := cl.Connect(cctx); err != nil {
		closeClient(cl)
		return nil, fmt.Errorf("opcua: connect %s (%s/%s, auth %s): %w", cfg.Endpoint, cfg.SecurityPolicy, cfg.SecurityMode, cfg.Auth.Mode, err)
	}
	return cl, nil
}

func closeClient(cl *opcua.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = cl.Close(ctx)
}

// session runs one connection: it returns when the connection is lost or
// ctx ends. up is called once the session is acquiring.
func (c *Client) session(ctx context.Context, up func()) error {
	stateCh := make(chan opcua.ConnState, 16)
	cl, err := connect(ctx, &c.cfg, c.log, opcua.StateChangedCh(stateCh))
	if err != nil {
		return err
	}
	closed := make(chan struct{})
	defer func() {
		closeClient(cl)
		close(closed)
	}()
	// gopcua blocks on the state channel; keep it drained until closed.
	lost := make(chan struct{})
	go func() {
		var once sync.Once
		for {
			select {
			case <-closed:
				return
			case s := <-stateCh:
				if s == opcua.Disconnected || s == opcua.Closed {
					once.Do(func() { close(lost) })
				}
			}
		}
	}()

	nodes, err := c.resolve(ctx, cl)
	if err != nil {
		return err
	}
	lim, err := c.limits(ctx, cl)
	if err != nil {
		return err
	}
	c.setStatus(func(s *Status) { s.Limits = lim })

	g, gctx := errgroup.WithContext(ctx)
	var subIdx, pollIdx []int
	for i, p := range c.points {
		if p.Mode == ModePoll {
			pollIdx = append(pollIdx, i)
		} else {
			subIdx = append(subIdx, i)
		}
	}
	if len(subIdx) > 0 {
		notify := make(chan *opcua.PublishNotificationData, 64)
		sub, err := cl.Subscribe(ctx, c.subscriptionParams(), notify)
		if err != nil {
			return fmt.Errorf("opcua: create subscription: %w", err)
		}
		if err := c.monitor(ctx, sub, nodes, subIdx, lim); err != nil {
			return err
		}
		g.Go(func() error { return c.notifications(gctx, notify) })
	}
	groups := map[time.Duration][]int{}
	for _, i := range pollIdx {
		groups[c.points[i].PollInterval] = append(groups[c.points[i].PollInterval], i)
	}
	for iv, idx := range groups {
		g.Go(func() error { return c.poll(gctx, cl, nodes, idx, iv, lim) })
	}
	g.Go(func() error { return c.watchdog(gctx, cl) })
	g.Go(func() error {
		select {
		case <-lost:
			return errors.New("opcua: connection lost")
		case <-gctx.Done():
			return nil
		}
	})
	c.m.state.Set(StateConnected)
	c.setStatus(func(s *Status) {
		s.Connected, s.Since, s.LastError = true, time.Now(), ""
		s.Sessions++
	})
	c.log.Info("opc ua session up", "endpoint", c.cfg.Endpoint, "policy", c.cfg.SecurityPolicy, "mode", c.cfg.SecurityMode,
		"subscribed", len(subIdx), "polled", len(pollIdx), "max_nodes_per_read", lim.MaxNodesPerRead,
		"max_monitored_items_per_call", lim.MaxMonitoredItemsPerCall)
	up()
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// resolve parses node ids, resolving nsu=<uri>; forms with the namespace array.
func (c *Client) resolve(ctx context.Context, cl *opcua.Client) ([]*ua.NodeID, error) {
	out := make([]*ua.NodeID, len(c.points))
	var nsArr []string
	for i, p := range c.points {
		s := p.NodeID
		if strings.HasPrefix(s, "nsu=") {
			if nsArr == nil {
				rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
				arr, err := cl.NamespaceArray(rctx)
				cancel()
				if err != nil {
					return nil, fmt.Errorf("opcua: read namespace array: %w", err)
				}
				nsArr = arr
			}
			uri, rest, _ := strings.Cut(strings.TrimPrefix(s, "nsu="), ";")
			idx := -1
			for j, u := range nsArr {
				if u == uri {
					idx = j
				}
			}
			if idx < 0 {
				return nil, fmt.Errorf("opcua: points[%d].node_id: namespace %q not on the server (has %v)", i, uri, nsArr)
			}
			s = "ns=" + strconv.Itoa(idx) + ";" + rest
		}
		n, err := ua.ParseNodeID(s)
		if err != nil {
			return nil, fmt.Errorf("opcua: points[%d].node_id: %w", i, err)
		}
		out[i] = n
	}
	return out, nil
}

// limits reads the server's operation limits and combines them with the
// configured and learned caps. It reads MaxNodesPerRead alone first so that
// even the limit query respects the limit.
func (c *Client) limits(ctx context.Context, cl *opcua.Client) (Limits, error) {
	ids := []uint32{id.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
		id.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
		id.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse}
	vals := make([]uint32, len(ids))
	read := func(from, to int) error {
		req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnNeither}
		for _, n := range ids[from:to] {
			req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.NewNumericNodeID(0, n), AttributeID: ua.AttributeIDValue})
		}
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
		resp, err := cl.Read(rctx, req)
		if err != nil {
			return fmt.Errorf("opcua: read operation limits: %w", err)
		}
		for i, r := range resp.Results {
			if from+i < len(vals) && r != nil && r.Status == ua.StatusOK && r.Value != nil {
				vals[from+i] = toUint32(r.Value.Value())
			}
		}
		return nil
	}
	if err := read(0, 1); err != nil {
		return Limits{}, err
	}
	step := len(ids) - 1
	if vals[0] > 0 && int(vals[0]) < step {
		step = int(vals[0])
	}
	for i := 1; i < len(ids); i += step {
		if err := read(i, min(i+step, len(ids))); err != nil {
			return Limits{}, err
		}
	}
	c.mu.Lock()
	learned := c.learned
	c.mu.Unlock()
	return Limits{
		MaxNodesPerRead:          effective(vals[0], c.cfg.Limits.MaxNodesPerRead, learned.MaxNodesPerRead),
		MaxMonitoredItemsPerCall: effective(vals[1], c.cfg.Limits.MaxMonitoredItemsPerCall, learned.MaxMonitoredItemsPerCall),
		MaxNodesPerBrowse:        effective(vals[2], c.cfg.Limits.MaxNodesPerBrowse, learned.MaxNodesPerBrowse),
	}, nil
}

func effective(server, configured, learned uint32) uint32 {
	v := server
	if v == 0 {
		v = DefaultOperationLimit
	}
	if configured > 0 && configured < v {
		v = configured
	}
	if learned > 0 && learned < v {
		v = learned
	}
	return v
}

func toUint32(v any) uint32 {
	switch x := v.(type) {
	case uint32:
		return x
	case uint16:
		return uint32(x)
	case int32:
		if x > 0 {
			return uint32(x)
		}
	case uint64:
		if x < math.MaxUint32 {
			return uint32(x)
		}
	case int64:
		if x > 0 && x < math.MaxUint32 {
			return uint32(x)
		}
	}
	return 0
}

// learn halves a batch size after the server refused a batch of n.
func (c *Client) learn(err error, n int, field *uint32, name string) {
	if !errors.Is(err, ua.StatusBadTooManyOperations) || n <= 1 {
		return
	}
	c.mu.Lock()
	*field = uint32(max(1, n/2))
	v := *field
	c.mu.Unlock()
	c.log.Warn("server refused a batch despite its advertised limit; using a smaller batch from the next session", "limit", name, "batch", n, "next", v)
}

func (c *Client) subscriptionParams() *opcua.SubscriptionParameters {
	iv := c.cfg.PublishInterval
	keep := uint32(max(1, int(10*time.Second/iv)))
	return &opcua.SubscriptionParameters{Interval: iv, MaxKeepAliveCount: keep, LifetimeCount: 3 * keep * 10}
}

// monitor creates the monitored items in batches within the server limit.
// Items the server refuses are emitted Bad; items refused for their filter
// are retried once without it.
func (c *Client) monitor(ctx context.Context, sub *opcua.Subscription, nodes []*ua.NodeID, idx []int, lim Limits) error {
	batch := int(lim.MaxMonitoredItemsPerCall)
	var bad []Update
	var retry []int
	create := func(items []int, filters bool) error {
		for start := 0; start < len(items); start += batch {
			part := items[start:min(start+batch, len(items))]
			reqs := make([]*ua.MonitoredItemCreateRequest, len(part))
			for j, i := range part {
				reqs[j] = c.itemRequest(nodes[i], i, filters)
			}
			mctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
			resp, err := sub.Monitor(mctx, ua.TimestampsToReturnBoth, reqs...)
			cancel()
			if err == nil && resp.ResponseHeader != nil && resp.ResponseHeader.ServiceResult != ua.StatusOK {
				err = resp.ResponseHeader.ServiceResult
			}
			if err != nil {
				c.mu.Lock()
				field := &c.learned.MaxMonitoredItemsPerCall
				c.mu.Unlock()
				c.learn(err, len(part), field, "max_monitored_items_per_call")
				return fmt.Errorf("opcua: create %d monitored items: %w", len(part), err)
			}
			now := time.Now().UnixMilli()
			for j, r := range resp.Results {
				if j >= len(part) || r == nil || r.StatusCode == ua.StatusOK || r.StatusCode>>30 == 0 {
					continue
				}
				i := part[j]
				if filters && c.points[i].DeadbandType != "none" && isFilterError(r.StatusCode) {
					c.log.Warn("server refused the deadband filter; monitoring without it", "node", c.points[i].NodeID, "status", r.StatusCode.Error())
					retry = append(retry, i)
					continue
				}
				c.log.Warn("monitored item refused", "node", c.points[i].NodeID, "status", r.StatusCode.Error())
				c.m.bad(uint32(r.StatusCode))
				bad = append(bad, Update{Index: i, Status: uint32(r.StatusCode), Quality: telemetry.QualityBad, SourceTS: now})
			}
		}
		return nil
	}
	if err := create(idx, true); err != nil {
		return err
	}
	if len(retry) > 0 {
		if err := create(retry, false); err != nil {
			return err
		}
	}
	c.emit(bad)
	return nil
}

func isFilterError(s ua.StatusCode) bool {
	return s == ua.StatusBadFilterNotAllowed || s == ua.StatusBadMonitoredItemFilterUnsupported ||
		s == ua.StatusBadMonitoredItemFilterInvalid || s == ua.StatusBadDeadbandFilterInvalid
}

func (c *Client) itemRequest(n *ua.NodeID, i int, filters bool) *ua.MonitoredItemCreateRequest {
	p := c.points[i]
	params := &ua.MonitoringParameters{
		ClientHandle:     uint32(i),
		SamplingInterval: float64(p.SamplingInterval) / float64(time.Millisecond),
		QueueSize:        p.QueueSize,
		DiscardOldest:    true,
	}
	if filters && p.DeadbandType != "none" {
		dt := uint32(ua.DeadbandTypeAbsolute)
		if p.DeadbandType == "percent" {
			dt = uint32(ua.DeadbandTypePercent)
		}
		params.Filter = ua.NewExtensionObject(&ua.DataChangeFilter{Trigger: ua.DataChangeTriggerStatusValue, DeadbandType: dt, DeadbandValue: p.Deadband})
	}
	return &ua.MonitoredItemCreateRequest{
		// gopcua cannot encode a nil DataEncoding: send the empty name.
		ItemToMonitor:       &ua.ReadValueID{NodeID: n, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}},
		MonitoringMode:      ua.MonitoringModeReporting,
		RequestedParameters: params,
	}
}

// notifications turns publish responses into emitted batches.
func (c *Client) notifications(ctx context.Context, ch <-chan *opcua.PublishNotificationData) error {
	var us []Update
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-ch:
			if n == nil {
				continue
			}
			if n.Error != nil {
				return fmt.Errorf("opcua: subscription: %w", n.Error)
			}
			dc, ok := n.Value.(*ua.DataChangeNotification)
			if !ok {
				continue
			}
			now := time.Now()
			us = us[:0]
			var newest time.Time
			for _, it := range dc.MonitoredItems {
				if it == nil || int(it.ClientHandle) >= len(c.points) {
					continue
				}
				if it.Value != nil && it.Value.ServerTimestamp.After(newest) {
					newest = it.Value.ServerTimestamp
				}
				u := toUpdate(int(it.ClientHandle), it.Value, now)
				if u.Quality != telemetry.QualityGood {
					c.m.bad(u.Status)
				}
				us = append(us, u)
			}
			c.m.notifications.Add(float64(len(us)))
			c.m.publishes.Inc()
			if !newest.IsZero() {
				c.m.publishLatency.Observe(max(0, now.Sub(newest).Seconds()))
			}
			c.emit(us)
		}
	}
}

// poll reads a group of points every interval, one emitted batch per cycle.
func (c *Client) poll(ctx context.Context, cl *opcua.Client, nodes []*ua.NodeID, idx []int, iv time.Duration, lim Limits) error {
	t := time.NewTicker(iv)
	defer t.Stop()
	us := make([]Update, len(idx))
	batch := int(lim.MaxNodesPerRead)
	reqs := make([]*ua.ReadValueID, len(idx))
	for j, i := range idx {
		reqs[j] = &ua.ReadValueID{NodeID: nodes[i], AttributeID: ua.AttributeIDValue}
	}
	for {
		for start := 0; start < len(idx); start += batch {
			end := min(start+batch, len(idx))
			rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
			resp, err := cl.Read(rctx, &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth, NodesToRead: reqs[start:end]})
			cancel()
			if err == nil && len(resp.Results) != end-start {
				err = fmt.Errorf("%d results for %d nodes", len(resp.Results), end-start)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				c.m.readErr.Inc()
				c.mu.Lock()
				field := &c.learned.MaxNodesPerRead
				c.mu.Unlock()
				c.learn(err, end-start, field, "max_nodes_per_read")
				return fmt.Errorf("opcua: poll read of %d nodes: %w", end-start, err)
			}
			c.m.readOK.Inc()
			now := time.Now()
			for j, dv := range resp.Results {
				u := toUpdate(idx[start+j], dv, now)
				if u.Quality != telemetry.QualityGood {
					c.m.bad(u.Status)
				}
				us[start+j] = u
			}
		}
		c.emit(us)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// watchdog reads ServerStatus.State periodically: a silent network cut or
// an expired session shows up here even when no data is flowing.
func (c *Client) watchdog(ctx context.Context, cl *opcua.Client) error {
	t := time.NewTicker(c.cfg.Watchdog)
	defer t.Stop()
	req := &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.NewNumericNodeID(0, id.Server_ServerStatus_State), AttributeID: ua.AttributeIDValue}}}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		resp, err := cl.Read(rctx, req)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.m.readErr.Inc()
			return fmt.Errorf("opcua: watchdog read: %w", err)
		}
		c.m.readOK.Inc()
		if len(resp.Results) == 1 && resp.Results[0].Value != nil {
			if st, ok := resp.Results[0].Value.Value().(int32); ok && ua.ServerState(st) != ua.ServerStateRunning {
				return fmt.Errorf("opcua: server state %v", ua.ServerState(st))
			}
		}
	}
}

// Quality maps a StatusCode's severity bits to a quality.
func Quality(status uint32) telemetry.Quality {
	switch status >> 30 {
	case 0:
		return telemetry.QualityGood
	case 1:
		return telemetry.QualityUncertain
	default:
		return telemetry.QualityBad
	}
}

// statusTypeMismatch marks a value the driver cannot represent (arrays,
// structures) or a Good status without a value.
const statusTypeMismatch = uint32(0x80740000) // BadTypeMismatch

// toUpdate converts a DataValue.
func toUpdate(i int, dv *ua.DataValue, now time.Time) Update {
	u := Update{Index: i, SourceTS: now.UnixMilli()}
	if dv == nil {
		u.Status, u.Quality = statusTypeMismatch, telemetry.QualityBad
		return u
	}
	u.Status = uint32(dv.Status)
	u.Quality = Quality(u.Status)
	if dv.EncodingMask&ua.DataValueSourceTimestamp != 0 && !dv.SourceTimestamp.IsZero() {
		u.SourceTS = dv.SourceTimestamp.UnixMilli()
	}
	if !u.Quality.HasValue() {
		return u
	}
	var v any
	if dv.Value != nil {
		v = dv.Value.Value()
	}
	ok := true
	switch x := v.(type) {
	case float64:
		u.Num = x
	case float32:
		u.Num = float64(x)
	case int8:
		u.Num = float64(x)
	case uint8:
		u.Num = float64(x)
	case int16:
		u.Num = float64(x)
	case uint16:
		u.Num = float64(x)
	case int32:
		u.Num = float64(x)
	case uint32:
		u.Num = float64(x)
	case int64:
		u.Num = float64(x)
	case uint64:
		u.Num = float64(x)
	case bool:
		if x {
			u.Num = 1
		}
	case string:
		u.Str, u.IsStr = x, true
	case *ua.LocalizedText:
		if x != nil {
			u.Str, u.IsStr = x.Text, true
		} else {
			ok = false
		}
	default:
		ok = false
	}
	if !ok || (!u.IsStr && (math.IsNaN(u.Num) || math.IsInf(u.Num, 0))) {
		u.Status, u.Quality, u.Num = statusTypeMismatch, telemetry.QualityBad, 0
	}
	return u
}
