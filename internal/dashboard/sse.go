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
//	event: assets    data: [AssetOut...]     changed assets, coalesced per tick
//	event: gateways  data: [GatewayView...]  when any gateway changed
//	event: alert     data: alert record      id: event id
//	event: kpi       data: KPI result        id: event id
//	event: resync    data: {}                events were missed: reload state
//
// The first tick sends every asset. A reconnecting client sends
// Last-Event-ID and receives the alert and KPI events it missed, or resync
// when they already left the log.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := newQuery(r)
	if !q.ok(w) {
		return
	}
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
	var assetVer uint64
	var buf bytes.Buffer
	tick := time.NewTicker(s.opts.Tick)
	defer tick.Stop()
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
		case <-tick.C:
			assetVer = s.writeChanges(&buf, assetVer)
		}
	}
}

// writeChanges appends the assets and gateways changed since version v.
func (s *Server) writeChanges(buf *bytes.Buffer, v uint64) uint64 {
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
	if gws {
		writeEvent(buf, "gateways", s.live.Gateways())
	}
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
