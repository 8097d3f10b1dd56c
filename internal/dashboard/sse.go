package dashboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// heartbeat keeps idle streams (and proxies) alive.
const heartbeat = 15 * time.Second

// events streams live updates as Server-Sent Events:
//
//	event: assets            data: [AssetOut...]          changed assets, coalesced per tick; the first: every asset
//	event: gateways          data: [GatewayView...]       gateways=list (the default): the whole list, when any gateway changed
//	event: gateways.snapshot data: GatewaySnapshotEvent   gateways=delta: at connect, and for a stream that fell behind
//	event: gateways.delta    data: GatewayDeltaEvent      gateways=delta: the gateways changed (counters alone: at their refresh), added and removed, per tick
//	event: alert             data: alert record           id: event id (<epoch>-<n>, Live.EventID)
//	event: kpi               data: KPI result             id: event id
//	event: resync            data: {}                     events were missed: reload state
//
// The first tick sends every asset the collector holds (those restored
// from its state bucket too). A reconnecting client sends Last-Event-ID
// and receives the alert and KPI events it missed, or resync when they
// already left the log or the id is not one of this process's (another
// process or replica, a restart, a malformed id); with gateways=delta it
// gets a fresh gateway snapshot at every connect.
//
// Streams are capped (Options.MaxStreams, MaxStreamsPerClient: 503 with
// Retry-After beyond), every write must complete within
// StreamWriteTimeout or the stream is closed, and the large events (the
// gateway list, the gateway snapshot, the first assets event) are encoded
// once per tick and shared by every stream as the same bytes.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "gateways")
	mode := q.v.Get("gateways")
	if q.v.Has("gateways") && mode != "list" && mode != "delta" {
		q.fail("gateways", fmt.Sprintf("%q is not a gateway mode (want list or delta)", mode))
	}
	if !q.ok(w) {
		return
	}
	release := s.admit(w, r)
	if release == nil {
		return
	}
	defer release()
	delta := mode == "delta"
	out := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: s.opts.StreamWriteTimeout, stats: s.opts.Streams}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	lastID := s.live.LastEventID()
	resync := false
	if v := strings.TrimSpace(r.Header.Get("Last-Event-ID")); v != "" {
		if n, ok := s.live.PlaceEventID(v); ok {
			lastID = n
		} else {
			resync = true // not an id of this process's log: the client reloads
		}
	}
	var assetVer, gwVer uint64
	first := true
	tick, stop := s.ticker()
	defer stop()
	out.buf.WriteString("retry: 2000\n\n")
	if delta {
		gwVer = s.writeGatewaySnapshot(out, 0)
	}
	for {
		evs, wake, lost := s.live.EventsSince(lastID)
		if lost || resync {
			out.buf.WriteString("event: resync\ndata: {}\n\n")
			resync = false
		}
		for _, e := range evs {
			fmt.Fprintf(&out.buf, "id: %s\nevent: %s\ndata: %s\n\n", s.live.EventID(e.ID), e.Type, e.Data)
			lastID = e.ID
		}
		if !out.flush() {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-wake:
		case <-tick:
			if first {
				assetVer = s.writeAllAssets(out)
				first = false
			} else {
				assetVer = s.writeChanges(out, assetVer)
			}
			if delta {
				gwVer = s.writeGatewayDelta(out, gwVer)
			} else {
				gwVer = s.writeGatewayList(out, gwVer)
			}
		}
	}
}

// sseWriter is an event stream's output: its own small buffer and, in
// order before it, events shared with other streams (sharedEvent), which
// it writes as they are, never copied.
type sseWriter struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	timeout   time.Duration
	stats     *StreamStats
	buf       bytes.Buffer
	pending   [][]byte // written before buf
	lastWrite time.Time
}

// shared queues a shared event after what is buffered.
func (o *sseWriter) shared(b []byte) {
	if o.buf.Len() > 0 {
		o.pending = append(o.pending, bytes.Clone(o.buf.Bytes()))
		o.buf.Reset()
	}
	o.pending = append(o.pending, b)
}

// maxKeptBuf is the largest buffer a stream keeps between writes.
const maxKeptBuf = 64 << 10

// flush writes what is queued (a heartbeat comment when nothing was for
// heartbeat) within the write timeout; false: the stream is broken or its
// client did not take the bytes in time (counted), and must end.
func (o *sseWriter) flush() bool {
	if o.buf.Len() == 0 && len(o.pending) == 0 {
		if time.Since(o.lastWrite) < heartbeat {
			return true
		}
		o.buf.WriteString(": ping\n\n")
	}
	_ = o.rc.SetWriteDeadline(time.Now().Add(o.timeout)) // not supported: no deadline
	var err error
	for _, p := range o.pending {
		if _, err = o.w.Write(p); err != nil {
			break
		}
	}
	if err == nil {
		_, err = o.w.Write(o.buf.Bytes())
	}
	if err == nil {
		err = o.rc.Flush()
	}
	clear(o.pending)
	o.pending = o.pending[:0]
	o.buf.Reset()
	if o.buf.Cap() > maxKeptBuf {
		o.buf = bytes.Buffer{}
	}
	o.lastWrite = time.Now()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		o.stats.timedOut.Add(1)
	}
	return err == nil
}

// ticker returns the stream's tick channel and its stop function: a
// ticker of Options.Tick, or the test's channel.
func (s *Server) ticker() (<-chan time.Time, func()) {
	if s.newTicker != nil {
		return s.newTicker()
	}
	t := time.NewTicker(s.opts.Tick)
	return t.C, t.Stop
}

// writeChanges queues the assets changed since version v, if any, and
// returns the version it reflects. The event is shared (changeChain): one
// encoding per tick serves every stream, whatever its gateways form (the
// assets events do not depend on it).
func (s *Server) writeChanges(out *sseWriter, v uint64) uint64 {
	data, cur, _ := s.changes.get(v, s.opts.Tick, &s.opts.Streams.changeEncodes, s.encodeChanges)
	if data != nil {
		out.shared(data)
	}
	return cur
}

// encodeChanges encodes an assets event of the assets changed after
// version v (nil when none) and returns the version it reflects: taken
// before the assets are read, so a change made meanwhile comes again in
// the next event.
func (s *Server) encodeChanges(v uint64) ([]byte, uint64, bool) {
	keys, cur := s.live.AssetsChangedSince(v)
	if len(keys) == 0 {
		return nil, cur, true
	}
	sum := summarize(s.src.Alerts(true))
	now := s.now()
	res := make([]AssetOut, 0, len(keys))
	if len(keys) > 32 {
		want := make(map[assetKey]bool, len(keys))
		for _, k := range keys {
			want[k] = true
		}
		for _, av := range s.src.Assets() {
			k := assetKey{av.Site, av.ID}
			if want[k] {
				res = append(res, s.assetOut(&av, sum[k], now, false))
			}
		}
	} else {
		for _, k := range keys {
			if av, ok := s.src.Asset(k[0], k[1]); ok {
				res = append(res, s.assetOut(&av, sum[k], now, false))
			}
		}
	}
	if len(res) == 0 {
		return nil, cur, true
	}
	sortAssets(res)
	return encodeEvent("assets", res), cur, true
}

// writeAllAssets queues the stream's first assets event: every asset the
// collector holds (GET /api/v1/assets' list, those restored from its
// state bucket that sent nothing since too; review4 F1), shared with the
// streams that start within the same tick. It returns the version the
// stream continues from: taken before the list, so a change made while
// it is built comes again in the next event.
func (s *Server) writeAllAssets(out *sseWriter) uint64 {
	data, ver := s.allAssets.get(0, s.opts.Tick, s.opts.Streams, func() ([]byte, uint64) {
		ver := s.live.Version()
		sum := summarize(s.src.Alerts(true))
		now := s.now()
		avs := s.src.Assets()
		res := make([]AssetOut, 0, len(avs))
		for i := range avs {
			res = append(res, s.assetOut(&avs[i], sum[assetKey{avs[i].Site, avs[i].ID}], now, false))
		}
		if len(res) == 0 {
			return nil, ver
		}
		sortAssets(res)
		return encodeEvent("assets", res), ver
	})
	if data != nil {
		out.shared(data)
	}
	return ver
}

// writeGatewayList queues the whole gateway list (gateways=list) when a
// gateway changed after version v, and returns the version it reflects.
// The list is encoded once per tick for every stream (review4 F10: 40 ms
// of CPU per stream per tick at MaxGateways before).
func (s *Server) writeGatewayList(out *sseWriter, v uint64) uint64 {
	changed, cur := s.live.GatewaysChangedSince(v)
	if !changed {
		return cur
	}
	data, ver := s.gwList.get(v, s.opts.Tick, s.opts.Streams, func() ([]byte, uint64) {
		gws, _, ver := s.live.GatewaySnapshot()
		return encodeEvent("gateways", gws), ver
	})
	out.shared(data)
	return ver
}

// GatewaySnapshotEvent is the data of a gateways.snapshot event: the
// whole gateway list, sorted by id.
type GatewaySnapshotEvent struct {
	// Now is the server's wall time (Unix ms) the views were taken at: a
	// client judges ages on the server's clock, as its own clock plus the
	// offset Now - (its clock at arrival), never on its own clock alone.
	Now int64 `json:"now"`
	// SilentAfterMS is how long (ms) a gateway may send nothing before it
	// is shown silent: a client turns a gateway silent by itself when
	// server time - last_recv exceeds it, with no message from the server.
	SilentAfterMS int64 `json:"silent_after_ms"`
	// ClockToleranceMS is how far (ms) a gateway's clock_offset_ms may lie
	// ahead or behind before its clock_skew marks it (0: nothing marked).
	ClockToleranceMS int64 `json:"clock_tolerance_ms"`
	// RefreshMS is how long (ms) the deltas may hold back a gateway whose
	// only change is its counters and times (last_seq, batches,
	// last_ts_gw, last_recv; RefreshInterval): a client's counters lag by
	// up to it plus a tick. Any other change comes in the next delta.
	RefreshMS int64         `json:"refresh_ms"`
	Gateways  []GatewayView `json:"gateways"`
}

// GatewayDeltaEvent is the data of a gateways.delta event: what changed
// in the gateway list since the stream's previous gateway event. A client
// applies Removed, then replaces or adds each of Changed by id.
type GatewayDeltaEvent struct {
	Now int64 `json:"now"` // as in GatewaySnapshotEvent
	// Changed are the gateways added or changed in what their row shows
	// (site, status, assets, births, deaths, clock_skew), and those whose
	// counters and times (clock_offset_ms, clock_ahead_total included)
	// changed and came due for their refresh (RefreshMS), as
	// of Now.
	Changed []GatewayView `json:"changed"`
	// Removed are ids dropped from the list (evicted at MaxGateways).
	Removed []string `json:"removed"`
}

// writeGatewaySnapshot queues a gateways.snapshot event that reflects a
// version after v and returns that version. The snapshot is encoded once
// per tick and shared by the streams that need one (at connect, or
// behind the removal log).
func (s *Server) writeGatewaySnapshot(out *sseWriter, v uint64) uint64 {
	data, ver := s.gwSnap.get(v, s.opts.Tick, s.opts.Streams, func() ([]byte, uint64) {
		gws, now, ver := s.live.GatewaySnapshot()
		return encodeEvent("gateways.snapshot", GatewaySnapshotEvent{Now: now, SilentAfterMS: s.live.SilentAfter().Milliseconds(),
			ClockToleranceMS: s.live.ClockTolerance().Milliseconds(),
			RefreshMS:        RefreshInterval.Milliseconds(), Gateways: gws}), ver
	})
	out.shared(data)
	return ver
}

// writeGatewayDelta queues a gateways.delta event of the changes after
// version v, if any, and returns the version it reflects. The event is
// shared as the assets events are (changeChain: one encoding a tick for
// every delta stream; a delta of (from, to] serves a stream at any
// version in [from, to): it replaces gateways it may already hold by
// their current rows and removes ids it already removed). A stream that
// fell behind the removal log gets a snapshot instead.
func (s *Server) writeGatewayDelta(out *sseWriter, v uint64) uint64 {
	data, cur, ok := s.gwDeltas.get(v, s.opts.Tick, &s.opts.Streams.deltaEncodes, s.encodeGatewayDelta)
	if !ok {
		return s.writeGatewaySnapshot(out, v)
	}
	if data != nil {
		out.shared(data)
	}
	return cur
}

// encodeGatewayDelta encodes a gateways.delta event of the changes after
// version v (nil when none) and returns the version it reflects; ok is
// false when v is behind the removal log (Live.GatewayChanges).
func (s *Server) encodeGatewayDelta(v uint64) ([]byte, uint64, bool) {
	changed, removed, now, cur, ok := s.live.GatewayChanges(v)
	if !ok || len(changed) == 0 && len(removed) == 0 {
		return nil, cur, ok
	}
	if changed == nil {
		changed = []GatewayView{}
	}
	if removed == nil {
		removed = []string{}
	}
	return encodeEvent("gateways.delta", GatewayDeltaEvent{Now: now, Changed: changed, Removed: removed}), cur, true
}

// encodeEvent returns the whole event of type typ with data v, in one
// allocation of its size besides the encoding's (a shared event: no
// buffer grown by doubling); nil when v does not encode.
func encodeEvent(typ string, v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	b := make([]byte, 0, len("event: \ndata: \n\n")+len(typ)+len(data))
	b = append(b, "event: "...)
	b = append(b, typ...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}
