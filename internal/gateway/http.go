package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/smelterio/smelter/internal/forward"
	"github.com/smelterio/smelter/internal/gwconfig"
	"github.com/smelterio/smelter/internal/spool"
)

// Status is the gateway's state as /status reports it. Ready and
// ReadyReason are what /readyz answers; Running says the gateway is
// polling (it may be running and not ready: an uplink down or behind).
type Status struct {
	Gateway     string         `json:"gateway"`
	Site        string         `json:"site"`
	Ready       bool           `json:"ready"`
	ReadyReason string         `json:"ready_reason"`
	Running     bool           `json:"running"`
	Seq         uint64         `json:"seq"`
	Spool       spool.Health   `json:"spool"`
	Devices     []DeviceStatus `json:"devices"`
	Uplinks     []UplinkStatus `json:"uplinks"`
}

// DeviceStatus is one device's line in the status page: of an asset fed
// by several sources, one line per source (ID "<asset>/<source>"), each
// with its own health.
type DeviceStatus struct {
	ID       string `json:"id"`
	Asset    string `json:"asset"`            // the asset it feeds
	Source   string `json:"source,omitempty"` // the source's name, for a device with sources
	Class    string `json:"class"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
	deviceState
}

// UplinkStatus is one uplink's line in the status page.
type UplinkStatus struct {
	Name         string  `json:"name"`
	Connected    bool    `json:"connected"`
	LagRecords   uint64  `json:"lag_records"`
	LagBytes     int64   `json:"lag_bytes"`
	OldestAgeSec float64 `json:"oldest_age_seconds"`
	forward.State
}

// Status returns a snapshot of the gateway's state.
func (g *Gateway) Status() Status {
	st := Status{Gateway: g.cfg.ID, Site: g.cfg.Site}
	g.mu.Lock()
	st.Running = g.ready
	sp := g.spool
	fwds := g.fwds
	g.mu.Unlock()
	if sp != nil {
		st.Seq = sp.LastSeq()
		st.Spool = sp.Health()
	}
	for _, d := range g.devices {
		ds := DeviceStatus{ID: d.cfg.ID, Asset: d.cfg.Asset.ID, Source: d.cfg.Source, Class: d.cfg.Asset.Class, deviceState: d.state()}
		ds.Protocol, ds.Address = d.cfg.Driver.Endpoint()
		st.Devices = append(st.Devices, ds)
	}
	for _, f := range fwds {
		lag := f.Lag()
		us := UplinkStatus{Name: f.Name(), Connected: f.Ready(),
			LagRecords: lag.Records, LagBytes: lag.Bytes, OldestAgeSec: lag.OldestAge.Seconds(),
			State: f.State()}
		if us.LastError == "" && !us.Connected {
			// no publish error: say why the uplink is not ready (a failed
			// connect, a stream check)
			us.LastError = g.uplinkError(f.Name())
		}
		st.Uplinks = append(st.Uplinks, us)
	}
	st.Ready, st.ReadyReason = g.readiness(&st)
	return st
}

// readiness says whether the gateway is running with every uplink connected
// and not far behind, judged on one snapshot (so /status and /readyz agree).
func (g *Gateway) readiness(st *Status) (bool, string) {
	if !st.Running {
		return false, "not running"
	}
	if st.Spool.Failing {
		return false, "spool appends failing: data is being lost (" + st.Spool.LastError + ")"
	}
	for _, u := range st.Uplinks {
		if !u.Connected {
			why := "uplink " + u.Name + " disconnected (data is spooled)"
			if u.LastError != "" {
				why = "uplink " + u.Name + " not ready (data is spooled): " + u.LastError
			}
			return false, why
		}
		if u.OldestAgeSec > g.maxHealthyLag().Seconds() {
			return false, "uplink " + u.Name + " behind (data is spooled)"
		}
	}
	return true, "ok"
}

// uplinkError is the uplink's own last error (connect, stream check), when
// it reports one.
func (g *Gateway) uplinkError(name string) string {
	for _, u := range g.uplinks {
		if u.Name() != name {
			continue
		}
		if le, ok := u.(interface{ LastError() error }); ok {
			if err := le.LastError(); err != nil {
				return err.Error()
			}
		}
	}
	return ""
}

// Handler returns the gateway's HTTP handler: /metrics, /healthz, /readyz,
// /status (JSON) and / (a status page); with http.pprof, Go's profiles
// under /debug/pprof/ (heap, goroutine, profile?seconds=N, ...).
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	if g.cfg.Raw.HTTP.PProf {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.mx.Gatherer(), promhttp.HandlerOpts{Registry: g.mx.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := g.Status()
		ok, why := st.Ready, st.ReadyReason
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.Status())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := statusPage.Execute(w, g.Status()); err != nil {
			g.log.Debug("rendering status page", "err", err)
		}
	})
	return mux
}

// Serve serves Handler on addr until ctx ends. ready (may be nil) receives
// the bound address.
func (g *Gateway) Serve(ctx context.Context, addr string, ready func(net.Addr)) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(ln.Addr())
	}
	return ServeListener(ctx, ln, g.Handler())
}

// ServeListener serves h on ln until ctx ends, then shuts down (up to 2 s
// for requests in flight) and closes ln. Binding first and serving later
// lets smelter-gateway fail on a taken address before it connects any
// uplink.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>smelter-gateway {{.Gateway}}</title>
<meta http-equiv="refresh" content="5">
<style>body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left}.ok{color:#080}.bad{color:#b00}</style></head>
<body><h1>smelter-gateway {{.Gateway}} <small>site {{.Site}}</small></h1>
{{if .Spool.Failing}}<p class="bad">spool appends failing since {{.Spool.FailingSince.Format "15:04:05"}}: {{.Spool.LostRecords}} records lost; {{.Spool.LastError}}</p>{{end}}
<p>{{if .Ready}}<span class="ok">ready</span>{{else if .Running}}<span class="bad">running, not ready: {{.ReadyReason}}</span>{{else}}<span class="bad">not running</span>{{end}} &middot; seq {{.Seq}}
&middot; <a href="/status">JSON</a> &middot; <a href="/metrics">metrics</a></p>
<h2>Uplinks</h2><table><tr><th>uplink</th><th>state</th><th>behind (batches)</th><th>oldest unsent</th><th>last ack</th><th>last error</th></tr>
{{range .Uplinks}}<tr><td>{{.Name}}</td><td>{{if .Connected}}<span class="ok">connected</span>{{else}}<span class="bad">disconnected</span>{{end}}</td>
<td>{{.LagRecords}}</td><td>{{printf "%.1f" .OldestAgeSec}} s</td><td>{{.LastAckAt.Format "15:04:05"}}</td><td>{{.LastError}}</td></tr>{{end}}</table>
<h2>Devices</h2><table><tr><th>device</th><th>class</th><th>protocol</th><th>address</th><th>state</th><th>last poll</th><th>polls / failed</th><th>last error</th></tr>
{{range .Devices}}<tr><td>{{.ID}}</td><td>{{.Class}}</td><td>{{.Protocol}}</td><td>{{.Address}}</td>
<td>{{if .Dead}}<span class="bad">dead</span>{{else}}<span class="ok">up</span>{{end}}</td><td>{{.LastPoll.Format "15:04:05"}}</td>
<td>{{.Polls}} / {{.FailedPolls}}</td><td>{{.LastError}}</td></tr>{{end}}</table></body></html>
`))

// maxHealthyLag is how far an uplink may be behind before /readyz says
// degraded (http.ready_max_lag).
func (g *Gateway) maxHealthyLag() time.Duration {
	if l := g.cfg.Raw.HTTP.ReadyMaxLag; l > 0 {
		return l
	}
	return gwconfig.DefaultReadyMaxLag
}
