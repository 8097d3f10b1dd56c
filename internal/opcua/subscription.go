package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/smelterio/smelter/internal/backoff"
	"github.com/smelterio/smelter/internal/sample"
	"github.com/smelterio/smelter/internal/telemetry"
)

// The subscription timing (OPC UA Part 4, 5.13.1 and 5.13.5).
//
// A server answers a Publish request with a keep-alive after MaxKeepAliveCount
// publishing intervals without a notification; it answers BadTimeout when the
// request's TimeoutHint runs out first. With a keep-alive interval equal to
// the publish request timeout (gopcua's default: 10 s and 10 s) the two race
// on every quiet period. The driver therefore derives:
//
//	keep-alive count  k = max(1, keep_alive / publish_interval)
//	keep-alive period   (k+1) x publish_interval  (the +1: gopcua's server sends it one interval late)
//	publish timeout     max(request_timeout, PublishTimeoutFactor x keep-alive period)
//	lifetime count      LifetimeFactor x k        (>= 3 x k, Part 4, 5.13.2)
//
// so a keep-alive always arrives well within the publish request's timeout.
const (
	// PublishTimeoutFactor is how many keep-alive periods a Publish request
	// outlives.
	PublishTimeoutFactor = 3
	// LifetimeFactor is the lifetime count in keep-alive counts: the
	// subscription outlives this many keep-alive periods without a Publish
	// request (the specification's minimum is 3).
	LifetimeFactor = 10
	// MaxNotificationsPerPublish caps one publish response (gopcua's
	// default too); the server sends the rest in the next responses.
	MaxNotificationsPerPublish = 10000
	// maxSilentPublishes is how many Publish requests in a row may time out
	// (no answer, not even a keep-alive) before the session counts as lost:
	// one. A request's timeout is PublishTimeoutFactor keep-alive periods,
	// so its silence is already that many missed keep-alives (the
	// specification's sign of a lost subscription, Part 4, 5.13.1); three in
	// a row (the driver before review15 F4) let a server that keeps its
	// session but never answers Publish hold the device for 54 s by default,
	// past its worker's silence limit.
	maxSilentPublishes = 1
)

// ErrPublishSilent is wrapped by the session error when the server stopped
// answering Publish requests (no data, no keep-alive, no fault within the
// publish timeout) while its session may still answer other services: the
// subscription is lost (docs/opcua.md, "Session timing").
var ErrPublishSilent = errors.New("opcua: subscription silent")

// timing is the requested subscription timing and the publish timeout.
type timing struct {
	interval  time.Duration
	keepAlive uint32
	lifetime  uint32
	publish   time.Duration
}

func deriveTiming(cfg *Config) timing {
	iv := cfg.PublishInterval
	k := uint32(max(1, int64(cfg.KeepAlive/iv)))
	ka := time.Duration(k+1) * iv
	return timing{interval: iv, keepAlive: k, lifetime: LifetimeFactor * k,
		publish: max(cfg.RequestTimeout, PublishTimeoutFactor*ka)}
}

// SubscriptionTiming is the subscription timing the server revised.
type SubscriptionTiming struct {
	PublishingInterval time.Duration `json:"publishing_interval"`
	MaxKeepAliveCount  uint32        `json:"max_keep_alive_count"`
	LifetimeCount      uint32        `json:"lifetime_count"`
	PublishTimeout     time.Duration `json:"publish_timeout"`
}

// subscription is one created subscription as the server revised it.
type subscription struct {
	id uint32
	SubscriptionTiming
	// confirmed is when the server last confirmed every item of the
	// subscription unchanged, in Unix ns: a keep-alive, or a data-change
	// message that completes a publishing cycle (MoreNotifications false)
	// and whose every notification is tied to a subscribed point. Never a
	// service fault (review17 F1), nor a message with a notification of an
	// unknown client handle (review17 F2). The heartbeat re-reports values
	// only up to it.
	confirmed atomic.Int64
}

// confirmedWithin reports whether the server confirmed the subscription's
// items within d.
func (s *subscription) confirmedWithin(d time.Duration) bool {
	return time.Since(time.Unix(0, s.confirmed.Load())) <= d
}

// cycleInterval is the longest gap between two cycles of a healthy
// subscription: one keep-alive period.
func (s *subscription) cycleInterval() time.Duration {
	return time.Duration(s.MaxKeepAliveCount+1) * s.PublishingInterval
}

// send calls one service and reports whether the server itself answered
// (a service fault is an answer; a client-side timeout is not).
func send[T ua.Response](ctx context.Context, cl *opcua.Client, req ua.Request) (T, bool, error) {
	var resp T
	answered := false
	err := cl.Send(ctx, req, func(v ua.Response) error {
		answered = true
		r, ok := v.(T)
		if !ok {
			return fmt.Errorf("unexpected response %T", v)
		}
		resp = r
		return nil
	})
	return resp, answered, err
}

// subscribe creates the subscription with the derived timing.
func (c *Client) subscribe(ctx context.Context, cl *opcua.Client) (*subscription, error) {
	t := c.timing
	req := &ua.CreateSubscriptionRequest{
		RequestedPublishingInterval: float64(t.interval) / float64(time.Millisecond),
		RequestedLifetimeCount:      t.lifetime,
		RequestedMaxKeepAliveCount:  t.keepAlive,
		MaxNotificationsPerPublish:  MaxNotificationsPerPublish,
		PublishingEnabled:           true,
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	resp, _, err := send[*ua.CreateSubscriptionResponse](sctx, cl, req)
	if err != nil {
		return nil, fmt.Errorf("opcua: create subscription: %w", err)
	}
	s := &subscription{id: resp.SubscriptionID, SubscriptionTiming: SubscriptionTiming{
		PublishingInterval: time.Duration(resp.RevisedPublishingInterval * float64(time.Millisecond)),
		MaxKeepAliveCount:  resp.RevisedMaxKeepAliveCount,
		LifetimeCount:      resp.RevisedLifetimeCount,
		PublishTimeout:     t.publish,
	}}
	if s.PublishingInterval <= 0 {
		s.PublishingInterval = t.interval
	}
	s.confirmed.Store(time.Now().UnixNano())
	if ka := s.cycleInterval(); PublishTimeoutFactor*ka > t.publish {
		c.log.Warn("the server revised the subscription's keep-alive period close to the publish timeout; expect BadTimeout answers (survived, counted)",
			"keep_alive_period", ka, "publish_timeout", t.publish, "publishing_interval", s.PublishingInterval, "max_keep_alive_count", s.MaxKeepAliveCount)
	}
	c.setStatus(func(st *Status) { st.Subscription = s.SubscriptionTiming })
	return s, nil
}

// subSession is the subscription part of one session.
type subSession struct {
	c     *Client
	cl    *opcua.Client
	r     *runState
	sub   *subscription
	nodes *nodeTable
	lim   Limits

	// kicks asks the namespace watch for a check (a BadNodeIdUnknown
	// refusal may be a namespace that moved or came)
	kicks *nsKicks

	// refused holds the items the server refused, by point index; only the
	// monitor pass and retryRefused touch it, never concurrently.
	refused map[int]ua.StatusCode

	// probation (review15 F5): the previous session's subscription went
	// silent (ErrPublishSilent) and no subscription has answered twice
	// since. The cycles of this one are held until its second Publish
	// answer shows that data flows: a server that answers the first
	// Publish of each new subscription (the initial values) and then
	// never again would otherwise have its device born and dead again at
	// every reconnect. Held cycles are emitted in order on that answer
	// (their values with their own SourceTimestamps), dropped if the
	// session ends first.
	mu        sync.Mutex
	probation bool
	held      []sample.Cycle
}

// emit hands a cycle of the subscription on, or holds a copy of it while
// on probation.
func (s *subSession) emit(cyc *sample.Cycle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.probation {
		cp := *cyc
		cp.Samples = slices.Clone(cyc.Samples)
		s.held = append(s.held, cp)
		return
	}
	s.r.emit(cyc)
}

// proven ends the probation: the subscription answered a second Publish.
// The held cycles are emitted in order.
func (s *subSession) proven() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.probation {
		return
	}
	s.probation = false
	s.r.probation.Store(false)
	s.c.log.Info("opc ua subscription answers Publish again after it went silent; its values are published", "held_cycles", len(s.held))
	for i := range s.held {
		s.r.emit(&s.held[i])
	}
	s.held = nil
}

// cycleBuffers are the publish loops' cycle buffers, shared by the
// sessions of a process: a cycle is valid only during emit, so a buffer
// is needed only from a response's decoding to the end of its emit (a
// 1,000-item response was ~120 KB of garbage per publish when the slice
// grew by appending; a buffer per session held 48 bytes a point for the
// session's life: 20 sessions of 1,000 nodes ~1 MB, of which a few are in
// use at any time; issue 17). A cache, not state: what it holds is
// overwritten before it is read.
var cycleBuffers = sync.Pool{New: func() any { return new([]sample.Sample) }}

// monitor creates the monitored items of idx in batches within the server
// limit. Items the server refuses are emitted Bad (not Silent: the server
// answered) with its StatusCode and kept for retryRefused; items refused
// for their deadband filter are created again without it.
func (s *subSession) monitor(ctx context.Context, idx []int, filters bool) error {
	c := s.c
	batch := int(s.lim.MaxMonitoredItemsPerCall)
	var bad []sample.Sample
	var unfiltered []int
	for from := 0; from < len(idx); from += batch {
		part := idx[from:min(from+batch, len(idx))]
		reqs := make([]*ua.MonitoredItemCreateRequest, len(part))
		for j, i := range part {
			n, err := s.nodes.at(i)
			if err != nil {
				return err
			}
			reqs[j] = c.itemRequest(n, i, filters)
		}
		mctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		resp, _, err := send[*ua.CreateMonitoredItemsResponse](mctx, s.cl, &ua.CreateMonitoredItemsRequest{
			SubscriptionID: s.sub.id, TimestampsToReturn: ua.TimestampsToReturnBoth, ItemsToCreate: reqs})
		cancel()
		if err == nil && len(resp.Results) != len(part) {
			err = fmt.Errorf("%d results for %d items", len(resp.Results), len(part))
		}
		if err != nil {
			c.mu.Lock()
			field := &c.learned.MaxMonitoredItemsPerCall
			c.mu.Unlock()
			c.learn(err, len(part), field, "max_monitored_items_per_call")
			return fmt.Errorf("opcua: create %d monitored items: %w", len(part), err)
		}
		for j, res := range resp.Results {
			i := part[j]
			st := ua.StatusBadUnexpectedError
			if res != nil {
				st = res.StatusCode
			}
			if st>>30 != 2 {
				if prev, ok := s.refused[i]; ok {
					c.log.Info("monitored item accepted after a refusal", "node", c.points[i].NodeID, "was", prev.Error())
					delete(s.refused, i)
				}
				continue
			}
			if filters && c.points[i].DeadbandType != DeadbandNone && isFilterError(st) {
				c.log.Warn("server refused the deadband filter; monitoring without it", "node", c.points[i].NodeID, "status", st.Error())
				unfiltered = append(unfiltered, i)
				continue
			}
			if prev, ok := s.refused[i]; !ok || prev != st {
				c.log.Warn("monitored item refused; retrying with backoff", "node", c.points[i].NodeID, "status", st.Error())
			}
			s.refused[i] = st
			c.m.bad(uint32(st))
			if st == ua.StatusBadNodeIDUnknown && s.kicks != nil && namesNamespace(c.points[i].NodeID) {
				kick(s.kicks.soon, "refused")
			}
			bad = append(bad, sample.Sample{Index: i, Quality: telemetry.QualityBad, Status: uint32(st)})
		}
	}
	if len(unfiltered) > 0 {
		if err := s.monitor(ctx, unfiltered, false); err != nil {
			return err
		}
	}
	n := len(s.refused)
	c.setStatus(func(st *Status) { st.Refused = n })
	if len(bad) > 0 {
		s.emit(&sample.Cycle{Samples: bad, Start: time.Now(), Interval: s.sub.cycleInterval(), Replied: true, Err: firstBad(bad)})
	}
	return nil
}

// retryRefused creates the refused monitored items again with backoff
// (backoff_min doubling to backoff_max) until the server accepts them: a
// server still loading its address space after a restart answers
// BadNodeIdUnknown for nodes that appear seconds later.
func (s *subSession) retryRefused(ctx context.Context) error {
	bo := backoff.Backoff{Min: s.c.cfg.BackoffMin, Max: s.c.cfg.BackoffMax}
	for len(s.refused) > 0 {
		if !backoff.Sleep(ctx, bo.Next()) {
			return nil
		}
		idx := make([]int, 0, len(s.refused))
		for i := range s.c.points {
			if _, ok := s.refused[i]; ok {
				idx = append(idx, i)
			}
		}
		if err := s.monitor(ctx, idx, true); err != nil && !stopped(ctx) {
			return err
		}
	}
	return nil
}

// publishLoop keeps one Publish request outstanding, acknowledges what it
// received, and turns each response into a cycle: data changes into
// samples, a keep-alive into an empty cycle that says the server is there.
//
// Only a good PublishResponse (data or keep-alive) shows that the
// subscription delivers. A service fault (a ServiceFault, or a
// PublishResponse whose ServiceResult is Bad: BadTimeout when the
// request's TimeoutHint ran out before a keep-alive,
// BadTooManyPublishRequests) says nothing about values (review17 F1): it
// confirms nothing, and a subscription answered only with faults for
// silentAfter (at least the publish timeout, PublishTimeoutFactor
// keep-alive periods) is silent (ErrPublishSilent) like one not answered
// at all: the session ends, its points go stale once and the next
// subscription is on probation.
func (s *subSession) publishLoop(ctx context.Context) error {
	c := s.c
	var acks []*ua.SubscriptionAcknowledgement
	silent, answers := 0, 0
	silentAfter := max(s.sub.PublishTimeout, PublishTimeoutFactor*s.sub.cycleInterval())
	good := time.Now() // the last good PublishResponse (or the subscription's creation)
	for {
		req := &ua.PublishRequest{SubscriptionAcknowledgements: acks}
		if req.SubscriptionAcknowledgements == nil {
			req.SubscriptionAcknowledgements = []*ua.SubscriptionAcknowledgement{}
		}
		// gopcua gives up on the request timeout (the publish timeout
		// here) plus 250 ms; the context is only a backstop, and ends the
		// request when the subscription has been without a good answer
		// for silentAfter.
		left := time.Until(good.Add(silentAfter))
		if left <= 0 {
			return fmt.Errorf("%w: no data or keep-alive for %v, only service faults (%d publish request(s) faulted; timeout %v, keep-alive period %v)",
				ErrPublishSilent, time.Since(good).Round(time.Millisecond), silent, s.sub.PublishTimeout, s.sub.cycleInterval())
		}
		pctx, cancel := context.WithTimeout(ctx, min(s.sub.PublishTimeout+time.Second, left))
		resp, answered, err := send[*ua.PublishResponse](pctx, s.cl, req)
		cancel()
		if stopped(ctx) {
			return nil
		}
		var st ua.StatusCode
		switch {
		case err == nil:
			silent = 0
			good = time.Now()
			if answers++; answers >= 2 {
				s.proven()
			}
		case answered && errors.As(err, &st):
			// The server answered with a fault: no value is confirmed,
			// and it does not end the subscription's silence.
			silent++
			name := faultName(st)
			c.m.faults.WithLabelValues(c.id, "Publish", name).Inc()
			c.setStatus(func(st *Status) { st.ServiceFaults++ })
			switch st {
			case ua.StatusBadTimeout:
				c.log.Debug("publish request answered BadTimeout; continuing", "publish_timeout", s.sub.PublishTimeout)
			case ua.StatusBadTooManyPublishRequests:
				if !backoff.Sleep(ctx, s.sub.PublishingInterval) {
					return nil
				}
			default:
				// The subscription or session is gone on the server
				// (BadSubscriptionIdInvalid, BadSessionIdInvalid, ...) or
				// refuses to deliver: a new session, on probation.
				return fmt.Errorf("%w: publish answered %w", ErrPublishSilent, st)
			}
			continue
		case errors.Is(err, ua.StatusBadTimeout) || errors.Is(err, context.DeadlineExceeded):
			// No answer at all within the publish timeout: not even a
			// keep-alive. A few in a row mean the server is gone.
			silent++
			if silent >= maxSilentPublishes {
				return fmt.Errorf("%w: no answer to %d publish request(s) in a row (timeout %v, keep-alive period %v): %w",
					ErrPublishSilent, silent, s.sub.PublishTimeout, s.sub.cycleInterval(), err)
			}
			continue
		default:
			return fmt.Errorf("opcua: publish: %w", err)
		}
		acks = nil
		c.m.publishes.Inc() // every good answer: data changes and keep-alives
		msg := resp.NotificationMessage
		if msg == nil || len(msg.NotificationData) == 0 {
			// A keep-alive: the server has no notification queued for
			// any item of the subscription (Part 4, 5.13.1.1), so every
			// point is confirmed unchanged.
			s.sub.confirmed.Store(time.Now().UnixNano())
			s.emit(&sample.Cycle{Start: time.Now(), Interval: s.sub.cycleInterval(), Replied: true})
			continue
		}
		acks = []*ua.SubscriptionAcknowledgement{{SubscriptionID: resp.SubscriptionID, SequenceNumber: msg.SequenceNumber}}
		if err := s.notifications(ctx, msg, resp.MoreNotifications); err != nil {
			return err
		}
	}
}

// faultName is the metric label of a service fault's status.
func faultName(st ua.StatusCode) string {
	switch st {
	case ua.StatusBadTimeout:
		return "BadTimeout"
	case ua.StatusBadTooManyPublishRequests:
		return "BadTooManyPublishRequests"
	}
	return statusHex(uint32(st))
}

// notifications turns one NotificationMessage into a cycle. What it
// confirms (OPC UA Part 4, 5.13.1.1: at the end of a publishing interval
// the server sends every notification queued for the subscription, a
// keep-alive only when there is none): a notified item gets its value; the
// items not in the message had nothing queued, so the message confirms
// them unchanged like a keep-alive, but only when it holds data changes
// (not only a status change), completes the cycle (more false: otherwise
// the rest follows in the next response) and every notification in it is
// tied to a subscribed point by its client handle.
// A notification of an unknown handle is discarded and counted; the
// message then confirms nothing of the other points, and no later answer
// confirms a point until the point is notified again: the notification may
// have been meant for any of them (runState.forgetReported).
func (s *subSession) notifications(ctx context.Context, msg *ua.NotificationMessage, more bool) error {
	c := s.c
	now, recv := time.Now(), c.received()
	n := 0
	for _, eo := range msg.NotificationData {
		if eo != nil {
			if dc, ok := eo.Value.(*ua.DataChangeNotification); ok {
				n += len(dc.MonitoredItems)
			}
		}
	}
	buf := cycleBuffers.Get().(*[]sample.Sample)
	ss := slices.Grow((*buf)[:0], n)
	defer func() {
		// kept up to one sample per point: a rare larger response (queued
		// values) is not held on to
		if cap(ss) <= max(len(c.points), 1024) {
			*buf = ss[:0]
		} else {
			*buf = nil
		}
		cycleBuffers.Put(buf)
	}()
	var newest time.Time
	unknown := 0             // notifications of no subscribed point
	data := false            // the message holds data changes (not only a status change)
	var changed []int        // points whose samples carry SemanticsChanged
	var held []sample.Sample // those samples, as the server sent them
	for _, eo := range msg.NotificationData {
		if eo == nil {
			continue
		}
		switch n := eo.Value.(type) {
		case *ua.DataChangeNotification:
			data = true
			for _, it := range n.MonitoredItems {
				if it == nil || !c.subscribed(it.ClientHandle) {
					unknown++
					continue
				}
				if it.Value != nil && it.Value.ServerTimestamp.After(newest) {
					newest = it.Value.ServerTimestamp
				}
				smp := c.sampleAt(int(it.ClientHandle), it.Value, recv)
				if smp.Status&statusSemanticsChanged != 0 || slices.Contains(changed, smp.Index) {
					// The node's metadata changed (Part 4, 7.39): its unit
					// may be another one. Not published until re-read.
					if !slices.Contains(changed, smp.Index) {
						changed = append(changed, smp.Index)
					}
					held = append(held, smp)
					smp.Quality, smp.Num, smp.Str, smp.IsStr = telemetry.QualityBad, 0, "", false
				}
				if smp.Quality != telemetry.QualityGood {
					c.m.bad(smp.Status)
				}
				ss = append(ss, smp)
			}
		case *ua.StatusChangeNotification:
			// A Bad status ends the subscription (BadTimeout: its
			// lifetime ran out); nothing more comes on it.
			if n.Status>>30 == 2 {
				return fmt.Errorf("opcua: subscription %d status change: %w", s.sub.id, n.Status)
			}
			c.log.Info("subscription status change", "status", n.Status.Error())
		}
	}
	c.m.notifications.Add(float64(len(ss)))
	if unknown > 0 {
		// The discarded notification may have been any point's change:
		// no point's last value is repeated until the point is reported
		// again, not after a later keep-alive or the message that
		// completes a cycle this one began (MoreNotifications) either.
		s.r.forgetReported()
		c.m.m.unknownHandles.WithLabelValues(c.id).Add(float64(unknown))
		var first uint32
		for _, eo := range msg.NotificationData {
			if dc, ok := eo.Value.(*ua.DataChangeNotification); eo != nil && ok {
				for _, it := range dc.MonitoredItems {
					if it != nil && !c.subscribed(it.ClientHandle) {
						first = it.ClientHandle
						break
					}
				}
			}
		}
		c.handleLog.Log(ctx, c.log, slog.LevelWarn, "opc ua notification with a client handle of no subscribed point; discarded, and its publish response confirms no other point unchanged",
			"unknown", unknown, "client_handle", first, "sequence_number", msg.SequenceNumber)
	} else if data && !more {
		s.sub.confirmed.Store(now.UnixNano())
	}
	if lat := now.Sub(newest); !newest.IsZero() && lat >= 0 {
		// A server clock ahead of the gateway's gives no latency: its
		// observations were clamped to 0, a histogram whose sum stayed 0
		// for an hour of traffic (review15).
		c.m.publishLatency.Observe(lat.Seconds())
	}
	s.emit(&sample.Cycle{Samples: ss, Start: now, Interval: s.sub.cycleInterval(), Replied: true, Err: firstBad(ss)})
	if len(changed) > 0 {
		return s.semanticsChanged(ctx, changed, held)
	}
	return nil
}

// subscribed reports whether client handle h is a subscribed point's (the
// handle of a monitored item is its point's index, itemRequest).
func (c *Client) subscribed(h uint32) bool {
	return int64(h) < int64(len(c.points)) && c.points[h].Mode == ModeSubscribe && c.points[h].NodeID != ""
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
	if filters && p.DeadbandType != DeadbandNone {
		dt := uint32(ua.DeadbandTypeAbsolute)
		if p.DeadbandType == DeadbandPercent {
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

// statusSemanticsChanged is the StatusCode info bit a server sets on the
// first value after a change of the variable's metadata, its
// EngineeringUnits say (OPC UA Part 4, 7.39: "Clients should not process
// the data value until they re-read the metadata").
const statusSemanticsChanged = 0x4000

// semanticsChanged handles the points of one notification message whose
// samples carried SemanticsChanged (already emitted Bad): it re-reads the
// units on this session as at its start (OnUnits gets them when they
// changed, before any later value), then emits the held samples with the
// bit cleared, in the unit just read. Points whose unit is configured keep
// it (logged). A failed re-read fails the session: values in a unit that
// may be stale are worse than none.
func (s *subSession) semanticsChanged(ctx context.Context, changed []int, held []sample.Sample) error {
	c := s.c
	fromNode := false
	for _, i := range changed {
		if c.points[i].UnitFromNode {
			fromNode = true
		} else {
			c.unitChangeLog.Log(ctx, c.log, slog.LevelWarn, "opc ua server reports changed semantics (SemanticsChanged) on a point with a configured unit; keeping the configured unit",
				"node", c.points[i].NodeID)
		}
	}
	if fromNode {
		if _, err := c.units(ctx, s.cl, s.nodes, s.lim, s.r); err != nil {
			if stopped(ctx) {
				return nil
			}
			return err
		}
		c.unitReadLog.Log(ctx, c.log, slog.LevelInfo, "opc ua engineering units re-read after SemanticsChanged", "points", len(changed))
	}
	for k := range held {
		h := &held[k]
		h.Status &^= statusSemanticsChanged
		h.Quality = Quality(h.Status)
	}
	s.emit(&sample.Cycle{Samples: held, Start: time.Now(), Interval: s.sub.cycleInterval(), Replied: true, Err: firstBad(held)})
	return nil
}
