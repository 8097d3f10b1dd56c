package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// heartbeat keeps idle streams (and proxies) alive.
const heartbeat = 15 * time.Second

// events streams live updates as Server-Sent Events:
//
//	event: assets            data: [AssetOut...]          changed assets, coalesced per tick
//	event: gateways          data: [GatewayView...]       gateways=list (the default): the whole list, when any gateway changed
//	event: gateways.snapshot data: GatewaySnapshotEvent   gateways=delta: at connect, and for a stream that fell behind
//	event: gateways.delta    data: GatewayDeltaEvent      gateways=delta: the gateways changed (counters alone: at their refresh), added and removed, per tick
//	event: alert             data: alert record           id: event id
//	event: kpi               data: KPI result             id: event id
//	event: resync            data: {}                     events were missed: reload state
//
// The first tick sends every asset. A reconnecting client sends
// Last-Event-ID and receives the alert and KPI events it missed, or resync
// when they already left the log; with gateways=delta it gets a fresh
// gateway snapshot at every connect.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r, "gateways")
	mode := q.v.Get("gateways")
	if mode != "" && mode != "list" && mode != "delta" {
		q.fail("gateways", fmt.Sprintf("%q is not a gateway mode (want list or delta)", mode))
	}
	if !q.ok(w) {
		return
	}
	delta := mode == "delta"
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	lastID := s.live.LastEventID()
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil && n <= lastID {
			lastID = n
		}
	}
	var assetVer, gwVer uint64
	var buf bytes.Buffer
	tick, stop := s.ticker()
	defer stop()
	lastWrite := time.Now()
	flush := func() bool {
		if buf.Len() == 0 {
			if time.Since(lastWrite) < heartbeat {
				return true
			}
			buf.WriteString(": ping\n\n")
		}
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		if err == nil {
			err = rc.Flush()
		}
		lastWrite = time.Now()
		return err == nil
	}
	buf.WriteString("retry: 2000\n\n")
	if delta {
		gwVer = s.writeGatewaySnapshot(&buf)
	}
	for {
		evs, wake, lost := s.live.EventsSince(lastID)
		if lost {
			buf.WriteString("event: resync\ndata: {}\n\n")
		}
		for _, e := range evs {
			fmt.Fprintf(&buf, "id: %d\nevent: %s\ndata: %s\n\n", e.ID, e.Type, e.Data)
			lastID = e.ID
		}
		if !flush() {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-wake:
		case <-tick:
			assetVer = s.writeChanges(&buf, assetVer, !delta)
			if delta {
				gwVer = s.writeGatewayDelta(&buf, gwVer)
			}
		}
	}
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

// writeChanges appends the assets changed since version v and, with
// gatewayList, the whole gateway list when any gateway changed.
func (s *Server) writeChanges(buf *bytes.Buffer, v uint64, gatewayList bool) uint64 {
	keys, gws, cur := s.live.ChangedSince(v)
	if len(keys) > 0 {
		sum := summarize(s.src.Alerts(true))
		now := s.now()
		out := make([]AssetOut, 0, len(keys))
		if len(keys) > 32 {
			want := make(map[assetKey]bool, len(keys))
			for _, k := range keys {
				want[k] = true
			}
			for _, av := range s.src.Assets() {
				k := assetKey{av.Site, av.ID}
				if want[k] {
					out = append(out, s.assetOut(&av, sum[k], now, false))
				}
			}
		} else {
			for _, k := range keys {
				if av, ok := s.src.Asset(k[0], k[1]); ok {
					out = append(out, s.assetOut(&av, sum[k], now, false))
				}
			}
		}
		sortAssets(out)
		if len(out) > 0 {
			writeEvent(buf, "assets", out)
		}
	}
	if gws && gatewayList {
		writeEvent(buf, "gateways", s.live.Gateways())
	}
	return cur
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
	// (site, status, assets, births, deaths), and those whose counters
	// and times changed and came due for their refresh (RefreshMS), as
	// of Now.
	Changed []GatewayView `json:"changed"`
	// Removed are ids dropped from the list (evicted at MaxGateways).
	Removed []string `json:"removed"`
}

// writeGatewaySnapshot appends a gateways.snapshot event and returns the
// version it reflects.
func (s *Server) writeGatewaySnapshot(buf *bytes.Buffer) uint64 {
	gws, now, ver := s.live.GatewaySnapshot()
	writeEvent(buf, "gateways.snapshot", GatewaySnapshotEvent{Now: now, SilentAfterMS: SilentAfter.Milliseconds(),
		RefreshMS: RefreshInterval.Milliseconds(), Gateways: gws})
	return ver
}

// writeGatewayDelta appends a gateways.delta event of the changes after
// version v, if any, and returns the version it reflects. A stream that
// fell behind the removal log gets a snapshot instead.
func (s *Server) writeGatewayDelta(buf *bytes.Buffer, v uint64) uint64 {
	changed, removed, now, cur, ok := s.live.GatewayChanges(v)
	if !ok {
		return s.writeGatewaySnapshot(buf)
	}
	if len(changed) == 0 && len(removed) == 0 {
		return cur
	}
	if changed == nil {
		changed = []GatewayView{}
	}
	if removed == nil {
		removed = []string{}
	}
	writeEvent(buf, "gateways.delta", GatewayDeltaEvent{Now: now, Changed: changed, Removed: removed})
	return cur
}

func writeEvent(buf *bytes.Buffer, typ string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	buf.WriteString("event: ")
	buf.WriteString(typ)
	buf.WriteString("\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
}
